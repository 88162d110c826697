//! A real `pushgate` process on loopback, with its own data directory.
//! Killed (SIGKILL) on drop.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// Streams a gateway has opened over HTTP/1.1. A stream counts once it is
/// registered for live events and its start is fixed, so an event published
/// after the count includes it reaches it; the `pushgate_connections` gauge
/// counts a stream from admission, before that.
pub const OPENED_HTTP1: &str = "pushgate_streams_opened_total{protocol=\"http1\"}";

/// Path of the `pushgate` binary built by `cargo test` (next to the test
/// executables' parent directory), or `$PUSHGATE_BIN`.
pub fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("PUSHGATE_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/pushgate
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    dir.join("pushgate")
}

/// A running (or stopped, restartable) gateway process.
pub struct GatewayProcess {
    child: Option<Child>,
    /// API address (stable across restarts).
    pub addr: SocketAddr,
    /// Separate metrics address, when `--metrics-listen` was given.
    pub metrics_addr: Option<SocketAddr>,
    data_dir: PathBuf,
    _owned_dir: Option<tempfile::TempDir>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    name: String,
    /// Log lines at WARN or ERROR, over every run of the process.
    warnings: Arc<AtomicUsize>,
}

impl GatewayProcess {
    /// Starts a gateway on a fresh data directory with extra `serve` flags.
    pub fn start(args: &[&str]) -> Result<GatewayProcess> {
        let dir = tempfile::tempdir()?;
        let mut g = GatewayProcess {
            child: None,
            addr: "127.0.0.1:0".parse()?,
            metrics_addr: None,
            data_dir: dir.path().to_owned(),
            _owned_dir: Some(dir),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            name: "gateway".into(),
            warnings: Arc::default(),
        };
        g.spawn()?;
        Ok(g)
    }

    /// Starts a named gateway on a chosen address (e.g. when two processes must know each other's URL).
    pub fn start_on(name: &str, addr: SocketAddr, args: &[&str]) -> Result<GatewayProcess> {
        Self::start_on_with_env(name, addr, args, &[])
    }

