//! Query and update handlers, and the wait every blocking call goes
//! through, which dispatches to them.
//!
//! An accepted update reaches the workflow as a signal named `$update`;
//! while update handlers are registered, every wait also waits for it, runs
//! the handler when it comes, journals the handler's end with
//! `complete-update`, and goes back to waiting. Queries and update
//! validations are asked by the host in a scratch replay: at the first wait
//! past the journal's end, the wait returns a `$query` or
//! `$validate-update` failure, which is answered here with `answer-query`.

use crate::bindings::cairn::workflow::runtime;
use crate::bindings::cairn::workflow::types as wit;
use crate::{Context, Failure};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

/// The signal an accepted update arrives as.
const UPDATE_SIGNAL: &str = "$update";

type QueryFn = dyn Fn(&str) -> Result<String, Failure>;
type ValidateFn = dyn Fn(&str) -> Result<(), Failure>;
type UpdateFn = dyn Fn(&Context, &str) -> Result<String, Failure>;

#[derive(Default)]
struct Handlers {
    queries: BTreeMap<String, Rc<QueryFn>>,
    updates: BTreeMap<String, (Rc<ValidateFn>, Rc<UpdateFn>)>,
    /// The pending `wait-signal("$update")` handle, once a wait made one.
    update_handle: Option<u32>,
    /// An update handler runs: its own waits do not take more updates.
    in_update: bool,
    /// Updates handled in this generation: one delivered twice (two
    /// requests with one id racing) runs once.
    handled: std::collections::HashSet<String>,
}

thread_local! {
    static HANDLERS: RefCell<Handlers> = RefCell::default();
}

fn decode_args<A: DeserializeOwned>(args: &str) -> Result<A, Failure> {
    serde_json::from_str(args)
        .map_err(|e| Failure::new("invalid-args", format!("the arguments do not match the handler's type: {e}")))
}

fn encode<R: Serialize>(what: &str, value: &R) -> Result<String, Failure> {
    serde_json::to_string(value)
        .map_err(|e| Failure::new("invalid-output", format!("the result of {what} could not be encoded: {e}")))
}

