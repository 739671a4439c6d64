//! The `/v1` handlers: parse the request, call the runtime or registry, map
//! the answer to JSON. No engine logic lives here.

use super::error::ApiError;
use super::AppState;
use crate::journal::Failure;
use crate::runtime::StartRequest;
use crate::store::{ComponentKind, RunMeta, RunQuery, RunStatus};
use crate::upgrade::{RunUpgrade, Upgrader};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use std::time::Duration;

pub(super) type ApiResult<T> = Result<T, ApiError>;

/// How long a request waits for its commit before it answers that the
/// outcome is unknown (the store keeps retrying it: a full disk).
const COMMIT_DEADLINE: Duration = Duration::from_secs(30);

/// `work`'s result by `deadline`, or a 503 saying the outcome is unknown
/// (the work goes on; `what` names it).
async fn within<T>(
    app: &AppState,
    deadline: tokio::time::Instant,
    what: &str,
    work: impl std::future::Future<Output = T>,
) -> ApiResult<T> {
    match tokio::time::timeout_at(deadline, work).await {
        Ok(value) => Ok(value),
        Err(_) => {
            let why = match app.rt.store().write_failure() {
                Some(reason) => format!("store writes are failing ({reason})"),
                None => "the store is slow".to_owned(),
            };
            Err(ApiError::outcome_unknown(format!("{what} was not confirmed by its deadline: {why}")))
        }
    }
}

/// Runs `work` in a task of its own and waits for it. A client that hangs
/// up drops its request's future; run inline, a change could then commit
/// and never be acted on (the run not woken, the signal not delivered, an
/// activity version not registered). Detached, everything a request
/// commits is followed through whether or not anyone waits for the answer.
pub(super) async fn detached<T: Send + 'static>(work: impl std::future::Future<Output = T> + Send + 'static) -> T {
    use tracing::Instrument;
    match tokio::spawn(work.instrument(tracing::Span::current())).await {
        Ok(value) => value,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("a request's work was cancelled: {e}"),
    }
}

/// Parses a JSON body into `T`, with the API's error for bad JSON.
/// A body that is itself a JSON value, kept as sent (the runtime checks it
/// is JSON), so its numbers stay exact; an empty body is `null`.
pub(super) fn json_body(body: Result<Bytes, BytesRejection>, code: &'static str, what: &str) -> ApiResult<String> {
    let body = body?;
    let text = std::str::from_utf8(&body)
        .map_err(|e| ApiError::bad_request(code, format!("{what} is not UTF-8 text: {e}")))?;
    Ok(match text.trim() {
        "" => "null".to_owned(),
        text => text.to_owned(),
    })
}

pub(super) fn parse<T: serde::de::DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> ApiResult<T> {
    let body = body?;
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) { b"{}" } else { &body };
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("invalid-json", format!("the request body is not valid: {e}")))
}

/// A stored JSON payload, shown as the JSON it is, byte for byte: parsing
/// it into a [`Value`] would round its numbers (floats past 17 digits,
/// integers past 64 bits) and the API would show other numbers than the
/// journal holds. Text that is not JSON is shown as a string.
pub(super) fn json_text(text: &str) -> Box<RawValue> {
    RawValue::from_string(text.to_owned()).unwrap_or_else(|_| {
        let quoted = serde_json::to_string(text).unwrap_or_else(|_| "null".to_owned());
        RawValue::from_string(quoted).expect("a JSON string is JSON")
    })
}

/// A run as the API shows it.
#[derive(Serialize)]
pub(crate) struct RunView {
    id: String,
    workflow: String,
    version: Option<u32>,
    generation: u32,
    parent: Option<String>,
    status: &'static str,
    input: Box<RawValue>,
    custom_status: Option<Box<RawValue>>,
    result: Option<Box<RawValue>>,
    failure: Option<Failure>,
    created_ms: u64,
    updated_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    concurrency_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    priority: Option<u8>,
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    search_attributes: serde_json::Map<String, Value>,
}

