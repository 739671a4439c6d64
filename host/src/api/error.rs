//! Every error the API returns: `{"code": "...", "message": "..."}` with the
//! right HTTP status. Each library error maps here, in one place.

use crate::registry::UploadError;
use crate::runtime::{ControlError, QueryError, StartError};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// An API error.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// What happened and what to do.
    pub message: String,
    /// The workflow's own failure, when it refused (a rejected update, a
    /// failed query), with its kind and details.
    pub failure: Option<crate::journal::Failure>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), failure: None }
    }

    pub(crate) fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub(crate) fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    fn internal(message: impl std::fmt::Display) -> Self {
        tracing::error!(%message, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("{message}; nothing was changed"))
    }

    /// A commit whose outcome is not known: it may land (the store retries
    /// it, or its log record may already be durable), so the answer must
    /// not say nothing changed.
    pub(crate) fn outcome_unknown(message: impl std::fmt::Display) -> Self {
        tracing::error!(%message, "a commit's outcome is unknown");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "outcome-unknown",
            format!("{message}; the change may or may not have been stored: look before repeating it (`cairn status ID`); a start with the same id and a deploy of the same bytes are safe to repeat"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({ "code": self.code, "message": self.message });
        if let Some(failure) = self.failure {
            body["failure"] = serde_json::json!(failure);
        }
        (self.status, Json(body)).into_response()
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::NotFound(_) => ApiError::not_found("run-not-found", e.to_string()),
            QueryError::Ended { .. } => ApiError::new(StatusCode::CONFLICT, "run-ended", e.to_string()),
            QueryError::EndedBeforeUpdate { .. } => {
                ApiError::new(StatusCode::CONFLICT, "run-ended-before-update", e.to_string())
            }
            QueryError::InvalidName { .. } => ApiError::bad_request("invalid-name", e.to_string()),
            QueryError::InvalidUpdateId(_) => ApiError::bad_request("invalid-update-id", e.to_string()),
            QueryError::InvalidArgs(_) => ApiError::bad_request("invalid-args", e.to_string()),
            QueryError::Rejected(ref failure) => {
                let code = match failure.kind.as_str() {
                    "unknown-query" => "unknown-query",
                    "unknown-update" => "unknown-update",
                    _ => "rejected",
                };
                let status = match code {
                    "rejected" => StatusCode::UNPROCESSABLE_ENTITY,
                    _ => StatusCode::NOT_FOUND,
                };
                let failure = Some(failure.clone());
                ApiError { failure, ..ApiError::new(status, code, e.to_string()) }
            }
            QueryError::NotAnswered { .. } => ApiError::new(StatusCode::CONFLICT, "not-answered", e.to_string()),
            QueryError::Run(crate::runtime::RunError::Diverged { .. }) => {
                ApiError::new(StatusCode::CONFLICT, "run-diverged", e.to_string())
            }
            QueryError::Run(crate::runtime::RunError::Trapped { ref failure, .. })
            | QueryError::Run(crate::runtime::RunError::Contract { ref failure, .. }) => {
                let failure = Some(failure.clone());
                ApiError { failure, ..ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "handler-failed", e.to_string()) }
            }
            QueryError::Control(control) => control.into(),
            QueryError::Store(crate::store::StoreError::Commit(_)) => ApiError::outcome_unknown(e),
            QueryError::Run(_) | QueryError::Store(_) => ApiError::internal(e),
        }
    }
}

impl From<StartError> for ApiError {
    fn from(e: StartError) -> Self {
        match e {
            StartError::InvalidInput(_) => ApiError::bad_request("invalid-input", e.to_string()),
            StartError::InputTooLarge { .. } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too-large", e.to_string())
            }
            StartError::InvalidRunId(_) => ApiError::bad_request("invalid-run-id", e.to_string()),
            StartError::InvalidPriority(_) => ApiError::bad_request("invalid-priority", e.to_string()),
            StartError::InvalidConcurrencyKey(_) => ApiError::bad_request("invalid-concurrency-key", e.to_string()),
            StartError::NotAWorkflow { .. } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-component", e.to_string())
            }
            StartError::DifferentComponent { .. } => ApiError::new(StatusCode::CONFLICT, "run-exists", e.to_string()),
            StartError::Store(crate::store::StoreError::Commit(_)) => ApiError::outcome_unknown(e),
            StartError::Store(_) | StartError::Load(_) => ApiError::internal(e),
        }
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::NotFound(_) => ApiError::not_found("run-not-found", e.to_string()),
            ControlError::Elsewhere { .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "owner-unreachable", e.to_string())
            }
            ControlError::Ended { .. } => ApiError::new(StatusCode::CONFLICT, "run-ended", e.to_string()),
            ControlError::NotRunning { .. } => ApiError::new(StatusCode::CONFLICT, "run-not-running", e.to_string()),
            ControlError::Live { .. } => ApiError::new(StatusCode::CONFLICT, "run-live", e.to_string()),
            ControlError::NotPaused { .. } => ApiError::new(StatusCode::CONFLICT, "run-not-paused", e.to_string()),
            ControlError::InvalidName(_) => ApiError::bad_request("invalid-signal-name", e.to_string()),
            ControlError::InvalidPayload(_) => ApiError::bad_request("invalid-json", e.to_string()),
            ControlError::PayloadTooLarge { .. } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too-large", e.to_string())
            }
            ControlError::Busy(_) => ApiError::new(StatusCode::CONFLICT, "run-busy", e.to_string()),
            ControlError::TooManySignals { .. } => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too-many-signals", e.to_string())
            }
            ControlError::SignalBufferFull { .. } => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "signal-buffer-full", e.to_string())
            }
            ControlError::Commit(_) | ControlError::Store(crate::store::StoreError::Commit(_)) => {
                ApiError::outcome_unknown(e)
            }
            ControlError::Store(_) => ApiError::internal(e),
        }
    }
}

