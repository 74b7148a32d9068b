//! The dashboard: a page and its assets, all inside the binary, and
//! `/v1/info`, which tells the page who it is talking to.
//!
//! The page holds no secret: it loads without a token and asks the API for
//! everything with the token the user signs in with (kept in the tab's
//! session storage, sent as `Authorization: Bearer`, never in a URL). Its
//! Content-Security-Policy lets it load and connect to this server only.

use std::sync::Arc;

use axum::extract::{Extension, State as Shared};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::State;
use crate::guard::Caller;
use crate::tokens::Role;

const INDEX: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");
const ICON: &str = include_str!("../assets/icon.svg");

/// Only this server: no inline script or style, no frames, no forms.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, kind),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

pub(crate) async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX)
}

pub(crate) async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

pub(crate) async fn app_css() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

pub(crate) async fn icon() -> Response {
    asset("image/svg+xml", ICON)
}

/// Version, store, server time and the caller's role (`admin` under local
/// trust, where no token is configured).
pub(crate) async fn info(
    Shared(st): Shared<Arc<State>>,
    Extension(caller): Extension<Caller>,
) -> Response {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let body = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "store": st.settings.store_shown,
        "server_time": now,
        "role": caller.0.unwrap_or(Role::Admin).name(),
        "token": caller.1,
        "trusted": caller.0.is_none(),
        "tokens": st.has_tokens(),
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}
