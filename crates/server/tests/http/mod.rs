//! Raw HTTP: long polls, disconnects, problems, limits, hosts, shutdown.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use locksmith_core::store::{HistoryFilter, ListFilter};
use locksmith_core::{EventKind, Key, Store, WaitPolicy};
use locksmith_remote::RemoteNotifier;
use locksmith_server::Settings;
use locksmith_testkit::{by_handle, request};
use serde_json::{Value, json};

use crate::common::{Server, eventually};

/// One request on its own connection: status, head, body.
pub fn raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    if !body.is_empty() {
        head.push_str("Content-Type: application/json\r\n");
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read the answer");
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

fn post(addr: SocketAddr, path: &str, body: Value) -> (u16, Value) {
    let (status, _, text) = raw(addr, "POST", path, &[], &body.to_string());
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Long polls of `(owner, key)` waiting up to `wait_ms` each, on threads;
/// returns once the server's queue holds all of them.
fn park_waiters(
    server: &crate::common::Server,
    who: &[(&'static str, &'static str)],
    wait_ms: u64,
) -> Vec<std::thread::JoinHandle<(u16, Value)>> {
    let addr = server.addr;
    let waiting: Vec<_> = who
        .iter()
        .map(|&(owner, key)| {
            std::thread::spawn(move || {
                post(
                    addr,
                    "/v1/grants",
                    json!({ "keys": [key], "owner": owner, "wait_ms": wait_ms }),
                )
            })
        })
        .collect();
    let store = server.client();
    assert!(eventually(Duration::from_secs(5), || store
        .waiters(&ListFilter::default())
        .unwrap()
        .len()
        == who.len()));
    waiting
}

/// `owner` takes `key` through `store`, which must grant it at once.
fn hold(store: &dyn Store, owner: &str, key: &str) -> locksmith_core::Grant {
    match store.acquire(&request(owner, &[key]), None).unwrap() {
        locksmith_core::Attempt::Granted(g) => g,
        other => panic!("{owner} was not granted {key}: {other:?}"),
    }
}

fn key(k: &str) -> Key {
    Key::new(k).unwrap()
}

#[test]
fn a_long_poll_is_granted_when_the_holder_releases() {
    let server = Server::start_real(Settings::default());
    let a = server.client();
    let first = a.acquire(&request("A", &["k"]), None).unwrap();
    let locksmith_core::Attempt::Granted(first) = first else {
        panic!("A granted")
    };
    let addr = server.addr;
    let waiter = std::thread::spawn(move || {
        let started = Instant::now();
        let answer = post(
            addr,
            "/v1/grants",
            json!({ "keys": ["k"], "owner": "B", "wait_ms": 15000 }),
        );
        (answer, started.elapsed())
    });
    assert!(eventually(Duration::from_secs(5), || a
        .waiters(&ListFilter::default())
        .unwrap()
        .len()
        == 1));
    a.release(
        &by_handle("k", &first),
        locksmith_core::ReleaseReason::Completed,
    )
    .unwrap();
    let ((status, body), waited) = waiter.join().unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["owner"], "B");
    assert!(body["locks"][0]["fence"].as_u64().unwrap() > first.locks[0].fence.0);
    assert!(
        waited < Duration::from_secs(15),
        "granted on the release, not at the deadline: {waited:?}"
    );
    assert!(body["handle"].as_str().unwrap().starts_with("lh1."));
}

#[test]
fn the_library_waits_through_the_server_and_keeps_fifo_order() {
    let server = Server::start_real(Settings::default());
    let store = server.client();
    let held = hold(&store, "A", "q");
    let mut waiters = Vec::new();
    for owner in ["B", "C"] {
        let url = server.url.clone();
        waiters.push(std::thread::spawn(move || {
            let s = locksmith_remote::HttpStore::open(&url, None).unwrap();
            let g = locksmith::wait::acquire(
                &s,
                &RemoteNotifier,
                &request(owner, &["q"]),
                WaitPolicy::For(Duration::from_secs(20)),
                &AtomicBool::new(false),
                &mut |_, _| {},
            )
            .expect("granted in turn");
            std::thread::sleep(Duration::from_millis(200));
            s.release(
                &by_handle("q", &g),
                locksmith_core::ReleaseReason::Completed,
            )
            .unwrap();
            (owner, g.locks[0].fence.0)
        }));
        // B queues before C.
        let want = waiters.len();
        assert!(eventually(Duration::from_secs(5), || store
            .waiters(&ListFilter::default())
            .unwrap()
            .len()
            == want));
    }
    store
        .release(
            &by_handle("q", &held),
            locksmith_core::ReleaseReason::Completed,
        )
        .unwrap();
    let got: Vec<(&str, u64)> = waiters.into_iter().map(|w| w.join().unwrap()).collect();
    assert!(got[0].1 < got[1].1, "B was granted before C: {got:?}");
    let acquired: Vec<String> = store
        .history(&HistoryFilter {
            key: Some("q".into()),
            kind: Some(EventKind::Acquired),
            ..HistoryFilter::default()
        })
        .unwrap()
        .into_iter()
        .rev()
        .map(|e| e.owner)
        .collect();
    assert_eq!(acquired, ["A", "B", "C"]);
}

#[test]
fn a_crowd_of_clients_keeps_one_holder_at_a_time_and_every_grant() {
    // Enough clients at once that the server commits their calls in groups.
    let server = Server::start_real(Settings::default());
    let (clients, rounds) = (12, 40);
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let url = server.url.clone();
            std::thread::spawn(move || {
                let s = locksmith_remote::HttpStore::open(&url, None).unwrap();
                let owner = format!("c{c}");
                let mut shared = Vec::new();
                for r in 0..rounds {
                    // Its own key: always granted, and released by its handle.
                    let own = format!("own/{c}/{}", r % 3);
                    let g = match s.acquire(&request(&owner, &[&own]), None).unwrap() {
                        locksmith_core::Attempt::Granted(g) => g,
                        other => panic!("{own}: {other:?}"),
                    };
                    let done = s
                        .release(
                            &by_handle(&own, &g),
                            locksmith_core::ReleaseReason::Completed,
                        )
                        .unwrap();
                    assert!(
                        matches!(done, locksmith_core::Release::Released { .. }),
                        "{own}: {done:?}"
                    );
                    // One key for all, fail-fast: granted only while free.
                    if let locksmith_core::Attempt::Granted(g) =
                        s.acquire(&request(&owner, &["shared"]), None).unwrap()
                    {
                        shared.push(g.locks[0].fence.0);
                        let done = s
                            .release(
                                &by_handle("shared", &g),
                                locksmith_core::ReleaseReason::Completed,
                            )
                            .unwrap();
                        assert!(
                            matches!(done, locksmith_core::Release::Released { .. }),
                            "shared: {done:?}"
                        );
                    }
                }
                shared
            })
        })
        .collect();
    let mut fences: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let store = server.client();
    // Every grant of the shared key is in the history, each released
    // before the next: acquired and released alternate.
    let events: Vec<EventKind> = store
        .history(&HistoryFilter {
            key: Some("shared".into()),
            limit: 100_000,
            ..HistoryFilter::default()
        })
        .unwrap()
        .into_iter()
        .rev()
        .map(|e| e.kind)
        .filter(|k| matches!(k, EventKind::Acquired | EventKind::Released))
        .collect();
    assert!(
        !fences.is_empty(),
        "the shared key was granted at least once"
    );
    assert_eq!(events.len(), 2 * fences.len(), "{events:?}");
    for pair in events.chunks(2) {
        assert_eq!(pair, [EventKind::Acquired, EventKind::Released]);
    }
    let granted = fences.len();
    fences.sort_unstable();
    fences.dedup();
    assert_eq!(fences.len(), granted, "no fence was given twice");
    assert!(
        store.list(&ListFilter::default()).unwrap().is_empty(),
        "nothing left held"
    );
    // And some of it was committed in groups.
    let text = raw(server.addr, "GET", "/metrics", &[], "").2;
    let number = |prefix: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{prefix}: {text}"))
    };
    let commits = number("locksmith_store_calls_per_commit_count ");
    let alone = number("locksmith_store_calls_per_commit_bucket{le=\"1.0\"} ");
    assert!(commits > alone, "no commit held two calls or more: {text}");
}

