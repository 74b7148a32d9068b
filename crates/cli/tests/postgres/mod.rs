//! The command line on a PostgreSQL store (a real server the tests start):
//! the same commands and answers as on the embedded file, the store chosen
//! by URL with its password never shown, clear failures for a server that
//! is down, hung, not ours or newer, and process-bound locks freed on proof
//! of death on this machine.

use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use locksmith_testkit::pg::PgServer;

use crate::common::{Env, code, stderr};

/// An environment whose store is a fresh schema on the test server.
fn pg_env() -> (Env, String) {
    let url = PgServer::shared().fresh_schema_url();
    (Env::new(), url)
}

fn on(env: &Env, url: &str, owner: &str, args: &[&str]) -> Command {
    let mut c = env.cmd(args);
    c.env("LOCKSMITH_STORE", url).env("LOCKSMITH_OWNER", owner);
    c
}

fn json(env: &Env, url: &str, owner: &str, args: &[&str]) -> serde_json::Value {
    let out = on(env, url, owner, &[args, &["--json"]].concat())
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?}: {e}: {} {}",
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        )
    })
}

#[test]
fn two_owners_share_one_postgres_store() {
    let (env, url) = pg_env();
    let got = json(
        &env,
        &url,
        "agent-a",
        &["acquire", "repo/acme", "--ttl", "5m"],
    );
    let fence = got["fence"].as_u64().unwrap();
    assert!(got["handle"].as_str().unwrap().starts_with("lh1."));
    let busy = on(&env, &url, "agent-b", &["acquire", "repo/acme"])
        .output()
        .unwrap();
    assert_eq!(code(&busy), 3, "{}", stderr(&busy));
    assert!(stderr(&busy).contains("agent-a"), "{}", stderr(&busy));
    let status = json(&env, &url, "agent-b", &["status", "repo/acme"]);
    assert_eq!(status["holders"][0]["owner"], "agent-a");
    assert_eq!(status["holders"][0]["fence"].as_u64(), Some(fence));
    let out = on(&env, &url, "agent-a", &["release", "repo/acme"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let again = json(&env, &url, "agent-b", &["acquire", "repo/acme"]);
    assert!(again["fence"].as_u64().unwrap() > fence, "fences rise");
    let history = json(&env, &url, "agent-b", &["history", "repo/acme"]);
    let reasons: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["reason"].as_str())
        .collect();
    assert_eq!(reasons, ["completed"]);
    // The flag overrides the environment: the embedded store knows nothing of it.
    let local = on(
        &env,
        &url,
        "agent-b",
        &["--store", "sqlite:", "list", "--json"],
    )
    .output()
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&local.stdout).trim(), "[]");
}

#[test]
fn the_password_of_the_store_url_is_never_printed() {
    let env = Env::new();
    let url = "postgres://app:s3cret-pw@127.0.0.1:1/locks";
    let out = env
        .cmd(&["config"])
        .env("LOCKSMITH_STORE", url)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("postgres://app:***@127.0.0.1:1/locks"),
        "{text}"
    );
    assert!(!text.contains("s3cret"), "{text}");
    let out = env
        .cmd(&["list"])
        .env("LOCKSMITH_STORE", url)
        .output()
        .unwrap();
    assert_eq!(code(&out), 1);
    assert!(!stderr(&out).contains("s3cret"), "{}", stderr(&out));
}

