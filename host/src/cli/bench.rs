//! `cairn bench`: the benchmark suite. Every row runs on a fresh store in a
//! temporary directory, durable (fsync on) unless the row says otherwise.
//! Run it from a release build: `cargo run --release -- bench`.

use anyhow::{bail, Context};
use cairn_host::runtime::{Residency, Runtime, StartRequest};
use cairn_host::sandbox::{Limits, LoadedComponent};
use cairn_host::store::Store;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Options of `cairn bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Run every row at a tenth of its size (a smoke test).
    #[arg(long)]
    quick: bool,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Where the built guests are (default: build examples/ and use its output).
    #[arg(long)]
    guests: Option<PathBuf>,
    /// Run only these rows (comma-separated): w10, http, full, latency,
    /// step, replay, instantiate, parked, cold, languages. Handy under a
    /// profiler.
    #[arg(long, value_delimiter = ',', value_parser = ["w10", "http", "full", "latency", "step", "replay", "instantiate", "parked", "cold", "languages", "pg"])]
    only: Vec<String>,
    /// Also measure on PostgreSQL: a server where this user may create
    /// databases (postgres://USER@HOST:PORT/DB); each row gets a database
    /// of its own, dropped after it.
    #[arg(long, value_name = "URL")]
    postgres: Option<String>,
}

struct Row {
    name: &'static str,
    figure: f64,
    unit: &'static str,
    settings: String,
}

struct Guests {
    bench: Vec<u8>,
    noop: Vec<u8>,
}

fn guests(args: &BenchArgs) -> anyhow::Result<Guests> {
    let dir = match &args.guests {
        Some(dir) => dir.clone(),
        None => {
            let examples = Path::new("examples");
            if !examples.join("Cargo.toml").is_file() {
                bail!(
                    "run `cairn bench` from the repository root, or pass --guests DIR holding bench.wasm and noop.wasm"
                );
            }
            let status = Command::new("cargo")
                .current_dir(examples)
                .args(["build", "--release", "--quiet", "-p", "bench", "-p", "noop"])
                .status()
                .context("cannot run cargo to build the benchmark guests")?;
            if !status.success() {
                bail!("building the benchmark guests failed (is `rustup target add wasm32-wasip2` done?)");
            }
            examples.join("target/wasm32-wasip2/release")
        }
    };
    let read =
        |name: &str| std::fs::read(dir.join(name)).with_context(|| format!("cannot read {}", dir.join(name).display()));
    Ok(Guests { bench: read("bench.wasm")?, noop: read("noop.wasm")? })
}

/// An embedded runtime on a scratch store with the benchmark guests loaded.
async fn embedded(
    guests: &Guests,
    durable: bool,
    residency: Residency,
) -> anyhow::Result<(Runtime, LoadedComponent, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    let store = Store::open_with(dir.path(), durable)?;
    let rt = Runtime::with_residency(store, Limits::default(), residency)?;
    let noop = rt.components().load_bytes("noop", guests.noop.clone()).await?;
    rt.activities().register("noop", &noop)?;
    let bench = rt.components().load_bytes("bench", guests.bench.clone()).await?;
    Ok((rt, bench, dir))
}

/// A start of the bench workflow; without an id the runtime makes one.
fn request(bench: &LoadedComponent, id: impl Into<Option<String>>, input: Value) -> StartRequest {
    StartRequest {
        workflow: "bench".into(),
        component: bench.clone(),
        input: input.to_string(),
        run_id: id.into(),
        version: None,
    }
}

/// One embedded W10 round.
async fn w10_embedded(guests: &Guests, runs: usize) -> anyhow::Result<Round> {
    let (rt, bench, _dir) = embedded(guests, true, Residency::default()).await?;
    let clients = Arc::new(Semaphore::new(64));
    let cpu_before = cpu_seconds("self");
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(runs);
    for _ in 0..runs {
        let (rt, bench, clients) = (rt.clone(), bench.clone(), clients.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = clients.acquire().await?;
            // The id made by the runtime, as for most callers.
            let meta = rt.start(request(&bench, None, json!({ "steps": 10 }))).await?;
            rt.drive(&meta.id).await?;
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    let commits = rt.store().commit_metrics();
    Ok(Round {
        wps: runs as f64 / secs,
        commit_us: commits.latency.mean() * 1e6,
        writes: commits.batch_size.mean(),
        cores: (cpu_seconds("self") - cpu_before) / secs,
        client_cores: 0.0,
    })
}

/// A `cairn serve` of this binary on a scratch store.
struct Server {
    child: Child,
    url: String,
    http: reqwest::Client,
}

impl Server {
    fn start(data: &Path) -> anyhow::Result<Server> {
        Self::start_with(data, &[])
    }

    fn start_with(data: &Path, extra: &[&str]) -> anyhow::Result<Server> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .args(extra)
            .env("CAIRN_LOG", "error")
            .stdout(Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("no stdout")?).read_line(&mut line)?;
        let url = line.trim().strip_prefix("cairn listening on ").context("cairn serve did not start")?.to_owned();
        Ok(Server { child, url, http: reqwest::Client::new() })
    }

    async fn deploy(&self, name: &str, kind: &str, bytes: &[u8]) -> anyhow::Result<()> {
        let r = self
            .http
            .post(format!("{}/v1/components/{name}?kind={kind}", self.url))
            .body(bytes.to_vec())
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("deploy {name}: {}", r.text().await?);
        }
        Ok(())
    }

    /// Its Prometheus metrics.
    async fn metrics(&self) -> anyhow::Result<String> {
        Ok(self.http.get(format!("{}/metrics", self.url)).send().await?.error_for_status()?.text().await?)
    }

    /// CPU time it has used.
    fn cpu_seconds(&self) -> f64 {
        cpu_seconds(&self.child.id().to_string())
    }

    /// Starts a run (its id made by the server, as for most callers) and
    /// waits for its result in the same request (`POST /v1/runs?wait=30`),
    /// long-polling on while it still runs.
    async fn run(&self, input: Value) -> anyhow::Result<()> {
        let body = json!({ "workflow": "bench", "input": input });
        let r = self.http.post(format!("{}/v1/runs?wait=30", self.url)).json(&body).send().await?;
        if !r.status().is_success() {
            bail!("start: {}", r.text().await?);
        }
        let mut run: Value = r.json().await?;
        let id = run["id"].as_str().unwrap_or_default().to_owned();
        loop {
            match run["status"].as_str() {
                Some("running") => {}
                Some("completed") => return Ok(()),
                _ => bail!("run {id} ended as {run}"),
            }
            run = self.http.get(format!("{}/v1/runs/{id}/result?wait=30", self.url)).send().await?.json().await?;
        }
    }
}

/// User and system CPU time process `pid` (or `self`) has used, from /proc
/// (0 where there is no /proc).
fn cpu_seconds(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    // utime and stime are the 14th and 15th fields of the line, the 12th
    // and 13th after the parenthesised command name.
    let Some((_, rest)) = stat.rsplit_once(')') else { return 0.0 };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz.max(1.0)
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn http_server(guests: &Guests) -> anyhow::Result<(Server, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path())?;
    server.deploy("noop", "activity", &guests.noop).await?;
    server.deploy("bench", "workflow", &guests.bench).await?;
    Ok((server, dir))
}

/// One HTTP W10 round of `runs` timed runs, after `prefill` untimed ones
/// (the same workload) have filled the server's store.
async fn w10_http(guests: &Guests, runs: usize, prefill: usize) -> anyhow::Result<Round> {
    let (server, _dir) = http_server(guests).await?;
    let server = Arc::new(server);
    w10_http_load(&server, prefill).await?;
    let before = server.metrics().await?;
    let cpu_before = (server.cpu_seconds(), cpu_seconds("self"));
    let started = Instant::now();
    w10_http_load(&server, runs).await?;
    let secs = started.elapsed().as_secs_f64();
    let cores = (server.cpu_seconds() - cpu_before.0) / secs;
    let client_cores = (cpu_seconds("self") - cpu_before.1) / secs;
    let commits = Commits::between(&before, &server.metrics().await?);
    Ok(Round { wps: runs as f64 / secs, commit_us: commits.mean_us, writes: commits.writes, cores, client_cores })
}

/// `runs` W10 runs against `server`, 64 at a time.
async fn w10_http_load(server: &Arc<Server>, runs: usize) -> anyhow::Result<()> {
    let clients = Arc::new(Semaphore::new(64));
    let mut tasks = Vec::with_capacity(runs);
    for _ in 0..runs {
        let (server, clients) = (server.clone(), clients.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = clients.acquire().await?;
            server.run(json!({ "steps": 10 })).await
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// The server's commits between two scrapes of its metrics: those of a
/// round only, not the deployments'.
struct Commits {
    count: f64,
    /// Mean duration of one, µs.
    mean_us: f64,
    /// Mean writes one carried.
    writes: f64,
}

impl Commits {
    fn between(before: &str, after: &str) -> Commits {
        let delta = |name: &str| sample(after, name) - sample(before, name);
        let count = delta("cairn_journal_commit_seconds_count");
        Commits {
            count,
            mean_us: delta("cairn_journal_commit_seconds_sum") / count.max(1.0) * 1e6,
            writes: delta("cairn_journal_commit_batch_size_sum")
                / delta("cairn_journal_commit_batch_size_count").max(1.0),
        }
    }
}

/// One W10 round: workflows/s, the mean commit (µs) and the writes it
/// carried, and the CPU the engine used (in cores: CPU seconds per second).
#[derive(Clone, Copy)]
struct Round {
    wps: f64,
    commit_us: f64,
    writes: f64,
    cores: f64,
    /// Over HTTP, the CPU the bench's own HTTP clients used.
    client_cores: f64,
}

/// The value of an unlabelled Prometheus sample, 0 when absent.
fn sample(text: &str, name: &str) -> f64 {
    text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok()).unwrap_or(0.0)
}

/// p50 and p99 ms of sequential runs, and the server's commits meanwhile:
/// how many each run made and what one took, which bound the mean latency
/// from below (a run waits for each of its commits in turn).
async fn w10_latency(guests: &Guests, runs: usize) -> anyhow::Result<(f64, f64, Commits)> {
    let (server, _dir) = http_server(guests).await?;
    let before = server.metrics().await?;
    let mut ms = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        server.run(json!({ "steps": 10 })).await?;
        ms.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    let commits = Commits::between(&before, &server.metrics().await?);
    let pct = |p: f64| ms[((ms.len() as f64 * p).ceil() as usize).saturating_sub(1).min(ms.len() - 1)];
    Ok((pct(0.50), pct(0.99), commits))
}

/// Mean µs per journaled host call, and the mean µs of one store commit.
async fn step_overhead(guests: &Guests, steps: u32, durable: bool) -> anyhow::Result<(f64, f64)> {
    let (rt, bench, _dir) = embedded(guests, durable, Residency::default()).await?;
    let meta = rt.start(request(&bench, "steps".to_owned(), json!({ "steps": steps }))).await?;
    let started = Instant::now();
    rt.drive(&meta.id).await?;
    // Each step is two journaled host calls: schedule-activity and await.
    let per_call = started.elapsed().as_secs_f64() * 1e6 / f64::from(steps * 2);
    Ok((per_call, rt.store().commit_metrics().latency.mean() * 1e6))
}

/// Rounds of the W10 throughput rows (they report the median): one round
/// takes about a second, short enough for a noisy neighbour to skew it.
const ROUNDS: usize = 3;

/// Replays timed by the replay row (it reports their median).
const REPLAYS: usize = 21;

async fn replay(guests: &Guests, entries: u32) -> anyhow::Result<(f64, f64)> {
    let (rt, bench, _dir) = embedded(guests, false, Residency::default()).await?;
    let meta = rt.start(request(&bench, "long".to_owned(), json!({ "steps": entries / 2 }))).await?;
    rt.drive(&meta.id).await?;
    // The median of several replays: one replay is short enough for a noisy
    // neighbour to halve it.
    let mut times = Vec::new();
    let mut entries = 0;
    for _ in 0..REPLAYS {
        let started = Instant::now();
        entries = rt.replay(&meta.id, None).await?.entries;
        times.push(started.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let secs = times[times.len() / 2];
    Ok((secs * 1000.0, entries as f64 / secs))
}

async fn instantiate(guests: &Guests, n: u32) -> anyhow::Result<f64> {
    let (rt, bench, _dir) = embedded(guests, true, Residency::default()).await?;
    rt.time_instantiation(&bench, 10).await?; // warm up
    Ok(rt.time_instantiation(&bench, n).await?.as_secs_f64() * 1e6)
}

/// Instantiation of another language's component (built by the tests with
/// `cairn build` into target/guests), and what its first and second loads
/// cost: a compile, then the cached artifact.
async fn instantiate_file(path: &Path, n: u32) -> anyhow::Result<Option<(f64, f64, f64)>> {
    let Ok(bytes) = std::fs::read(path) else { return Ok(None) };
    let dir = tempfile::tempdir()?;
    let first = Instant::now();
    {
        let rt = Runtime::new(Store::open(dir.path())?, Limits::default())?;
        rt.components().load_bytes("guest", bytes.clone()).await?;
    }
    let compile_ms = first.elapsed().as_secs_f64() * 1000.0;
    // The first runtime's writer thread lets go of the file a moment later.
    let mut store = Store::open(dir.path());
    for _ in 0..200 {
        if store.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        store = Store::open(dir.path());
    }
    let rt = Runtime::new(store?, Limits::default())?;
    let second = Instant::now();
    let component = rt.components().load_bytes("guest", bytes).await?;
    let cached_ms = second.elapsed().as_secs_f64() * 1000.0;
    rt.time_instantiation(&component, 3).await?;
    let us = rt.time_instantiation(&component, n).await?.as_secs_f64() * 1e6;
    Ok(Some((us, compile_ms, cached_ms)))
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        .map_or(0.0, |kb| kb / 1024.0)
}

async fn parked(guests: &Guests, runs: usize) -> anyhow::Result<(f64, f64)> {
    let residency = Residency { idle: Some(Duration::from_millis(50)), cap: 100 };
    let (rt, bench, _dir) = embedded(guests, true, residency).await?;
    let clients = Arc::new(Semaphore::new(64));
    let mut tasks = Vec::with_capacity(runs);
    for i in 0..runs {
        let (rt, bench, clients) = (rt.clone(), bench.clone(), clients.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = clients.acquire().await?;
            let meta = rt.start(request(&bench, format!("p{i}"), json!({ "park": true }))).await?;
            rt.wake(&meta.id);
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    // Every run reached its wait and all but the resident cap left memory.
    let deadline = Instant::now() + Duration::from_secs(600);
    while rt.metrics().evictions + rt.metrics().resident < runs as u64 || rt.metrics().resident > 100 {
        if Instant::now() > deadline {
            bail!("parked runs did not settle: {:?}", rt.metrics());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rss = rss_mib();
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(runs);
    for i in 0..runs {
        let (rt, clients) = (rt.clone(), clients.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = clients.acquire().await?;
            rt.signal(&format!("p{i}"), "go", "true").await?;
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    while rt.metrics().finished < runs as u64 {
        if Instant::now() > deadline {
            bail!("woken runs did not finish: {:?}", rt.metrics());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((rss, runs as f64 / started.elapsed().as_secs_f64()))
}

/// A database of its own on the bench's PostgreSQL server, dropped with it.
struct Database {
    admin: String,
    name: String,
    url: String,
}

impl Database {
    async fn create(admin: &str, row: &str) -> anyhow::Result<Database> {
        let name = format!("cairn_bench_{row}_{}", std::process::id());
        Self::execute(admin, &format!("DROP DATABASE IF EXISTS {name}")).await?;
        Self::execute(admin, &format!("CREATE DATABASE {name}")).await?;
        let base = admin.rsplit_once('/').map_or(admin, |(base, _)| base);
        Ok(Database { admin: admin.to_owned(), url: format!("{base}/{name}"), name })
    }

    async fn execute(url: &str, sql: &str) -> anyhow::Result<()> {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .with_context(|| format!("cannot connect to --postgres {}", cairn_host::store::postgres::redacted(url)))?;
        let connection = tokio::spawn(connection);
        client.batch_execute(sql).await.with_context(|| format!("{sql} failed"))?;
        drop(client);
        let _ = connection.await;
        Ok(())
    }

    async fn drop_now(self) {
        // Hosts hold connections for a moment after they are killed.
        for _ in 0..50 {
            let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
            if Self::execute(&self.admin, &sql).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// `hosts` hosts of one PostgreSQL store, the bench components deployed.
async fn pg_hosts(
    guests: &Guests,
    url: &str,
    hosts: usize,
    lease_ms: u64,
) -> anyhow::Result<(Vec<Server>, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    let mut servers = Vec::new();
    for i in 0..hosts {
        let id = format!("bench{i}");
        let lease = lease_ms.to_string();
        let args = ["--store", url, "--host-id", id.as_str(), "--lease-ms", lease.as_str()];
        servers.push(Server::start_with(&dir.path().join(&id), &args)?);
    }
    servers[0].deploy("noop", "activity", &guests.noop).await?;
    servers[0].deploy("bench", "workflow", &guests.bench).await?;
    // Until the shards are shared out (a few lease ticks).
    let share = 64usize.div_ceil(hosts);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut owned = Vec::new();
        for s in &servers {
            owned.push(sample(&s.metrics().await?, "cairn_shards_owned") as usize);
        }
        if owned.iter().sum::<usize>() == 64 && owned.iter().all(|n| *n <= share) {
            break;
        }
        if Instant::now() > deadline {
            bail!("the shards never settled over {hosts} hosts: {owned:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok((servers, dir))
}

/// W10 over HTTP against `hosts` hosts of one PostgreSQL store, the 64
/// clients spread over them.
async fn pg_w10(guests: &Guests, admin: &str, hosts: usize, runs: usize) -> anyhow::Result<Round> {
    let db = Database::create(admin, &format!("w10_{hosts}")).await?;
    let (servers, _dir) = pg_hosts(guests, &db.url, hosts, 10_000).await?;
    let servers: Vec<Arc<Server>> = servers.into_iter().map(Arc::new).collect();
    let before = servers[0].metrics().await?;
    let cpu: Vec<f64> = servers.iter().map(|s| s.cpu_seconds()).collect();
    let client_cpu = cpu_seconds("self");
    let started = Instant::now();
    let clients = Arc::new(Semaphore::new(64));
    let mut tasks = Vec::with_capacity(runs);
    for i in 0..runs {
        let (server, clients) = (servers[i % hosts].clone(), clients.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = clients.acquire().await?;
            server.run(json!({ "steps": 10 })).await
        }));
    }
    for t in tasks {
        t.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    let cores = servers.iter().zip(&cpu).map(|(s, c)| s.cpu_seconds() - c).sum::<f64>() / secs;
    let client_cores = (cpu_seconds("self") - client_cpu) / secs;
    let commits = Commits::between(&before, &servers[0].metrics().await?);
    drop(servers);
    db.drop_now().await;
    Ok(Round { wps: runs as f64 / secs, commit_us: commits.mean_us, writes: commits.writes, cores, client_cores })
}

/// p50 and p99 ms of sequential W10 runs on one host of a PostgreSQL store.
async fn pg_latency(guests: &Guests, admin: &str, runs: usize) -> anyhow::Result<(f64, f64, Commits)> {
    let db = Database::create(admin, "latency").await?;
    let (servers, _dir) = pg_hosts(guests, &db.url, 1, 10_000).await?;
    let before = servers[0].metrics().await?;
    let mut ms = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        servers[0].run(json!({ "steps": 10 })).await?;
        ms.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    let commits = Commits::between(&before, &servers[0].metrics().await?);
    drop(servers);
    db.drop_now().await;
    let pct = |p: f64| ms[((ms.len() as f64 * p).ceil() as usize).saturating_sub(1).min(ms.len() - 1)];
    Ok((pct(0.50), pct(0.99), commits))
}

/// Two hosts, `runs` runs parked on them waiting for a signal; one host
/// killed with SIGKILL and every run signalled through the other. Returns
/// (s from the kill to the last orphaned run finishing, how many were
/// orphaned, the lease s).
async fn pg_takeover(guests: &Guests, admin: &str, runs: usize) -> anyhow::Result<(f64, usize, f64)> {
    let lease_ms = 5_000;
    let db = Database::create(admin, "takeover").await?;
    let (mut servers, _dir) = pg_hosts(guests, &db.url, 2, lease_ms).await?;
    let http = reqwest::Client::new();
    let clients = Arc::new(Semaphore::new(64));
    let survivor = servers[1].url.clone();
    let mut tasks = Vec::new();
    for i in 0..runs {
        let (http, url, clients) = (http.clone(), servers[i % 2].url.clone(), clients.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = clients.acquire().await?;
            let body = json!({ "workflow": "bench", "id": format!("t{i}"), "input": { "park": true } });
            let r = http.post(format!("{url}/v1/runs")).json(&body).send().await?;
            anyhow::ensure!(r.status().is_success(), "start: {}", r.text().await?);
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    // Every run waits for its signal.
    let store = Store::connect(&db.url, None).await?;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let mut parked = 0;
        for meta in store.all_runs(cairn_host::store::RunQuery::status(cairn_host::store::RunStatus::Running)).await? {
            parked += usize::from(store.journal(&meta.id).await?.len() >= 2);
        }
        if parked == runs {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {parked} of {runs} runs reached their wait");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let victim = servers.remove(0);
    let orphaned = victim_runs(&db.url, &store).await?;
    let killed = Instant::now();
    drop(victim);
    let mut tasks = Vec::new();
    for i in 0..runs {
        let (http, url, clients) = (http.clone(), survivor.clone(), clients.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = clients.acquire().await?;
            let r = http.post(format!("{url}/v1/runs/t{i}/signals/go")).json(&json!(true)).send().await?;
            anyhow::ensure!(r.status().is_success(), "signal: {}", r.text().await?);
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    loop {
        let left = store.count_running().await?;
        if left == 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("{left} runs never finished after the takeover");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let secs = killed.elapsed().as_secs_f64();
    drop(servers);
    db.drop_now().await;
    Ok((secs, orphaned, lease_ms as f64 / 1000.0))
}

/// How many runs the host `bench0` drives: the runs of the shards it holds.
async fn victim_runs(url: &str, store: &Store) -> anyhow::Result<usize> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    let connection = tokio::spawn(connection);
    let rows = client.query("SELECT shard FROM cairn_shards WHERE owner = 'bench0'", &[]).await?;
    drop(client);
    let _ = connection.await;
    let mut n = 0;
    for row in rows {
        let query = cairn_host::store::RunQuery {
            shard: Some(row.get::<_, i32>(0) as u32),
            ..cairn_host::store::RunQuery::all()
        };
        n += store.all_runs(query).await?.len();
    }
    Ok(n)
}

async fn cold_start(guests: &Guests, components: usize) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    {
        let server = Server::start(dir.path())?;
        server.deploy("noop", "activity", &guests.noop).await?;
        for i in 0..components.saturating_sub(1) {
            // Distinct bytes per component (a custom section), so each is
            // compiled and cached on its own, as real deployments are.
            let mut bytes = guests.bench.clone();
            let name = format!("cairn-bench-{i}");
            bytes.push(0);
            bytes.push((name.len() + 1) as u8);
            bytes.push(name.len() as u8);
            bytes.extend_from_slice(name.as_bytes());
            server.deploy(&format!("w{i}"), "workflow", &bytes).await?;
        }
    }
    let started = Instant::now();
    let server = Server::start(dir.path())?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = server.http.get(format!("{}/v1/health", server.url)).send().await {
            if r.status().is_success() {
                break;
            }
        }
        if Instant::now() > deadline {
            bail!("cairn serve did not become ready");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(started.elapsed().as_secs_f64() * 1000.0)
}

pub async fn bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let guests = guests(&args)?;
    let scale = |n: usize| if args.quick { (n / 10).max(1) } else { n };
    let want = |row: &str| args.only.is_empty() || args.only.iter().any(|o| o == row);
    let fsync = "durable (fsync per commit)";
    let mut rows = Vec::new();
    let mut keys = serde_json::Map::new();
    let mut record = |key: &str, row: Row, keys: &mut serde_json::Map<String, Value>| {
        keys.insert(key.to_owned(), json!(row.figure));
        eprintln!("  {:<28} {:>12.1} {:<14} {}", row.name, row.figure, row.unit, row.settings);
        rows.push(row);
    };
    eprintln!(
        "cairn bench{} (each row on a fresh store in a temporary directory)",
        if args.quick { " --quick" } else { "" }
    );

    let n = scale(2000);
    if want("w10") {
        let mut rounds = Vec::new();
        for _ in 0..ROUNDS {
            rounds.push(w10_embedded(&guests, n).await?);
        }
        rounds.sort_by(|a, b| a.wps.total_cmp(&b.wps));
        let Round { wps, commit_us, writes, cores, .. } = rounds[rounds.len() / 2];
        record(
            "w10_embedded_wps",
            Row {
                name: "W10 throughput, embedded",
                figure: wps,
                unit: "workflows/s",
                settings: format!(
                    "{n} runs x 10 activity steps, 64 concurrent, {fsync}; {:.0} steps/s; median of {ROUNDS} rounds; a commit took {commit_us:.0} us and carried {writes:.0} writes on average; {cores:.2} cores busy",
                    wps * 10.0
                ),
            },
            &mut keys,
        );
    }
    if want("http") {
        let mut rounds = Vec::new();
        for _ in 0..ROUNDS {
            rounds.push(w10_http(&guests, n, 0).await?);
        }
        rounds.sort_by(|a, b| a.wps.total_cmp(&b.wps));
        let Round { wps, commit_us, writes, cores, client_cores } = rounds[rounds.len() / 2];
        record(
            "w10_http_wps",
            Row {
                name: "W10 throughput, HTTP",
                figure: wps,
                unit: "workflows/s",
                settings: format!(
                    "{n} runs via cairn serve on loopback, 64 concurrent clients, each a start that waits for the result (POST /v1/runs?wait=30), {fsync}; {:.0} steps/s; median of {ROUNDS} rounds; a commit took {commit_us:.0} us and carried {writes:.0} writes on average; the server kept {cores:.2} cores busy, the clients {client_cores:.2}",
                    wps * 10.0
                ),
            },
            &mut keys,
        );
    }
    if want("full") {
        let prefill = scale(30_000);
        let Round { wps, commit_us, writes, cores, client_cores } = w10_http(&guests, n, prefill).await?;
        record(
            "w10_http_full_store_wps",
            Row {
                name: "W10 throughput, HTTP, full store",
                figure: wps,
                unit: "workflows/s",
                settings: format!(
                    "as the HTTP row, one round, timed after {prefill} other runs filled the store; a commit took {commit_us:.0} us and carried {writes:.0} writes on average; the server kept {cores:.2} cores busy, the clients {client_cores:.2}"
                ),
            },
            &mut keys,
        );
    }
    if want("latency") {
        let l = scale(200);
        let (p50, p99, commits) = w10_latency(&guests, l).await?;
        let per_run = commits.count / l as f64;
        let waiting_ms = per_run * commits.mean_us / 1000.0;
        record(
            "w10_p50_ms",
            Row {
                name: "W10 latency p50",
                figure: p50,
                unit: "ms",
                settings: format!(
                    "{l} sequential runs, HTTP start -> result in one request (POST /v1/runs?wait=30), {fsync}; {per_run:.1} commits per run, one after another, of {:.0} us on average: {waiting_ms:.1} ms of a run is its commits",
                    commits.mean_us
                ),
            },
            &mut keys,
        );
        record(
            "w10_p99_ms",
            Row { name: "W10 latency p99", figure: p99, unit: "ms", settings: format!("same {l} runs") },
            &mut keys,
        );
    }
    if let (Some(admin), true) = (&args.postgres, want("pg")) {
        let pg = "PostgreSQL 15 on loopback, fsync and synchronous_commit on";
        for hosts in [1, 3] {
            let Round { wps, commit_us, writes, cores, client_cores } = pg_w10(&guests, admin, hosts, n).await?;
            record(
                if hosts == 1 { "pg_w10_http_wps" } else { "pg_w10_http_3_hosts_wps" },
                Row {
                    name: if hosts == 1 { "W10, HTTP, PostgreSQL, 1 host" } else { "W10, HTTP, PostgreSQL, 3 hosts" },
                    figure: wps,
                    unit: "workflows/s",
                    settings: format!(
                        "{n} runs, 64 concurrent clients spread over {hosts} host(s), {pg}; a commit (of host 1) took {commit_us:.0} us and carried {writes:.0} writes on average; the hosts kept {cores:.2} cores busy, the clients {client_cores:.2}"
                    ),
                },
                &mut keys,
            );
        }
        let l = scale(200);
        let (p50, p99, commits) = pg_latency(&guests, admin, l).await?;
        let per_run = commits.count / l as f64;
        record(
            "pg_w10_p50_ms",
            Row {
                name: "W10 latency p50, PostgreSQL",
                figure: p50,
                unit: "ms",
                settings: format!(
                    "{l} sequential runs on one host, {pg}; {per_run:.1} commits per run of {:.0} us on average",
                    commits.mean_us
                ),
            },
            &mut keys,
        );
        record(
            "pg_w10_p99_ms",
            Row { name: "W10 latency p99, PostgreSQL", figure: p99, unit: "ms", settings: format!("same {l} runs") },
            &mut keys,
        );
        let t = scale(1000);
        let (secs, orphaned, lease) = pg_takeover(&guests, admin, t).await?;
        record(
            "pg_takeover_s",
            Row {
                name: "Takeover after kill -9",
                figure: secs,
                unit: "s",
                settings: format!("{t} runs parked on two hosts, one killed; its {orphaned} runs signalled through the other: from the kill to the last of them finishing, lease {lease:.0} s ({:.1} s after the lease ran out)", secs - lease),
            },
            &mut keys,
        );
    }
    if want("step") {
        let steps = scale(1000) as u32;
        let (us, commit_us) = step_overhead(&guests, steps, true).await?;
        record(
            "step_overhead_us",
            Row {
                name: "Step overhead",
                figure: us,
                unit: "us/host call",
                settings: format!("one run of {steps} activity steps (2 journaled calls each, one commit per step), {fsync}; a commit took {commit_us:.0} us on average"),
            },
            &mut keys,
        );
        let (us, commit_us) = step_overhead(&guests, steps, false).await?;
        record(
            "step_overhead_nofsync_us",
            Row {
                name: "Step overhead, fsync OFF",
                figure: us,
                unit: "us/host call",
                settings: format!("same, NOT durable (Durability::None); a commit took {commit_us:.0} us on average"),
            },
            &mut keys,
        );
    }
    if want("replay") {
        let entries = scale(10_000) as u32;
        let (ms, per_s) = replay(&guests, entries).await?;
        record("replay_entries_per_s", Row { name: "Replay", figure: per_s, unit: "entries/s", settings: format!("a {entries}-entry journal replayed in a scratch sandbox in {ms:.1} ms (load + instantiate + re-execute), median of {REPLAYS}") }, &mut keys);
    }
    if want("instantiate") {
        let k = scale(1000) as u32;
        let us = instantiate(&guests, k).await?;
        record(
            "instantiate_us",
            Row {
                name: "Instantiation",
                figure: us,
                unit: "us/run",
                settings: format!("mean of {k}: store + virtual WASI + InstancePre::instantiate_async, Rust guest"),
            },
            &mut keys,
        );
    }
    if want("parked") {
        let p = scale(100_000);
        let (rss, woken) = parked(&guests, p).await?;
        keys.insert("parked_runs".into(), json!(p));
        record(
            "parked_rss_mib",
            Row {
                name: "Parked runs, host RSS",
                figure: rss,
                unit: "MiB",
                settings: format!("{p} runs waiting on a signal, resident cap 100, idle 50 ms, embedded"),
            },
            &mut keys,
        );
        record(
            "parked_wake_per_s",
            Row {
                name: "Parked runs woken",
                figure: woken,
                unit: "runs/s",
                settings: format!("all {p} signalled (64 concurrent), rebuilt by replay, completed"),
            },
            &mut keys,
        );
    }
    if want("cold") {
        let c = if args.quick { 5 } else { 50 };
        let ms = cold_start(&guests, c).await?;
        record(
            "cold_start_ms",
            Row {
                name: "Cold start",
                figure: ms,
                unit: "ms",
                settings: format!("cairn serve start -> /v1/health with {c} deployed components, artifact cache warm"),
            },
            &mut keys,
        );
    }

    // Last: the big components stay in this process's memory once loaded.
    for (name, key, path) in [
        ("Instantiation, C", "instantiate_c_us", "target/guests/c/order.wasm"),
        ("Instantiation, Python", "instantiate_python_us", "target/guests/python/order.wasm"),
        ("Instantiation, JavaScript", "instantiate_js_us", "target/guests/js/order.wasm"),
    ]
    .into_iter()
    .filter(|_| want("languages"))
    {
        if let Some((us, compile_ms, cached_ms)) = instantiate_file(Path::new(path), scale(200) as u32).await? {
            record(key, Row { name, figure: us, unit: "us/run", settings: format!("{path}: first load (compile) {compile_ms:.0} ms, second load (cached artifact) {cached_ms:.1} ms") }, &mut keys);
        }
    }
    if args.json {
        println!("{}", Value::Object(keys));
    } else {
        println!("{:<28} {:>12} {:<14} SETTINGS", "ROW", "FIGURE", "UNIT");
        for row in &rows {
            println!("{:<28} {:>12.1} {:<14} {}", row.name, row.figure, row.unit, row.settings);
        }
    }
    Ok(ExitCode::SUCCESS)
}