#[test]
fn a_client_that_disconnects_while_waiting_leaves_the_queue() {
    let server = Server::start_real(Settings::default());
    let store = server.client();
    store.acquire(&request("A", &["d"]), None).unwrap();
    let body = json!({ "keys": ["d"], "owner": "B", "wait_ms": 30000 }).to_string();
    let mut s = TcpStream::connect(server.addr).unwrap();
    write!(
        s,
        "POST /v1/grants HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        server.addr,
        body.len()
    )
    .unwrap();
    assert!(eventually(Duration::from_secs(5), || store
        .waiters(&ListFilter::default())
        .unwrap()
        .len()
        == 1));
    drop(s);
    assert!(
        eventually(Duration::from_secs(5), || store
            .waiters(&ListFilter::default())
            .unwrap()
            .is_empty()),
        "the waiter left the queue when its connection closed"
    );
    let cancelled = store
        .history(&HistoryFilter {
            kind: Some(EventKind::WaitCancelled),
            ..HistoryFilter::default()
        })
        .unwrap();
    assert_eq!(cancelled.len(), 1);
    assert_eq!(cancelled[0].owner, "B");
}

#[test]
fn a_poll_past_the_cap_answers_waiting_and_the_ticket_keeps_the_place() {
    let server = Server::start_real(Settings {
        poll_cap: Duration::from_millis(300),
        ..Settings::default()
    });
    let store = server.client();
    let held = hold(&store, "A", "p");
    let (status, first) = post(
        server.addr,
        "/v1/grants",
        json!({ "keys": ["p"], "owner": "B", "wait_ms": 60000 }),
    );
    assert_eq!(status, 202, "{first}");
    assert_eq!(first["position"], 1);
    let ticket = first["ticket"].as_str().unwrap().to_string();
    // C arrives while B is between polls; B keeps the first place.
    let (status, c) = post(
        server.addr,
        "/v1/grants",
        json!({ "keys": ["p"], "owner": "C", "wait_ms": 200, "queue": true }),
    );
    assert_eq!(status, 202, "{c}");
    assert_eq!(c["position"], 2);
    store
        .release(
            &by_handle("p", &held),
            locksmith_core::ReleaseReason::Completed,
        )
        .unwrap();
    let (status, b) = post(
        server.addr,
        "/v1/grants",
        json!({ "keys": ["p"], "owner": "B", "wait_ms": 60000, "ticket": ticket }),
    );
    assert_eq!(status, 200, "{b}");
    assert_eq!(b["owner"], "B");
    // Someone else's ticket is not honoured: it is a new arrival.
    let (status, other) = post(
        server.addr,
        "/v1/grants",
        json!({ "keys": ["p"], "owner": "D", "wait_ms": 100, "queue": true, "ticket": ticket }),
    );
    assert_eq!(status, 202, "{other}");
    assert_ne!(other["ticket"], json!(ticket));
}