#[test]
fn an_unknown_scheme_names_the_accepted_stores() {
    let env = Env::new();
    let out = env.run(&["--store", "mysql://db/locks", "list"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("postgres://"), "{}", stderr(&out));
    assert!(stderr(&out).contains("sqlite:"), "{}", stderr(&out));
}

/// A server that is down, one that accepts connections but never answers,
/// and wrong credentials: exit 1 within the connect timeout, with what to do.
#[test]
fn a_dead_or_hung_server_and_a_wrong_database_fail_clearly_and_soon() {
    let env = Env::new();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let out = env.run(&[
        "--store",
        &format!("postgres://postgres@127.0.0.1:{port}/postgres"),
        "acquire",
        "k",
    ]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot reach PostgreSQL"),
        "{}",
        stderr(&out)
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    // Accepts (the kernel completes the handshake) and never says a word.
    let mute = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = mute.local_addr().unwrap().port();
    let started = Instant::now();
    let out = env.run(&[
        "--store",
        &format!("postgres://postgres@127.0.0.1:{port}/postgres?connect_timeout=2"),
        "list",
    ]);
    let took = started.elapsed();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("did not answer"), "{}", stderr(&out));
    assert!(took < Duration::from_secs(8), "took {took:?}");
    drop(mute);

    let server = PgServer::shared();
    let base = server.url.trim_end_matches("/postgres");
    let out = env.run(&["--store", &format!("{base}/no_such_db"), "list"]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("createdb"), "{}", stderr(&out));
    let nobody = base.replacen("postgres@", "nobody@", 1);
    let out = env.run(&["--store", &format!("{nobody}/postgres"), "list"]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("refused the login"),
        "{}",
        stderr(&out)
    );
}

/// A name no other test uses.
fn unique() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    format!("{}_{}", std::process::id(), t.subsec_nanos())
}

