//! Client commands: talk to `cairn serve` over its HTTP API.

use super::ClientArgs;
use anyhow::{bail, Context};
use cairn_host::journal::Record;
use serde_json::value::RawValue;
use serde_json::Value;
use std::path::Path;
use std::process::ExitCode;

pub(super) struct Client {
    base: String,
    token: Option<String>,
    pub(super) http: reqwest::Client,
}

impl Client {
    pub(super) fn new(args: &ClientArgs) -> Self {
        Client {
            base: args.server.trim_end_matches('/').to_owned(),
            token: args.token.clone(),
            http: reqwest::Client::new(),
        }
    }

    pub(super) async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        Ok(self.send_raw(request).await?.0)
    }

    /// The answer as a [`Value`] and as the text it came in (which keeps
    /// payloads' numbers exactly as the server sent them).
    async fn send_raw(&self, request: reqwest::RequestBuilder) -> anyhow::Result<(Value, String)> {
        let request = match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) if e.is_connect() => {
                return Err(anyhow::Error::new(e).context(format!(
                "cannot reach the Cairn server at {} (start one with `cairn serve`, or set --server / CAIRN_SERVER)",
                self.base
            )))
            }
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context(format!("the request to the Cairn server at {} failed before it answered", self.base)))
            }
        };
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !status.is_success() {
            let message = body["message"].as_str().unwrap_or("no message");
            let code = body["code"].as_str().unwrap_or("?");
            bail!("{message} (HTTP {}, {code})", status.as_u16());
        }
        Ok((body, text))
    }

    pub(super) fn url(&self, path: &str) -> String {
        format!("{}/v1{path}", self.base)
    }

    pub(super) async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.http.get(format!("{}/v1{path}", self.base))).await
    }

    pub(super) async fn post_json(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.send(self.http.post(format!("{}/v1{path}", self.base)).json(body)).await
    }

    /// POSTs JSON text as it is (a payload keeps its exact numbers).
    pub(super) async fn post_text(&self, path: &str, body: String) -> anyhow::Result<(Value, String)> {
        let request = self.http.post(format!("{}/v1{path}", self.base)).header("content-type", "application/json");
        self.send_raw(request.body(body)).await
    }
}

pub(super) fn print_json(value: &Value) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
}

/// A run's payloads as the server sent them: printed from this text, not
/// from a [`Value`], their numbers stay exactly what the journal holds.
#[derive(serde::Deserialize, Default)]
struct RawRun {
    #[serde(default)]
    result: Option<Box<RawValue>>,
    #[serde(default)]
    custom_status: Option<Box<RawValue>>,
}

impl RawRun {
    fn of(text: &str) -> RawRun {
        serde_json::from_str(text).unwrap_or_default()
    }
}