#[test]
fn a_wait_that_ends_is_a_problem_with_the_holder() {
    let server = Server::start_real(Settings::default());
    let store = server.client();
    store.acquire(&request("A", &["t"]), None).unwrap();
    let (status, head, body) = raw(
        server.addr,
        "POST",
        "/v1/grants",
        &[],
        &json!({ "keys": ["t"], "owner": "B", "wait_ms": 200 }).to_string(),
    );
    assert_eq!(status, 409, "{body}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/problem+json"),
        "{head}"
    );
    let p: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(p["code"], "wait_timed_out");
    assert_eq!(p["blocked"]["holders"][0]["owner"], "A");
    assert!(
        store.waiters(&ListFilter::default()).unwrap().is_empty(),
        "no trace in the queue"
    );
    let (status, p) = post(
        server.addr,
        "/v1/grants",
        json!({ "keys": ["t"], "owner": "B" }),
    );
    assert_eq!((status, p["code"].as_str()), (409, Some("busy")));
}

#[test]
fn refusals_are_problems_with_stable_codes() {
    let server = Server::start_real(Settings {
        max_keys: 4,
        max_body: 4096,
        ..Settings::default()
    });
    let addr = server.addr;
    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({ "keys": ["a//b"], "owner": "A" }), 422, "invalid"),
        (json!({ "keys": [], "owner": "A" }), 422, "invalid"),
        (
            json!({ "keys": ["a"], "owner": "A", "mode": "weird" }),
            422,
            "invalid",
        ),
        (
            json!({ "keys": ["a"], "owner": "A", "surprise": 1 }),
            422,
            "invalid",
        ),
        (
            json!({ "keys": ["a", "b", "c", "d", "e"], "owner": "A" }),
            413,
            "too_large",
        ),
        // An invisible character (zero-width space) in a key.
        (
            json!({ "keys": ["a\u{200b}b"], "owner": "A" }),
            422,
            "invalid",
        ),
        (
            json!({ "keys": ["a"], "owner": "A", "metadata": { "x": "y".repeat(5000) } }),
            413,
            "too_large",
        ),
    ];
    for (body, status, code) in cases {
        let (got, p) = post(addr, "/v1/grants", body.clone());
        assert_eq!(
            (got, p["code"].as_str()),
            (status, Some(code)),
            "{body}: {p}"
        );
        assert!(p["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
    let (status, _, body) = raw(addr, "GET", "/v1/nothing-here", &[], "");
    assert_eq!(status, 404, "{body}");
    let (status, _, body) = raw(addr, "GET", "/v1/locks/a%2F%2Fb", &[], "");
    assert_eq!(status, 422, "{body}");
    // Nothing was granted by any of them.
    assert!(
        server
            .client()
            .list(&ListFilter::default())
            .unwrap()
            .is_empty()
    );
}

#[test]
fn two_spellings_of_one_key_are_one_lock_over_http() {
    let server = Server::start_real(Settings::default());
    let addr = server.addr;
    let (status, first) = post(
        addr,
        "/v1/grants",
        json!({ "keys": ["docs/caf\u{e9}"], "owner": "A", "ttl_ms": 30000 }),
    );
    assert_eq!(status, 200, "{first}");
    // The same name with a combining accent: held by A.
    let (status, p) = post(
        addr,
        "/v1/grants",
        json!({ "keys": ["docs/cafe\u{301}"], "owner": "B" }),
    );
    assert_eq!((status, p["code"].as_str()), (409, Some("busy")), "{p}");
    let (status, _, body) = raw(addr, "GET", "/v1/locks/docs%2Fcafe%CC%81", &[], "");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["holders"][0]["owner"], "A", "{v}");
    assert_eq!(v["key"], "docs/caf\u{e9}", "{v}");
}

#[test]
fn a_lost_lease_answers_410_with_the_reason() {
    let server = Server::start_real(Settings::default());
    let store = server.client();
    let locksmith_core::Attempt::Granted(g) = store.acquire(&request("A", &["l"]), None).unwrap()
    else {
        panic!()
    };
    store.force_release(&key("l"), "maintenance").unwrap();
    let (status, p) = post(
        server.addr,
        &format!("/v1/grants/{}/renew", g.grant),
        json!({ "handle": g.handle.expose(), "key": "l" }),
    );
    assert_eq!(status, 410, "{p}");
    assert_eq!(p["code"], "lost");
    assert_eq!(p["reason"], "forced");
    // Releasing twice is not an error.
    let (status, r) = post(
        server.addr,
        &format!("/v1/grants/{}/release", g.grant),
        json!({ "handle": g.handle.expose() }),
    );
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["status"], "not_held");
}

