//! The routes of `/v1` and the service routes, each a thin translation of a
//! request into one store call and of its answer into JSON.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Extension, Path, Query, State as Shared};
use axum::http::{StatusCode, header};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use locksmith_core::model::MAX_METADATA_BYTES;
use locksmith_core::store::{HistoryFilter, LeaveReason, ListFilter};
use locksmith_core::wire::{
    AcquireBody, ForceBody, GrantBody, LeaveBody, ReleaseBody, RenewBody, WaitingBody,
};
use locksmith_core::{
    Code, EventKind, Key, LeaseHandle, Proof, Release, ReleaseReason, Renewal, Target, Ticket,
};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::State;
use crate::error::ApiError;
use crate::guard::{self, Caller};
use crate::poll::{self, Answer};
use crate::tokens::Role;

type Api = Result<Response, ApiError>;

pub(crate) fn router(st: Arc<State>) -> Router {
    Router::new()
        .route("/v1/grants", post(acquire))
        .route("/v1/grants/{grant}/renew", post(renew_grant))
        .route("/v1/grants/{grant}/release", post(release_grant))
        .route("/v1/queue/leave", post(leave))
        .route("/v1/reap", post(reap))
        .route("/v1/locks", get(list))
        .route("/v1/locks/{*key}", get(status).post(lock_action))
        .route("/v1/waiters", get(waiters))
        .route("/v1/history", get(history))
        .route("/v1/stats", get(stats))
        .route("/v1/events", get(events))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/info", get(crate::dashboard::info))
        .route("/", get(crate::dashboard::index))
        .route("/assets/app.js", get(crate::dashboard::app_js))
        .route("/assets/app.css", get(crate::dashboard::app_css))
        .route("/assets/icon.svg", get(crate::dashboard::icon))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(st.settings.max_body))
        .layer(from_fn_with_state(st.clone(), guard::auth))
        .layer(from_fn_with_state(st.clone(), guard::check))
        .with_state(st)
}

/// A JSON answer.
fn json(status: StatusCode, body: &impl serde::Serialize) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response()
}

/// A request body, or a clear refusal.
fn parse<T: DeserializeOwned>(body: &Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return Err(ApiError::new(
                Code::TooLarge,
                "the request body is larger than this server takes (--max-body)",
            ));
        }
        Err(e) => {
            return Err(ApiError::new(
                Code::Invalid,
                format!("the request body could not be read: {}", e.body_text()),
            ));
        }
    };
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            Code::Invalid,
            format!("the request body is not the JSON this route takes: {e}"),
        )
    })
}

fn key(text: &str) -> Result<Key, ApiError> {
    Key::new(text).map_err(|e| ApiError::from(locksmith_core::StoreError::from(e)))
}

async fn acquire(
    Shared(st): Shared<Arc<State>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(caller): Extension<Caller>,
    body: Result<Bytes, BytesRejection>,
) -> Api {
    let b: AcquireBody = parse(&body)?;
    if b.strategy == Some(locksmith_core::wire::Strategy::Force) {
        caller.require(Role::Admin, "strategy force")?;
    }
    if b.keys.len() > st.settings.max_keys {
        return Err(ApiError::new(
            Code::TooLarge,
            format!(
                "{} keys in one request; this server takes at most {}",
                b.keys.len(),
                st.settings.max_keys
            ),
        ));
    }
    if let Some(m) = &b.metadata {
        let size = serde_json::to_vec(m).map(|v| v.len()).unwrap_or(usize::MAX);
        if size > MAX_METADATA_BYTES {
            return Err(ApiError::new(
                Code::TooLarge,
                format!("metadata of {size} bytes; the most is {MAX_METADATA_BYTES}"),
            ));
        }
    }
    let (req, wait) = b.request(&peer.ip().to_string())?;
    let started = Instant::now();
    let keys: Vec<String> = b.keys.clone();
    match poll::acquire(&st, req, wait, b.queue, b.ticket.as_deref()).await {
        Ok(Answer::Granted(g)) => {
            st.metrics.acquired("granted", started.elapsed());
            tracing::debug!(
                event = "acquired",
                keys = ?keys,
                owner = %g.owner,
                grant = g.grant,
                fences = ?g.locks.iter().map(|l| l.fence.0).collect::<Vec<_>>(),
                replayed = g.replayed,
                "granted"
            );
            Ok(json(StatusCode::OK, &GrantBody::from(&g)))
        }
        Ok(Answer::Waiting(ticket, blocked)) => {
            Ok(json(StatusCode::ACCEPTED, &WaitingBody { ticket, blocked }))
        }
        Err(e) => {
            st.metrics.acquired(&e.problem.code, started.elapsed());
            Err(e)
        }
    }
}

