//! The `/v1/schedules` handlers.

use super::error::ApiError;
use super::routes::{json_text, parse, ApiResult};
use super::AppState;
use crate::schedule::{parse_duration, parse_time, rfc3339, NewSchedule, ScheduleError, Schedules};
use crate::store::{Overlap, Schedule, ScheduleSpec, When};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

impl From<ScheduleError> for ApiError {
    fn from(e: ScheduleError) -> Self {
        let bad = |code: &'static str, e: &ScheduleError| ApiError::bad_request(code, e.to_string());
        match e {
            ScheduleError::InvalidName(_) => bad("invalid-schedule-name", &e),
            ScheduleError::InvalidCron { .. } => bad("invalid-cron", &e),
            ScheduleError::UnknownTimezone(_) => bad("unknown-timezone", &e),
            ScheduleError::InvalidSpec(_) => bad("invalid-schedule", &e),
            ScheduleError::InvalidInput(_) => bad("invalid-input", &e),
            ScheduleError::Exists(_) => ApiError::new(StatusCode::CONFLICT, "schedule-exists", e.to_string()),
            ScheduleError::Busy(_) => ApiError::new(StatusCode::CONFLICT, "schedule-busy", e.to_string()),
            ScheduleError::NotFound(_) => ApiError::not_found("schedule-not-found", e.to_string()),
            ScheduleError::WorkflowNotFound(_) => ApiError::not_found("workflow-not-found", e.to_string()),
            ScheduleError::Registry(e) => e.into(),
            ScheduleError::Start(e) => e.into(),
            ScheduleError::Store(e) => e.into(),
        }
    }
}

