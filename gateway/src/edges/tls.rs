//! TLS on the API listener (rustls, ring provider): certificate and key from
//! PEM files, re-read when they change on disk (e.g. a Kubernetes Secret
//! update or cert-manager renewal) without dropping open connections, and
//! ALPN `h2` + `http/1.1`. Optionally verifies client certificates against a
//! CA bundle that reloads the same way.

use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

pub use pushgate_contract::config::{ClientAuth, TlsConfig};

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

/// Reads a CA bundle and builds the verifier of client certificates.
pub fn load_client_verifier(
    ca: &Path,
    mode: ClientAuth,
) -> anyhow::Result<Arc<dyn ClientCertVerifier>> {
    let pem =
        std::fs::read(ca).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", ca.display()))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| anyhow::anyhow!("{}: bad PEM: {e}", ca.display()))?;
        roots
            .add(cert)
            .map_err(|e| anyhow::anyhow!("{}: not a CA certificate: {e}", ca.display()))?;
    }
    if roots.is_empty() {
        anyhow::bail!("{}: no certificate found", ca.display());
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
    let builder = match mode {
        ClientAuth::Optional => builder.allow_unauthenticated(),
        _ => builder,
    };
    Ok(builder.build()?)
}

/// Verifies client certificates against the current CA bundle; swapped by
/// the reload task, so new handshakes use a rotated bundle at once.
#[derive(Debug)]
pub struct ReloadingClientVerifier {
    current: RwLock<Arc<dyn ClientCertVerifier>>,
    mandatory: bool,
}

impl ReloadingClientVerifier {
    fn get(&self) -> Arc<dyn ClientCertVerifier> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl ClientCertVerifier for ReloadingClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    // The hints would borrow from a bundle that may be swapped; clients
    // send their certificate without them.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.get()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.get().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.get().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.get().supported_verify_schemes()
    }
}

/// The TLS side of the API listeners.
pub struct Tls {
    /// Accepts TLS connections with the current certificate.
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// The same certificate and client verification for QUIC (ALPN `h3`).
    pub quic: Arc<rustls::ServerConfig>,
    cert: Arc<ReloadingCert>,
    clients: Option<Arc<ReloadingClientVerifier>>,
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
        let clients = match (&c.client_ca_file, c.client_auth) {
            (Some(ca), mode) if mode != ClientAuth::Off => {
                Some(Arc::new(ReloadingClientVerifier {
                    current: RwLock::new(load_client_verifier(ca, mode)?),
                    mandatory: mode == ClientAuth::Required,
                }))
            }
            _ => None,
        };
        // Both listeners share the reloading certificate and verifier, so a
        // rotation reaches TCP and QUIC at once.
        let config = |alpn: &[&[u8]]| -> anyhow::Result<rustls::ServerConfig> {
            let builder = rustls::ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()?;
            let builder = match &clients {
                Some(v) => builder.with_client_cert_verifier(v.clone()),
                None => builder.with_no_client_auth(),
            };
            let mut server = builder.with_cert_resolver(cert.clone());
            server.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Ok(server)
        };
        let tcp = config(&[b"h2", b"http/1.1"])?;
        let quic = config(&[b"h3"])?;
        Ok(Tls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(tcp)),
            quic: Arc::new(quic),
            cert,
            clients,
        })
    }

    /// Polls the files every `reload_interval` and swaps in what changed once
    /// it loads cleanly; a broken or half-written file keeps the old one.
    pub fn spawn_reload(&self, c: &TlsConfig) {
        let (Some(cert_file), Some(key_file)) = (c.cert_file.clone(), c.key_file.clone()) else {
            return;
        };
        let paths = vec![cert_file.clone(), key_file.clone()];
        crate::ops::reload::spawn(
            "TLS certificate",
            Arc::downgrade(&self.cert),
            paths,
            c.reload_interval,
            move || load_certified_key(&cert_file, &key_file),
            |cert: &ReloadingCert, ck| {
                *cert.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(ck)
            },
        );
        if let (Some(clients), Some(ca)) = (&self.clients, c.client_ca_file.clone()) {
            let mode = c.client_auth;
            crate::ops::reload::spawn(
                "TLS client CA bundle",
                Arc::downgrade(clients),
                vec![ca.clone()],
                c.reload_interval,
                move || load_client_verifier(&ca, mode),
                |clients: &ReloadingClientVerifier, v| {
                    *clients.current.write().unwrap_or_else(|e| e.into_inner()) = v
                },
            );
        }
    }
}
