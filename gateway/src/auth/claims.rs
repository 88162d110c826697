//! The claims a pushgate token carries, and minting tokens (`pushgate token`).
//!
//! ```json
//! {"sub": "device-42", "exp": 1767225600, "nbf": 1767222000,
//!  "topics": {"subscribe": ["devices/42/**"], "publish": ["devices/42/telemetry"]}}
//! ```
//!
//! `sub` (or the claim `auth.device_claim` names) is also the device the
//! token speaks for; `"admin": true` lets it act for any device.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header};
use serde::{Deserialize, Serialize};

use tokio_util::sync::CancellationToken;

use super::keys::KeyAlgorithm;
use super::lifetime::{CredentialKind, Lifetime};
use super::pattern::{PatternError, TopicPattern};
use crate::core::device::DeviceId;

/// Most topic patterns one token may list (per direction); bounds the work of a check.
pub const MAX_PATTERNS: usize = 256;
/// Longest accepted `sub`.
pub const MAX_SUB_LEN: usize = 200;

/// The claims as they travel. `exp` is required and numeric, `nbf` numeric
/// when present: a claim of the wrong JSON type fails deserialization, so it
/// can never be skipped as "absent".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// Client id: logged with each request and usable as routing key.
    pub sub: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Not valid before, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at, seconds since the epoch (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Issuer, checked when `auth.issuer` is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Audience (a string or a list), checked when `auth.audience` is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<serde_json::Value>,
    /// Topic patterns granted.
    #[serde(default)]
    pub topics: TopicClaims,
    /// May act for any device (acknowledge for it, read its shadow).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub admin: bool,
    /// Every other claim, so `auth.device_claim` can name any of them.
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

/// Topic patterns per direction, as written in the token.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TopicClaims {
    /// Patterns the holder may subscribe to.
    #[serde(default)]
    pub subscribe: Vec<String>,
    /// Patterns the holder may publish to (and wipe).
    #[serde(default)]
    pub publish: Vec<String>,
}

/// What a verified credential grants, parsed once.
#[derive(Debug, Clone)]
pub struct Grants {
    /// The client id (`sub`, or a certificate's identity).
    pub client_id: String,
    /// Subscribe patterns.
    pub subscribe: Vec<TopicPattern>,
    /// Publish patterns.
    pub publish: Vec<TopicPattern>,
    /// How long the credential counts; a stream it opened ends with it.
    pub lifetime: Lifetime,
    /// The device it speaks for, if any.
    pub device: Option<DeviceId>,
    /// May act for any device.
    pub admin: bool,
}

/// Why verified claims still cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimsError {
    #[error("sub must be 1 to {MAX_SUB_LEN} printable characters")]
    BadSub,
    #[error("at most {MAX_PATTERNS} topic patterns per direction")]
    TooManyPatterns,
    #[error("bad topic pattern: {0}")]
    BadPattern(#[from] PatternError),
    #[error("the device claim `{0}` is not a device id (1 to 200 visible ASCII characters)")]
    BadDevice(String),
}

impl Claims {
    /// The device named by the claim `claim`: `sub` when it is a valid
    /// device id (any other `sub` just is not a device), or another string
    /// claim, which must then be a valid id.
    pub fn device(&self, claim: &str) -> Result<Option<DeviceId>, ClaimsError> {
        if claim == "sub" {
            return Ok(DeviceId::parse(&self.sub).ok());
        }
        match self.other.get(claim) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => v
                .as_str()
                .and_then(|t| DeviceId::parse(t).ok())
                .map(Some)
                .ok_or_else(|| ClaimsError::BadDevice(claim.to_owned())),
        }
    }

    /// Checks the non-standard claims and parses the patterns. A malformed
    /// pattern invalidates the whole token rather than being skipped. The
    /// grants last until `exp` plus `leeway`, or until `revoked` fires.
    pub fn into_grants(
        self,
        leeway: Duration,
        revoked: CancellationToken,
        device_claim: &str,
    ) -> Result<Grants, ClaimsError> {
        let device = self.device(device_claim)?;
        // `sub` ends up in log lines: no control characters, bounded length.
        if self.sub.is_empty()
            || self.sub.len() > MAX_SUB_LEN
            || self.sub.chars().any(char::is_control)
        {
            return Err(ClaimsError::BadSub);
        }
        let parse = |list: &[String]| -> Result<Vec<TopicPattern>, ClaimsError> {
            if list.len() > MAX_PATTERNS {
                return Err(ClaimsError::TooManyPatterns);
            }
            list.iter()
                .map(|p| TopicPattern::parse(p).map_err(ClaimsError::from))
                .collect()
        };
        Ok(Grants {
            subscribe: parse(&self.topics.subscribe)?,
            publish: parse(&self.topics.publish)?,
            client_id: self.sub,
            lifetime: Lifetime {
                kind: CredentialKind::Token,
                until: UNIX_EPOCH + Duration::from_secs(self.exp) + leeway,
                revoked,
            },
            device,
            admin: self.admin,
        })
    }
}

