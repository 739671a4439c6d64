//! The `cairn` binary.

mod cli;

use clap::Parser;
use std::process::ExitCode;

// The host allocates on every host call and commit, from many threads;
// mimalloc does that markedly cheaper than glibc's malloc (see `cairn bench`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::Layer as _;
    let args = cli::Cli::parse();
    // CAIRN_LOG, else RUST_LOG (the same `target=level,…` syntax), else a default.
    let filter = tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_env("RUST_LOG"))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(args.default_log_filter()));
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let (otlp, provider) = match args.otlp_endpoint.as_deref().map(cli::otlp::layer) {
        None => (None, None),
        Some(Ok((layer, provider))) => (Some(layer), Some(provider)),
        Some(Err(e)) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    tracing_subscriber::registry().with(logs.with_filter(filter)).with(otlp).init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(cli::run(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    };
    // Send the spans still batched before exiting.
    if let Some(provider) = provider {
        if let Err(e) = provider.shutdown() {
            eprintln!("warning: exporting the last traces failed: {e}");
        }
    }
    code
}
