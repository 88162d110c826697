//! A real `redis-server` on a free loopback port with its own data directory
//! (`appendonly yes`, `appendfsync always`). Never touches port 6379. Stopped
//! on drop. Installs Debian's `redis-server` if it is missing (as root), or
//! fails loudly.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// One Redis server process, restartable on the same port and data.
pub struct RedisServer {
    child: Option<Child>,
    /// Its port.
    pub port: u16,
    /// The address it listens on (127.0.0.1 unless started with [`RedisServer::start_on`]).
    pub ip: std::net::Ipv4Addr,
    dir: tempfile::TempDir,
}

fn redis_binary() -> Result<PathBuf> {
    let find = || {
        ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
    };
    if let Some(p) = find() {
        return Ok(p);
    }
    eprintln!("redis-server missing: apt-get install -y redis-server");
    let ok = Command::new("sh")
        .args([
            "-c",
            "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server",
        ])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    match find() {
        Some(p) if ok => Ok(p),
        _ => bail!("redis-server is not installed and could not be installed (apt-get install redis-server)"),
    }
}

/// A free loopback port other than 6379, never handed out twice in this
/// process (many tests of one binary start servers at once).
fn free_port() -> Result<u16> {
    for _ in 0..50 {
        let port = crate::controlplane::free_port();
        if port != 6379 {
            return Ok(port);
        }
    }
    bail!("no free port")
}

impl RedisServer {
    /// Starts a fresh server.
    pub fn start() -> Result<RedisServer> {
        Self::start_on(std::net::Ipv4Addr::LOCALHOST)
    }

    /// Starts a fresh server listening on `ip` (an address of this machine,
    /// e.g. the test node's bridge, so pods reach it).
    pub fn start_on(ip: std::net::Ipv4Addr) -> Result<RedisServer> {
        let mut r = RedisServer {
            child: None,
            port: free_port()?,
            ip,
            dir: tempfile::tempdir()?,
        };
        r.resume()?;
        Ok(r)
    }

    /// `redis://IP:PORT`.
    pub fn url(&self) -> String {
        format!("redis://{}:{}", self.ip, self.port)
    }

    /// Starts the server again (same port, same data) after [`RedisServer::stop`].
    pub fn resume(&mut self) -> Result<()> {
        let bin = redis_binary()?;
        let child = Command::new(&bin)
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                &self.ip.to_string(),
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .args([
                "--daemonize",
                "no",
                // Protected mode refuses every non-loopback client; a
                // bridge address is only reachable from this machine's pods.
                "--protected-mode",
                if self.ip.is_loopback() { "yes" } else { "no" },
                "--loglevel",
                "warning",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;
        self.child = Some(child);
        crate::wait::wait_until_blocking(
            &format!("redis-server on port {} to answer PING", self.port),
            Duration::from_secs(20),
            || self.ping(),
        )
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing is
    /// answered, as when Redis stalls.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Lets a paused server run again (SIGCONT).
    pub fn unpause(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(c.id() as i32, sig);
            }
        }
    }

    fn ping(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect((self.ip, self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut buf = [0u8; 16];
        s.write_all(b"PING\r\n").is_ok()
            && s.read(&mut buf)
                .map(|n| buf[..n].starts_with(b"+PONG"))
                .unwrap_or(false)
    }

    /// A client for raw commands (fault injection, inspection).
    pub fn cli(&self) -> RedisCli {
        RedisCli {
            ip: self.ip,
            port: self.port,
        }
    }

    /// Stops the server (SIGTERM, which also flushes the append-only file) and waits.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let exited = crate::wait::wait_until_blocking(
                "redis-server to exit after SIGTERM",
                Duration::from_secs(10),
                || matches!(c.try_wait(), Ok(Some(_))),
            );
            if exited.is_ok() {
                return;
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Sends single commands over RESP and returns the first reply line.
#[derive(Debug, Clone)]
pub struct RedisCli {
    ip: std::net::Ipv4Addr,
    port: u16,
}

impl RedisCli {
    /// Runs one command; panics unless Redis answers with a non-error reply.
    pub fn run(&self, args: &[&str]) -> String {
        use std::io::{BufRead, BufReader, Write};
        let mut s = std::net::TcpStream::connect((self.ip, self.port)).expect("connect to redis");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).expect("write to redis");
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).expect("redis reply");
        assert!(!line.starts_with('-'), "redis {args:?}: {line}");
        line.trim_end().to_owned()
    }
}
