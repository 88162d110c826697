//! Authentication and topic authorisation (JWT). Off unless `auth.key_file`
//! is configured; then every publish, wipe and stream needs a token whose
//! claims cover each topic, except topics matching an anonymous pattern.
//!
//! Two steps, so that an unauthenticated caller costs little: [`Auth::authenticate`]
//! runs before any body is read (401 on a missing or bad token), and
//! [`Auth::authorize`] once the topics are known (403 if one is not granted;
//! a stream asking for several topics is refused whole). Responses never say
//! which check failed.

pub mod claims;
pub mod extract;
pub mod keys;
pub mod pattern;

use axum::http::HeaderMap;
use jsonwebtoken::{DecodingKey, Validation};

use crate::topic::Topic;
pub use claims::{Claims, Grants, MintRequest};
use extract::Credential;
pub use keys::KeyAlgorithm;
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

struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

/// The configured authentication of one gateway.
pub struct Auth {
    verifier: Option<Verifier>,
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

/// Parses a list of patterns from configuration.
pub fn parse_patterns(list: &[String]) -> Result<Vec<TopicPattern>, pattern::PatternError> {
    list.iter().map(|p| TopicPattern::parse(p)).collect()
}

impl Auth {
    /// No authentication: every request is allowed.
    pub fn disabled() -> Auth {
        Auth {
            verifier: None,
            anonymous_subscribe: Vec::new(),
            anonymous_publish: Vec::new(),
            cookie: String::new(),
            query_token: false,
        }
    }

    /// Builds from configuration, reading the key file.
    pub fn from_config(c: &AuthConfig) -> anyhow::Result<Auth> {
        let Some(path) = &c.key_file else {
            return Ok(Auth::disabled());
        };
        let key = keys::load_decoding_key(c.algorithm, path)?;
        // The accepted set is exactly the configured key's algorithm: a token
        // naming another one (`none`, HS256 signed with a public key, ...) fails.
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
        Ok(Auth {
            verifier: Some(Verifier { key, validation }),
            anonymous_subscribe: parse_patterns(&c.anonymous_subscribe)?,
            anonymous_publish: parse_patterns(&c.anonymous_publish)?,
            cookie: c.cookie.clone(),
            query_token: c.query_token,
        })
    }

    /// True when tokens are checked.
    pub fn is_enabled(&self) -> bool {
        self.verifier.is_some()
    }

    /// Verifies a token's signature, algorithm, times and claims.
    pub fn verify(&self, token: &str) -> Result<Grants, TokenError> {
        let Some(v) = &self.verifier else {
            return Err(claims::ClaimsError::BadSub.into());
        };
        let data = jsonwebtoken::decode::<Claims>(token, &v.key, &v.validation)?;
        Ok(data.claims.into_grants()?)
    }

    /// Step one: who is calling. 401 for a malformed or invalid token; no
    /// token at all is [`Identity::Anonymous`] (decided per topic later).
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<Identity, AuthError> {
        if !self.is_enabled() {
            return Ok(Identity::Open);
        }
        match extract::credential(headers, query, &self.cookie, self.query_token) {
            Credential::None => Ok(Identity::Anonymous),
            Credential::Malformed => Err(AuthError::Unauthorized),
            Credential::Token(t) => match self.verify(&t) {
                Ok(grants) => {
                    tracing::Span::current().record("client", grants.client_id.as_str());
                    Ok(Identity::Client(grants))
                }
                Err(e) => {
                    tracing::debug!(reason = %e, "token refused");
                    Err(AuthError::Unauthorized)
                }
            },
        }
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
