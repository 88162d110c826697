//! How long a credential keeps a stream open: until the token expires (plus
//! the leeway, the same moment it stops opening streams), until its key is
//! removed, or until the client certificate expires.

use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

/// Longest single sleep while waiting for an expiry: the wall clock is read
/// again after it, so a clock step moves the end with it.
const RECHECK: Duration = Duration::from_secs(3600);

/// What kind of credential opened a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    /// A JWT.
    Token,
    /// A client certificate.
    Certificate,
}

/// Why a credential ended a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The token's `exp` (plus leeway) passed.
    TokenExpired,
    /// The key that signed the token left the key set.
    KeyRemoved,
    /// The client certificate's `notAfter` passed.
    CertificateExpired,
}

impl Ended {
    /// Label of `pushgate_streams_ended_by_credential_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Ended::TokenExpired => "token_expired",
            Ended::KeyRemoved => "key_removed",
            Ended::CertificateExpired => "certificate_expired",
        }
    }

    /// Every reason, for metrics.
    pub const ALL: [Ended; 3] = [
        Ended::TokenExpired,
        Ended::KeyRemoved,
        Ended::CertificateExpired,
    ];
}

/// The validity of one authenticated request's credential.
#[derive(Debug, Clone)]
pub struct Lifetime {
    /// Token or certificate.
    pub kind: CredentialKind,
    /// The first moment it no longer counts.
    pub until: SystemTime,
    /// Cancelled when the key behind it is removed.
    pub revoked: CancellationToken,
}

impl Lifetime {
    /// True once `until` has passed or the key is gone.
    pub fn is_over(&self) -> bool {
        self.revoked.is_cancelled() || SystemTime::now() >= self.until
    }

    /// Resolves when the credential stops counting, saying why.
    pub async fn ended(&self) -> Ended {
        let expired = match self.kind {
            CredentialKind::Token => Ended::TokenExpired,
            CredentialKind::Certificate => Ended::CertificateExpired,
        };
        tokio::select! {
            _ = self.revoked.cancelled() => Ended::KeyRemoved,
            _ = wall_clock_reaches(self.until) => expired,
        }
    }
}

async fn wall_clock_reaches(at: SystemTime) {
    while let Ok(left) = at.duration_since(SystemTime::now()) {
        if left.is_zero() {
            return;
        }
        tokio::time::sleep(left.min(RECHECK)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ends_at_expiry_or_revocation_whichever_first() {
        let soon = Lifetime {
            kind: CredentialKind::Token,
            until: SystemTime::now() + Duration::from_millis(50),
            revoked: CancellationToken::new(),
        };
        assert!(!soon.is_over());
        assert_eq!(soon.ended().await, Ended::TokenExpired);
        assert!(soon.is_over());

        let cert = Lifetime {
            kind: CredentialKind::Certificate,
            until: SystemTime::now() + Duration::from_millis(50),
            revoked: CancellationToken::new(),
        };
        assert_eq!(cert.ended().await, Ended::CertificateExpired);

        let later = Lifetime {
            kind: CredentialKind::Token,
            until: SystemTime::now() + Duration::from_secs(3600 * 24 * 365 * 50),
            revoked: CancellationToken::new(),
        };
        later.revoked.cancel();
        assert_eq!(later.ended().await, Ended::KeyRemoved);
        assert!(later.is_over());
    }
}
