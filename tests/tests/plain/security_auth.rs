//! Token authentication and topic authorisation against the real `pushgate`
//! binary: the full matrix of the issue for subscribe and publish, partial
//! multi-topic refusal, the EventSource token carriers, anonymous patterns
//! and the `pushgate token` subcommand.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use pushgate_e2e::gateway::{binary, mint_token, publish_raw, GatewayProcess, PublishOptions};
use pushgate_e2e::process::run_ok;
use pushgate_e2e::wait::wait_until;
use reqwest::StatusCode;
use serde_json::{json, Value};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(sub_topics: &[&str], pub_topics: &[&str]) -> Value {
    json!({
        "sub": "device-7",
        "exp": now() + 600,
        "nbf": now() - 5,
        "topics": {"subscribe": sub_topics, "publish": pub_topics},
    })
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, key).unwrap()
}

/// `alg: none` is not representable in jsonwebtoken, so it is built by hand.
fn unsigned(claims: &Value) -> String {
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(claims)
    )
}

struct Es256 {
    private_pem: String,
    public_pem: String,
}

fn es256() -> Es256 {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    Es256 {
        private_pem: kp.serialize_pem(),
        public_pem: kp.public_key_pem(),
    }
}

fn write(dir: &Path, name: &str, content: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p.display().to_string()
}

async fn subscribe(
    c: &reqwest::Client,
    gw: &GatewayProcess,
    query: &str,
    token: Option<&str>,
) -> Result<(StatusCode, Value)> {
    let mut req = c
        .get(gw.url(&format!("/v1/stream?{query}")))
        .header("accept", "text/event-stream");
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await?;
    let status = resp.status();
    if status == StatusCode::OK {
        assert!(resp.headers()["content-type"]
            .to_str()?
            .starts_with("text/event-stream"));
        // Dropping the response closes the stream.
        return Ok((status, Value::Null));
    }
    Ok((status, resp.json().await?))
}

async fn publish(
    c: &reqwest::Client,
    gw: &GatewayProcess,
    topic: &str,
    token: Option<&str>,
) -> Result<(StatusCode, Value)> {
    let (status, body) =
        publish_raw(c, &gw.url(""), topic, "x", PublishOptions::token(token)).await?;
    Ok((status, serde_json::from_str(&body)?))
}

/// The body of every refusal is one of exactly two, whatever check failed.
fn assert_refusal(status: StatusCode, body: &Value, case: &str) {
    let expected = match status {
        StatusCode::UNAUTHORIZED => {
            json!({"code": "unauthorized", "error": "missing or invalid token"})
        }
        StatusCode::FORBIDDEN => {
            json!({"code": "forbidden", "error": "not allowed for the requested topic"})
        }
        other => panic!("{case}: unexpected status {other}"),
    };
    assert_eq!(body, &expected, "{case}: refusal body");
}

