//! `/v1/runs/{id}/updates/{name}` and `/v1/runs/{id}/queries/{name}`.

use super::error::ApiError;
use super::routes::{detached, json_body, json_text, parse, start_run, ApiResult, StartBody, MAX_WAIT_S};
use super::AppState;
use crate::journal::Completion;
use crate::runtime::{UpdateOutcome, UpdateRequest};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use std::time::Duration;

/// How long a start inside an update-with-start may take to commit.
const START_DEADLINE: Duration = Duration::from_secs(30);

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateBody {
    /// The update's JSON arguments, kept as sent.
    #[serde(default)]
    args: Option<Box<RawValue>>,
    /// A retry with the same id gets the same result; made up if absent.
    #[serde(default)]
    update_id: Option<String>,
    /// Update-with-start: the run to start under the path's id if there is
    /// none yet (`workflow`, `input`, `concurrency_key`, `priority`).
    #[serde(default)]
    start: Option<StartBody>,
}

#[derive(Deserialize)]
pub(crate) struct UpdateQuery {
    /// Seconds to wait for the handler's result (default and most: 60).
    wait: Option<f64>,
}

/// Sends an update and answers with the handler's result once it is
/// journaled: 200 `completed` or `failed`, 202 `accepted` when the wait ran
/// out first (send the same `update_id` again to wait on), 422 `rejected`
/// with the workflow's failure when its validator refused (nothing was
/// recorded), 404 `unknown-update` when it has no such handler.
pub(crate) async fn update(
    State(app): State<AppState>,
    Path((id, name)): Path<(String, String)>,
    query: Result<Query<UpdateQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<impl IntoResponse> {
    let Query(query) = query?;
    let wait = query.wait.unwrap_or(MAX_WAIT_S);
    if !(0.0..=MAX_WAIT_S).contains(&wait) {
        return Err(ApiError::bad_request("invalid-wait", format!("wait must be between 0 and {MAX_WAIT_S} seconds")));
    }
    let body: UpdateBody = parse(body)?;
    let update_id = body.update_id.unwrap_or_else(|| format!("upd-{}", crate::runtime::new_update_id()));
    let args = body.args.map_or_else(|| "null".to_owned(), |raw| raw.get().to_owned());
    crate::runtime::check_update(&name, &args, &update_id)?;
    let mut started = false;
    if let Some(mut start) = body.start {
        match &start.id {
            Some(other) if *other != id => {
                return Err(ApiError::bad_request(
                    "invalid-start",
                    format!("`start.id` is {other:?} but the update goes to run {id:?}; leave `start.id` out"),
                ))
            }
            _ => start.id = Some(id.clone()),
        }
        let (_, existed) = start_run(&app, start, tokio::time::Instant::now() + START_DEADLINE).await?;
        started = !existed;
    }
    let request = UpdateRequest {
        run_id: id.clone(),
        name: name.clone(),
        args,
        update_id: update_id.clone(),
        wait: Duration::from_secs_f64(wait),
    };
    let rt = app.rt.clone();
    let outcome = detached(async move { rt.update(request).await }).await?;
    let mut answer = json!({ "run_id": id, "update": name, "update_id": update_id, "started": started });
    let status = match outcome {
        UpdateOutcome::Completed(Completion::Ok(result)) => {
            answer["status"] = json!("completed");
            answer["result"] = json!(json_text(&result));
            StatusCode::OK
        }
        UpdateOutcome::Completed(Completion::Err(failure)) => {
            answer["status"] = json!("failed");
            answer["failure"] = json!(failure);
            StatusCode::OK
        }
        UpdateOutcome::Accepted => {
            answer["status"] = json!("accepted");
            StatusCode::ACCEPTED
        }
    };
    Ok((status, Json(answer)))
}

#[derive(Deserialize)]
pub(crate) struct QueryParams {
    /// The query's JSON arguments (default `null`).
    args: Option<String>,
}

/// Answers a query from the run's current state (`GET`, arguments in
/// `?args=`): nothing is written and the run is not disturbed.
pub(crate) async fn query_get(
    State(app): State<AppState>,
    Path((id, name)): Path<(String, String)>,
    params: Result<Query<QueryParams>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(params) = params?;
    ask(app, id, name, params.args.unwrap_or_else(|| "null".to_owned())).await
}

/// The same with the arguments as the body (`POST`), for big ones.
pub(crate) async fn query_post(
    State(app): State<AppState>,
    Path((id, name)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let args = json_body(body, "invalid-args", "the query's arguments")?;
    ask(app, id, name, args).await
}

async fn ask(app: AppState, id: String, name: String, args: String) -> ApiResult<Json<Value>> {
    let (rt, run_id, query) = (app.rt.clone(), id.clone(), name.clone());
    let result = detached(async move { rt.query(&run_id, &query, &args).await }).await?;
    Ok(Json(json!({ "run_id": id, "query": name, "result": json_text(&result) })))
}
