//! The MCP surface: six tools and the lock board as resources.
//!
//! Every answer is a short sentence that says what to do next, followed by
//! the same facts as JSON (also sent as structured content). Outcomes of
//! the outcome table (busy, wait_timed_out, deadlock, not_holder, lost,
//! forbidden, invalid, ...) are tool errors carrying their `error` code.

use std::sync::Arc;
use std::time::{Duration, Instant};

use locksmith_core::store::{HistoryFilter, ListFilter, Release, Renewal};
use locksmith_core::time::format_duration;
use locksmith_core::{
    AcquireRequest, Attempt, Code, Grant, Key, Mode, ReleaseReason, Scope, Takeover, WaitPolicy,
};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResult, ContentBlock, Implementation, ListResourceTemplatesResult, ListResourcesResult,
    PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult,
    Resource, ResourceContents, ResourceTemplate, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler, tool, tool_handler, tool_router};
use serde_json::{Value, json};

use crate::args::{
    AcquireArgs, HistoryArgs, ListArgs, ReleaseArgs, ReleaseWhy, RenewArgs, StatusArgs, Strategy,
};
use crate::session::{Joined, Outcome, Session, Shape, WaitState};
use crate::words;

/// The URI of the lock board.
const BOARD: &str = "locksmith://locks";

/// The MCP server of one session.
#[derive(Clone)]
pub struct Locksmith {
    session: Arc<Session>,
    tool_router: ToolRouter<Locksmith>,
}

/// A tool answer: a sentence, then the facts as JSON.
fn answer(text: String, data: Value, error: bool) -> CallToolResult {
    let body = format!("{text}\n\n{data}");
    let mut r = if error {
        CallToolResult::error(vec![ContentBlock::text(body)])
    } else {
        CallToolResult::success(vec![ContentBlock::text(body)])
    };
    r.structured_content = Some(data);
    r
}

fn ok(text: String, data: Value) -> CallToolResult {
    answer(text, data, false)
}

/// A failure of the outcome table as a tool error: `error` is its code.
/// The answer of a tool whose failure carries nothing more than its outcome.
fn settle(r: Result<CallToolResult, Outcome>) -> CallToolResult {
    r.unwrap_or_else(|o| failed(o, json!({})))
}

fn failed(o: Outcome, extra: Value) -> CallToolResult {
    let mut data = json!({ "error": o.code.name(), "message": o.message });
    if let (Some(obj), Value::Object(more)) = (data.as_object_mut(), extra) {
        obj.extend(more);
    }
    answer(format!("{}: {}", o.code.name(), o.message), data, true)
}

/// The answer for a request id whose grant has ended since.
fn plain_ended(rid: &str) -> (Outcome, Value) {
    (
        Outcome::new(
            Code::Lost,
            format!(
                "the grant made for request_id {rid:?} has ended since (released or lost); acquire with a new request_id"
            ),
        ),
        json!({ "request_id": rid }),
    )
}

/// Runs blocking store work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Outcome> + Send + 'static,
) -> Result<T, Outcome> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(Outcome::new(Code::StoreError, format!("task failed: {e}"))))
}

fn keys(raw: &[String]) -> Result<Vec<Key>, Outcome> {
    raw.iter()
        .map(|k| Key::new(k.as_str()).map_err(Outcome::from))
        .collect()
}

fn secs(d: Duration) -> f64 {
    (d.as_millis() as f64) / 1000.0
}

fn client_name(ctx: &RequestContext<RoleServer>) -> Option<String> {
    ctx.peer.peer_info().map(|i| i.client_info.name.clone())
}

impl Locksmith {
    /// The server of `session`.
    pub fn new(session: Arc<Session>) -> Locksmith {
        Locksmith {
            session,
            tool_router: Self::tool_router(),
        }
    }

