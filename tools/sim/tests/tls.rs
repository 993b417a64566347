//! The simulator over HTTPS: `ragq_sim::spawn_tls`, the `TlsListener` and the binary's
//! `--tls-cert` / `--tls-key` flags, with a throwaway CA made by rcgen.

use std::io::BufRead;
use std::sync::Arc;
use std::time::Duration;

use ragq_sim::{SimConfig, SimHandle, SimStats, TlsListener};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

/// A test CA and a server certificate for `localhost` and `127.0.0.1` signed by it.
struct Pki {
    ca_der: CertificateDer<'static>,
    cert_pem: String,
    key_pem: String,
}

fn pki() -> Pki {
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "ragq-sim test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().expect("ca key");
    let ca_cert = ca.self_signed(&ca_key).expect("ca cert");
    let issuer = Issuer::new(ca, ca_key);

    let mut leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("leaf params");
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf.use_authority_key_identifier_extension = true;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).expect("leaf cert");
    Pki {
        ca_der: ca_cert.der().clone(),
        cert_pem: leaf_cert.pem(),
        key_pem: leaf_key.serialize_pem(),
    }
}

impl Pki {
    fn server_config(&self) -> Arc<rustls::ServerConfig> {
        ragq_sim::tls::server_config_from_pem(self.cert_pem.as_bytes(), self.key_pem.as_bytes())
            .expect("server config")
    }

    /// A client that trusts this CA only.
    fn client(&self) -> reqwest::Client {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_der.clone()).expect("add CA");
        client_with_roots(roots)
    }
}

fn client_with_roots(roots: RootCertStore) -> reqwest::Client {
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .tls_backend_preconfigured(tls)
        .build()
        .expect("client")
}

async fn tls_sim(pki: &Pki) -> SimHandle {
    ragq_sim::spawn_tls(SimConfig::fast(), pki.server_config())
        .await
        .expect("spawn sim")
}

/// Every message of an error and its sources, `Display` and `Debug`.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    let mut cur = Some(e);
    while let Some(err) = cur {
        out.push_str(&format!("{err} / {err:?}\n"));
        cur = err.source();
    }
    out
}

async fn streamed_answer(client: &reqwest::Client, api_base: &str) -> Vec<String> {
    let resp = client
        .post(format!("{api_base}/chat/completions"))
        .json(&json!({
            "model": "sim:tokens=5",
            "stream": true,
            "messages": [{"role": "user", "content": "Is this encrypted?"}]
        }))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let body = resp.text().await.expect("body");
    body.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| e.strip_prefix("data: ").expect("data event").to_string())
        .collect()
}

async fn healthz(client: &reqwest::Client, base_url: &str) -> Result<String, reqwest::Error> {
    client
        .get(format!("{base_url}/healthz"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await
}

#[tokio::test]
async fn models_and_streamed_chat_over_https() {
    let pki = pki();
    let sim = tls_sim(&pki).await;
    assert_eq!(
        sim.base_url,
        format!("https://localhost:{}", sim.addr.port())
    );
    let client = pki.client();

    let models: Value = client
        .get(format!("{}/models", sim.api_base()))
        .send()
        .await
        .expect("models")
        .json()
        .await
        .expect("models json");
    assert_eq!(models["data"][0]["id"], "sim");

    let events = streamed_answer(&client, &sim.api_base()).await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let tokens: Vec<String> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).expect("chunk json"))
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(String::from)
        })
        .filter(|t| !t.is_empty())
        .collect();
    assert_eq!(tokens.len(), 5, "{events:?}");

    // The certificate's IP SAN works too.
    let by_ip = format!("https://127.0.0.1:{}", sim.addr.port());
    assert_eq!(healthz(&client, &by_ip).await.expect("by ip"), "ok");

    let stats = sim.stats.snapshot();
    assert_eq!(stats.chat_requests, 1);
    tokio::time::timeout(Duration::from_secs(5), sim.shutdown())
        .await
        .expect("shutdown in time")
        .expect("shutdown");
}

