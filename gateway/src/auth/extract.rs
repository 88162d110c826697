//! Where a request carries its token: `Authorization: Bearer`, else a cookie
//! (for `EventSource`, which cannot set headers), else the `access_token`
//! query parameter (logged nowhere: the request log records the path only).

use axum::http::{header, HeaderMap};

/// Name of the query parameter that may carry a token.
pub const QUERY_PARAM: &str = "access_token";

/// Largest token accepted from any source; bounds parsing work.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// A request's credential.
#[derive(Debug, PartialEq, Eq)]
pub enum Credential {
    /// Nothing presented.
    None,
    /// A token to verify.
    Token(String),
    /// Something was presented but cannot be a token (wrong scheme, too long, not text).
    Malformed,
}

/// Finds the token of a request. The first source present wins; a present
/// but malformed `Authorization` header is not silently skipped.
pub fn credential(
    headers: &HeaderMap,
    query: Option<&str>,
    cookie_name: &str,
    allow_query: bool,
) -> Credential {
    let checked = |t: &str| {
        let t = t.trim();
        if t.is_empty() || t.len() > MAX_TOKEN_LEN {
            Credential::Malformed
        } else {
            Credential::Token(t.to_owned())
        }
    };
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        let Ok(v) = v.to_str() else {
            return Credential::Malformed;
        };
        return match v.trim().split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => checked(token),
            _ => Credential::Malformed,
        };
    }
    if !cookie_name.is_empty() {
        for v in headers.get_all(header::COOKIE) {
            let Ok(v) = v.to_str() else { continue };
            for pair in v.split(';') {
                if let Some((k, val)) = pair.trim().split_once('=') {
                    if k == cookie_name {
                        return checked(val.trim_matches('"'));
                    }
                }
            }
        }
    }
    if allow_query {
        let found = form_urlencoded::parse(query.unwrap_or("").as_bytes())
            .find(|(k, _)| k == QUERY_PARAM)
            .map(|(_, v)| v.into_owned());
        if let Some(t) = found {
            return checked(&t);
        }
    }
    Credential::None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        m
    }

    #[test]
    fn sources_in_order() {
        let tok = |s: &str| Credential::Token(s.into());
        assert_eq!(
            credential(
                &h(&[("authorization", "Bearer abc")]),
                Some("access_token=q"),
                "c",
                true
            ),
            tok("abc")
        );
        assert_eq!(
            credential(&h(&[("authorization", "bearer  abc ")]), None, "c", true),
            tok("abc")
        );
        assert_eq!(
            credential(
                &h(&[("authorization", "Basic dTpw")]),
                Some("access_token=q"),
                "c",
                true
            ),
            Credential::Malformed
        );
        assert_eq!(
            credential(
                &h(&[("cookie", "x=1; c=ck; y=2")]),
                Some("access_token=q"),
                "c",
                true
            ),
            tok("ck")
        );
        assert_eq!(
            credential(
                &h(&[("cookie", "x=1"), ("cookie", "c=two")]),
                None,
                "c",
                true
            ),
            tok("two")
        );
        assert_eq!(
            credential(&h(&[]), Some("topic=a&access_token=q%2Bx"), "c", true),
            tok("q+x")
        );
        assert_eq!(
            credential(&h(&[]), Some("access_token=q"), "c", false),
            Credential::None
        );
        assert_eq!(
            credential(&h(&[]), Some("topic=a"), "c", true),
            Credential::None
        );
        assert_eq!(
            credential(&h(&[]), Some("access_token="), "c", true),
            Credential::Malformed
        );
        let long = format!("access_token={}", "a".repeat(MAX_TOKEN_LEN + 1));
        assert_eq!(
            credential(&h(&[]), Some(&long), "c", true),
            Credential::Malformed
        );
    }
}
