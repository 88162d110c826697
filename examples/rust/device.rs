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
//!
//! It also follows its shadow: an `event: shadow` carries the desired state
//! that differs from what it reported; it applies it (here: prints it) and
//! reports it back with `PATCH /v1/devices/{device}/shadow`. An
//! `event: expired` says commands expired while it was away.

mod sse;

struct Device {
    gateway: String,
    device: String,
    topic: String,
    token: Option<String>,
    max: Option<usize>,
    handled: usize,
}

impl sse::Follower for Device {
    fn request(&self, http: &reqwest::Client) -> reqwest::RequestBuilder {
        let req = http
            .get(format!("{}/v1/stream", self.gateway))
            .query(&[("topic", &self.topic)]);
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req.query(&[("device", &self.device)]),
        }
    }

    async fn event(&mut self, http: &reqwest::Client, ev: sse::Event) -> bool {
        match (ev.event.as_deref(), &ev.data) {
            (Some("shadow"), Some(data)) => {
                println!("[shadow] {data}");
                self.report(http, data).await;
                return true;
            }
            (Some("expired"), Some(data)) => {
                println!("[expired] {data}");
                return true;
            }
            _ => {}
        }
        let (Some(data), Some(id)) = (ev.data, ev.id) else {
            return true;
        };
        match ev.event.as_deref() {
            None | Some("message") => println!("{data}"),
            Some(t) => println!("[{t}] {data}"),
        }
        // Handled, so acknowledged: the gateway now holds the position this
        // device would otherwise have to store.
        let mut ack = http
            .post(format!("{}/v1/devices/{}/ack", self.gateway, self.device))
            .json(&serde_json::json!({ "id": id }));
        if let Some(t) = &self.token {
            ack = ack.bearer_auth(t);
        }
        match ack.send().await {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => eprintln!("ack answered {}", r.status()),
            Err(e) => eprintln!("ack failed: {e}"),
        }
        self.handled += 1;
        self.max.is_none_or(|m| self.handled < m)
    }
}

impl Device {
    /// Applies a shadow delta and reports the new state: what the device
    /// reports is what publishers stop asking for.
    async fn report(&self, http: &reqwest::Client, data: &str) {
        let Ok(shadow) = serde_json::from_str::<serde_json::Value>(data) else {
            eprintln!("shadow event is not JSON: {data}");
            return;
        };
        let body = serde_json::json!({ "state": { "reported": shadow["delta"] } });
        let mut req = http
            .patch(format!(
                "{}/v1/devices/{}/shadow",
                self.gateway, self.device
            ))
            .json(&body);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        match req.send().await {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => eprintln!("shadow report answered {}", r.status()),
            Err(e) => eprintln!("shadow report failed: {e}"),
        }
    }
}

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
    let mut d = Device {
        gateway: gateway.trim_end_matches('/').to_owned(),
        device: device.clone(),
        topic: topic.clone(),
        token: std::env::var("TOKEN").ok(),
        max,
        handled: 0,
    };
    sse::follow(&reqwest::Client::new(), &mut d).await;
    Ok(())
}