#[test]
fn a_retry_with_the_same_request_id_gets_the_same_grant() {
    let server = Server::start_real(Settings::default());
    let body = json!({ "keys": ["r"], "owner": "A", "request_id": "job-7", "ttl_ms": 60000 });
    let (s1, first) = post(server.addr, "/v1/grants", body.clone());
    let (s2, again) = post(server.addr, "/v1/grants", body);
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(first["grant"], again["grant"]);
    assert_eq!(first["locks"][0]["fence"], again["locks"][0]["fence"]);
    assert_eq!(again["replayed"], true);
    assert_eq!(
        server.client().list(&ListFilter::default()).unwrap().len(),
        1
    );
}

#[test]
fn foreign_hosts_and_cross_site_writes_are_refused() {
    let server = Server::start_real(Settings::default());
    let addr = server.addr;
    let (status, _, body) = raw(
        addr,
        "GET",
        "/v1/locks",
        &[("Host", "evil.example:7420")],
        "",
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("forbidden"));
    let grant = json!({ "keys": ["x"], "owner": "A" }).to_string();
    let (status, _, body) = raw(
        addr,
        "POST",
        "/v1/grants",
        &[("Origin", "http://evil.example")],
        &grant,
    );
    assert_eq!(status, 403, "{body}");
    let (status, _, body) = raw(
        addr,
        "POST",
        "/v1/grants",
        &[("Sec-Fetch-Site", "cross-site")],
        &grant,
    );
    assert_eq!(status, 403, "{body}");
    assert!(
        server
            .client()
            .list(&ListFilter::default())
            .unwrap()
            .is_empty()
    );
    let origin = format!("http://{addr}");
    let (status, _, body) = raw(addr, "POST", "/v1/grants", &[("Origin", &origin)], &grant);
    assert_eq!(status, 200, "same-origin is fine: {body}");
    let (status, _, _) = raw(
        addr,
        "GET",
        "/v1/locks",
        &[("Host", &format!("localhost:{}", addr.port()))],
        "",
    );
    assert_eq!(status, 200);
}

