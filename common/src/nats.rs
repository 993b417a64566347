//! One NATS connection, as the broker and the bus open it: TLS (rustls on ring, public roots
//! plus `RAGQ_EXTRA_CA_FILE`) when the URL says `tls://`, credentials from the URL, and a
//! connection name that shows in the server's `connz`. async-nats reconnects by itself, for
//! ever, with backoff; subscriptions are re-established on the new connection.

use std::time::Duration;

use crate::config::NatsConfig;
use crate::tls::TlsRoots;

#[derive(Debug, thiserror::Error)]
pub enum NatsConnectError {
    #[error("NATS TLS configuration: {0}")]
    Tls(String),
    #[error("cannot connect to NATS: {0}")]
    Connect(String),
}

/// Connects to `cfg.url` (bounded: a server that is not there fails the start, it is not
/// waited for).
pub async fn connect(
    cfg: &NatsConfig,
    name: &str,
    roots: &TlsRoots,
) -> Result<async_nats::Client, NatsConnectError> {
    let mut opts = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .request_timeout(Some(Duration::from_secs(10)))
        .max_reconnects(None)
        // Events for a job are small and many: never let a slow consumer of the client's own
        // buffer drop them silently (the subscriber cuts its slow readers itself).
        .subscription_capacity(65_536)
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Disconnected => tracing::warn!("NATS connection lost"),
                async_nats::Event::Connected => tracing::info!("NATS connected"),
                other => tracing::debug!(event = %other, "NATS event"),
            }
        });
    let (servers, credentials) = split_credentials(&cfg.url)?;
    match credentials {
        Some(Credentials::UserPassword(user, pass)) => opts = opts.user_and_password(user, pass),
        Some(Credentials::Token(token)) => opts = opts.token(token),
        None => {}
    }
    if cfg.url.starts_with("tls://") || roots.has_extra() {
        let tls = roots
            .client_config()
            .map_err(|e| NatsConnectError::Tls(e.to_string()))?;
        opts = opts.tls_client_config(tls);
        if cfg.url.starts_with("tls://") {
            opts = opts.require_tls(true);
        }
    }
    let connect = opts.connect(servers.as_str());
    match tokio::time::timeout(Duration::from_secs(10), connect).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(NatsConnectError::Connect(e.to_string())),
        Err(_) => Err(NatsConnectError::Connect(
            "no answer within 10 s".to_string(),
        )),
    }
}

/// What a NATS URL's `user:pass@` or `token@` says.
#[derive(Debug, PartialEq, Eq)]
enum Credentials {
    UserPassword(String, String),
    Token(String),
}

/// Takes the credentials out of `urls` (one URL, or several separated by commas): async-nats
/// 0.51 does not read them from the URL itself, and the URLs it is given are logged. Returns the
/// URLs without credentials and the first credentials found (percent-decoded).
fn split_credentials(urls: &str) -> Result<(String, Option<Credentials>), NatsConnectError> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let mut found = None;
    let mut clean = Vec::new();
    for part in urls.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let mut url = reqwest::Url::parse(part)
            .map_err(|e| NatsConnectError::Connect(format!("RAGQ_NATS_URL is not a URL: {e}")))?;
        if !url.username().is_empty() && found.is_none() {
            found = Some(match url.password() {
                Some(pass) => Credentials::UserPassword(decode(url.username()), decode(pass)),
                None => Credentials::Token(decode(url.username())),
            });
        }
        // Both setters only fail for URLs that cannot have credentials, which have none.
        let _ = url.set_username("");
        let _ = url.set_password(None);
        clean.push(url.to_string());
    }
    if clean.is_empty() {
        return Err(NatsConnectError::Connect("RAGQ_NATS_URL is empty".into()));
    }
    Ok((clean.join(","), found))
}

/// A stream name from a subject prefix (stream names may not contain `.`, `*`, `>` or spaces).
pub fn stream_name(prefix: &str, what: &str) -> String {
    let clean: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{clean}_{what}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_out_of_the_url() {
        let (urls, creds) = split_credentials("tls://ragq:p%40ss@localhost:4222").unwrap();
        assert_eq!(urls, "tls://localhost:4222");
        assert_eq!(
            creds,
            Some(Credentials::UserPassword("ragq".into(), "p@ss".into()))
        );
        let (urls, creds) = split_credentials("nats://s3cr3t@a:4222, nats://b:4222").unwrap();
        assert_eq!(urls, "nats://a:4222,nats://b:4222");
        assert_eq!(creds, Some(Credentials::Token("s3cr3t".into())));
        let (urls, creds) = split_credentials("nats://127.0.0.1:4222").unwrap();
        assert_eq!((urls.as_str(), creds), ("nats://127.0.0.1:4222", None));
        assert!(split_credentials("not a url").is_err());
        assert!(split_credentials("").is_err());
    }
}
