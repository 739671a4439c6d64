//! The replay cursor and divergence.

use super::entry::{Entry, HostCall, Record, Reply};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The code no longer does what the journal says it did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Divergence {
    /// Journal position of the first entry that does not match.
    pub seq: u64,
    /// What the journal recorded there.
    pub expected: String,
    /// What the code did instead.
    pub actual: String,
    /// The guest's stack at the diverging call, when wasmtime has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backtrace: Option<String>,
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "diverged at seq {}: the journal has {}, the code did {}", self.seq, self.expected, self.actual)
    }
}

impl std::error::Error for Divergence {}

/// What the cursor says about the next host call.
#[derive(Debug)]
pub enum Step {
    /// The journal has this call: answer with the recorded reply.
    Replay {
        /// Where the entry is.
        seq: u64,
        /// Its workflow time.
        at_ms: u64,
        /// The reply to give.
        reply: Reply,
    },
    /// The journal is exhausted: the call is new.
    Live,
}

/// Walks a run's journal during replay.
#[derive(Debug, Default)]
pub struct JournalCursor {
    /// Host calls and the end entry; meta entries (start, version
    /// switches) are not replayed.
    records: Vec<Record>,
    pos: usize,
    next_seq: u64,
}

impl JournalCursor {
    /// A cursor over a run's journal (in seq order).
    pub fn new(records: Vec<Record>) -> Self {
        let next_seq = records.last().map_or(0, |r| r.seq + 1);
        let records = records.into_iter().filter(|r| !r.entry.is_meta()).collect();
        JournalCursor { records, pos: 0, next_seq }
    }

    /// The journal's host calls and end entry (not its start and version
    /// switches).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the journal has no host call and no end yet.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Whether a host call is still to be replayed.
    pub fn replaying(&self) -> bool {
        self.records.get(self.pos).is_some_and(|r| r.entry.is_call())
    }

    /// The terminal entry of the journal, if the run ended.
    pub fn terminal(&self) -> Option<&Record> {
        self.records.last().filter(|r| r.entry.is_terminal())
    }

    /// The seq the next live entry gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Workflow time of the last entry replayed so far (or of the start).
    pub fn last_at_ms(&self) -> Option<u64> {
        self.pos.checked_sub(1).and_then(|i| self.records.get(i)).map(|r| r.at_ms)
    }

    /// Matches `call` against the next journaled call: replay it, or go live
    /// when the journal is exhausted. A mismatch is a divergence.
    pub fn next(&mut self, call: &HostCall) -> Result<Step, Divergence> {
        let Some(record) = self.records.get_mut(self.pos) else {
            return Ok(Step::Live);
        };
        match &mut record.entry {
            Entry::Call { call: recorded, reply } if recorded == call => {
                // Each entry is replayed once: its reply moves out, and only
                // the call (for reports) and the time stay behind.
                let reply = std::mem::replace(reply, Reply::Unit);
                let step = Step::Replay { seq: record.seq, at_ms: record.at_ms, reply };
                self.pos += 1;
                Ok(step)
            }
            Entry::Call { call: recorded, .. } => Err(Divergence {
                seq: record.seq,
                expected: recorded.to_string(),
                actual: call.to_string(),
                backtrace: None,
            }),
            // The run ended here but the code goes on calling the host.
            Entry::Completed { .. }
            | Entry::Failed { .. }
            | Entry::Terminated { .. }
            | Entry::ContinuedAsNew { .. } => Err(Divergence {
                seq: record.seq,
                expected: describe_end(&record.entry),
                actual: format!("an extra call: {call}"),
                backtrace: None,
            }),
            Entry::Started { .. } | Entry::VersionSwitch { .. } => unreachable!("meta entries are not replayed"),
        }
    }

    /// `patched(change_id)`: true and consumed when the journal has the
    /// marker here; false without consuming anything when it has something
    /// else (the run was journaled before the change); live when exhausted.
    pub fn patched(&mut self, change_id: &str) -> Option<(u64, bool)> {
        let record = self.records.get(self.pos)?;
        match &record.entry {
            Entry::Call { call: HostCall::Patched { change_id: id }, .. } if id == change_id => {
                self.pos += 1;
                Some((record.at_ms, true))
            }
            _ => Some((record.at_ms, false)),
        }
    }

    /// The code ends this journal without returning (continue-as-new):
    /// fine when nothing is left to replay.
    pub fn expect_end(&self, actual: &str) -> Result<(), Divergence> {
        match self.records.get(self.pos) {
            None => Ok(()),
            Some(record) => Err(Divergence {
                seq: record.seq,
                expected: match &record.entry {
                    Entry::Call { call, .. } => call.to_string(),
                    other => describe_end(other),
                },
                actual: actual.to_owned(),
                backtrace: None,
            }),
        }
    }

