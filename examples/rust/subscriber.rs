//! A subscriber that never loses or repeats an event: it reads the SSE
//! stream, remembers the last `id:`, and after any disconnect (gateway
//! restart, rolling update, network) reconnects with `Last-Event-ID`.
//!
//! ```sh
//! cargo run -p pushgate-e2e --example subscriber -- http://localhost:8080 news [CURSOR|earliest] [--max N]
//! ```
//! Prints `<id> <data>` per event (`<id> [<type>] <data>` for other types,
//! e.g. `reset`). With `--max N` it exits after N events.

use futures_util::StreamExt;
use std::time::Duration;

mod sse;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let max = match args.iter().position(|a| a == "--max") {
        Some(i) => {
            let n: usize = args.get(i + 1).map(|s| s.parse()).transpose()?.unwrap_or(0);
            args.drain(i..=(i + 1).min(args.len() - 1));
            Some(n)
        }
        None => None,
    };
    let (Some(gateway), Some(topic)) = (args.first(), args.get(1)) else {
        anyhow::bail!("usage: subscriber GATEWAY_URL TOPIC [CURSOR|earliest] [--max N]");
    };
    let mut cursor = args.get(2).cloned();
    let mut retry = Duration::from_secs(1);
    let mut seen = 0usize;
    let client = reqwest::Client::new();
    loop {
        let mut req = client
            .get(format!("{}/v1/stream", gateway.trim_end_matches('/')))
            .query(&[("topic", topic)]);
        if let Some(c) = &cursor {
            req = req.header("Last-Event-ID", c);
        }
        if let Ok(token) = std::env::var("TOKEN") {
            req = req.bearer_auth(token);
        }
        match req.send().await {
            Ok(resp) if resp.status().is_success() => {
                let mut body = resp.bytes_stream();
                let mut reader = sse::Reader::default();
                // Ends on EOF or a read error; both mean: reconnect.
                while let Some(Ok(chunk)) = body.next().await {
                    for ev in reader.feed(&chunk) {
                        if let Some(ms) = ev.retry_ms {
                            retry = Duration::from_millis(ms);
                        }
                        if let Some(id) = ev.id {
                            cursor = Some(id);
                        }
                        let Some(data) = ev.data else { continue };
                        let id = cursor.as_deref().unwrap_or("");
                        match ev.event.as_deref() {
                            None | Some("message") => println!("{id} {data}"),
                            Some(t) => println!("{id} [{t}] {data}"),
                        }
                        seen += 1;
                        if max.is_some_and(|m| seen >= m) {
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
