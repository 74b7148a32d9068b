//! The OpenAPI 3.1 document of the API (`GET /v1/openapi.json`), generated
//! from the types that cross it (`locksmith_core::wire`, the views of the
//! store) and from the route list below, one entry per route of `api.rs`.

#![allow(dead_code)]

use locksmith_core::wire::{
    AcquireBody, ForceBody, GrantBody, LeaveBody, Problem, ReleaseBody, RenewBody, Strategy,
    WaitingBody,
};
use locksmith_core::{
    Blocked, Event, EventKind, Fence, GrantedLock, Health, KeyStatus, LockInfo, Mode, Release,
    ReleaseReason, Renewal, Scope, Stats, WaiterInfo,
};
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoResponses, Modify, OpenApi, ToSchema};

use crate::api::{HistoryQuery, ListQuery, ReapBody};
use crate::events::Filter;

/// `GET /v1/locks`.
#[derive(Serialize, ToSchema)]
struct LockPage {
    /// Held locks, key order.
    locks: Vec<LockInfo>,
    /// The key to pass as `after` for the next page, if there is one.
    next: Option<String>,
}

/// `GET /v1/waiters`.
#[derive(Serialize, ToSchema)]
struct WaiterList {
    /// Queued requests, key then queue order.
    waiters: Vec<WaiterInfo>,
}

/// `GET /v1/history`.
#[derive(Serialize, ToSchema)]
struct EventList {
    /// Events, newest first.
    events: Vec<Event>,
}

/// `POST /v1/locks/{key}/force-release`.
#[derive(Serialize, ToSchema)]
struct Ended {
    /// The tenures that were ended.
    ended: Vec<LockInfo>,
}

/// `POST /v1/reap`.
#[derive(Serialize, ToSchema)]
struct Reaped {
    /// For each entry of the batch: whether it was ended.
    ended: Vec<bool>,
}

/// `POST /v1/queue/leave`.
#[derive(Serialize, ToSchema)]
struct Left {
    /// Whether a queue place was given up.
    left: bool,
}

/// `/healthz`, `/readyz`.
#[derive(Serialize, ToSchema)]
struct Health200 {
    /// `ok` or `ready`.
    status: String,
}

/// `GET /v1/info`: who the dashboard (or any client) is talking to.
#[derive(Serialize, ToSchema)]
struct Info {
    /// The server's version.
    version: String,
    /// The store, without its password.
    store: String,
    /// The server's clock, milliseconds since the Unix epoch.
    server_time: u64,
    /// The caller's role: `viewer`, `client` or `admin` (`admin` under
    /// local trust, when no token is configured).
    role: String,
    /// The name of the caller's token, if one was sent.
    token: Option<String>,
    /// True when no token is configured (loopback only).
    trusted: bool,
    /// True when the server has tokens.
    tokens: bool,
}

/// The answer to a release: the tenure ended now, or nothing of the
/// caller's was held.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
enum ReleaseAnswer {
    /// One key's answer.
    Key(Release),
    /// A grant that holds nothing any more.
    Grant(GrantNotHeld),
}

/// A grant release when the grant holds nothing.
#[derive(Serialize, ToSchema)]
struct GrantNotHeld {
    /// `not_held`.
    status: String,
    /// The grant.
    grant: i64,
}

/// One server-sent event of `GET /v1/events`.
#[derive(Serialize, ToSchema)]
struct StreamEvent {
    /// The event's id in the history (absent on `reset`).
    id: Option<String>,
    /// The event's kind (`acquired`, `released`, ...), or `reset` when
    /// events were missed that cannot be replayed.
    event: String,
    /// The event as JSON (see the `Event` schema), or `{"reason": ...}` for a reset.
    data: String,
}

/// Adds the bearer token scheme.
struct Bearer;

