//! `ragq-probe`: measurement probes for ragq's building blocks, each one isolating a single
//! component so the benchmark can tell where time goes:
//!
//! | subcommand  | measures |
//! | ----------- | -------- |
//! | `retrieval` | the worker's retrieval step (`ragq_worker::search`) on a large synthetic dataset ([`retrieval`]) |
//! | `rabbitmq`  | publish-confirm-deliver-ack round trips on a quorum queue ([`rabbitmq`]) |
//! | `redis`     | pub/sub events into one subscriber connection, plain and via ragq's publisher ([`redis_bus`]) |
//! | `nats`      | JetStream publish-PubAck-pull-ack round trips on a work-queue stream ([`nats_broker`]) |
//! | `nats-bus`  | NATS events into one subscriber connection, core and JetStream publishes ([`nats_bus`]) |
//! | `relay`     | worker publish → ingress → SSE read, through the real api ([`relay`]) |
//!
//! And one generator, `bench-corpus`: the deterministic documents and questions
//! `scripts/bench.sh` loads, with their measured keyword selectivity ([`bench_corpus`]).
//!
//! Every probe is bounded (in time or count), talks only to 127.0.0.1 ([`net`]), cleans up what
//! it created (except the retrieval database, which is kept for reuse), prints a short table,
//! and with `--json-out PATH` writes its full result as JSON. Progress goes to stderr.
//! Build in release for numbers that mean anything: `cargo build --release -p ragq-probe`.

mod bench_corpus;
mod corpus;
mod drive;
mod html;
mod nats_broker;
mod nats_bus;
mod net;
mod rabbitmq;
mod redis_bus;
mod relay;
mod retrieval;
mod stamp;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ragq-probe",
    about = "Measurement probes for ragq (127.0.0.1 only)"
)]
struct Cli {
    /// Also write the result as JSON to this file.
    #[arg(long, global = true)]
    json_out: Option<PathBuf>,
    #[command(subcommand)]
    probe: Probe,
}

#[derive(Subcommand)]
enum Probe {
    /// Document parsing time on pathological HTML of 1–10 MiB (linear: constant ms per MiB).
    Html {
        #[arg(long, default_value_t = 10)]
        max_mib: usize,
    },
    /// Latency of the worker's retrieval step on N synthetic chunks (target p99 <= 20 ms at 100k).
    Retrieval {
        /// Chunks in the probe dataset (built once, reused while the count matches).
        #[arg(long, default_value_t = 100_000)]
        chunks: usize,
        /// A dedicated database (its name must contain `probe`; its tables are truncated).
        #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/ragq_probe")]
        database_url: String,
        /// Questions timed per concurrency level.
        #[arg(long, default_value_t = 500)]
        queries: usize,
        /// Concurrency levels, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,8")]
        concurrency: Vec<usize>,
        /// Questions matching no keyword (vector fallback path), timed at concurrency 1.
        #[arg(long, default_value_t = 100)]
        fallback_queries: usize,
        /// Print the full EXPLAIN (ANALYZE, BUFFERS) plans.
        #[arg(long)]
        explain: bool,
        /// Seed of the corpus and the questions.
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// Round trips/s and latency of RabbitMQ with a quorum queue and confirms.
    Rabbitmq {
        #[arg(
            long,
            env = "RAGQ_AMQP_URL",
            default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
        )]
        amqp_url: String,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Messages in flight (publish started, not yet acked); also the consumer's prefetch.
        #[arg(long, default_value_t = 256)]
        inflight: usize,
        #[arg(long, default_value_t = 600)]
        payload_bytes: usize,
        /// Also a paced phase: messages published at this rate per second (evenly spaced), to
        /// compare the broker's CPU per round trip with ragq's at the same rate.
        #[arg(long)]
        rate: Option<f64>,
    },
    /// Redis pub/sub events/s and latency into ONE subscriber connection.
    Redis {
        #[arg(
            long,
            env = "RAGQ_REDIS_URL",
            default_value = "redis://127.0.0.1:6379/"
        )]
        redis_url: String,
        /// Duration of each of the four phases.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 100)]
        channels: usize,
        /// Events in flight in the saturated phases.
        #[arg(long, default_value_t = 256)]
        inflight: usize,
        /// Events per second in the paced phases.
        #[arg(long, default_value_t = 5000)]
        rate: u64,
        #[arg(long, default_value_t = 200)]
        payload_bytes: usize,
    },
    /// Round trips/s and latency of NATS JetStream: work-queue stream, PubAck, pull consumer, ack.
    Nats {
        #[arg(long, env = "RAGQ_NATS_URL", default_value = "nats://127.0.0.1:4222")]
        nats_url: String,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Messages in flight (publish started, not yet acked); also the consumer's pull slots.
        #[arg(long, default_value_t = 64)]
        inflight: usize,
        #[arg(long, default_value_t = 600)]
        payload_bytes: usize,
    },
    /// NATS events/s and latency into ONE subscriber connection (core and JetStream publishes).
    NatsBus {
        #[arg(long, env = "RAGQ_NATS_URL", default_value = "nats://127.0.0.1:4222")]
        nats_url: String,
        /// Duration of each of the four phases.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Job subjects subscribed on the one subscriber connection.
        #[arg(long, default_value_t = 100)]
        subjects: usize,
        /// Events in flight in the saturated phases (and the bound of the paced ones).
        #[arg(long, default_value_t = 256)]
        inflight: usize,
        /// Events per second in the paced phases.
        #[arg(long, default_value_t = 5000)]
        rate: u64,
        #[arg(long, default_value_t = 200)]
        payload_bytes: usize,
        /// Store the replay stream in memory instead of files (ragq's is `file`).
        #[arg(long)]
        memory: bool,
    },
    /// Write the benchmark corpus: documents (OUT/docs), questions (OUT/questions.txt) and
    /// their measured selectivity (OUT/corpus.json); the same seed gives the same bytes.
    BenchCorpus {
        /// Output folder (created; documents named doc-* in OUT/docs are replaced).
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 100)]
        docs: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long, default_value_t = 200)]
        questions: usize,
    },
    /// Worker publish → client read latency through the real ingress (target p99 <= 2 ms at 100 streams).
    Relay {
        #[arg(long, env = "RAGQ_API_URL", default_value = "http://127.0.0.1:9380")]
        url: String,
        #[arg(long, env = "RAGQ_API_KEY")]
        api_key: String,
        /// The tenant that owns the API key (RAGQ_TENANT_ID in .ragq/run.env).
        #[arg(long, env = "RAGQ_TENANT_ID")]
        tenant_id: String,
        /// Any chat id: the resume endpoint checks the job's owner, not the chat.
        #[arg(long, env = "RAGQ_CHAT_ID", default_value = "probe")]
        chat_id: String,
        #[arg(
            long,
            env = "RAGQ_REDIS_URL",
            default_value = "redis://127.0.0.1:6379/"
        )]
        redis_url: String,
        /// Must match the api's RAGQ_CHANNEL_PREFIX.
        #[arg(long, env = "RAGQ_CHANNEL_PREFIX", default_value = "ragq")]
        channel_prefix: String,
        #[arg(long, default_value_t = 100)]
        streams: usize,
        /// Delta events per stream (a `done` follows).
        #[arg(long, default_value_t = 50)]
        events: u64,
        #[arg(long, default_value_t = 20)]
        gap_ms: u64,
    },
}

