//! `/v1/activities/{name}/limits`: concurrency and rate limits on an
//! activity's attempts, per key taken from the input.

use super::routes::{concurrency_of, detached, parse, ApiResult};
use super::AppState;
use crate::activity::limits::BucketName;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct ActivityLimitsBody {
    /// Where in the input the key is: a JSON pointer (`/customer`).
    #[serde(default)]
    key: Option<String>,
    /// Most attempts of one key in flight at once.
    #[serde(default)]
    limit: Option<u32>,
    /// Limits of particular keys.
    #[serde(default)]
    keys: BTreeMap<String, u32>,
    /// How fast attempts of one key may start: `10/s`, `100/min`, `5/h`.
    #[serde(default)]
    rate: Option<String>,
    /// Most starts at once after a quiet spell (default: the rate's count).
    #[serde(default)]
    burst: Option<u32>,
    /// Rates of particular keys, in place of `rate`.
    #[serde(default)]
    key_rates: BTreeMap<String, String>,
}

/// An activity's limits as set, with its buckets among `buckets`: slots
/// held on every host, attempts waiting on this one. `name` is as the
/// client gives it (`component.function`, or `component` for `*`).
fn view(name: &str, limit: &crate::store::ActivityLimit, buckets: &[(BucketName, u64, u64)]) -> Value {
    let scope = if name.contains('.') { name.to_owned() } else { format!("{name}.*") };
    let now: Vec<Value> = buckets
        .iter()
        .filter(|(b, _, _)| b.activity == scope)
        .map(|(b, held, waiting)| json!({ "key": b.key, "held": held, "waiting": waiting }))
        .collect();
    json!({
        "activity": name,
        "key": limit.key,
        "limit": limit.limits.limit,
        "keys": limit.limits.keys,
        "rate": limit.limits.rate,
        "key_rates": limit.limits.key_rates,
        "buckets": now,
    })
}

async fn view_now(app: &AppState, name: &str, limit: Option<crate::store::ActivityLimit>) -> Json<Value> {
    let buckets = app.rt.activities().limiter().buckets().await;
    Json(view(name, &limit.unwrap_or_default(), &buckets))
}

pub(crate) async fn get_limits(State(app): State<AppState>, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    let limit = app.registry.activity_limits(&name).await?;
    Ok(view_now(&app, &name, limit).await)
}

/// Sets an activity's limits (an empty body removes them); waiting
/// attempts see the change within a second.
pub(crate) async fn set_limits(
    State(app): State<AppState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let body: ActivityLimitsBody = parse(body)?;
    let limits = concurrency_of(body.limit, body.keys, (body.rate.as_deref(), body.burst), &body.key_rates)?;
    let limit = crate::store::ActivityLimit { key: body.key, limits };
    let (registry, activity) = (app.registry.clone(), name.clone());
    let set = detached(async move { registry.set_activity_limits(&activity, Some(limit)).await }).await?;
    Ok(view_now(&app, &name, set).await)
}

/// Every activity with limits, with its buckets now.
pub(crate) async fn list_limits(State(app): State<AppState>) -> ApiResult<Json<Value>> {
    let buckets = app.rt.activities().limiter().buckets().await;
    let mut activities = Vec::new();
    for d in app.registry.list().await? {
        for (function, limit) in &d.activity_limits {
            let name = if function == "*" { d.name.clone() } else { format!("{}.{function}", d.name) };
            activities.push(view(&name, limit, &buckets));
        }
    }
    Ok(Json(json!({ "activities": activities })))
}
