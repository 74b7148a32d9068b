//! `locksmith mcp` driven by a client this project did not write: the
//! official MCP Python SDK (`mcp` on PyPI, installed by `.ci/run`). The
//! agents and their assertions are in `agents.py`; each test runs one
//! scenario against a store of its own.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{Env, output_within};
use crate::server::Served;

/// Runs `agents.py SCENARIO` and fails with its output unless it passes.
fn scenario(name: &str, env: &Env, server: Option<&Served>) {
    scenario_with(name, env, server, &[]);
}

/// Runs a scenario with more environment for the agents.
fn scenario_with(name: &str, env: &Env, server: Option<&Served>, vars: &[(&str, &str)]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/agents.py");
    let mut c = Command::new("python3");
    c.arg(&script)
        .arg(name)
        .env("LOCKSMITH_BIN", env!("CARGO_BIN_EXE_locksmith"))
        .env("LOCKSMITH_HOME", env.home.path())
        .env_remove("LOCKSMITH_OWNER")
        .env_remove("LOCKSMITH_SERVER")
        .env_remove("LOCKSMITH_TOKEN")
        .envs(vars.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(s) = server {
        c.env("LOCKSMITH_SERVER", &s.url);
    }
    let child = c.spawn().expect("python3 runs (installed by .ci/run)");
    // Bounded: the script gives up after 60 s by itself; this is the backstop.
    let out = output_within(child, Duration::from_secs(120));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named 'mcp'"),
        "the MCP Python SDK is missing: python3 -m pip install 'mcp==2.3.0' (.ci/run does)"
    );
    assert!(
        out.status.success(),
        "scenario {name} failed ({}):\n{}\n{stderr}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{name} ok")
    );
}

#[test]
fn handshake_tools_resources_and_bad_input() {
    scenario("handshake", &Env::new(), None);
}

#[test]
fn the_second_agent_is_told_who_holds_the_key() {
    scenario("busy", &Env::new(), None);
}

#[test]
fn a_wait_keeps_its_place_across_calls() {
    scenario("queue", &Env::new(), None);
}

#[test]
fn a_wait_that_would_deadlock_is_refused() {
    scenario("deadlock", &Env::new(), None);
}

#[test]
fn sigkill_of_an_agent_frees_its_locks_at_once() {
    scenario("killed", &Env::new(), None);
}

#[test]
fn a_session_that_ends_releases_its_locks_as_exited() {
    scenario("session_end", &Env::new(), None);
}

#[test]
fn a_forced_lock_is_reported_lost() {
    scenario("lost", &Env::new(), None);
}

#[test]
fn over_a_server_the_lease_ends_a_killed_session() {
    let env = Env::new();
    let served = Served::start(&env, &[]);
    // The agents reach the store only through the server.
    let agents = Env::new();
    scenario("remote_killed", &agents, Some(&served));
}

#[test]
fn a_viewer_token_cannot_take_locks() {
    let env = Env::new();
    let out = env.run(&["token", "create", "--name", "viewer", "--role", "viewer"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let served = Served::start(&env, &[]);
    scenario_with(
        "forbidden",
        &Env::new(),
        Some(&served),
        &[("LOCKSMITH_TOKEN", &token)],
    );
}
