//! The `cairn` command line.
//!
//! Embedded mode (`run`, `replay`, and `journal --data`): the store is a
//! directory and everything runs in this process. Server mode (`serve`) runs
//! the host with its HTTP API; the client commands talk to it over HTTP.

mod bench;
mod build;
mod client;
mod embedded;
pub mod otlp;
mod schedule;
mod serve;

use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Cairn: durable workflows in WebAssembly.
#[derive(Debug, Parser)]
#[command(name = "cairn", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Export traces to this OpenTelemetry collector (OTLP over HTTP, JSON),
    /// e.g. http://127.0.0.1:4318. Off by default.
    #[arg(long, env = "CAIRN_OTLP_ENDPOINT", global = true)]
    pub otlp_endpoint: Option<String>,
}

/// Limits for guest code.
#[derive(Debug, Args)]
pub struct LimitArgs {
    /// Longest a workflow may compute without calling the host, in ms.
    #[arg(long, default_value_t = 10_000)]
    step_budget_ms: u64,
    /// Memory limit per guest instance, in MiB.
    #[arg(long, default_value_t = 256)]
    max_memory_mib: u64,
    /// Guest instances the pooling allocator keeps slots for (0: allocate
    /// each on demand). Default 1024; `serve` takes --resident-cap + 256.
    #[arg(long)]
    pool_instances: Option<u32>,
    /// An address activities may connect to, HOST:PORT (repeat for more;
    /// names are resolved at start). Without any, activities have no network.
    #[arg(long = "activity-allow", value_name = "HOST:PORT")]
    activity_allow: Vec<String>,
    /// Most signals one run may have buffered (sent and not yet consumed);
    /// more get `429 too-many-signals`.
    #[arg(long, default_value_t = 10_000)]
    max_signals_per_run: u64,
    /// Most MiB of buffered signals over every run; more get
    /// `429 signal-buffer-full`.
    #[arg(long, default_value_t = 256)]
    max_signal_mib: u64,
    /// MiB of linear memory all guest instances together may use; an
    /// instance that would grow past it waits (up to 30 s) for memory to be
    /// freed. Default: half the machine's memory.
    #[arg(long)]
    memory_budget_mib: Option<u64>,
}

/// `cairn db` commands.
#[derive(Debug, Subcommand)]
enum DbCommand {
    /// Create Cairn's tables in a PostgreSQL database (or bring an older
    /// schema up to date) and fix its shard count. Hosts also do this at
    /// start, with 64 shards, when nobody ran it.
    Init {
        /// The database: `postgres://USER[:PASSWORD]@HOST:PORT/DB`.
        #[arg(long, env = "CAIRN_STORE", value_name = "URL")]
        store: String,
        /// How many shards runs are spread over; fixed once chosen. Hosts
        /// share them out, so more shards than hosts, always.
        #[arg(long, default_value_t = cairn_host::store::postgres::DEFAULT_SHARDS)]
        shards: u32,
    },
}

/// Opens the store a command names: the PostgreSQL database at `store`, or
/// else the embedded one in `data`.
pub(crate) async fn open_store(store: Option<&str>, data: &Path) -> anyhow::Result<cairn_host::store::Store> {
    use cairn_host::store::{postgres, Store};
    match store {
        Some(url) if postgres::is_url(url) => {
            let cache = (!data.as_os_str().is_empty()).then(|| data.join("cache"));
            Ok(Store::connect(url, cache).await?)
        }
        Some(other) => anyhow::bail!(
            "--store {other:?} is not a PostgreSQL URL: use postgres://USER@HOST:PORT/DB, or leave --store out for the embedded store in --data"
        ),
        None => Ok(Store::open(data)?),
    }
}

/// Concurrency and rate limits, per key (`cairn concurrency`, `cairn
/// activity-limits`).
#[derive(Debug, Args, Clone)]
pub struct LimitFlags {
    /// The limit of every key that has none of its own.
    #[arg(long)]
    limit: Option<u32>,
    /// The limit of one key, as KEY=N (repeatable).
    #[arg(long = "key", value_name = "KEY=N")]
    keys: Vec<String>,
    /// How fast each key may start: 10/s, 100/min, 5/h.
    #[arg(long)]
    rate: Option<String>,
    /// Most starts at once after a quiet spell (default: the rate's count).
    #[arg(long, requires = "rate")]
    burst: Option<u32>,
    /// The rate of one key, as KEY=RATE (repeatable; its burst is its count).
    #[arg(long = "key-rate", value_name = "KEY=RATE")]
    key_rates: Vec<String>,
    /// Remove every limit (what waits goes).
    #[arg(long, conflicts_with_all = ["limit", "keys", "rate", "key_rates"])]
    clear: bool,
}