#[test]
fn health_readiness_and_metrics() {
    let server = Server::start_real(Settings::default());
    let store = server.client();
    store.acquire(&request("A", &["m"]), None).unwrap();
    store.acquire(&request("B", &["m"]), None).unwrap();
    assert_eq!(raw(server.addr, "GET", "/healthz", &[], "").0, 200);
    assert_eq!(raw(server.addr, "GET", "/readyz", &[], "").0, 200);
    let (status, _, text) = raw(server.addr, "GET", "/metrics", &[], "");
    assert_eq!(status, 200);
    assert!(
        text.contains("locksmith_acquisitions_total{outcome=\"granted\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("locksmith_acquisitions_total{outcome=\"busy\"} 1"),
        "{text}"
    );
    assert!(text.contains("locksmith_held_locks 1"), "{text}");
    assert!(text.contains("locksmith_wait_seconds_bucket"), "{text}");
    assert_eq!(
        server.state.metrics().render(None).lines().count(),
        text.lines().count()
    );
}

#[test]
fn a_call_waiting_at_the_write_gate_holds_up_no_other_request() {
    // The lone write over HTTP waits at the gate itself, or for the
    // connection, which a call from another thread holds at the gate.
    for behind_another_call in [false, true] {
        let server = Server::start_real(Settings::default());
        let store = server.client();
        store.acquire(&request("A", &["first"]), None).unwrap();
        // Another process in the middle of a write: the gate's kernel lock held.
        let gate = std::fs::File::open(server.dir().join("locksmith.db-gate")).unwrap();
        rustix::fs::flock(&gate, rustix::fs::FlockOperation::LockExclusive).unwrap();
        let direct = behind_another_call.then(|| {
            let inside = server.store.clone();
            std::thread::spawn(move || inside.acquire(&request("C", &["third"]), None))
        });
        // Time for each write to reach its wait (only an order: were one
        // later, the checks below would prove less, not fail).
        std::thread::sleep(Duration::from_millis(200));
        let writer = std::thread::spawn(move || store.acquire(&request("B", &["second"]), None));
        std::thread::sleep(Duration::from_millis(200));
        for _ in 0..20 {
            let started = Instant::now();
            assert_eq!(raw(server.addr, "GET", "/healthz", &[], "").0, 200);
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "a health check waited {:?} behind a store call",
                started.elapsed()
            );
        }
        assert!(!writer.is_finished(), "the write waits");
        drop(gate);
        for w in [Some(writer), direct].into_iter().flatten() {
            let got = w.join().unwrap().unwrap();
            assert!(
                matches!(got, locksmith_core::Attempt::Granted(_)),
                "{got:?}"
            );
        }
    }
}

