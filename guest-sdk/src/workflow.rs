//! The workflow side: [`Context`] and the handles it returns.

use crate::bindings::cairn::workflow::runtime;
use crate::bindings::cairn::workflow::types as wit;
use crate::Failure;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::marker::PhantomData;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How an activity is retried when an attempt fails.
///
/// The default makes 5 attempts, waiting 1 s, 2 s, 4 s, 8 s between them,
/// and never retries `invalid-input` or `unknown-function` failures.
///
/// ```
/// use cairn_sdk::RetryPolicy;
/// use std::time::Duration;
/// let policy = RetryPolicy::default()
///     .max_attempts(3)
///     .initial_interval(Duration::from_millis(200))
///     .non_retryable(["card-declined"]);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    max_attempts: u32,
    initial_interval: Duration,
    backoff_coefficient: f64,
    max_interval: Duration,
    non_retryable_kinds: Vec<String>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_interval: Duration::from_secs(1),
            backoff_coefficient: 2.0,
            max_interval: Duration::from_secs(60),
            non_retryable_kinds: vec!["invalid-input".into(), "unknown-function".into()],
        }
    }
}

impl RetryPolicy {
    /// Never retry: one attempt only.
    pub fn none() -> Self {
        RetryPolicy::default().max_attempts(1)
    }

    /// Attempts in total, the first included; `0` retries without limit.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }

    /// Delay before the first retry.
    pub fn initial_interval(mut self, d: Duration) -> Self {
        self.initial_interval = d;
        self
    }

    /// Multiplier applied to the delay after each failed attempt.
    pub fn backoff_coefficient(mut self, c: f64) -> Self {
        self.backoff_coefficient = c;
        self
    }

    /// Longest delay between attempts.
    pub fn max_interval(mut self, d: Duration) -> Self {
        self.max_interval = d;
        self
    }

    /// Adds failure kinds that end the activity without a retry.
    pub fn non_retryable<S: Into<String>>(mut self, kinds: impl IntoIterator<Item = S>) -> Self {
        self.non_retryable_kinds.extend(kinds.into_iter().map(Into::into));
        self
    }
}

/// Options for one activity call: a per-attempt timeout and a retry policy.
///
/// ```
/// use cairn_sdk::{ActivityOptions, RetryPolicy};
/// use std::time::Duration;
/// let options = ActivityOptions::default()
///     .timeout(Duration::from_secs(30))
///     .retry(RetryPolicy::default().max_attempts(3));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ActivityOptions {
    timeout: Duration,
    retry: RetryPolicy,
}

impl Default for ActivityOptions {
    fn default() -> Self {
        ActivityOptions { timeout: Duration::from_secs(60), retry: RetryPolicy::default() }
    }
}

impl ActivityOptions {
    /// Longest one attempt may run; a timed-out attempt counts as failed.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// The retry policy.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    fn to_wit(&self) -> wit::ActivityOptions {
        wit::ActivityOptions {
            timeout_ms: millis(self.timeout),
            retry: wit::RetryPolicy {
                max_attempts: self.retry.max_attempts,
                initial_interval_ms: millis(self.retry.initial_interval),
                backoff_coefficient: self.retry.backoff_coefficient,
                max_interval_ms: millis(self.retry.max_interval),
                non_retryable_kinds: self.retry.non_retryable_kinds.clone(),
            },
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Severity of a [`Context::log`] line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// Very detailed tracing.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal progress.
    Info,
    /// Something unexpected that the workflow handled.
    Warn,
    /// Something failed.
    Error,
}

/// A pending operation (activity, timer, signal wait) of this run, whose
/// completion decodes to `T`.
///
/// Nothing blocks until you call [`Pending::get`]; start several operations
/// first to run them concurrently, and use [`Context::select`] to take
/// whichever finishes first.
#[must_use = "a pending operation does nothing for the workflow until it is awaited"]
#[derive(Debug)]
pub struct Pending<T> {
    handle: u32,
    _result: PhantomData<fn() -> T>,
}

impl<T> Pending<T> {
    fn new(handle: u32) -> Self {
        Pending { handle, _result: PhantomData }
    }
}

impl<T: DeserializeOwned> Pending<T> {
    /// The host's handle for this operation.
    pub fn handle(&self) -> u32 {
        self.handle
    }

