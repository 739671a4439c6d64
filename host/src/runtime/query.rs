//! Queries and updates: synchronous requests to a running workflow.
//!
//! A **query** reads a run's current state. It runs in a scratch sandbox
//! that replays the run's journal, writing nothing and starting nothing;
//! past the journal's end, calls get answers that touch nothing (new
//! handles, `patched` true), and the first wait that would block hands the
//! guest the question instead: an `err` completion of kind `$query` that
//! the SDK turns into a call of the query handler, whose answer comes back
//! through `answer-query`. The live run is never touched, resident or not.
//!
//! An **update** changes a run and answers with a result. Its validator is
//! asked the same way (kind `$validate-update`): a rejection leaves no
//! trace. An accepted update is buffered as a signal named `$update`
//! (durable, ordered, kept across evictions and continue-as-new), which the
//! SDK's update handle receives at the run's next wait; the handler's end
//! is journaled with `complete-update`, and the client is answered once
//! that entry is durable. An update id seen before is not delivered again:
//! its result (or its wait) is returned, so a client may retry freely.

use super::errors::RunError;
use super::Runtime;
use crate::journal::{Completion, Entry, Failure, HostCall, Record, Reply};
use crate::store::{RunMeta, StoreError};
use serde::Deserialize;
use std::time::Duration;
use tracing::Instrument;

/// The handle `await-any` reports with a delivered question.
pub(crate) const QUESTION_HANDLE: u32 = u32::MAX;

/// The signal an accepted update is buffered as.
pub(crate) const UPDATE_SIGNAL: &str = "$update";

/// How often a client waiting for an update's result looks at the journal
/// (the host that drives the run also wakes it at once).
const UPDATE_POLL: Duration = Duration::from_millis(200);

/// What the guest is asked in a query sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Asking {
    /// Run the query handler.
    Query,
    /// Run the validator of an update.
    ValidateUpdate,
}

/// A question for a query sandbox.
#[derive(Debug, Clone)]
pub(crate) struct Question {
    pub asking: Asking,
    pub name: String,
    /// JSON arguments.
    pub args: String,
}

impl Question {
    /// The completion that delivers the question to the guest's SDK.
    pub(crate) fn delivery(&self) -> Completion {
        let kind = match self.asking {
            Asking::Query => "$query",
            Asking::ValidateUpdate => "$validate-update",
        };
        Completion::Err(Failure { kind: kind.into(), message: self.name.clone(), details: Some(self.args.clone()) })
    }
}

/// Why a query or update was not answered.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// No such run.
    #[error("run {0} does not exist")]
    NotFound(String),
    /// The run ended; it answers no more queries or updates.
    #[error("run {run_id} has ended ({status}); queries and updates reach running runs only (its result is in `cairn result {run_id}`)")]
    Ended {
        /// The run.
        run_id: String,
        /// Its final status.
        status: &'static str,
    },
    /// The run ended (or moved to a new generation) before its handler
    /// for an accepted update finished.
    #[error(
        "run {run_id} ended ({status}) before its handler for update {update_id} finished; the update has no result"
    )]
    EndedBeforeUpdate {
        /// The run.
        run_id: String,
        /// The update.
        update_id: String,
        /// What the run is now.
        status: &'static str,
    },
    /// The name is not usable.
    #[error("invalid {what} name {name:?}: use 1-128 characters, not starting with '$'")]
    InvalidName {
        /// `query` or `update`.
        what: &'static str,
        /// The name given.
        name: String,
    },
    /// The update id is not usable.
    #[error("invalid update id {0:?}: use 1-128 letters, digits, '-', '_', '.' or ':'")]
    InvalidUpdateId(String),
    /// The arguments are not JSON, or too big.
    #[error("the arguments are not usable: {0}")]
    InvalidArgs(String),
    /// The workflow's handler answered with a failure: a query handler
    /// that failed, an update its validator rejected, or a name the
    /// workflow has no handler for (kind `unknown-query`, `unknown-update`).
    #[error("{}", rejection(.0))]
    Rejected(Failure),
    /// The workflow could not answer where it stands.
    #[error("run {run_id} did not answer: {reason}")]
    NotAnswered {
        /// The run.
        run_id: String,
        /// Why.
        reason: String,
    },
    /// Replaying the run failed (it diverged, trapped, or its component
    /// could not be loaded).
    #[error(transparent)]
    Run(#[from] RunError),
    /// The accepted update could not be buffered (the run's signal buffer
    /// is full, or the run is driven by a host that cannot be reached).
    #[error(transparent)]
    Control(#[from] super::ControlError),
    /// The store failed; nothing was changed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn rejection(failure: &Failure) -> String {
    match failure.kind.as_str() {
        "unknown-query" | "unknown-update" => failure.message.clone(),
        _ => format!("the workflow refused: {failure}"),
    }
}

/// What an update came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateOutcome {
    /// The handler finished; its outcome is durable in the journal.
    Completed(Completion),
    /// Accepted and durable, but the handler had not finished when the
    /// wait ran out: send the same update id again to keep waiting.
    Accepted,
}

