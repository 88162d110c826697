//! Devices that authenticate with client certificates, on the real binary:
//! the certificate's identity is granted its own topics and no others; with
//! mTLS required a client without a certificate fails the handshake; a
//! certificate that expires mid-stream ends the stream; a rotated CA bundle
//! is used for new handshakes without a restart.

use std::time::{Duration, SystemTime};

use anyhow::{bail, Result};
use pushgate_e2e::gateway::{publish, replace_file, GatewayProcess};
use pushgate_e2e::pki::{Leaf, TestCa};
use pushgate_e2e::sse_client::{Opened, SseClient};
use pushgate_e2e::wait::wait_until;
use reqwest::StatusCode;

const T: Duration = Duration::from_secs(15);

/// Devices get their own subtree; `ops-*` certificates may publish anywhere under it.
const GRANTS: &str = r#"
auth:
  certificate_grants:
    - identity: "sensor-*"
      subscribe: ["devices/{identity}/**"]
    - identity: "ops-*"
      publish: ["devices/**"]
"#;

/// A gateway on HTTPS whose clients must (or may) show a certificate from `devices`.
struct Setup {
    server_ca: TestCa,
    devices: TestCa,
    dir: tempfile::TempDir,
    gw: GatewayProcess,
}

impl Setup {
    fn start(mode: &str) -> Result<Setup> {
        let (server_ca, devices) = (TestCa::new()?, TestCa::new()?);
        let dir = tempfile::tempdir()?;
        let leaf = server_ca.leaf("gateway")?;
        let file = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
        std::fs::write(file("tls.crt"), &leaf.cert_pem)?;
        std::fs::write(file("tls.key"), &leaf.key_pem)?;
        std::fs::write(file("clients.pem"), &devices.pem)?;
        std::fs::write(file("pushgate.yaml"), GRANTS)?;
        let gw = GatewayProcess::start(&[
            "--config",
            &file("pushgate.yaml"),
            "--tls-cert-file",
            &file("tls.crt"),
            "--tls-key-file",
            &file("tls.key"),
            "--tls-client-ca-file",
            &file("clients.pem"),
            "--tls-client-auth",
            mode,
            "--tls-reload-interval",
            "100ms",
            "--metrics-listen",
            "127.0.0.1:0",
        ])?;
        Ok(Setup {
            server_ca,
            devices,
            dir,
            gw,
        })
    }

    fn base(&self) -> String {
        format!("https://localhost:{}", self.gw.addr.port())
    }

    /// A fresh client (one handshake per client) showing `cert`, if any.
    fn client(&self, cert: Option<&Leaf>) -> Result<reqwest::Client> {
        let mut b = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(
                self.server_ca.pem.as_bytes(),
            )?)
            .resolve("localhost", self.gw.addr)
            .pool_max_idle_per_host(0);
        if let Some(leaf) = cert {
            b = b.identity(reqwest::Identity::from_pem(leaf.identity_pem().as_bytes())?);
        }
        Ok(b.build()?)
    }

    fn device(&self, cn: &str) -> Result<Leaf> {
        self.devices
            .client_leaf(cn, SystemTime::now() + Duration::from_secs(3600))
    }

    async fn stream(&self, c: &reqwest::Client, topic: &str) -> Result<Opened> {
        SseClient::open(c, &format!("{}/v1/stream?topic={topic}", self.base()), None).await
    }
}

fn status(o: &Opened) -> StatusCode {
    match o {
        Opened::Stream(_) => StatusCode::OK,
        Opened::Refused(s, _) => *s,
    }
}

#[tokio::test]
async fn a_device_certificate_opens_its_own_topics_and_nothing_else() -> Result<()> {
    let s = Setup::start("required")?;
    let sensor = s.client(Some(&s.device("sensor-1")?))?;
    let ops = s.client(Some(&s.device("ops-console")?))?;
    let Opened::Stream(mut own) = s.stream(&sensor, "devices/sensor-1/state").await? else {
        bail!("the device's own topic was refused");
    };
    own.await_id(T).await?;
    assert_eq!(
        status(&s.stream(&sensor, "devices/sensor-2/state").await?),
        StatusCode::FORBIDDEN,
        "another device's topic"
    );
    assert_eq!(
        status(&s.stream(&ops, "devices/sensor-1/state").await?),
        StatusCode::FORBIDDEN,
        "ops may publish, not subscribe"
    );
    let resp = sensor
        .post(format!(
            "{}/v1/topics/devices/sensor-1/state/events",
            s.base()
        ))
        .body("spoof")
        .send()
        .await?;
    assert_eq!(
        resp.status(),
        StatusCode::FORBIDDEN,
        "sensors may not publish"
    );
    publish(&ops, &s.base(), "devices/sensor-1/state", "on").await?;
    let ev = own.next(T).await?.expect("an event");
    assert_eq!(ev.data, "on");
    Ok(())
}