/// The proof in a renew or release body. With tokens, only an admin may
/// prove holding by owner name: a client proves it with the lease handle,
/// so that it can act on its own grants only.
fn proof(caller: Caller, handle: Option<String>, owner: Option<String>) -> Result<Proof, ApiError> {
    match (handle, owner) {
        (Some(h), None) => Ok(Proof::Handle(LeaseHandle::from_text(h))),
        (None, Some(o)) => {
            caller.require(
                Role::Admin,
                "proving holding by owner name (instead of the lease handle)",
            )?;
            Ok(Proof::Owner(o))
        }
        _ => Err(ApiError::new(
            Code::Invalid,
            "prove holding with exactly one of handle (the lease handle) or owner",
        )),
    }
}

/// The key a grant route is about: the body's, else the grant's first held key.
async fn grant_key(st: &Arc<State>, grant: i64, named: Option<String>) -> Result<Key, ApiError> {
    if let Some(k) = named {
        return key(&k);
    }
    let filter = ListFilter {
        grant: Some(grant),
        limit: 1,
        ..ListFilter::default()
    };
    let held = st.store_call(move |store| store.list(&filter)).await??;
    held.into_iter().next().map(|l| l.key).ok_or_else(|| {
        ApiError::new(
            Code::Lost,
            format!("grant {grant} holds no lock now; name its key to learn why it ended"),
        )
    })
}

fn grant_id(p: Result<Path<i64>, PathRejection>) -> Result<i64, ApiError> {
    p.map(|Path(g)| g).map_err(|e| {
        ApiError::new(
            Code::Invalid,
            format!(
                "the grant id in the path is not a grant id: {}",
                e.body_text()
            ),
        )
    })
}

fn check_grant(grant: i64, handle: &Option<String>) -> Result<(), ApiError> {
    match handle {
        Some(h) if LeaseHandle::from_text(h.clone()).grant() == Some(grant) => Ok(()),
        Some(_) => Err(ApiError::new(
            Code::Invalid,
            format!("the lease handle is not one of grant {grant}"),
        )),
        None => Err(ApiError::new(
            Code::Invalid,
            "the grant routes need the lease handle (handle)",
        )),
    }
}

