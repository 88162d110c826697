//! Client certificates as credentials: the identity a verified certificate
//! names (its CN, or its first DNS or URI SAN), and the configured mapping
//! from identity patterns to topic patterns, where `{identity}` in a topic
//! pattern stands for the identity itself.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use super::claims::MAX_PATTERNS;
use super::pattern::{PatternError, TopicPattern};
use crate::core::topic::Topic;
pub use pushgate_contract::config::{CertIdentity, CertificateGrant};

/// The placeholder replaced by the identity in a granted topic pattern.
pub const IDENTITY_PLACEHOLDER: &str = "{identity}";

/// Longest accepted identity (it appears in log lines).
pub const MAX_IDENTITY_LEN: usize = 200;

/// What the TLS handshake established about a client's certificate (the
/// chain was verified by then).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCert {
    /// The identity, if the configured field is present and printable.
    pub identity: Option<String>,
    /// The first moment the certificate is no longer valid: X.509 validity
    /// includes the whole second of its `notAfter`, as the handshake checks it.
    pub not_after: SystemTime,
}

impl PeerCert {
    /// Reads the leaf certificate `der`; `None` if it does not parse.
    pub fn parse(der: &[u8], source: CertIdentity) -> Option<PeerCert> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let secs = cert.validity().not_after.timestamp();
        let not_after =
            UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?.saturating_add(1));
        let identity = match source {
            CertIdentity::Cn => cert
                .subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .map(str::to_owned),
            CertIdentity::Dns | CertIdentity::Uri => cert
                .subject_alternative_name()
                .ok()
                .flatten()
                .and_then(|san| {
                    san.value
                        .general_names
                        .iter()
                        .find_map(|n| match (source, n) {
                            (CertIdentity::Dns, GeneralName::DNSName(s))
                            | (CertIdentity::Uri, GeneralName::URI(s)) => Some((*s).to_owned()),
                            _ => None,
                        })
                }),
        };
        let printable = |s: &String| {
            !s.is_empty() && s.len() <= MAX_IDENTITY_LEN && !s.chars().any(char::is_control)
        };
        Some(PeerCert {
            identity: identity.filter(printable),
            not_after,
        })
    }
}

/// `*` in `pattern` stands for any run of characters; everything else is literal.
fn glob_matches(pattern: &str, s: &str) -> bool {
    let (p, s) = (pattern.as_bytes(), s.as_bytes());
    let (mut pi, mut si) = (0, 0);
    // Where the last `*` was, and how much of `s` it has swallowed so far.
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if pi < p.len() && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

/// A grant's topic patterns, kept as templates.
#[derive(Debug, Clone)]
struct Rule {
    identity: String,
    subscribe: Vec<String>,
    publish: Vec<String>,
}

/// Why a certificate grant cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    #[error("auth.certificate_grants {identity:?}: {source}")]
    Pattern {
        identity: String,
        source: PatternError,
    },
    #[error("auth.certificate_grants {0:?}: at most {MAX_PATTERNS} topic patterns per direction")]
    TooMany(String),
}

/// The topic patterns a certificate's identity is granted.
#[derive(Debug, Clone, Default)]
pub struct CertGrants {
    rules: Vec<Rule>,
}

impl CertGrants {
    /// Checks every template: each must be a valid pattern once
    /// `{identity}` is replaced by a plain segment.
    pub fn parse(grants: &[CertificateGrant]) -> Result<CertGrants, GrantError> {
        let mut rules = Vec::with_capacity(grants.len());
        for g in grants {
            for list in [&g.subscribe, &g.publish] {
                if list.len() > MAX_PATTERNS {
                    return Err(GrantError::TooMany(g.identity.clone()));
                }
                for t in list {
                    TopicPattern::parse(&t.replace(IDENTITY_PLACEHOLDER, "x")).map_err(
                        |source| GrantError::Pattern {
                            identity: g.identity.clone(),
                            source,
                        },
                    )?;
                }
            }
            rules.push(Rule {
                identity: g.identity.clone(),
                subscribe: g.subscribe.clone(),
                publish: g.publish.clone(),
            });
        }
        Ok(CertGrants { rules })
    }

