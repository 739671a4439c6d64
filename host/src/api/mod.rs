//! The HTTP API (axum): routes under `/v1`, bearer-token auth, and the
//! mapping of library errors to JSON errors. No engine logic lives here;
//! nothing below this module knows HTTP exists.

mod activities;
mod error;
mod listen;
mod openapi;
mod routes;
mod schedules;
mod ui;
mod updates;

pub use error::ApiError;
pub use listen::{serve, Connections};

use crate::registry::{Registry, MAX_COMPONENT_BYTES};
use crate::runtime::Runtime;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Largest JSON request body: one journaled payload (a run's input, a
/// signal, an activity result) and room for the fields around it, so
/// whatever the runtime takes fits in a request, and a payload over its
/// limit gets the runtime's own message.
pub(crate) const MAX_JSON_BODY: usize = crate::journal::MAX_PAYLOAD_BYTES + (64 << 10);

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub(crate) rt: Runtime,
    pub(crate) registry: Registry,
    pub(crate) schedules: crate::schedule::Schedules,
    token: Option<Arc<str>>,
}

impl AppState {
    /// The state of an API over `rt`; with `token`, requests need it.
    pub fn new(rt: Runtime, token: Option<String>) -> Self {
        let registry = Registry::new(rt.clone());
        let schedules = crate::schedule::Schedules::new(rt.clone(), registry.clone());
        AppState { registry, schedules, rt, token: token.map(Into::into) }
    }

    /// The schedules the API changes: run [`crate::schedule::Schedules::drive`]
    /// on a clone to fire them.
    pub fn schedules(&self) -> &crate::schedule::Schedules {
        &self.schedules
    }
}

/// The `/v1` router.
pub fn router(state: AppState) -> Router {
    let json_limit = DefaultBodyLimit::max(MAX_JSON_BODY);
    // Over the component limit by a little, so the registry reports the
    // size itself with its own message.
    let upload_limit = DefaultBodyLimit::max(MAX_COMPONENT_BYTES + 1);
    let v1 = Router::new()
        .route("/health", get(routes::health))
        .route("/metrics", get(routes::metrics))
        .route("/openapi.json", get(openapi::document))
        .route("/components", get(routes::components))
        .route("/components/{name}", post(routes::deploy).layer(upload_limit))
        .route("/runs", post(routes::start).get(routes::list))
        .route("/runs/{id}", get(routes::get_run).delete(routes::delete_run))
        .route("/runs/{id}/result", get(routes::result))
        .route("/runs/{id}/journal", get(routes::journal))
        .route("/runs/{id}/signals/{name}", post(routes::signal))
        .route("/runs/{id}/updates/{name}", post(updates::update))
        .route("/runs/{id}/queries/{name}", get(updates::query_get).post(updates::query_post))
        .route("/runs/{id}/cancel", post(routes::cancel))
        .route("/runs/{id}/terminate", post(routes::terminate))
        .route("/runs/{id}/pause", post(routes::pause))
        .route("/runs/{id}/resume", post(routes::resume))
        .route("/runs/{id}/upgrade", post(routes::upgrade_run))
        .route("/runs/{id}/reset", post(routes::reset))
        .route("/workflows/{name}/versions", get(routes::versions))
        .route("/workflows/{name}/versions/{version}", axum::routing::delete(routes::retire))
        .route("/workflows/{name}/rollback", post(routes::rollback))
        .route("/workflows/{name}/retention", axum::routing::put(routes::set_retention))
        .route("/workflows/{name}/concurrency", axum::routing::put(routes::set_concurrency))
        .route("/activities/limits", get(activities::list_limits))
        .route("/activities/{name}/limits", get(activities::get_limits).put(activities::set_limits))
        .route("/workflows/{name}/upgrade", post(routes::upgrade_workflow))
        .route("/batch", post(routes::batch))
        .route("/schedules", post(schedules::create).get(schedules::list))
        .route("/schedules/{name}", get(schedules::get).delete(schedules::delete))
        .route("/schedules/{name}/pause", post(schedules::pause))
        .route("/schedules/{name}/resume", post(schedules::resume))
        .route("/schedules/{name}/trigger", post(schedules::trigger))
        .route("/schedules/{name}/backfill", post(schedules::backfill))
        .route("/workers/poll", post(routes::poll_task))
        .route("/tasks/{token}/complete", post(routes::complete_task))
        .route("/tasks/{token}/fail", post(routes::fail_task))
        .route("/tasks/{token}/heartbeat", post(routes::heartbeat_task))
        .layer(json_limit);
    Router::new()
        .route("/metrics", get(routes::prometheus))
        .route("/ui", get(ui::page))
        .route("/ui/login", get(ui::login_page).post(ui::login))
        .nest("/v1", v1)
        .fallback(routes::not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .with_state(state)
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "this endpoint does not take that method; see /v1/openapi.json",
    )
}

/// Checks `Authorization: Bearer <token>` (or the web UI's cookie) in
/// constant time. The UI's sign-in page is the one open path.
async fn authenticate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(token) = &state.token else {
        return next.run(request).await;
    };
    if request.uri().path() == "/ui/login" {
        return next.run(request).await;
    }
    let given = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let cookie = request
        .headers()
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(ui::COOKIE).and_then(|c| c.strip_prefix('=')))
        .map(str::to_owned)
        .unwrap_or_default();
    let by_header = bool::from(given.as_bytes().ct_eq(token.as_bytes()));
    let by_cookie = bool::from(cookie.as_bytes().ct_eq(ui::hex(token.as_bytes()).as_bytes()));
    if by_header || by_cookie {
        next.run(request).await
    } else if request.uri().path() == "/ui" {
        (StatusCode::SEE_OTHER, [(axum::http::header::LOCATION, "/ui/login")]).into_response()
    } else {
        let message = if given.is_empty() {
            "this server needs `Authorization: Bearer <token>` (cairn: --token or CAIRN_TOKEN)"
        } else {
            "the bearer token is not valid for this server"
        };
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response()
    }
}
