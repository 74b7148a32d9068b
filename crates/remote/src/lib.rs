//! The lock store of a `locksmith serve` server, over HTTP: [`HttpStore`]
//! implements the [`Store`] trait with one request per call, so every front
//! end (CLI, library, conformance suite) works against a server as it does
//! against the embedded store.
//!
//! Waiting is a long poll: [`Store::acquire_within`] asks the server to
//! hold the request until it is granted or the hold passes, and the server
//! answers at once when a release makes it the request's turn. The wake-ups
//! of [`RemoteNotifier`] are therefore immediate: the transport is the wake-up.

mod resolve;
mod watch;

use std::io::Read;
use std::time::Duration;

pub use watch::Watched;

use locksmith_core::local::{Notifier, WakeSource};
use locksmith_core::store::{HistoryFilter, LeaveReason, ListFilter};
use locksmith_core::tenure::Reap;
use locksmith_core::wire::{
    AcquireBody, ForceBody, GrantBody, LeaveBody, Problem, ReleaseBody, RenewBody, WaitingBody,
};
use locksmith_core::{
    AcquireRequest, Attempt, Blocked, Code, Event, Key, KeyStatus, LockInfo, Proof, Release,
    ReleaseReason, Renewal, Stats, Store, StoreError, Target, Ticket, WaitPolicy, WaiterInfo,
};
use serde::de::DeserializeOwned;

/// How long a call may take beyond the hold it asks for.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a renewal may take: one that takes longer counts as failed, so
/// that a holder whose server went silent still meets its own deadline (the
/// renewer checks it between calls).
const RENEW_TIMEOUT: Duration = Duration::from_secs(1);

/// A lock store behind a locksmith server.
pub struct HttpStore {
    base: String,
    agent: ureq::Agent,
    token: Option<String>,
    renew_timeout: Duration,
}

impl std::fmt::Debug for HttpStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpStore")
            .field("base", &self.base)
            .finish()
    }
}