    /// The session's lost locks, told once, as notes for the next answer.
    async fn losses(&self) -> Vec<Value> {
        let s = self.session.clone();
        let lost = blocking(move || Ok(s.losses())).await.unwrap_or_default();
        lost.into_iter()
            .map(|(g, reason)| {
                let keys: Vec<&str> = g.locks.iter().map(|l| l.key.as_str()).collect();
                json!({
                    "lost": keys,
                    "reason": reason.map(|r| r.name()),
                    "message": format!(
                        "you LOST {} ({}): stop working on it; acquire again before you continue",
                        keys.join(", "),
                        reason.map_or("no longer held", |r| r.name())
                    ),
                })
            })
            .collect()
    }

    /// Adds the notes about lost locks to an answer.
    async fn with_losses(&self, mut r: CallToolResult) -> CallToolResult {
        let notes = self.losses().await;
        if notes.is_empty() {
            return r;
        }
        for n in &notes {
            r.content.push(ContentBlock::text(
                n["message"].as_str().unwrap_or_default(),
            ));
        }
        if let Some(Value::Object(obj)) = &mut r.structured_content {
            obj.insert("notes".into(), Value::Array(notes));
        }
        r
    }

    fn request(&self, a: &AcquireArgs, owner: &str) -> Result<(AcquireRequest, bool), Outcome> {
        let keys = keys(&a.keys)?;
        if keys.is_empty() {
            return Err(Outcome::new(
                Code::Invalid,
                "name at least one key, e.g. keys: [\"repo/acme\"]",
            ));
        }
        let mode = match (a.shared, a.limit) {
            (true, Some(_)) => {
                return Err(Outcome::new(
                    Code::Invalid,
                    "give shared or limit, not both",
                ));
            }
            (true, None) => Mode::Shared,
            (false, Some(limit)) => Mode::Semaphore { limit },
            (false, None) => Mode::Exclusive,
        };
        let mut holder = locksmith::host::this_process(owner.to_string());
        holder.task = a.task.clone();
        holder.metadata = a.metadata.clone().map(Value::Object);
        let bound = !a.outlive_session;
        let ttl = match &a.ttl {
            Some(t) => t.parse("ttl")?,
            None if bound => Some(self.session.settings.ttl),
            None => None,
        };
        if bound && ttl.is_none() {
            return Err(Outcome::new(
                Code::Invalid,
                "ttl forever needs outlive_session: a session's locks are leased and renewed while it lives",
            ));
        }
        let bind = if bound {
            self.session
                .client
                .binding()
                .map_err(|e| Outcome::new(e.code(), e.to_string()))?
        } else {
            None
        };
        let req = AcquireRequest {
            keys,
            mode,
            scope: if a.tree { Scope::Tree } else { Scope::Key },
            holder,
            ttl,
            max_hold: None,
            priority: a.priority.unwrap_or(0),
            takeover: if a.strategy == Some(Strategy::StealStale) {
                Takeover::StealStale
            } else {
                Takeover::None
            },
            request_id: a
                .request_id
                .as_ref()
                .map(|r| self.session.store_request_id(r)),
            bind,
        };
        locksmith_core::validate::request(&req).map_err(Outcome::from)?;
        Ok((req, bound))
    }

