//! Embedded-mode commands: `run`, `journal`, `replay`.

use super::LimitArgs;
use anyhow::{bail, Context};
use cairn_host::journal::{Entry, ExportedRecord, Record};
use cairn_host::runtime::{RunError, RunOutcome, Runtime, StartRequest};
use cairn_host::sandbox::{Limits, LoadedComponent};
use cairn_host::store::Store;
use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

/// Exit code of a replay that diverged.
const EXIT_DIVERGED: u8 = 3;

impl LimitArgs {
    pub(super) fn limits(&self) -> anyhow::Result<Limits> {
        let mut activity_network = Vec::new();
        for entry in &self.activity_allow {
            use std::net::ToSocketAddrs;
            let addrs = entry.to_socket_addrs().with_context(|| {
                format!("--activity-allow {entry:?} is not an address: give HOST:PORT, e.g. 127.0.0.1:8080 or api.example.com:443")
            })?;
            activity_network.extend(addrs);
        }
        let max_memory_bytes = self.max_memory_mib.saturating_mul(1 << 20);
        let memory_budget_bytes = match self.memory_budget_mib {
            Some(mib) if mib < self.max_memory_mib => bail!(
                "--memory-budget-mib {mib} is below --max-memory-mib {}: one instance could never get the memory it may use. Raise the budget or lower the per-instance limit",
                self.max_memory_mib
            ),
            Some(mib) => mib.saturating_mul(1 << 20),
            None => cairn_host::sandbox::default_memory_budget().max(max_memory_bytes),
        };
        Ok(Limits {
            max_memory_bytes,
            memory_budget_bytes,
            step_budget_ms: self.step_budget_ms,
            pool_instances: self.pool_instances.unwrap_or(Limits::default().pool_instances),
            activity_network,
            max_signals_per_run: self.max_signals_per_run,
            max_signal_bytes: self.max_signal_mib.saturating_mul(1 << 20),
            ..Limits::default()
        })
    }
}

async fn load(runtime: &Runtime, path: &Path) -> anyhow::Result<LoadedComponent> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(runtime.components().load_bytes(&path.display().to_string(), bytes).await?)
}