/// An update to send.
#[derive(Debug, Clone)]
pub struct UpdateRequest {
    /// The run.
    pub run_id: String,
    /// The update's name.
    pub name: String,
    /// JSON arguments.
    pub args: String,
    /// The update's id: a retry with the same id gets the same result.
    pub update_id: String,
    /// How long to wait for the handler's result.
    pub wait: Duration,
}

/// Where an update id stands in a run.
enum Seen {
    New,
    Accepted,
    Completed(Completion),
    /// Delivered to a generation that continued as new before its
    /// handler finished.
    Lost,
}

#[derive(Deserialize)]
struct Delivered {
    id: String,
}

pub(crate) fn check_name(what: &'static str, name: &str) -> Result<(), QueryError> {
    match name.is_empty() || name.len() > 128 || name.starts_with('$') {
        true => Err(QueryError::InvalidName { what, name: name.to_owned() }),
        false => Ok(()),
    }
}

pub(crate) fn check_args(args: &str) -> Result<(), QueryError> {
    if args.len() > crate::journal::MAX_PAYLOAD_BYTES {
        let (n, max) = (args.len(), crate::journal::MAX_PAYLOAD_BYTES);
        return Err(QueryError::InvalidArgs(format!("{n} bytes, over the limit of {max} bytes")));
    }
    crate::journal::check_json(args).map(|_| ()).map_err(|e| QueryError::InvalidArgs(format!("not JSON: {e}")))
}

/// Where `update_id` stands in a run's journals (one per generation
/// looked at: handle numbers start again in each) and signal buffer.
fn seen(generations: &[Vec<Record>], buffered: &[(u64, crate::store::StoredSignal)], update_id: &str) -> Seen {
    let mut accepted = false;
    let mut lost = false;
    for (i, records) in generations.iter().enumerate() {
        // Consumed by a generation that continued as new before its
        // handler finished (the last is the current one).
        lost |= accepted && i > 0;
        let mut update_handles = Vec::new();
        for record in records {
            let Entry::Call { call, reply } = &record.entry else { continue };
            match (call, reply) {
                (HostCall::CompleteUpdate { id, outcome }, _) if id == update_id => {
                    return Seen::Completed(outcome.clone())
                }
                (HostCall::WaitSignal { name }, Reply::Handle { handle }) if name == UPDATE_SIGNAL => {
                    update_handles.push(*handle)
                }
                (_, Reply::Completed { handle, completion: Completion::Ok(payload) })
                    if update_handles.contains(handle) =>
                {
                    accepted |= serde_json::from_str::<Delivered>(payload).is_ok_and(|d| d.id == update_id);
                }
                _ => {}
            }
        }
    }
    let buffered = buffered.iter().any(|(_, s)| {
        s.name == UPDATE_SIGNAL && serde_json::from_str::<Delivered>(&s.payload).is_ok_and(|d| d.id == update_id)
    });
    match (lost, accepted || buffered) {
        (true, _) => Seen::Lost,
        (false, true) => Seen::Accepted,
        (false, false) => Seen::New,
    }
}

impl Runtime {
    /// Answers query `name` with `args` from the run's current state, by
    /// replay in a scratch sandbox: nothing is written, and the run (resident
    /// or not) is not disturbed. Returns the handler's JSON answer.
    pub async fn query(&self, run_id: &str, name: &str, args: &str) -> Result<String, QueryError> {
        check_name("query", name)?;
        check_args(args)?;
        let meta = self.asked_run(run_id).await?;
        let question = Question { asking: Asking::Query, name: name.to_owned(), args: args.to_owned() };
        match self.ask(meta, question).await? {
            Completion::Ok(json) => Ok(json),
            Completion::Err(failure) => Err(QueryError::Rejected(failure)),
        }
    }