    fn granted(&self, g: &Grant, bound: bool, waited: Option<Duration>) -> CallToolResult {
        let keys: Vec<&str> = g.locks.iter().map(|l| l.key.as_str()).collect();
        let fences: Vec<String> = g
            .locks
            .iter()
            .map(|l| format!("{} fence {}", l.key, l.fence))
            .collect();
        let life = match (bound, g.ttl) {
            (true, Some(t)) => format!(
                "The lease ({}) is renewed while this session lives and the lock ends with it.",
                format_duration(t)
            ),
            (false, Some(t)) => format!(
                "It outlives this session: it ends when released or when its lease ({}) runs out unrenewed (call renew).",
                format_duration(t)
            ),
            (_, None) => "It outlives this session and is held until released.".to_string(),
        };
        let after = waited
            .map(|w| format!(" after waiting {}", format_duration(w)))
            .unwrap_or_default();
        let replay = if g.replayed {
            " (the grant made earlier for this request_id)"
        } else {
            ""
        };
        let text = format!(
            "Granted{after}{replay}: {} to {}. {life} Call release with keys {:?} when done. Give the fence to anything that checks fences, so a late writer can be refused.",
            fences.join(", "),
            g.owner,
            keys,
        );
        let locks: Vec<Value> = g
            .locks
            .iter()
            .map(|l| json!({ "key": l.key, "fence": l.fence, "expires_at": l.expires_at.map(|w| w.rfc3339()) }))
            .collect();
        ok(
            text,
            json!({
                "status": "granted",
                "grant": g.grant,
                "owner": g.owner,
                "locks": locks,
                "ttl_s": g.ttl.map(secs),
                "ends_with_session": bound,
                "replayed": g.replayed,
                "waited_s": waited.map(secs),
            }),
        )
    }
}

#[tool_router]
impl Locksmith {
    /// acquire
    #[tool(
        name = "acquire",
        description = "Take one or more locks (all or none) before you work on a shared thing: a repository or folder, a task, a file. Keys are names like \"repo/acme\", \"task/42\" or an absolute folder path (with tree: true a lock covers everything below). The lock belongs to this session: it is renewed automatically while the session lives and freed at once when the session ends or crashes, so you never need to renew it yourself. If a key is busy the answer says who holds it, for which task, for how long and how much lease is left. With wait you queue fairly (first come, first served); when the wait is longer than one call the answer is status \"waiting\" with your place: call acquire again with the same arguments and request_id to keep it. Release with the release tool when done."
    )]
    async fn acquire(
        &self,
        Parameters(a): Parameters<AcquireArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let owner = self.session.owner(client_name(&ctx).as_deref()).to_string();
        let r = match self.acquire_inner(a, &owner).await {
            Ok(r) => r,
            Err((o, extra)) => failed(o, extra),
        };
        Ok(self.with_losses(r).await)
    }

    /// release
    #[tool(
        name = "release",
        description = "Release locks of this session when the work is done (reason \"completed\", the default) or abandoned (reason \"failed\"); both are recorded in the history. Name the keys, or all: true for every lock of this session. Releasing a key that is already free is not an error. A key held by someone else is refused with not_holder and left untouched. Queued requests of this session for these keys leave their queue."
    )]
    async fn release(
        &self,
        Parameters(a): Parameters<ReleaseArgs>,
    ) -> Result<CallToolResult, McpError> {
        let r = settle(self.release_inner(a).await);
        Ok(self.with_losses(r).await)
    }

    /// renew
    #[tool(
        name = "renew",
        description = "Renew this session's locks now (all, or the keys named) and check they are still yours. Rarely needed: the session renews them automatically. If a lock was lost (expired, forced by an admin, stolen) the answer is lost with the reason: stop working on it and acquire again."
    )]
    async fn renew(
        &self,
        Parameters(a): Parameters<RenewArgs>,
    ) -> Result<CallToolResult, McpError> {
        Ok(settle(self.renew_inner(a).await))
    }

    /// status
    #[tool(
        name = "status",
        description = "Who holds one key and who waits for it: owner, task, how long held, lease left, health (healthy, stale, dead, expired) and the queue. Read-only."
    )]
    async fn status(
        &self,
        Parameters(a): Parameters<StatusArgs>,
    ) -> Result<CallToolResult, McpError> {
        let s = self.session.clone();
        let r = match blocking(move || {
            let key = Key::new(a.key.as_str())?;
            Ok(s.client.store().status(&key)?)
        })
        .await
        {
            Ok(st) => {
                let mine = self.session.grant_ids();
                let text = words::status(&st, &mine);
                ok(text, json!({ "status": st, "your_grants": mine }))
            }
            Err(o) => failed(o, json!({})),
        };
        Ok(self.with_losses(r).await)
    }

    /// list
    #[tool(
        name = "list",
        description = "The lock board: every held lock with owner, task, age, lease left and health; filter by key prefix, owner, stale (only stale, dead or expired holders) or mine (this session's). With waiting: true, the queued requests with their places instead. Read this before you pick work, to take what nobody holds. Read-only."
    )]
    async fn list(&self, Parameters(a): Parameters<ListArgs>) -> Result<CallToolResult, McpError> {
        let r = settle(self.list_inner(a).await);
        Ok(self.with_losses(r).await)
    }

    /// history
    #[tool(
        name = "history",
        description = "What happened to a key (or keys with a prefix, or an owner's locks), newest first: acquired, released with its reason (completed, failed, exited, lease_expired, dead_process, stale_timeout, forced, stolen, ...), waits and their ends. Use it to see why a lock ended or who worked on a task before. Read-only."
    )]
    async fn history(
        &self,
        Parameters(a): Parameters<HistoryArgs>,
    ) -> Result<CallToolResult, McpError> {
        let s = self.session.clone();
        let r = match blocking(move || {
            if let Some(k) = &a.key
                && !a.prefix
            {
                Key::new(k.as_str())?;
            }
            let filter = HistoryFilter {
                key: a.key.clone(),
                prefix: a.prefix,
                owner: a.owner.clone(),
                kind: None,
                after: None,
                limit: a.limit.unwrap_or(20).clamp(1, 500),
            };
            Ok(s.client.store().history(&filter)?)
        })
        .await
        {
            Ok(events) => {
                let lines: Vec<String> = events
                    .iter()
                    .take(10)
                    .map(|e| {
                        let reason = e
                            .reason
                            .map(|r| format!(" ({})", r.name()))
                            .unwrap_or_default();
                        let task = e
                            .task
                            .as_ref()
                            .map(|t| format!(" task {t}"))
                            .unwrap_or_default();
                        format!(
                            "{} {} {}{reason} by {}{task}",
                            e.at.rfc3339(),
                            e.key,
                            e.kind.name(),
                            e.owner
                        )
                    })
                    .collect();
                let text = if events.is_empty() {
                    "No events match.".to_string()
                } else {
                    format!(
                        "{} event(s), newest first:\n{}",
                        events.len(),
                        lines.join("\n")
                    )
                };
                ok(text, json!({ "events": events }))
            }
            Err(o) => failed(o, json!({})),
        };
        Ok(r)
    }
}

