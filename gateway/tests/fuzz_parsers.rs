//! Property-based fuzzing of every parser that sees client input: the cursor
//! decoder, topic names and topic patterns, `traceparent`, the SSE encoder
//! (round-tripped through the browser-faithful parser) and JWT claim handling.
//!
//! `cargo fuzz` needs a nightly toolchain and a libFuzzer build that CI does
//! not have offline, so these run as proptest targets inside `cargo test`.
//! Each target first replays its corpus (`tests/fuzz-corpus/<target>.txt`, one
//! JSON string per line: past crashes and interesting seeds), then runs a
//! bounded number of generated cases: `PUSHGATE_FUZZ_CASES` (default 2000)
//! keeps each target to a few seconds in CI; raise it for a longer campaign.
//! Proptest records any failing input in `fuzz_parsers.proptest-regressions`
//! next to this file; it is replayed first on every later run, and a crash
//! found here is also added to the corpus as a regression seed.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use proptest::prelude::*;
use proptest::test_runner::Config;
use pushgate::auth::pattern::TopicPattern;
use pushgate::auth::{Auth, AuthConfig, KeyAlgorithm};
use pushgate::core::cursor::{Cursor, Position, ResumeFrom};
use pushgate::core::position::{Epoch, Seq, StreamPos};
use pushgate::core::topic::Topic;
use pushgate::core::traceparent::trace_id_of;
use pushgate::edges::sse::{wire as sse, Parser};

