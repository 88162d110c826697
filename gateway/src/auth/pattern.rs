//! Topic patterns of token claims and anonymous rules: `/`-separated
//! segments where `*` stands for exactly one segment and `**` for any number
//! of segments (including none), e.g. `devices/*/telemetry`, `news/**`.

use std::fmt;

use crate::core::topic::{check_length, Topic, TopicError, MAX_TOPIC_LEN};

/// Longest accepted pattern, in bytes (as long as the longest topic).
pub const MAX_PATTERN_LEN: usize = MAX_TOPIC_LEN;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    One,
    Any,
}

/// A parsed topic pattern. Wildcards stand for whole segments only.
#[derive(Clone, PartialEq, Eq)]
pub struct TopicPattern {
    text: String,
    segments: Vec<Segment>,
}

/// Why a string is not a topic pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("topic pattern is empty")]
    Empty,
    #[error("topic pattern is longer than {MAX_PATTERN_LEN} bytes")]
    TooLong,
    #[error("topic pattern has an empty segment")]
    EmptySegment,
    #[error("topic pattern segment {0:?} is neither a name, `*` nor `**`")]
    BadSegment(String),
}

impl TopicPattern {
    /// Parses a pattern; literal segments follow the topic name rules.
    pub fn parse(s: &str) -> Result<Self, PatternError> {
        check_length(s).map_err(|e| match e {
            TopicError::Empty => PatternError::Empty,
            _ => PatternError::TooLong,
        })?;
        let mut segments = Vec::new();
        for seg in s.split('/') {
            let parsed = match seg {
                "" => return Err(PatternError::EmptySegment),
                "*" => Segment::One,
                "**" => Segment::Any,
                lit if Topic::parse(lit).is_ok() => Segment::Literal(lit.to_owned()),
                other => return Err(PatternError::BadSegment(other.to_owned())),
            };
            // Consecutive `**` match the same as one; folding them keeps matching linear.
            if !(parsed == Segment::Any && segments.last() == Some(&Segment::Any)) {
                segments.push(parsed);
            }
        }
        Ok(TopicPattern {
            text: s.to_owned(),
            segments,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `topic` is covered by this pattern.
    pub fn matches(&self, topic: &Topic) -> bool {
        let topic: Vec<&str> = topic.as_str().split('/').collect();
        // reach[j]: the pattern prefix seen so far can consume exactly topic[..j].
        // A table over (pattern, topic) segments instead of backtracking, so
        // hostile patterns such as `**/**/x/**/y` stay O(n·m).
        let mut reach = vec![false; topic.len() + 1];
        reach[0] = true;
        for seg in &self.segments {
            let mut next = vec![false; topic.len() + 1];
            match seg {
                Segment::Any => {
                    let mut any = false;
                    for j in 0..=topic.len() {
                        any |= reach[j];
                        next[j] = any;
                    }
                }
                Segment::One => next[1..].copy_from_slice(&reach[..topic.len()]),
                Segment::Literal(lit) => {
                    for (j, seg) in topic.iter().enumerate() {
                        next[j + 1] = reach[j] && seg == lit;
                    }
                }
            }
            reach = next;
        }
        reach[topic.len()]
    }
}

impl fmt::Display for TopicPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for TopicPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TopicPattern({:?})", self.text)
    }
}

/// True when any of `patterns` covers `topic`.
pub fn any_matches(patterns: &[TopicPattern], topic: &Topic) -> bool {
    patterns.iter().any(|p| p.matches(topic))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, t: &str) -> bool {
        TopicPattern::parse(p)
            .unwrap()
            .matches(&Topic::parse(t).unwrap())
    }

    #[test]
    fn exact_and_wildcards() {
        assert!(m("a/b", "a/b"));
        assert!(!m("a/b", "a/b/c"));
        assert!(!m("a/b", "a"));
        assert!(m("a/*", "a/b"));
        assert!(!m("a/*", "a"));
        assert!(!m("a/*", "a/b/c"));
        assert!(m("*/x", "q/x"));
        assert!(m("a/**", "a"));
        assert!(m("a/**", "a/b/c/d"));
        assert!(!m("a/**", "ab"));
        assert!(m("**", "anything/at/all"));
        assert!(m("a/**/z", "a/z"));
        assert!(m("a/**/z", "a/b/c/z"));
        assert!(!m("a/**/z", "a/b/c/y"));
        assert!(m("**/*/**", "x"));
        assert!(!m("*/*", "x"));
        assert!(m("a/**/**/b", "a/b"));
    }

    #[test]
    fn rejects_malformed_patterns() {
        assert_eq!(TopicPattern::parse(""), Err(PatternError::Empty));
        assert_eq!(TopicPattern::parse("a//b"), Err(PatternError::EmptySegment));
        assert_eq!(TopicPattern::parse("/a"), Err(PatternError::EmptySegment));
        assert!(matches!(
            TopicPattern::parse("a*"),
            Err(PatternError::BadSegment(_))
        ));
        assert!(matches!(
            TopicPattern::parse("a/***"),
            Err(PatternError::BadSegment(_))
        ));
        assert!(matches!(
            TopicPattern::parse("a b"),
            Err(PatternError::BadSegment(_))
        ));
        assert_eq!(
            TopicPattern::parse(&"x".repeat(201)),
            Err(PatternError::TooLong)
        );
    }
}
