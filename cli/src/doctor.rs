//! `ragq doctor`: what an operator runs first on a new cluster. Reads the same configuration as
//! the api and the workers, tries each dependency (PostgreSQL, RabbitMQ, Redis) and each model of
//! a tenant with a real, minimal call, and prints one line per check: what works, and for what
//! does not, why — a TLS failure (certificate not trusted, wrong name), authentication refused,
//! a name that does not resolve, a refused connection, a timeout, or the HTTP status.
//!
//! Every check is bounded by a timeout; a failure never stops the later checks.

use std::time::{Duration, Instant};

use futures::StreamExt;
use ragq_common::broker::BrokerKind;
use ragq_common::bus::BusKind;
use ragq_common::bus::redis::endpoint::RedisEndpoint;
use ragq_common::config::{BrokerConfig, BusConfig, DbConfig, NatsConfig};
use ragq_common::tls::TlsRoots;
use sqlx::PgPool;

use ragq_common::model::{ModelKind, Provider};
use ragq_common::secret::SecretKeys;

use ragq_common::providers::{GenConf, Message, ModelSpec, Providers};

/// The outcome of one check.
#[derive(Debug)]
pub struct Check {
    /// What was checked, e.g. `postgres 127.0.0.1:5432/ragq` or `model chat sim (openai)`.
    pub what: String,
    /// `Ok(detail)` or `Err(reason)`.
    pub outcome: Result<String, String>,
}

impl Check {
    pub fn ok(&self) -> bool {
        self.outcome.is_ok()
    }
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.outcome {
            Ok(detail) => write!(f, "ok    {}: {detail}", self.what),
            Err(reason) => write!(f, "FAIL  {}: {reason}", self.what),
        }
    }
}

/// Runs `fut` under `limit`, timing it; the error is explained with [`explain`].
async fn timed<T, E: std::error::Error>(
    limit: Duration,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<(T, Duration), String> {
    let start = Instant::now();
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(v)) => Ok((v, start.elapsed())),
        Ok(Err(e)) => Err(explain(&e)),
        Err(_) => Err(format!(
            "timeout: no answer within {} s",
            limit.as_secs_f32()
        )),
    }
}

