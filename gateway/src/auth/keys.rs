//! Key material from files (so it can come from a Kubernetes Secret). The
//! configured key type alone decides which algorithm is accepted; the token
//! header is never trusted for that.

use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};

/// Shortest accepted HS256 secret: 256 bits, as RFC 7518 §3.2 requires.
pub const MIN_HS256_SECRET_BYTES: usize = 32;

pub use pushgate_contract::config::KeyAlgorithm;

/// The `jsonwebtoken` algorithm of `k`.
pub fn jwt_algorithm(k: KeyAlgorithm) -> Algorithm {
    match k {
        KeyAlgorithm::Hs256 => Algorithm::HS256,
        KeyAlgorithm::Rs256 => Algorithm::RS256,
        KeyAlgorithm::Es256 => Algorithm::ES256,
    }
}

/// A key file that cannot be used. The message names the file, never its content.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct KeyError {
    path: String,
    reason: String,
}

fn read(path: &Path) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|e| KeyError::new(path, format!("cannot read: {e}")))
}

impl KeyError {
    /// A problem with `path`; `reason` must not quote key material.
    pub fn new(path: &Path, reason: impl Into<String>) -> KeyError {
        KeyError {
            path: path.display().to_string(),
            reason: reason.into(),
        }
    }
}

/// A secret's bytes without the trailing newline an editor or `echo` adds.
fn secret(path: &Path, mut bytes: Vec<u8>) -> Result<Vec<u8>, KeyError> {
    while bytes.last().is_some_and(|b| matches!(b, b'\n' | b'\r')) {
        bytes.pop();
    }
    if bytes.len() < MIN_HS256_SECRET_BYTES {
        return Err(KeyError::new(
            path,
            format!("an HS256 secret must be at least {MIN_HS256_SECRET_BYTES} bytes"),
        ));
    }
    Ok(bytes)
}

/// Reads `path` as the key type `alg` fixes: a secret, or an RSA or EC PEM.
/// Also returns the material read, so a reload can tell a changed key.
fn load<K>(
    alg: KeyAlgorithm,
    path: &Path,
    from_secret: fn(&[u8]) -> K,
    from_rsa: fn(&[u8]) -> jsonwebtoken::errors::Result<K>,
    from_ec: fn(&[u8]) -> jsonwebtoken::errors::Result<K>,
) -> Result<(K, Vec<u8>), KeyError> {
    let bad =
        |e: jsonwebtoken::errors::Error| KeyError::new(path, format!("not a {alg:?} key: {e}"));
    let bytes = read(path)?;
    match alg {
        KeyAlgorithm::Hs256 => {
            let s = secret(path, bytes)?;
            Ok((from_secret(&s), s))
        }
        KeyAlgorithm::Rs256 => Ok((from_rsa(&bytes).map_err(bad)?, bytes)),
        KeyAlgorithm::Es256 => Ok((from_ec(&bytes).map_err(bad)?, bytes)),
    }
}

/// Loads a verifying key (the HS256 secret, or the RS256/ES256 public key as
/// PEM) and the material it was made from.
pub fn load_decoding_key(
    alg: KeyAlgorithm,
    path: &Path,
) -> Result<(DecodingKey, Vec<u8>), KeyError> {
    load(
        alg,
        path,
        DecodingKey::from_secret,
        DecodingKey::from_rsa_pem,
        DecodingKey::from_ec_pem,
    )
}

/// Loads the signing key for `pushgate token`: the HS256 secret, or the
/// RS256/ES256 private key (PKCS#8 PEM; PKCS#1 also for RSA).
pub fn load_encoding_key(alg: KeyAlgorithm, path: &Path) -> Result<EncodingKey, KeyError> {
    load(
        alg,
        path,
        EncodingKey::from_secret,
        EncodingKey::from_rsa_pem,
        EncodingKey::from_ec_pem,
    )
    .map(|(k, _)| k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn short_secrets_are_refused_and_newline_is_trimmed() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "too-short").unwrap();
        let err = load_decoding_key(KeyAlgorithm::Hs256, f.path()).unwrap_err();
        assert!(err.to_string().contains("at least 32"), "{err}");
        assert!(
            !err.to_string().contains("too-short"),
            "never echo key material"
        );

        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "{}", "k".repeat(32)).unwrap();
        load_decoding_key(KeyAlgorithm::Hs256, f.path()).unwrap();
    }

    #[test]
    fn a_secret_is_not_a_public_key() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        write!(f, "{}", "k".repeat(40)).unwrap();
        assert!(load_decoding_key(KeyAlgorithm::Es256, f.path()).is_err());
        assert!(load_decoding_key(KeyAlgorithm::Rs256, f.path()).is_err());
    }
}