impl LimitFlags {
    /// Whether none is given (show the limits instead).
    fn is_empty(&self) -> bool {
        !self.clear && self.limit.is_none() && self.keys.is_empty() && self.rate.is_none() && self.key_rates.is_empty()
    }
}

/// How client commands reach the server.
#[derive(Debug, Args, Clone)]
pub struct ClientArgs {
    /// The server's URL.
    #[arg(long, env = "CAIRN_SERVER", default_value = "http://127.0.0.1:7233", global = true)]
    server: String,
    /// The bearer token, if the server needs one.
    #[arg(long, env = "CAIRN_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Print JSON (for scripts) instead of text.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a workflow to completion in this process and print its result.
    ///
    /// If the process dies mid-run, the same command with the same --data
    /// and --id resumes the run from its journal.
    Run {
        /// The workflow component (.wasm).
        workflow: PathBuf,
        /// An activity component the workflow calls, as NAME=FILE.wasm
        /// (its functions are then `NAME.<function>`). Repeatable.
        #[arg(long = "activity", value_name = "NAME=FILE")]
        activities: Vec<String>,
        /// The input, as JSON text, or @FILE to read it from a file.
        #[arg(long, default_value = "null")]
        input: String,
        /// The store directory.
        #[arg(long, default_value = "cairn-data", env = "CAIRN_DATA")]
        data: PathBuf,
        /// A PostgreSQL store (postgres://USER@HOST:PORT/DB) instead of the
        /// one in --data.
        #[arg(long, env = "CAIRN_STORE", value_name = "URL")]
        store: Option<String>,
        /// The run id; an existing id resumes that run.
        #[arg(long)]
        id: Option<String>,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Re-execute a run from its journal without side effects and check
    /// that the code reproduces it. Exit 0: identical; 3: diverged.
    ///
    /// `cairn replay --all --data DIR` checks every unfinished run.
    /// `cairn replay RUN_ID --data DIR [--with FILE.wasm]` checks a run in a
    /// store; `cairn replay --journal run.json --with FILE.wasm` checks an
    /// exported journal (`cairn journal ID --json > run.json`) offline.
    Replay {
        /// The run id (not with --journal or --all).
        #[arg(required_unless_present_any = ["journal", "all"])]
        run_id: Option<String>,
        /// Replay every unfinished run in the store on this binary: check a
        /// new Cairn release (or new engine settings) before switching to it.
        #[arg(long, conflicts_with_all = ["run_id", "journal", "with"])]
        all: bool,
        /// A journal exported with `cairn journal ID --json`.
        #[arg(long, conflicts_with = "run_id", requires = "with")]
        journal: Option<PathBuf>,
        /// The store directory.
        #[arg(long, default_value = "cairn-data", env = "CAIRN_DATA")]
        data: PathBuf,
        /// Check this component instead of the one the run was started with.
        #[arg(long = "with", value_name = "FILE.wasm")]
        with: Option<PathBuf>,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Build a guest (Rust, Python, JavaScript or C) into a component, check it against
    /// its world, and print the output path.
    Build {
        /// The guest's folder: Cargo.toml (Rust), app.py (Python), package.json (JavaScript),
        /// or app.c or a Makefile (C).
        dir: PathBuf,
        /// Build it as an activity component (detected when not given).
        #[arg(long)]
        activity: bool,
        /// Where to write the component (default DIR/target/cairn/NAME.wasm).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Check a store's integrity: redb's own check, then that every table
    /// agrees with the others. Exit 0 when clean, 1 otherwise.
    Check {
        /// The store directory.
        #[arg(long, default_value = "cairn-data", env = "CAIRN_DATA")]
        data: PathBuf,
        /// Check this PostgreSQL store (postgres://USER@HOST:PORT/DB)
        /// instead, by the same rules.
        #[arg(long, value_name = "URL", conflicts_with = "salvage")]
        store: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Open a store whose write-ahead log is damaged or missing anyway:
        /// keep the log's intact records before the damage (the damaged log
        /// is kept beside it), or start from the last checkpoint when the
        /// log is gone. What is given up is printed.
        #[arg(long)]
        salvage: bool,
    },
    /// Run the benchmark suite and print one table (or --json). Build in
    /// release mode: `cargo run --release -- bench`.
    Bench(bench::BenchArgs),
    /// Run the host: the HTTP API and every run, recovering unfinished
    /// runs from the store at start.
    Serve(serve::ServeArgs),
    /// Set up a PostgreSQL database for several hosts: `cairn db init`.
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
    /// Schedules on a server: runs started by cron, interval or at a time.
    Schedule {
        #[command(subcommand)]
        command: schedule::ScheduleCommand,
    },
    /// Print a run's journal: from the store with --data, else from the server.
    Journal {
        /// The run id.
        run_id: String,
        /// Read this store directly (embedded mode) instead of asking a server.
        #[arg(long)]
        data: Option<PathBuf>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Deploy a workflow (or with --activity, an activity component).
    Deploy {
        /// The name to deploy it under.
        name: String,
        /// The component (.wasm).
        file: PathBuf,
        /// It is an activity component.
        #[arg(long)]
        activity: bool,
        /// `compatible`: move every live run of older versions that replays
        /// cleanly on the new version to it.
        #[arg(long, value_parser = ["compatible", "none"])]
        upgrade: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List a workflow's versions with their runs.
    Versions {
        /// The workflow.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Make an existing version current (new runs start on it).
    Rollback {
        /// The workflow.
        name: String,
        /// The version.
        #[arg(long)]
        to: u32,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Remove a version that no live run uses.
    Retire {
        /// The workflow.
        name: String,
        /// The version.
        version: u32,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Move runs to another version, each only if its journal replays
    /// cleanly on it. Exit 3 if any run was refused.
    Upgrade {
        /// One run to upgrade.
        #[arg(required_unless_present = "workflow")]
        run_id: Option<String>,
        /// Upgrade every live run of this workflow on --from.
        #[arg(long, conflicts_with = "run_id", requires = "from")]
        workflow: Option<String>,
        /// The version the runs are on (with --workflow).
        #[arg(long)]
        from: Option<u32>,
        /// The version to move to.
        #[arg(long)]
        to: u32,
        /// Verify and report; move nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Start a run of a deployed workflow.
    Start {
        /// The workflow name.
        workflow: String,
        /// Run id; starting an existing id returns that run.
        #[arg(long)]
        id: Option<String>,
        /// The input, as JSON text, or @FILE.
        #[arg(long, default_value = "null")]
        input: String,
        /// Wait for the run to end and print its result.
        #[arg(long)]
        wait: bool,
        /// The run's concurrency key: with a limit on the workflow, at most
        /// that many runs of the key run at once; the rest are queued.
        #[arg(long)]
        concurrency_key: Option<String>,
        /// 1 (first) to 5 (last) among queued runs; default 3.
        #[arg(long)]
        priority: Option<u8>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show a run's status.
    Status {
        /// The run id.
        run_id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print a run's result (exit 1 if it failed).
    Result {
        /// The run id.
        run_id: String,
        /// Wait until the run ends.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List runs.
    List {
        /// Only runs of this workflow.
        #[arg(long)]
        workflow: Option<String>,
        /// Only runs with this status (running, queued, paused, completed, failed, diverged, terminated).
        #[arg(long)]
        status: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// A filter on the runs' fields and search attributes, e.g.
        /// 'workflow = "order" and status = "running" and amount > 1000'.
        #[arg(long)]
        query: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Signal, cancel, terminate, delete or upgrade every run a query
    /// matches (at most 10,000), run by run; --dry-run lists them only.
    Batch {
        /// signal, cancel, terminate, delete or upgrade.
        operation: String,
        /// Which runs (as `cairn list --query`).
        #[arg(long)]
        query: String,
        /// List the runs it would touch, and touch none.
        #[arg(long)]
        dry_run: bool,
        /// For signal: its name.
        #[arg(long)]
        signal: Option<String>,
        /// For signal: its payload (JSON, or @FILE).
        #[arg(long, default_value = "null")]
        payload: String,
        /// For terminate: why.
        #[arg(long)]
        reason: Option<String>,
        /// For upgrade: the version.
        #[arg(long)]
        to: Option<u32>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Send a signal to a run.
    Signal {
        /// The run id.
        run_id: String,
        /// The signal name.
        name: String,
        /// The JSON payload.
        #[arg(long, default_value = "null")]
        payload: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Send an update to a run and print the handler's result once it is
    /// journaled. Its validator may reject it (exit 1, nothing recorded).
    /// With --start, the run is started first if it does not exist
    /// (update-with-start: "get or create a session").
    Update {
        /// The run id.
        run_id: String,
        /// The update's name.
        name: String,
        /// Its JSON arguments, or @FILE.
        #[arg(default_value = "null")]
        args: String,
        /// The update's id: sending it again returns the same result
        /// instead of updating twice (default: a fresh one).
        #[arg(long = "id")]
        update_id: Option<String>,
        /// Update-with-start: the workflow to start under RUN_ID if no run
        /// has that id yet.
        #[arg(long)]
        start: Option<String>,
        /// With --start: the new run's input (JSON, or @FILE).
        #[arg(long, default_value = "null", requires = "start")]
        input: String,
        /// Seconds to wait for the handler's result (at most 60).
        #[arg(long, default_value_t = 60.0)]
        wait: f64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Ask a running run a query; answered from its current state by
    /// replay, writing nothing.
    Query {
        /// The run id.
        run_id: String,
        /// The query's name.
        name: String,
        /// Its JSON arguments, or @FILE.
        #[arg(default_value = "null")]
        args: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Cancel a run: its current (or next) await fails with `cancelled`.
    Cancel {
        /// The run id.
        run_id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Terminate a run at once.
    Terminate {
        /// The run id.
        run_id: String,
        /// Why (recorded in the journal).
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Pause a run: it takes no steps until resumed. Timers that fire and
    /// signals that arrive meanwhile are kept for it.
    Pause {
        /// The run id.
        run_id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Resume a paused run.
    Resume {
        /// The run id.
        run_id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Start a new run from a run's journal up to a seq, on a version
    /// (default: the current one) that is first verified by replay to
    /// reproduce those entries. The original, if live, is terminated.
    /// Exit 3 if the version diverges (nothing is written then).
    Reset {
        /// The run id.
        run_id: String,
        /// The new run keeps the entries before this seq (see `cairn
        /// journal RUN_ID`) and goes live from there.
        #[arg(long)]
        to: u64,
        /// The version to go on with (default: the workflow's current one).
        #[arg(long)]
        version: Option<u32>,
        /// The new run's id (default RUN_ID-reset-SEQ).
        #[arg(long)]
        id: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show or set a workflow's concurrency limits: at most N runs of one
    /// concurrency key at once (runs started without a key share one); the
    /// rest wait, `queued`, by priority then age.
    Concurrency {
        /// The workflow.
        name: String,
        #[command(flatten)]
        limits: LimitFlags,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show or set an activity's limits: attempts in flight at once and
    /// started per time, per key taken from each call's input, across every
    /// host. NAME is COMPONENT.FUNCTION, or COMPONENT for all its functions
    /// without limits of their own.
    ActivityLimits {
        /// The activity.
        name: String,
        /// Where in the input the key is, as a JSON pointer (`/customer`);
        /// calls without one share the key "".
        #[arg(long = "key-from", value_name = "POINTER")]
        key_from: Option<String>,
        #[command(flatten)]
        limits: LimitFlags,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a finished run with its journal and history.
    Delete {
        /// The run id.
        run_id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show or set how long a workflow's finished runs are kept before they
    /// are deleted.
    Retention {
        /// The workflow.
        name: String,
        /// A duration (30d, 12h), or `default` for the server's --retention.
        /// Without it, prints the workflow's retention.
        period: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

impl LimitArgs {
    /// The default limits.
    pub fn defaults() -> cairn_host::sandbox::Limits {
        cairn_host::sandbox::Limits::default()
    }
}

impl Cli {
    /// The log filter when `CAIRN_LOG` is not set: the server reports what
    /// it does; one-shot commands only warn.
    pub fn default_log_filter(&self) -> &'static str {
        match self.command {
            Command::Serve(_) => "info",
            _ => "warn,cairn::guest=info",
        }
    }
}

/// Runs a parsed command.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run { workflow, activities, input, data, store, id, limits } => {
            embedded::run(&workflow, &activities, &input, &data, store.as_deref(), id, &limits).await
        }
        Command::Replay { run_id: Some(run_id), data, with, limits, .. } => {
            embedded::replay(&run_id, &data, with.as_deref(), &limits).await
        }
        Command::Replay { all: true, data, limits, .. } => embedded::replay_all(&data, &limits).await,
        Command::Replay { journal: Some(journal), with: Some(with), limits, .. } => {
            embedded::replay_file(&journal, &with, &limits).await
        }
        Command::Replay { .. } => anyhow::bail!("give a RUN_ID, or --journal FILE --with FILE.wasm"),
        Command::Serve(args) => serve::serve(args).await,
        Command::Bench(args) => bench::bench(args).await,
        Command::Check { store: Some(url), json, .. } => embedded::check_shared(&url, json).await,
        Command::Check { data, json, salvage, store: None } => embedded::check(&data, json, salvage).await,
        Command::Db { command: DbCommand::Init { store, shards } } => {
            if !cairn_host::store::postgres::is_url(&store) {
                anyhow::bail!("--store {store:?} is not a PostgreSQL URL: use postgres://USER@HOST:PORT/DB");
            }
            let shards = cairn_host::store::postgres::init(&store, shards).await?;
            println!("{}: ready, {shards} shards", cairn_host::store::postgres::redacted(&store));
            Ok(ExitCode::SUCCESS)
        }
        Command::Schedule { command } => schedule::run(command).await,
        Command::Build { dir, activity, out } => build::build(&dir, activity.then_some(true), out).await,
        Command::Journal { run_id, data: Some(data), client } => embedded::journal(&run_id, &data, client.json).await,
        Command::Journal { run_id, data: None, client } => client::journal(&client, &run_id).await,
        Command::Deploy { name, file, activity, upgrade, client } => {
            client::deploy(&client, &name, &file, activity, upgrade.as_deref()).await
        }
        Command::Versions { name, client } => client::versions(&client, &name).await,
        Command::Rollback { name, to, client } => client::rollback(&client, &name, to).await,
        Command::Retire { name, version, client } => client::retire(&client, &name, version).await,
        Command::Upgrade { run_id, workflow, from, to, dry_run, client } => {
            client::upgrade(&client, run_id.as_deref(), workflow.as_deref(), from, to, dry_run).await
        }
        Command::Start { workflow, id, input, wait, concurrency_key, priority, client } => {
            client::start(&client, &workflow, id, &input, wait, (concurrency_key, priority)).await
        }
        Command::Concurrency { name, limits, client } => client::concurrency(&client, &name, &limits).await,
        Command::ActivityLimits { name, key_from, limits, client } => {
            client::activity_limits(&client, &name, key_from, &limits).await
        }
        Command::Status { run_id, client } => client::status(&client, &run_id).await,
        Command::Result { run_id, wait, client } => client::result(&client, &run_id, wait).await,
        Command::List { workflow, status, limit, query, client } => {
            client::list(&client, workflow, status, limit, query).await
        }
        Command::Batch { operation, query, dry_run, signal, payload, reason, to, client } => {
            let payload = read_json_arg("--payload", &payload)?;
            client::batch(&client, &operation, &query, dry_run, (signal, payload), reason, to).await
        }
        Command::Signal { run_id, name, payload, client } => client::signal(&client, &run_id, &name, &payload).await,
        Command::Update { run_id, name, args, update_id, start, input, wait, client } => {
            let start = start.map(|workflow| (workflow, input));
            client::update(&client, &run_id, &name, &args, update_id, start, wait).await
        }
        Command::Query { run_id, name, args, client } => client::query(&client, &run_id, &name, &args).await,
        Command::Cancel { run_id, client } => client::cancel(&client, &run_id).await,
        Command::Terminate { run_id, reason, client } => client::terminate(&client, &run_id, reason).await,
        Command::Reset { run_id, to, version, id, client } => client::reset(&client, &run_id, to, version, id).await,
        Command::Delete { run_id, client } => client::delete(&client, &run_id).await,
        Command::Retention { name, period, client } => client::retention(&client, &name, period.as_deref()).await,
        Command::Pause { run_id, client } => client::pause_or_resume(&client, &run_id, "pause").await,
        Command::Resume { run_id, client } => client::pause_or_resume(&client, &run_id, "resume").await,
    }
}

/// Reads `--input`-style text: JSON, or @FILE.
pub(crate) fn read_json_arg(flag: &str, text: &str) -> anyhow::Result<String> {
    use anyhow::Context;
    let text = match text.strip_prefix('@') {
        Some(file) => std::fs::read_to_string(file).with_context(|| format!("cannot read {flag} file {file}"))?,
        None => text.to_owned(),
    };
    let limit = cairn_host::journal::MAX_PAYLOAD_BYTES;
    if text.trim().len() > limit {
        anyhow::bail!(
            "{flag} is {} bytes, over the limit of {limit} bytes (4 MiB) for one journaled payload; store big data elsewhere and pass a reference",
            text.trim().len()
        );
    }
    cairn_host::journal::check_json(&text).with_context(|| {
        let shown: String = text.chars().take(200).collect();
        let more = if shown.len() < text.len() { "…" } else { "" };
        format!("{flag} is not valid JSON: {shown:?}{more}")
    })?;
    Ok(text.trim().to_owned())
}