impl HttpStore {
    /// A store at `url` (`http://host:port`, or `https://` with the `tls`
    /// feature), sending `token` as a bearer token when given.
    pub fn open(url: &str, token: Option<String>) -> Result<HttpStore, StoreError> {
        let base = url.trim_end_matches('/').to_string();
        let scheme_ok =
            base.starts_with("http://") || (base.starts_with("https://") && cfg!(feature = "tls"));
        if !scheme_ok
            || base
                .split_once("://")
                .is_none_or(|(_, rest)| rest.is_empty())
        {
            return Err(StoreError::Invalid(format!(
                "cannot use {url:?} as a server address: give http://HOST:PORT{}",
                if cfg!(feature = "tls") {
                    " or https://HOST:PORT"
                } else {
                    " (https needs a build with the tls feature)"
                }
            )));
        }
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(CALL_TIMEOUT))
            .build();
        let agent = ureq::Agent::with_parts(
            config,
            ureq::unversioned::transport::DefaultConnector::default(),
            resolve::Resolve::default(),
        );
        Ok(HttpStore {
            base,
            agent,
            token: token.filter(|t| !t.is_empty()),
            renew_timeout: RENEW_TIMEOUT,
        })
    }

    /// How long one renewal may take (default 1 s, so that a guard renewing
    /// in the background meets its own deadline when the server goes
    /// silent); a one-off renewal by hand can afford longer.
    pub fn with_renew_timeout(mut self, d: Duration) -> HttpStore {
        self.renew_timeout = d;
        self
    }

    /// The server's address.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// One call: method, path (already encoded), optional JSON body, and
    /// how much longer than usual it may take. Answers status and body.
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
        extra: Duration,
    ) -> Result<(u16, Vec<u8>), StoreError> {
        let url = format!("{}{}", self.base, path);
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(&url)
            .header("accept", "application/json");
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let timeout = Some(match extra {
            RENEWAL => self.renew_timeout,
            extra => CALL_TIMEOUT + extra,
        });
        let sent = match body {
            Some(b) => {
                let req = req
                    .header("content-type", "application/json")
                    .body(b)
                    .map_err(|e| StoreError::Invalid(format!("bad request for {url}: {e}")))?;
                let req = self
                    .agent
                    .configure_request(req)
                    .timeout_global(timeout)
                    .build();
                self.agent.run(req)
            }
            None => {
                let req = req
                    .body(())
                    .map_err(|e| StoreError::Invalid(format!("bad request for {url}: {e}")))?;
                let req = self
                    .agent
                    .configure_request(req)
                    .timeout_global(timeout)
                    .build();
                self.agent.run(req)
            }
        };
        let mut resp = sent.map_err(|e| {
            StoreError::Busy(format!(
                "cannot reach the locksmith server at {}: {e}; check that `locksmith serve` runs there and that the address is right",
                self.base
            ))
        })?;
        let status = resp.status().as_u16();
        let mut bytes = Vec::new();
        resp.body_mut()
            .as_reader()
            .read_to_end(&mut bytes)
            .map_err(|e| {
                StoreError::Busy(format!(
                    "the locksmith server at {} broke off its answer: {e}; try again",
                    self.base
                ))
            })?;
        Ok((status, bytes))
    }

    fn post<B: serde::Serialize>(
        &self,
        path: &str,
        body: &B,
        extra: Duration,
    ) -> Result<(u16, Vec<u8>), StoreError> {
        let bytes = serde_json::to_vec(body)
            .map_err(|e| StoreError::Invalid(format!("cannot encode the request: {e}")))?;
        self.call("POST", path, Some(bytes), extra)
    }

    /// A 2xx answer decoded, or the store error its problem names.
    fn answer<T: DeserializeOwned>(&self, (status, body): (u16, Vec<u8>)) -> Result<T, StoreError> {
        if (200..300).contains(&status) {
            return decode(&self.base, &body);
        }
        Err(problem(&self.base, status, &body).into_store_error())
    }

    /// The list in field `field` of a JSON answer (`{"locks": [...]}`).
    fn field<T: DeserializeOwned>(
        &self,
        answer: (u16, Vec<u8>),
        field: &str,
    ) -> Result<T, StoreError> {
        let mut v: serde_json::Value = self.answer(answer)?;
        let inner = v
            .get_mut(field)
            .map(serde_json::Value::take)
            .unwrap_or_default();
        decode(&self.base, &serde_json::to_vec(&inner).unwrap_or_default())
    }

    /// `GET path` and the list in `field` of its answer.
    fn get_list<T: DeserializeOwned>(&self, path: &str, field: &str) -> Result<T, StoreError> {
        self.field(self.call("GET", path, None, Duration::ZERO)?, field)
    }

    fn attempt(
        &self,
        body: AcquireBody,
        queue: Option<&mut Ticket>,
        extra: Duration,
    ) -> Result<Attempt, StoreError> {
        let (status, bytes) = self.post("/v1/grants", &body, extra)?;
        match status {
            200 => Ok(Attempt::Granted(
                decode::<GrantBody>(&self.base, &bytes)?.into(),
            )),
            202 => {
                let w: WaitingBody = decode(&self.base, &bytes)?;
                if let Some(t) = queue {
                    t.seq = w.ticket.split_once('.').and_then(|(s, _)| s.parse().ok());
                    t.wake = w.ticket;
                }
                Ok(Attempt::Blocked(w.blocked))
            }
            _ => {
                let p = problem(&self.base, status, &bytes);
                if let (Some(Code::Deadlock), Some(t)) = (p.code(), queue) {
                    // The refused request is out of the queue.
                    t.seq = None;
                }
                match p.code() {
                    Some(Code::Busy) => match p.extra.get("blocked") {
                        Some(b) => Ok(Attempt::Blocked(
                            serde_json::from_value::<Blocked>(b.clone()).map_err(|e| {
                                StoreError::backend(format!(
                                    "unreadable busy answer from {}: {e}",
                                    self.base
                                ))
                            })?,
                        )),
                        None => Err(p.into_store_error()),
                    },
                    _ => Err(p.into_store_error()),
                }
            }
        }
    }
}

/// The `extra` of a renewal call: it gets [`RENEW_TIMEOUT`] in all.
const RENEWAL: Duration = Duration::MAX;

/// The ticket text the server gave with its last `waiting` answer.
fn server_ticket(t: &Ticket) -> Option<String> {
    let seq = t.seq?;
    t.wake
        .split_once('.')
        .filter(|(s, _)| s.parse::<i64>().ok() == Some(seq))
        .map(|_| t.wake.clone())
}

fn decode<T: DeserializeOwned>(base: &str, body: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(body).map_err(|e| {
        StoreError::backend(format!(
            "the answer of the locksmith server at {base} is not what this client reads ({e}); are client and server of the same version?"
        ))
    })
}