impl From<UploadError> for ApiError {
    fn from(e: UploadError) -> Self {
        match e {
            UploadError::TooLarge { .. } => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too-large", e.to_string()),
            UploadError::InvalidName(_) => ApiError::bad_request("invalid-name", e.to_string()),
            UploadError::NotAComponent(_) | UploadError::WrongWorld { .. } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-component", e.to_string())
            }
            UploadError::KindConflict { .. } => ApiError::new(StatusCode::CONFLICT, "kind-conflict", e.to_string()),
            UploadError::Store(crate::store::StoreError::Commit(_)) => ApiError::outcome_unknown(e),
            UploadError::Store(_) => ApiError::internal(e),
        }
    }
}

impl From<crate::activity::external::TaskError> for ApiError {
    fn from(e: crate::activity::external::TaskError) -> Self {
        use crate::activity::external::TaskError;
        match e {
            TaskError::Gone(_) => ApiError::new(StatusCode::NOT_FOUND, "task-gone", e.to_string()),
            TaskError::Board(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store-unavailable", e.to_string()),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::Reopening => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store-reopening", e.to_string())
            }
            e => ApiError::internal(e),
        }
    }
}

impl From<axum::extract::rejection::BytesRejection> for ApiError {
    fn from(e: axum::extract::rejection::BytesRejection) -> Self {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-large",
                format!(
                    "the request body is over the limit of {} bytes for a JSON request ({} bytes for one journaled payload, plus room for the rest of the request); store big data elsewhere and pass a reference",
                    super::MAX_JSON_BODY,
                    crate::journal::MAX_PAYLOAD_BYTES
                ),
            )
        } else {
            ApiError::bad_request("bad-body", e.body_text())
        }
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(e: axum::extract::rejection::QueryRejection) -> Self {
        ApiError::bad_request("invalid-query", e.body_text())
    }
}

impl From<crate::registry::VersionError> for ApiError {
    fn from(e: crate::registry::VersionError) -> Self {
        use crate::registry::VersionError as V;
        match e {
            V::WorkflowNotFound(_) => ApiError::not_found("workflow-not-found", e.to_string()),
            V::VersionNotFound { .. } => ApiError::not_found("version-not-found", e.to_string()),
            V::InUse { .. } => ApiError::new(StatusCode::CONFLICT, "version-in-use", e.to_string()),
            V::Current { .. } => ApiError::new(StatusCode::CONFLICT, "version-is-current", e.to_string()),
            V::InvalidActivity(_) => ApiError::bad_request("invalid-activity", e.to_string()),
            V::NotAnActivity(_) => ApiError::new(StatusCode::CONFLICT, "not-an-activity", e.to_string()),
            V::InvalidPointer(_) => ApiError::bad_request("invalid-key", e.to_string()),
            V::Store(crate::store::StoreError::Commit(crate::store::CommitError::Conflict { .. })) => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("{e}; another host changed it at the same moment: try again"),
            ),
            V::Store(_) => ApiError::internal(e),
        }
    }
}

impl From<crate::upgrade::ResetError> for ApiError {
    fn from(e: crate::upgrade::ResetError) -> Self {
        use crate::upgrade::ResetError as R;
        match e {
            R::BadSeq { .. } | R::Ended { .. } => ApiError::bad_request("invalid-reset", e.to_string()),
            R::Diverges { .. } => ApiError::new(StatusCode::CONFLICT, "reset-diverges", e.to_string()),
            R::Exists(_) => ApiError::new(StatusCode::CONFLICT, "run-exists", e.to_string()),
            R::Id(s) => s.into(),
            R::Upgrade(u) => u.into(),
        }
    }
}

impl From<crate::upgrade::UpgradeError> for ApiError {
    fn from(e: crate::upgrade::UpgradeError) -> Self {
        use crate::upgrade::UpgradeError as U;
        match e {
            U::RunNotFound(_) => ApiError::not_found("run-not-found", e.to_string()),
            U::Version(v) => v.into(),
            U::Control(c) => c.into(),
            U::Store(_) | U::Load(_) | U::Verify(_) => ApiError::internal(e),
        }
    }
}
