//! CORS on the real `pushgate` binary: preflight and credentials for the
//! configured origins only, nothing for others, and no CORS headers at all
//! when it is not configured.

use anyhow::Result;
use pushgate_e2e::gateway::{binary, mint_token, GatewayProcess};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};

async fn preflight(
    c: &reqwest::Client,
    gw: &GatewayProcess,
    origin: &str,
) -> Result<(StatusCode, HeaderMap)> {
    let resp = c
        .request(Method::OPTIONS, gw.url("/v1/stream?topic=a"))
        .header("origin", origin)
        .header("access-control-request-method", "GET")
        .header(
            "access-control-request-headers",
            "last-event-id, authorization",
        )
        .send()
        .await?;
    Ok((resp.status(), resp.headers().clone()))
}

fn get<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn credentialed_origins_get_preflight_and_credentials() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef")?;
    let gw = GatewayProcess::start(&[
        "--cors-allowed-origins",
        "https://app.example,http://localhost:3000",
        "--cors-allow-credentials",
        "true",
        "--auth-key-file",
        secret.to_str().unwrap(),
    ])?;
    let c = reqwest::Client::new();

    let (status, h) = preflight(&c, &gw, "https://app.example").await?;
    assert!(status.is_success(), "{status}");
    assert_eq!(
        get(&h, "access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(get(&h, "access-control-allow-credentials"), Some("true"));
    let allowed = get(&h, "access-control-allow-headers")
        .unwrap_or("")
        .to_ascii_lowercase();
    assert!(
        allowed.contains("last-event-id") && allowed.contains("authorization"),
        "{allowed}"
    );
    assert!(get(&h, "access-control-allow-methods")
        .unwrap_or("")
        .contains("GET"));
    assert_eq!(get(&h, "access-control-max-age"), Some("600"));
    // A page may patch a device shadow under If-Match and read its ETag.
    let resp = c
        .request(Method::OPTIONS, gw.url("/v1/devices/d1/shadow"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "PATCH")
        .header("access-control-request-headers", "if-match, content-type")
        .send()
        .await?;
    let h = resp.headers();
    assert!(get(h, "access-control-allow-methods")
        .unwrap_or("")
        .contains("PATCH"));
    assert!(get(h, "access-control-allow-headers")
        .unwrap_or("")
        .to_ascii_lowercase()
        .contains("if-match"));
    let resp = c
        .get(gw.url("/v1/devices/d1/shadow"))
        .header("origin", "https://app.example")
        .send()
        .await?;
    assert!(get(resp.headers(), "access-control-expose-headers")
        .unwrap_or("")
        .to_ascii_lowercase()
        .contains("etag"));

    let (_, h) = preflight(&c, &gw, "https://evil.example").await?;
    assert_eq!(
        get(&h, "access-control-allow-origin"),
        None,
        "unlisted origin"
    );

    // An EventSource with withCredentials: the cookie carries the token, and
    // even a refusal is readable by the page (it can tell 401 from a network error).
    let token = mint_token(&secret, &["--sub", "browser", "--subscribe", "a"])?;
    let resp = c
        .get(gw.url("/v1/stream?topic=a"))
        .header("origin", "http://localhost:3000")
        .header("cookie", format!("pushgate_token={token}"))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        get(resp.headers(), "access-control-allow-origin"),
        Some("http://localhost:3000")
    );
    assert_eq!(
        get(resp.headers(), "access-control-allow-credentials"),
        Some("true")
    );
    assert!(get(resp.headers(), "vary")
        .unwrap_or("")
        .to_ascii_lowercase()
        .contains("origin"));
    drop(resp);
    let resp = c
        .get(gw.url("/v1/stream?topic=a"))
        .header("origin", "http://localhost:3000")
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        get(resp.headers(), "access-control-allow-origin"),
        Some("http://localhost:3000")
    );
    Ok(())
}

#[tokio::test]
async fn wildcard_without_credentials_and_off_by_default() -> Result<()> {
    let c = reqwest::Client::new();
    let open = GatewayProcess::start(&["--cors-allowed-origins", "*"])?;
    let (status, h) = preflight(&c, &open, "https://anyone.example").await?;
    assert!(status.is_success(), "{status}");
    assert_eq!(get(&h, "access-control-allow-origin"), Some("*"));
    assert_eq!(get(&h, "access-control-allow-credentials"), None);

    let plain = GatewayProcess::start(&[])?;
    let (_, h) = preflight(&c, &plain, "https://anyone.example").await?;
    assert_eq!(get(&h, "access-control-allow-origin"), None);
    let resp = c
        .get(plain.url("/healthz"))
        .header("origin", "https://anyone.example")
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(get(resp.headers(), "access-control-allow-origin"), None);

    // `*` with credentials would hand any site the user's cookie: refused at startup.
    let out = std::process::Command::new(binary())
        .args([
            "config",
            "--cors-allowed-origins",
            "*",
            "--cors-allow-credentials",
            "true",
        ])
        .output()?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cors.allowed_origins"));
    Ok(())
}
