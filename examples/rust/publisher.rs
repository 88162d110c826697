//! Publishes events so that each is stored exactly once, even across
//! timeouts and gateway restarts: every event carries an `Idempotency-Key`,
//! and a 503, 429 or connection error is retried with the same key.
//!
//! ```sh
//! cargo run -p pushgate-e2e --example publisher -- http://localhost:8080 news hello world
//! ```
//! Prints the acknowledgement (`{"id","topic","seq"}`) of each event.

use std::time::Duration;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [gateway, topic, data @ ..] = args.as_slice() else {
        anyhow::bail!("usage: publisher GATEWAY_URL TOPIC DATA...");
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let url = format!("{}/v1/topics/{topic}/events", gateway.trim_end_matches('/'));
    let run = std::process::id();
    for (n, data) in data.iter().enumerate() {
        let key = format!("publisher-{run}-{n}");
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let mut req = client
                .post(&url)
                .header("Idempotency-Key", &key)
                .body(data.clone());
            if let Ok(token) = std::env::var("TOKEN") {
                req = req.bearer_auth(token);
            }
            let retryable = match req.send().await {
                Ok(resp) if resp.status().is_success() => {
                    println!("{}", resp.text().await?);
                    break;
                }
                Ok(resp) => {
                    let status = resp.status();
                    let body = resp.text().await.unwrap_or_default();
                    if status != 503 && status != 429 {
                        anyhow::bail!("publish refused: {status} {body}");
                    }
                    format!("{status} {body}")
                }
                Err(e) => e.to_string(),
            };
            if attempt >= 10 {
                anyhow::bail!("giving up after {attempt} attempts: {retryable}");
            }
            eprintln!("retrying ({retryable})");
            tokio::time::sleep(Duration::from_millis(250 * u64::from(attempt))).await;
        }
    }
    Ok(())
}
