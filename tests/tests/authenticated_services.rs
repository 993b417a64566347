//! ragq against services that want credentials, as managed ones do: a Redis with a password, a
//! Redis ACL user, and a RabbitMQ user with its own vhost. Each test starts (or creates) what it
//! needs and removes it afterwards. Through each: a streamed answer, its resume from the replay
//! stream, and a stop — the publisher, the subscriber and the control connections all
//! authenticate. A wrong password stops the api at start with a clear message.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ragq_tests::{EnvOptions, TestEnv, parse_sse};
use serde_json::{Value, json};

const QUESTION: &str = "What is the delivery limit of the job queue?";

/// A `redis-server` of the test's own on a free port; killed when dropped.
struct OwnRedis {
    child: Child,
    port: u16,
}

impl OwnRedis {
    fn start(args: &[&str]) -> OwnRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .args(args)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server starts (scripts/test.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        OwnRedis { child, port }
    }

    /// `redis-cli` against this server, authenticated as `auth` (`-a` argument).
    fn cli(&self, auth: &str, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "--no-auth-warning",
            ])
            .args(["-a", auth])
            .args(args)
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Streams an answer, resumes it from the replay stream, and stops a slow one.
async fn answer_resume_and_stop(env: &TestEnv) {
    // A full streamed answer.
    let session = env.create_session(&env.chat_id).await;
    let resp = env.start_stream(&env.chat_id, &session, QUESTION).await;
    let job_id = resp.headers()["x-ragq-job-id"]
        .to_str()
        .unwrap()
        .to_string();
    let original = parse_sse(&resp.text().await.unwrap());
    let n = original.len();
    assert_eq!(original[n - 1], json!({"code": 0, "data": true}));
    let answer = original[n - 2]["data"]["answer"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(answer.contains("five attempts"), "{answer}");

    // Its resume, from the replay stream.
    let resumed = env.resume(&env.chat_id, &job_id).await;
    assert_eq!(resumed[resumed.len() - 2]["data"]["answer"], answer);

    // Stop: a slow answer ends at once, the model's stream is dropped.
    let slow = env.chat_with_model("slow", "sim-long").await;
    let session = env.create_session(&slow).await;
    let mut resp = env.start_stream(&slow, &session, QUESTION).await;
    let job_id = resp.headers()["x-ragq-job-id"]
        .to_str()
        .unwrap()
        .to_string();
    let mut seen = String::new();
    while !seen.contains("\"answer\": \"") || seen.contains("\"answer\": \"\"") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
            .await
            .expect("first text")
            .unwrap()
            .expect("stream open");
        seen = String::from_utf8_lossy(&chunk).into_owned();
    }
    let stop: Value = env
        .http
        .post(format!(
            "{}/api/v1/chats/{slow}/completions/{job_id}/stop",
            env.url
        ))
        .header("Authorization", env.auth())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stop, json!({"code": 0, "data": true}));
    let started = Instant::now();
    let rest = tokio::time::timeout(Duration::from_secs(5), resp.text())
        .await
        .expect("the stopped stream ends")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(3));
    let events = parse_sse(&rest);
    assert_eq!(events.last(), Some(&json!({"code": 0, "data": true})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_with_a_password_and_with_an_acl_user() {
    let redis = OwnRedis::start(&["--requirepass", "s3cret-pw"]);
    // An ACL user with only what ragq needs: the keys and channels under its prefix (the test
    // environments use `test.{id}`), no dangerous commands but CLIENT (to name its connection).
    assert_eq!(
        redis.cli(
            "s3cret-pw",
            &[
                "ACL",
                "SETUSER",
                "ragq",
                "on",
                ">ragq-pw",
                "~test.*",
                "&test.*",
                "+@all",
                "-@dangerous",
                "+client",
            ]
        ),
        "OK"
    );

    for url in [
        format!("redis://:s3cret-pw@127.0.0.1:{}/", redis.port),
        format!("redis://ragq:ragq-pw@127.0.0.1:{}/", redis.port),
    ] {
        let env = TestEnv::start(EnvOptions {
            redis_url: Some(url.clone()),
            ..EnvOptions::default()
        })
        .await;
        answer_resume_and_stop(&env).await;
        // The one subscriber connection is on this server, authenticated.
        let name = env.subscriber.connection_name().to_string();
        let clients = env.redis_clients_named(&name).await;
        assert_eq!(clients.len(), 1, "{clients:?}");
        if url.contains("ragq:") {
            assert!(clients[0].contains("user=ragq"), "{}", clients[0]);
        }
        env.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_redis_password_is_a_clear_start_up_error() {
    let redis = OwnRedis::start(&["--requirepass", "right"]);
    let env = TestEnv::start(EnvOptions::default()).await;
    let redis_url = format!("redis://:wrong@127.0.0.1:{}/", redis.port);
    let stderr = ragq_tests::api_start_failure(&env.db_name, ["--redis-url", &redis_url]);
    assert!(
        stderr.contains("WRONGPASS") || stderr.to_lowercase().contains("auth"),
        "the error names the authentication failure: {stderr}"
    );
    assert!(
        !stderr.contains(":wrong@"),
        "the password is not printed: {stderr}"
    );
    env.stop().await;
}

fn rabbitmqctl(args: &[&str]) {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl runs");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_with_its_own_user_and_vhost() {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (vhost, user) = (format!("ragq_test_{id}"), format!("ragq_{}", &id[..12]));
    rabbitmqctl(&["add_vhost", &vhost]);
    rabbitmqctl(&["add_user", &user, "amqp-pw"]);
    rabbitmqctl(&["set_permissions", "-p", &vhost, &user, ".*", ".*", ".*"]);
    let env = TestEnv::start(EnvOptions {
        amqp_url: Some(format!("amqp://{user}:amqp-pw@127.0.0.1:5672/{vhost}")),
        ..EnvOptions::default()
    })
    .await;
    answer_resume_and_stop(&env).await;
    // The queues live in the vhost.
    let out = Command::new("rabbitmqctl")
        .args(["list_queues", "-p", &vhost, "name", "-q"])
        .output()
        .expect("rabbitmqctl");
    let queues = String::from_utf8_lossy(&out.stdout);
    assert!(
        queues.contains(&format!("{}.jobs.interactive", env.queue_prefix)),
        "{queues}"
    );
    env.stop().await;
    rabbitmqctl(&["delete_user", &user]);
    rabbitmqctl(&["delete_vhost", &vhost]);
}