#[tokio::test]
async fn client_without_the_ca_gets_a_certificate_error() {
    let pki = pki();
    let sim = tls_sim(&pki).await;
    let stranger = client_with_roots(RootCertStore::empty());
    let err = healthz(&stranger, &sim.base_url)
        .await
        .expect_err("untrusted certificate");
    let chain = error_chain(&err);
    assert!(
        chain.contains("UnknownIssuer") && chain.to_lowercase().contains("certificate"),
        "{chain}"
    );
    // The server is unaffected.
    assert_eq!(
        healthz(&pki.client(), &sim.base_url)
            .await
            .expect("trusted"),
        "ok"
    );
    sim.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn plain_http_to_the_tls_port_fails_cleanly() {
    let pki = pki();
    let sim = tls_sim(&pki).await;
    // (reqwest needs a TLS backend even for http:// URLs; this one is never used.)
    let plain = client_with_roots(RootCertStore::empty());
    let err = healthz(&plain, &format!("http://{}", sim.addr))
        .await
        .expect_err("plain HTTP to a TLS port");
    assert!(!err.is_timeout(), "failed fast: {}", error_chain(&err));

    // A raw socket gets a TLS alert or a close, never an HTTP answer.
    let mut raw = tokio::net::TcpStream::connect(sim.addr)
        .await
        .expect("connect");
    tokio::io::AsyncWriteExt::write_all(&mut raw, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut buf))
        .await
        .expect("closed in time")
        .ok();
    assert!(!buf.starts_with(b"HTTP/"), "{buf:?}");

    // The next TLS client is served.
    let events = streamed_answer(&pki.client(), &sim.api_base()).await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    sim.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_silent_client_neither_blocks_others_nor_stays_forever() {
    let pki = pki();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = tcp.local_addr().expect("addr");
    let listener = TlsListener::new(tcp, pki.server_config())
        .with_handshake_timeout(Duration::from_millis(300));
    let app = ragq_sim::router(SimConfig::fast(), Arc::new(SimStats::default()));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    // Connects and says nothing: the handshake is pending while others are served.
    let mut silent = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let client = pki.client();
    let base = format!("https://localhost:{}", addr.port());
    for _ in 0..3 {
        let served = tokio::time::timeout(Duration::from_secs(2), healthz(&client, &base)).await;
        assert_eq!(served.expect("not blocked").expect("healthz"), "ok");
    }
    // After the handshake timeout the server hangs up on it.
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(3), silent.read(&mut buf))
        .await
        .expect("dropped after the handshake timeout");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    server.abort();
}

#[test]
fn binary_serves_https_with_cert_and_key_files() {
    let pki = pki();
    let dir = std::env::temp_dir().join(format!(
        "ragq-sim-tls-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (cert, key) = (dir.join("server.pem"), dir.join("server-key.pem"));
    std::fs::write(&cert, &pki.cert_pem).expect("cert file");
    std::fs::write(&key, &pki.key_pem).expect("key file");

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ragq-sim"))
        .args(["--addr", "127.0.0.1:0", "--tls-cert"])
        .arg(&cert)
        .env("RAGQ_SIM_TLS_KEY", &key)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn ragq-sim");
    let stdout = child.stdout.take().expect("stdout");
    // "ragq-sim listening on https://127.0.0.1:PORT/v1 (...)"
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(rest) = line.split("listening on ").nth(1) {
                let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
            }
        }
    });
    let url = rx.recv_timeout(Duration::from_secs(20));
    let result = url.map(|url| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let base = url.trim_end_matches("/v1").to_string();
        (
            url,
            rt.block_on(async { healthz(&pki.client(), &base).await }),
        )
    });
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let (url, health) = result.expect("the binary logs its address");
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    assert_eq!(health.expect("healthz over https"), "ok");
}

#[test]
fn binary_rejects_a_cert_without_a_key() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ragq-sim"))
        .args(["--addr", "127.0.0.1:0", "--tls-cert", "/nonexistent.pem"])
        .env_remove("RAGQ_SIM_TLS_KEY")
        .output()
        .expect("run ragq-sim");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--tls-key"), "{stderr}");
}
