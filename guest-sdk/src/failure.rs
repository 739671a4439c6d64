//! The error type of workflows and activities.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a workflow, an activity or an awaited operation failed.
///
/// `kind` is a short stable reason that retry policies and callers match on
/// (`card-declined`, `timeout`, `cancelled`); `message` is for people.
///
/// ```
/// use cairn_sdk::Failure;
/// let f = Failure::new("card-declined", "the card was declined")
///     .with_details(&serde_json::json!({ "code": 51 }));
/// assert_eq!(f.kind, "card-declined");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// Machine-readable reason.
    pub kind: String,
    /// Human-readable explanation.
    pub message: String,
    /// Optional structured detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

impl Failure {
    /// A failure of the given kind with a message.
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        Failure { kind: kind.into(), message: message.into(), details: None }
    }

    /// Attaches structured detail.
    pub fn with_details<T: Serialize>(mut self, details: &T) -> Self {
        self.details = serde_json::to_value(details).ok();
        self
    }

    /// True when this failure means the operation was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.kind == "cancelled"
    }

    pub(crate) fn invalid_input(err: serde_json::Error) -> Self {
        Failure::new("invalid-input", format!("the input does not match the expected type: {err}"))
    }

    pub(crate) fn invalid_output(err: serde_json::Error) -> Self {
        Failure::new("invalid-output", format!("the result could not be encoded as JSON: {err}"))
    }

    /// The failure returned for an activity function the component does not have.
    #[doc(hidden)]
    pub fn unknown_function(name: &str, known: &[&str]) -> Self {
        Failure::new(
            "unknown-function",
            format!("this activity component has no function `{name}`; it has: {}", known.join(", ")),
        )
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for Failure {}

macro_rules! wit_conversions {
    ($module:path) => {
        const _: () = {
            use $module as wit;

            impl From<wit::Failure> for Failure {
                fn from(f: wit::Failure) -> Self {
                    Failure {
                        kind: f.kind,
                        message: f.message,
                        details: f.details.and_then(|d| serde_json::from_str(&d).ok()),
                    }
                }
            }

            impl From<Failure> for wit::Failure {
                fn from(f: Failure) -> Self {
                    wit::Failure { kind: f.kind, message: f.message, details: f.details.map(|d| d.to_string()) }
                }
            }
        };
    };
}

wit_conversions!(crate::bindings::cairn::workflow::types);
wit_conversions!(crate::activity_bindings::cairn::workflow::types);
