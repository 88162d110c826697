//! TLS on the API listener (rustls, ring provider): certificate and key from
//! PEM files, re-read when they change on disk (e.g. a Kubernetes Secret
//! update or cert-manager renewal) without dropping open connections, and
//! ALPN `h2` + `http/1.1`.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;

pub use pushgate_contract::config::TlsConfig;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads and checks a certificate chain and its key (the key must belong to the leaf).
pub fn load_certified_key(cert: &Path, key: &Path) -> anyhow::Result<CertifiedKey> {
    let cert_pem =
        std::fs::read(cert).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", cert.display()))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{}: bad PEM: {e}", cert.display()))?;
    if chain.is_empty() {
        anyhow::bail!("{}: no certificate found", cert.display());
    }
    let key_pem =
        std::fs::read(key).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", key.display()))?;
    // The key's own parse error could quote it; say only where the problem is.
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|_| anyhow::anyhow!("{}: no usable private key", key.display()))?;
    CertifiedKey::from_der(chain, key_der, &provider()).map_err(|e| {
        anyhow::anyhow!(
            "{} and {} do not form a usable pair: {e}",
            cert.display(),
            key.display()
        )
    })
}

/// Hands out the current certificate; swapped by the reload task.
#[derive(Debug)]
pub struct ReloadingCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// A change marker of the two files: modification time and size of each.
fn stamp(cert: &Path, key: &Path) -> Option<[(SystemTime, u64); 2]> {
    let one = |p: &Path| {
        let m = std::fs::metadata(p).ok()?;
        Some((m.modified().ok()?, m.len()))
    };
    Some([one(cert)?, one(key)?])
}

/// The TLS side of the API listener.
pub struct Tls {
    /// Accepts TLS connections with the current certificate.
    pub acceptor: tokio_rustls::TlsAcceptor,
    cert: Arc<ReloadingCert>,
}

impl Tls {
    /// Loads the files (an error stops startup) and builds the acceptor.
    pub fn new(c: &TlsConfig) -> anyhow::Result<Tls> {
        let (Some(cert_file), Some(key_file)) = (&c.cert_file, &c.key_file) else {
            anyhow::bail!("tls.cert_file and tls.key_file are required");
        };
        let cert = Arc::new(ReloadingCert {
            current: RwLock::new(Arc::new(load_certified_key(cert_file, key_file)?)),
        });
        let mut server = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(cert.clone());
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Tls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
            cert,
        })
    }

    /// Polls the files every `reload_interval` and swaps in a changed pair
    /// once it loads cleanly; a broken or half-written pair keeps the old one.
    pub fn spawn_reload(&self, c: &TlsConfig, stop: CancellationToken) {
        let (Some(cert_file), Some(key_file)) = (c.cert_file.clone(), c.key_file.clone()) else {
            return;
        };
        let cert = self.cert.clone();
        let every = c.reload_interval;
        tokio::spawn(async move {
            let mut loaded = stamp(&cert_file, &key_file);
            let mut warned = None;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                let now = stamp(&cert_file, &key_file);
                if now.is_none() || now == loaded {
                    continue;
                }
                let (c2, k2) = (cert_file.clone(), key_file.clone());
                match tokio::task::spawn_blocking(move || load_certified_key(&c2, &k2)).await {
                    Ok(Ok(ck)) => {
                        *cert.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(ck);
                        loaded = now;
                        tracing::info!(cert = %cert_file.display(), "TLS certificate reloaded");
                    }
                    Ok(Err(e)) if warned != now => {
                        // Retried each tick (the other file of a rotation may
                        // still be on its way), warned once per change.
                        warned = now;
                        tracing::warn!(error = %e, "TLS files changed but cannot be loaded; keeping the current certificate");
                    }
                    _ => {}
                }
            }
        });
    }
}
