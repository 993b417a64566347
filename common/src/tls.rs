//! TLS for every outgoing connection: rustls with the *ring* provider, the public web roots
//! (Mozilla's, from `webpki-root-certs`) plus an optional extra CA file for private CAs
//! (`RAGQ_EXTRA_CA_FILE`).
//!
//! Each client library takes its trust anchors differently, so [`TlsRoots`] hands out each form:
//! - model providers (reqwest): [`TlsRoots::client_config`], a ready rustls `ClientConfig`;
//! - PostgreSQL (sqlx): [`TlsRoots::extra_ca_pem`] added to sqlx's own webpki roots;
//! - RabbitMQ (lapin): the same PEM as a certificate chain added to its webpki roots;
//! - Redis (redis-rs): [`TlsRoots::bundle_pem`], since redis-rs *replaces* its roots with the PEM it
//!   is given, the bundle holds the public roots and the extra CA together.
//!
//! Whether a connection uses TLS at all is the URL's business: `https://`, `postgres://…?sslmode=
//! require|verify-ca|verify-full`, `amqps://`, `rediss://` (see docs/OPERATIONS.md).

use std::path::PathBuf;
use std::sync::Arc;

use base64::Engine;
use clap::Args;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// TLS settings shared by every binary.
#[derive(Clone, Debug, Default, Args)]
pub struct TlsConfig {
    /// PEM file with extra CA certificates trusted beside the public web roots (private CAs of a
    /// model gateway, a managed PostgreSQL, Redis or RabbitMQ).
    #[arg(long = "extra-ca-file", env = "RAGQ_EXTRA_CA_FILE")]
    pub extra_ca_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading the extra CA file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the extra CA file {path} holds no PEM certificate")]
    Empty { path: String },
    #[error("the extra CA file {path} is not valid PEM: {reason}")]
    Pem { path: String, reason: String },
    #[error("building the TLS client configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Installs ring as the process's rustls provider (idempotent). Libraries that build their own
/// rustls configuration (redis-rs, sqlx) take the process default.
pub fn install_ring_provider() {
    // An error only means a provider is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The trust anchors of this process: public roots plus the extra CA file, loaded and checked
/// once at start so a bad file stops the process with a clear message.
#[derive(Clone, Debug)]
pub struct TlsRoots {
    extra: Vec<CertificateDer<'static>>,
    extra_pem: Option<Vec<u8>>,
}

impl TlsRoots {
    /// Public roots only.
    pub fn public() -> Self {
        TlsRoots {
            extra: Vec::new(),
            extra_pem: None,
        }
    }

    /// Loads the extra CA file, if one is configured, and installs the ring provider.
    pub fn load(cfg: &TlsConfig) -> Result<Self, TlsError> {
        install_ring_provider();
        let Some(path) = &cfg.extra_ca_file else {
            return Ok(Self::public());
        };
        let shown = path.display().to_string();
        let pem = std::fs::read(path).map_err(|source| TlsError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::from_pem(&pem, &shown)
    }

    /// Extra CA certificates given as PEM text (`origin` names them in errors).
    pub fn from_pem(pem: &[u8], origin: &str) -> Result<Self, TlsError> {
        let extra = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Pem {
                path: origin.to_string(),
                reason: e.to_string(),
            })?;
        if extra.is_empty() {
            return Err(TlsError::Empty {
                path: origin.to_string(),
            });
        }
        Ok(TlsRoots {
            extra,
            extra_pem: Some(pem.to_vec()),
        })
    }

    /// True when an extra CA is configured.
    pub fn has_extra(&self) -> bool {
        !self.extra.is_empty()
    }

    /// The extra CA file's PEM, if any.
    pub fn extra_ca_pem(&self) -> Option<&[u8]> {
        self.extra_pem.as_deref()
    }

    /// A rustls root store: public roots plus the extra CAs.
    pub fn root_store(&self) -> rustls::RootCertStore {
        let mut store = rustls::RootCertStore::empty();
        store.add_parsable_certificates(webpki_root_certs::TLS_SERVER_ROOT_CERTS.iter().cloned());
        store.add_parsable_certificates(self.extra.iter().cloned());
        store
    }

    /// A client configuration on the ring provider trusting [`Self::root_store`], for HTTPS.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Ok(rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(self.root_store())
            .with_no_client_auth())
    }

    /// Public roots and extra CAs as one PEM bundle (for clients that replace their roots with
    /// the PEM they are given).
    pub fn bundle_pem(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for cert in webpki_root_certs::TLS_SERVER_ROOT_CERTS
            .iter()
            .chain(self.extra.iter())
        {
            out.extend_from_slice(b"-----BEGIN CERTIFICATE-----\n");
            let b64 = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
            for line in b64.as_bytes().chunks(64) {
                out.extend_from_slice(line);
                out.push(b'\n');
            }
            out.extend_from_slice(b"-----END CERTIFICATE-----\n");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_roots_are_many_and_bundle_round_trips() {
        let roots = TlsRoots::public();
        let n = roots.root_store().len();
        assert!(n > 100, "public roots: {n}");
        let bundle = roots.bundle_pem();
        let parsed = CertificateDer::pem_slice_iter(&bundle).count();
        assert_eq!(parsed, webpki_root_certs::TLS_SERVER_ROOT_CERTS.len());
        assert!(roots.client_config().is_ok());
    }

    #[test]
    fn a_file_without_certificates_is_refused() {
        let err = TlsRoots::from_pem(b"not a certificate", "x.pem").unwrap_err();
        assert!(err.to_string().contains("x.pem"), "{err}");
    }

    #[test]
    fn a_missing_file_names_the_path() {
        let cfg = TlsConfig {
            extra_ca_file: Some("/nonexistent/ca.pem".into()),
        };
        let err = TlsRoots::load(&cfg).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }
}