#[tokio::test]
async fn auth_matrix_for_subscribe_and_publish() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let key = es256();
    let other = es256();
    let pub_file = write(dir.path(), "jwt.pub.pem", &key.public_pem);
    let gw = GatewayProcess::start(&[
        "--auth-key-file",
        &pub_file,
        "--auth-algorithm",
        "es256",
        "--auth-leeway",
        "2s",
    ])?;
    let ek = EncodingKey::from_ec_pem(key.private_pem.as_bytes())?;
    let wrong_key = EncodingKey::from_ec_pem(other.private_pem.as_bytes())?;
    // Algorithm confusion: HS256 keyed with the (public) verifying key's bytes.
    let confused = EncodingKey::from_secret(key.public_pem.as_bytes());
    let exact = claims(&["sensors/a"], &["sensors/a"]);
    let mut expired = exact.clone();
    expired["exp"] = json!(now() - 3600);
    expired["nbf"] = json!(now() - 7200);
    let mut future = exact.clone();
    future["nbf"] = json!(now() + 3600);

    // (case, token, topic, expected subscribe status, expected publish status)
    let cases: Vec<(&str, Option<String>, &str, StatusCode, StatusCode)> = vec![
        (
            "no token",
            None,
            "sensors/a",
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
        ),
        (
            "expired",
            Some(sign(Algorithm::ES256, &ek, &expired)),
            "sensors/a",
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
        ),
        (
            "not yet valid",
            Some(sign(Algorithm::ES256, &ek, &future)),
            "sensors/a",
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
        ),
        (
            "wrong signature",
            Some(sign(Algorithm::ES256, &wrong_key, &exact)),
            "sensors/a",
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
        ),
        (
            "wrong algorithm",
            Some(sign(Algorithm::HS256, &confused, &exact)),
            "sensors/a",
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
        ),
        (
            "alg none",
            Some(unsigned(&exact)),
            "sensors/a",
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
        ),
        (
            "valid without topic",
            Some(sign(
                Algorithm::ES256,
                &ek,
                &claims(&["other/**"], &["other/**"]),
            )),
            "sensors/a",
            StatusCode::FORBIDDEN,
            StatusCode::FORBIDDEN,
        ),
        (
            "valid with pattern",
            Some(sign(
                Algorithm::ES256,
                &ek,
                &claims(&["sensors/*"], &["sensors/**"]),
            )),
            "sensors/b",
            StatusCode::OK,
            StatusCode::CREATED,
        ),
        (
            "valid exact",
            Some(sign(Algorithm::ES256, &ek, &exact)),
            "sensors/a",
            StatusCode::OK,
            StatusCode::CREATED,
        ),
    ];
    let c = reqwest::Client::new();
    for (case, token, topic, want_sub, want_pub) in &cases {
        let (status, body) =
            subscribe(&c, &gw, &format!("topic={topic}"), token.as_deref()).await?;
        assert_eq!(status, *want_sub, "subscribe, {case}: {body}");
        if status != StatusCode::OK {
            assert_refusal(status, &body, case);
        }
        let (status, body) = publish(&c, &gw, topic, token.as_deref()).await?;
        assert_eq!(status, *want_pub, "publish, {case}: {body}");
        if status == StatusCode::CREATED {
            assert_eq!(body["topic"], *topic);
        } else {
            assert_refusal(status, &body, case);
        }
    }
    // Only the two authorised publishes landed.
    let t = sign(Algorithm::ES256, &ek, &claims(&["sensors/**"], &[]));
    for topic in ["sensors/a", "sensors/b"] {
        let mut s = pushgate_e2e::sse_client::SseClient::connect(
            &c.clone(),
            &gw.url(&format!("/v1/stream?topic={topic}&access_token={t}")),
            Some("earliest"),
        )
        .await?;
        let ev = s.next(Duration::from_secs(5)).await?.expect("one event");
        assert_eq!(ev.data, "x");
        assert!(
            s.next(Duration::from_millis(300)).await.is_err(),
            "{topic}: exactly one event was published"
        );
    }
    Ok(())
}

#[tokio::test]
async fn partial_authorisation_is_refused_whole() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let key = es256();
    let pub_file = write(dir.path(), "jwt.pub.pem", &key.public_pem);
    let gw = GatewayProcess::start(&["--auth-key-file", &pub_file, "--auth-algorithm", "es256"])?;
    let ek = EncodingKey::from_ec_pem(key.private_pem.as_bytes())?;
    let t = sign(Algorithm::ES256, &ek, &claims(&["a"], &["a"]));
    let c = reqwest::Client::new();

    let (status, body) = subscribe(&c, &gw, "topic=a", Some(&t)).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    for q in ["topic=a&topic=b", "topic=b&topic=a"] {
        let (status, body) = subscribe(&c, &gw, q, Some(&t)).await?;
        assert_eq!(status, StatusCode::FORBIDDEN, "{q}");
        assert_refusal(status, &body, q);
    }

    // A batch with one ungranted topic publishes nothing.
    let resp = c
        .post(gw.url("/v1/publish"))
        .bearer_auth(&t)
        .json(&json!([{"topic": "a", "data": "1"}, {"topic": "b", "data": "2"}]))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = c
        .post(gw.url("/v1/publish"))
        .bearer_auth(&t)
        .json(&json!([{"topic": "a", "data": "1"}]))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let seq: Value = resp.json().await?;
    assert_eq!(seq[0]["seq"], 1, "the refused batch left no event behind");

    // Wiping history needs publish rights on the topic.
    let only_sub = sign(Algorithm::ES256, &ek, &claims(&["a"], &[]));
    let resp = c
        .delete(gw.url("/v1/topics/a"))
        .bearer_auth(&only_sub)
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = c
        .delete(gw.url("/v1/topics/a"))
        .bearer_auth(&t)
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::OK);
    Ok(())
}