    /// Sends an update: its validator is asked first (a rejection changes
    /// nothing), then it is buffered for the run's update handler, and the
    /// handler's outcome is returned once it is durable, or
    /// [`UpdateOutcome::Accepted`] when `wait` runs out first.
    pub async fn update(&self, request: UpdateRequest) -> Result<UpdateOutcome, QueryError> {
        let UpdateRequest { run_id, name, args, update_id, wait } = request;
        check_name("update", &name)?;
        check_args(&args)?;
        if super::validate_run_id(&update_id).is_err() {
            return Err(QueryError::InvalidUpdateId(update_id));
        }
        let run_id = run_id.as_str();
        let meta = self.store().run(run_id).await?.ok_or_else(|| QueryError::NotFound(run_id.to_owned()))?;
        // A retry just after the run continued as new finds its update in
        // the generation before.
        let since = meta.generation.saturating_sub(1);
        let (records, buffered, _) = self.update_rows(run_id, since).await?;
        match seen(&records, &buffered, &update_id) {
            Seen::Completed(outcome) => return Ok(UpdateOutcome::Completed(outcome)),
            Seen::Accepted | Seen::Lost => {}
            Seen::New => {
                let meta = self.asked_run(&meta.id).await?;
                let question = Question { asking: Asking::ValidateUpdate, name: name.clone(), args: args.clone() };
                if let Completion::Err(failure) = self.ask(meta, question).await? {
                    tracing::debug!(run_id, update_id, kind = %failure.kind, "update rejected by its validator");
                    return Err(QueryError::Rejected(failure));
                }
                let payload = format!(
                    r#"{{"id":{},"name":{},"args":{args}}}"#,
                    serde_json::Value::from(update_id.as_str()),
                    serde_json::Value::from(name.as_str())
                );
                self.buffer_checked(run_id, UPDATE_SIGNAL, &payload).await.map_err(|e| match e {
                    super::ControlError::Ended { status, .. } => {
                        QueryError::Ended { run_id: run_id.to_owned(), status }
                    }
                    other => QueryError::Control(other),
                })?;
                tracing::debug!(run_id, update_id, name, "update accepted");
            }
        }
        self.wait_update(run_id, &update_id, since, wait).await
    }