#[test]
fn stopping_answers_every_waiter_and_finishes() {
    let mut server = Server::start_real(Settings::default());
    let store = server.client();
    store.acquire(&request("A", &["s"]), None).unwrap();
    let addr = server.addr;
    let waiter = std::thread::spawn(move || {
        post(
            addr,
            "/v1/grants",
            json!({ "keys": ["s"], "owner": "B", "wait_forever": true }),
        )
    });
    assert!(eventually(Duration::from_secs(5), || store
        .waiters(&ListFilter::default())
        .unwrap()
        .len()
        == 1));
    let started = Instant::now();
    server.stop().expect("a clean stop");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stopped without waiting for the poll cap"
    );
    let (status, p) = waiter.join().unwrap();
    assert_eq!(
        (status, p["code"].as_str()),
        (503, Some("unavailable")),
        "{p}"
    );
    assert!(
        server
            .store
            .waiters(&ListFilter::default())
            .unwrap()
            .is_empty(),
        "the waiter left the queue"
    );
}

#[test]
fn the_openapi_document_lists_every_route() {
    let server = Server::start_real(Settings::default());
    let (status, _, body) = raw(server.addr, "GET", "/v1/openapi.json", &[], "");
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for route in [
        "/v1/grants",
        "/v1/grants/{grant}/renew",
        "/v1/grants/{grant}/release",
        "/v1/locks",
        "/v1/locks/{key}",
        "/v1/locks/{key}/renew",
        "/v1/locks/{key}/release",
        "/v1/locks/{key}/force-release",
        "/v1/queue/leave",
        "/v1/waiters",
        "/v1/history",
        "/v1/stats",
        "/v1/events",
        "/v1/reap",
        "/metrics",
        "/healthz",
        "/readyz",
        "/v1/openapi.json",
    ] {
        assert!(paths.contains(&route), "{route} missing from {paths:?}");
    }
    assert!(doc["components"]["schemas"]["Problem"].is_object());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}

#[test]
fn an_owner_with_too_many_waiting_requests_is_refused_with_429() {
    let server = Server::start_real(Settings {
        max_waiters_per_owner: 2,
        ..Settings::default()
    });
    server
        .client()
        .acquire(&request("A", &["w1", "w2", "w3"]), None)
        .unwrap();
    let addr = server.addr;
    let waiting = park_waiters(&server, &[("B", "w1"), ("B", "w2")], 3000);
    let (status, p) = post(
        addr,
        "/v1/grants",
        json!({ "keys": ["w3"], "owner": "B", "wait_ms": 3000 }),
    );
    assert_eq!((status, p["code"].as_str()), (429, Some("too_many")), "{p}");
    // Another owner may still wait.
    let (status, p) = post(
        addr,
        "/v1/grants",
        json!({ "keys": ["w3"], "owner": "C", "wait_ms": 100 }),
    );
    assert_eq!(
        (status, p["code"].as_str()),
        (409, Some("wait_timed_out")),
        "{p}"
    );
    for w in waiting {
        assert_eq!(w.join().unwrap().0, 409);
    }
}

