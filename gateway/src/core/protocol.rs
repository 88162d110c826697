//! The wire protocol a stream arrived over, for the `protocol` label of
//! the stream metrics. Each edge names its own.

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
}