/// What to put in a new token.
#[derive(Debug, Clone)]
pub struct MintRequest {
    /// Client id.
    pub sub: String,
    /// Subscribe patterns.
    pub subscribe: Vec<String>,
    /// Publish patterns.
    pub publish: Vec<String>,
    /// Lifetime from now.
    pub ttl: Duration,
    /// Optional issuer and audience.
    pub iss: Option<String>,
    /// Audience.
    pub aud: Option<String>,
    /// Key id, for a gateway with several keys (`auth.key_dir`).
    pub kid: Option<String>,
    /// May act for any device.
    pub admin: bool,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Signs a token valid from now for `ttl`. Patterns are validated first so a
/// token the gateway would refuse is never issued.
pub fn mint(alg: KeyAlgorithm, key: &EncodingKey, req: &MintRequest) -> anyhow::Result<String> {
    let now = now_secs();
    let claims = Claims {
        sub: req.sub.clone(),
        exp: now + req.ttl.as_secs().max(1),
        nbf: Some(now),
        iat: Some(now),
        iss: req.iss.clone(),
        aud: req.aud.clone().map(serde_json::Value::String),
        topics: TopicClaims {
            subscribe: req.subscribe.clone(),
            publish: req.publish.clone(),
        },
        admin: req.admin,
        other: serde_json::Map::new(),
    };
    claims
        .clone()
        .into_grants(Duration::ZERO, CancellationToken::new(), "sub")?;
    let mut header = Header::new(super::keys::jwt_algorithm(alg));
    header.kid = req.kid.clone();
    Ok(jsonwebtoken::encode(&header, &claims, key)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Claims {
        fn grants(self) -> Result<Grants, ClaimsError> {
            self.into_grants(Duration::ZERO, CancellationToken::new(), "sub")
        }
    }

    fn claims(sub: &str, subscribe: &[&str]) -> Claims {
        Claims {
            sub: sub.into(),
            exp: 1,
            nbf: None,
            iat: None,
            iss: None,
            aud: None,
            topics: TopicClaims {
                subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
                publish: vec![],
            },
            admin: false,
            other: serde_json::Map::new(),
        }
    }

    #[test]
    fn the_device_is_sub_or_the_configured_claim() {
        let parse = |j: &str| serde_json::from_str::<Claims>(j).unwrap();
        let c = parse(r#"{"sub":"dev-1","exp":10,"hw":"serial-9","n":5}"#);
        assert_eq!(c.device("sub").unwrap().unwrap().as_str(), "dev-1");
        assert_eq!(c.device("hw").unwrap().unwrap().as_str(), "serial-9");
        assert_eq!(c.device("absent").unwrap(), None);
        assert_eq!(
            c.device("n").unwrap_err(),
            ClaimsError::BadDevice("n".into())
        );
        let people = parse(r#"{"sub":"Ada Lovelace","exp":10}"#);
        assert_eq!(
            people.device("sub").unwrap(),
            None,
            "not every sub is a device"
        );
        assert!(!c.admin);
        assert!(parse(r#"{"sub":"ops","exp":10,"admin":true}"#).admin);
        assert!(serde_json::from_str::<Claims>(r#"{"sub":"a","exp":10,"admin":"yes"}"#).is_err());
    }

    #[test]
    fn bad_sub_or_pattern_invalidates_the_token() {
        assert!(claims("dev-1", &["a/**"]).grants().is_ok());
        assert_eq!(claims("", &[]).grants().unwrap_err(), ClaimsError::BadSub);
        assert_eq!(
            claims("a\nforged log line", &[]).grants().unwrap_err(),
            ClaimsError::BadSub
        );
        assert!(matches!(
            claims("d", &["ok", "a*b"]).grants(),
            Err(ClaimsError::BadPattern(_))
        ));
        let many: Vec<String> = (0..=MAX_PATTERNS).map(|i| format!("t{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(
            claims("d", &many).grants().unwrap_err(),
            ClaimsError::TooManyPatterns
        );
    }

    #[test]
    fn wrongly_typed_time_claims_do_not_parse() {
        let parse = |j: &str| serde_json::from_str::<Claims>(j);
        assert!(parse(r#"{"sub":"a","exp":10}"#).is_ok());
        assert!(parse(r#"{"sub":"a","exp":"never"}"#).is_err());
        assert!(parse(r#"{"sub":"a","exp":10,"nbf":"99999999999"}"#).is_err());
        assert!(parse(r#"{"sub":"a"}"#).is_err(), "exp is required");
        assert!(parse(r#"{"exp":10}"#).is_err(), "sub is required");
        assert!(parse(r#"{"sub":"a","exp":10,"topics":{"subscribe":"a"}}"#).is_err());
    }
}