/// A schedule as the API shows it: times in RFC 3339, durations in ms.
pub(crate) fn view(schedule: &Schedule) -> Value {
    let Schedule { name, revision, spec, state } = schedule;
    let when = match &spec.when {
        When::Cron { expression, timezone } => json!({ "cron": expression, "timezone": timezone }),
        When::Every { every_ms, offset_ms } => json!({ "every_ms": every_ms, "offset_ms": offset_ms }),
        When::At { at_ms } => json!({ "start_at": rfc3339(*at_ms) }),
    };
    let recent: Vec<Value> = state
        .recent
        .iter()
        .map(|f| json!({ "at": rfc3339(f.at_ms), "run_id": f.run_id, "outcome": f.outcome }))
        .collect();
    let next: Vec<String> = Schedules::upcoming(schedule, 5).into_iter().map(rfc3339).collect();
    json!({
        "name": name,
        "revision": revision,
        "workflow": spec.workflow,
        "input": json_text(&spec.input),
        "when": when,
        "overlap": spec.overlap.as_str(),
        "catchup_window_ms": spec.catchup_window_ms,
        "paused": state.paused,
        "note": state.note,
        "done": state.done,
        "created": rfc3339(state.created_ms),
        "handled_until": rfc3339(state.cursor_ms),
        "last_run": state.last_run,
        "buffered": state.buffered_ms.map(rfc3339),
        "started": state.started,
        "skipped": state.skipped,
        "missed": state.missed,
        "recent": recent,
        "next": next,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateBody {
    name: String,
    workflow: String,
    #[serde(default)]
    input: Option<Box<RawValue>>,
    #[serde(default)]
    cron: Option<String>,
    #[serde(default)]
    timezone: Option<String>,
    #[serde(default)]
    every: Option<String>,
    #[serde(default)]
    offset: Option<String>,
    #[serde(default)]
    start_at: Option<String>,
    #[serde(default)]
    overlap: Option<String>,
    #[serde(default)]
    catchup_window: Option<String>,
    #[serde(default)]
    paused: bool,
    #[serde(default)]
    note: Option<String>,
}

/// The overlap policy named `name`.
pub fn overlap(name: &str) -> Result<Overlap, ScheduleError> {
    Ok(match name {
        "skip" => Overlap::Skip,
        "buffer-one" => Overlap::BufferOne,
        "allow-all" => Overlap::AllowAll,
        "cancel-previous" => Overlap::CancelPrevious,
        other => {
            return Err(ScheduleError::InvalidSpec(format!(
                "unknown overlap policy {other:?}: use skip, buffer-one, allow-all or cancel-previous"
            )))
        }
    })
}

impl CreateBody {
    fn into_new(self) -> Result<NewSchedule, ScheduleError> {
        let when = match (self.cron, self.every, self.start_at) {
            (Some(expression), None, None) => {
                When::Cron { expression, timezone: self.timezone.unwrap_or_else(|| "UTC".to_owned()) }
            }
            (None, Some(every), None) if self.timezone.is_none() => When::Every {
                every_ms: parse_duration(&every)?,
                offset_ms: self.offset.as_deref().map(parse_duration).transpose()?.unwrap_or(0),
            },
            (None, None, Some(at)) if self.timezone.is_none() && self.offset.is_none() => {
                When::At { at_ms: parse_time(&at)? }
            }
            (None, None, None) => {
                return Err(ScheduleError::InvalidSpec(
                    "say when it fires: one of cron (with timezone), every (with offset) or start_at".to_owned(),
                ))
            }
            _ => {
                return Err(ScheduleError::InvalidSpec(
                    "give exactly one of cron, every or start_at (timezone goes with cron, offset with every)"
                        .to_owned(),
                ))
            }
        };
        let spec = ScheduleSpec {
            workflow: self.workflow,
            input: self.input.map_or_else(|| "null".to_owned(), |raw| raw.get().to_owned()),
            when,
            overlap: self.overlap.as_deref().map(overlap).transpose()?.unwrap_or_default(),
            catchup_window_ms: self
                .catchup_window
                .as_deref()
                .map(parse_duration)
                .transpose()?
                .unwrap_or(crate::schedule::DEFAULT_CATCHUP_WINDOW_MS),
        };
        Ok(NewSchedule { name: self.name, spec, paused: self.paused, note: self.note.unwrap_or_default() })
    }
}

pub(crate) async fn create(
    State(app): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<impl IntoResponse> {
    let body: CreateBody = parse(body)?;
    let schedule = app.schedules.create(body.into_new()?).await?;
    Ok((StatusCode::CREATED, Json(view(&schedule))))
}

pub(crate) async fn list(State(app): State<AppState>) -> ApiResult<Json<Value>> {
    let schedules: Vec<Value> = app.schedules.list().await?.iter().map(view).collect();
    Ok(Json(json!({ "schedules": schedules })))
}

pub(crate) async fn get(State(app): State<AppState>, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    Ok(Json(view(&app.schedules.get(&name).await?)))
}

pub(crate) async fn delete(State(app): State<AppState>, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    app.schedules.delete(&name).await?;
    Ok(Json(json!({ "name": name, "deleted": true })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct PauseBody {
    #[serde(default)]
    note: Option<String>,
}

pub(crate) async fn pause(
    State(app): State<AppState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let body: PauseBody = parse(body)?;
    Ok(Json(view(&app.schedules.pause(&name, body.note.as_deref().unwrap_or("")).await?)))
}

pub(crate) async fn resume(State(app): State<AppState>, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    Ok(Json(view(&app.schedules.resume(&name).await?)))
}

fn firings(fired: crate::schedule::Fired) -> Value {
    let firings: Vec<Value> = fired
        .firings
        .iter()
        .map(|f| json!({ "at": rfc3339(f.at_ms), "run_id": f.run_id, "outcome": f.outcome }))
        .collect();
    json!({ "firings": firings })
}

pub(crate) async fn trigger(State(app): State<AppState>, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    Ok(Json(firings(app.schedules.trigger(&name).await?)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BackfillBody {
    from: String,
    to: String,
}

pub(crate) async fn backfill(
    State(app): State<AppState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let body: BackfillBody = parse(body)?;
    let (from, to) = (parse_time(&body.from)?, parse_time(&body.to)?);
    Ok(Json(firings(app.schedules.backfill(&name, from, to).await?)))
}
