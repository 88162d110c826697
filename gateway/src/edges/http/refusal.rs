//! How a transient stream refusal reaches the client. A browser
//! `EventSource` gives up for good on any non-200 answer, so a client that
//! asked for `text/event-stream` gets a 200 stream that only says "come back
//! in N ms" and ends: a jittered `retry:`, a comment naming the reason, and
//! no `id:` (the client's Last-Event-ID must survive). Everyone else gets
//! the JSON 503 with `Retry-After`.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Response};
use axum::response::IntoResponse;

use crate::edges::shared::error::ApiError;
use crate::engine::admission::Refusal;
use crate::engine::node::jitter_ms;

/// Response header naming the refusal reason on either form (for operators
/// and tests; clients need not read it).
pub const REFUSED_HEADER: &str = "x-pushgate-refused";

/// True when the request asks for `text/event-stream` by name, as every
/// `EventSource` does; wildcards and a missing `Accept` do not count.
pub fn wants_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|part| {
            part.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/event-stream"))
        })
}

/// The body of the event-stream form.
pub fn event_stream_body(r: &Refusal, retry_ms: u64) -> String {
    format!(
        "retry: {retry_ms}\n: refused {}: {}\n\n",
        r.reason.label(),
        r.message
    )
}

/// Renders `r` for a client that did (`event_stream`) or did not ask for SSE.
pub fn response(r: Refusal, event_stream: bool) -> Response<Body> {
    let label = HeaderValue::from_static(r.reason.label());
    let mut resp = if event_stream {
        let body = event_stream_body(&r, jitter_ms(r.retry_after));
        super::event_stream(Body::from(body))
    } else {
        ApiError::from(r).into_response()
    };
    resp.headers_mut().insert(REFUSED_HEADER, label);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edges::sse::Parser;
    use crate::engine::admission::RefuseReason;
    use axum::http::StatusCode;
    use std::time::Duration;

    fn refusal() -> Refusal {
        Refusal {
            reason: RefuseReason::MaxConnections,
            message: "too many open streams".into(),
            retry_after: Duration::from_secs(2),
        }
    }

    #[test]
    fn only_an_explicit_event_stream_accept_counts() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::ACCEPT, v.parse().unwrap());
            m
        };
        assert!(wants_event_stream(&h("text/event-stream")));
        assert!(wants_event_stream(&h(
            "application/json, Text/Event-Stream;q=0.9"
        )));
        assert!(!wants_event_stream(&h("*/*")));
        assert!(!wants_event_stream(&h("application/json")));
        assert!(!wants_event_stream(&HeaderMap::new()));
    }

    #[test]
    fn event_stream_form_sets_retry_and_keeps_the_last_event_id() {
        let body = event_stream_body(&refusal(), 1234);
        assert_eq!(
            body,
            "retry: 1234\n: refused max_connections: too many open streams\n\n"
        );
        let mut p = Parser::new();
        p.feed(b"id: kept\ndata: x\n\n");
        assert!(p.feed(body.as_bytes()).is_empty(), "no event dispatched");
        assert_eq!(p.last_event_id(), "kept");
        assert_eq!(p.retry(), Some(1234));
    }

    #[test]
    fn jitter_stays_within_half_of_the_retry_after() {
        for _ in 0..200 {
            let ms = jitter_ms(Duration::from_secs(2));
            assert!((1000..=3000).contains(&ms), "{ms}");
        }
    }

    #[test]
    fn json_form_is_a_503_with_retry_after() {
        let resp = response(refusal(), false);
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "2");
        assert_eq!(resp.headers()[REFUSED_HEADER], "max_connections");
        let resp = response(refusal(), true);
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            resp.headers()[header::CONTENT_TYPE],
            "text/event-stream; charset=utf-8"
        );
    }
}