impl Modify for Bearer {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "locksmith",
        description = "Locks and leases for processes, agents and machines. Every refusal is an application/problem+json body with a stable code; see docs/http.md.",
    ),
    paths(
        acquire, renew_grant, release_grant, renew_key, release_key, force_release, leave,
        status, list, waiters, history, stats, events, reap, metrics, healthz, readyz, openapi,
        info
    ),
    components(schemas(
        AcquireBody, GrantBody, WaitingBody, RenewBody, ReleaseBody, ForceBody, LeaveBody,
        Problem, Strategy, Blocked, GrantedLock, LockInfo, WaiterInfo, KeyStatus, Stats,
        Renewal, Release, Event, EventKind, Fence, Health, Mode, Scope, ReleaseReason,
        LockPage, WaiterList, EventList, Ended, Reaped, Left, Health200, ReapBody,
        ReleaseAnswer, GrantNotHeld, StreamEvent, Info
    )),
    modifiers(&Bearer),
    security(("bearer" = []))
)]
struct Doc;

/// Refusals any route that reads may answer.
#[derive(IntoResponses)]
enum Reads {
    /// No valid token.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// Not allowed for this token, or a host that is not served.
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(Problem),
    /// The store failed.
    #[response(status = 500, content_type = "application/problem+json")]
    Failed(Problem),
    /// The store is unavailable, or the server is stopping.
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}

/// Refusals any route that changes locks may answer.
#[derive(IntoResponses)]
enum Writes {
    /// No valid token.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// Not allowed for this token, a host that is not served, or a cross-site request.
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(Problem),
    /// The body, its metadata or its keys are over the limits.
    #[response(status = 413, content_type = "application/problem+json")]
    TooLarge(Problem),
    /// Invalid body, key or value.
    #[response(status = 422, content_type = "application/problem+json")]
    Invalid(Problem),
    /// The store failed.
    #[response(status = 500, content_type = "application/problem+json")]
    Failed(Problem),
    /// The store is unavailable, or the server is stopping.
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}

/// The one refusal of the routes anyone may call.
#[derive(IntoResponses)]
enum Foreign {
    /// A host that is not served.
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(Problem),
}

/// The document, as served.
pub fn document() -> utoipa::openapi::OpenApi {
    Doc::openapi()
}

/// Acquire one or more keys, failing fast or waiting (long poll).
#[utoipa::path(post, path = "/v1/grants", tag = "locks", request_body = AcquireBody,
    responses(
        (status = 200, description = "granted", body = GrantBody),
        (status = 202, description = "queued: poll again with the ticket", body = WaitingBody),
        (status = 409, description = "busy, wait_timed_out or deadlock", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "too many waiting requests of the owner", body = Problem, content_type = "application/problem+json"),
        Writes,
    ))]
fn acquire() {}

/// Renew every lock of a grant.
#[utoipa::path(post, path = "/v1/grants/{grant}/renew", tag = "locks", request_body = RenewBody,
    params(("grant" = i64, Path, description = "the grant id")),
    responses(
        (status = 200, description = "renewed", body = Renewal),
        (status = 410, description = "lost, with the reason", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "not the holder", body = Problem, content_type = "application/problem+json"),
        Writes,
    ))]
fn renew_grant() {}

/// Release every lock of a grant.
#[utoipa::path(post, path = "/v1/grants/{grant}/release", tag = "locks", request_body = ReleaseBody,
    params(("grant" = i64, Path, description = "the grant id")),
    responses(
        (status = 200, description = "released, or nothing was held", body = ReleaseAnswer),
        (status = 409, description = "not the holder", body = Problem, content_type = "application/problem+json"),
        Writes,
    ))]
fn release_grant() {}

/// Renew the caller's lock on a key.
#[utoipa::path(post, path = "/v1/locks/{key}/renew", tag = "locks", request_body = RenewBody,
    params(("key" = String, Path, description = "the key, percent-encoded")),
    responses(
        (status = 200, description = "renewed", body = Renewal),
        (status = 410, description = "lost, with the reason", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "not the holder", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such route", body = Problem, content_type = "application/problem+json"),
        Writes,
    ))]
fn renew_key() {}

/// Release the caller's lock on a key.
#[utoipa::path(post, path = "/v1/locks/{key}/release", tag = "locks", request_body = ReleaseBody,
    params(("key" = String, Path, description = "the key, percent-encoded")),
    responses(
        (status = 200, description = "released, or nothing was held", body = Release),
        (status = 409, description = "not the holder", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such route", body = Problem, content_type = "application/problem+json"),
        Writes,
    ))]
fn release_key() {}

