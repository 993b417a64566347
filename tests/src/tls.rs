//! A throwaway certificate authority for TLS tests (an HTTPS simulator, a TLS Redis, ...).
//!
//! ```no_run
//! # async fn demo() {
//! use ragq_tests::tls::TestCa;
//! let ca = TestCa::new();
//! let server = ca.server_cert(&["localhost", "127.0.0.1"]);
//! // Files for servers that read them (`redis-server --tls-cert-file ... --tls-ca-cert-file ...`):
//! let (_cert, _key, _ca) = (&server.cert_path, &server.key_path, ca.ca_path());
//! // Or in process:
//! let sim = ragq_sim::spawn_tls(ragq_sim::SimConfig::fast(), server.rustls_server_config())
//!     .await
//!     .expect("sim");
//! let http = reqwest::Client::builder()
//!     .tls_backend_preconfigured(ca.client_config())
//!     .build()
//!     .expect("client");
//! # let _ = (sim, http);
//! # }
//! ```
//!
//! Every CA writes into its own fresh directory under [`std::env::temp_dir`], removed when the CA
//! and every [`ServerCert`] it issued are dropped. Keys are ECDSA P-256 (PKCS#8 PEM). The
//! helpers panic on failure, like the rest of the test harness.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::CertificateDer;

/// A self-signed CA that issues server certificates, with its PEM files on disk.
pub struct TestCa {
    dir: Arc<TempDir>,
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    ca_path: PathBuf,
    issued: AtomicUsize,
}

/// A leaf certificate issued by a [`TestCa`], with its private key.
#[derive(Clone)]
pub struct ServerCert {
    /// The certificate (PEM).
    pub cert_pem: String,
    /// Its private key (PKCS#8 PEM).
    pub key_pem: String,
    /// `server.pem` (`server-N.pem` for the N-th certificate of the same CA).
    pub cert_path: PathBuf,
    /// `server-key.pem` (`server-N-key.pem`).
    pub key_path: PathBuf,
    _dir: Arc<TempDir>,
}

impl TestCa {
    /// A new CA ("ragq test CA"), its certificate written to `ca.pem` in a fresh temp directory.
    pub fn new() -> TestCa {
        let dir = Arc::new(TempDir::create());
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "ragq test CA");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("self-signed CA");
        let ca_pem = cert.pem();
        let ca_path = dir.write("ca.pem", &ca_pem);
        TestCa {
            issuer: Issuer::new(params, key),
            ca_pem,
            ca_der: cert.der().clone(),
            ca_path,
            dir,
            issued: AtomicUsize::new(0),
        }
    }

    /// Issues a certificate for `names` (DNS names, and IP addresses as IP SANs; the first one
    /// is also the common name), usable for server and client authentication, and writes it and
    /// its key next to `ca.pem`.
    pub fn server_cert(&self, names: &[&str]) -> ServerCert {
        let mut params = CertificateParams::default();
        params.subject_alt_names = names
            .iter()
            .map(|name| match name.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(
                    (*name)
                        .try_into()
                        .unwrap_or_else(|e| panic!("bad DNS name {name:?}: {e}")),
                ),
            })
            .collect();
        if let Some(first) = names.first() {
            params.distinguished_name.push(DnType::CommonName, *first);
        }
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().expect("server key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("sign server certificate");
        let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
        let stem = match self.issued.fetch_add(1, Ordering::Relaxed) {
            0 => "server".to_string(),
            n => format!("server-{}", n + 1),
        };
        ServerCert {
            cert_path: self.dir.write(&format!("{stem}.pem"), &cert_pem),
            key_path: self.dir.write(&format!("{stem}-key.pem"), &key_pem),
            cert_pem,
            key_pem,
            _dir: self.dir.clone(),
        }
    }

    /// The CA certificate (PEM).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The CA certificate (DER).
    pub fn ca_der(&self) -> &CertificateDer<'static> {
        &self.ca_der
    }

    /// `ca.pem`.
    pub fn ca_path(&self) -> &Path {
        &self.ca_path
    }

    /// The directory holding the PEM files.
    pub fn dir(&self) -> &Path {
        &self.dir.0
    }

    /// Root store trusting this CA only.
    pub fn root_store(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).expect("add test CA");
        roots
    }

    /// A rustls client configuration (ring provider) trusting this CA only, e.g. for
    /// `reqwest::ClientBuilder::tls_backend_preconfigured`.
    pub fn client_config(&self) -> rustls::ClientConfig {
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS protocol versions")
        .with_root_certificates(self.root_store())
        .with_no_client_auth()
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa")
            .field("dir", &self.dir.0)
            .finish_non_exhaustive()
    }
}

impl ServerCert {
    /// The simulator's server configuration for this certificate
    /// ([`ragq_sim::tls::server_config_from_pem`]).
    pub fn rustls_server_config(&self) -> Arc<rustls::ServerConfig> {
        ragq_sim::tls::server_config_from_pem(self.cert_pem.as_bytes(), self.key_pem.as_bytes())
            .expect("server TLS config")
    }
}

impl std::fmt::Debug for ServerCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerCert")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

/// A directory removed (with its contents) on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn create() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ragq-test-ca-{}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        TempDir(dir)
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents)
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{PrivateKeyDer, ServerName, UnixTime};

    #[test]
    fn writes_parseable_files_and_cleans_up() {
        let ca = TestCa::new();
        let dir = ca.dir().to_path_buf();
        let server = ca.server_cert(&["localhost", "127.0.0.1"]);
        assert_eq!(server.cert_path, dir.join("server.pem"));
        assert_eq!(server.key_path, dir.join("server-key.pem"));
        assert_eq!(ca.ca_path(), dir.join("ca.pem"));

        let ca_file = CertificateDer::from_pem_file(ca.ca_path()).expect("ca.pem parses");
        assert_eq!(&ca_file, ca.ca_der());
        assert_eq!(
            std::fs::read_to_string(ca.ca_path()).expect("ca.pem"),
            ca.ca_pem()
        );
        let chain: Vec<_> = CertificateDer::pem_file_iter(&server.cert_path)
            .expect("server.pem")
            .collect::<Result<_, _>>()
            .expect("server.pem parses");
        assert_eq!(chain.len(), 1);
        let key = PrivateKeyDer::from_pem_file(&server.key_path).expect("key parses");
        assert!(matches!(key, PrivateKeyDer::Pkcs8(_)));
        // The simulator accepts the pair.
        ragq_sim::tls::load_server_config(&server.cert_path, &server.key_path)
            .expect("sim loads the files");

        // The leaf verifies against the CA for both names, DNS and IP, and not for others.
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(ca.root_store()),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .expect("verifier");
        for (name, ok) in [
            ("localhost", true),
            ("127.0.0.1", true),
            ("example.com", false),
        ] {
            let name = ServerName::try_from(name).expect("server name");
            let verified = verifier.verify_server_cert(&chain[0], &[], &name, &[], UnixTime::now());
            assert_eq!(verified.is_ok(), ok, "{name:?}: {verified:?}");
        }

        // A second certificate gets its own files; the first stay.
        let other = ca.server_cert(&["redis.test"]);
        assert_eq!(other.cert_path, dir.join("server-2.pem"));
        assert_eq!(other.key_path, dir.join("server-2-key.pem"));
        assert!(server.cert_path.exists());

        // The directory lives as long as the CA or any certificate it issued.
        drop(ca);
        assert!(server.key_path.exists());
        drop((server, other));
        assert!(!dir.exists());
    }
}