impl Locksmith {
    async fn acquire_inner(
        &self,
        a: AcquireArgs,
        owner: &str,
    ) -> Result<CallToolResult, (Outcome, Value)> {
        let plain = |o: Outcome| (o, json!({}));
        let (req, bound) = self.request(&a, owner).map_err(plain)?;
        let wait = match &a.wait {
            Some(w) => w.parse("wait").map_err(plain)?,
            None => Some(Duration::ZERO),
        };
        let policy = match (a.strategy, wait) {
            (Some(Strategy::FailFast), Some(d)) if !d.is_zero() => {
                return Err(plain(Outcome::new(
                    Code::Invalid,
                    "strategy fail-fast does not wait: drop wait, or use strategy wait",
                )));
            }
            (Some(Strategy::FailFast), _) => WaitPolicy::FailFast,
            (Some(Strategy::Wait), None) | (Some(Strategy::Wait), Some(Duration::ZERO)) => {
                if a.wait.is_some() {
                    return Err(plain(Outcome::new(
                        Code::Invalid,
                        "strategy wait with wait 0 does not wait: give wait (\"5m\", \"forever\") or use fail-fast",
                    )));
                }
                WaitPolicy::Forever
            }
            (_, None) => WaitPolicy::Forever,
            (_, Some(d)) if d.is_zero() => WaitPolicy::FailFast,
            (_, Some(d)) => WaitPolicy::For(d),
        };
        // A request id that is queued already: answer (or join) that wait.
        if let Some(rid) = &a.request_id
            && let Some(j) = self.session.join(rid)
        {
            if j.0.shape != Shape::of(&req, bound) {
                return Err(plain(Outcome::new(
                    Code::Invalid,
                    format!(
                        "request_id {rid:?} is already used for another request (other keys, mode, scope or outlive_session); use a new request_id for another request"
                    ),
                )));
            }
            return self.join_wait(j, rid, &a).await;
        }
        if let Some(rid) = &a.request_id
            && let Some((g, was_bound)) = self.session.held_for_request(rid)
        {
            return Ok(self.granted(&g, was_bound, None));
        }
        if policy == WaitPolicy::FailFast {
            let s = self.session.clone();
            let rid = req.request_id.clone();
            let attempt = blocking(move || {
                let attempt = s.client.store().acquire(&req, None)?;
                if let Attempt::Granted(g) = &attempt {
                    s.hold(g.clone(), bound, rid);
                }
                Ok(attempt)
            })
            .await
            .map_err(plain)?;
            return match attempt {
                Attempt::Granted(g) => Ok(self.granted(&g, bound, None)),
                Attempt::Blocked(b) => {
                    let mine = self.session.grant_ids();
                    let what = a.keys.join(", ");
                    Err((
                        Outcome::new(
                            Code::Busy,
                            format!(
                                "{what} is {}. Pick other work, or wait in the queue: acquire again with wait (\"10m\", \"forever\").",
                                words::blocked(&b, &mine)
                            ),
                        ),
                        json!({ "holders": b.holders, "waiters_ahead": b.waiters_ahead }),
                    ))
                }
            };
        }

        // A wait: queued on a thread of its own, joined by this call.
        let rid = a
            .request_id
            .clone()
            .unwrap_or_else(|| self.session.new_request_id());
        let deadline = match policy {
            WaitPolicy::For(d) => Some(Instant::now() + d),
            _ => None,
        };
        let mut req = req;
        req.request_id = Some(self.session.store_request_id(&rid));
        let s = self.session.clone();
        let r = rid.clone();
        let joined = blocking(move || s.start_wait(r, req, deadline, bound))
            .await
            .map_err(plain)?;
        self.join_wait(joined, &rid, &a).await
    }

