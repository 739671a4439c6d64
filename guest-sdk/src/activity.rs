//! The activity side: [`ActivityContext`] and dispatch by function name.

use crate::activity_bindings::cairn::workflow::activity_context as host;
use crate::activity_bindings::cairn::workflow::types as wit;
use crate::Failure;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// What an activity attempt knows about itself.
#[derive(Debug)]
pub struct ActivityContext {
    _private: (),
}

impl ActivityContext {
    #[doc(hidden)]
    pub fn current() -> Self {
        ActivityContext { _private: () }
    }

    /// The same for every attempt of one scheduled call, and different for
    /// every other call (other generations of the run included): give it to
    /// payment providers and other services so a retry does not repeat an
    /// effect.
    pub fn idempotency_key(&self) -> String {
        host::idempotency_key()
    }

    /// This attempt's number, starting at 1.
    pub fn attempt(&self) -> u32 {
        host::attempt()
    }

    /// The run that scheduled this activity.
    pub fn run_id(&self) -> String {
        host::run_id()
    }
}

/// Decodes the input, calls the function, encodes the result; used by
/// [`crate::activities!`].
pub fn dispatch_activity<I, O, F>(ctx: &ActivityContext, input: &str, function: F) -> Result<String, wit::Failure>
where
    I: DeserializeOwned,
    O: Serialize,
    F: FnOnce(&ActivityContext, I) -> Result<O, Failure>,
{
    let input: I = serde_json::from_str(input).map_err(|e| wit::Failure::from(Failure::invalid_input(e)))?;
    let output = function(ctx, input).map_err(wit::Failure::from)?;
    serde_json::to_string(&output).map_err(|e| Failure::invalid_output(e).into())
}
