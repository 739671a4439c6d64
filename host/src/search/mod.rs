//! Search attributes and run queries.
//!
//! A workflow sets typed attributes on its run with
//! `upsert-search-attributes` (journaled, so a replay sets the same ones):
//! a JSON object whose values are strings (keyword), integers (int),
//! booleans (bool) or `{"time": "RFC 3339"}` (time); `null` removes one.
//! `cairn list --query` and `GET /v1/runs?query=` take a filter such as
//! `workflow = "order" and status = "running" and amount > 1000`, answered
//! from the store's run rows (one store: results always agree with the
//! runs' state). The workflow and status conditions of a query pick the
//! index pages are read from; the rest filter them.

mod query;

pub use query::{Query, QueryError};

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One typed attribute value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchValue {
    /// A string compared as a whole.
    Keyword(String),
    /// A signed integer.
    Int(i64),
    /// A boolean.
    Bool(bool),
    /// A time, ms since the epoch.
    Time(i64),
}

impl SearchValue {
    /// The value as the API shows it: plain JSON, times as RFC 3339.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            SearchValue::Keyword(s) => serde_json::json!(s),
            SearchValue::Int(n) => serde_json::json!(n),
            SearchValue::Bool(b) => serde_json::json!(b),
            SearchValue::Time(ms) => serde_json::json!({ "time": crate::schedule::rfc3339((*ms).max(0) as u64) }),
        }
    }
}

/// Most attributes one run may carry.
pub const MAX_ATTRIBUTES: usize = 64;

/// Applies an `upsert-search-attributes` argument to `current`, or says
/// what is wrong with it.
pub fn upsert(current: &mut BTreeMap<String, SearchValue>, json: &str) -> Result<(), String> {
    // All or nothing: a refused call leaves the attributes as they were.
    let mut next = current.clone();
    apply(&mut next, json)?;
    *current = next;
    Ok(())
}

fn apply(current: &mut BTreeMap<String, SearchValue>, json: &str) -> Result<(), String> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("search attributes are not JSON: {e}"))?;
    let serde_json::Value::Object(map) = value else {
        return Err("search attributes must be a JSON object, e.g. {\"customer\": \"acme\", \"amount\": 1200}".into());
    };
    for (name, value) in map {
        if name.is_empty()
            || name.len() > 64
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        {
            return Err(format!("invalid search attribute name {name:?}: use 1-64 letters, digits, '_', '-' or '.'"));
        }
        if query::BUILT_IN.contains(&name.as_str()) {
            return Err(format!("{name:?} is a field of every run; choose another attribute name"));
        }
        let typed = match value {
            serde_json::Value::Null => {
                current.remove(&name);
                continue;
            }
            serde_json::Value::String(s) => SearchValue::Keyword(s),
            serde_json::Value::Bool(b) => SearchValue::Bool(b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => SearchValue::Int(i),
                None => return Err(format!("search attribute {name:?} is {n}: only integers are searchable numbers")),
            },
            serde_json::Value::Object(o) if o.len() == 1 && o.get("time").is_some_and(|t| t.is_string()) => {
                let text = o["time"].as_str().unwrap_or_default();
                let ms = chrono::DateTime::parse_from_rfc3339(text)
                    .map_err(|e| format!("search attribute {name:?}: {text:?} is not an RFC 3339 time ({e})"))?
                    .timestamp_millis();
                SearchValue::Time(ms)
            }
            other => {
                return Err(format!(
                    "search attribute {name:?} is {other}: use a string, an integer, a boolean or {{\"time\": \"RFC 3339\"}}"
                ))
            }
        };
        current.insert(name, typed);
    }
    if current.len() > MAX_ATTRIBUTES {
        return Err(format!("a run may carry at most {MAX_ATTRIBUTES} search attributes"));
    }
    Ok(())
}

/// Most runs one query reads before it returns what it found (its `next`
/// goes on from there). A query that pins a workflow, a status or an
/// attribute's value reads only the runs its index lists.
const MAX_SCANNED: usize = 50_000;

/// The runs matching `query` among those `base` selects (its workflow,
/// statuses, order and `after`), at most `limit`, and where to go on from
/// if there may be more.
pub async fn find(
    store: &crate::store::Store,
    query: &Query,
    mut base: crate::store::RunQuery,
    limit: usize,
) -> Result<(Vec<crate::store::RunMeta>, Option<String>), crate::store::StoreError> {
    let (workflow, status) = query.pinned();
    if base.workflow.is_none() {
        base.workflow = workflow;
    }
    if base.statuses.is_empty() {
        base.statuses.extend(status);
    }
    // Read from an attribute's index when the query pins one's value.
    if base.attribute.is_none() {
        base.attribute = query.pinned_attribute();
    }
    base.limit = 500;
    let mut found = Vec::new();
    let mut scanned = 0;
    loop {
        let page = store.runs(&base).await?;
        for run in page.runs {
            scanned += 1;
            let id = run.id.clone();
            if query.matches(&run) {
                found.push(run);
                if found.len() == limit {
                    return Ok((found, Some(id)));
                }
            }
            if scanned >= MAX_SCANNED {
                return Ok((found, Some(id)));
            }
        }
        match page.next {
            Some(next) => base.after = Some(next),
            None => return Ok((found, None)),
        }
    }
}
