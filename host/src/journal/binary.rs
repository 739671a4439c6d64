//! Format 2: a compact binary encoding of journal records.
//!
//! Integers are LEB128 varints, strings are a varint length and UTF-8 bytes,
//! enum variants are one tag byte, an absent option is tag 0 and a present
//! one tag 1 and its value, `f64` is its 8 little-endian bytes. Fields come
//! in declaration order. The layout is fixed: a new field or a new kind of
//! entry needs a new format tag, and this decoder stays for the journals
//! already written.
//!
//! It exists for speed: decoding it is several times faster than format 1's
//! JSON (whose tagged enums serde buffers before it can dispatch), and
//! replay and every commit pay for the codec.

use super::entry::*;

/// Why a format-2 body did not decode.
pub(super) type Malformed = &'static str;

pub(super) fn encode(record: &Record, out: &mut Vec<u8>) {
    let mut w = Writer(out);
    w.varint(record.seq);
    w.varint(record.at_ms);
    match &record.entry {
        Entry::Started { workflow, component_sha256, input, seed, engine } => {
            w.tag(0);
            w.str(workflow);
            w.str(component_sha256);
            w.str(input);
            w.str(seed);
            w.tag(u8::from(engine.nan_canonicalization) | (u8::from(engine.relaxed_simd_deterministic) << 1));
            w.varint(engine.max_memory_bytes);
            w.varint(engine.step_budget_ms);
            w.varint(engine.max_wasm_stack);
        }
        Entry::Call { call, reply } => {
            w.tag(1);
            w.call(call);
            w.reply(reply);
        }
        Entry::Completed { result } => {
            w.tag(2);
            w.str(result);
        }
        Entry::Failed { failure } => {
            w.tag(3);
            w.failure(failure);
        }
        Entry::VersionSwitch { from_version, to_version, from_sha256, to_sha256 } => {
            w.tag(4);
            match from_version {
                None => w.tag(0),
                Some(v) => {
                    w.tag(1);
                    w.varint(u64::from(*v));
                }
            }
            w.varint(u64::from(*to_version));
            w.str(from_sha256);
            w.str(to_sha256);
        }
        Entry::Terminated { reason } => {
            w.tag(5);
            w.str(reason);
        }
        Entry::ContinuedAsNew { input } => {
            w.tag(6);
            w.str(input);
        }
    }
}

pub(super) fn decode(body: &[u8]) -> Result<Record, Malformed> {
    let mut r = Reader(body);
    let seq = r.varint()?;
    let at_ms = r.varint()?;
    let entry = match r.tag()? {
        0 => {
            let (workflow, component_sha256, input, seed) = (r.str()?, r.str()?, r.str()?, r.str()?);
            let flags = r.tag()?;
            if flags > 3 {
                return Err("unknown engine flags");
            }
            let engine = EngineSettings {
                nan_canonicalization: flags & 1 != 0,
                relaxed_simd_deterministic: flags & 2 != 0,
                max_memory_bytes: r.varint()?,
                step_budget_ms: r.varint()?,
                max_wasm_stack: r.varint()?,
            };
            Entry::Started { workflow, component_sha256, input, seed, engine }
        }
        1 => Entry::Call { call: r.call()?, reply: r.reply()? },
        2 => Entry::Completed { result: r.str()? },
        3 => Entry::Failed { failure: r.failure()? },
        4 => {
            let from_version = match r.tag()? {
                0 => None,
                1 => Some(r.u32()?),
                _ => return Err("bad option tag"),
            };
            Entry::VersionSwitch { from_version, to_version: r.u32()?, from_sha256: r.str()?, to_sha256: r.str()? }
        }
        5 => Entry::Terminated { reason: r.str()? },
        6 => Entry::ContinuedAsNew { input: r.str()? },
        _ => return Err("unknown entry kind"),
    };
    if !r.0.is_empty() {
        return Err("trailing bytes after the record");
    }
    Ok(Record { seq, at_ms, entry })
}

struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    fn tag(&mut self, tag: u8) {
        self.0.push(tag);
    }

    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn str(&mut self, s: &str) {
        self.varint(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
    }

    fn failure(&mut self, f: &Failure) {
        self.str(&f.kind);
        self.str(&f.message);
        match &f.details {
            None => self.tag(0),
            Some(d) => {
                self.tag(1);
                self.str(d);
            }
        }
    }

    fn call(&mut self, call: &HostCall) {
        match call {
            HostCall::ScheduleActivity { name, input, options } => {
                self.tag(0);
                self.str(name);
                self.str(input);
                self.varint(options.timeout_ms);
                let retry = &options.retry;
                self.varint(u64::from(retry.max_attempts));
                self.varint(retry.initial_interval_ms);
                self.0.extend_from_slice(&retry.backoff_coefficient.to_le_bytes());
                self.varint(retry.max_interval_ms);
                self.varint(retry.non_retryable_kinds.len() as u64);
                for kind in &retry.non_retryable_kinds {
                    self.str(kind);
                }
            }
            HostCall::StartTimer { ms } => {
                self.tag(1);
                self.varint(*ms);
            }
            HostCall::StartChild { workflow, input } => {
                self.tag(2);
                self.str(workflow);
                self.str(input);
            }
            HostCall::WaitSignal { name } => {
                self.tag(3);
                self.str(name);
            }
            HostCall::Await { handle } => {
                self.tag(4);
                self.varint(u64::from(*handle));
            }
            HostCall::AwaitAny { handles } => {
                self.tag(5);
                self.varint(handles.len() as u64);
                for h in handles {
                    self.varint(u64::from(*h));
                }
            }
            HostCall::Cancel { handle } => {
                self.tag(6);
                self.varint(u64::from(*handle));
            }
            HostCall::Patched { change_id } => {
                self.tag(7);
                self.str(change_id);
            }
            HostCall::SetCustomStatus { status } => {
                self.tag(8);
                self.str(status);
            }
            HostCall::UpsertSearchAttributes { attributes } => {
                self.tag(9);
                self.str(attributes);
            }
            HostCall::CompleteUpdate { id, outcome } => {
                self.tag(10);
                self.str(id);
                self.completion(outcome);
            }
        }
    }

    fn completion(&mut self, completion: &Completion) {
        match completion {
            Completion::Ok(json) => {
                self.tag(0);
                self.str(json);
            }
            Completion::Err(f) => {
                self.tag(1);
                self.failure(f);
            }
        }
    }

    fn reply(&mut self, reply: &Reply) {
        match reply {
            Reply::Handle { handle } => {
                self.tag(0);
                self.varint(u64::from(*handle));
            }
            Reply::Completed { handle, completion } => {
                self.tag(1);
                self.varint(u64::from(*handle));
                self.completion(completion);
            }
            Reply::Bool { value } => {
                self.tag(2);
                self.tag(u8::from(*value));
            }
            Reply::Unit => self.tag(3),
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn tag(&mut self) -> Result<u8, Malformed> {
        let (&b, rest) = self.0.split_first().ok_or("truncated")?;
        self.0 = rest;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, Malformed> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.tag()?;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                return Err("varint overflows 64 bits");
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint overflows 64 bits")
    }

    fn u32(&mut self) -> Result<u32, Malformed> {
        u32::try_from(self.varint()?).map_err(|_| "number out of range")
    }

    /// A length, no longer than the bytes left (so nothing huge is allocated).
    fn len(&mut self) -> Result<usize, Malformed> {
        let n = self.varint()?;
        usize::try_from(n).ok().filter(|n| *n <= self.0.len()).ok_or("length past the end of the record")
    }

    fn str(&mut self) -> Result<String, Malformed> {
        let n = self.len()?;
        let (bytes, rest) = self.0.split_at(n);
        self.0 = rest;
        std::str::from_utf8(bytes).map(str::to_owned).map_err(|_| "string is not UTF-8")
    }

    fn failure(&mut self) -> Result<Failure, Malformed> {
        let (kind, message) = (self.str()?, self.str()?);
        let details = match self.tag()? {
            0 => None,
            1 => Some(self.str()?),
            _ => return Err("bad option tag"),
        };
        Ok(Failure { kind, message, details })
    }

    fn completion(&mut self) -> Result<Completion, Malformed> {
        Ok(match self.tag()? {
            0 => Completion::Ok(self.str()?),
            1 => Completion::Err(self.failure()?),
            _ => return Err("unknown completion"),
        })
    }

    fn call(&mut self) -> Result<HostCall, Malformed> {
        Ok(match self.tag()? {
            0 => {
                let (name, input, timeout_ms) = (self.str()?, self.str()?, self.varint()?);
                let (max_attempts, initial_interval_ms) = (self.u32()?, self.varint()?);
                if self.0.len() < 8 {
                    return Err("truncated");
                }
                let (bits, rest) = self.0.split_at(8);
                self.0 = rest;
                let backoff_coefficient = f64::from_le_bytes(bits.try_into().map_err(|_| "truncated")?);
                // Workflows can only journal finite coefficients.
                if !backoff_coefficient.is_finite() {
                    return Err("backoff coefficient is not finite");
                }
                let max_interval_ms = self.varint()?;
                let n = self.len()?;
                let non_retryable_kinds = (0..n).map(|_| self.str()).collect::<Result<_, _>>()?;
                let retry = RetryPolicy {
                    max_attempts,
                    initial_interval_ms,
                    backoff_coefficient,
                    max_interval_ms,
                    non_retryable_kinds,
                };
                HostCall::ScheduleActivity { name, input, options: ActivityOptions { timeout_ms, retry } }
            }
            1 => HostCall::StartTimer { ms: self.varint()? },
            2 => HostCall::StartChild { workflow: self.str()?, input: self.str()? },
            3 => HostCall::WaitSignal { name: self.str()? },
            4 => HostCall::Await { handle: self.u32()? },
            5 => {
                let n = self.len()?;
                HostCall::AwaitAny { handles: (0..n).map(|_| self.u32()).collect::<Result<_, _>>()? }
            }
            6 => HostCall::Cancel { handle: self.u32()? },
            7 => HostCall::Patched { change_id: self.str()? },
            8 => HostCall::SetCustomStatus { status: self.str()? },
            9 => HostCall::UpsertSearchAttributes { attributes: self.str()? },
            10 => HostCall::CompleteUpdate { id: self.str()?, outcome: self.completion()? },
            _ => return Err("unknown host call"),
        })
    }

    fn reply(&mut self) -> Result<Reply, Malformed> {
        Ok(match self.tag()? {
            0 => Reply::Handle { handle: self.u32()? },
            1 => {
                let handle = self.u32()?;
                Reply::Completed { handle, completion: self.completion()? }
            }
            2 => match self.tag()? {
                0 => Reply::Bool { value: false },
                1 => Reply::Bool { value: true },
                _ => return Err("bad bool"),
            },
            3 => Reply::Unit,
            _ => return Err("unknown reply"),
        })
    }
}