#[tokio::test]
async fn eventsource_carriers_anonymous_patterns_and_minted_tokens() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let secret = format!("{:064x}", rand::random::<u128>());
    let secret_file = write(dir.path(), "hs256.secret", &format!("{secret}\n"));
    let gw = GatewayProcess::start(&[
        "--auth-key-file",
        &secret_file,
        "--auth-anonymous-subscribe",
        "public/**",
    ])?;
    let c = reqwest::Client::new();

    // `pushgate token` mints what the gateway accepts.
    let token = mint_token(
        std::path::Path::new(&secret_file),
        &[
            "--sub",
            "cli-client",
            "--subscribe",
            "rooms/*/chat",
            "--publish",
            "rooms/1/chat",
            "--ttl",
            "5m",
        ],
    )?;
    assert_eq!(
        publish(&c, &gw, "rooms/1/chat", Some(&token)).await?.0,
        StatusCode::CREATED
    );
    assert_eq!(
        publish(&c, &gw, "rooms/2/chat", Some(&token)).await?.0,
        StatusCode::FORBIDDEN
    );

    // EventSource cannot set headers: cookie and query parameter.
    let url = gw.url("/v1/stream?topic=rooms/2/chat");
    let resp = c
        .get(&url)
        .header("cookie", format!("theme=dark; pushgate_token={token}"))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::OK, "cookie");
    drop(resp);
    let resp = c.get(format!("{url}&access_token={token}")).send().await?;
    assert_eq!(resp.status(), StatusCode::OK, "query parameter");
    drop(resp);
    let resp = c.get(format!("{url}&access_token={token}x")).send().await?;
    assert_eq!(
        resp.status(),
        StatusCode::UNAUTHORIZED,
        "tampered query token"
    );
    let resp = c
        .get(&url)
        .header("authorization", format!("Basic {token}"))
        .send()
        .await?;
    assert_eq!(
        resp.status(),
        StatusCode::UNAUTHORIZED,
        "not a bearer token"
    );

    // Same secret, another HMAC algorithm: refused (the key fixes HS256).
    let hs512 = sign(
        Algorithm::HS512,
        &EncodingKey::from_secret(secret.as_bytes()),
        &claims(&["rooms/**"], &[]),
    );
    assert_eq!(
        subscribe(&c, &gw, "topic=rooms/2/chat", Some(&hs512))
            .await?
            .0,
        StatusCode::UNAUTHORIZED
    );
    let hs256 = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(secret.as_bytes()),
        &claims(&["rooms/**"], &[]),
    );
    assert_eq!(
        subscribe(&c, &gw, "topic=rooms/2/chat", Some(&hs256))
            .await?
            .0,
        StatusCode::OK
    );

    // Anonymous subscribe is limited to its patterns; anonymous publish stays off.
    assert_eq!(
        subscribe(&c, &gw, "topic=public/news", None).await?.0,
        StatusCode::OK
    );
    assert_eq!(
        subscribe(&c, &gw, "topic=public/news&topic=rooms/1/chat", None)
            .await?
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        publish(&c, &gw, "public/news", None).await?.0,
        StatusCode::UNAUTHORIZED
    );
    // A token's holder also gets the anonymous topics.
    assert_eq!(
        subscribe(
            &c,
            &gw,
            "topic=public/news&topic=rooms/1/chat",
            Some(&token)
        )
        .await?
        .0,
        StatusCode::OK
    );
    // Ops endpoints stay open for probes.
    assert_eq!(
        c.get(gw.url("/healthz")).send().await?.status(),
        StatusCode::OK
    );
    Ok(())
}