#[tokio::test]
async fn without_a_certificate_from_the_ca_the_handshake_fails_when_required() -> Result<()> {
    let s = Setup::start("required")?;
    let anonymous = s.client(None)?;
    let err = s
        .stream(&anonymous, "devices/sensor-1/state")
        .await
        .err()
        .expect("no certificate, no connection");
    assert!(
        err.downcast_ref::<reqwest::Error>()
            .is_some_and(|e| e.status().is_none()),
        "refused in the handshake, not by an HTTP status: {err:#}"
    );
    let stranger = TestCa::new()?.client_leaf("sensor-1", SystemTime::now() + T)?;
    assert!(
        s.stream(&s.client(Some(&stranger))?, "devices/sensor-1/state")
            .await
            .is_err(),
        "a certificate from another CA"
    );

    // Optional: the handshake succeeds, and the request is just anonymous.
    let o = Setup::start("optional")?;
    assert_eq!(
        status(&o.stream(&o.client(None)?, "devices/sensor-1/state").await?),
        StatusCode::UNAUTHORIZED
    );
    let sensor = o.client(Some(&o.device("sensor-1")?))?;
    assert_eq!(
        status(&o.stream(&sensor, "devices/sensor-1/state").await?),
        StatusCode::OK
    );
    Ok(())
}

#[tokio::test]
async fn a_certificate_that_expires_mid_stream_ends_the_stream() -> Result<()> {
    let s = Setup::start("required")?;
    let short = s
        .devices
        .client_leaf("sensor-7", SystemTime::now() + Duration::from_secs(4))?;
    let c = s.client(Some(&short))?;
    let Opened::Stream(mut stream) = s.stream(&c, "devices/sensor-7/state").await? else {
        bail!("refused while the certificate is valid");
    };
    let ops = s.client(Some(&s.device("ops-console")?))?;
    publish(&ops, &s.base(), "devices/sensor-7/state", "before").await?;
    assert_eq!(stream.next(T).await?.expect("an event").data, "before");
    let end = stream.next(T).await?.expect("an ending event");
    assert_eq!(end.event_type, "expired-certificate");
    assert_eq!(end.data, r#"{"reason":"certificate_expired"}"#);
    assert!(stream.next(T).await?.is_none());
    assert!(stream.retry().is_some());
    assert!(
        s.stream(&s.client(Some(&short))?, "devices/sensor-7/state")
            .await
            .is_err(),
        "an expired certificate no longer completes a handshake"
    );
    let ended =
        s.gw.metric("pushgate_streams_ended_by_credential_total{reason=\"certificate_expired\"}")
            .await?;
    assert_eq!(ended, 1.0);
    Ok(())
}

#[tokio::test]
async fn a_rotated_client_ca_bundle_is_used_without_a_restart() -> Result<()> {
    let s = Setup::start("required")?;
    let old = s.client(Some(&s.device("sensor-1")?))?;
    assert_eq!(
        status(&s.stream(&old, "devices/sensor-1/state").await?),
        StatusCode::OK
    );
    let next_ca = TestCa::new()?;
    let rotated = s.client(Some(
        &next_ca.client_leaf("sensor-1", SystemTime::now() + Duration::from_secs(3600))?,
    ))?;
    assert!(s.stream(&rotated, "devices/sensor-1/state").await.is_err());
    replace_file(&s.dir.path().join("clients.pem"), &next_ca.pem)?;
    wait_until(
        "the new CA to be picked up",
        Duration::from_secs(10),
        || async {
            s.stream(&rotated, "devices/sensor-1/state")
                .await
                .map(drop)
                .map_err(|e| format!("{e:#}"))
        },
    )
    .await?;
    let again = s.client(Some(&s.device("sensor-1")?))?;
    assert!(
        s.stream(&again, "devices/sensor-1/state").await.is_err(),
        "the old CA's certificates no longer complete a handshake"
    );
    Ok(())
}