/// End every holder of a key (admin).
#[utoipa::path(post, path = "/v1/locks/{key}/force-release", tag = "admin", request_body = ForceBody,
    params(("key" = String, Path, description = "the key, percent-encoded")),
    responses(
        (status = 200, description = "what was ended", body = Ended),
        (status = 409, description = "a newer tenure than the fence given holds the key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such route", body = Problem, content_type = "application/problem+json"),
        Writes,
    ))]
fn force_release() {}

/// Give up a queue place between polls.
#[utoipa::path(post, path = "/v1/queue/leave", tag = "locks", request_body = LeaveBody,
    responses(
        (status = 200, description = "done", body = Left),
        Writes,
    ))]
fn leave() {}

/// Holders and queue of one key.
#[utoipa::path(get, path = "/v1/locks/{key}", tag = "views",
    params(("key" = String, Path, description = "the key, percent-encoded")),
    responses(
        (status = 200, description = "the key", body = KeyStatus),
        (status = 422, description = "invalid key", body = Problem, content_type = "application/problem+json"),
        Reads,
    ))]
fn status() {}

/// Held locks.
#[utoipa::path(get, path = "/v1/locks", tag = "views", params(ListQuery),
    responses(
        (status = 200, description = "one page of locks", body = LockPage),
        (status = 422, description = "invalid query", body = Problem, content_type = "application/problem+json"),
        Reads,
    ))]
fn list() {}

/// Queued requests.
#[utoipa::path(get, path = "/v1/waiters", tag = "views", params(ListQuery),
    responses(
        (status = 200, description = "the waiters", body = WaiterList),
        (status = 422, description = "invalid query", body = Problem, content_type = "application/problem+json"),
        Reads,
    ))]
fn waiters() {}

/// The audit history, newest first.
#[utoipa::path(get, path = "/v1/history", tag = "views", params(HistoryQuery),
    responses(
        (status = 200, description = "events", body = EventList),
        (status = 422, description = "invalid query", body = Problem, content_type = "application/problem+json"),
        Reads,
    ))]
fn history() {}

/// Counters of the store.
#[utoipa::path(get, path = "/v1/stats", tag = "views",
    responses(
        (status = 200, description = "counters", body = Stats),
        Reads,
    ))]
fn stats() {}

/// Live events (server-sent events); resume with `Last-Event-ID`.
#[utoipa::path(get, path = "/v1/events", tag = "views", params(Filter,
        ("Last-Event-ID" = Option<i64>, Header, description = "the id of the last event received")),
    responses(
        (status = 200, description = "a text/event-stream of events (`id`, `event` = the kind or `reset`, `data` = the event)", body = StreamEvent, content_type = "text/event-stream"),
        (status = 422, description = "invalid query or Last-Event-ID", body = Problem, content_type = "application/problem+json"),
        Reads,
    ))]
fn events() {}

/// The sweeper's second look for a batch (admin).
#[utoipa::path(post, path = "/v1/reap", tag = "admin", request_body = ReapBody,
    responses(
        (status = 200, description = "which were ended", body = Reaped),
        Writes,
    ))]
fn reap() {}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "service",
    responses(
        (status = 200, description = "OpenMetrics text", body = String, content_type = "application/openmetrics-text"),
        Reads,
    ))]
fn metrics() {}

/// Liveness.
#[utoipa::path(get, path = "/healthz", tag = "service", security(()),
    responses((status = 200, description = "alive", body = Health200), Foreign))]
fn healthz() {}

/// Readiness: the store can be read and the server is not stopping.
#[utoipa::path(get, path = "/readyz", tag = "service", security(()),
    responses((status = 200, description = "ready", body = Health200),
        (status = 503, description = "not ready", body = Problem, content_type = "application/problem+json"),
        Foreign))]
fn readyz() {}

/// Version, store, server time and the caller's role (the dashboard's
/// server strip; it hides the admin actions from other roles).
#[utoipa::path(get, path = "/v1/info", tag = "service",
    responses((status = 200, description = "who the caller talks to", body = Info), Reads))]
fn info() {}

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "service", security(()),
    responses((status = 200, description = "OpenAPI 3.1", body = Object), Foreign))]
fn openapi() {}
