//! A throwaway certificate authority made in memory (rcgen), for gateways
//! that serve HTTPS in tests and for the devices that present client
//! certificates to them.

use std::time::SystemTime;

use anyhow::Result;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// A CA certificate and the key that signs leaves.
pub struct TestCa {
    /// The CA certificate (PEM), for clients to trust.
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Leaf {
    /// Certificate and key in one PEM, as `reqwest::Identity::from_pem` takes them.
    pub fn identity_pem(&self) -> String {
        format!("{}{}", self.cert_pem, self.key_pem)
    }

    /// Writes `tls.crt` and `tls.key` into `dir`, as a TLS Secret volume
    /// holds them; returns their paths.
    pub fn write_to(
        &self,
        dir: &std::path::Path,
    ) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
        let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
        std::fs::write(&cert, &self.cert_pem)?;
        std::fs::write(&key, &self.key_pem)?;
        Ok((cert, key))
    }
}

/// A leaf certificate.
pub struct Leaf {
    /// Certificate (PEM).
    pub cert_pem: String,
    /// Private key (PEM).
    pub key_pem: String,
    /// Certificate (DER), to compare with what a server presents.
    pub der: Vec<u8>,
}

impl TestCa {
    /// A new CA.
    pub fn new() -> Result<TestCa> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "pushgate test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key)?;
        Ok(TestCa {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// A client (device) certificate with common name `cn`, valid until `not_after`.
    pub fn client_leaf(&self, cn: &str, not_after: SystemTime) -> Result<Leaf> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_after = not_after.into();
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        })
    }

    /// A server leaf for `localhost` and 127.0.0.1, with common name `name`.
    pub fn leaf(&self, name: &str) -> Result<Leaf> {
        self.host_leaf(name, vec![ExtendedKeyUsagePurpose::ServerAuth])
    }

    /// A leaf for `localhost` and 127.0.0.1 that serves and also presents
    /// itself as a client, for peers that authenticate each other with one
    /// certificate (KEDA's operator and metrics adapter).
    pub fn peer_leaf(&self, name: &str) -> Result<Leaf> {
        self.host_leaf(
            name,
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        )
    }

    fn host_leaf(&self, name: &str, usages: Vec<ExtendedKeyUsagePurpose>) -> Result<Leaf> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec!["localhost".to_owned()])?;
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = usages;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        })
    }
}
