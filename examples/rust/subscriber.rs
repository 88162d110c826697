//! A subscriber that never loses or repeats an event: it reads the SSE
//! stream, remembers the last `id:`, and after any disconnect (gateway
//! restart, rolling update, network) reconnects with `Last-Event-ID`.
//!
//! ```sh
//! cargo run -p pushgate-e2e --example subscriber -- http://localhost:8080 news [CURSOR|earliest] [--max N]
//! ```
//! Prints `<id> <data>` per event (`<id> [<type>] <data>` for other types,
//! e.g. `reset`). With `--max N` it exits after N events.

mod sse;

struct Subscriber {
    gateway: String,
    topic: String,
    cursor: Option<String>,
    max: Option<usize>,
    seen: usize,
}

impl sse::Follower for Subscriber {
    fn request(&self, http: &reqwest::Client) -> reqwest::RequestBuilder {
        let mut req = http
            .get(format!("{}/v1/stream", self.gateway))
            .query(&[("topic", &self.topic)]);
        if let Some(c) = &self.cursor {
            req = req.header("Last-Event-ID", c);
        }
        if let Ok(token) = std::env::var("TOKEN") {
            req = req.bearer_auth(token);
        }
        req
    }

    async fn event(&mut self, _: &reqwest::Client, ev: sse::Event) -> bool {
        if let Some(id) = ev.id {
            self.cursor = Some(id);
        }
        let Some(data) = ev.data else { return true };
        let id = self.cursor.as_deref().unwrap_or("");
        match ev.event.as_deref() {
            None | Some("message") => println!("{id} {data}"),
            Some(t) => println!("{id} [{t}] {data}"),
        }
        self.seen += 1;
        self.max.is_none_or(|m| self.seen < m)
    }
}

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
    let mut sub = Subscriber {
        gateway: gateway.trim_end_matches('/').to_owned(),
        topic: topic.clone(),
        cursor: args.get(2).cloned(),
        max,
        seen: 0,
    };
    sse::follow(&reqwest::Client::new(), &mut sub).await;
    Ok(())
}
