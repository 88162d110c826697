//! The W3C Trace Context `traceparent` header: its trace id names a
//! request in logs and is the first canary routing key.

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
