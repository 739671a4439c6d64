//! `cairn serve`: the host process.

use super::LimitArgs;
use anyhow::{bail, Context};
use cairn_host::api::{router, AppState, Connections};
use cairn_host::registry::Registry;
use cairn_host::runtime::{Residency, Runtime};
use cairn_host::store::HostIdentity;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Options of `cairn serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The store directory (with --store, where this host caches components
    /// and compiled code).
    #[arg(long, default_value = "cairn-data", env = "CAIRN_DATA")]
    data: PathBuf,
    /// A PostgreSQL database shared with other hosts,
    /// `postgres://USER[:PASSWORD]@HOST:PORT/DB`, instead of the embedded
    /// store in --data.
    #[arg(long, env = "CAIRN_STORE", value_name = "URL")]
    store: Option<String>,
    /// This host's id among the hosts sharing --store (unique; a restarted
    /// host with the same id takes its shards back at once). Default:
    /// HOSTNAME:PORT.
    #[arg(long, env = "CAIRN_HOST_ID")]
    host_id: Option<String>,
    /// How long a shard lease lasts (ms): a host that stops renewing loses
    /// its shards to the others this long after its last renewal.
    #[arg(long, default_value_t = 10_000)]
    lease_ms: u64,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:7233")]
    listen: SocketAddr,
    /// A file holding the bearer token every request must carry.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Listen on a non-loopback address without a token (not recommended).
    #[arg(long)]
    allow_remote_without_token: bool,
    /// Runs blocked this long (ms) leave memory; they are rebuilt by replay
    /// when something concerns them.
    #[arg(long, default_value_t = 1000)]
    idle_ms: u64,
    /// Most runs kept in memory at once.
    #[arg(long, default_value_t = 10_000)]
    resident_cap: usize,
    /// An activity component served by external workers polling the API
    /// (repeat for more): `--external-activity inventory` sends every
    /// `inventory.*` call to them.
    #[arg(long = "external-activity", value_name = "COMPONENT")]
    external_activities: Vec<String>,
    /// A worker that sends nothing (result, failure, heartbeat) for this
    /// long loses its task, which goes to another worker.
    #[arg(long, default_value_t = 10_000)]
    heartbeat_timeout_ms: u64,
    /// Keep finished runs this long (e.g. 30d), unless their workflow sets
    /// its own (`cairn retention`); then delete them with their journals.
    /// Default: keep them forever.
    #[arg(long, value_name = "DURATION")]
    retention: Option<String>,
    /// How often expired runs and unused retired components are deleted.
    #[arg(long, default_value_t = 60_000)]
    retention_sweep_ms: u64,
    /// Most connections open at once; at the cap the one idle the longest
    /// is closed to make room.
    #[arg(long, default_value_t = 1024)]
    max_connections: usize,
    /// A connection that sends no complete request head for this long (s),
    /// idle or sending slowly, is closed.
    #[arg(long, default_value_t = 30)]
    idle_timeout_s: u64,
    #[command(flatten)]
    limits: LimitArgs,
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let default_retention = match &args.retention {
        Some(text) => Some(cairn_host::schedule::parse_duration(text).context("--retention")?),
        None => None,
    };
    let token = match &args.token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --token-file {}", path.display()))?;
            let token = text.trim().to_owned();
            if token.is_empty() {
                bail!("--token-file {} is empty", path.display());
            }
            Some(token)
        }
        None => None,
    };
    if token.is_none() {
        if !args.listen.ip().is_loopback() && !args.allow_remote_without_token {
            bail!(
                "refusing to listen on {} without authentication: pass --token-file FILE, listen on a loopback address, or add --allow-remote-without-token",
                args.listen
            );
        }
        if args.listen.ip().is_loopback() {
            tracing::warn!(listen = %args.listen, "no --token-file: requests are not authenticated; listening on loopback only");
        } else {
            tracing::warn!(listen = %args.listen, "no --token-file and --allow-remote-without-token: ANY client that reaches this address can control every run");
        }
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let store = super::open_store(args.store.as_deref(), &args.data).await?;
    let host = HostIdentity {
        id: args.host_id.clone().unwrap_or_else(|| format!("{}:{}", hostname(), addr.port())),
        address: format!("http://{addr}"),
        lease: Duration::from_millis(args.lease_ms.max(300)),
    };
    let coordinator = store.coordinator(host.clone());
    let residency = Residency { idle: Some(Duration::from_millis(args.idle_ms)), cap: args.resident_cap.max(1) };
    let mut limits = args.limits.limits()?;
    if args.limits.pool_instances.is_none() {
        // Every resident run holds an instance; activities and scratch
        // replays share the rest.
        limits.pool_instances = u32::try_from(residency.cap).unwrap_or(u32::MAX).saturating_add(256);
    }
    let runtime = Runtime::with_residency(store, limits, residency)?;
    runtime
        .activities()
        .external()
        .configure(args.external_activities.iter().cloned(), Duration::from_millis(args.heartbeat_timeout_ms.max(1)));
    let deployed = Registry::new(runtime.clone()).load_all().await?;
    coordinator.start().await.context("cannot take this host's shards")?;
    runtime.coordinate(coordinator.clone());
    // Hosts sharing a store share the token: terminates and upgrades of
    // another host's runs are sent to it.
    runtime.set_peer_token(token.clone());
    let (runs, timers) = runtime.recover().await?;
    // The shards taken at start are resumed too: their takeover ends here.
    coordinator.resumed(&coordinator.owned());
    if runtime.store().shared() {
        // Activity components deployed on other hosts.
        let registry = Registry::new(runtime.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                if let Err(e) = registry.refresh_activities().await {
                    tracing::warn!(error = %e, "could not look for activity components deployed elsewhere");
                }
            }
        });
    }
    tracing::info!(
        data = %args.data.display(),
        host = %host.id,
        shards = coordinator.owned().len(),
        components = deployed,
        runs_recovered = runs,
        timers_rearmed = timers,
        "recovered {runs} unfinished runs and re-armed {timers} timers"
    );
    // Handle SIGTERM from before the listen line, so a supervisor that
    // stops the server the moment it is up still gets a drain.
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    // The first line on stdout says where to connect (scripts read it).
    println!("cairn listening on http://{addr}");
    tracing::info!(%addr, "serving the HTTP API");
    let connections =
        Connections { max: args.max_connections.max(1), idle_timeout: Duration::from_secs(args.idle_timeout_s.max(1)) };
    let state = AppState::new(runtime.clone(), token);
    tokio::spawn(state.schedules().clone().drive());
    let retention = cairn_host::retention::Retention::new(runtime.clone(), default_retention);
    tokio::spawn(retention.drive(Duration::from_millis(args.retention_sweep_ms.max(10))));
    tokio::spawn(runtime.clone().admit_throttled(Duration::from_millis(100)));
    cairn_host::api::serve(listener, router(state), connections, shutdown_signal(term))
        .await
        .context("the HTTP server failed")?;
    // Let journal commits already queued reach the disk before exiting,
    // then hand the shards back so other hosts take them at once.
    runtime.store().commit(Vec::new()).await?;
    coordinator.stop().await;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal(mut term: tokio::signal::unix::Signal) {
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: draining"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupt: draining"),
    }
}

/// This machine's name, for the default host id.
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer and its length are valid; the name is NUL-terminated
    // when it fits, and the end of the buffer is never read past.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) } == 0;
    let end = buf.iter().position(|b| *b == 0).unwrap_or(0);
    match ok && end > 0 {
        true => String::from_utf8_lossy(&buf[..end]).into_owned(),
        false => "cairn".into(),
    }
}