#[test]
fn a_retry_after_a_dropped_response_gets_the_first_grant() {
    let server = Server::start_real(Settings::default());
    let body = json!({ "keys": ["job/9"], "owner": "A", "request_id": "r-9", "ttl_ms": 60000 })
        .to_string();
    // The request goes out; the client goes away before it reads the answer.
    let mut s = TcpStream::connect(server.addr).unwrap();
    write!(
        s,
        "POST /v1/grants HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        server.addr,
        body.len()
    )
    .unwrap();
    let store = server.client();
    assert!(eventually(Duration::from_secs(5), || store
        .list(&ListFilter::default())
        .unwrap()
        .len()
        == 1));
    drop(s);
    let held = store.list(&ListFilter::default()).unwrap();
    let (status, again) = post(
        server.addr,
        "/v1/grants",
        serde_json::from_str(&body).unwrap(),
    );
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["replayed"], true);
    assert_eq!(again["grant"], held[0].grant);
    assert_eq!(again["locks"][0]["fence"], held[0].fence.0);
    assert_eq!(
        store.list(&ListFilter::default()).unwrap().len(),
        1,
        "no second holder"
    );
    // The same id with another request is refused.
    let (status, p) = post(
        server.addr,
        "/v1/grants",
        json!({ "keys": ["job/9"], "owner": "A", "request_id": "r-9", "ttl_ms": 5000 }),
    );
    assert_eq!((status, p["code"].as_str()), (422, Some("invalid")), "{p}");
}

#[test]
fn a_poll_again_with_the_same_request_id_keeps_the_place() {
    let server = Server::start_real(Settings {
        poll_cap: Duration::from_millis(300),
        ..Settings::default()
    });
    let store = server.client();
    let held = hold(&store, "A", "r");
    let b = json!({ "keys": ["r"], "owner": "B", "wait_ms": 60000, "request_id": "b-1" });
    let (status, first) = post(server.addr, "/v1/grants", b.clone());
    assert_eq!(
        (status, first["position"].as_u64()),
        (202, Some(1)),
        "{first}"
    );
    let (status, c) = post(
        server.addr,
        "/v1/grants",
        json!({ "keys": ["r"], "owner": "C", "wait_ms": 200, "queue": true }),
    );
    assert_eq!((status, c["position"].as_u64()), (202, Some(2)), "{c}");
    // B comes back with its request id only: still first.
    let (status, again) = post(
        server.addr,
        "/v1/grants",
        json!({ "keys": ["r"], "owner": "B", "wait_ms": 100, "request_id": "b-1", "queue": true }),
    );
    assert_eq!(
        (status, again["position"].as_u64()),
        (202, Some(1)),
        "{again}"
    );
    store
        .release(
            &by_handle("r", &held),
            locksmith_core::ReleaseReason::Completed,
        )
        .unwrap();
    let (status, got) = post(server.addr, "/v1/grants", b);
    assert_eq!((status, got["owner"].as_str()), (200, Some("B")), "{got}");
}

#[test]
fn past_the_servers_poll_cap_a_waiter_is_told_to_retry() {
    let server = Server::start_real(Settings {
        max_polls: 2,
        ..Settings::default()
    });
    server
        .client()
        .acquire(&request("A", &["c1", "c2", "c3"]), None)
        .unwrap();
    let addr = server.addr;
    let waiting = park_waiters(&server, &[("B", "c1"), ("C", "c2")], 2000);
    let (status, head, body) = raw(
        addr,
        "POST",
        "/v1/grants",
        &[],
        &json!({ "keys": ["c3"], "owner": "D", "wait_ms": 2000 }).to_string(),
    );
    assert_eq!(status, 429, "{body}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 1"),
        "{head}"
    );
    // A fail-fast request is still answered.
    let (status, p) = post(addr, "/v1/grants", json!({ "keys": ["c3"], "owner": "D" }));
    assert_eq!((status, p["code"].as_str()), (409, Some("busy")), "{p}");
    for w in waiting {
        assert_eq!(w.join().unwrap().0, 409);
    }
}
