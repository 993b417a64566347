//! Logging and span export: `tracing` to stderr, filtered by `RUST_LOG` (default `info`), JSON
//! when `RAGQ_LOG_JSON=1`; and, in a build with the `otlp` cargo feature, the same spans sent to
//! an OpenTelemetry collector over OTLP/HTTP (protobuf) when `OTEL_EXPORTER_OTLP_ENDPOINT` is set
//! (the standard OpenTelemetry variables apply: `OTEL_SERVICE_NAME`, `OTEL_EXPORTER_OTLP_HEADERS`,
//! …). The worker's job span takes the job's W3C trace context as its remote parent
//! ([`set_remote_parent`]), so the ingress's trace continues across the queue; the spans inside
//! follow the OpenTelemetry GenAI names (`retrieval`, `chat {model}` with `gen_ai.*`).

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::trace::TraceParent;

/// Keeps the span exporter alive; dropping it flushes the spans still buffered.
#[must_use = "dropping the guard stops the span export"]
pub struct Telemetry {
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        #[cfg(feature = "otlp")]
        if let Some(p) = self.provider.take() {
            let _ = p.shutdown();
        }
    }
}

/// Installs the global subscriber for a process without span export (the CLI); a second call is
/// a no-op.
pub fn init() {
    drop(init_service("ragq"));
}

/// Installs the global subscriber of `service` (`ragq-api`, `ragq-worker`): logs, and spans to
/// OTLP when built with `otlp` and `OTEL_EXPORTER_OTLP_ENDPOINT` is set. Keep the guard for the
/// life of the process.
pub fn init_service(service: &'static str) -> Telemetry {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,lapin=warn,async_nats=warn"));
    let json = std::env::var("RAGQ_LOG_JSON").is_ok_and(|v| v == "1");
    let text_logs = (!json).then(|| tracing_subscriber::fmt::layer().with_writer(std::io::stderr));
    let json_logs = json.then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
    });
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(text_logs)
        .with(json_logs);
    #[cfg(feature = "otlp")]
    {
        let provider = otlp::provider(service);
        let layer = provider.as_ref().map(|p| {
            use opentelemetry::trace::TracerProvider as _;
            tracing_opentelemetry::layer().with_tracer(p.tracer(service))
        });
        let _ = registry.with(layer).try_init();
        Telemetry { provider }
    }
    #[cfg(not(feature = "otlp"))]
    {
        let _ = registry.try_init();
        if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some() {
            tracing::warn!(
                service,
                "OTEL_EXPORTER_OTLP_ENDPOINT is set but this build has no `otlp` feature: spans are not exported"
            );
        }
        Telemetry {}
    }
}

/// Makes `parent` (a job's `traceparent`) the remote parent of `span`, so exported spans join the
/// caller's trace. Without the `otlp` feature the trace id is only logged.
pub fn set_remote_parent(span: &tracing::Span, parent: &TraceParent) {
    #[cfg(feature = "otlp")]
    otlp::set_remote_parent(span, parent);
    #[cfg(not(feature = "otlp"))]
    let _ = (span, parent);
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(feature = "otlp")]
mod otlp {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    use crate::trace::TraceParent;

    /// The tracer provider, when an endpoint is configured.
    pub(super) fn provider(service: &'static str) -> Option<SdkTracerProvider> {
        std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
            .ok()
            .filter(|v| !v.trim().is_empty())?;
        let exporter = match opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
        {
            Ok(e) => e,
            Err(e) => {
                eprintln!("OTLP span export is off: {e}");
                return None;
            }
        };
        let name = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| service.to_string());
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(name)
            .build();
        Some(
            SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(resource)
                .build(),
        )
    }

    pub(super) fn context_of(parent: &TraceParent) -> opentelemetry::Context {
        let sc = SpanContext::new(
            TraceId::from_bytes(parent.trace_id),
            SpanId::from_bytes(parent.span_id),
            TraceFlags::new(parent.flags),
            true,
            TraceState::default(),
        );
        opentelemetry::Context::new().with_remote_span_context(sc)
    }

    pub(super) fn set_remote_parent(span: &tracing::Span, parent: &TraceParent) {
        let _ = span.set_parent(context_of(parent));
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use opentelemetry::trace::TracerProvider as _;
        use opentelemetry_sdk::trace::InMemorySpanExporter;
        use tracing_subscriber::layer::SubscriberExt;

        #[test]
        fn a_job_span_continues_the_callers_trace() {
            let exporter = InMemorySpanExporter::default();
            let provider = SdkTracerProvider::builder()
                .with_simple_exporter(exporter.clone())
                .build();
            let subscriber = tracing_subscriber::registry()
                .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
            let parent =
                TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
                    .expect("traceparent");
            tracing::subscriber::with_default(subscriber, || {
                let span = tracing::info_span!("job", otel.name = "job");
                set_remote_parent(&span, &parent);
                let _in = span.enter();
                tracing::info_span!("chat m", otel.name = "chat m", gen_ai.request.model = "m")
                    .in_scope(|| {});
            });
            let _ = provider.force_flush();
            let spans = exporter.get_finished_spans().expect("spans");
            assert_eq!(spans.len(), 2, "{spans:?}");
            for s in &spans {
                assert_eq!(
                    s.span_context.trace_id(),
                    TraceId::from_bytes(parent.trace_id)
                );
            }
            let job = spans.iter().find(|s| s.name == "job").expect("job span");
            assert_eq!(job.parent_span_id, SpanId::from_bytes(parent.span_id));
            let chat = spans
                .iter()
                .find(|s| s.name == "chat m")
                .expect("chat span");
            assert_eq!(chat.parent_span_id, job.span_context.span_id());
        }
    }
}