async fn renew_grant(
    Shared(st): Shared<Arc<State>>,
    Extension(caller): Extension<Caller>,
    grant: Result<Path<i64>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Api {
    let grant = grant_id(grant)?;
    let b: RenewBody = parse(&body)?;
    check_grant(grant, &b.handle)?;
    let k = grant_key(&st, grant, b.key.clone()).await?;
    renew(st, caller, k, b).await
}

async fn renew(st: Arc<State>, caller: Caller, k: Key, b: RenewBody) -> Api {
    let target = Target {
        key: k,
        by: proof(caller, b.handle, b.owner)?,
    };
    let ttl = b.ttl_ms.map(Duration::from_millis);
    let r = st
        .store_call(move |store| store.renew(&target, ttl))
        .await??;
    match &r {
        Renewal::Renewed { .. } => {
            st.metrics.renewed("renewed");
            Ok(json(StatusCode::OK, &r))
        }
        Renewal::Lost { key, reason } => {
            st.metrics.renewed("lost");
            let why = reason.map_or("it is no longer held".to_string(), |r| {
                format!("it ended: {}", r.name())
            });
            Err(ApiError::new(
                Code::Lost,
                format!("the lock {key} was lost; {why}. Stop the work it protects"),
            )
            .with("key", key)
            .with("reason", reason))
        }
    }
}

async fn release_grant(
    Shared(st): Shared<Arc<State>>,
    Extension(caller): Extension<Caller>,
    grant: Result<Path<i64>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Api {
    let grant = grant_id(grant)?;
    let b: ReleaseBody = parse(&body)?;
    check_grant(grant, &b.handle)?;
    let k = match grant_key(&st, grant, b.key.clone()).await {
        Ok(k) => k,
        // Releasing twice is not an error.
        Err(e) if e.problem.code == Code::Lost.name() => {
            return Ok(json(
                StatusCode::OK,
                &serde_json::json!({ "status": "not_held", "grant": grant }),
            ));
        }
        Err(e) => return Err(e),
    };
    release(st, caller, k, b, true).await
}

async fn release(st: Arc<State>, caller: Caller, k: Key, b: ReleaseBody, whole: bool) -> Api {
    let reason = b.reason.unwrap_or(ReleaseReason::Completed);
    // `exited`: a front end (`locksmith mcp`) releasing the locks of a
    // session that ended without releasing them.
    if !matches!(
        reason,
        ReleaseReason::Completed | ReleaseReason::Failed | ReleaseReason::Exited
    ) {
        return Err(ApiError::new(
            Code::Invalid,
            "a holder releases with reason completed, failed or exited",
        ));
    }
    let target = Target {
        key: k,
        by: proof(caller, b.handle, b.owner)?,
    };
    let r = st
        .store_call(move |store| match whole {
            true => store.release_grant(&target, reason),
            false => store.release(&target, reason),
        })
        .await??;
    if let Release::Released {
        key,
        fence,
        held_for,
    } = &r
    {
        st.metrics.released(reason.name(), Some(*held_for));
        tracing::debug!(event = "released", key = %key, fence = fence.0, reason = reason.name(), "released");
    }
    Ok(json(StatusCode::OK, &r))
}

async fn leave(Shared(st): Shared<Arc<State>>, body: Result<Bytes, BytesRejection>) -> Api {
    let b: LeaveBody = parse(&body)?;
    let why = match b.timed_out {
        true => LeaveReason::TimedOut,
        false => LeaveReason::Cancelled,
    };
    let Some((seq, wake)) = st.parked.take(&b.ticket, None) else {
        // Unknown here, or already gone: nothing of the caller's is queued.
        return Ok(json(StatusCode::OK, &serde_json::json!({ "left": false })));
    };
    st.store_call(move |store| {
        let t = Ticket {
            seq: Some(seq),
            wake: wake.address().to_string(),
            claim: None,
        };
        store.leave_queue(&t, why)
    })
    .await??;
    Ok(json(StatusCode::OK, &serde_json::json!({ "left": true })))
}

/// Body of `POST /v1/reap`: the sweeper's second look for a batch.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReapBody {
    batch: Vec<locksmith_core::tenure::Reap>,
}

async fn reap(Shared(st): Shared<Arc<State>>, body: Result<Bytes, BytesRejection>) -> Api {
    let b: ReapBody = parse(&body)?;
    let batch = b.batch.clone();
    let ended = st.store_call(move |store| store.reap(&batch)).await??;
    for (r, _) in b.batch.iter().zip(&ended).filter(|(_, e)| **e) {
        st.metrics.swept(r.reason.name());
        tracing::info!(event = "reaped", key = %r.key, fence = r.fence.0, reason = r.reason.name(), "reaped");
    }
    Ok(json(StatusCode::OK, &serde_json::json!({ "ended": ended })))
}

async fn status(Shared(st): Shared<Arc<State>>, Path(k): Path<String>) -> Api {
    let k = key(&k)?;
    let s = st.store_call(move |store| store.status(&k)).await??;
    Ok(json(StatusCode::OK, &s))
}

/// `POST /v1/locks/{key}/renew|release|force-release` (keys contain `/`).
async fn lock_action(
    Shared(st): Shared<Arc<State>>,
    Extension(caller): Extension<Caller>,
    Path(path): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Api {
    let Some((k, action)) = path.rsplit_once('/') else {
        return Err(not_found_error());
    };
    match action {
        "renew" => renew(st, caller, key(k)?, parse(&body)?).await,
        "release" => release(st, caller, key(k)?, parse(&body)?, false).await,
        "force-release" => force(st, caller, key(k)?, parse(&body)?).await,
        _ => Err(not_found_error()),
    }
}

async fn force(st: Arc<State>, caller: Caller, k: Key, b: ForceBody) -> Api {
    // With tokens the token's name says who forced; without, the caller's word.
    let by = match caller.1 {
        Some(name) => Some(format!("token {name}")),
        None => b.by.clone(),
    };
    let seen = b.fence.map(locksmith_core::Fence);
    let ended = st
        .store_call(move |store| store.force_release_seen(&k, &b.reason, by.as_deref(), seen))
        .await??;
    st.metrics.forced(ended.len());
    for l in &ended {
        st.metrics
            .released(ReleaseReason::Forced.name(), Some(l.held_for));
        tracing::warn!(event = "forced", key = %l.key, fence = l.fence.0, owner = %l.owner, "force-released");
    }
    Ok(json(StatusCode::OK, &serde_json::json!({ "ended": ended })))
}

/// Query of `GET /v1/locks` and `GET /v1/waiters`.
#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    prefix: Option<String>,
    owner: Option<String>,
    /// `stale`, `expired`, `dead` or `unhealthy` (any of them).
    state: Option<String>,
    /// Only keys with waiters.
    #[serde(default)]
    waiting: bool,
    /// Only the locks of this grant.
    grant: Option<i64>,
    /// Page size (0: all).
    #[serde(default)]
    limit: usize,
    /// Only keys after this one (the `next` of the previous page).
    after: Option<String>,
}

fn query<T: DeserializeOwned + Default>(
    q: Result<Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, ApiError> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::new(Code::Invalid, format!("bad query: {}", e.body_text())))
}