fn print_run(run: &Value, text: &str) {
    let field = |k: &str| match &run[k] {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let raw = RawRun::of(text);
    println!("run       {}", field("id"));
    println!("workflow  {} (version {})", field("workflow"), field("version"));
    println!("status    {}", field("status"));
    if let Some(custom) = &raw.custom_status {
        println!("custom    {}", custom.get());
    }
    if let Some(result) = &raw.result {
        println!("result    {}", result.get());
    }
    if !run["failure"].is_null() {
        println!("failure   {}: {}", field_of(&run["failure"], "kind"), field_of(&run["failure"], "message"));
    }
}

fn field_of(v: &Value, k: &str) -> String {
    v[k].as_str().map(str::to_owned).unwrap_or_else(|| v[k].to_string())
}

/// A name or run id as one URL path segment, percent-encoded. `.` and `..`
/// are refused: every HTTP client (this one too) resolves them as "this
/// folder" and "the parent folder", encoded or not, so the server could
/// never see them.
pub(super) fn segment(name: &str) -> anyhow::Result<String> {
    if name == "." || name == ".." {
        bail!("{name:?} cannot be addressed in a URL (HTTP clients resolve `.` and `..` as folders); the server refuses such run ids and names");
    }
    Ok(escape(name))
}

/// Percent-encodes everything but unreserved characters.
fn escape(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub async fn deploy(
    args: &ClientArgs,
    name: &str,
    file: &Path,
    activity: bool,
    upgrade: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let client = Client::new(args);
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let kind = if activity { "activity" } else { "workflow" };
    let mut url = format!("{}/v1/components/{}?kind={kind}", client.base, segment(name)?);
    if let Some(upgrade) = upgrade {
        url.push_str(&format!("&upgrade={}", escape(upgrade)));
    }
    let body = client.send(client.http.post(url).header("content-type", "application/wasm").body(bytes)).await?;
    if args.json {
        print_json(&body);
    } else if body["created"] == Value::Bool(true) {
        println!("deployed {kind} {name} version {} ({})", body["version"], field_of(&body, "sha256"));
    } else {
        println!("{kind} {name}: these bytes are already version {}; nothing changed", body["version"]);
    }
    if body["upgrades"].is_array() {
        let report = serde_json::json!({ "runs": body["upgrades"] });
        if args.json {
            return Ok(upgrade_exit(&report));
        }
        return Ok(print_upgrades(args, &report));
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints an upgrade report; exit 3 if any run was refused.
fn print_upgrades(args: &ClientArgs, report: &Value) -> ExitCode {
    let runs = report["runs"].as_array().cloned().unwrap_or_default();
    let refused = runs.iter().filter(|r| r["outcome"] == "refused").count();
    if !args.json {
        for r in &runs {
            let id = field_of(r, "run_id");
            match r["outcome"].as_str() {
                Some("upgraded") => println!("{id}: upgraded v{} -> v{}", r["from"], r["to"]),
                Some("compatible") => println!("{id}: compatible with v{} (dry run, not moved)", r["to"]),
                Some("refused") => {
                    let d = &r["divergence"];
                    println!("{id}: refused, stays on v{}: diverges at seq {}", r["from"], d["seq"]);
                    println!("    expected: {}", field_of(d, "expected"));
                    println!("    actual:   {}", field_of(d, "actual"));
                }
                _ => println!("{id}: skipped ({})", field_of(r, "reason")),
            }
        }
        println!("{} runs, {} refused", runs.len(), refused);
    } else {
        print_json(report);
    }
    upgrade_exit(report)
}

/// Exit 3 if any run of an upgrade report was refused.
fn upgrade_exit(report: &Value) -> ExitCode {
    let refused = report["runs"].as_array().into_iter().flatten().any(|r| r["outcome"] == "refused");
    if refused {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    }
}

pub async fn versions(args: &ClientArgs, name: &str) -> anyhow::Result<ExitCode> {
    let body = Client::new(args).get(&format!("/workflows/{}/versions", segment(name)?)).await?;
    if args.json {
        print_json(&body);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:>7}  {:<8}  {:<14}  {:>10}  {:>6}  SHA256", "VERSION", "CURRENT", "DEPLOYED (ms)", "LIVE RUNS", "RUNS");
    for v in body["versions"].as_array().into_iter().flatten() {
        println!(
            "{:>7}  {:<8}  {:<14}  {:>10}  {:>6}  {}",
            v["version"],
            if v["current"] == true { "*" } else { "" },
            v["deployed_ms"],
            v["live_runs"],
            v["runs"],
            field_of(v, "sha256")
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn rollback(args: &ClientArgs, name: &str, to: u32) -> anyhow::Result<ExitCode> {
    let body = Client::new(args)
        .post_json(&format!("/workflows/{}/rollback", segment(name)?), &serde_json::json!({ "to": to }))
        .await?;
    if args.json {
        print_json(&body);
    } else {
        println!("{name}: version {to} is current; new runs start on it");
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn retire(args: &ClientArgs, name: &str, version: u32) -> anyhow::Result<ExitCode> {
    let client = Client::new(args);
    let url = format!("{}/v1/workflows/{}/versions/{version}", client.base, segment(name)?);
    let body = client.send(client.http.delete(url)).await?;
    if args.json {
        print_json(&body);
    } else {
        println!("{name}: version {version} retired");
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn upgrade(
    args: &ClientArgs,
    run_id: Option<&str>,
    workflow: Option<&str>,
    from: Option<u32>,
    to: u32,
    dry_run: bool,
) -> anyhow::Result<ExitCode> {
    let client = Client::new(args);
    let report = match (run_id, workflow, from) {
        (Some(id), _, _) => {
            client
                .post_json(
                    &format!("/runs/{}/upgrade", segment(id)?),
                    &serde_json::json!({ "to": to, "dry_run": dry_run }),
                )
                .await?
        }
        (None, Some(name), Some(from)) => {
            let body = serde_json::json!({ "from": from, "to": to, "dry_run": dry_run });
            client.post_json(&format!("/workflows/{}/upgrade", segment(name)?), &body).await?
        }
        _ => bail!("give a RUN_ID, or --workflow NAME --from A"),
    };
    Ok(print_upgrades(args, &report))
}

pub async fn start(
    args: &ClientArgs,
    workflow: &str,
    id: Option<String>,
    input: &str,
    wait: bool,
    (concurrency_key, priority): (Option<String>, Option<u8>),
) -> anyhow::Result<ExitCode> {
    let client = Client::new(args);
    let input = super::read_json_arg("--input", input)?;
    // The input goes as typed, not re-serialised: its numbers stay exact.
    #[derive(serde::Serialize)]
    struct Start<'a> {
        workflow: &'a str,
        input: &'a RawValue,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        concurrency_key: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        priority: Option<u8>,
    }
    let input: Box<RawValue> = serde_json::from_str(&input)?;
    let body = serde_json::to_string(&Start { workflow, input: &input, id, concurrency_key, priority })?;
    // With --wait, the start request itself waits for the end (one round
    // trip for a short run); a longer one is long-polled after it.
    let (run, text) = client.post_text(if wait { "/runs?wait=30" } else { "/runs" }, body).await?;
    if wait {
        let id = field_of(&run, "id");
        if matches!(run["status"].as_str(), Some("running" | "queued" | "paused")) {
            return result(args, &id, true).await;
        }
        return Ok(print_result(args, &id, &run, &text));
    }
    if args.json {
        println!("{text}");
    } else {
        println!("{}", field_of(&run, "id"));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn status(args: &ClientArgs, run_id: &str) -> anyhow::Result<ExitCode> {
    let client = Client::new(args);
    let path = format!("{}/v1/runs/{}", client.base, segment(run_id)?);
    let (run, text) = client.send_raw(client.http.get(path)).await?;
    if args.json {
        println!("{text}");
    } else {
        print_run(&run, &text);
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn result(args: &ClientArgs, run_id: &str, wait: bool) -> anyhow::Result<ExitCode> {
    let client = Client::new(args);
    let path = format!("{}/v1/runs/{}/result?wait={}", client.base, segment(run_id)?, if wait { 30 } else { 0 });
    let (run, text) = loop {
        let (run, text) = client.send_raw(client.http.get(&path)).await?;
        if !wait || run["status"] != "running" {
            break (run, text);
        }
    };
    Ok(print_result(args, run_id, &run, &text))
}

/// Prints a run as `result` does: its result, or what became of it.
fn print_result(args: &ClientArgs, run_id: &str, run: &Value, text: &str) -> ExitCode {
    if args.json {
        println!("{text}");
    } else if run["status"] == "completed" {
        println!("{}", RawRun::of(text).result.as_deref().map_or("null", RawValue::get));
    } else if run["status"] == "running" {
        println!("run {run_id} is still running");
    } else {
        eprintln!("{}", serde_json::json!({ "run_id": run_id, "status": run["status"], "failure": run["failure"] }));
    }
    if run["status"] == "completed" || run["status"] == "running" {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

pub async fn list(
    args: &ClientArgs,
    workflow: Option<String>,
    status: Option<String>,
    limit: usize,
    filter: Option<String>,
) -> anyhow::Result<ExitCode> {
    let client = Client::new(args);
    let mut query = vec![format!("limit={}", limit.clamp(1, 1000)), "order=desc".to_owned()];
    if let Some(q) = filter {
        query.push(format!("query={}", escape(&q)));
    }
    if let Some(w) = workflow {
        query.push(format!("workflow={}", escape(&w)));
    }
    if let Some(s) = status {
        query.push(format!("status={}", escape(&s)));
    }
    let page = client.get(&format!("/runs?{}", query.join("&"))).await?;
    if args.json {
        print_json(&page);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<36}  {:<16}  {:>7}  {:<10}  CUSTOM STATUS", "RUN", "WORKFLOW", "VERSION", "STATUS");
    for run in page["runs"].as_array().into_iter().flatten() {
        let custom = if run["custom_status"].is_null() { String::new() } else { run["custom_status"].to_string() };
        println!(
            "{:<36}  {:<16}  {:>7}  {:<10}  {custom}",
            field_of(run, "id"),
            field_of(run, "workflow"),
            field_of(run, "version"),
            field_of(run, "status")
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn journal(args: &ClientArgs, run_id: &str) -> anyhow::Result<ExitCode> {
    let client = Client::new(args);
    let mut records: Vec<Record> = Vec::new();
    let mut from = Some(0u64);
    let mut first_page_generation = None;
    while let Some(seq) = from {
        // Later pages from the generation of the first, even if the run
        // continues as new meanwhile.
        let pinned = first_page_generation.map_or(String::new(), |g| format!("&generation={g}"));
        let page = client.get(&format!("/runs/{}/journal?from={seq}{pinned}", segment(run_id)?)).await?;
        first_page_generation = first_page_generation.or(page["generation"].as_u64().map(|g| g as u32));
        for entry in page["entries"].as_array().into_iter().flatten() {
            records.push(
                serde_json::from_value(entry.clone())
                    .context("the server sent a journal entry this client cannot read")?,
            );
        }
        from = page["next"].as_u64();
    }
    if args.json {
        let generation = match first_page_generation {
            Some(g) => g,
            None => {
                client.get(&format!("/runs/{}", segment(run_id)?)).await?["generation"].as_u64().unwrap_or(0) as u32
            }
        };
        super::embedded::write_export(&mut std::io::stdout().lock(), run_id, generation, records)?;
    } else {
        let start = records.first().map_or(0, |r| r.at_ms);
        println!("{:>5}  {:>9}  {:<18}  DETAIL", "SEQ", "TIME", "ENTRY");
        for r in &records {
            println!("{}", super::embedded::table_row(r, start));
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn signal(args: &ClientArgs, run_id: &str, name: &str, payload: &str) -> anyhow::Result<ExitCode> {
    let payload = super::read_json_arg("--payload", payload)?;
    let path = format!("/runs/{}/signals/{}", segment(run_id)?, segment(name)?);
    let (body, _) = Client::new(args).post_text(&path, payload).await?;
    if args.json {
        print_json(&body);
    } else {
        println!("signal {name} sent to {run_id}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `cairn update`: exit 0 when the handler succeeded (or is still
/// running when the wait ran out), 1 when it failed or was rejected.
pub async fn update(
    args: &ClientArgs,
    run_id: &str,
    name: &str,
    update_args: &str,
    update_id: Option<String>,
    start: Option<(String, String)>,
    wait: f64,
) -> anyhow::Result<ExitCode> {
    let update_args = super::read_json_arg("ARGS", update_args)?;
    let mut body = format!(r#"{{"args":{update_args}"#);
    if let Some(id) = &update_id {
        body.push_str(&format!(r#","update_id":{}"#, Value::from(id.as_str())));
    }
    if let Some((workflow, input)) = start {
        let input = super::read_json_arg("--input", &input)?;
        body.push_str(&format!(r#","start":{{"workflow":{},"input":{input}}}"#, Value::from(workflow)));
    }
    body.push('}');
    let path = format!("/runs/{}/updates/{}?wait={wait}", segment(run_id)?, segment(name)?);
    let (answer, text) = Client::new(args).post_text(&path, body).await?;
    if args.json {
        println!("{text}");
        if answer["status"] == "failed" {
            return Ok(ExitCode::FAILURE);
        }
    } else {
        let update_id = field_of(&answer, "update_id");
        if answer["started"] == Value::Bool(true) {
            println!("started {run_id}");
        }
        match answer["status"].as_str() {
            Some("completed") => {
                let raw: RawRun = serde_json::from_str(&text).unwrap_or_default();
                println!("{}", raw.result.map_or_else(|| "null".to_owned(), |r| r.get().to_owned()));
            }
            Some("failed") => {
                let failure = &answer["failure"];
                eprintln!("update {update_id} failed: {}: {}", field_of(failure, "kind"), field_of(failure, "message"));
                return Ok(ExitCode::FAILURE);
            }
            _ => eprintln!(
                "update {update_id} was accepted and its handler is still running; wait for it with `cairn update {run_id} {name} --id {update_id}`"
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `cairn query`: prints the handler's JSON answer.
pub async fn query(args: &ClientArgs, run_id: &str, name: &str, query_args: &str) -> anyhow::Result<ExitCode> {
    let query_args = super::read_json_arg("ARGS", query_args)?;
    let path = format!("/runs/{}/queries/{}", segment(run_id)?, segment(name)?);
    let (_, text) = Client::new(args).post_text(&path, query_args).await?;
    if args.json {
        println!("{text}");
    } else {
        let raw: RawRun = serde_json::from_str(&text).unwrap_or_default();
        println!("{}", raw.result.map_or_else(|| "null".to_owned(), |r| r.get().to_owned()));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn cancel(args: &ClientArgs, run_id: &str) -> anyhow::Result<ExitCode> {
    let body = Client::new(args).post_json(&format!("/runs/{}/cancel", segment(run_id)?), &Value::Null).await?;
    if args.json {
        print_json(&body);
    } else {
        println!("cancel requested for {run_id}");
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn terminate(args: &ClientArgs, run_id: &str, reason: Option<String>) -> anyhow::Result<ExitCode> {
    let body = match reason {
        Some(r) => serde_json::json!({ "reason": r }),
        None => serde_json::json!({}),
    };
    let body = Client::new(args).post_json(&format!("/runs/{}/terminate", segment(run_id)?), &body).await?;
    if args.json {
        print_json(&body);
    } else {
        println!("terminate requested for {run_id}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `cairn pause` and `cairn resume`.
pub async fn pause_or_resume(args: &ClientArgs, run_id: &str, what: &str) -> anyhow::Result<ExitCode> {
    let path = format!("/runs/{}/{what}", segment(run_id)?);
    let (body, _) = Client::new(args).post_text(&path, "{}".to_owned()).await?;
    if args.json {
        print_json(&body);
    } else {
        println!("{run_id}: {}", body["status"].as_str().unwrap_or("?"));
    }
    Ok(ExitCode::SUCCESS)
}

/// `cairn delete`.
pub async fn delete(args: &ClientArgs, run_id: &str) -> anyhow::Result<ExitCode> {
    let client = Client::new(args);
    let body = client.send(client.http.delete(client.url(&format!("/runs/{}", segment(run_id)?)))).await?;
    match args.json {
        true => print_json(&body),
        false => println!("{run_id}: deleted"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `cairn retention`.
pub async fn retention(args: &ClientArgs, name: &str, period: Option<&str>) -> anyhow::Result<ExitCode> {
    let client = Client::new(args);
    let body = match period {
        None => client.get(&format!("/workflows/{}/versions", segment(name)?)).await?,
        Some(period) => {
            let retention = (period != "default").then_some(period);
            let url = client.url(&format!("/workflows/{}/retention", segment(name)?));
            client.send(client.http.put(url).json(&serde_json::json!({ "retention": retention }))).await?
        }
    };
    if args.json {
        print_json(&body);
    } else {
        match body["retention_ms"].as_u64() {
            Some(ms) => println!(
                "{name}: finished runs are kept {}",
                humantime::format_duration(std::time::Duration::from_millis(ms))
            ),
            None => {
                println!("{name}: finished runs are kept as long as the server's --retention says (forever without it)")
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `cairn reset`.
pub async fn reset(
    args: &ClientArgs,
    run_id: &str,
    to: u64,
    version: Option<u32>,
    id: Option<String>,
) -> anyhow::Result<ExitCode> {
    let body = serde_json::json!({ "to": to, "version": version, "id": id });
    let path = format!("/runs/{}/reset", segment(run_id)?);
    let answer = match Client::new(args).post_json(&path, &body).await {
        Ok(answer) => answer,
        Err(e) if e.to_string().contains("reset-diverges") => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(3));
        }
        Err(e) => return Err(e),
    };
    if args.json {
        print_json(&answer);
    } else {
        let run = &answer["run"];
        println!(
            "{run_id}: reset to seq {to} as {} (version {}){}",
            run["id"].as_str().unwrap_or("?"),
            run["version"],
            if answer["terminated_original"] == true { "; the original was terminated" } else { "" }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `cairn concurrency`.
pub async fn concurrency(args: &ClientArgs, name: &str, limits: &super::LimitFlags) -> anyhow::Result<ExitCode> {
    let client = Client::new(args);
    let body = if limits.is_empty() {
        let versions = client.get(&format!("/workflows/{}/versions", segment(name)?)).await?;
        versions["concurrency"].clone()
    } else {
        let url = client.url(&format!("/workflows/{}/concurrency", segment(name)?));
        client.send(client.http.put(url).json(&limits_body(limits)?)).await?
    };
    if args.json {
        print_json(&body);
    } else {
        print_limits(name, "runs", &body);
    }
    Ok(ExitCode::SUCCESS)
}

/// `cairn activity-limits`.
pub async fn activity_limits(
    args: &ClientArgs,
    name: &str,
    key_from: Option<String>,
    limits: &super::LimitFlags,
) -> anyhow::Result<ExitCode> {
    let client = Client::new(args);
    let path = format!("/activities/{}/limits", segment(name)?);
    let body = if limits.is_empty() && key_from.is_none() {
        client.get(&path).await?
    } else {
        let mut body = limits_body(limits)?;
        body["key"] = key_from.map_or(Value::Null, Value::from);
        client.send(client.http.put(client.url(&path)).json(&body)).await?
    };
    if args.json {
        print_json(&body);
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(pointer) = body["key"].as_str() {
        println!("{name}: keys from the input at {pointer}");
    }
    print_limits(name, "attempts", &body);
    for bucket in body["buckets"].as_array().into_iter().flatten() {
        println!(
            "  now: key {}: {} in flight, {} waiting on this host",
            bucket["key"], bucket["held"], bucket["waiting"]
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The JSON body of `--limit`, `--key`, `--rate`, `--burst`, `--key-rate`.
fn limits_body(limits: &super::LimitFlags) -> anyhow::Result<Value> {
    let mut per_key = serde_json::Map::new();
    for key in &limits.keys {
        let Some((k, n)) = key.rsplit_once('=') else {
            bail!("--key {key:?} is not KEY=N (e.g. --key acme=5)");
        };
        let n: u32 = n.parse().with_context(|| format!("--key {key:?}: {n:?} is not a number"))?;
        per_key.insert(k.to_owned(), n.into());
    }
    let mut key_rates = serde_json::Map::new();
    for key in &limits.key_rates {
        let Some((k, rate)) = key.rsplit_once('=') else {
            bail!("--key-rate {key:?} is not KEY=RATE (e.g. --key-rate acme=5/s)");
        };
        key_rates.insert(k.to_owned(), rate.into());
    }
    Ok(serde_json::json!({
        "limit": limits.limit, "keys": per_key, "rate": limits.rate, "burst": limits.burst, "key_rates": key_rates,
    }))
}

fn print_limits(name: &str, what: &str, body: &Value) {
    let limit = body["limit"].as_u64();
    let keys = body["keys"].as_object().cloned().unwrap_or_default();
    let key_rates = body["key_rates"].as_object().cloned().unwrap_or_default();
    if let Some(every) = body["rate"]["every_ms"].as_u64() {
        println!(
            "{name}: each key starts one of its {what} every {every} ms at most, bursts of {}",
            body["rate"]["burst"]
        );
    }
    for (key, rate) in &key_rates {
        println!("  key {key:?}: one every {} ms at most, bursts of {}", rate["every_ms"], rate["burst"]);
    }
    if limit.is_none() && keys.is_empty() && body["rate"].is_null() && key_rates.is_empty() {
        println!("{name}: no limits");
    } else if limit.is_some() || !keys.is_empty() {
        match limit {
            Some(n) => println!("{name}: at most {n} {what} of each concurrency key at once"),
            None => println!("{name}: no limit for keys without their own"),
        }
        for (key, n) in keys {
            println!("  key {key:?}: at most {n}");
        }
    }
}

/// `cairn batch`.
pub async fn batch(
    args: &ClientArgs,
    operation: &str,
    query: &str,
    dry_run: bool,
    (signal, payload): (Option<String>, String),
    reason: Option<String>,
    to: Option<u32>,
) -> anyhow::Result<ExitCode> {
    let payload: Box<RawValue> = RawValue::from_string(payload)?;
    let body = serde_json::json!({
        "query": query, "operation": operation, "dry_run": dry_run, "signal": signal,
        "payload": payload, "reason": reason, "to": to,
    });
    let report = Client::new(args).post_json("/batch", &body).await?;
    if args.json {
        print_json(&report);
        return Ok(ExitCode::SUCCESS);
    }
    let mut failed = 0;
    for run in report["runs"].as_array().into_iter().flatten() {
        let outcome = run["outcome"].as_str().unwrap_or("?");
        match run["error"].as_str() {
            Some(error) => {
                failed += 1;
                println!("{}: {outcome}: {error}", field_of(run, "run_id"));
            }
            None => println!("{}: {outcome}", field_of(run, "run_id")),
        }
    }
    let verb = if dry_run { "would be touched" } else { "touched" };
    println!(
        "{} runs matched, {} {verb}, {failed} failed",
        report["matched"],
        report["matched"].as_u64().unwrap_or(0) - failed
    );
    if report["more"] == true {
        println!("more runs may match: run the batch again");
    }
    Ok(if failed > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