    /// `continue-as-new(input)`: live where the journal ends (`Ok(false)`);
    /// replayed, with the same input, where an earlier generation's journal
    /// recorded it (`Ok(true)`); a divergence anywhere else.
    pub fn continue_as_new(&self, input: &str) -> Result<bool, Divergence> {
        match self.records.get(self.pos).map(|r| (r.seq, &r.entry)) {
            Some((_, Entry::ContinuedAsNew { input: recorded })) if recorded == input => Ok(true),
            Some((seq, Entry::ContinuedAsNew { input: recorded })) => Err(Divergence {
                seq,
                expected: format!("continue-as-new({recorded})"),
                actual: format!("continue-as-new({input})"),
                backtrace: None,
            }),
            _ => self.expect_end(&format!("continue-as-new({input})")).map(|()| false),
        }
    }

    /// The workflow returned `outcome`: check it against the journal. Calls
    /// left over, or a different result than the one recorded, diverge.
    pub fn finish(&self, outcome: &Entry) -> Result<(), Divergence> {
        let Some(record) = self.records.get(self.pos) else {
            return Ok(());
        };
        match &record.entry {
            Entry::Call { call, .. } => Err(Divergence {
                seq: record.seq,
                expected: call.to_string(),
                actual: format!("an early return ({})", describe_end(outcome)),
                backtrace: None,
            }),
            recorded if recorded == outcome => Ok(()),
            recorded => Err(Divergence {
                seq: record.seq,
                expected: describe_end(recorded),
                actual: describe_end(outcome),
                backtrace: None,
            }),
        }
    }
}

fn describe_end(entry: &Entry) -> String {
    match entry {
        Entry::Completed { result } => format!("return {result}"),
        Entry::Failed { failure } => format!("return failure {failure}"),
        Entry::ContinuedAsNew { input } => format!("continue-as-new({input})"),
        other => other.label().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::entry::Completion;

    fn call(seq: u64, call: HostCall, reply: Reply) -> Record {
        Record { seq, at_ms: 100 + seq, entry: Entry::Call { call, reply } }
    }

    fn journal() -> Vec<Record> {
        vec![
            call(1, HostCall::StartTimer { ms: 5 }, Reply::Handle { handle: 1 }),
            call(
                2,
                HostCall::Await { handle: 1 },
                Reply::Completed { handle: 1, completion: Completion::Ok("null".into()) },
            ),
            Record { seq: 3, at_ms: 110, entry: Entry::Completed { result: "1".into() } },
        ]
    }

    #[test]
    fn replays_matching_calls_then_checks_the_result() {
        let mut c = JournalCursor::new(journal());
        assert!(matches!(c.next(&HostCall::StartTimer { ms: 5 }), Ok(Step::Replay { seq: 1, .. })));
        assert!(matches!(c.next(&HostCall::Await { handle: 1 }), Ok(Step::Replay { seq: 2, .. })));
        assert!(c.finish(&Entry::Completed { result: "1".into() }).is_ok());
        let d = c.finish(&Entry::Completed { result: "2".into() }).unwrap_err();
        assert_eq!(d.seq, 3);
    }

    #[test]
    fn a_changed_argument_diverges_at_its_seq() {
        let mut c = JournalCursor::new(journal());
        let d = c.next(&HostCall::StartTimer { ms: 6 }).unwrap_err();
        assert_eq!((d.seq, d.expected.as_str(), d.actual.as_str()), (1, "start-timer(5 ms)", "start-timer(6 ms)"));
    }

    #[test]
    fn early_return_and_extra_calls_diverge() {
        let mut c = JournalCursor::new(journal());
        c.next(&HostCall::StartTimer { ms: 5 }).unwrap();
        assert_eq!(c.finish(&Entry::Completed { result: "1".into() }).unwrap_err().seq, 2);
        c.next(&HostCall::Await { handle: 1 }).unwrap();
        assert_eq!(c.next(&HostCall::StartTimer { ms: 1 }).unwrap_err().seq, 3);
    }

    #[test]
    fn patched_is_false_without_a_marker_and_consumes_nothing() {
        let mut c = JournalCursor::new(journal());
        assert_eq!(c.patched("x"), Some((101, false)));
        assert!(matches!(c.next(&HostCall::StartTimer { ms: 5 }), Ok(Step::Replay { .. })));
    }
}