async fn list(
    Shared(st): Shared<Arc<State>>,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Api {
    let q = query(q)?;
    let state = match q.state.as_deref() {
        None => None,
        Some(s @ ("stale" | "expired" | "dead" | "unhealthy" | "healthy")) => Some(s.to_string()),
        Some(other) => {
            return Err(ApiError::new(
                Code::Invalid,
                format!("state {other:?}: the states are healthy, stale, expired, dead, unhealthy"),
            ));
        }
    };
    let filter = ListFilter {
        owner: q.owner.clone(),
        prefix: q.prefix.clone(),
        unhealthy: matches!(
            state.as_deref(),
            Some("stale" | "expired" | "dead" | "unhealthy")
        ),
        grant: q.grant,
        limit: 0,
    };
    let want_waiting = q.waiting;
    let (locks, waiting_keys) = st
        .store_call(move |store| {
            let locks = store.list(&filter)?;
            let waiting = match want_waiting {
                true => Some(store.waiters(&ListFilter {
                    prefix: filter.prefix.clone(),
                    ..ListFilter::default()
                })?),
                false => None,
            };
            Ok::<_, locksmith_core::StoreError>((locks, waiting))
        })
        .await??;
    let mut rows: Vec<_> = locks
        .into_iter()
        .filter(|l| match state.as_deref() {
            None | Some("unhealthy") => true,
            Some(s) => l.health.name() == s,
        })
        .filter(|l| {
            waiting_keys
                .as_ref()
                .is_none_or(|w| w.iter().any(|x| x.key == l.key))
        })
        .filter(|l| q.after.as_deref().is_none_or(|a| l.key.as_str() > a))
        .collect();
    let mut next = None;
    if q.limit > 0 && rows.len() > q.limit {
        rows.truncate(q.limit);
        next = rows.last().map(|l| l.key.to_string());
    }
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "locks": rows, "next": next }),
    ))
}

async fn waiters(
    Shared(st): Shared<Arc<State>>,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Api {
    let q = query(q)?;
    let filter = ListFilter {
        owner: q.owner,
        prefix: q.prefix,
        limit: q.limit,
        ..ListFilter::default()
    };
    let w = st.store_call(move |store| store.waiters(&filter)).await??;
    Ok(json(StatusCode::OK, &serde_json::json!({ "waiters": w })))
}

/// Query of `GET /v1/history`.
#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct HistoryQuery {
    key: Option<String>,
    #[serde(default)]
    prefix: bool,
    owner: Option<String>,
    kind: Option<String>,
    after: Option<i64>,
    #[serde(default)]
    limit: usize,
}