#[tokio::test]
async fn rs256_keys_from_openssl_and_confusion_with_the_public_key() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let private = dir.path().join("rsa.key");
    let public = dir.path().join("rsa.pub");
    let openssl = |args: &[&str]| {
        run_ok(std::process::Command::new("openssl").args(args));
    };
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        private.to_str().unwrap(),
    ]);
    openssl(&[
        "pkey",
        "-in",
        private.to_str().unwrap(),
        "-pubout",
        "-out",
        public.to_str().unwrap(),
    ]);
    let gw = GatewayProcess::start(&[
        "--auth-key-file",
        public.to_str().unwrap(),
        "--auth-algorithm",
        "rs256",
    ])?;
    let c = reqwest::Client::new();

    let token = mint_token(
        &private,
        &[
            "--algorithm",
            "rs256",
            "--sub",
            "rsa-client",
            "--publish",
            "orders/**",
        ],
    )?;
    assert_eq!(
        publish(&c, &gw, "orders/eu/1", Some(&token)).await?.0,
        StatusCode::CREATED
    );
    assert_eq!(
        publish(&c, &gw, "invoices/1", Some(&token)).await?.0,
        StatusCode::FORBIDDEN
    );

    // The classic confusion: HS256 keyed with the RSA public key the gateway holds.
    let pem = std::fs::read(&public)?;
    let forged = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(&pem),
        &claims(&[], &["orders/**"]),
    );
    let (status, body) = publish(&c, &gw, "orders/eu/1", Some(&forged)).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_refusal(status, &body, "HS256 with the public key");
    // A public key cannot sign, so `pushgate token` refuses to mint with it.
    assert!(mint_token(&public, &["--algorithm", "rs256", "--sub", "x"]).is_err());
    Ok(())
}

/// Tokens travel in query strings (EventSource), so they must never reach the
/// logs, even at debug level, while the client id does.
#[tokio::test]
async fn tokens_never_reach_the_logs() -> Result<()> {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir()?;
    let secret = format!("{:064x}", rand::random::<u128>());
    let secret_file = write(dir.path(), "hs256.secret", &secret);
    let mut child = std::process::Command::new(binary())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--log-level",
            "debug",
        ])
        .args([
            "--auth-key-file",
            &secret_file,
            "--data-dir",
            dir.path().to_str().unwrap(),
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let addr = loop {
        let line = rx.recv_timeout(Duration::from_secs(30))?;
        let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        lines.push(line);
        if v["message"] == "listening" {
            break v["api"].as_str().unwrap().to_owned();
        }
    };
    let key = EncodingKey::from_secret(secret.as_bytes());
    let good = sign(Algorithm::HS256, &key, &claims(&["logs/a"], &["logs/a"]));
    let mut expired = claims(&["logs/a"], &[]);
    expired["exp"] = json!(now() - 3600);
    let bad = sign(Algorithm::HS256, &key, &expired);
    let c = reqwest::Client::new();
    for (token, want) in [(&good, StatusCode::OK), (&bad, StatusCode::UNAUTHORIZED)] {
        let resp = c
            .get(format!(
                "http://{addr}/v1/stream?topic=logs/a&access_token={token}"
            ))
            .send()
            .await?;
        assert_eq!(resp.status(), want);
    }
    let resp = c
        .post(format!("http://{addr}/v1/topics/logs/a/events"))
        .header("cookie", format!("pushgate_token={good}"))
        .body("x")
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::CREATED);
    // The publish's request line (the last request) is in the log: stop the
    // process and read everything.
    wait_until(
        "the publish's request line in the log",
        Duration::from_secs(10),
        || {
            lines.extend(rx.try_iter());
            let done = lines
                .iter()
                .any(|l| l.contains("\"message\":\"request\"") && l.contains("\"status\":201"));
            async move { done }
        },
    )
    .await?;
    child.kill()?;
    child.wait()?;
    reader.join().unwrap();
    lines.extend(rx.try_iter());
    let all = lines.join("\n");
    assert!(
        all.contains("\"client\":\"device-7\""),
        "client id is logged:\n{all}"
    );
    assert!(
        all.contains("token refused"),
        "the refusal is logged at debug:\n{all}"
    );
    for (name, t) in [("valid", &good), ("expired", &bad)] {
        for part in t.split('.') {
            assert!(!all.contains(part), "{name} token part in the logs:\n{all}");
        }
    }
    assert!(
        !all.contains("access_token"),
        "query strings are not logged"
    );
    assert!(!all.contains(&secret), "the key is not logged");
    Ok(())
}