fn problem(base: &str, status: u16, body: &[u8]) -> Problem {
    serde_json::from_slice::<Problem>(body).unwrap_or_else(|_| {
        let code = match status {
            401 => Code::Unauthorized,
            403 => Code::Forbidden,
            413 => Code::TooLarge,
            429 => Code::TooMany,
            502..=504 => Code::Unavailable,
            _ => Code::StoreError,
        };
        Problem::new(
            code,
            format!(
                "{base} answered HTTP {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            ),
        )
    })
}

/// Percent-encodes everything but unreserved characters (so `/` too).
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn lock_path(key: &Key, action: &str) -> String {
    format!("/v1/locks/{}/{action}", encode(key.as_str()))
}

/// Query text of `pairs` whose values are present.
fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", encode(v))))
        .collect();
    match parts.is_empty() {
        true => String::new(),
        false => format!("?{}", parts.join("&")),
    }
}

/// Query text of a list filter's owner, prefix and limit, then `more`.
fn list_query(filter: &ListFilter, more: &[(&str, Option<String>)]) -> String {
    let mut pairs = vec![
        ("owner", filter.owner.clone()),
        ("prefix", filter.prefix.clone()),
        (
            "limit",
            (filter.limit > 0).then(|| filter.limit.to_string()),
        ),
    ];
    pairs.extend_from_slice(more);
    query(&pairs)
}

fn proof(by: &Proof) -> (Option<String>, Option<String>) {
    match by {
        Proof::Handle(h) => (Some(h.expose().to_string()), None),
        Proof::Owner(o) => (None, Some(o.clone())),
    }
}

impl Store for HttpStore {
    fn acquire(
        &self,
        req: &AcquireRequest,
        queue: Option<&mut Ticket>,
    ) -> Result<Attempt, StoreError> {
        let mut body = AcquireBody::new(req, WaitPolicy::FailFast);
        if let Some(t) = &queue {
            body.queue = true;
            body.ticket = server_ticket(t);
        }
        self.attempt(body, queue, Duration::ZERO)
    }

    fn acquire_within(
        &self,
        req: &AcquireRequest,
        queue: &mut Ticket,
        hold: Duration,
    ) -> Result<Attempt, StoreError> {
        let policy = match hold.is_zero() {
            true => WaitPolicy::FailFast,
            false => WaitPolicy::For(hold),
        };
        let mut body = AcquireBody::new(req, policy);
        body.queue = true;
        body.ticket = server_ticket(queue);
        self.attempt(body, Some(queue), hold)
    }

    fn leave_queue(&self, ticket: &Ticket, why: LeaveReason) -> Result<(), StoreError> {
        let Some(t) = server_ticket(ticket) else {
            return Ok(());
        };
        let body = LeaveBody {
            ticket: t,
            timed_out: why == LeaveReason::TimedOut,
        };
        let _: serde_json::Value =
            self.answer(self.post("/v1/queue/leave", &body, Duration::ZERO)?)?;
        Ok(())
    }

    fn renew(&self, target: &Target, ttl: Option<Duration>) -> Result<Renewal, StoreError> {
        let (handle, owner) = proof(&target.by);
        let body = RenewBody {
            key: None,
            handle,
            owner,
            ttl_ms: ttl.map(locksmith_core::wire::millis),
        };
        let (status, bytes) = self.post(&lock_path(&target.key, "renew"), &body, RENEWAL)?;
        if status == 410 {
            let p = problem(&self.base, status, &bytes);
            let reason = p
                .extra
                .get("reason")
                .and_then(|r| serde_json::from_value::<Option<ReleaseReason>>(r.clone()).ok())
                .flatten();
            return Ok(Renewal::Lost {
                key: target.key.clone(),
                reason,
            });
        }
        self.answer((status, bytes))
    }

    fn release(&self, target: &Target, reason: ReleaseReason) -> Result<Release, StoreError> {
        let (handle, owner) = proof(&target.by);
        let body = ReleaseBody {
            key: None,
            handle,
            owner,
            reason: Some(reason),
        };
        self.answer(self.post(&lock_path(&target.key, "release"), &body, Duration::ZERO)?)
    }