async fn history(
    Shared(st): Shared<Arc<State>>,
    q: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Api {
    let q = query(q)?;
    let kind = q
        .kind
        .as_deref()
        .map(EventKind::parse)
        .transpose()
        .map_err(|e| ApiError::new(Code::Invalid, e))?;
    let filter = HistoryFilter {
        key: q.key,
        prefix: q.prefix,
        owner: q.owner,
        kind,
        after: q.after,
        limit: q.limit,
    };
    let events = st.store_call(move |store| store.history(&filter)).await??;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "events": events }),
    ))
}

async fn events(
    Shared(st): Shared<Arc<State>>,
    headers: axum::http::HeaderMap,
    q: Result<Query<crate::events::Filter>, axum::extract::rejection::QueryRejection>,
) -> Api {
    use crate::events::{Item, missed, stream};
    use axum::response::sse::{Event as Sse, KeepAlive};
    use futures_util::StreamExt;
    let filter = query(q)?;
    let resume = match headers
        .get("last-event-id")
        .map(|v| v.to_str().map(str::parse::<i64>))
    {
        None => filter.after,
        Some(Ok(Ok(id))) => Some(id),
        Some(_) => {
            return Err(ApiError::new(
                Code::Invalid,
                "Last-Event-ID is the id of an event this stream sent",
            ));
        }
    };
    // Subscribe before reading the history, so that nothing falls between.
    let rx = st.feed.subscribe();
    let (backlog, sent) = match resume {
        None => (Vec::new(), st.feed.last()),
        Some(id) => match st.store_call(move |store| missed(store, id)).await?? {
            Some(events) => {
                let sent = events.last().map_or(id, |e| e.id);
                let items = events
                    .into_iter()
                    .filter(|e| {
                        filter
                            .prefix
                            .as_deref()
                            .is_none_or(|p| e.key.starts_with(p))
                    })
                    .filter(|e| filter.owner.as_deref().is_none_or(|o| e.owner == o))
                    .map(|e| Item::Event(Arc::new(e)))
                    .collect();
                (items, sent)
            }
            None => (vec![Item::Reset("history_pruned")], st.feed.last()),
        },
    };
    let items = stream(&st, filter, backlog, sent, rx).map(|item| {
        Ok::<_, std::convert::Infallible>(match item {
            Item::Event(e) => Sse::default()
                .id(e.id.to_string())
                .event(e.kind.name())
                .json_data(&*e)
                .unwrap_or_default(),
            Item::Reset(why) => Sse::default()
                .event("reset")
                .data(serde_json::json!({ "reason": why }).to_string()),
        })
    });
    let keep = KeepAlive::new().interval(st.settings.keep_alive);
    Ok(axum::response::sse::Sse::new(items)
        .keep_alive(keep)
        .into_response())
}

async fn stats(Shared(st): Shared<Arc<State>>) -> Api {
    let s = st.store_call(move |store| store.stats()).await??;
    Ok(json(StatusCode::OK, &s))
}

async fn metrics(Shared(st): Shared<Arc<State>>) -> Response {
    let stats = st
        .store_call(move |store| store.stats())
        .await
        .ok()
        .and_then(Result::ok);
    let text = st.metrics.render(stats.as_ref());
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn openapi() -> Response {
    json(StatusCode::OK, &crate::openapi::document())
}

async fn healthz() -> Response {
    json(StatusCode::OK, &serde_json::json!({ "status": "ok" }))
}

async fn readyz(Shared(st): Shared<Arc<State>>) -> Api {
    if *st.stopping.borrow() {
        return Err(ApiError::new(Code::Unavailable, "the server is stopping"));
    }
    st.store_call(move |store| store.stats())
        .await?
        .map_err(|e| ApiError::new(Code::Unavailable, format!("the store cannot be read: {e}")))?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "status": "ready" }),
    ))
}

fn not_found_error() -> ApiError {
    let mut e = ApiError::new(
        Code::Invalid,
        "no such route; the routes are listed in docs/http.md",
    );
    e.problem.status = 404;
    e.problem.title = "Not found".into();
    e
}

async fn not_found() -> Response {
    not_found_error().into_response()
}
