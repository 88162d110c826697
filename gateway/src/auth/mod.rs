//! Authentication and topic authorisation: JWTs verified with a key set
//! that reloads on change, and client certificates mapped to topics. Off
//! unless keys or certificate grants are configured; then every publish,
//! wipe and stream needs a credential that covers each topic, except topics
//! matching an anonymous pattern. A token in the request wins over the
//! connection's certificate.
//!
//! Two steps, so that an unauthenticated caller costs little: [`Auth::authenticate`]
//! runs before any body is read (401 on a missing or bad token), and
//! [`Auth::authorize`] once the topics are known (403 if one is not granted;
//! a stream asking for several topics is refused whole). Responses never say
//! which check failed.

pub mod certs;
pub mod claims;
pub mod extract;
pub mod keys;
pub mod keyset;
pub mod lifetime;
pub mod pattern;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use jsonwebtoken::Validation;
use tokio_util::sync::CancellationToken;

use crate::core::device::DeviceId;
use crate::core::limits::ClientKey;
use crate::core::topic::Topic;
use certs::{CertGrants, PeerCert};
pub use claims::{Claims, Grants, MintRequest};
use extract::Credential;
pub use keys::KeyAlgorithm;
use keyset::{KeySource, Keys};
use lifetime::{CredentialKind, Lifetime};
use pattern::{any_matches, TopicPattern};
pub use pushgate_contract::config::{AuthConfig, MAX_LEEWAY};

/// Which way a request moves events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Open a stream.
    Subscribe,
    /// Publish or wipe.
    Publish,
}

/// Who is calling, after authentication.
#[derive(Debug, Clone)]
pub enum Identity {
    /// Auth is not configured: everything is allowed.
    Open,
    /// No token presented; only anonymous patterns apply.
    Anonymous,
    /// A verified token.
    Client(Grants),
}

impl Identity {
    /// The client id (`sub`) of a token holder.
    pub fn client_id(&self) -> Option<&str> {
        match self {
            Identity::Client(g) => Some(&g.client_id),
            _ => None,
        }
    }
}

impl Identity {
    /// The device a credential speaks for.
    pub fn device(&self) -> Option<&DeviceId> {
        match self {
            Identity::Client(g) => g.device.as_ref(),
            _ => None,
        }
    }

    /// May `self` act for `device`? With auth off anyone may (a trusted
    /// network); otherwise only the device itself or an admin token.
    pub fn may_act_for(&self, device: &DeviceId) -> Result<(), AuthError> {
        match self {
            Identity::Open => Ok(()),
            Identity::Anonymous => Err(AuthError::Unauthorized),
            Identity::Client(g) if g.admin || g.device.as_ref() == Some(device) => Ok(()),
            Identity::Client(_) => Err(AuthError::Forbidden),
        }
    }

    /// Whether this is an admin token (`"admin": true`).
    pub fn is_admin(&self) -> bool {
        matches!(self, Identity::Client(g) if g.admin)
    }

    /// Whom per-client limits count this caller as, at client address
    /// `addr`: its credential's identity, or without one the address.
    pub fn client_key(&self, addr: IpAddr) -> ClientKey {
        match self {
            Identity::Client(g) => ClientKey::Identity(Arc::from(g.client_id.as_str())),
            _ => ClientKey::Address(addr),
        }
    }

    /// How long the caller's credential counts, if it has one.
    pub fn lifetime(&self) -> Option<&Lifetime> {
        match self {
            Identity::Client(g) => Some(&g.lifetime),
            _ => None,
        }
    }
}

struct Verifier {
    keys: Arc<Keys>,
    source: KeySource,
    algorithm: KeyAlgorithm,
    reload_interval: Duration,
    validation: Validation,
    leeway: Duration,
    device_claim: String,
}

/// The configured authentication of one gateway.
pub struct Auth {
    verifier: Option<Verifier>,
    certificates: CertGrants,
    anonymous_subscribe: Vec<TopicPattern>,
    anonymous_publish: Vec<TopicPattern>,
    cookie: String,
    query_token: bool,
}

/// Why a token was refused (logged at debug level, never answered).
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{0}")]
    Jwt(#[from] jsonwebtoken::errors::Error),
    #[error("{0}")]
    Claims(#[from] claims::ClaimsError),
    #[error("no key for kid {0:?}")]
    UnknownKey(Option<String>),
    #[error("token expired")]
    Expired,
    #[error("tokens are not configured")]
    NoTokens,
}

/// Why a request was refused. Callers are never told which check failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Missing or unusable credentials (401).
    #[error("missing or invalid token")]
    Unauthorized,
    /// A valid identity without access to a requested topic (403).
    #[error("not allowed for the requested topic")]
    Forbidden,
}