    /// Blocks until the operation completes and decodes its result.
    pub fn get(&self) -> Result<T, Failure> {
        decode(crate::handlers::wait(&[self.handle], false).1)
    }

    /// The same operation with its result left as untyped JSON; handy for
    /// keeping different kinds of operations in one list.
    pub fn untyped(self) -> Pending<serde_json::Value> {
        Pending::new(self.handle)
    }

    /// Cancels the operation. A later [`Pending::get`] returns a failure of
    /// kind `cancelled` unless it had already completed.
    pub fn cancel(&self) {
        runtime::cancel(self.handle)
    }
}

fn decode<T: DeserializeOwned>(completion: wit::Completion) -> Result<T, Failure> {
    match completion {
        wit::Completion::Ok(json) => serde_json::from_str(&json).map_err(|e| {
            Failure::new("invalid-result", format!("the operation's result does not match the expected type: {e}"))
        }),
        wit::Completion::Err(failure) => Err(failure.into()),
    }
}

/// Anything [`Context::select`] can wait on.
pub trait Selectable {
    /// The host handle.
    fn handle(&self) -> u32;
}

impl<T> Selectable for Pending<T> {
    fn handle(&self) -> u32 {
        self.handle
    }
}

/// The workflow's window on the world. Every method is journaled or derived
/// from the journal, so it returns the same values when the run is replayed.
#[derive(Debug)]
pub struct Context {
    _private: (),
}

impl Context {
    pub(crate) fn new() -> Self {
        Context { _private: () }
    }

    /// This run's id.
    pub fn run_id(&self) -> String {
        runtime::run_id()
    }

    /// Workflow time: when the latest journal entry was written. Use this
    /// (or `SystemTime::now()`, which reads the same clock) instead of a real
    /// clock, which would differ on replay.
    pub fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(runtime::now_ms())
    }

    /// A random number that is the same on replay.
    pub fn random(&self) -> u64 {
        runtime::random_u64()
    }

    /// Schedules the activity `"<component>.<function>"` with default
    /// [`ActivityOptions`]; call [`Pending::get`] for its result.
    ///
    /// ```no_run
    /// # fn f(ctx: &cairn_sdk::Context) -> Result<(), cairn_sdk::Failure> {
    /// let charge: serde_json::Value = ctx.activity("payments.charge", &42).get()?;
    /// # Ok(()) }
    /// ```
    pub fn activity<I: Serialize + ?Sized, O: DeserializeOwned>(&self, name: &str, input: &I) -> Pending<O> {
        self.activity_with(name, input, &ActivityOptions::default())
    }

    /// Schedules an activity with explicit options.
    pub fn activity_with<I: Serialize + ?Sized, O: DeserializeOwned>(
        &self,
        name: &str,
        input: &I,
        options: &ActivityOptions,
    ) -> Pending<O> {
        // Serialising plain data cannot fail; a type whose Serialize impl
        // fails is a bug in the workflow, reported as its failure.
        let input = serde_json::to_string(input)
            .unwrap_or_else(|e| panic!("the input of activity {name} could not be encoded as JSON: {e}"));
        Pending::new(runtime::schedule_activity(name, &input, &options.to_wit()))
    }

    /// Starts a durable timer; [`Pending::get`] returns when it fires.
    pub fn timer(&self, duration: Duration) -> Pending<()> {
        Pending::new(runtime::start_timer(millis(duration)))
    }

    /// Sleeps for `duration` of workflow time. Survives restarts: a run that
    /// sleeps for a day sleeps for a day even if the host restarts.
    pub fn sleep(&self, duration: Duration) {
        // A timer's completion is always `ok(null)` or `cancelled`, and
        // nothing else can cancel this one.
        let _ = self.timer(duration).get();
    }

