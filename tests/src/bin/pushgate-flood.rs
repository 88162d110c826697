//! `pushgate-flood`: a hostile client for the edge tests. Opens `--count`
//! TCP connections to `--addr` (loopback only) that send nothing
//! (`--mode idle`), half a request head (`half`), or alternate between the
//! two (`mixed`); prints `{"opened":N,"failed":M}` once they are all up,
//! then holds them until stdin closes or `--hold` seconds pass, and prints
//! `{"closed_by_server":K}` (connections the server ended meanwhile).
//! Every loop is bounded: each connection is tried once.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// Half a request head: no blank line ever follows.
const HALF_HEAD: &[u8] = b"GET /v1/stream?topic=flood HTTP/1.1\r\nHost: x\r\nX-Slow: ";

struct Args {
    addr: SocketAddr,
    count: usize,
    mode: String,
    hold: Duration,
}

fn args() -> Args {
    let mut it = std::env::args().skip(1);
    let mut a = Args {
        addr: "127.0.0.1:8080".parse().unwrap(),
        count: 1000,
        mode: "idle".into(),
        hold: Duration::from_secs(120),
    };
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--addr" => a.addr = v.parse().expect("--addr HOST:PORT"),
            "--count" => a.count = v.parse().expect("--count N"),
            "--mode" => a.mode = v,
            "--hold" => a.hold = Duration::from_secs_f64(v.parse().expect("--hold SECONDS")),
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(
        a.addr.ip().is_loopback(),
        "pushgate-flood only targets loopback"
    );
    assert!(
        matches!(a.mode.as_str(), "idle" | "half" | "mixed"),
        "--mode idle|half|mixed"
    );
    a
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let a = args();
    // Each flood process stays under its own limit, raised to the hard one.
    let _ = pushgate::ops::nofile::raise_nofile_limit();
    let opened = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(AtomicUsize::new(0));
    let connecting = Arc::new(Semaphore::new(256));
    let (up_tx, mut up_rx) = tokio::sync::mpsc::channel::<()>(a.count.max(1));
    let mut held = Vec::with_capacity(a.count);
    for i in 0..a.count {
        let half = a.mode == "half" || (a.mode == "mixed" && i % 2 == 1);
        let (opened, failed, closed) = (opened.clone(), failed.clone(), closed.clone());
        let (connecting, up) = (connecting.clone(), up_tx.clone());
        let addr = a.addr;
        held.push(tokio::spawn(async move {
            let permit = connecting.acquire_owned().await.expect("open semaphore");
            let conn = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await;
            let mut s = match conn {
                Ok(Ok(s)) => s,
                _ => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    let _ = up.send(()).await;
                    return;
                }
            };
            if half && s.write_all(HALF_HEAD).await.is_err() {
                failed.fetch_add(1, Ordering::Relaxed);
                let _ = up.send(()).await;
                return;
            }
            drop(permit);
            opened.fetch_add(1, Ordering::Relaxed);
            let _ = up.send(()).await;
            // Held until the server closes it (or the process ends).
            let mut buf = [0u8; 512];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => {
                        closed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    Ok(_) => {}
                }
            }
        }));
    }
    drop(up_tx);
    for _ in 0..a.count {
        if up_rx.recv().await.is_none() {
            break;
        }
    }
    println!(
        "{{\"opened\":{},\"failed\":{}}}",
        opened.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    // Stop when the parent closes our stdin, or after --hold.
    let mut stdin = tokio::io::stdin();
    let mut b = [0u8; 1];
    let _ = tokio::time::timeout(a.hold, async {
        while let Ok(n) = stdin.read(&mut b).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    println!(
        "{{\"closed_by_server\":{}}}",
        closed.load(Ordering::Relaxed)
    );
    for h in held {
        h.abort();
    }
}
