//! HTTPS: the simulator as a TLS upstream.
//!
//! Given a PEM certificate chain and its private key (`--tls-cert PATH --tls-key PATH`, or
//! `RAGQ_SIM_TLS_CERT` / `RAGQ_SIM_TLS_KEY`), the simulator serves the same routes over HTTPS
//! ([`crate::serve_tls`], [`crate::spawn_tls`]). The TLS stack is rustls with the ring provider,
//! TLS 1.2 and 1.3, ALPN `http/1.1`, no client authentication.
//!
//! [`TlsListener`] is an [`axum::serve::Listener`] that performs handshakes concurrently, each
//! bounded by a timeout, and hands axum only connections whose handshake succeeded. A client that
//! speaks plain HTTP, sends garbage or says nothing is logged and dropped without holding up
//! anyone else.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a client may take to complete its TLS handshake before it is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in progress at most; further TCP connections wait in the kernel's backlog.
pub const MAX_PENDING_HANDSHAKES: usize = 1024;

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be read.
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The certificate PEM is malformed.
    #[error("parsing the certificate PEM{}: {source}", at(path))]
    Cert {
        path: Option<PathBuf>,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The certificate PEM holds no `CERTIFICATE` block.
    #[error("no certificate in the certificate PEM{}", at(path))]
    NoCertificate { path: Option<PathBuf> },
    /// The key PEM is malformed or holds no PKCS#8, PKCS#1 (RSA) or SEC1 (EC) private key.
    #[error("parsing the private key PEM{}: {source}", at(path))]
    Key {
        path: Option<PathBuf>,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// Only one of `--tls-cert` and `--tls-key` was given.
    #[error("--tls-cert and --tls-key must be given together")]
    Incomplete,
    /// rustls rejected the certificate and key (for example, the key does not match).
    #[error("building the TLS server configuration: {0}")]
    Config(#[from] rustls::Error),
}

fn at(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map(|p| format!(" {}", p.display()))
        .unwrap_or_default()
}

impl TlsError {
    fn with_path(self, file: &Path) -> Self {
        let path = Some(file.to_path_buf());
        match self {
            TlsError::Cert { source, .. } => TlsError::Cert { path, source },
            TlsError::NoCertificate { .. } => TlsError::NoCertificate { path },
            TlsError::Key { source, .. } => TlsError::Key { path, source },
            other => other,
        }
    }
}

/// The `--tls-cert` / `--tls-key` flags of the binary.
#[derive(Clone, Debug, Default, PartialEq, Eq, clap::Args)]
pub struct TlsArgs {
    /// PEM certificate chain (leaf first). With --tls-key, serve HTTPS instead of HTTP.
    #[arg(
        long,
        env = "RAGQ_SIM_TLS_CERT",
        value_name = "PATH",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC) of --tls-cert.
    #[arg(
        long,
        env = "RAGQ_SIM_TLS_KEY",
        value_name = "PATH",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
}

impl TlsArgs {
    /// The server configuration the flags describe; `None` when neither is set (plain HTTP).
    pub fn server_config(&self) -> Result<Option<Arc<ServerConfig>>, TlsError> {
        match (&self.tls_cert, &self.tls_key) {
            (None, None) => Ok(None),
            (Some(cert), Some(key)) => load_server_config(cert, key).map(Some),
            _ => Err(TlsError::Incomplete),
        }
    }
}

/// Reads a PEM certificate chain and private key from files and builds the server configuration
/// ([`server_config_from_pem`]).
pub fn load_server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    let cert_pem = read(cert)?;
    let key_pem = read(key)?;
    let chain = parse_chain(&cert_pem).map_err(|e| e.with_path(cert))?;
    let key_der = parse_key(&key_pem).map_err(|e| e.with_path(key))?;
    build(chain, key_der)
}

/// Builds the server configuration from a PEM certificate chain (leaf first) and its PEM private
/// key: rustls with the ring provider, safe default protocol versions, ALPN `http/1.1`.
pub fn server_config_from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<ServerConfig>, TlsError> {
    build(parse_chain(cert_pem)?, parse_key(key_pem)?)
}