impl From<RunMeta> for RunView {
    fn from(m: RunMeta) -> Self {
        RunView {
            status: m.status.as_str(),
            input: json_text(&m.input),
            custom_status: m.custom_status.as_deref().map(json_text),
            result: m.result.as_deref().map(json_text),
            failure: m.failure,
            id: m.id,
            workflow: m.workflow,
            version: m.version,
            generation: m.generation,
            parent: m.parent.map(|p| p.run_id),
            created_ms: m.created_ms,
            updated_ms: m.updated_ms,
            concurrency_key: m.slot.as_ref().map(|s| s.key.clone()),
            priority: m.slot.as_ref().map(|s| s.priority),
            search_attributes: m.search.iter().map(|(k, v)| (k.clone(), v.to_json())).collect(),
        }
    }
}

/// 200 while the host advances runs; 503 while store writes fail (a full
/// disk), with the reason: runs are paused then, and resume by themselves.
pub(crate) async fn health(State(app): State<AppState>) -> (StatusCode, Json<Value>) {
    match app.rt.store().write_failure() {
        None => (StatusCode::OK, Json(serde_json::json!({ "status": "ok", "metrics": app.rt.metrics() }))),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({
                "status": "degraded",
                "code": "store-writes-failing",
                "message": format!("store writes are failing ({reason}); runs are paused and resume once writes succeed: free disk space or fix the I/O error"),
                "metrics": app.rt.metrics(),
            })),
        ),
    }
}

/// Every metric in Prometheus text format.
pub(crate) async fn prometheus(State(app): State<AppState>) -> impl IntoResponse {
    let rt = app.rt.clone();
    // The parked-run gauge scans the runs table: off the async workers.
    let text = rt.prometheus().await;
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text)
}

pub(crate) async fn metrics(State(app): State<AppState>) -> Json<Value> {
    Json(serde_json::to_value(app.rt.metrics()).unwrap_or(Value::Null))
}

#[derive(Deserialize)]
pub(crate) struct DeployQuery {
    kind: Option<String>,
    upgrade: Option<String>,
}

pub(crate) async fn deploy(
    State(app): State<AppState>,
    Path(name): Path<String>,
    query: Result<Query<DeployQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<impl IntoResponse> {
    let Query(query) = query?;
    let kind = match query.kind.as_deref().unwrap_or("workflow") {
        "workflow" => ComponentKind::Workflow,
        "activity" => ComponentKind::Activity,
        other => {
            return Err(ApiError::bad_request(
                "invalid-kind",
                format!("kind must be workflow or activity, not {other:?}"),
            ))
        }
    };
    let bytes = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            format!("the component is over the limit of {} bytes (64 MiB)", crate::registry::MAX_COMPONENT_BYTES),
        ),
        _ => e.into(),
    })?;
    if bytes.is_empty() {
        return Err(ApiError::bad_request("empty-body", "send the component's .wasm bytes as the request body"));
    }
    let upgrade = match query.upgrade.as_deref() {
        None | Some("none") => false,
        Some("compatible") if kind == ComponentKind::Workflow => true,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid-upgrade",
                format!("upgrade must be `compatible` (for workflows) or `none`, not {other:?}"),
            ))
        }
    };
    // The deploy and its upgrade are one piece of work: a client hanging
    // up between them must not leave the upgrade undone.
    let (rt, registry) = (app.rt.clone(), app.registry.clone());
    let (deployed, upgrades) = detached(async move {
        let deployed = registry.deploy(&name, kind, bytes.to_vec()).await?;
        let upgrades = match upgrade {
            true => Some(Upgrader::new(rt).upgrade_compatible(&registry, &name).await?),
            false => None,
        };
        Ok::<_, ApiError>((deployed, upgrades))
    })
    .await?;
    let status = if deployed.created { StatusCode::CREATED } else { StatusCode::OK };
    let mut body = serde_json::to_value(&deployed).unwrap_or(Value::Null);
    if let Some(report) = upgrades {
        body["upgrades"] = serde_json::to_value(report).unwrap_or(Value::Null);
    }
    Ok((status, Json(body)))
}

