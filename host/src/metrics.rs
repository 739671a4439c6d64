//! Counters and histograms for `GET /metrics` (Prometheus text format,
//! every name prefixed `cairn_`). Recording is a relaxed atomic add, or a
//! short uncontended lock for labelled counters; nothing here blocks a run.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// A counter per label set.
#[derive(Default)]
pub struct Labeled(Mutex<BTreeMap<Vec<String>, u64>>);

impl Labeled {
    /// Adds one for `labels` (values in the order the metric declares).
    /// Label sets are few (kinds, workflows), so a known one is found by a
    /// scan without allocating: this runs once per journaled host call.
    pub fn inc(&self, labels: &[&str]) {
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let known = counts.iter_mut().find(|(key, _)| key.iter().map(String::as_str).eq(labels.iter().copied()));
        match known {
            Some((_, count)) => *count += 1,
            None => {
                counts.insert(labels.iter().map(|l| (*l).to_owned()).collect(), 1);
            }
        }
    }

    fn write(&self, out: &mut String, name: &str, help: &str, label_names: &[&str]) {
        header(out, name, help, "counter");
        for (values, count) in self.0.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(out, "{name}{} {count}", labels(label_names, values));
        }
    }
}

/// A histogram with fixed buckets.
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    /// The sum, in millionths of the unit (so it fits an atomic integer).
    sum_micros: AtomicU64,
}

impl Histogram {
    /// A histogram with upper bounds `bounds` (ascending), plus +Inf.
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, value: f64) {
        if let Some(i) = self.bounds.iter().position(|b| value <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add((value * 1e6) as u64, Ordering::Relaxed);
    }

    /// The mean of the observations (0 without any).
    pub fn mean(&self) -> f64 {
        let count = self.count.load(Ordering::Relaxed);
        match count {
            0 => 0.0,
            n => self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6 / n as f64,
        }
    }

    /// Records a duration in seconds.
    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        header(out, name, help, "histogram");
        let mut cumulative = 0;
        for (bound, bucket) in self.bounds.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// Latency buckets, in seconds: 50 µs to 10 s.
pub const SECONDS: &[f64] =
    &[0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];
/// Batch-size buckets: writes per commit.
pub const SIZES: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0, 4096.0];

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn labels(names: &[&str], values: &[String]) -> String {
    if names.is_empty() {
        return String::new();
    }
    let pairs: Vec<String> = names
        .iter()
        .zip(values)
        .map(|(n, v)| format!("{n}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")))
        .collect();
    format!("{{{}}}", pairs.join(","))
}

/// A plain counter or gauge line.
pub fn write_value(out: &mut String, name: &str, help: &str, kind: &str, value: u64) {
    header(out, name, help, kind);
    let _ = writeln!(out, "{name} {value}");
}

/// A gauge with one line per label set (none when `rows` is empty: the
/// header alone).
pub fn write_labeled(out: &mut String, name: &str, help: &str, names: &[&str], rows: &[(Vec<String>, u64)]) {
    header(out, name, help, "gauge");
    for (values, value) in rows {
        let _ = writeln!(out, "{name}{} {value}", labels(names, values));
    }
}

/// One gauge line with a fractional value.
pub fn write_float(out: &mut String, name: &str, help: &str, value: f64) {
    header(out, name, help, "gauge");
    let _ = writeln!(out, "{name} {value}");
}

/// What the runtime and its activities count.
pub struct RuntimeMetrics {
    /// Runs started, by workflow and version.
    pub runs_started: Labeled,
    /// Runs ended, by workflow, version and status (completed, failed,
    /// terminated).
    pub runs_ended: Labeled,
    /// Journaled host calls made live, by kind.
    pub host_calls: Labeled,
    /// Activity attempts, by activity and outcome (ok, failed, timeout).
    pub activity_attempts: Labeled,
    /// Failed attempts that will be retried, by activity.
    pub activity_retries: Labeled,
    /// Divergences found (live runs, replays and upgrade checks).
    pub divergences: AtomicU64,
    /// Replays that verify a journal (`cairn replay`, upgrade checks).
    pub replay_seconds: Histogram,
}

impl Default for RuntimeMetrics {
    fn default() -> Self {
        RuntimeMetrics {
            runs_started: Labeled::default(),
            runs_ended: Labeled::default(),
            host_calls: Labeled::default(),
            activity_attempts: Labeled::default(),
            activity_retries: Labeled::default(),
            divergences: AtomicU64::new(0),
            replay_seconds: Histogram::new(SECONDS),
        }
    }
}

impl RuntimeMetrics {
    /// Writes these metrics in Prometheus text format.
    pub fn write(&self, out: &mut String) {
        self.runs_started.write(out, "cairn_runs_started_total", "Runs started.", &["workflow", "version"]);
        // One family per end, as dashboards expect (`cairn_runs_completed_total`, …).
        for status in ["completed", "failed", "terminated"] {
            let name = format!("cairn_runs_{status}_total");
            header(out, &name, &format!("Runs that ended {status}."), "counter");
            for (values, count) in self.runs_ended.0.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                if values.get(2).map(String::as_str) == Some(status) {
                    let _ = writeln!(out, "{name}{} {count}", labels(&["workflow", "version"], &values[..2]));
                }
            }
        }
        self.host_calls.write(out, "cairn_host_calls_total", "Journaled host calls made by live runs.", &["kind"]);
        self.activity_attempts.write(
            out,
            "cairn_activity_attempts_total",
            "Activity attempts by outcome (ok, failed, timeout).",
            &["activity", "outcome"],
        );
        self.activity_retries.write(
            out,
            "cairn_activity_retries_total",
            "Failed activity attempts that are retried.",
            &["activity"],
        );
        write_value(
            out,
            "cairn_divergences_total",
            "Divergences found: code that no longer matches a journal.",
            "counter",
            self.divergences.load(Ordering::Relaxed),
        );
        self.replay_seconds.write(out, "cairn_replay_seconds", "Time to replay a journal in a verifying replay.");
    }
}

/// What the store's writer counts.
pub struct CommitMetrics {
    /// Writes per commit.
    pub batch_size: Histogram,
    /// Time per commit, including fsync.
    pub latency: Histogram,
}

impl Default for CommitMetrics {
    fn default() -> Self {
        CommitMetrics { batch_size: Histogram::new(SIZES), latency: Histogram::new(SECONDS) }
    }
}

impl CommitMetrics {
    /// Writes these metrics in Prometheus text format.
    pub fn write(&self, out: &mut String) {
        self.batch_size.write(out, "cairn_journal_commit_batch_size", "Writes per store commit (group commit).");
        self.latency.write(out, "cairn_journal_commit_seconds", "Store commit latency, fsync included.");
    }
}
