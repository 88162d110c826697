//! Waiting in tests, in one place: every "until this holds" is a bounded
//! poll with a short backoff that fails naming what it waited for and what
//! it saw last; every "this does not happen" is either an event-based check
//! or a named, bounded observation window ([`holds_for`]).

use std::future::Future;
use std::time::Duration;

use anyhow::bail;

/// First pause between two checks; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
/// Longest pause between two checks.
const MAX_BACKOFF: Duration = Duration::from_millis(250);

/// What one check of a condition found: done (with a value) or not yet
/// (with what it saw, for the error message).
pub trait Outcome {
    /// The value a satisfied condition yields.
    type Value;
    /// `Ok(value)` when satisfied, `Err(what was seen)` when not yet.
    fn outcome(self) -> Result<Self::Value, String>;
}

impl Outcome for bool {
    type Value = ();
    fn outcome(self) -> Result<(), String> {
        if self {
            Ok(())
        } else {
            Err("condition false".into())
        }
    }
}

impl<T> Outcome for Option<T> {
    type Value = T;
    fn outcome(self) -> Result<T, String> {
        self.ok_or_else(|| "nothing yet".into())
    }
}

/// One impl for `Result` (with the error as text), so a check written with
/// `?` and `.map_err(|e| e.to_string())` needs no type annotation.
impl<T> Outcome for Result<T, String> {
    type Value = T;
    fn outcome(self) -> Result<T, String> {
        self
    }
}

fn next_backoff(b: Duration) -> Duration {
    (b * 2).min(MAX_BACKOFF)
}

/// Checks `condition` until it is satisfied or `within` has passed, pausing
/// 10 ms, 20 ms, … up to 250 ms between checks; returns its value, or an
/// error naming `what` and the last thing the check saw. A check that hangs
/// is cut at the deadline too. The condition is checked at least once, and
/// once more at the deadline.
pub async fn wait_until<O, F, Fut>(
    what: &str,
    within: Duration,
    condition: F,
) -> anyhow::Result<O::Value>
where
    O: Outcome,
    F: FnMut() -> Fut,
    Fut: Future<Output = O>,
{
    poll(what, within, FIRST_BACKOFF, MAX_BACKOFF, condition).await
}

/// [`wait_until`] checking every `every` without backoff, for a test that
/// reports (never asserts) how long something took and wants that figure
/// precise to `every`.
pub async fn wait_until_every<O, F, Fut>(
    what: &str,
    within: Duration,
    every: Duration,
    condition: F,
) -> anyhow::Result<O::Value>
where
    O: Outcome,
    F: FnMut() -> Fut,
    Fut: Future<Output = O>,
{
    poll(what, within, every, every, condition).await
}

async fn poll<O, F, Fut>(
    what: &str,
    within: Duration,
    first: Duration,
    max: Duration,
    mut condition: F,
) -> anyhow::Result<O::Value>
where
    O: Outcome,
    F: FnMut() -> Fut,
    Fut: Future<Output = O>,
{
    let deadline = tokio::time::Instant::now() + within;
    let mut backoff = first;
    let mut checks = 0u32;
    loop {
        checks += 1;
        // At least a second for the last check, however late it starts.
        let cut = deadline.max(tokio::time::Instant::now() + Duration::from_secs(1));
        let last = match tokio::time::timeout_at(cut, condition()).await {
            Ok(o) => match o.outcome() {
                Ok(v) => return Ok(v),
                Err(seen) => seen,
            },
            Err(_) => "the check itself did not finish".to_owned(),
        };
        let now = tokio::time::Instant::now();
        if now >= deadline {
            bail!("timed out after {within:?} ({checks} checks) waiting for {what}; last seen: {last}");
        }
        tokio::time::sleep(backoff.min(deadline - now)).await;
        backoff = (backoff * 2).min(max);
    }
}

