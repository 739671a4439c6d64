//! Optional export of traces over OTLP (HTTP, JSON encoding), off unless
//! `--otlp-endpoint` (or `CAIRN_OTLP_ENDPOINT`) names a collector. Spans
//! go out with their fields as attributes: `run` (run id, workflow, mode),
//! `host_call` (run id, seq, kind) and `activity` (run id, handle, name,
//! attempt).

use anyhow::Context;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;

/// Which spans are exported: the host's own, down to each host call.
const EXPORT_FILTER: &str = "cairn_host=debug,cairn=info";

/// The exporting layer, and the provider to flush at exit.
pub fn layer<S>(endpoint: &str) -> anyhow::Result<(impl tracing_subscriber::Layer<S> + 'static, SdkTracerProvider)>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    use tracing_subscriber::Layer as _;
    let base = endpoint.trim_end_matches('/');
    // A bare collector address gets the standard traces path.
    let url = if base.ends_with("/v1/traces") { base.to_owned() } else { format!("{base}/v1/traces") };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpJson)
        .with_endpoint(&url)
        .build()
        .with_context(|| format!("cannot set up the OTLP exporter for {url}"))?;
    let resource = opentelemetry_sdk::Resource::builder().with_service_name("cairn").build();
    let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build();
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("cairn"))
        .with_filter(tracing_subscriber::EnvFilter::new(EXPORT_FILTER));
    Ok((layer, provider))
}