    /// Waits on a queued request for at most one call's time and answers
    /// its state.
    async fn join_wait(
        &self,
        joined: Joined,
        rid: &str,
        a: &AcquireArgs,
    ) -> Result<CallToolResult, (Outcome, Value)> {
        let p = joined.0.clone();
        let bound = p.shape.bound;
        let mut rx = p.state.subscribe();
        let until = tokio::time::Instant::now() + self.session.settings.call_wait;
        loop {
            if !matches!(*rx.borrow_and_update(), WaitState::Waiting(_)) {
                break;
            }
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { break },
                _ = tokio::time::sleep_until(until) => break,
            }
        }
        let state = rx.borrow().clone();
        drop(joined);
        let waited = p.started.elapsed();
        let what = a.keys.join(", ");
        let mine = self.session.grant_ids();
        match state {
            WaitState::Granted(g) => {
                p.collected.store(true, std::sync::atomic::Ordering::SeqCst);
                if !self.session.holds(g.grant) {
                    return Err(plain_ended(rid));
                }
                let mut r = self.granted(&g, bound, Some(waited));
                if let Some(Value::Object(obj)) = &mut r.structured_content {
                    obj.insert("waited_s".into(), json!(secs(waited)));
                    obj.insert("request_id".into(), json!(rid));
                }
                Ok(r)
            }
            WaitState::Waiting(b) => {
                let left = p
                    .deadline
                    .map(|d| d.saturating_duration_since(Instant::now()));
                let place = b
                    .as_ref()
                    .map(|b| words::blocked(b, &mine))
                    .unwrap_or_else(|| "queued".to_string());
                let left_text = left
                    .map(|l| format!(", {} of your wait left", format_duration(l)))
                    .unwrap_or_default();
                let text = format!(
                    "Still waiting for {what} ({place}); waited {}{left_text}. Your place is kept: call acquire again with the same arguments and request_id {rid:?} within {} to keep it (or release these keys to give it up).",
                    format_duration(waited),
                    format_duration(self.session.settings.keep_place),
                );
                Ok(ok(
                    text,
                    json!({
                        "status": "waiting",
                        "request_id": rid,
                        "position": b.as_ref().and_then(|b| b.position),
                        "holders": b.as_ref().map(|b| b.holders.clone()).unwrap_or_default(),
                        "waited_s": secs(waited),
                        "wait_left_s": left.map(secs),
                        "keep_place_s": secs(self.session.settings.keep_place),
                    }),
                ))
            }
            WaitState::Ended(mut o) => {
                let extra = match &o.blocked {
                    Some(b) => {
                        o.message = format!(
                            "gave up waiting for {what} after {} ({}). Pick other work, or wait again.",
                            a.wait.as_ref().map_or("the wait".into(), |w| w.text()),
                            words::blocked(b, &mine)
                        );
                        json!({ "holders": b.holders, "request_id": rid })
                    }
                    None => json!({ "request_id": rid }),
                };
                Err((o, extra))
            }
        }
    }

    async fn release_inner(&self, a: ReleaseArgs) -> Result<CallToolResult, Outcome> {
        if a.all != a.keys.is_empty() {
            return Err(Outcome::new(
                Code::Invalid,
                "name the keys to release, or all: true for every lock of this session",
            ));
        }
        let reason = match a.reason {
            Some(ReleaseWhy::Failed) => ReleaseReason::Failed,
            _ => ReleaseReason::Completed,
        };
        let keys = keys(&a.keys)?;
        let owner = self.session.owner_now().map(str::to_string);
        let s = self.session.clone();
        let (released, cancelled, others) = blocking(move || {
            let cancelled = s.cancel_waits(&keys);
            let released = s.release(&keys, reason);
            // Keys named that were not the session's: free, or someone else's.
            let ours: Vec<Key> = released.iter().map(|(k, _)| k.clone()).collect();
            let mut others = Vec::new();
            for k in keys.iter().filter(|k| !ours.contains(k)) {
                let st = s.client.store().status(k)?;
                others.push(st);
            }
            Ok((released, cancelled, others))
        })
        .await?;
        let mut lines = Vec::new();
        let mut rows = Vec::new();
        let mut failures = Vec::new();
        for (key, r) in &released {
            match r {
                Ok(Release::Released {
                    key,
                    fence,
                    held_for,
                }) => {
                    if !held_for.is_zero() {
                        lines.push(format!(
                            "released {key} (fence {fence}, held {}, {})",
                            format_duration(*held_for),
                            reason.name()
                        ));
                    } else {
                        lines.push(format!("released {key} (fence {fence}, same grant)"));
                    }
                    rows.push(json!({ "key": key, "status": "released", "fence": fence }));
                }
                Ok(Release::NotHeld { key, reason: why }) => {
                    lines.push(format!(
                        "{key} was no longer yours ({}): it had already ended",
                        why.map_or("ended", |r| r.name())
                    ));
                    rows.push(json!({ "key": key, "status": "not_held", "reason": why.map(|r| r.name()) }));
                }
                Err(o) => {
                    rows.push(json!({ "key": key, "status": "error", "error": o.code.name(), "message": o.message }));
                    failures.push(format!(
                        "{key} could not be released ({}); it is still yours and renewed: try again",
                        o.message
                    ));
                }
            }
        }
        let first_failure = released.iter().find_map(|(_, r)| r.as_ref().err().cloned());
        let mut refused = Vec::new();
        for st in &others {
            if st.free {
                lines.push(format!(
                    "{} is not held by anyone: nothing to release",
                    st.key
                ));
                rows.push(json!({ "key": st.key, "status": "free" }));
            } else {
                refused.push(words::status(st, &[]));
                rows.push(json!({ "key": st.key, "status": "not_holder", "holders": st.holders }));
            }
        }
        if cancelled > 0 {
            lines.push(format!("left {cancelled} queue(s)"));
        }
        if lines.is_empty() && refused.is_empty() {
            lines.push("this session holds no locks: nothing to release".into());
        }
        if !refused.is_empty() {
            let o = Outcome::new(
                Code::NotHolder,
                format!(
                    "{}, not by you ({}): it is left untouched. Wait for it, or ask its holder.{}",
                    refused.join("; "),
                    owner.as_deref().unwrap_or("this session"),
                    if lines.is_empty() {
                        String::new()
                    } else {
                        format!(" Done meanwhile: {}.", lines.join("; "))
                    }
                ),
            );
            return Ok(failed(o, json!({ "keys": rows })));
        }
        if let Some(mut o) = first_failure {
            o.message = format!(
                "{}.{}",
                failures.join("; "),
                if lines.is_empty() {
                    String::new()
                } else {
                    format!(" Done meanwhile: {}.", lines.join("; "))
                }
            );
            return Ok(failed(o, json!({ "keys": rows })));
        }
        Ok(ok(
            format!("{}.", lines.join("; ")),
            json!({ "keys": rows, "left_queues": cancelled }),
        ))
    }

    async fn renew_inner(&self, a: RenewArgs) -> Result<CallToolResult, Outcome> {
        let keys = keys(&a.keys)?;
        let s = self.session.clone();
        let answers = blocking(move || Ok(s.renew(&keys))).await?;
        if answers.is_empty() {
            return Ok(ok(
                "this session holds no such locks: nothing to renew".into(),
                json!({ "renewed": [] }),
            ));
        }
        let mut renewed = Vec::new();
        let mut lost = Vec::new();
        let mut lines = Vec::new();
        for (g, r) in answers {
            let names: Vec<String> = g.locks.iter().map(|l| l.key.to_string()).collect();
            match r {
                Ok(Renewal::Renewed { locks }) => {
                    lines.push(format!(
                        "renewed {} (lease {})",
                        names.join(", "),
                        g.ttl.map_or("none".into(), format_duration)
                    ));
                    renewed.push(json!({ "locks": locks.iter().map(|l| json!({"key": l.key, "fence": l.fence, "expires_at": l.expires_at.map(|w| w.rfc3339())})).collect::<Vec<_>>() }));
                }
                Ok(Renewal::Lost { key, reason }) => {
                    lines.push(format!(
                        "LOST {} ({})",
                        names.join(", "),
                        reason.map_or("no longer held", |r| r.name())
                    ));
                    lost.push(
                        json!({ "key": key, "keys": names, "reason": reason.map(|r| r.name()) }),
                    );
                }
                Err(o) => return Err(o),
            }
        }
        if !lost.is_empty() {
            return Ok(failed(
                Outcome::new(
                    Code::Lost,
                    format!(
                        "{}. Stop working on what you lost; acquire it again before you continue.",
                        lines.join("; ")
                    ),
                ),
                json!({ "lost": lost, "renewed": renewed }),
            ));
        }
        Ok(ok(
            format!("{}.", lines.join("; ")),
            json!({ "renewed": renewed }),
        ))
    }

    async fn list_inner(&self, a: ListArgs) -> Result<CallToolResult, Outcome> {
        let mine = self.session.grant_ids();
        let s = self.session.clone();
        let owner = if a.mine {
            Some(s.owner_now().unwrap_or("").to_string())
        } else {
            a.owner.clone()
        };
        let filter = ListFilter {
            owner,
            prefix: a.prefix.clone(),
            unhealthy: a.stale,
            grant: None,
            limit: a.limit.unwrap_or(100).clamp(1, 1000),
        };
        if a.waiting {
            let ws = blocking(move || Ok(s.client.store().waiters(&filter)?)).await?;
            let text = if ws.is_empty() {
                "Nobody is waiting.".to_string()
            } else {
                let lines: Vec<String> = ws
                    .iter()
                    .take(20)
                    .map(|w| {
                        let who = words::waiter(w);
                        format!("{}: {who}, waiting {}", w.key, format_duration(w.waited))
                    })
                    .collect();
                format!("{} queued request(s):\n{}", ws.len(), lines.join("\n"))
            };
            return Ok(ok(text, json!({ "waiting": ws })));
        }
        let locks = blocking(move || Ok(s.client.store().list(&filter)?)).await?;
        let text = if locks.is_empty() {
            "No locks match: everything here is free.".to_string()
        } else {
            let lines: Vec<String> = locks
                .iter()
                .take(20)
                .map(|l| format!("{}: {}", l.key, words::holder(l, mine.contains(&l.grant))))
                .collect();
            let more = if locks.len() > 20 {
                format!("\n... and {} more (see the JSON)", locks.len() - 20)
            } else {
                String::new()
            };
            format!("{} lock(s) held:\n{}{more}", locks.len(), lines.join("\n"))
        };
        Ok(ok(text, json!({ "locks": locks, "your_grants": mine })))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Locksmith {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .build(),
        )
        .with_server_info(Implementation::new("locksmith", env!("CARGO_PKG_VERSION")))
        .with_instructions(
            "Locks for agents that share repositories, folders and tasks. Before you work on a shared thing, call acquire with its key (e.g. \"repo/acme\" or \"task/42\"); if it is busy, pick other work or wait. Your locks are renewed while this session lives and freed when it ends. Call release when done. Read the board with list (or the locksmith://locks resource) before you pick work.",
        )
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        Ok(ListResourcesResult {
            resources: vec![
                Resource::new(BOARD, "locks")
                    .with_title("Lock board")
                    .with_description("Every held lock and every queued request, as JSON.")
                    .with_mime_type("application/json"),
            ],
            ..Default::default()
        })
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        Ok(ListResourceTemplatesResult {
            resource_templates: vec![
            ResourceTemplate::new(format!("{BOARD}/{{key}}"), "lock")
                .with_title("One key")
                .with_description(
                    "Who holds one key and who waits for it, as JSON. The key may contain slashes (locksmith://locks/repo/acme).",
                )
                .with_mime_type("application/json"),
            ],
            ..Default::default()
        })
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let uri = request.uri.clone();
        let s = self.session.clone();
        let body = if uri == BOARD {
            blocking(move || {
                let all = ListFilter::default();
                let locks = s.client.store().list(&all)?;
                let waiting = s.client.store().waiters(&all)?;
                Ok(json!({ "locks": locks, "waiting": waiting }))
            })
            .await
        } else if let Some(raw) = uri.strip_prefix(&format!("{BOARD}/")) {
            let key = percent_encoding::percent_decode_str(raw)
                .decode_utf8()
                .map(|k| k.into_owned())
                .map_err(|_| McpError::invalid_params("the key in the URI is not UTF-8", None))?;
            blocking(move || {
                let key = Key::new(key.as_str())?;
                Ok(serde_json::to_value(s.client.store().status(&key)?).unwrap_or_default())
            })
            .await
        } else {
            return Err(McpError::resource_not_found(
                format!("no resource {uri}: use {BOARD} or {BOARD}/KEY"),
                None,
            ));
        };
        match body {
            Ok(v) => Ok(
                ReadResourceResult::new(vec![ResourceContents::text(v.to_string(), uri)]).into(),
            ),
            Err(o) => Err(McpError::invalid_params(
                format!("{}: {}", o.code.name(), o.message),
                None,
            )),
        }
    }
}
