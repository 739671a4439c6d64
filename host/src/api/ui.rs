//! The web UI at `/ui`: one page (runs, a run's journal, workflows) that
//! talks to the `/v1` API from the browser. With a token, the browser signs
//! in once at `/ui/login` and holds the token in an HttpOnly, SameSite=Strict
//! cookie, which the auth middleware accepts as it accepts a bearer token.

use super::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION, SET_COOKIE};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use subtle::ConstantTimeEq;

/// The page, embedded in the binary.
const PAGE: &str = include_str!("ui.html");

/// The cookie holding the hex-encoded token.
pub(super) const COOKIE: &str = "cairn_token";

pub(super) async fn page() -> impl IntoResponse {
    ([(CONTENT_TYPE, "text/html; charset=utf-8"), (CACHE_CONTROL, "no-store")], PAGE)
}

fn login_form(error: Option<&str>) -> Html<String> {
    let error = error.map(|e| format!("<p style=\"color:#a33\">{e}</p>")).unwrap_or_default();
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Cairn: sign in</title></head>\
         <body style=\"font:14px system-ui,sans-serif;margin:3em auto;max-width:28em\"><h2>Cairn</h2>{error}\
         <form method=\"post\" action=\"/ui/login\"><p>This server needs its token (the contents of its --token-file).</p>\
         <input type=\"password\" name=\"token\" autofocus size=\"40\"> <button>Sign in</button></form></body></html>"
    ))
}

pub(super) async fn login_page() -> Html<String> {
    login_form(None)
}

/// `token=…` from a form body.
fn form_token(body: &[u8]) -> Option<Vec<u8>> {
    let value = body.split(|&b| b == b'&').find_map(|pair| pair.strip_prefix(b"token="))?;
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        match value[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = value.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok())?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    Some(out)
}

pub(super) async fn login(State(app): State<AppState>, body: Bytes) -> Response {
    let Some(expected) = &app.token else {
        return (StatusCode::SEE_OTHER, [(LOCATION, "/ui")]).into_response();
    };
    let given = form_token(&body).unwrap_or_default();
    if !bool::from(given.as_slice().ct_eq(expected.as_bytes())) {
        return (StatusCode::UNAUTHORIZED, login_form(Some("That is not this server's token."))).into_response();
    }
    let cookie = format!("{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/", hex(&given));
    (StatusCode::SEE_OTHER, [(LOCATION, "/ui".to_owned()), (SET_COOKIE, cookie)]).into_response()
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