/// The token checks of `c`: exactly the configured algorithm (a token
/// naming another one — `none`, HS256 signed with a public key — fails),
/// `exp` and `sub` always, `iss` and `aud` when configured.
fn validation(c: &AuthConfig) -> Validation {
    let mut validation = Validation::new(keys::jwt_algorithm(c.algorithm));
    validation.leeway = c.leeway.as_secs();
    validation.validate_exp = true;
    validation.validate_nbf = true;
    let mut required = vec!["exp", "sub"];
    match &c.issuer {
        Some(iss) => {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        None => validation.iss = None,
    }
    match &c.audience {
        Some(aud) => {
            validation.set_audience(&[aud]);
            validation.validate_aud = true;
            required.push("aud");
        }
        None => validation.validate_aud = false,
    }
    validation.set_required_spec_claims(&required);
    validation
}

/// Parses a list of patterns from configuration.
pub fn parse_patterns(list: &[String]) -> Result<Vec<TopicPattern>, pattern::PatternError> {
    list.iter().map(|p| TopicPattern::parse(p)).collect()
}

impl Auth {
    /// No authentication: every request is allowed.
    pub fn disabled() -> Auth {
        Auth {
            verifier: None,
            certificates: CertGrants::default(),
            anonymous_subscribe: Vec::new(),
            anonymous_publish: Vec::new(),
            cookie: String::new(),
            query_token: false,
        }
    }

    /// Builds from configuration, reading the keys.
    pub fn from_config(c: &AuthConfig) -> anyhow::Result<Auth> {
        let source = match (&c.key_file, &c.key_dir) {
            (Some(f), _) => Some(KeySource::File(f.clone())),
            (None, Some(d)) => Some(KeySource::Dir(d.clone())),
            (None, None) => None,
        };
        let verifier = match source {
            Some(source) => Some(Verifier {
                keys: Keys::load(c.algorithm, &source)?,
                source,
                algorithm: c.algorithm,
                reload_interval: c.reload_interval,
                validation: validation(c),
                leeway: c.leeway,
                device_claim: c.device_claim.clone(),
            }),
            None => None,
        };
        Ok(Auth {
            verifier,
            certificates: CertGrants::parse(&c.certificate_grants)?,
            anonymous_subscribe: parse_patterns(&c.anonymous_subscribe)?,
            anonymous_publish: parse_patterns(&c.anonymous_publish)?,
            cookie: c.cookie.clone(),
            query_token: c.query_token,
        })
    }

    /// Starts re-reading the keys when they change on disk.
    pub fn spawn_reload(&self) {
        if let Some(v) = &self.verifier {
            v.keys
                .spawn_reload(v.algorithm, v.source.clone(), v.reload_interval);
        }
    }

    /// True when requests are checked (tokens or certificates).
    pub fn is_enabled(&self) -> bool {
        self.verifier.is_some() || !self.certificates.is_empty()
    }

    /// Verifies a token's key (by `kid`), signature, algorithm, times and claims.
    pub fn verify(&self, token: &str) -> Result<Grants, TokenError> {
        let Some(v) = &self.verifier else {
            return Err(TokenError::NoTokens);
        };
        let kid = jsonwebtoken::decode_header(token)?.kid;
        let keys = v.keys.current();
        let key = keys
            .select(kid.as_deref())
            .ok_or_else(|| TokenError::UnknownKey(kid.clone()))?;
        let data = jsonwebtoken::decode::<Claims>(token, &key.decoding, &v.validation)?;
        let grants = data
            .claims
            .into_grants(v.leeway, key.revoked.clone(), &v.device_claim)?;
        // jsonwebtoken compares whole seconds; this is the moment a stream
        // it opened ends, so a reconnect with the same token must fail too.
        if grants.lifetime.is_over() {
            return Err(TokenError::Expired);
        }
        Ok(grants)
    }

    /// What a verified client certificate grants (401 without an identity
    /// or once it has expired; no matching rule grants nothing).
    fn certificate(&self, cert: &PeerCert) -> Result<Grants, AuthError> {
        let Some(identity) = &cert.identity else {
            return Err(AuthError::Unauthorized);
        };
        let (subscribe, publish) = self.certificates.grant(identity);
        let grants = Grants {
            client_id: identity.clone(),
            subscribe,
            publish,
            lifetime: Lifetime {
                kind: CredentialKind::Certificate,
                until: cert.not_after,
                revoked: CancellationToken::new(),
            },
            device: DeviceId::parse(identity).ok(),
            admin: false,
        };
        if grants.lifetime.is_over() {
            return Err(AuthError::Unauthorized);
        }
        Ok(grants)
    }

    /// Step one: who is calling. 401 for a malformed or invalid token; no
    /// token is the connection's certificate if it has one, else
    /// [`Identity::Anonymous`] (decided per topic later).
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        cert: Option<&PeerCert>,
    ) -> Result<Identity, AuthError> {
        if !self.is_enabled() {
            return Ok(Identity::Open);
        }
        let credential = match self.verifier {
            Some(_) => extract::credential(headers, query, &self.cookie, self.query_token),
            None => Credential::None,
        };
        let grants = match credential {
            Credential::None => match cert {
                Some(c) if !self.certificates.is_empty() => self.certificate(c)?,
                _ => return Ok(Identity::Anonymous),
            },
            Credential::Malformed => return Err(AuthError::Unauthorized),
            Credential::Token(t) => self.verify(&t).map_err(|e| {
                tracing::debug!(reason = %e, "token refused");
                AuthError::Unauthorized
            })?,
        };
        tracing::Span::current().record("client", grants.client_id.as_str());
        Ok(Identity::Client(grants))
    }

    /// Step two: may `who` do `access` on every one of `topics`? All or nothing.
    pub fn authorize<'a>(
        &self,
        who: &Identity,
        access: Access,
        topics: impl IntoIterator<Item = &'a Topic>,
    ) -> Result<(), AuthError> {
        let anonymous = match access {
            Access::Subscribe => &self.anonymous_subscribe,
            Access::Publish => &self.anonymous_publish,
        };
        let granted = |t: &Topic| match who {
            Identity::Open => true,
            Identity::Anonymous => any_matches(anonymous, t),
            Identity::Client(g) => {
                let own = match access {
                    Access::Subscribe => &g.subscribe,
                    Access::Publish => &g.publish,
                };
                any_matches(own, t) || any_matches(anonymous, t)
            }
        };
        if topics.into_iter().all(granted) {
            return Ok(());
        }
        match who {
            Identity::Anonymous => Err(AuthError::Unauthorized),
            _ => Err(AuthError::Forbidden),
        }
    }
}