/// Names the cause of a failed connection in words an operator can act on, followed by the
/// error chain.
pub fn explain(err: &(dyn std::error::Error + '_)) -> String {
    let mut chain = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + '_)> = Some(err);
    while let Some(e) = cur {
        let text = e.to_string();
        if !chain.iter().any(|c: &String| c.contains(&text)) {
            chain.push(text);
        }
        cur = e.source();
    }
    let all = chain.join(": ");
    let lower = all.to_lowercase();
    let cause = if lower.contains("unknownissuer")
        || lower.contains("invalid peer certificate")
        || lower.contains("certificate")
        || lower.contains("tls")
        || lower.contains("handshake")
    {
        "TLS failure"
    } else if lower.contains("wrongpass")
        || lower.contains("noauth")
        || lower.contains("password authentication failed")
        || lower.contains("access_refused")
        || lower.contains("access refused")
        || lower.contains("authentication")
        || lower.contains("not allowed to access vhost")
        || lower.contains("not_allowed")
    {
        "authentication refused"
    } else if lower.contains("dns error")
        || lower.contains("failed to lookup address")
        || lower.contains("name or service not known")
        || lower.contains("no such host")
    {
        "DNS: the host name does not resolve"
    } else if lower.contains("connection refused") {
        "connection refused (nothing listens there)"
    } else if lower.contains("timed out") || lower.contains("timeout") {
        "timeout"
    } else {
        "error"
    };
    format!("{cause}: {all}")
}

/// `scheme://host:port/path` of a URL, without user, password or query (safe to print).
pub fn redact(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let rest = rest.split(['?', '#']).next().unwrap_or(rest);
    if scheme.is_empty() {
        rest.to_string()
    } else {
        format!("{scheme}://{rest}")
    }
}

/// PostgreSQL, the broker and the bus, as the api and the workers reach them.
pub async fn services(
    db: &DbConfig,
    broker: &BrokerConfig,
    bus: &BusConfig,
    nats: &NatsConfig,
    roots: &TlsRoots,
    limit: Duration,
) -> Vec<Check> {
    let mut checks = Vec::new();

    let pg = timed(limit, async {
        let pool = ragq_common::db::connect(
            &DbConfig {
                url: db.url.clone(),
                max_connections: 1,
            },
            roots,
        )
        .await?;
        let version: String = sqlx::query_scalar("SHOW server_version")
            .fetch_one(&pool)
            .await
            .map_err(ragq_common::db::DbError::Connect)?;
        pool.close().await;
        Ok::<_, ragq_common::db::DbError>(version)
    })
    .await;
    checks.push(Check {
        what: format!("postgres {}", redact(&db.url)),
        outcome: pg.map(|(v, t)| format!("server {v}, answered in {} ms", t.as_millis())),
    });

    let queues = timed(limit, async {
        let mq = ragq_common::broker::connect(broker, nats, "ragq-doctor", roots).await?;
        let mut depths = Vec::new();
        for lane in ragq_common::job::Lane::ALL {
            depths.push(format!("{}={}", lane.as_str(), mq.depth(lane).await?));
        }
        mq.close().await;
        Ok::<_, ragq_common::broker::BrokerError>(depths.join(" "))
    })
    .await;
    let broker_url = match broker.kind {
        BrokerKind::Rabbitmq => &broker.url,
        BrokerKind::Nats => &nats.url,
    };
    checks.push(Check {
        what: format!("{} {}", broker.kind.as_str(), redact(broker_url)),
        outcome: queues.map(|(d, t)| format!("queues declared, depth {d}; {} ms", t.as_millis())),
    });

    match bus.kind {
        BusKind::Redis => {
            let redis = timed(limit, async {
                let endpoint = RedisEndpoint::new(&bus.url, roots)?;
                let pong = endpoint.ping().await?;
                Ok::<_, ragq_common::bus::BusError>((pong, endpoint.is_tls()))
            })
            .await;
            checks.push(Check {
                what: format!("redis {}", redact(&bus.url)),
                outcome: redis.map(|((pong, tls), t)| {
                    format!(
                        "{pong} (RESP2 and RESP3{}), {} ms",
                        if tls { ", TLS" } else { "" },
                        t.as_millis()
                    )
                }),
            });
        }
        BusKind::Nats => {
            let nats_bus = timed(limit, async {
                let bus =
                    ragq_common::bus::connect_ingress(bus, nats, "ragq-doctor", 1, roots).await?;
                Ok::<_, ragq_common::bus::BusError>(bus.control.ping().await)
            })
            .await;
            checks.push(Check {
                what: format!("nats bus {}", redact(&nats.url)),
                outcome: nats_bus.and_then(|(up, t)| {
                    if up {
                        Ok(format!("stream and buckets declared, {} ms", t.as_millis()))
                    } else {
                        Err("the server did not answer a ping".to_string())
                    }
                }),
            });
        }
    }
    checks
}

/// Every model of `tenant` (or of every tenant), each with one real, minimal call: a one-token
/// chat completion, one embedding, a rerank of one document. Keys are decrypted with `keys`; a
/// key that does not decrypt fails its model's check.
pub async fn models(
    db: &PgPool,
    keys: &SecretKeys,
    providers: &Providers,
    http: &reqwest::Client,
    tenant: Option<&str>,
    only: &[String],
    limit: Duration,
) -> Result<Vec<Check>, sqlx::Error> {
    let rows = match tenant {
        Some(t) => ragq_common::models::list(db, t).await?,
        None => ragq_common::models::all(db).await?,
    };
    let mut checks = Vec::new();
    for row in rows
        .into_iter()
        .filter(|r| only.is_empty() || only.contains(&r.name))
    {
        let place = if row.base_url.is_empty() {
            row.provider.clone()
        } else {
            format!("{}, {}", row.provider, redact(&row.base_url))
        };
        let what = format!(
            "model {} `{}` of tenant {} ({place})",
            row.kind, row.name, row.tenant_id
        );
        let outcome = match row.spec(keys) {
            Ok(spec) => model(providers, http, &spec, limit).await,
            Err(e) => Err(format!("configuration: {e}")),
        };
        checks.push(Check { what, outcome });
    }
    Ok(checks)
}

async fn model(
    providers: &Providers,
    http: &reqwest::Client,
    spec: &ModelSpec,
    limit: Duration,
) -> Result<String, String> {
    // First the network path alone (DNS, TCP, TLS), so its failure is named precisely; any
    // HTTP answer at all means the server is reachable.
    if spec.provider != Provider::Local {
        timed(limit, http.get(&spec.base_url).send()).await?;
    }
    let start = Instant::now();
    let call = async {
        match spec.kind {
            ModelKind::Chat => {
                let model = providers.chat(spec)?;
                let conf = GenConf {
                    max_tokens: Some(1),
                    ..GenConf::default()
                };
                let messages = [Message {
                    role: "user",
                    content: "ping".into(),
                }];
                let mut stream = model.stream(&messages, &conf).await?;
                match stream.next().await {
                    Some(Ok(_)) | None => Ok("answered".to_string()),
                    Some(Err(e)) => Err(e),
                }
            }
            ModelKind::Embedding => {
                let v = providers.embedder(spec)?.embed(&["ping".into()]).await?;
                Ok(format!(
                    "embedded ({} dimensions)",
                    v.first().map_or(0, Vec::len)
                ))
            }
            ModelKind::Rerank => {
                providers
                    .reranker(spec)?
                    .rerank("ping", &["ping".into()])
                    .await?;
                Ok("reranked".to_string())
            }
        }
    };
    match tokio::time::timeout(limit, call).await {
        Ok(Ok(detail)) => Ok(format!("{detail} in {} ms", start.elapsed().as_millis())),
        Ok(Err(e)) => Err(match &e {
            ragq_common::providers::ProviderError::Status { status, .. }
                if *status == 401 || *status == 403 =>
            {
                format!(
                    "authentication refused: the provider answered HTTP {status} (check the model's API key)"
                )
            }
            ragq_common::providers::ProviderError::Status { status, .. } => {
                format!("the provider answered HTTP {status}: {}", explain(&e))
            }
            _ => explain(&e),
        }),
        Err(_) => Err(format!(
            "timeout: no answer within {} s",
            limit.as_secs_f32()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_drops_credentials_and_query() {
        assert_eq!(
            redact("postgres://u:secret@db:5432/ragq?sslmode=require"),
            "postgres://db:5432/ragq"
        );
        assert_eq!(redact("rediss://:pw@r:6380/0"), "rediss://r:6380/0");
        assert_eq!(
            redact("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "amqp://127.0.0.1:5672/%2f"
        );
    }

    #[test]
    fn explain_names_the_cause() {
        let e = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        assert!(explain(&e).starts_with("connection refused"));
        let e = std::io::Error::other("invalid peer certificate: UnknownIssuer");
        assert!(explain(&e).starts_with("TLS failure"));
        let e = std::io::Error::other("WRONGPASS invalid username-password pair");
        assert!(explain(&e).starts_with("authentication refused"));
    }
}