pub(crate) fn register_query<A, R>(name: &str, handler: impl Fn(A) -> Result<R, Failure> + 'static)
where
    A: DeserializeOwned,
    R: Serialize,
{
    let label = format!("query {name:?}");
    let query = move |args: &str| encode(&label, &handler(decode_args(args)?)?);
    HANDLERS.with(|h| h.borrow_mut().queries.insert(name.to_owned(), Rc::new(query)));
}

pub(crate) fn register_update<A, R>(
    name: &str,
    validator: impl Fn(&A) -> Result<(), Failure> + 'static,
    handler: impl Fn(&Context, A) -> Result<R, Failure> + 'static,
) where
    A: DeserializeOwned,
    R: Serialize,
{
    let validate = move |args: &str| validator(&decode_args(args)?);
    let label = format!("update {name:?}");
    let run = move |ctx: &Context, args: &str| encode(&label, &handler(ctx, decode_args(args)?)?);
    HANDLERS.with(|h| h.borrow_mut().updates.insert(name.to_owned(), (Rc::new(validate), Rc::new(run))));
}

/// The update handle this wait also waits on, made on first need.
fn update_handle() -> Option<u32> {
    HANDLERS.with(|h| {
        let mut h = h.borrow_mut();
        if h.updates.is_empty() || h.in_update {
            return None;
        }
        Some(*h.update_handle.get_or_insert_with(|| runtime::wait_signal(UPDATE_SIGNAL)))
    })
}

/// Waits until one of `handles` completes, serving updates and questions
/// meanwhile; returns the handle and how it ended. `any` keeps the host
/// call an `await-any` even for one handle (what `select` always made).
pub(crate) fn wait(handles: &[u32], any: bool) -> (u32, wit::Completion) {
    loop {
        let updates = update_handle();
        let (winner, completion) = match (handles, updates) {
            ([one], None) if !any => (*one, runtime::await_(*one)),
            (_, None) => runtime::await_any(handles),
            (_, Some(u)) => runtime::await_any(&[handles, &[u]].concat()),
        };
        if let wit::Completion::Err(f) = &completion {
            if let (Some(args), "$query" | "$validate-update") = (&f.details, f.kind.as_str()) {
                answer(&f.kind, &f.message, args);
            }
        }
        if Some(winner) == updates && !handles.contains(&winner) {
            HANDLERS.with(|h| h.borrow_mut().update_handle = None);
            if let wit::Completion::Ok(payload) = completion {
                run_update(&payload);
            }
            continue;
        }
        return (winner, completion);
    }
}

/// Waits for the next update and runs its handler; `None` when the
/// workflow has no update handlers (nothing could ever come), the failure
/// when the wait failed instead (the run was cancelled).
pub(crate) fn serve_update() -> Option<Result<(), Failure>> {
    let handle = update_handle()?;
    let completion = runtime::await_(handle);
    HANDLERS.with(|h| h.borrow_mut().update_handle = None);
    match completion {
        wit::Completion::Err(f) => {
            if let (Some(args), "$query" | "$validate-update") = (&f.details, f.kind.as_str()) {
                answer(&f.kind, &f.message, args);
            }
            Some(Err(f.into()))
        }
        wit::Completion::Ok(payload) => {
            run_update(&payload);
            Some(Ok(()))
        }
    }
}

#[derive(Deserialize)]
struct Delivered {
    id: String,
    name: String,
    args: Box<serde_json::value::RawValue>,
}

fn run_update(payload: &str) {
    let Ok(Delivered { id, name, args }) = serde_json::from_str::<Delivered>(payload) else {
        return;
    };
    // Handled already: its end is journaled, and the client gets that.
    if !HANDLERS.with(|h| h.borrow_mut().handled.insert(id.clone())) {
        return;
    }
    let handler = HANDLERS.with(|h| h.borrow().updates.get(&name).map(|(_, run)| run.clone()));
    let outcome = match handler {
        Some(run) => {
            HANDLERS.with(|h| h.borrow_mut().in_update = true);
            let outcome = run(&Context::new(), args.get());
            HANDLERS.with(|h| h.borrow_mut().in_update = false);
            outcome
        }
        None => Err(unknown("update", &name)),
    };
    runtime::complete_update(&id, &to_completion(outcome));
}

fn unknown(what: &str, name: &str) -> Failure {
    let known: Vec<String> = HANDLERS.with(|h| {
        let h = h.borrow();
        match what {
            "query" => h.queries.keys().cloned().collect(),
            _ => h.updates.keys().cloned().collect(),
        }
    });
    let known = match known.is_empty() {
        true => "none where it waits now".to_owned(),
        false => known.join(", "),
    };
    Failure::new(
        format!("unknown-{what}"),
        format!("the workflow has no {what} handler named {name:?} (it has: {known})"),
    )
}

fn to_completion(outcome: Result<String, Failure>) -> wit::Completion {
    match outcome {
        Ok(json) => wit::Completion::Ok(json),
        Err(failure) => wit::Completion::Err(failure.into()),
    }
}

/// Answers a question the host asked; does not return.
fn answer(kind: &str, name: &str, args: &str) -> ! {
    let outcome = match kind {
        "$query" => match HANDLERS.with(|h| h.borrow().queries.get(name).cloned()) {
            Some(query) => query(args),
            None => Err(unknown("query", name)),
        },
        _ => match HANDLERS.with(|h| h.borrow().updates.get(name).map(|(validate, _)| validate.clone())) {
            Some(validate) => validate(args).map(|()| "null".to_owned()),
            None => Err(unknown("update", name)),
        },
    };
    runtime::answer_query(&to_completion(outcome));
    unreachable!("the host never returns from answer-query")
}