    /// True when no grant is configured.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The subscribe and publish patterns of `identity`: those of the first
    /// matching rule. `{identity}` is substituted only when the identity is
    /// a plain topic segment, so an identity like `*` or `a/b` cannot widen
    /// a pattern; templates that need it are left out otherwise.
    pub fn grant(&self, identity: &str) -> (Vec<TopicPattern>, Vec<TopicPattern>) {
        let Some(rule) = self
            .rules
            .iter()
            .find(|r| glob_matches(&r.identity, identity))
        else {
            return (Vec::new(), Vec::new());
        };
        let segment = !identity.contains('/') && Topic::parse(identity).is_ok();
        let expand = |list: &[String]| -> Vec<TopicPattern> {
            list.iter()
                .filter(|t| segment || !t.contains(IDENTITY_PLACEHOLDER))
                .filter_map(|t| {
                    TopicPattern::parse(&t.replace(IDENTITY_PLACEHOLDER, identity)).ok()
                })
                .collect()
        };
        (expand(&rule.subscribe), expand(&rule.publish))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(identity: &str, subscribe: &[&str]) -> CertificateGrant {
        CertificateGrant {
            identity: identity.into(),
            subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
            publish: vec![],
        }
    }

    fn texts(p: &[TopicPattern]) -> Vec<String> {
        p.iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn globs() {
        for (p, s, want) in [
            ("sensor-*", "sensor-42", true),
            ("sensor-*", "sensor-", true),
            ("sensor-*", "actuator-1", false),
            ("*", "", true),
            ("a*b*c", "a-x-b-y-c", true),
            ("a*b*c", "a-x-c", false),
            ("exact", "exact", true),
            ("exact", "exact2", false),
        ] {
            assert_eq!(glob_matches(p, s), want, "{p} vs {s}");
        }
    }

    #[test]
    fn the_first_matching_rule_applies_and_identity_is_substituted() {
        let g = CertGrants::parse(&[
            grant("sensor-*", &["devices/{identity}/**", "broadcast"]),
            grant("*", &["public"]),
        ])
        .unwrap();
        assert_eq!(
            texts(&g.grant("sensor-42").0),
            ["devices/sensor-42/**", "broadcast"]
        );
        assert_eq!(texts(&g.grant("printer").0), ["public"]);
    }

    #[test]
    fn an_identity_that_is_not_a_segment_cannot_widen_a_pattern() {
        let g = CertGrants::parse(&[grant("*", &["devices/{identity}/**", "broadcast"])]).unwrap();
        for hostile in ["*", "**", "a/b", "spiffe://org/x", "a b"] {
            assert_eq!(texts(&g.grant(hostile).0), ["broadcast"], "{hostile}");
        }
    }

    #[test]
    fn bad_templates_are_refused_at_start() {
        assert!(CertGrants::parse(&[grant("*", &["devices/{identity}x*/**"])]).is_err());
        assert!(CertGrants::parse(&[grant("*", &["a//b"])]).is_err());
    }

    #[test]
    fn identity_and_expiry_come_from_the_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(vec!["dev-9.devices.example".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "sensor-9");
        params.subject_alt_names.push(rcgen::SanType::URI(
            "spiffe://example/sensor-9".try_into().unwrap(),
        ));
        params.not_after = rcgen::date_time_ymd(2031, 1, 2);
        let der = params.self_signed(&key).unwrap().der().to_vec();
        let cn = PeerCert::parse(&der, CertIdentity::Cn).unwrap();
        assert_eq!(cn.identity.as_deref(), Some("sensor-9"));
        assert_eq!(
            cn.not_after.duration_since(UNIX_EPOCH).unwrap().as_secs(),
            1_925_078_401
        );
        let dns = PeerCert::parse(&der, CertIdentity::Dns).unwrap();
        assert_eq!(dns.identity.as_deref(), Some("dev-9.devices.example"));
        let uri = PeerCert::parse(&der, CertIdentity::Uri).unwrap();
        assert_eq!(uri.identity.as_deref(), Some("spiffe://example/sensor-9"));
        assert!(PeerCert::parse(b"not der", CertIdentity::Cn).is_none());
    }
}