pub async fn run(
    workflow: &Path,
    activities: &[String],
    input: &str,
    data: &Path,
    store: Option<&str>,
    id: Option<String>,
    limits: &LimitArgs,
) -> anyhow::Result<ExitCode> {
    let input = super::read_json_arg("--input", input)?;
    let store = super::open_store(store, data).await?;
    let shared = store.shared();
    let runtime = Runtime::new(store, limits.limits()?)?;
    if shared {
        // On a shared store this process writes like a host: under shards
        // it holds (its run's among them), taken back at once after a crash.
        let host = cairn_host::store::HostIdentity {
            id: format!("cairn-run:{}", data.display()),
            address: String::new(),
            lease: std::time::Duration::from_secs(10),
        };
        let coordinator = runtime.store().coordinator(host);
        coordinator.start().await?;
        runtime.coordinate(coordinator);
    }
    for spec in activities {
        let Some((name, file)) = spec.split_once('=') else {
            bail!("--activity {spec:?} must be NAME=FILE.wasm, e.g. --activity payments=payments.wasm");
        };
        let component = load(&runtime, Path::new(file)).await?;
        runtime.activities().register(name, &component)?;
    }
    let component = load(&runtime, workflow).await?;
    let name = workflow.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "workflow".into());
    let meta = runtime.start(StartRequest { workflow: name, component, input, run_id: id, version: None }).await?;
    tracing::info!(run_id = %meta.id, "driving run");
    eprintln!("run {}", meta.id);
    match runtime.drive(&meta.id).await {
        Ok(RunOutcome::Completed { result }) => {
            println!("{result}");
            Ok(ExitCode::SUCCESS)
        }
        Ok(RunOutcome::Failed { failure }) => {
            let report = serde_json::json!({ "run_id": meta.id, "status": "failed", "failure": failure });
            eprintln!("{report}");
            Ok(ExitCode::FAILURE)
        }
        Err(
            RunError::Trapped { run_id, failure }
            | RunError::Contract { run_id, failure }
            | RunError::Refused { run_id, failure },
        ) => {
            let report = serde_json::json!({ "run_id": run_id, "status": "failed", "failure": failure });
            eprintln!("{report}");
            Ok(ExitCode::FAILURE)
        }
        Err(e @ RunError::Diverged { .. }) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(EXIT_DIVERGED))
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn journal(run_id: &str, data: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let store = Store::open(data)?;
    let Some(meta) = store.run(run_id).await? else {
        bail!("run {run_id} does not exist in {}", data.display());
    };
    let records = store.journal(run_id).await?;
    let mut out = std::io::stdout().lock();
    if json {
        write_export(&mut out, run_id, meta.generation, records)?;
        return Ok(ExitCode::SUCCESS);
    }
    let start = records[0].at_ms;
    writeln!(out, "{:>5}  {:>9}  {:<18}  DETAIL", "SEQ", "TIME", "ENTRY")?;
    for record in &records {
        writeln!(out, "{}", table_row(record, start))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes `records` as `cairn journal --json` exports them: one JSON
/// object a line, each with the run id and generation.
pub(super) fn write_export(
    out: &mut impl std::io::Write,
    run_id: &str,
    generation: u32,
    records: Vec<Record>,
) -> anyhow::Result<()> {
    for record in records {
        let line = ExportedRecord { run_id: Some(run_id.to_owned()), generation: Some(generation), record };
        writeln!(out, "{}", serde_json::to_string(&line)?)?;
    }
    Ok(())
}

pub(super) fn table_row(record: &Record, start: u64) -> String {
    let detail = match &record.entry {
        Entry::Started { workflow, component_sha256, input, .. } => {
            format!("{workflow} ({}) input {input}", &component_sha256[..12.min(component_sha256.len())])
        }
        Entry::Call { call, reply } => format!("{call} -> {reply}"),
        Entry::Completed { result } => result.clone(),
        Entry::Failed { failure } => failure.to_string(),
        Entry::Terminated { reason } => format!("terminated: {reason}"),
        Entry::ContinuedAsNew { input } => format!("next generation's input {input}"),
        Entry::VersionSwitch { from_version, to_version, to_sha256, .. } => format!(
            "v{} -> v{to_version} ({})",
            from_version.map_or("?".to_owned(), |v| v.to_string()),
            &to_sha256[..12.min(to_sha256.len())]
        ),
    };
    let time = format!("+{}ms", record.at_ms.saturating_sub(start));
    format!("{:>5}  {:>9}  {:<18}  {}", record.seq, time, record.entry.label(), detail)
}

pub async fn replay(run_id: &str, data: &Path, with: Option<&Path>, limits: &LimitArgs) -> anyhow::Result<ExitCode> {
    let store = Store::open(data)?;
    let runtime = Runtime::new(store, limits.limits()?)?;
    let with = match with {
        Some(path) => {
            let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            Some(runtime.components().load_transient(&path.display().to_string(), bytes).await?)
        }
        None => None,
    };
    report_replay(&format!("run {run_id}"), runtime.replay(run_id, with).await)
}

/// Replays every unfinished run of a store with the code it runs now.
pub async fn replay_all(data: &Path, limits: &LimitArgs) -> anyhow::Result<ExitCode> {
    use cairn_host::store::RunStatus;
    let store = Store::open(data)?;
    let runs = store.all_runs(cairn_host::store::RunQuery::status(RunStatus::Running)).await?;
    let runtime = Runtime::new(store, limits.limits()?)?;
    let mut diverged = 0;
    for meta in &runs {
        let code = report_replay(&format!("run {}", meta.id), runtime.replay(&meta.id, None).await)?;
        if code == ExitCode::from(EXIT_DIVERGED) {
            diverged += 1;
        }
    }
    println!("{} unfinished runs replayed, {diverged} diverged", runs.len());
    Ok(if diverged > 0 { ExitCode::from(EXIT_DIVERGED) } else { ExitCode::SUCCESS })
}

fn report_replay(what: &str, result: Result<cairn_host::runtime::ReplayReport, RunError>) -> anyhow::Result<ExitCode> {
    match result {
        Ok(report) => {
            let state = if report.finished { "finished" } else { "in progress" };
            println!("{what}: replay reproduced all {} journal entries ({state})", report.entries);
            Ok(ExitCode::SUCCESS)
        }
        Err(RunError::Diverged { divergence, .. }) => {
            println!("{what}: replay diverged at seq {}", divergence.seq);
            println!("  expected: {}", divergence.expected);
            println!("  actual:   {}", divergence.actual);
            if let Some(backtrace) = &divergence.backtrace {
                println!("  where:{backtrace}");
            }
            Ok(ExitCode::from(EXIT_DIVERGED))
        }
        Err(e) => Err(e.into()),
    }
}

/// Checks new code against an exported journal, offline: the journal is
/// loaded into a scratch store in a temporary directory and replayed there.
pub async fn replay_file(journal: &Path, with: &Path, limits: &LimitArgs) -> anyhow::Result<ExitCode> {
    use cairn_host::store::{RunMeta, RunStatus, Write};
    let text = std::fs::read_to_string(journal).with_context(|| format!("cannot read {}", journal.display()))?;
    let file = journal.display();
    let mut lines = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let line: ExportedRecord = serde_json::from_str(line)
            .with_context(|| format!("{file} line {}: not a journal entry from `cairn journal ID --json`", n + 1))?;
        lines.push(line);
    }
    let (run_id, generation) = match lines.first() {
        Some(first) => (first.run_id.clone(), first.generation),
        None => bail!("{file} holds no journal entries; export one with `cairn journal ID --json`"),
    };
    let mut records = Vec::with_capacity(lines.len());
    for (expected, line) in (0u64..).zip(lines) {
        if line.run_id != run_id || line.generation != generation {
            bail!(
                "{file}: seq {} belongs to run {} generation {}, the first entry to run {} generation {}; export one run's journal per file",
                line.record.seq,
                line.run_id.as_deref().unwrap_or("?"),
                line.generation.map_or("?".to_owned(), |g| g.to_string()),
                run_id.as_deref().unwrap_or("?"),
                generation.map_or("?".to_owned(), |g| g.to_string()),
            );
        }
        let seq = line.record.seq;
        match seq.cmp(&expected) {
            std::cmp::Ordering::Equal => {}
            std::cmp::Ordering::Greater if expected + 1 == seq => bail!(
                "{file}: seq {expected} is missing (the next entry in the file is seq {seq}); export the journal again with `cairn journal ID --json`"
            ),
            std::cmp::Ordering::Greater => bail!(
                "{file}: seqs {expected} to {} are missing (the next entry in the file is seq {seq}); export the journal again with `cairn journal ID --json`",
                seq - 1
            ),
            std::cmp::Ordering::Less => bail!(
                "{file}: seq {seq} comes again after seq {}; entries must be in order, each once",
                expected - 1
            ),
        }
        records.push(line.record);
    }
    let Some(Record { entry: Entry::Started { workflow, component_sha256, input, .. }, at_ms, .. }) =
        records.first().cloned()
    else {
        bail!("{file} does not start with a `started` entry; export it with `cairn journal ID --json`");
    };
    let run_id = run_id.unwrap_or_else(|| {
        eprintln!("warning: {file} has no run id (exported by an older Cairn); replaying under the id `replayed`, so a workflow that reads its run id will diverge. Export it again with `cairn journal ID --json`");
        "replayed".to_owned()
    });
    let scratch = tempfile::tempdir().context("cannot create a scratch directory")?;
    let store = Store::open(scratch.path())?;
    let ended = records.last().is_some_and(|r| r.entry.is_terminal());
    let meta = RunMeta {
        id: run_id.clone(),
        workflow,
        component_sha256,
        version: None,
        status: if ended { RunStatus::Completed } else { RunStatus::Running },
        input,
        result: None,
        failure: None,
        custom_status: None,
        parent: None,
        generation: generation.unwrap_or(0),
        shard: 0,
        created_ms: at_ms,
        updated_ms: at_ms,
        slot: None,
        search: Default::default(),
    };
    let mut batch = vec![Write::PutRun(meta)];
    batch.extend(records.into_iter().map(|record| Write::Append { run_id: run_id.clone(), record }));
    store.commit(batch).await?;
    let runtime = Runtime::new(store, limits.limits()?)?;
    let bytes = std::fs::read(with).with_context(|| format!("cannot read {}", with.display()))?;
    let component = runtime.components().load_transient(&with.display().to_string(), bytes).await?;
    report_replay(&file.to_string(), runtime.replay(&run_id, Some(component)).await)
}

/// `cairn check --store URL`: the same rules on a PostgreSQL store.
pub async fn check_shared(url: &str, json: bool) -> anyhow::Result<ExitCode> {
    let store = super::open_store(Some(url), Path::new("")).await?;
    let report = store.check().await?;
    print_report(&cairn_host::store::postgres::redacted(url), true, "", &report, json);
    Ok(if report.problems.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn print_report(what: &str, file_ok: bool, file: &str, report: &cairn_host::store::CheckReport, json: bool) {
    let ok = file_ok && report.problems.is_empty();
    if json {
        let value = serde_json::json!({ "ok": ok, "file_ok": file_ok, "report": report });
        println!("{value}");
        return;
    }
    println!(
        "{what}: {} runs, {} journal entries;{file} {} problems, {} warnings",
        report.runs,
        report.entries,
        report.problems.len(),
        report.warnings.len()
    );
    for p in &report.problems {
        println!("problem: {p}");
    }
    for w in &report.warnings {
        println!("warning: {w}");
    }
}

/// `cairn check`: redb's integrity check, then the consistency of the tables.
pub async fn check(data: &Path, json: bool, salvage: bool) -> anyhow::Result<ExitCode> {
    use cairn_host::store::StoreError;
    if !data.join("cairn.redb").is_file() {
        bail!("{} holds no Cairn store (no cairn.redb)", data.display());
    }
    let file_ok = Store::verify_file(data)?;
    let opened = match salvage {
        true => Store::open_salvaging(data),
        false => Store::open(data).map(|store| (store, None)),
    };
    let (store, salvaged) = match opened {
        Ok(opened) => opened,
        // A damaged or missing log is the finding, not a failure to check.
        Err(
            e @ (StoreError::LogDamaged { .. }
            | StoreError::LogMissing { .. }
            | StoreError::LogTruncated { .. }
            | StoreError::LogForeign { .. }
            | StoreError::StoreBehindLog { .. }),
        ) => {
            match json {
                true => {
                    println!("{}", serde_json::json!({ "ok": false, "file_ok": file_ok, "problems": [e.to_string()] }))
                }
                false => println!("{}: the store cannot be opened\nproblem: {e}", data.display()),
            }
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(salvaged) = &salvaged {
        eprintln!("salvaged: {salvaged}");
    }
    let report = store.check().await?;
    let ok = file_ok && report.problems.is_empty();
    let file = if file_ok { " file ok;" } else { " file REPAIRED by redb (was damaged);" };
    print_report(&data.display().to_string(), file_ok, file, &report, json);
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
