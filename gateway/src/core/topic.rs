//! Topic names, validated once at the edge and trusted everywhere inside.

use std::fmt;
use std::sync::Arc;

/// Longest accepted topic name, in bytes.
pub const MAX_TOPIC_LEN: usize = 200;

/// A valid topic name: `/`-separated, non-empty segments of `[A-Za-z0-9._:-]`,
/// at most [`MAX_TOPIC_LEN`] bytes in all. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(Arc<str>);

/// Start of gateway-internal topic names (`$` is not a topic character).
pub const RESERVED_PREFIX: &str = "$";

/// Why a string is not a topic name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("topic name is empty")]
    Empty,
    #[error("topic name is longer than {MAX_TOPIC_LEN} bytes")]
    TooLong,
    #[error("topic name has an empty segment (leading, trailing or double '/')")]
    EmptySegment,
    #[error("topic name contains {0:?}; allowed are A-Z a-z 0-9 . _ : - and '/' between segments")]
    BadChar(char),
}

/// The length rule topic names and topic patterns share: 1 to
/// [`MAX_TOPIC_LEN`] bytes.
pub fn check_length(s: &str) -> Result<(), TopicError> {
    match s.len() {
        0 => Err(TopicError::Empty),
        n if n > MAX_TOPIC_LEN => Err(TopicError::TooLong),
        _ => Ok(()),
    }
}

impl Topic {
    /// Parses and validates a topic name.
    pub fn parse(s: &str) -> Result<Self, TopicError> {
        check_length(s)?;
        for segment in s.split('/') {
            if segment.is_empty() {
                return Err(TopicError::EmptySegment);
            }
            if let Some(c) = segment.chars().find(|c| !is_topic_char(*c)) {
                return Err(TopicError::BadChar(c));
            }
        }
        Ok(Topic(Arc::from(s)))
    }

    /// A gateway-internal topic (a device's shadow feed): its name starts
    /// with [`RESERVED_PREFIX`], which [`Topic::parse`] rejects, so no
    /// client can publish to it or subscribe to it by name.
    pub fn reserved(rest: &str) -> Topic {
        Topic(Arc::from(format!("{RESERVED_PREFIX}{rest}")))
    }

    /// A name read back from a store: a client topic or a reserved one.
    pub fn from_stored(s: &str) -> Result<Topic, TopicError> {
        match s.strip_prefix(RESERVED_PREFIX) {
            Some(rest) if !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_graphic()) => {
                Ok(Topic(Arc::from(s)))
            }
            _ => Topic::parse(s),
        }
    }

    /// Whether this is a gateway-internal topic.
    pub fn is_reserved(&self) -> bool {
        self.0.starts_with(RESERVED_PREFIX)
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A 32-bit tag (FNV-1a) that identifies the topic inside a cursor.
    pub fn tag(&self) -> u32 {
        crate::core::hash::fnv1a32(self.0.as_bytes())
    }
}

fn is_topic_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Topic({:?})", &*self.0)
    }
}

impl serde::Serialize for Topic {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Topic {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Topic::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_names() {
        for ok in ["a", "devices/42/telemetry", "A.b_c:d-e", &"x".repeat(200)] {
            assert_eq!(Topic::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn rejects_invalid_names() {
        assert_eq!(Topic::parse(""), Err(TopicError::Empty));
        assert_eq!(Topic::parse(&"x".repeat(201)), Err(TopicError::TooLong));
        assert_eq!(Topic::parse("/a"), Err(TopicError::EmptySegment));
        assert_eq!(Topic::parse("a/"), Err(TopicError::EmptySegment));
        assert_eq!(Topic::parse("a//b"), Err(TopicError::EmptySegment));
        assert_eq!(Topic::parse("a b"), Err(TopicError::BadChar(' ')));
        assert_eq!(Topic::parse("a\nb"), Err(TopicError::BadChar('\n')));
        assert_eq!(Topic::parse("é"), Err(TopicError::BadChar('é')));
    }

    #[test]
    fn reserved_names_come_back_from_stores_but_never_from_clients() {
        let t = Topic::reserved("shadow/7075");
        assert!(t.is_reserved());
        assert!(Topic::parse(t.as_str()).is_err(), "a client cannot name it");
        assert_eq!(Topic::from_stored(t.as_str()).unwrap(), t);
        assert_eq!(
            Topic::from_stored("a/b").unwrap(),
            Topic::parse("a/b").unwrap()
        );
        assert!(Topic::from_stored("$").is_err());
        assert!(Topic::from_stored("a b").is_err());
    }
}
