//! What a proxied request carries so the receiving pod can trust it: the
//! sender's track, the version of the routing table it routed with, and the
//! PushGateway's shared peer token. A client can send the same header names,
//! so the token is what makes them mean anything; without it they are
//! refused, never obeyed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};

use super::RouteVersion;
use super::Track;

/// Header naming the track that proxied the request.
pub const PROXIED_HEADER: &str = "x-pushgate-proxied";
/// Header with the sender's routing-table version.
pub const ROUTE_VERSION_HEADER: &str = "x-pushgate-route-version";
/// Header with the shared peer token.
pub const PROXY_TOKEN_HEADER: &str = "x-pushgate-proxy-token";
/// Every header of the peer protocol: stripped from what a client sent
/// before a request is forwarded, so only the sender's own values travel.
pub const PEER_HEADERS: [&str; 3] = [PROXIED_HEADER, ROUTE_VERSION_HEADER, PROXY_TOKEN_HEADER];

/// How often the token file is checked for a new value (a Secret update).
const RELOAD_EVERY: Duration = Duration::from_secs(5);
/// Shortest token accepted: a guessable one would make the check moot.
const MIN_TOKEN_LEN: usize = 16;

/// A request a peer says it proxied, after the token was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxiedFrom {
    /// The sender's track.
    pub track: Track,
    /// The table the sender routed with.
    pub version: RouteVersion,
}

/// A request claimed to be proxied by a peer but could not prove it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unproven;

/// The peer token of this PushGateway, re-read when its file changes.
#[derive(Clone)]
pub struct PeerToken {
    token: Arc<RwLock<String>>,
}

fn read_token(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("peer token {}: {e}", path.display()))?;
    let token = text.trim().to_owned();
    if token.len() < MIN_TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
        anyhow::bail!(
            "peer token {}: needs at least {MIN_TOKEN_LEN} printable ASCII characters",
            path.display()
        );
    }
    Ok(token)
}

impl PeerToken {
    /// A fixed token (tests).
    pub fn fixed(token: &str) -> PeerToken {
        PeerToken {
            token: Arc::new(RwLock::new(token.to_owned())),
        }
    }

    /// Reads `path` now and keeps re-reading it; a file that turns unreadable
    /// or invalid keeps the last good token (and says so in the log).
    pub fn watch(path: PathBuf) -> anyhow::Result<PeerToken> {
        let t = PeerToken::fixed(&read_token(&path)?);
        let file = path.clone();
        crate::ops::reload::spawn(
            "peer token",
            Arc::downgrade(&t.token),
            vec![path],
            RELOAD_EVERY,
            move || read_token(&file),
            |cell: &RwLock<String>, new| {
                *cell.write().unwrap_or_else(|p| p.into_inner()) = new;
            },
        );
        Ok(t)
    }

    fn matches(&self, presented: &[u8]) -> bool {
        let cur = self.token.read().unwrap_or_else(|p| p.into_inner());
        constant_time_eq(cur.as_bytes(), presented)
    }

    /// Adds the peer headers to a request this pod forwards.
    pub fn stamp(&self, headers: &mut HeaderMap, track: Track, version: RouteVersion) {
        for h in PEER_HEADERS {
            headers.remove(h);
        }
        headers.insert(PROXIED_HEADER, HeaderValue::from_static(track.as_str()));
        headers.insert(
            ROUTE_VERSION_HEADER,
            HeaderValue::from_str(&version.to_string()).expect("hex is a header value"),
        );
        let cur = self.token.read().unwrap_or_else(|p| p.into_inner());
        if let Ok(v) = HeaderValue::from_str(&cur) {
            headers.insert(PROXY_TOKEN_HEADER, v);
        }
    }

    /// `Ok(None)` for a request from a client, `Ok(Some)` for a verified
    /// peer request, `Err` when a request claims to be proxied but cannot
    /// prove it.
    pub fn verify(&self, headers: &HeaderMap) -> Result<Option<ProxiedFrom>, Unproven> {
        if !PEER_HEADERS.iter().any(|h| headers.contains_key(*h)) {
            return Ok(None);
        }
        let text = |h: &str| headers.get(h).and_then(|v| v.to_str().ok());
        let token_ok = headers
            .get(PROXY_TOKEN_HEADER)
            .is_some_and(|v| self.matches(v.as_bytes()));
        if !token_ok {
            return Err(Unproven);
        }
        let track = text(PROXIED_HEADER).and_then(|t| t.parse::<Track>().ok());
        let version = text(ROUTE_VERSION_HEADER).and_then(|v| v.parse::<RouteVersion>().ok());
        match (track, version) {
            (Some(track), Some(version)) => Ok(Some(ProxiedFrom { track, version })),
            _ => Err(Unproven),
        }
    }
}

/// Compares without an early exit, so the time taken says nothing about
/// how much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef0123";

    #[test]
    fn a_stamped_request_verifies_and_a_forged_one_does_not() {
        let peer = PeerToken::fixed(TOKEN);
        let mut h = HeaderMap::new();
        assert_eq!(peer.verify(&h), Ok(None), "a plain client request");
        h.insert(PROXY_TOKEN_HEADER, "forged-by-a-client".parse().unwrap());
        h.insert(PROXIED_HEADER, "canary".parse().unwrap());
        peer.stamp(&mut h, Track::Stable, RouteVersion(7));
        assert_eq!(
            peer.verify(&h),
            Ok(Some(ProxiedFrom {
                track: Track::Stable,
                version: RouteVersion(7)
            }))
        );
        let other = PeerToken::fixed("another-token-of-16+");
        assert_eq!(other.verify(&h), Err(Unproven), "wrong token");
        let mut forged = HeaderMap::new();
        forged.insert(PROXIED_HEADER, "canary".parse().unwrap());
        assert_eq!(peer.verify(&forged), Err(Unproven), "no token at all");
        h.remove(ROUTE_VERSION_HEADER);
        assert_eq!(peer.verify(&h), Err(Unproven), "token but no version");
    }

    #[test]
    fn short_or_missing_token_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        assert!(read_token(&p).is_err());
        std::fs::write(&p, "short\n").unwrap();
        assert!(read_token(&p).is_err());
        std::fs::write(&p, format!("{TOKEN}\n")).unwrap();
        assert_eq!(read_token(&p).unwrap(), TOKEN);
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