/// [`wait_until`] for code that is not async (process start-up, `Drop`,
/// blocking harness calls): the same backoff, on the calling thread.
pub fn wait_until_blocking<O, F>(
    what: &str,
    within: Duration,
    mut condition: F,
) -> anyhow::Result<O::Value>
where
    O: Outcome,
    F: FnMut() -> O,
{
    let deadline = std::time::Instant::now() + within;
    let mut backoff = FIRST_BACKOFF;
    let mut checks = 0u32;
    loop {
        checks += 1;
        let last = match condition().outcome() {
            Ok(v) => return Ok(v),
            Err(seen) => seen,
        };
        let now = std::time::Instant::now();
        if now >= deadline {
            bail!("timed out after {within:?} ({checks} checks) waiting for {what}; last seen: {last}");
        }
        std::thread::sleep(backoff.min(deadline - now));
        backoff = next_backoff(backoff);
    }
}

/// Checks that `condition` stays satisfied for the whole of `window`,
/// failing at the first check that finds it broken.
///
/// This is the one place where a test spends a fixed stretch of time to
/// show that something does *not* happen. Use it only when nothing marks the
/// absence: prefer waiting for a later event (a marker published after the
/// forbidden one would have been) and asserting that the forbidden one did
/// not arrive before it. Here there is no such event: a reconcile loop that
/// never ends, a stream that must stay open, a gauge that must not move.
/// Checks run every 10 ms up to every 250 ms, and once more at the end.
pub async fn holds_for<O, F, Fut>(
    what: &str,
    window: Duration,
    mut condition: F,
) -> anyhow::Result<()>
where
    O: Outcome,
    F: FnMut() -> Fut,
    Fut: Future<Output = O>,
{
    let end = tokio::time::Instant::now() + window;
    let mut backoff = FIRST_BACKOFF;
    loop {
        let cut = end.max(tokio::time::Instant::now() + Duration::from_secs(1));
        match tokio::time::timeout_at(cut, condition()).await {
            Ok(o) => {
                if let Err(seen) = o.outcome() {
                    bail!("{what} stopped holding within {window:?}: {seen}");
                }
            }
            Err(_) => bail!("checking that {what} holds did not finish"),
        }
        let now = tokio::time::Instant::now();
        if now >= end {
            return Ok(());
        }
        tokio::time::sleep(backoff.min(end - now)).await;
        backoff = next_backoff(backoff);
    }
}

/// Lets `d` of the gateway's own clock pass, for a rule that is defined by
/// elapsed time (a TTL, a token's or certificate's expiry, a deadline the
/// gateway enforces). Not for waiting on a state: that is [`wait_until`].
pub async fn elapse(why: &str, d: Duration) {
    let _ = why;
    tokio::time::sleep(d).await;
}

/// Blocking [`elapse`].
pub fn elapse_blocking(why: &str, d: Duration) {
    let _ = why;
    std::thread::sleep(d);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_the_value_once_satisfied() {
        let mut n = 0;
        let v = wait_until("n to reach 3", Duration::from_secs(5), || {
            n += 1;
            let now = n;
            async move { (now >= 3).then_some(now) }
        })
        .await
        .unwrap();
        assert_eq!(v, 3);
    }

    #[tokio::test]
    async fn names_what_it_waited_for_and_what_it_saw() {
        let e = wait_until("the impossible", Duration::from_millis(50), || async {
            Err::<(), _>("still 7".to_owned())
        })
        .await
        .unwrap_err()
        .to_string();
        assert!(e.contains("the impossible"), "{e}");
        assert!(e.contains("still 7"), "{e}");
    }

    #[tokio::test]
    async fn a_hanging_check_is_cut() {
        let e = wait_until(
            "a check that never returns",
            Duration::from_millis(50),
            std::future::pending::<bool>,
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(e.contains("did not finish"), "{e}");
    }

    #[tokio::test]
    async fn holds_for_fails_at_the_first_broken_check() {
        let mut n = 0;
        let e = holds_for("n below 3", Duration::from_secs(5), || {
            n += 1;
            let now = n;
            async move { now < 3 }
        })
        .await
        .unwrap_err()
        .to_string();
        assert!(e.contains("n below 3"), "{e}");
        holds_for("true", Duration::from_millis(30), || async { true })
            .await
            .unwrap();
    }

    #[test]
    fn blocking_variant() {
        let mut n = 0;
        wait_until_blocking("n to reach 2", Duration::from_secs(5), || {
            n += 1;
            n >= 2
        })
        .unwrap();
        assert!(wait_until_blocking("never", Duration::from_millis(20), || false).is_err());
    }
}
