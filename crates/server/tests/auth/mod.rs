//! Every route × every role × no token, a bad token and a good one.

use std::time::Duration;

use locksmith_server::Settings;
use locksmith_server::tokens::{Role, Tokens};
use serde_json::{Value, json};

use crate::common::Server;
use crate::http::raw;

/// A route, a body, and the least role it needs (`None`: anyone).
fn routes() -> Vec<(&'static str, &'static str, Value, Option<Role>)> {
    use Role::*;
    vec![
        ("GET", "/healthz", Value::Null, None),
        ("GET", "/readyz", Value::Null, None),
        ("GET", "/metrics", Value::Null, Some(Viewer)),
        ("GET", "/v1/locks", Value::Null, Some(Viewer)),
        ("GET", "/v1/locks/repo%2Fk", Value::Null, Some(Viewer)),
        ("GET", "/v1/waiters", Value::Null, Some(Viewer)),
        ("GET", "/v1/history", Value::Null, Some(Viewer)),
        ("GET", "/v1/stats", Value::Null, Some(Viewer)),
        (
            "POST",
            "/v1/grants",
            json!({ "keys": ["k"], "owner": "A", "ttl_ms": 60000 }),
            Some(Client),
        ),
        (
            "POST",
            "/v1/grants",
            json!({ "keys": ["f"], "owner": "A", "strategy": "force", "reason": "test" }),
            Some(Admin),
        ),
        (
            "POST",
            "/v1/grants/1/renew",
            json!({ "handle": "lh1.1.00", "key": "k" }),
            Some(Client),
        ),
        (
            "POST",
            "/v1/grants/1/release",
            json!({ "handle": "lh1.1.00", "key": "k" }),
            Some(Client),
        ),
        (
            "POST",
            "/v1/locks/k/renew",
            json!({ "handle": "lh1.1.00" }),
            Some(Client),
        ),
        (
            "POST",
            "/v1/locks/k/renew",
            json!({ "owner": "A" }),
            Some(Admin),
        ),
        (
            "POST",
            "/v1/locks/k/release",
            json!({ "handle": "lh1.1.00" }),
            Some(Client),
        ),
        (
            "POST",
            "/v1/locks/k/release",
            json!({ "owner": "A" }),
            Some(Admin),
        ),
        (
            "POST",
            "/v1/locks/k/force-release",
            json!({ "reason": "test" }),
            Some(Admin),
        ),
        (
            "POST",
            "/v1/queue/leave",
            json!({ "ticket": "1.00" }),
            Some(Client),
        ),
        ("POST", "/v1/reap", json!({ "batch": [] }), Some(Admin)),
    ]
}

#[test]
fn every_route_by_every_role() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.json");
    let mut tokens = Tokens::load(&file).unwrap();
    let mut by_role = Vec::new();
    for role in [Role::Viewer, Role::Client, Role::Admin] {
        by_role.push((Some(role), tokens.create(role.name(), role, "now").unwrap()));
    }
    let server = Server::start_real(Settings {
        tokens: Some(file),
        sweep_every: Duration::ZERO,
        ..Settings::default()
    });
    let mut callers: Vec<(Option<Role>, Option<String>)> =
        vec![(None, None), (None, Some("lst_wrong".into()))];
    callers.extend(by_role.into_iter().map(|(r, t)| (r, Some(t))));
    let mut checked = 0;
    for (method, path, body, needed) in routes() {
        for (role, token) in &callers {
            let auth = token.as_ref().map(|t| format!("Bearer {t}"));
            let headers: Vec<(&str, &str)> =
                auth.iter().map(|a| ("Authorization", a.as_str())).collect();
            let text = if body.is_null() {
                String::new()
            } else {
                body.to_string()
            };
            let (status, head, answer) = raw(server.addr, method, path, &headers, &text);
            let want = match (needed, role) {
                (None, _) => "allowed",
                (Some(_), None) => "401",
                (Some(n), Some(r)) if *r < n => "403",
                _ => "allowed",
            };
            let what = format!(
                "{method} {path} {body} as {role:?} (token {}): {status} {answer}",
                token.is_some()
            );
            match want {
                "401" => {
                    assert_eq!(status, 401, "{what}");
                    assert!(
                        head.to_ascii_lowercase()
                            .contains("www-authenticate: bearer"),
                        "{what}"
                    );
                    assert!(answer.contains("\"code\":\"unauthorized\""), "{what}");
                }
                "403" => {
                    assert_eq!(status, 403, "{what}");
                    assert!(answer.contains("\"code\":\"forbidden\""), "{what}");
                }
                _ => assert!(![401, 403].contains(&status), "{what}"),
            }
            checked += 1;
        }
    }
    assert_eq!(checked, routes().len() * 5);
    // The admin's forced release names the token that did it.
    let bearer = |role: Role| {
        let t = &callers.iter().find(|c| c.0 == Some(role)).unwrap().1;
        format!("Bearer {}", t.as_deref().unwrap())
    };
    let grant = json!({ "keys": ["z"], "owner": "A", "ttl_ms": 60000 }).to_string();
    let (status, _, body) = raw(
        server.addr,
        "POST",
        "/v1/grants",
        &[("Authorization", &bearer(Role::Client))],
        &grant,
    );
    assert_eq!(status, 200, "{body}");
    let force = json!({ "reason": "test" }).to_string();
    let (status, _, body) = raw(
        server.addr,
        "POST",
        "/v1/locks/z/force-release",
        &[("Authorization", &bearer(Role::Admin))],
        &force,
    );
    assert_eq!(status, 200, "{body}");
    let forced = locksmith_core::Store::history(
        &*server.store,
        &locksmith_core::store::HistoryFilter {
            kind: Some(locksmith_core::EventKind::Forced),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(!forced.is_empty());
    for e in forced {
        assert_eq!(e.detail.unwrap()["by"], "token admin");
    }
}

#[test]
fn tokens_are_read_again_on_reload() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.json");
    let mut tokens = Tokens::load(&file).unwrap();
    let first = tokens.create("first", Role::Viewer, "now").unwrap();
    let server = Server::start_real(Settings {
        tokens: Some(file.clone()),
        ..Settings::default()
    });
    let get = |t: &str| {
        raw(
            server.addr,
            "GET",
            "/v1/locks",
            &[("Authorization", &format!("Bearer {t}"))],
            "",
        )
        .0
    };
    assert_eq!(get(&first), 200);
    let second = tokens.create("second", Role::Viewer, "now").unwrap();
    assert_eq!(get(&second), 401, "not before the reload");
    tokens.revoke("first").unwrap();
    assert_eq!(server.state.reload_tokens().unwrap(), 1);
    assert_eq!((get(&first), get(&second)), (401, 200));
    // A damaged file keeps the tokens in force.
    std::fs::write(&file, "{ broken").unwrap();
    assert!(server.state.reload_tokens().is_err());
    assert_eq!(get(&second), 200);
}
