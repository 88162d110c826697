//! The `auth` section of the configuration.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::keys::KeyAlgorithm;
use super::{parse_patterns, MAX_LEEWAY};

/// Token checking. Everything is open unless `key_file` is set.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Verifying key: the HS256 secret, or the RS256/ES256 public key (PEM).
    pub key_file: Option<PathBuf>,
    /// The only algorithm accepted; must fit `key_file`.
    pub algorithm: KeyAlgorithm,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// Required `iss`, if set.
    pub issuer: Option<String>,
    /// Required `aud`, if set.
    pub audience: Option<String>,
    /// Cookie that may carry the token (for `EventSource`); empty disables it.
    pub cookie: String,
    /// Accept the token in the `access_token` query parameter.
    pub query_token: bool,
    /// Topic patterns anyone may subscribe to without a token.
    pub anonymous_subscribe: Vec<String>,
    /// Topic patterns anyone may publish to without a token.
    pub anonymous_publish: Vec<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            key_file: None,
            algorithm: KeyAlgorithm::Hs256,
            leeway: Duration::from_secs(30),
            issuer: None,
            audience: None,
            cookie: "pushgate_token".into(),
            query_token: true,
            anonymous_subscribe: Vec::new(),
            anonymous_publish: Vec::new(),
        }
    }
}

impl AuthConfig {
    /// Checks what can be checked without reading the key file.
    pub fn validate(&self) -> Result<(), String> {
        if self.leeway > MAX_LEEWAY {
            return Err(format!(
                "auth.leeway must be at most {}s",
                MAX_LEEWAY.as_secs()
            ));
        }
        if self.key_file.is_none()
            && !(self.anonymous_subscribe.is_empty() && self.anonymous_publish.is_empty())
        {
            return Err(
                "auth.anonymous_* patterns need auth.key_file (without it everything is open)"
                    .into(),
            );
        }
        let cookie_ok = self
            .cookie
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !cookie_ok {
            return Err("auth.cookie must be letters, digits, `_`, `-` or `.`".into());
        }
        parse_patterns(&self.anonymous_subscribe)
            .and(parse_patterns(&self.anonymous_publish))
            .map_err(|e| format!("auth.anonymous_*: {e}"))?;
        Ok(())
    }
}