    /// Waits for the next signal named `name` sent to this run.
    pub fn signal<T: DeserializeOwned>(&self, name: &str) -> Pending<T> {
        Pending::new(runtime::wait_signal(name))
    }

    /// Starts a child run of `workflow`.
    pub fn child<I: Serialize + ?Sized, O: DeserializeOwned>(&self, workflow: &str, input: &I) -> Pending<O> {
        let input = serde_json::to_string(input)
            .unwrap_or_else(|e| panic!("the input of child workflow {workflow} could not be encoded as JSON: {e}"));
        Pending::new(runtime::start_child(workflow, &input))
    }

    /// Ends this run's current journal and starts over with `input`, under
    /// the same run id: the way to keep long-lived workflows (an agent loop,
    /// a daily job) fast to replay. Signals not consumed yet carry over. Does
    /// not return.
    ///
    /// ```no_run
    /// # fn f(ctx: &cairn_sdk::Context, day: u32) -> Result<(), cairn_sdk::Failure> {
    /// ctx.sleep(std::time::Duration::from_secs(86_400));
    /// ctx.continue_as_new(&(day + 1))
    /// # }
    /// ```
    pub fn continue_as_new<I: Serialize + ?Sized>(&self, input: &I) -> ! {
        let input = serde_json::to_string(input)
            .unwrap_or_else(|e| panic!("the input of continue-as-new could not be encoded as JSON: {e}"));
        runtime::continue_as_new(&input);
        unreachable!("the host never returns from continue-as-new")
    }

    /// Waits until the first of `pending` completes and returns its index.
    /// Then call `get` on that one for its result.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # fn f(ctx: &cairn_sdk::Context) -> Result<(), cairn_sdk::Failure> {
    /// let approval = ctx.signal::<bool>("approved");
    /// let deadline = ctx.timer(Duration::from_secs(3600));
    /// if ctx.select(&[&approval, &deadline]) == 0 {
    ///     let approved = approval.get()?;
    /// } else {
    ///     approval.cancel();
    /// }
    /// # Ok(()) }
    /// ```
    pub fn select(&self, pending: &[&dyn Selectable]) -> usize {
        let handles: Vec<u32> = pending.iter().map(|p| p.handle()).collect();
        let (winner, _) = crate::handlers::wait(&handles, true);
        handles.iter().position(|h| *h == winner).unwrap_or(0)
    }