async fn run(probe: Probe) -> anyhow::Result<serde_json::Value> {
    match probe {
        Probe::Html { max_mib } => html::run(html::Args { max_mib }),
        Probe::BenchCorpus {
            out,
            docs,
            seed,
            questions,
        } => bench_corpus::run(bench_corpus::Args {
            out,
            docs,
            seed,
            questions,
        }),
        Probe::Retrieval {
            chunks,
            database_url,
            queries,
            concurrency,
            fallback_queries,
            explain,
            seed,
        } => {
            retrieval::run(retrieval::Args {
                chunks,
                database_url,
                queries,
                concurrency,
                fallback_queries,
                explain,
                seed,
            })
            .await
        }
        Probe::Rabbitmq {
            amqp_url,
            seconds,
            inflight,
            payload_bytes,
            rate,
        } => {
            rabbitmq::run(rabbitmq::Args {
                amqp_url,
                seconds,
                inflight,
                payload_bytes,
                rate,
            })
            .await
        }
        Probe::Redis {
            redis_url,
            seconds,
            channels,
            inflight,
            rate,
            payload_bytes,
        } => {
            redis_bus::run(redis_bus::Args {
                redis_url,
                seconds,
                channels,
                inflight,
                rate,
                payload_bytes,
            })
            .await
        }
        Probe::Nats {
            nats_url,
            seconds,
            inflight,
            payload_bytes,
        } => {
            nats_broker::run(nats_broker::Args {
                nats_url,
                seconds,
                inflight,
                payload_bytes,
            })
            .await
        }
        Probe::NatsBus {
            nats_url,
            seconds,
            subjects,
            inflight,
            rate,
            payload_bytes,
            memory,
        } => {
            nats_bus::run(nats_bus::Args {
                memory,
                nats_url,
                seconds,
                subjects,
                inflight,
                rate,
                payload_bytes,
            })
            .await
        }
        Probe::Relay {
            url,
            api_key,
            tenant_id,
            chat_id,
            redis_url,
            channel_prefix,
            streams,
            events,
            gap_ms,
        } => {
            relay::run(relay::Args {
                url,
                api_key,
                tenant_id,
                chat_id,
                redis_url,
                channel_prefix,
                streams,
                events,
                gap_ms,
            })
            .await
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let report = match run(cli.probe).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ragq-probe: error: {e:#}");
            return ExitCode::from(1);
        }
    };
    if let Some(path) = cli.json_out {
        let text = serde_json::to_string_pretty(&report).unwrap_or_default() + "\n";
        if let Err(e) = std::fs::write(&path, text) {
            eprintln!("ragq-probe: cannot write {}: {e}", path.display());
            return ExitCode::from(1);
        }
    }
    // A probe that ran but saw failures (e.g. relay streams that errored) reports them in its
    // table and JSON, and exits 2 so scripts notice.
    if report.get("failed").and_then(serde_json::Value::as_bool) == Some(true) {
        return ExitCode::from(2);
    }
    ExitCode::SUCCESS
}