    /// Like [`GatewayProcess::start_on`], with extra environment variables
    /// (e.g. `KUBECONFIG` for a gateway that watches a routing ConfigMap).
    pub fn start_on_with_env(
        name: &str,
        addr: SocketAddr,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<GatewayProcess> {
        let dir = tempfile::tempdir()?;
        let mut g = GatewayProcess {
            child: None,
            addr,
            metrics_addr: None,
            data_dir: dir.path().to_owned(),
            _owned_dir: Some(dir),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            name: name.into(),
            warnings: Arc::default(),
        };
        g.spawn()?;
        Ok(g)
    }

    /// A free loopback address to start a gateway on.
    pub fn free_addr() -> Result<SocketAddr> {
        Ok(SocketAddr::from((
            [127, 0, 0, 1],
            crate::controlplane::free_port(),
        )))
    }

    /// Starts a gateway with extra `serve` flags and no data directory of its own (e.g. Redis).
    pub fn start_named(name: &str, args: &[&str]) -> Result<GatewayProcess> {
        let mut g = Self::start(args)?;
        g.name = name.into();
        Ok(g)
    }

    fn spawn(&mut self) -> Result<()> {
        let bin = binary();
        if !bin.exists() {
            bail!(
                "pushgate binary not found at {} — build it with `cargo build -p gateway` (cargo test --workspace does)",
                bin.display()
            );
        }
        let mut cmd = Command::new(&bin);
        cmd.arg("serve")
            .arg("--listen")
            .arg(self.addr.to_string())
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--log-format")
            .arg("json")
            .args(&self.args)
            .env_remove("PUSHGATE_CONFIG")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        let name = self.name.clone();
        let warnings = self.warnings.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    if v["message"] == "listening" {
                        if let (Some(tx), Some(api)) = (tx.take(), v["api"].as_str()) {
                            let metrics = v["metrics"].as_str().unwrap_or("none").to_owned();
                            let _ = tx.send((api.to_owned(), metrics));
                        }
                    }
                    if v["level"] == "INFO" && v["message"] == "request" {
                        continue;
                    }
                }
                if line.contains("\"level\":\"WARN\"") || line.contains("\"level\":\"ERROR\"") {
                    warnings.fetch_add(1, Ordering::Relaxed);
                }
                if std::env::var_os("PUSHGATE_TEST_LOGS").is_some()
                    || !line.contains("\"level\":\"INFO\"")
                {
                    eprintln!("[{name}] {line}");
                }
            }
        });
        let (api, metrics) = rx
            .recv_timeout(Duration::from_secs(30))
            .map_err(|_| anyhow::anyhow!("gateway did not report its address within 30 s"))?;
        self.addr = api.parse()?;
        self.metrics_addr = metrics.parse().ok();
        self.child = Some(child);
        Ok(())
    }

    /// `http://ADDR{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The data directory (embedded store).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM (the process drains, then exits).
    pub fn sigterm(&self) {
        if let Some(pid) = self.pid() {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe {
                libc::kill(pid as i32, libc::SIGTERM);
            }
        }
    }

    /// Log lines at WARN or ERROR so far, over every run of the process.
    pub fn warnings(&self) -> usize {
        self.warnings.load(Ordering::Relaxed)
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Waits for the process to exit by itself, bounded.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let child = self.child.as_mut().context("not running")?;
        let status =
            crate::wait::wait_until_blocking(&format!("{} to exit", self.name), timeout, || {
                child
                    .try_wait()
                    .map_err(|e| e.to_string())
                    .and_then(|s| s.ok_or_else(|| "still running".to_owned()))
            })?;
        self.child = None;
        Ok(status)
    }

    /// Starts again on the same address and data directory with these
    /// environment variables instead of the ones it had.
    pub fn restart_with_env(&mut self, env: &[(&str, &str)]) -> Result<()> {
        self.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.restart()
    }

    /// Starts again on the same address and data directory (retried while
    /// the old process's port is not free yet, bounded).
    pub fn restart(&mut self) -> Result<()> {
        self.kill9();
        let name = self.name.clone();
        crate::wait::wait_until_blocking(
            &format!("{name} to start again"),
            Duration::from_secs(10),
            || {
                self.spawn().map_err(|e| {
                    eprintln!("restart retry: {e:#}");
                    format!("{e:#}")
                })
            },
        )
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> Result<String> {
        // The metrics port, when there is one, is plain HTTP even when the API port is HTTPS.
        let url = match self.metrics_addr {
            Some(addr) => format!("http://{addr}/metrics"),
            None => self.url("/metrics"),
        };
        Ok(reqwest::get(url).await?.text().await?)
    }

    /// One sample of `/metrics` (`name` with its labels, e.g. `pushgate_resume_total{outcome="exact"}`); 0 if absent.
    pub async fn metric(&self, name: &str) -> Result<f64> {
        Ok(metric_value(&self.metrics().await?, name))
    }

    /// Streams this process serves on `track` (`stable` or `canary`).
    pub async fn streams_on_track(&self, track: &str) -> usize {
        self.metric(&format!("pushgate_streams_by_track{{track=\"{track}\"}}"))
            .await
            .unwrap() as usize
    }

    /// Polls a metric until it equals `want` (bounded: 15 s).
    pub async fn wait_metric(&self, name: &str, want: f64) -> Result<()> {
        crate::wait::wait_until(
            &format!("{name} to be {want}"),
            Duration::from_secs(15),
            || async {
                match self.metric(name).await {
                    Ok(v) if v == want => Ok(()),
                    Ok(v) => Err(format!("{name} = {v}")),
                    Err(e) => Err(format!("{e:#}")),
                }
            },
        )
        .await
    }
}

/// Two gateways (`replica-a`, `replica-b`) sharing `redis` under a key
/// prefix of their own, each with `extra` arguments.
pub fn redis_pair(
    redis: &crate::redis::RedisServer,
    extra: &[&str],
) -> Result<(GatewayProcess, GatewayProcess)> {
    let prefix = format!("pair{:x}", rand::random::<u32>());
    let url = redis.url();
    let mut args = vec!["--store", &url, "--redis-key-prefix", &prefix];
    args.extend_from_slice(extra);
    Ok((
        GatewayProcess::start_named("replica-a", &args)?,
        GatewayProcess::start_named("replica-b", &args)?,
    ))
}

/// A gateway config file holding `yaml` (pass it with `--config`).
pub fn config_file(yaml: &str) -> Result<tempfile::NamedTempFile> {
    let f = tempfile::NamedTempFile::new()?;
    std::fs::write(f.path(), yaml)?;
    Ok(f)
}

/// A fresh random HS256 secret in `dir/hs256.secret`, for `--auth-key-file`.
pub fn hs256_key(dir: &Path) -> Result<PathBuf> {
    let key = dir.join("hs256.secret");
    std::fs::write(&key, format!("{:064x}\n", rand::random::<u128>()))?;
    Ok(key)
}