fn parse_chain(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Cert { path: None, source })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { path: None });
    }
    Ok(chain)
}

fn parse_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|source| TlsError::Key { path: None, source })
}

fn build(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A TCP listener that yields only connections whose TLS handshake succeeded.
///
/// Handshakes run concurrently on their own tasks, each limited to the handshake timeout
/// ([`HANDSHAKE_TIMEOUT`] unless changed), and at most [`MAX_PENDING_HANDSHAKES`] at a time.
/// Failed and timed-out handshakes are logged and skipped. Accepted sockets get `TCP_NODELAY`.
/// Dropping the listener aborts the handshakes still in progress.
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
    handshakes: JoinSet<(SocketAddr, io::Result<TlsStream<TcpStream>>)>,
}

impl TlsListener {
    /// Wraps `tcp`; connections are accepted with `config`.
    pub fn new(tcp: TcpListener, config: Arc<ServerConfig>) -> Self {
        Self {
            tcp,
            acceptor: TlsAcceptor::from(config),
            handshake_timeout: HANDSHAKE_TIMEOUT,
            handshakes: JoinSet::new(),
        }
    }

    /// Changes how long a handshake may take.
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    fn start_handshake(&mut self, tcp: TcpStream, addr: SocketAddr) {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("failed to set TCP_NODELAY: {e}");
        }
        let accept = self.acceptor.accept(tcp);
        let timeout = self.handshake_timeout;
        self.handshakes.spawn(async move {
            let result = match tokio::time::timeout(timeout, accept).await {
                Ok(result) => result,
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no handshake within {timeout:?}"),
                )),
            };
            (addr, result)
        });
    }
}

impl std::fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener")
            .field("local_addr", &self.tcp.local_addr().ok())
            .field("handshake_timeout", &self.handshake_timeout)
            .field("pending_handshakes", &self.handshakes.len())
            .finish_non_exhaustive()
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    // Cancel-safe: axum drops this future on shutdown; pending handshakes stay in the `JoinSet`.
    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            tokio::select! {
                // Finished handshakes first, so ready clients are served before new ones pile up.
                biased;
                Some(joined) = self.handshakes.join_next() => match joined {
                    Ok((addr, Ok(stream))) => return (stream, addr),
                    Ok((addr, Err(e))) => {
                        tracing::info!("ragq-sim: TLS handshake with {addr} failed: {e}");
                    }
                    Err(e) => tracing::warn!("ragq-sim: TLS handshake task failed: {e}"),
                },
                accepted = self.tcp.accept(), if self.handshakes.len() < MAX_PENDING_HANDSHAKES => {
                    match accepted {
                        Ok((tcp, addr)) => self.start_handshake(tcp, addr),
                        Err(e) => accept_error(e).await,
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// What axum's own TCP listener does: ignore per-connection errors, back off on the others
/// (say, out of file descriptors). Handshakes keep running on their tasks meanwhile.
async fn accept_error(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!("ragq-sim: accept error: {e}");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_pem() {
        assert!(matches!(
            server_config_from_pem(b"", b""),
            Err(TlsError::NoCertificate { path: None })
        ));
        let cert = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            server_config_from_pem(cert.as_bytes(), b"no key here"),
            Err(TlsError::Key { path: None, .. })
        ));
    }

    #[test]
    fn missing_file_names_the_path() {
        let e = load_server_config(Path::new("/nonexistent/c.pem"), Path::new("/k.pem"))
            .expect_err("missing file");
        assert!(e.to_string().contains("/nonexistent/c.pem"), "{e}");
    }

    #[test]
    fn no_flags_is_plain_http() {
        assert!(matches!(TlsArgs::default().server_config(), Ok(None)));
        let half = TlsArgs {
            tls_cert: Some("c.pem".into()),
            tls_key: None,
        };
        assert!(matches!(half.server_config(), Err(TlsError::Incomplete)));
    }
}