fn cases() -> u32 {
    std::env::var("PUSHGATE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

fn config() -> Config {
    Config {
        cases: cases(),
        // Shrinking a real failure is worth the time; a hang is not.
        max_shrink_iters: 2000,
        ..Config::default()
    }
}

/// The corpus of one target: JSON strings, one per line (blank lines and `#` comments skipped).
fn corpus(target: &str) -> Vec<String> {
    let path = format!(
        "{}/tests/fuzz-corpus/{target}.txt",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let seeds: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{path}: {l}: {e}")))
        .collect();
    assert!(!seeds.is_empty(), "{path} has no seeds");
    seeds
}

// ---- cursor decoder ----------------------------------------------------------

fn check_cursor_text(s: &str) {
    let _ = ResumeFrom::parse(s);
    if let Ok(c) = Cursor::decode(s) {
        // Whatever decodes is canonical: it re-encodes to something that decodes the same.
        let again = Cursor::decode(&c.encode()).expect("re-encoded cursor decodes");
        assert_eq!(again, c);
    }
}

#[test]
fn cursor_corpus() {
    for s in corpus("cursor") {
        check_cursor_text(&s);
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn cursor_arbitrary_text(s in "\\PC{0,120}|[A-Za-z0-9_-]{0,200}") {
        check_cursor_text(&s);
    }

    #[test]
    fn cursor_mutated(
        ts in any::<u64>(),
        pos in proptest::collection::vec((any::<u32>(), any::<u64>(), any::<u64>()), 0..8),
        at in any::<prop::sample::Index>(),
        to in prop::sample::select(b"AZaz09-_=+/. ".to_vec()),
        cut in any::<bool>(),
    ) {
        let c = Cursor { ts_ms: ts, positions: pos.into_iter().map(|(tag, epoch, seq)| Position {
            tag,
            at: StreamPos { epoch: Epoch::new(epoch), seq: Seq::new(seq) },
        }).collect() };
        let mut text = c.encode().into_bytes();
        let i = at.index(text.len());
        if cut { text.truncate(i) } else { text[i] = to }
        let text = String::from_utf8(text).unwrap();
        check_cursor_text(&text);
    }
}

// ---- topic names and patterns ------------------------------------------------

fn check_topic_text(s: &str) {
    let topic = Topic::parse(s);
    let pattern = TopicPattern::parse(s);
    if let Ok(t) = &topic {
        // Every topic name is also the pattern that matches exactly it.
        let p = pattern.as_ref().expect("a topic is a valid pattern");
        assert!(p.matches(t));
        assert_eq!(t.as_str(), s);
    }
    if let Ok(p) = &pattern {
        assert_eq!(p.as_str(), s);
        assert!(!s.is_empty() && s.len() <= 200);
    }
}

/// Reference semantics: plain recursion over segments (exponential, so only for small inputs).
fn naive_match(p: &[&str], t: &[&str]) -> bool {
    match p.first() {
        None => t.is_empty(),
        Some(&"**") => (0..=t.len()).any(|k| naive_match(&p[1..], &t[k..])),
        Some(&"*") => !t.is_empty() && naive_match(&p[1..], &t[1..]),
        Some(lit) => t.first() == Some(lit) && naive_match(&p[1..], &t[1..]),
    }
}

#[test]
fn topic_corpus() {
    for s in corpus("topic") {
        check_topic_text(&s);
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn topic_arbitrary_text(s in "\\PC{0,60}|[a-z*/]{0,40}|[a-z/]{190,210}") {
        check_topic_text(&s);
    }

    #[test]
    fn pattern_matching_agrees_with_reference(
        p in proptest::collection::vec(prop::sample::select(vec!["a", "b", "*", "**"]), 1..7),
        t in proptest::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 1..7),
    ) {
        let pattern = TopicPattern::parse(&p.join("/")).unwrap();
        let topic = Topic::parse(&t.join("/")).unwrap();
        prop_assert_eq!(pattern.matches(&topic), naive_match(&p, &t), "{} vs {}", p.join("/"), t.join("/"));
    }
}

#[test]
fn hostile_patterns_match_in_bounded_time() {
    let started = std::time::Instant::now();
    // Many `**` and a last segment that never matches: the worst case for backtracking.
    let p = TopicPattern::parse(&format!("{}**/b", "**/a/".repeat(38))).unwrap();
    let t = Topic::parse(&["a"; 100].join("/")).unwrap();
    assert!(!p.matches(&t));
    for _ in 0..100 {
        std::hint::black_box(p.matches(&t));
    }
    assert!(
        started.elapsed().as_secs() < 5,
        "pattern matching must not backtrack"
    );
}

// ---- traceparent -------------------------------------------------------------

fn check_traceparent(s: &str) {
    if let Some(id) = trace_id_of(s) {
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(id.bytes().any(|b| b != b'0'));
        assert!(s.contains(id));
    }
}

#[test]
fn traceparent_corpus() {
    for s in corpus("traceparent") {
        check_traceparent(&s);
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn traceparent_arbitrary_text(s in "\\PC{0,80}|[0-9a-f-]{50,60}") {
        check_traceparent(&s);
    }

    #[test]
    fn traceparent_well_formed_is_accepted(trace in "[0-9a-f]{32}", span in "[0-9a-f]{16}", flags in "[0-9a-f]{2}") {
        let tp = format!("00-{trace}-{span}-{flags}");
        let valid = trace.bytes().any(|b| b != b'0') && span.bytes().any(|b| b != b'0');
        prop_assert_eq!(trace_id_of(&tp), valid.then_some(trace.as_str()));
    }
}

// ---- SSE encoder round trip --------------------------------------------------

fn check_sse_round_trip(event_type: Option<&str>, data: &str, id: &str, splits: &[usize]) {
    let bytes = sse::event(event_type, data, Some(id));
    let mut parser = Parser::new();
    let mut events = Vec::new();
    let mut rest: &[u8] = &bytes;
    for &n in splits {
        let n = n.min(rest.len());
        events.extend(parser.feed(&rest[..n]));
        rest = &rest[n..];
    }
    events.extend(parser.feed(rest));
    assert_eq!(events.len(), 1, "one block, one event: {bytes:?}");
    let ev = &events[0];
    assert_eq!(ev.data, data.replace("\r\n", "\n").replace('\r', "\n"));
    assert_eq!(ev.event_type, event_type.unwrap_or("message"));
    assert_eq!(ev.id, id);
}

#[test]
fn sse_corpus() {
    for s in corpus("sse") {
        check_sse_round_trip(None, &s, "c1", &[1, 2, 3]);
        check_sse_round_trip(Some("update"), &s, "c2", &[]);
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn sse_encoder_round_trip(
        data in "\\PC{0,60}|[a-z \r\n:]{0,60}",
        event_type in proptest::option::of("[a-zA-Z0-9._ :-]{1,20}"),
        id in "[A-Za-z0-9_-]{1,40}",
        splits in proptest::collection::vec(0usize..20, 0..6),
    ) {
        check_sse_round_trip(event_type.as_deref(), &data, &id, &splits);
    }
}

// ---- JWT claim handling ------------------------------------------------------

const SECRET: &str = "fuzzing-secret-fuzzing-secret-0123456789";
const LEEWAY: u64 = 5;

fn auth() -> Auth {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    write!(f, "{SECRET}").unwrap();
    let cfg = AuthConfig {
        key_file: Some(f.path().to_owned()),
        algorithm: KeyAlgorithm::Hs256,
        leeway: std::time::Duration::from_secs(LEEWAY),
        ..AuthConfig::default()
    };
    Auth::from_config(&cfg).unwrap()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A token over an arbitrary payload, signed correctly: the claims are what is fuzzed.
fn signed(payload: &serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        payload,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// Accepted tokens must satisfy every rule; this is the oracle. Returns whether it was accepted.
fn check_claims(auth: &Auth, payload: &serde_json::Value) -> bool {
    let Ok(grants) = auth.verify(&signed(payload)) else {
        return false;
    };
    let now = now();
    let exp = payload["exp"]
        .as_i64()
        .expect("accepted tokens have an integer exp");
    assert!(
        exp + LEEWAY as i64 >= now,
        "expired token accepted: {payload}"
    );
    if let Some(nbf) = payload.get("nbf") {
        let nbf = nbf.as_i64().expect("accepted nbf is an integer");
        assert!(
            nbf - LEEWAY as i64 <= now,
            "immature token accepted: {payload}"
        );
    }
    assert_eq!(payload["sub"].as_str(), Some(grants.client_id.as_str()));
    assert!(!grants.client_id.chars().any(char::is_control));
    let listed = |dir: &str| payload["topics"][dir].as_array().map_or(0, |a| a.len());
    assert_eq!(grants.subscribe.len(), listed("subscribe"));
    assert_eq!(grants.publish.len(), listed("publish"));
    true
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::{json, Value};
    let t = now();
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-100_000i64..100_000).prop_map(move |d| json!(t + d)),
        any::<i64>().prop_map(|n| json!(n)),
        (-1e12f64..1e12).prop_map(|f| json!(f)),
        "\\PC{0,12}".prop_map(Value::String),
        (-100_000i64..100_000).prop_map(move |d| Value::String((t + d).to_string())),
        proptest::collection::vec("[a-z*/]{0,10}", 0..4).prop_map(|v| json!(v)),
    ]
}

#[test]
fn jwt_corpus() {
    let auth = auth();
    for s in corpus("jwt") {
        // Seeds are raw tokens (malformed ones included) and JSON payloads to sign.
        let _ = auth.verify(&s);
        if let Ok(payload) = serde_json::from_str::<serde_json::Value>(&s) {
            check_claims(&auth, &payload);
        }
    }
}

/// Mostly well-formed values with an arbitrary one now and then, so that both
/// acceptance and every kind of refusal are exercised.
fn usually(good: BoxedStrategy<serde_json::Value>) -> BoxedStrategy<serde_json::Value> {
    prop_oneof![4 => good, 1 => json_value()].boxed()
}

#[test]
fn jwt_claims_are_enforced() {
    use serde_json::{json, Value};
    let t = now();
    let time = (-100_000i64..100_000)
        .prop_map(move |d| json!(t + d))
        .boxed();
    let sub = "[a-z0-9-]{1,12}".prop_map(Value::String).boxed();
    let topics = proptest::collection::vec(
        prop::sample::select(vec!["a", "a/*", "a/**", "**", "b/c"]),
        0..4,
    )
    .prop_map(|v| json!(v))
    .boxed();
    let strategy = (
        usually(sub),
        usually(time.clone()),
        proptest::option::of(usually(time)),
        usually(topics.clone()),
        usually(topics),
    );
    let auth = auth();
    let accepted = std::cell::Cell::new(0u32);
    let refused = std::cell::Cell::new(0u32);
    let mut runner = proptest::test_runner::TestRunner::new(config());
    runner
        .run(&strategy, |(sub, exp, nbf, subscribe, publish)| {
            let mut payload = json!({
                "sub": sub, "exp": exp, "topics": {"subscribe": subscribe, "publish": publish},
            });
            if let Some(nbf) = nbf {
                payload["nbf"] = nbf;
            }
            let counter = if check_claims(&auth, &payload) {
                &accepted
            } else {
                &refused
            };
            counter.set(counter.get() + 1);
            Ok(())
        })
        .unwrap();
    // The oracle only means something if both outcomes actually occur.
    let total = accepted.get() + refused.get();
    assert!(
        accepted.get() * 20 >= total,
        "too few accepted: {} of {total}",
        accepted.get()
    );
    assert!(
        refused.get() * 20 >= total,
        "too few refused: {} of {total}",
        refused.get()
    );
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn jwt_arbitrary_tokens_are_refused(s in "\\PC{0,200}|[A-Za-z0-9_.-]{0,300}") {
        thread_local!(static AUTH: Auth = auth());
        prop_assert!(AUTH.with(|a| a.verify(&s)).is_err());
    }
}
