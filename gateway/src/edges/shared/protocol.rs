//! The wire protocol a request arrived over, for the `protocol` label of
//! the stream metrics. HTTP/1.1, HTTP/2 and HTTP/3 are told by the
//! request's version; a gRPC call is an HTTP request made in-process, so
//! the gRPC service marks it.

use std::convert::Infallible;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::Version;

/// How a client reached the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 (and 1.0), lean path or hyper.
    Http1,
    /// HTTP/2, over TLS or cleartext.
    H2,
    /// HTTP/3 over QUIC.
    H3,
    /// gRPC, over whichever HTTP/2 carried it.
    Grpc,
}

impl Protocol {
    /// Every protocol, for exporting each label from the start.
    pub const ALL: [Protocol; 4] = [Protocol::Http1, Protocol::H2, Protocol::H3, Protocol::Grpc];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::H2 => "h2",
            Protocol::H3 => "h3",
            Protocol::Grpc => "grpc",
        }
    }

    /// The protocol of a request: the mark the gRPC service left, else its version.
    pub fn of(parts: &Parts) -> Protocol {
        if let Some(p) = parts.extensions.get::<Protocol>() {
            return *p;
        }
        match parts.version {
            Version::HTTP_2 => Protocol::H2,
            Version::HTTP_3 => Protocol::H3,
            _ => Protocol::Http1,
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Protocol {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(Protocol::of(parts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(version: Version, mark: Option<Protocol>) -> Parts {
        let mut req = axum::http::Request::builder()
            .version(version)
            .body(())
            .unwrap();
        if let Some(m) = mark {
            req.extensions_mut().insert(m);
        }
        req.into_parts().0
    }

    #[test]
    fn the_version_names_the_protocol_unless_grpc_marked_the_call() {
        assert_eq!(
            Protocol::of(&parts(Version::HTTP_11, None)),
            Protocol::Http1
        );
        assert_eq!(
            Protocol::of(&parts(Version::HTTP_10, None)),
            Protocol::Http1
        );
        assert_eq!(Protocol::of(&parts(Version::HTTP_2, None)), Protocol::H2);
        assert_eq!(Protocol::of(&parts(Version::HTTP_3, None)), Protocol::H3);
        assert_eq!(
            Protocol::of(&parts(Version::HTTP_2, Some(Protocol::Grpc))),
            Protocol::Grpc
        );
    }
}