    /// Answers query `name` with `handler`, from the workflow's state where
    /// it waits. Queries run in a scratch replay of the run, so whatever the
    /// handler does is forgotten: read state, do not change it. Register
    /// handlers before the workflow's first wait.
    ///
    /// ```no_run
    /// # use std::{cell::Cell, rc::Rc};
    /// # fn f(ctx: &cairn_sdk::Context) -> Result<(), cairn_sdk::Failure> {
    /// let step = Rc::new(Cell::new(0u32));
    /// let seen = step.clone();
    /// ctx.on_query("step", move |_: ()| Ok(seen.get()));
    /// # Ok(()) }
    /// ```
    pub fn on_query<A, R>(&self, name: &str, handler: impl Fn(A) -> Result<R, Failure> + 'static)
    where
        A: DeserializeOwned,
        R: Serialize,
    {
        crate::handlers::register_query(name, handler)
    }

    /// Handles update `name`: `validator` decides whether to accept it (a
    /// rejection is answered to the client and leaves no trace in the run;
    /// like a query, it must only read), then `handler` runs in the
    /// workflow at its next wait, may call activities and timers, and its
    /// result is answered to the client once it is journaled. While one
    /// update handler runs, further updates wait their turn.
    ///
    /// ```no_run
    /// # use std::{cell::RefCell, rc::Rc};
    /// # use cairn_sdk::Failure;
    /// # fn f(ctx: &cairn_sdk::Context) -> Result<(), Failure> {
    /// let cart = Rc::new(RefCell::new(Vec::<String>::new()));
    /// let items = cart.clone();
    /// ctx.on_update(
    ///     "add",
    ///     |item: &String| match item.is_empty() {
    ///         true => Err(Failure::new("empty-item", "name the item")),
    ///         false => Ok(()),
    ///     },
    ///     move |_ctx, item: String| {
    ///         items.borrow_mut().push(item);
    ///         Ok(items.borrow().len())
    ///     },
    /// );
    /// # Ok(()) }
    /// ```
    pub fn on_update<A, R>(
        &self,
        name: &str,
        validator: impl Fn(&A) -> Result<(), Failure> + 'static,
        handler: impl Fn(&Context, A) -> Result<R, Failure> + 'static,
    ) where
        A: DeserializeOwned,
        R: Serialize,
    {
        crate::handlers::register_update(name, validator, handler)
    }

    /// Serves updates until `condition` holds (Temporal's `wait_condition`):
    /// the way for a workflow driven by updates to wait for the one that
    /// ends it. Returns at once if it already holds, and the failure if
    /// the wait fails instead (kind `cancelled`: the run was cancelled).
    ///
    /// # Panics
    ///
    /// If the condition does not hold and no update handler is registered:
    /// nothing could ever make it true.
    pub fn wait_until(&self, condition: impl Fn() -> bool) -> Result<(), Failure> {
        while !condition() {
            match crate::handlers::serve_update() {
                Some(served) => served?,
                None => panic!(
                    "wait_until: the condition is false and no update handler is registered, so it would wait forever"
                ),
            }
        }
        Ok(())
    }

    /// Marks a code change (see Temporal's `patched`): returns `true` for runs
    /// that reach this point with the new code, `false` for runs whose
    /// journal was written before the change. Keep the old branch until no
    /// such run is left.
    pub fn patched(&self, change_id: &str) -> bool {
        runtime::patched(change_id)
    }

    /// Publishes a custom status that clients see with the run's status.
    pub fn set_status<T: Serialize + ?Sized>(&self, status: &T) {
        if let Ok(json) = serde_json::to_string(status) {
            runtime::set_custom_status(&json)
        }
    }

    /// Sets typed search attributes of this run (`cairn list --query`
    /// filters on them): a JSON object of strings, integers, booleans and
    /// `{"time": "<RFC 3339>"}` values; `null` removes one. Any other value
    /// fails the run.
    pub fn upsert_search_attributes<T: Serialize + ?Sized>(&self, attributes: &T) {
        if let Ok(json) = serde_json::to_string(attributes) {
            runtime::upsert_search_attributes(&json)
        }
    }

    /// Writes a line to the run's log (not repeated on replay).
    pub fn log(&self, level: LogLevel, message: &str) {
        let level = match level {
            LogLevel::Trace => wit::LogLevel::Trace,
            LogLevel::Debug => wit::LogLevel::Debug,
            LogLevel::Info => wit::LogLevel::Info,
            LogLevel::Warn => wit::LogLevel::Warn,
            LogLevel::Error => wit::LogLevel::Error,
        };
        runtime::log(level, message)
    }

    /// Shorthand for `log(LogLevel::Info, message)`.
    pub fn info(&self, message: &str) {
        self.log(LogLevel::Info, message)
    }
}

/// Runs a workflow function over the raw JSON input; used by [`crate::workflow!`].
pub fn run_workflow<I, O, F>(input: String, function: F) -> Result<String, wit::Failure>
where
    I: DeserializeOwned,
    O: Serialize,
    F: FnOnce(&Context, I) -> Result<O, Failure>,
{
    let input: I = serde_json::from_str(&input).map_err(|e| wit::Failure::from(Failure::invalid_input(e)))?;
    let output = function(&Context::new(), input).map_err(wit::Failure::from)?;
    serde_json::to_string(&output).map_err(|e| Failure::invalid_output(e).into())
}