    /// Waits for the handler of an accepted update to finish.
    async fn wait_update(
        &self,
        run_id: &str,
        update_id: &str,
        since: u32,
        wait: Duration,
    ) -> Result<UpdateOutcome, QueryError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Listening before looking: a completion between the two still wakes us.
            let watch = self.inner.scheduler.updates.watch(run_id);
            let notified = watch.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (records, buffered, meta) = self.update_rows(run_id, since).await?;
            match seen(&records, &buffered, update_id) {
                Seen::Completed(outcome) => return Ok(UpdateOutcome::Completed(outcome)),
                Seen::New | Seen::Accepted | Seen::Lost if meta.status.is_final() => {
                    let (run_id, update_id, status) = (run_id.to_owned(), update_id.to_owned(), meta.status.as_str());
                    return Err(QueryError::EndedBeforeUpdate { run_id, update_id, status });
                }
                // Consumed by a generation that then continued as new
                // before its handler finished.
                Seen::New | Seen::Lost => {
                    let (run_id, update_id) = (run_id.to_owned(), update_id.to_owned());
                    return Err(QueryError::EndedBeforeUpdate { run_id, update_id, status: "continued-as-new" });
                }
                Seen::Accepted => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(UpdateOutcome::Accepted);
            }
            let poll = tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + UPDATE_POLL));
            tokio::select! {
                _ = &mut notified => {}
                _ = poll => {}
            }
        }
    }

    /// A run's signal buffer, then its journal, then its metadata, and the
    /// history of each generation from `since` before the current one.
    /// Read in this order, an update consumed between two reads is in the
    /// journal (its consumption and the buffer's delete commit together),
    /// and one whose generation moved to history is in the history.
    #[allow(clippy::type_complexity)]
    async fn update_rows(
        &self,
        run_id: &str,
        since: u32,
    ) -> Result<(Vec<Vec<Record>>, Vec<(u64, crate::store::StoredSignal)>, RunMeta), QueryError> {
        let buffered = self.store().signals(run_id).await?;
        let journal = self.store().journal(run_id).await?;
        let meta = self.store().run(run_id).await?.ok_or_else(|| QueryError::NotFound(run_id.to_owned()))?;
        let mut generations = Vec::new();
        for generation in since..meta.generation {
            generations.push(self.store().history(run_id, generation).await?);
        }
        generations.push(journal);
        Ok((generations, buffered, meta))
    }

    /// The run a question goes to: one that has not ended.
    async fn asked_run(&self, run_id: &str) -> Result<RunMeta, QueryError> {
        let meta = self.store().run(run_id).await?.ok_or_else(|| QueryError::NotFound(run_id.to_owned()))?;
        if meta.status.is_final() {
            return Err(QueryError::Ended { run_id: run_id.to_owned(), status: meta.status.as_str() });
        }
        Ok(meta)
    }

    /// Replays the run in a scratch sandbox and asks the guest `question`
    /// where it waits.
    async fn ask(&self, meta: RunMeta, question: Question) -> Result<Completion, QueryError> {
        let component = self.inner.components.load_stored(&meta.component_sha256).await.map_err(RunError::from)?;
        let records = self.store().journal(&meta.id).await?;
        let run_id = meta.id.clone();
        let span = tracing::info_span!("query", run_id = %meta.id, name = %question.name, asking = ?question.asking);
        self.answer_records(meta, records, component, question).instrument(span).await.map_err(|e| match e {
            super::driver::Unanswered::Run(e) => QueryError::Run(e),
            super::driver::Unanswered::Because(reason) => QueryError::NotAnswered { run_id, reason },
        })
    }

    /// The handler of an update finished and its entry is durable: wake
    /// the clients waiting on this host.
    pub(crate) fn update_completed(&self, run_id: &str) {
        self.inner.scheduler.updates.ended(run_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoredSignal;

    fn call(seq: u64, call: HostCall, reply: Reply) -> Record {
        Record { seq, at_ms: 0, entry: Entry::Call { call, reply } }
    }

    /// An update id is found wherever it stands: buffered, delivered to the
    /// update handle, or finished; a payload of another handle with the
    /// same shape does not count.
    #[test]
    fn an_update_id_is_found_buffered_delivered_or_completed() {
        let payload = |id: &str| format!(r#"{{"id":"{id}","name":"add","args":1}}"#);
        let mut journal = vec![
            call(1, HostCall::WaitSignal { name: "other".into() }, Reply::Handle { handle: 1 }),
            call(
                2,
                HostCall::Await { handle: 1 },
                Reply::Completed { handle: 1, completion: Completion::Ok(payload("a")) },
            ),
        ];
        assert!(
            matches!(seen(std::slice::from_ref(&journal), &[], "a"), Seen::New),
            "a payload of a user signal is not an update"
        );
        journal.push(call(3, HostCall::WaitSignal { name: UPDATE_SIGNAL.into() }, Reply::Handle { handle: 3 }));
        journal.push(call(
            4,
            HostCall::AwaitAny { handles: vec![1, 3] },
            Reply::Completed { handle: 3, completion: Completion::Ok(payload("b")) },
        ));
        assert!(matches!(seen(std::slice::from_ref(&journal), &[], "b"), Seen::Accepted));
        let buffered = vec![(9, StoredSignal { name: UPDATE_SIGNAL.into(), payload: payload("c") })];
        assert!(matches!(seen(std::slice::from_ref(&journal), &buffered, "c"), Seen::Accepted));
        assert!(matches!(seen(std::slice::from_ref(&journal), &buffered, "d"), Seen::New));
        journal.push(call(
            5,
            HostCall::CompleteUpdate { id: "b".into(), outcome: Completion::Ok("2".into()) },
            Reply::Unit,
        ));
        assert!(
            matches!(seen(std::slice::from_ref(&journal), &[], "b"), Seen::Completed(Completion::Ok(v)) if v == "2")
        );
        // After continue-as-new: found in the generation before, and lost
        // if that generation ended before the handler did.
        let next = vec![call(1, HostCall::WaitSignal { name: UPDATE_SIGNAL.into() }, Reply::Handle { handle: 1 })];
        assert!(matches!(seen(&[journal.clone(), next.clone()], &[], "b"), Seen::Completed(_)));
        journal.pop();
        assert!(matches!(seen(&[journal, next], &[], "b"), Seen::Lost));
    }
}