#[test]
fn a_schema_of_another_program_or_of_a_newer_locksmith_is_left_untouched() {
    let server = PgServer::shared();
    let env = Env::new();
    let foreign = format!("f_{}", unique());
    server
        .psql(&format!(
            "CREATE SCHEMA {foreign}; CREATE TABLE {foreign}.orders (id int)"
        ))
        .unwrap();
    let url = format!("{}?schema={foreign}", server.url);
    let out = env.run(&["--store", &url, "acquire", "k"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("another program"), "{}", stderr(&out));
    let tables = server
        .psql(&format!(
            "SELECT string_agg(tablename, ',') FROM pg_tables WHERE schemaname = '{foreign}'"
        ))
        .unwrap();
    assert_eq!(tables, "orders", "nothing was added");

    let newer = format!("n_{}", unique());
    let url = format!("{}?schema={newer}", server.url);
    let out = env.run(&["--store", &url, "acquire", "k"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    server
        .psql(&format!(
            "UPDATE {newer}.meta SET v = '99' WHERE k = 'schema_version'"
        ))
        .unwrap();
    let out = env.run(&["--store", &url, "list"]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("newer locksmith"), "{}", stderr(&out));
    let held = server
        .psql(&format!("SELECT count(*) FROM {newer}.holds"))
        .unwrap();
    assert_eq!(held, "1", "the lock is still there");
}

/// `locksmith run` on PostgreSQL, SIGKILLed (its command dies with it):
/// a waiter on this machine gets the lock at once (proof of death), long
/// before the lease would end.
#[test]
fn a_killed_run_frees_its_lock_on_this_machine_at_once() {
    let (env, url) = pg_env();
    let mut run = on(
        &env,
        &url,
        "runner",
        &["run", "-l", "deploy", "--ttl", "10m", "--", "sleep", "60"],
    )
    .spawn()
    .unwrap();
    wait_until(&env, &url, "run to take the lock", |s| {
        s["holders"].as_array().is_some_and(|h| !h.is_empty())
    });
    let waiter = on(
        &env,
        &url,
        "next",
        &["acquire", "deploy", "--wait", "20s", "--json"],
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    wait_until(&env, &url, "the waiter to queue", |s| {
        s["waiters"].as_array().is_some_and(|w| !w.is_empty())
    });
    let killed = Instant::now();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(run.id() as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    run.wait().unwrap();
    let out = waiter.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(3), "took {took:?}");
    let h = json(&env, &url, "next", &["history", "deploy"]);
    assert!(
        h.as_array()
            .unwrap()
            .iter()
            .any(|e| e["reason"] == "dead_process"),
        "{h}"
    );
}

/// Polls the status of `deploy` until `cond` holds, for up to 20 s.
fn wait_until(env: &Env, url: &str, what: &str, cond: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond(&json(env, url, "watcher", &["status", "deploy"])) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A client whose wall clock is an hour off (Debian's `faketime`) neither
/// ends a lease early nor keeps one alive: leases run on the database's clock.
#[test]
fn a_client_an_hour_off_neither_expires_nor_extends_a_lease() {
    let faked = Command::new("faketime")
        .args(["-f", "+1h", "date", "+%s"])
        .output()
        .expect("faketime (apt-get install faketime)");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let shifted: u64 = String::from_utf8_lossy(&faked.stdout)
        .trim()
        .parse()
        .unwrap();
    assert!(shifted >= now + 3500, "faketime shifts the clock");
    let (env, url) = pg_env();
    let skewed = |offset: &str, owner: &str, args: &[&str]| {
        let mut c = Command::new("faketime");
        c.args(["-f", offset, env!("CARGO_BIN_EXE_locksmith")])
            .args(args)
            .env("LOCKSMITH_HOME", env.home.path())
            .env("LOCKSMITH_STORE", &url)
            .env("LOCKSMITH_OWNER", owner)
            .stdin(std::process::Stdio::null());
        c.output().unwrap()
    };
    let held = on(&env, &url, "steady", &["acquire", "k", "--ttl", "60s"])
        .output()
        .unwrap();
    assert_eq!(code(&held), 0, "{}", stderr(&held));
    // An hour ahead: the 60 s lease is not over for it.
    let ahead = skewed("+1h", "ahead", &["acquire", "k"]);
    assert_eq!(code(&ahead), 3, "{}", stderr(&ahead));
    let behind = skewed("-1h", "behind", &["acquire", "k"]);
    assert_eq!(code(&behind), 3, "{}", stderr(&behind));
    // A 2 s lease taken an hour ahead ends after 2 s, not after an hour.
    let short = skewed("+1h", "ahead", &["acquire", "brief", "--ttl", "2s"]);
    assert_eq!(code(&short), 0, "{}", stderr(&short));
    let lease = json(&env, &url, "steady", &["status", "brief"]);
    let left = lease["holders"][0]["expires_in"].as_u64().unwrap();
    assert!(left <= 2_000, "lease left {left} ms");
    std::thread::sleep(Duration::from_millis(2_300));
    let next = on(&env, &url, "steady", &["acquire", "brief"])
        .output()
        .unwrap();
    assert_eq!(code(&next), 0, "{}", stderr(&next));
}

/// Two `locksmith serve` processes on one PostgreSQL store are one service:
/// a lock taken through one is busy through the other, and a waiter parked
/// in one is handed the lock the moment it is released through the other.
#[test]
fn two_servers_on_one_postgres_store_are_one_service() {
    let (env, url) = pg_env();
    let a = crate::server::Served::start(&env, &["--store", &url]);
    let b = crate::server::Served::start(&env, &["--store", &url]);
    let client = Env::new();
    let run = |s: &crate::server::Served, owner: &str, args: &[&str]| {
        s.cmd(&client, args)
            .env("LOCKSMITH_OWNER", owner)
            .output()
            .unwrap()
    };
    let got = run(&a, "agent-a", &["acquire", "shared/k", "--ttl", "60s"]);
    assert_eq!(code(&got), 0, "{}", stderr(&got));
    let busy = run(&b, "agent-b", &["acquire", "shared/k"]);
    assert_eq!(code(&busy), 3, "{}", stderr(&busy));
    assert!(stderr(&busy).contains("agent-a"), "{}", stderr(&busy));
    let waiter = b
        .cmd(&client, &["acquire", "shared/k", "--wait", "20s", "--json"])
        .env("LOCKSMITH_OWNER", "agent-c")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = run(&a, "watcher", &["list", "--waiting", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if v.as_array().is_some_and(|w| !w.is_empty()) {
            break;
        }
        assert!(Instant::now() < deadline, "the waiter never queued");
        std::thread::sleep(Duration::from_millis(50));
    }
    let released = Instant::now();
    let out = run(&a, "agent-a", &["release", "shared/k"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = waiter.wait_with_output().unwrap();
    let took = released.elapsed();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(took < Duration::from_secs(2), "handed over after {took:?}");
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["owner"], "agent-c");
}
