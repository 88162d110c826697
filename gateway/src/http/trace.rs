//! Request logging with a trace id: the trace-id of `traceparent` when the
//! caller sent one, otherwise a fresh random id.

use std::time::Instant;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

/// The 32-hex trace-id field of a W3C `traceparent`, if well-formed and not all zeros.
pub fn trace_id_of(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    let ok = hex(version, 2)
        && version != "ff"
        && hex(trace, 32)
        && hex(span, 16)
        && hex(flags, 2)
        && trace.bytes().any(|b| b != b'0')
        && span.bytes().any(|b| b != b'0');
    (ok && (version != "00" || parts.next().is_none())).then_some(trace)
}

pub async fn log_request(req: Request, next: Next) -> Response {
    let trace_id = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(trace_id_of)
        .map(|s| s.to_ascii_lowercase())
        .unwrap_or_else(|| format!("{:032x}", rand::random::<u128>()));
    // The path only: query strings may carry tokens.
    let span = tracing::info_span!(
        "request",
        trace_id = %trace_id,
        method = %req.method(),
        path = %req.uri().path(),
        client = tracing::field::Empty,
    );
    let started = Instant::now();
    async move {
        let resp = next.run(req).await;
        tracing::info!(
            status = resp.status().as_u16(),
            ms = started.elapsed().as_secs_f64() * 1000.0,
            "request"
        );
        resp
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests {
    use super::trace_id_of;

    #[test]
    fn parses_w3c_traceparent() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(trace_id_of(tp), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert_eq!(
            trace_id_of("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(
            trace_id_of("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"),
            None
        );
        assert_eq!(
            trace_id_of("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(
            trace_id_of("00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(trace_id_of("garbage"), None);
        assert!(
            trace_id_of(&format!("{tp}-extra")).is_none(),
            "version 00 has exactly 4 fields"
        );
        assert!(
            trace_id_of(&format!("01{}-extra", &tp[2..])).is_some(),
            "future versions may add fields"
        );
    }
}
