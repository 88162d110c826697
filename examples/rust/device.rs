//! A device that keeps no state of its own (firmware without storage): it
//! never sends `Last-Event-ID`. It handles each event, then acknowledges it
//! with `POST /v1/devices/{device}/ack`; after any restart of the device or
//! the gateway, its stream resumes right after the last acknowledged event.
//!
//! ```sh
//! cargo run -p pushgate-e2e --example device -- http://localhost:8080 DEVICE TOPIC [--max N]
//! ```
//! Prints `<data>` per event (`[<type>] <data>` for other types). With auth
//! on, `TOKEN` holds the device's token (its `sub` is `DEVICE`); with auth
//! off the device names itself with `?device=`.

use futures_util::StreamExt;
use std::time::Duration;

mod sse;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let max: Option<usize> = match args.iter().position(|a| a == "--max") {
        Some(i) => Some(args.get(i + 1).map(|s| s.parse()).transpose()?.unwrap_or(0)),
        None => None,
    };
    let (Some(gateway), Some(device), Some(topic)) = (args.first(), args.get(1), args.get(2))
    else {
        anyhow::bail!("usage: device GATEWAY_URL DEVICE TOPIC [--max N]");
    };
    let gateway = gateway.trim_end_matches('/');
    let token = std::env::var("TOKEN").ok();
    let client = reqwest::Client::new();
    let mut retry = Duration::from_secs(1);
    let mut handled = 0usize;
    loop {
        let mut req = client
            .get(format!("{gateway}/v1/stream"))
            .query(&[("topic", topic.as_str())]);
        match &token {
            Some(t) => req = req.bearer_auth(t),
            None => req = req.query(&[("device", device.as_str())]),
        }
        match req.send().await {
            Ok(resp) if resp.status().is_success() => {
                let mut body = resp.bytes_stream();
                let mut reader = sse::Reader::default();
                while let Some(Ok(chunk)) = body.next().await {
                    for ev in reader.feed(&chunk) {
                        if let Some(ms) = ev.retry_ms {
                            retry = Duration::from_millis(ms);
                        }
                        let (Some(data), Some(id)) = (ev.data, ev.id) else {
                            continue;
                        };
                        match ev.event.as_deref() {
                            None | Some("message") => println!("{data}"),
                            Some(t) => println!("[{t}] {data}"),
                        }
                        // Handled, so acknowledged: the gateway now holds the
                        // position this device would otherwise have to store.
                        let mut ack = client
                            .post(format!("{gateway}/v1/devices/{device}/ack"))
                            .json(&serde_json::json!({ "id": id }));
                        if let Some(t) = &token {
                            ack = ack.bearer_auth(t);
                        }
                        match ack.send().await {
                            Ok(r) if r.status().is_success() => {}
                            Ok(r) => eprintln!("ack answered {}", r.status()),
                            Err(e) => eprintln!("ack failed: {e}"),
                        }
                        handled += 1;
                        if max.is_some_and(|m| handled >= m) {
                            return Ok(());
                        }
                    }
                }
                eprintln!("stream ended; resuming in {retry:?}");
            }
            Ok(resp) => eprintln!("gateway answered {}; retrying in {retry:?}", resp.status()),
            Err(e) => eprintln!("cannot connect ({e}); retrying in {retry:?}"),
        }
        tokio::time::sleep(retry).await;
    }
}
