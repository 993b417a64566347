//! ragq on a NATS that wants TLS and credentials, as a managed one does: the test's own
//! nats-server (JetStream, `--tls` with a certificate from a test CA, a user and password) on a
//! free port. Through it, as broker and bus: a streamed answer and its resume from the replay
//! stream, every connection over TLS (rustls on ring, the CA from `RAGQ_EXTRA_CA_FILE`). A wrong
//! password stops the api at start with a clear message that does not print the password.

use std::process::Child;

use ragq_common::broker::BrokerKind;
use ragq_common::bus::BusKind;
use ragq_tests::tls::TestCa;
use ragq_tests::{EnvOptions, TestEnv, parse_sse};

const QUESTION: &str = "What is the delivery limit of the job queue?";

/// A TLS nats-server of the test's own; killed (and its store removed) when dropped.
struct OwnNats {
    child: Child,
    port: u16,
    store: std::path::PathBuf,
}

impl OwnNats {
    fn start(ca: &TestCa) -> OwnNats {
        let cert = ca.server_cert(&["localhost", "127.0.0.1"]);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let store =
            std::env::temp_dir().join(format!("ragq-nats-tls-{}", uuid::Uuid::new_v4().simple()));
        let tls: [&std::ffi::OsStr; 9] = [
            "--tls".as_ref(),
            "--tlscert".as_ref(),
            cert.cert_path.as_os_str(),
            "--tlskey".as_ref(),
            cert.key_path.as_os_str(),
            "--user".as_ref(),
            "ragq".as_ref(),
            "--pass".as_ref(),
            "s3cret-nats".as_ref(),
        ];
        let child = ragq_tests::start_nats_server(port, &store, tls);
        OwnNats { child, port, store }
    }
}

impl Drop for OwnNats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_with_tls_and_a_password() {
    let ca = TestCa::new();
    let nats = OwnNats::start(&ca);
    let env = TestEnv::start(EnvOptions {
        nats_url: Some(format!("tls://ragq:s3cret-nats@localhost:{}", nats.port)),
        broker: Some(BrokerKind::Nats),
        bus: Some(BusKind::Nats),
        extra_ca_file: Some(ca.ca_path().to_path_buf()),
        ..EnvOptions::default()
    })
    .await;
    let session = env.create_session(&env.chat_id).await;
    let resp = env.start_stream(&env.chat_id, &session, QUESTION).await;
    let job = resp.headers()["x-ragq-job-id"]
        .to_str()
        .expect("job id")
        .to_string();
    let events = parse_sse(&resp.text().await.expect("body"));
    let answer = |events: &[serde_json::Value]| {
        events
            .iter()
            .rev()
            .find_map(|e| e["data"]["answer"].as_str().map(str::to_string))
            .unwrap_or_default()
    };
    let first = answer(&events);
    assert!(first.contains("five attempts"), "{events:?}");
    // The replay stream and the owner record live on the same server, behind the same TLS.
    let resumed = env.resume(&env.chat_id, &job).await;
    assert_eq!(answer(&resumed), first);
    println!(
        "NATS over TLS with a password: answered and resumed ({} events)",
        events.len()
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_nats_password_is_a_clear_start_up_error() {
    let ca = TestCa::new();
    let nats = OwnNats::start(&ca);
    let env = TestEnv::start(EnvOptions::default()).await;
    let nats_url = format!("tls://ragq:wrong-pw@localhost:{}", nats.port);
    let stderr = ragq_tests::api_start_failure(
        &env.db_name,
        [
            "--broker".as_ref(),
            "nats".as_ref(),
            "--bus".as_ref(),
            "nats".as_ref(),
            "--nats-url".as_ref(),
            nats_url.as_ref(),
            "--extra-ca-file".as_ref(),
            ca.ca_path().as_os_str(),
        ] as [&std::ffi::OsStr; 8],
    );
    println!("wrong NATS password: {}", stderr.trim());
    assert!(
        stderr.to_lowercase().contains("authorization"),
        "the error names the authentication failure: {stderr}"
    );
    assert!(
        !stderr.contains("wrong-pw"),
        "the password is not printed: {stderr}"
    );
    env.stop().await;
}