pub(crate) async fn components(State(app): State<AppState>) -> ApiResult<Json<Value>> {
    Ok(Json(serde_json::json!({ "components": app.registry.list().await? })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StartBody {
    pub(super) workflow: String,
    /// Kept as sent: the run gets the client's own text, numbers exact.
    #[serde(default)]
    input: Option<Box<RawValue>>,
    #[serde(default)]
    pub(super) id: Option<String>,
    /// The run's concurrency bucket (see `PUT /workflows/{name}/concurrency`).
    #[serde(default)]
    concurrency_key: Option<String>,
    /// 1 (first) to 5 among queued runs.
    #[serde(default)]
    priority: Option<u8>,
}

pub(crate) async fn start(
    State(app): State<AppState>,
    query: Result<Query<WaitQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<impl IntoResponse> {
    // Checked before anything starts: a bad `wait` starts no run.
    let wait = wait_param(query)?;
    let body: StartBody = parse(body)?;
    let deadline = tokio::time::Instant::now() + if wait.is_zero() { COMMIT_DEADLINE } else { wait };
    let (meta, existed) = start_run(&app, body, deadline).await?;
    let status = if existed { StatusCode::OK } else { StatusCode::CREATED };
    // Start and long-poll in one request: the run as `result` returns it.
    // The start is stored: a failure to read the run back is not the
    // start's failure.
    let meta = match wait.is_zero() {
        true => meta,
        false => match tokio::time::timeout_at(deadline, app.rt.wait_for_end(&meta.id, wait)).await {
            Ok(Ok(Some(ended))) => ended,
            Ok(Ok(None)) | Err(_) => meta,
            Ok(Err(e)) => {
                tracing::warn!(run_id = %meta.id, error = %e, "the run started; reading its end failed");
                meta
            }
        },
    };
    Ok((status, Json(RunView::from(meta))))
}

/// Starts the run `body` asks for by `deadline` (or finds the one under its
/// id), and says whether it existed.
pub(super) async fn start_run(
    app: &AppState,
    body: StartBody,
    deadline: tokio::time::Instant,
) -> ApiResult<(RunMeta, bool)> {
    let Some((version, component, limits)) = app.registry.workflow_to_start(&body.workflow).await? else {
        return Err(ApiError::not_found(
            "workflow-not-found",
            format!(
                "no workflow named {:?} is deployed; deploy it with `cairn deploy {} FILE.wasm`",
                body.workflow, body.workflow
            ),
        ));
    };
    let existed = match &body.id {
        Some(id) => app.rt.store().run(id).await?.is_some(),
        None => false,
    };
    let request = StartRequest {
        workflow: body.workflow,
        component,
        input: body.input.map_or_else(|| "null".to_owned(), |raw| raw.get().to_owned()),
        run_id: body.id,
        version: Some(version),
    };
    let flow = crate::runtime::Flow { concurrency_key: body.concurrency_key, priority: body.priority, limits };
    let rt = app.rt.clone();
    // The answer comes by the request's deadline even while the store
    // cannot commit (a full disk): the start goes on in the background.
    let started = detached(async move {
        let meta = rt.start_with(request, flow).await?;
        rt.wake(&meta.id);
        Ok::<_, crate::runtime::StartError>(meta)
    });
    let meta = within(app, deadline, "the start", started).await??;
    Ok((meta, existed))
}

async fn run_meta(app: &AppState, id: &str) -> ApiResult<RunMeta> {
    app.rt
        .store()
        .run(id)
        .await?
        .ok_or_else(|| ApiError::not_found("run-not-found", format!("run {id} does not exist")))
}

pub(crate) async fn get_run(State(app): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<RunView>> {
    Ok(Json(run_meta(&app, &id).await?.into()))
}

#[derive(Deserialize)]
pub(crate) struct WaitQuery {
    wait: Option<f64>,
}

/// Longest a client may wait in one request.
pub(super) const MAX_WAIT_S: f64 = 60.0;

/// The `wait` of a long poll, 0 when absent.
fn wait_param(query: Result<Query<WaitQuery>, QueryRejection>) -> ApiResult<Duration> {
    let Query(query) = query?;
    let wait = query.wait.unwrap_or(0.0);
    if !(0.0..=MAX_WAIT_S).contains(&wait) {
        return Err(ApiError::bad_request("invalid-wait", format!("wait must be between 0 and {MAX_WAIT_S} seconds")));
    }
    Ok(Duration::from_secs_f64(wait))
}

pub(crate) async fn result(
    State(app): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<WaitQuery>, QueryRejection>,
) -> ApiResult<Json<RunView>> {
    let wait = wait_param(query)?;
    let meta = app.rt.wait_for_end(&id, wait).await?;
    let meta = meta.ok_or_else(|| ApiError::not_found("run-not-found", format!("run {id} does not exist")))?;
    Ok(Json(meta.into()))
}

#[derive(Deserialize)]
pub(crate) struct ListQuery {
    workflow: Option<String>,
    status: Option<String>,
    limit: Option<usize>,
    after: Option<String>,
    order: Option<String>,
    /// A filter: `workflow = "order" and amount > 1000` (see `search`).
    query: Option<String>,
}

pub(crate) async fn list(
    State(app): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<RunPage>> {
    let Query(q) = query?;
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => Some(RunStatus::parse(s).ok_or_else(|| {
            ApiError::bad_request(
                "invalid-status",
                format!("unknown status {s:?}: use running, queued, paused, completed, failed, diverged or terminated"),
            )
        })?),
    };
    // `desc`: the ids the host makes are time-ordered, so newest first.
    let descending = match q.order.as_deref() {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(other) => {
            return Err(ApiError::bad_request("invalid-order", format!("unknown order {other:?}: use asc or desc")))
        }
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let query = RunQuery {
        workflow: q.workflow,
        statuses: status.into_iter().collect(),
        after: q.after,
        descending,
        limit,
        ..RunQuery::default()
    };
    if let Some(text) = q.query.as_deref() {
        let filter = parse_query(text)?;
        let (runs, next) = crate::search::find(app.rt.store(), &filter, query, limit).await?;
        return Ok(Json(RunPage { runs: runs.into_iter().map(RunView::from).collect(), next }));
    }
    let page = app.rt.store().runs(&query).await?;
    let runs: Vec<RunView> = page.runs.into_iter().map(RunView::from).collect();
    Ok(Json(RunPage { runs, next: page.next }))
}

fn parse_query(text: &str) -> ApiResult<crate::search::Query> {
    crate::search::Query::parse(text).map_err(|e| ApiError::bad_request("invalid-query", e.to_string()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BatchBody {
    /// Which runs.
    query: String,
    /// `signal`, `cancel`, `terminate`, `delete` or `upgrade`.
    operation: String,
    /// Only list the runs it would touch.
    #[serde(default)]
    dry_run: bool,
    /// For `signal`: its name and payload.
    #[serde(default)]
    signal: Option<String>,
    #[serde(default)]
    payload: Option<Box<RawValue>>,
    /// For `terminate`.
    #[serde(default)]
    reason: Option<String>,
    /// For `upgrade`: the version.
    #[serde(default)]
    to: Option<u32>,
}

/// Most runs one batch touches.
const MAX_BATCH: usize = 10_000;

/// One operation on every run a query matches, run by run.
pub(crate) async fn batch(State(app): State<AppState>, body: Result<Bytes, BytesRejection>) -> ApiResult<Json<Value>> {
    let body: BatchBody = parse(body)?;
    let filter = parse_query(&body.query)?;
    let op = body.operation.as_str();
    match (op, &body.signal, body.to) {
        ("signal", None, _) => {
            return Err(ApiError::bad_request("invalid-batch", "a signal batch needs `signal` (its name)"))
        }
        ("upgrade", _, None) => {
            return Err(ApiError::bad_request("invalid-batch", "an upgrade batch needs `to` (the version)"))
        }
        ("signal" | "cancel" | "terminate" | "delete" | "upgrade", _, _) => {}
        (other, _, _) => {
            return Err(ApiError::bad_request(
                "invalid-batch",
                format!("unknown operation {other:?}: use signal, cancel, terminate, delete or upgrade"),
            ))
        }
    }
    let (runs, more) = crate::search::find(app.rt.store(), &filter, RunQuery::default(), MAX_BATCH).await?;
    let mut report = Vec::with_capacity(runs.len());
    for run in &runs {
        let id = run.id.as_str();
        let outcome: Result<(), String> = if body.dry_run {
            Ok(())
        } else {
            match op {
                "signal" => {
                    let payload = body.payload.as_ref().map_or("null", |p| p.get());
                    app.rt
                        .signal(id, body.signal.as_deref().unwrap_or_default(), payload)
                        .await
                        .map_err(|e| e.to_string())
                }
                "cancel" => app.rt.cancel_run(id).await.map_err(|e| e.to_string()),
                "terminate" => {
                    let reason = body.reason.as_deref().unwrap_or("terminated by a batch");
                    app.rt.terminate(id, reason).await.map_err(|e| e.to_string())
                }
                "delete" => app.rt.delete_run(id).await.map_err(|e| e.to_string()),
                _ => match Upgrader::new(app.rt.clone()).upgrade_run(id, body.to.unwrap_or_default(), false).await {
                    Ok(RunUpgrade::Refused { divergence, .. }) => Err(format!("refused: {divergence}")),
                    Ok(RunUpgrade::Skipped { reason, .. }) => Err(format!("skipped: {reason}")),
                    Ok(_) => Ok(()),
                    Err(e) => Err(e.to_string()),
                },
            }
        };
        report.push(match outcome {
            Ok(()) if body.dry_run => serde_json::json!({ "run_id": id, "outcome": format!("would-{op}") }),
            Ok(()) => serde_json::json!({ "run_id": id, "outcome": "done" }),
            Err(error) => serde_json::json!({ "run_id": id, "outcome": "error", "error": error }),
        });
    }
    Ok(Json(serde_json::json!({
        "operation": op,
        "dry_run": body.dry_run,
        "matched": runs.len(),
        "more": more.is_some(),
        "runs": report,
    })))
}

/// A page of runs. A struct, not `json!`: that would turn the runs'
/// payloads into [`Value`]s and round their numbers.
#[derive(Serialize)]
pub(crate) struct RunPage {
    runs: Vec<RunView>,
    next: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct JournalQuery {
    generation: Option<u32>,
    from: Option<u64>,
    limit: Option<usize>,
}

pub(crate) async fn journal(
    State(app): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<JournalQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(q) = query?;
    let from = q.from.unwrap_or(0);
    let limit = q.limit.unwrap_or(1000).clamp(1, 10_000);
    let meta = run_meta(&app, &id).await?;
    let records = match q.generation {
        None => app.rt.store().journal(&id).await?,
        Some(g) if g == meta.generation => app.rt.store().journal(&id).await?,
        Some(g) if g < meta.generation => app.rt.store().history(&id, g).await?,
        Some(g) => {
            return Err(ApiError::bad_request(
                "invalid-generation",
                format!("run {id} is in generation {}; generation {g} does not exist yet", meta.generation),
            ))
        }
    };
    let page: Vec<_> = records.iter().filter(|r| r.seq >= from).take(limit + 1).collect();
    let next = page.get(limit).map(|r| r.seq);
    let entries: Vec<_> = page.into_iter().take(limit).collect();
    // The run and generation travel with the entries, so an export
    // (`cairn journal ID --json`) replays offline under the run's own id.
    let generation = q.generation.unwrap_or(meta.generation);
    Ok(Json(serde_json::json!({ "run_id": id, "generation": generation, "entries": entries, "next": next })))
}

pub(crate) async fn signal(
    State(app): State<AppState>,
    Path((id, name)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<impl IntoResponse> {
    let payload = json_body(body, "invalid-json", "the signal payload")?;
    let (rt, run_id, signal) = (app.rt.clone(), id.clone(), name.clone());
    let deadline = tokio::time::Instant::now() + COMMIT_DEADLINE;
    within(&app, deadline, "the signal", detached(async move { rt.signal(&run_id, &signal, &payload).await }))
        .await??;
    Ok((StatusCode::ACCEPTED, Json(serde_json::json!({ "run_id": id, "signal": name, "accepted": true }))))
}

pub(crate) async fn cancel(State(app): State<AppState>, Path(id): Path<String>) -> ApiResult<impl IntoResponse> {
    let (rt, run_id) = (app.rt.clone(), id.clone());
    detached(async move { rt.cancel_run(&run_id).await }).await?;
    Ok((StatusCode::ACCEPTED, Json(serde_json::json!({ "run_id": id, "cancel": "requested" }))))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct TerminateBody {
    #[serde(default)]
    reason: Option<String>,
}

pub(crate) async fn terminate(
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<impl IntoResponse> {
    let body: TerminateBody = parse(body)?;
    let reason = body.reason.unwrap_or_else(|| "terminated by an operator".into());
    let (rt, run_id) = (app.rt.clone(), id.clone());
    let forwarded = headers.contains_key("x-cairn-forwarded");
    detached(crate::runtime::FORWARDED.scope(forwarded, async move { rt.terminate(&run_id, &reason).await })).await?;
    Ok((StatusCode::ACCEPTED, Json(serde_json::json!({ "run_id": id, "terminate": "requested" }))))
}

/// Pauses a run: it takes no steps until resumed (timers, results and
/// signals that come meanwhile are kept).
pub(crate) async fn pause(
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
) -> ApiResult<Json<RunView>> {
    let (rt, forwarded) = (app.rt.clone(), headers.contains_key("x-cairn-forwarded"));
    let meta = detached(crate::runtime::FORWARDED.scope(forwarded, async move { rt.pause(&id).await })).await?;
    Ok(Json(meta.into()))
}

/// Resumes a paused run.
pub(crate) async fn resume(
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
) -> ApiResult<Json<RunView>> {
    let (rt, forwarded) = (app.rt.clone(), headers.contains_key("x-cairn-forwarded"));
    let meta = detached(crate::runtime::FORWARDED.scope(forwarded, async move { rt.resume(&id).await })).await?;
    Ok(Json(meta.into()))
}

pub(crate) async fn versions(State(app): State<AppState>, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    let versions = app.registry.versions(&name).await?;
    let deployment = app.registry.deployment(&name).await?;
    let retention_ms = deployment.as_ref().and_then(|d| d.retention_ms);
    let concurrency = deployment.and_then(|d| d.concurrency);
    Ok(Json(serde_json::json!({
        "workflow": name,
        "versions": versions,
        "retention_ms": retention_ms,
        "concurrency": concurrency,
    })))
}

/// Deletes a finished run with its journal.
pub(crate) async fn delete_run(State(app): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    app.rt.delete_run(&id).await?;
    Ok(Json(serde_json::json!({ "run_id": id, "deleted": true })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConcurrencyBody {
    /// Most runs of one key at once (runs without a key share one).
    #[serde(default)]
    limit: Option<u32>,
    /// Limits of particular keys.
    #[serde(default)]
    keys: std::collections::BTreeMap<String, u32>,
    /// How fast runs of one key may start: `10/s`, `100/min`, `5/h`.
    #[serde(default)]
    rate: Option<String>,
    /// Most starts at once after a quiet spell (default: the rate's count).
    #[serde(default)]
    burst: Option<u32>,
    /// Rates of particular keys, in place of `rate` (their burst is their
    /// count).
    #[serde(default)]
    key_rates: std::collections::BTreeMap<String, String>,
}

/// Limits as a request gives them, checked.
pub(super) fn concurrency_of(
    limit: Option<u32>,
    keys: std::collections::BTreeMap<String, u32>,
    (rate, burst): (Option<&str>, Option<u32>),
    key_rates: &std::collections::BTreeMap<String, String>,
) -> ApiResult<crate::store::Concurrency> {
    if limit == Some(0) || keys.values().any(|l| *l == 0) {
        return Err(ApiError::bad_request(
            "invalid-limit",
            "a concurrency limit is at least 1 (to stop a workflow's runs, pause them)",
        ));
    }
    let bucket = |text: &str, burst: Option<u32>| {
        let (every_ms, n) = parse_rate(text).map_err(|e| ApiError::bad_request("invalid-rate", e))?;
        match burst.unwrap_or(n) {
            0 => Err(ApiError::bad_request("invalid-rate", "a burst is at least 1")),
            burst => Ok(crate::store::Rate { every_ms, burst }),
        }
    };
    let rate = match rate {
        Some(text) => Some(bucket(text, burst)?),
        None if burst.is_some() => {
            return Err(ApiError::bad_request("invalid-rate", "a burst goes with a rate (\"rate\": \"10/s\")"))
        }
        None => None,
    };
    let key_rates = key_rates.iter().map(|(k, text)| Ok((k.clone(), bucket(text, None)?))).collect::<ApiResult<_>>()?;
    Ok(crate::store::Concurrency { limit, keys, rate, key_rates })
}

/// `N/s`, `N/min` or `N/h` as a token every so many ms, and `N`.
fn parse_rate(text: &str) -> Result<(u64, u32), String> {
    let (n, unit) =
        text.trim().split_once('/').ok_or_else(|| format!("{text:?} is not a rate such as 10/s, 100/min or 5/h"))?;
    let n: u32 = n.trim().parse().map_err(|_| format!("{text:?}: {n:?} is not a whole number of starts"))?;
    let unit_ms: u64 = match unit.trim() {
        "s" | "sec" | "second" => 1_000,
        "m" | "min" | "minute" => 60_000,
        "h" | "hour" => 3_600_000,
        other => return Err(format!("{text:?}: unknown unit {other:?}; use s, min or h")),
    };
    if n == 0 || u64::from(n) > unit_ms {
        return Err(format!("{text:?}: a rate is 1 to {unit_ms} starts per {}", unit.trim()));
    }
    Ok((unit_ms / u64::from(n), n))
}

/// Sets a workflow's concurrency limits (`{}` removes them).
pub(crate) async fn set_concurrency(
    State(app): State<AppState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let body: ConcurrencyBody = parse(body)?;
    let concurrency = concurrency_of(body.limit, body.keys, (body.rate.as_deref(), body.burst), &body.key_rates)?;
    let registry = app.registry.clone();
    let workflow = name.clone();
    let d = detached(async move { registry.set_concurrency(&workflow, Some(concurrency)).await }).await?;
    let concurrency = d.concurrency.unwrap_or_default();
    Ok(Json(serde_json::json!({
        "workflow": name,
        "limit": concurrency.limit,
        "keys": concurrency.keys,
        "rate": concurrency.rate,
        "key_rates": concurrency.key_rates,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetentionBody {
    /// A duration (`30d`), or null for the host's default.
    retention: Option<String>,
}

/// Sets how long a workflow's finished runs are kept.
pub(crate) async fn set_retention(
    State(app): State<AppState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let body: RetentionBody = parse(body)?;
    let retention_ms = match body.retention.as_deref() {
        Some(text) => Some(
            crate::schedule::parse_duration(text)
                .map_err(|e| ApiError::bad_request("invalid-retention", e.to_string()))?,
        ),
        None => None,
    };
    let d = app.registry.set_retention(&name, retention_ms).await?;
    Ok(Json(serde_json::json!({ "workflow": name, "retention_ms": d.retention_ms })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RollbackBody {
    to: u32,
}

pub(crate) async fn rollback(
    State(app): State<AppState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let body: RollbackBody = parse(body)?;
    let (registry, workflow) = (app.registry.clone(), name.clone());
    let d = detached(async move { registry.rollback(&workflow, body.to).await }).await?;
    Ok(Json(serde_json::json!({ "workflow": name, "current": d.current })))
}

pub(crate) async fn retire(
    State(app): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let version: u32 = version
        .parse()
        .map_err(|_| ApiError::bad_request("invalid-version", format!("{version:?} is not a version number")))?;
    let (registry, workflow) = (app.registry.clone(), name.clone());
    let d = detached(async move { registry.retire(&workflow, version).await }).await?;
    let left: Vec<u32> = d.versions.iter().map(|v| v.version).collect();
    Ok(Json(serde_json::json!({ "workflow": name, "retired": version, "versions": left })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpgradeRunBody {
    to: u32,
    #[serde(default)]
    dry_run: bool,
}

fn upgrade_response(report: Vec<RunUpgrade>) -> Json<Value> {
    let refused = report.iter().filter(|r| matches!(r, RunUpgrade::Refused { .. })).count();
    Json(serde_json::json!({ "runs": report, "refused": refused }))
}

pub(crate) async fn upgrade_run(
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let body: UpgradeRunBody = parse(body)?;
    let rt = app.rt.clone();
    let forwarded = headers.contains_key("x-cairn-forwarded");
    let upgrade = async move { Upgrader::new(rt).upgrade_run(&id, body.to, body.dry_run).await };
    let report = detached(crate::runtime::FORWARDED.scope(forwarded, upgrade)).await?;
    Ok(upgrade_response(vec![report]))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResetBody {
    /// The new run keeps the entries before this seq.
    to: u64,
    #[serde(default)]
    version: Option<u32>,
    #[serde(default)]
    id: Option<String>,
}

/// A new run from a run's journal up to a seq, on a version that was
/// verified to reproduce it.
pub(crate) async fn reset(
    State(app): State<AppState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<impl IntoResponse> {
    let body: ResetBody = parse(body)?;
    let rt = app.rt.clone();
    let reset = detached(async move { Upgrader::new(rt).reset(&id, body.to, body.version, body.id).await }).await?;
    let run: RunView = reset.run.into();
    let answer = serde_json::json!({
        "run": run,
        "from": reset.from,
        "kept": reset.kept,
        "terminated_original": reset.terminated_original,
    });
    Ok((StatusCode::CREATED, Json(answer)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpgradeWorkflowBody {
    from: u32,
    to: u32,
    #[serde(default)]
    dry_run: bool,
}

pub(crate) async fn upgrade_workflow(
    State(app): State<AppState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let body: UpgradeWorkflowBody = parse(body)?;
    let rt = app.rt.clone();
    let report =
        detached(async move { Upgrader::new(rt).upgrade_workflow(&name, body.from, body.to, body.dry_run).await })
            .await?;
    Ok(upgrade_response(report))
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::not_found("no-such-endpoint", "no such endpoint; see /v1/openapi.json")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PollBody {
    worker_id: String,
    activities: Vec<String>,
    #[serde(default)]
    wait_ms: Option<u64>,
}

/// Longest a worker's poll waits for a task.
const MAX_POLL_WAIT_MS: u64 = 60_000;

/// An external worker asks for a task of one of its activities.
pub(crate) async fn poll_task(
    State(app): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let body: PollBody = parse(body)?;
    if body.worker_id.is_empty() || body.activities.is_empty() {
        return Err(ApiError::bad_request(
            "invalid-poll",
            "a poll needs a worker_id and the activities it serves (e.g. [\"inventory\"] or [\"inventory.reserve\"])",
        ));
    }
    let wait = std::time::Duration::from_millis(body.wait_ms.unwrap_or(30_000).min(MAX_POLL_WAIT_MS));
    let task = app.rt.activities().external().poll(&body.worker_id, &body.activities, wait).await?;
    Ok(Json(serde_json::json!({ "task": task })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CompleteBody {
    /// Kept as sent, so the journal holds the worker's own text.
    result: Box<serde_json::value::RawValue>,
}

pub(crate) async fn complete_task(
    State(app): State<AppState>,
    Path(token): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let body: CompleteBody = parse(body)?;
    let text = body.result.get().to_owned();
    if text.len() > crate::journal::MAX_PAYLOAD_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            format!(
                "the result is {} bytes, over the limit of {} bytes (4 MiB) for one journaled payload",
                text.len(),
                crate::journal::MAX_PAYLOAD_BYTES
            ),
        ));
    }
    app.rt.activities().external().finish(&token, Ok(text)).await?;
    Ok(Json(serde_json::json!({ "task_token": token, "accepted": true })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FailBody {
    kind: String,
    message: String,
    #[serde(default)]
    details: Option<Box<RawValue>>,
}

pub(crate) async fn fail_task(
    State(app): State<AppState>,
    Path(token): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let body: FailBody = parse(body)?;
    let failure = Failure { kind: body.kind, message: body.message, details: body.details.map(|d| d.get().to_owned()) };
    app.rt.activities().external().finish(&token, Err(failure)).await?;
    Ok(Json(serde_json::json!({ "task_token": token, "accepted": true })))
}

pub(crate) async fn heartbeat_task(State(app): State<AppState>, Path(token): Path<String>) -> ApiResult<Json<Value>> {
    app.rt.activities().external().heartbeat(&token).await?;
    Ok(Json(serde_json::json!({ "task_token": token, "alive": true })))
}