/// Mints a token with the gateway's own `pushgate token` (`args` after
/// `--key-file`: `--sub`, `--subscribe`, `--algorithm`, …); fails with its
/// stderr unless it succeeds.
pub fn mint_token(key_file: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(binary())
        .arg("token")
        .arg("--key-file")
        .arg(key_file)
        .args(args)
        .output()
        .context("run pushgate token")?;
    if !out.status.success() {
        bail!(
            "pushgate token failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

/// Reads one sample from Prometheus text; 0 when the series is absent.
pub fn metric_value(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            (series == name).then(|| value.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A publish acknowledgement.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Published {
    /// Cursor of the event.
    pub id: String,
    /// Its topic.
    pub topic: String,
    /// Its sequence number.
    pub seq: u64,
}

/// What a publish carries besides its topic and data; all optional.
#[derive(Debug, Clone, Copy, Default)]
pub struct PublishOptions<'a> {
    /// Query string, with or without its `?` (`ttl=1s&priority=high`).
    pub query: &'a str,
    /// Bearer token.
    pub token: Option<&'a str>,
    /// `Idempotency-Key` header.
    pub idempotency_key: Option<&'a str>,
    /// Time limit of the request.
    pub timeout: Option<Duration>,
}

impl<'a> PublishOptions<'a> {
    /// Only a query string.
    pub fn query(query: &'a str) -> Self {
        PublishOptions {
            query,
            ..Default::default()
        }
    }

    /// Only a bearer token (or none).
    pub fn token(token: Option<&'a str>) -> Self {
        PublishOptions {
            token,
            ..Default::default()
        }
    }
}

/// `POST {base}/v1/topics/{topic}/events` as answered: status and body,
/// whatever they are.
pub async fn publish_raw(
    client: &reqwest::Client,
    base: &str,
    topic: &str,
    data: &str,
    opts: PublishOptions<'_>,
) -> Result<(reqwest::StatusCode, String)> {
    let mut url = format!("{base}/v1/topics/{topic}/events");
    let query = opts.query.trim_start_matches('?');
    if !query.is_empty() {
        url = format!("{url}?{query}");
    }
    let mut req = client.post(url).body(data.to_owned());
    if let Some(t) = opts.token {
        req = req.bearer_auth(t);
    }
    if let Some(k) = opts.idempotency_key {
        req = req.header("idempotency-key", k);
    }
    if let Some(t) = opts.timeout {
        req = req.timeout(t);
    }
    let resp = req.send().await?;
    Ok((resp.status(), resp.text().await?))
}

/// Publishes with `opts`; fails unless 201; the acknowledgement as JSON.
pub async fn publish_json(
    client: &reqwest::Client,
    base: &str,
    topic: &str,
    data: &str,
    opts: PublishOptions<'_>,
) -> Result<serde_json::Value> {
    let (status, text) = publish_raw(client, base, topic, data, opts).await?;
    if status != reqwest::StatusCode::CREATED {
        bail!("publish to {topic} answered {status}: {text}");
    }
    Ok(serde_json::from_str(&text)?)
}

/// Publishes with a query string (`ttl=1s`, `priority=high`, …); fails
/// unless 201; the acknowledgement as JSON.
pub async fn publish_query(
    client: &reqwest::Client,
    base: &str,
    topic: &str,
    data: &str,
    query: &str,
) -> Result<serde_json::Value> {
    publish_json(client, base, topic, data, PublishOptions::query(query)).await
}

/// `POST {base}/v1/topics/{topic}/events`; fails unless 201.
pub async fn publish(
    client: &reqwest::Client,
    base: &str,
    topic: &str,
    data: &str,
) -> Result<Published> {
    let ack = publish_json(client, base, topic, data, PublishOptions::default()).await?;
    Ok(serde_json::from_value(ack)?)
}

/// Replaces `path` with `content` the way a Secret volume or a deploy
/// tool does: a new file renamed over the old one, so a watcher never
/// reads half of it.
pub fn replace_file(path: &Path, content: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Waits (bounded) until `GET {base}/readyz` through `client` answers 503:
/// the gateway has begun to drain.
pub async fn wait_draining(client: &reqwest::Client, base: &str, within: Duration) -> Result<()> {
    crate::wait::wait_until("/readyz to report draining", within, || async {
        match client.get(format!("{base}/readyz")).send().await {
            Ok(r) if r.status() == 503 => Ok(()),
            Ok(r) => Err(format!("/readyz {}", r.status())),
            Err(e) => Err(e.to_string()),
        }
    })
    .await
}