    fn release_grant(&self, target: &Target, reason: ReleaseReason) -> Result<Release, StoreError> {
        let Proof::Handle(h) = &target.by else {
            return self.release(target, reason);
        };
        let Some(grant) = h.grant() else {
            return Err(StoreError::Invalid(
                "malformed lease handle: expected lh1.<grant>.<secret> as printed by acquire"
                    .into(),
            ));
        };
        let body = ReleaseBody {
            key: Some(target.key.to_string()),
            handle: Some(h.expose().to_string()),
            owner: None,
            reason: Some(reason),
        };
        self.answer(self.post(
            &format!("/v1/grants/{grant}/release"),
            &body,
            Duration::ZERO,
        )?)
    }

    fn force_release_seen(
        &self,
        key: &Key,
        why: &str,
        by: Option<&str>,
        seen: Option<locksmith_core::Fence>,
    ) -> Result<Vec<LockInfo>, StoreError> {
        let body = ForceBody {
            reason: why.to_string(),
            by: by.map(str::to_string),
            fence: seen.map(|f| f.0),
        };
        self.field(
            self.post(&lock_path(key, "force-release"), &body, Duration::ZERO)?,
            "ended",
        )
    }

    fn status(&self, key: &Key) -> Result<KeyStatus, StoreError> {
        let path = format!("/v1/locks/{}", encode(key.as_str()));
        self.answer(self.call("GET", &path, None, Duration::ZERO)?)
    }

    fn list(&self, filter: &ListFilter) -> Result<Vec<LockInfo>, StoreError> {
        let q = list_query(
            filter,
            &[
                ("state", filter.unhealthy.then(|| "unhealthy".to_string())),
                ("grant", filter.grant.map(|g| g.to_string())),
            ],
        );
        self.get_list(&format!("/v1/locks{q}"), "locks")
    }

    fn waiters(&self, filter: &ListFilter) -> Result<Vec<WaiterInfo>, StoreError> {
        let q = list_query(filter, &[]);
        self.get_list(&format!("/v1/waiters{q}"), "waiters")
    }

    fn history(&self, filter: &HistoryFilter) -> Result<Vec<Event>, StoreError> {
        let q = query(&[
            ("key", filter.key.clone()),
            ("prefix", filter.prefix.then(|| "true".to_string())),
            ("owner", filter.owner.clone()),
            ("kind", filter.kind.map(|k| k.name().to_string())),
            ("after", filter.after.map(|a| a.to_string())),
            (
                "limit",
                (filter.limit > 0).then(|| filter.limit.to_string()),
            ),
        ]);
        self.get_list(&format!("/v1/history{q}"), "events")
    }

    fn stats(&self) -> Result<Stats, StoreError> {
        self.answer(self.call("GET", "/v1/stats", None, Duration::ZERO)?)
    }

    fn reap(&self, batch: &[Reap]) -> Result<Vec<bool>, StoreError> {
        let body = serde_json::json!({ "batch": batch });
        self.field(self.post("/v1/reap", &body, Duration::ZERO)?, "ended")
    }
}

/// Wake-ups of a server's waiters: the long poll itself, so a wake source
/// never sleeps.
#[derive(Debug, Default, Clone, Copy)]
pub struct RemoteNotifier;

struct Immediate;

impl WakeSource for Immediate {
    fn address(&self) -> &str {
        ""
    }
    fn wait(&mut self, _timeout: Duration) -> bool {
        true
    }
}

impl Notifier for RemoteNotifier {
    fn wake_source(&self) -> Result<Box<dyn WakeSource>, StoreError> {
        Ok(Box::new(Immediate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_encoded_whole() {
        assert_eq!(encode("/srv/repos/a b"), "%2Fsrv%2Frepos%2Fa%20b");
        assert_eq!(encode("task/42"), "task%2F42");
        assert_eq!(encode("ünï"), "%C3%BCn%C3%AF");
    }

    #[test]
    fn only_http_urls_open() {
        assert!(HttpStore::open("http://127.0.0.1:7420", None).is_ok());
        for bad in ["127.0.0.1:7420", "ftp://x", "http://", "sqlite:///x"] {
            assert!(
                matches!(HttpStore::open(bad, None), Err(StoreError::Invalid(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_ticket_is_sent_back_only_as_the_server_gave_it() {
        let t = Ticket {
            seq: Some(7),
            wake: "7.abc".into(),
            claim: None,
        };
        assert_eq!(server_ticket(&t).as_deref(), Some("7.abc"));
        let local = Ticket {
            seq: Some(7),
            wake: "@locksmith-wake-1".into(),
            claim: None,
        };
        assert_eq!(server_ticket(&local), None);
        assert_eq!(server_ticket(&Ticket::default()), None);
    }
}
