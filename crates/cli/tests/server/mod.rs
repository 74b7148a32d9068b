//! The command line against `locksmith serve`: the same output shapes and
//! exit codes as on the embedded store, `run` over HTTP, and the server's
//! own start and stop.

mod hosts;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};
use serde_json::Value;

use crate::common::{Env, code, output_within, stderr};

/// A `locksmith serve` child on a free loopback port over the env's store.
pub(crate) struct Served {
    child: Child,
    pub(crate) url: String,
}

impl Served {
    pub(crate) fn start(env: &Env, extra: &[&str]) -> Served {
        let mut args = vec![
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--sweep-interval",
            "200ms",
        ];
        args.extend_from_slice(extra);
        let mut child = env
            .cmd(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let url = first
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("first line: {first:?}"))
            .to_string();
        assert!(
            url.starts_with("http://127.0.0.1:") && !url.ends_with(":0"),
            "{url}"
        );
        Served { child, url }
    }

    /// `locksmith ARGS` against this server, from a folder of its own (so
    /// that nothing can reach the server's file but the server).
    pub(crate) fn cmd(&self, client: &Env, args: &[&str]) -> Command {
        let mut c = client.cmd(args);
        c.env("LOCKSMITH_SERVER", &self.url);
        c
    }

    /// Stops the server and returns its log.
    fn stop_with_log(mut self) -> (std::process::ExitStatus, String) {
        kill_process(Pid::from_child(&self.child), Signal::TERM).unwrap();
        let mut log = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            use std::io::Read;
            e.read_to_string(&mut log).unwrap();
        }
        (self.child.wait().unwrap(), log)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `run -l job --ttl TTL` over the server, with a CMD that writes TERM to
/// the returned file when it gets SIGTERM, and runs until then.
fn run_trapping_term(served: &Served, client: &Env, ttl: &str) -> (Child, std::path::PathBuf) {
    let termed = client.file("termed");
    let script = format!(
        "trap 'echo TERM > {}; exit 143' TERM; while :; do sleep 0.05; done",
        termed.display()
    );
    let run = served
        .cmd(
            client,
            &["run", "-l", "job", "--ttl", ttl, "--", "sh", "-c", &script],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    (run, termed)
}

/// The JSON answer and exit code of one command.
fn json_of(mut c: Command) -> (i32, Value) {
    c.arg("--json");
    let out = c.output().unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (code(&out), v)
}

/// The shape of a JSON value: object keys and element shapes, not values.
fn shape(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
        Value::Array(a) => Value::Array(a.iter().take(1).map(shape).collect()),
        Value::Null => Value::Null,
        Value::Bool(_) => Value::String("bool".into()),
        Value::Number(_) => Value::String("number".into()),
        Value::String(_) => Value::String("string".into()),
    }
}

/// The same script of commands on the embedded store and through a server.
fn script(run: &dyn Fn(&[&str]) -> (i32, Value)) -> Vec<(String, i32, Value)> {
    let mut out = Vec::new();
    let mut step = |args: &[&str]| {
        let (c, v) = run(args);
        out.push((args.join(" "), c, v.clone()));
        v
    };
    let granted = step(&["acquire", "repo/acme", "--ttl", "30s", "--task", "42"]);
    let handle = granted["handle"].as_str().unwrap_or("missing").to_string();
    step(&["acquire", "repo/acme"]);
    step(&["acquire", "repo/acme", "--wait", "300ms"]);
    step(&["acquire", "bad//key"]);
    step(&["status", "repo/acme"]);
    step(&["list"]);
    step(&["renew", "repo/acme", "--handle", &handle]);
    step(&["release", "repo/acme", "--owner", "someone-else"]);
    step(&["release", "repo/acme", "--handle", &handle]);
    step(&["release", "repo/acme", "--handle", &handle]);
    step(&["renew", "repo/acme", "--handle", &handle]);
    step(&["acquire", "task/1", "task/2", "--ttl", "30s"]);
    step(&["force-release", "task/1", "--reason", "stuck"]);
    step(&["list", "--owner", "nobody"]);
    step(&["stats"]);
    out
}

#[test]
fn commands_answer_the_same_through_a_server() {
    let local = Env::new();
    let embedded = script(&|args| json_of(local.cmd(args)));
    let home = Env::new();
    let served = Served::start(&home, &["--log-level", "debug"]);
    let client = Env::new();
    let remote = script(&|args| json_of(served.cmd(&client, args)));
    assert_eq!(embedded.len(), remote.len());
    for ((what, c1, v1), (_, c2, v2)) in embedded.iter().zip(&remote) {
        assert_eq!(c1, c2, "exit code of `{what}`: embedded {v1}, server {v2}");
        assert_eq!(
            shape(v1),
            shape(v2),
            "JSON of `{what}`: embedded {v1}, server {v2}"
        );
    }
    // The codes are the documented ones.
    let codes: Vec<i32> = remote.iter().map(|r| r.1).collect();
    assert_eq!(
        codes,
        [0, 3, 4, 2, 0, 0, 0, 6, 0, 0, 7, 0, 0, 0, 0],
        "{remote:?}"
    );
    // Nothing reached the client's own folder.
    assert!(!client.file("locksmith.db").exists());
    let (status, log) = served.stop_with_log();
    assert!(status.success());
    // The log tells what happened, never a lease handle; its first line
    // says what a commit survives.
    assert!(log.contains("durability=\"normal\""), "{log}");
    assert!(log.contains("event=\"acquired\""), "{log}");
    assert!(!log.contains("lh1."), "a lease handle in the log: {log}");
}

#[test]
fn run_over_a_server_renews_and_stops_cmd_when_the_lock_is_lost() {
    let home = Env::new();
    let served = Served::start(&home, &[]);
    let client = Env::new();
    let out = served
        .cmd(
            &client,
            &[
                "run",
                "-l",
                "job",
                "--ttl",
                "1s",
                "--",
                "sh",
                "-c",
                "sleep 1.5; echo $LOCKSMITH_FENCE",
            ],
        )
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<u64>()
            .is_ok(),
        "the fence reached CMD"
    );
    // Lost while CMD runs: CMD is stopped and run exits 7.
    let (run, termed) = run_trapping_term(&served, &client, "3s");
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, st) = json_of(served.cmd(&client, &["status", "job"]));
        if st["free"] == Value::Bool(false) {
            break;
        }
        assert!(Instant::now() < end, "run never held the lock");
        std::thread::sleep(Duration::from_millis(20));
    }
    let forced = served
        .cmd(&client, &["force-release", "job", "--reason", "test"])
        .output()
        .unwrap();
    assert_eq!(code(&forced), 0, "{}", stderr(&forced));
    let out = run.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&termed).unwrap().trim(), "TERM");
}

#[test]
fn run_stops_cmd_when_the_server_cannot_be_reached_before_its_deadline() {
    let home = Env::new();
    let served = Served::start(&home, &[]);
    let client = Env::new();
    let (run, termed) = run_trapping_term(&served, &client, "2s");
    std::thread::sleep(Duration::from_millis(700));
    let started = Instant::now();
    // The server goes away for good: no renewal can succeed.
    drop(served);
    let out = run.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "stopped by its own deadline: {:?}",
        started.elapsed()
    );
    assert_eq!(std::fs::read_to_string(&termed).unwrap().trim(), "TERM");
    // The failing renewals were not silent.
    assert!(
        stderr(&out).contains("renewing the lock on job failed: cannot reach the locksmith server"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn serve_refuses_other_addresses_without_insecure_and_stops_on_sigterm() {
    let home = Env::new();
    let out = home.run(&["serve", "--listen", "0.0.0.0:0"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("--insecure"), "{}", stderr(&out));
    // The store's durability from the config file, told in the log line
    // that says where the server listens.
    std::fs::write(home.file("locksmith.toml"), "durability = \"full\"\n").unwrap();
    let served = Served::start(&home, &["--log-format", "json"]);
    let (status, log) = served.stop_with_log();
    assert!(status.success(), "{status:?}");
    let serving: Value = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["event"] == "listening")
        .unwrap_or_else(|| panic!("no listening line in {log}"));
    assert_eq!(serving["durability"], "full", "{log}");
}

#[test]
fn a_dead_server_is_a_clear_error_and_pid_binding_is_refused() {
    let env = Env::new();
    let out = env
        .cmd(&["list"])
        .env("LOCKSMITH_SERVER", "http://127.0.0.1:1")
        .output()
        .unwrap();
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("cannot reach the locksmith server"),
        "{}",
        stderr(&out)
    );
    let out = env
        .cmd(&["list"])
        .env("LOCKSMITH_SERVER", "localhost:7420")
        .output()
        .unwrap();
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let home = Env::new();
    let served = Served::start(&home, &[]);
    let pid = std::process::id().to_string();
    let out = served
        .cmd(&env, &["acquire", "k", "--pid", &pid])
        .output()
        .unwrap();
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("--ttl"), "{}", stderr(&out));
}

#[test]
fn tokens_decide_what_a_command_may_do_and_a_refusal_exits_8() {
    let home = Env::new();
    let make = |role: &str| {
        let out = home.run(&["token", "create", "--name", role, "--role", role]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let viewer = make("viewer");
    let client_token = make("client");
    let listed = home.run(&["token", "list", "--json"]);
    let text = String::from_utf8_lossy(&listed.stdout).to_string();
    assert!(
        text.contains("\"viewer\"") && !text.contains(&viewer),
        "{text}"
    );
    let served = Served::start(&home, &[]);
    let client = Env::new();
    let with = |token: Option<&str>, args: &[&str]| {
        let mut c = served.cmd(&client, args);
        match token {
            Some(t) => c.env("LOCKSMITH_TOKEN", t),
            None => c.env_remove("LOCKSMITH_TOKEN"),
        };
        c.output().unwrap()
    };
    let out = with(None, &["list"]);
    assert_eq!(code(&out), 8, "{}", stderr(&out));
    assert!(stderr(&out).contains("needs a token"), "{}", stderr(&out));
    assert_eq!(code(&with(Some("lst_wrong"), &["list"])), 8);
    assert_eq!(code(&with(Some(&viewer), &["list"])), 0);
    let out = with(Some(&viewer), &["acquire", "k"]);
    assert_eq!(code(&out), 8, "{}", stderr(&out));
    assert!(stderr(&out).contains("role"), "{}", stderr(&out));
    assert_eq!(
        code(&with(Some(&client_token), &["acquire", "k", "--ttl", "1m"])),
        0
    );
    let out = with(
        Some(&client_token),
        &["force-release", "k", "--reason", "x"],
    );
    assert_eq!(code(&out), 8, "{}", stderr(&out));
    // Revoked, and read again on SIGHUP.
    assert_eq!(code(&home.run(&["token", "revoke", "viewer"])), 0);
    kill_process(Pid::from_child(&served.child), Signal::HUP).unwrap();
    let end = Instant::now() + Duration::from_secs(5);
    while code(&with(Some(&viewer), &["list"])) != 8 {
        assert!(Instant::now() < end, "the revoked token still works");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn watch_follows_events_on_the_embedded_store_and_through_a_server() {
    for through_server in [false, true] {
        let home = Env::new();
        let served = through_server.then(|| Served::start(&home, &[]));
        let client = Env::new();
        let cmd = |args: &[&str]| match &served {
            Some(s) => s.cmd(&client, args),
            None => home.cmd(args),
        };
        let watcher = cmd(&["watch", "--prefix", "job/", "--count", "2", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(code(&cmd(&["acquire", "other"]).output().unwrap()), 0);
        assert_eq!(code(&cmd(&["acquire", "job/1"]).output().unwrap()), 0);
        assert_eq!(code(&cmd(&["release", "job/1"]).output().unwrap()), 0);
        let out = watcher.wait_with_output().unwrap();
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let kinds: Vec<(&str, &str)> = events
            .iter()
            .map(|e| (e["kind"].as_str().unwrap(), e["key"].as_str().unwrap()))
            .collect();
        assert_eq!(
            kinds,
            [("acquired", "job/1"), ("released", "job/1")],
            "server: {through_server}"
        );
    }
}

#[test]
fn watch_stops_at_once_on_sigterm_and_sigint_also_through_a_server() {
    for through_server in [false, true] {
        for signal in [Signal::TERM, Signal::INT] {
            let home = Env::new();
            let served = through_server.then(|| Served::start(&home, &[]));
            let client = Env::new();
            let mut cmd = match &served {
                Some(s) => s.cmd(&client, &["watch"]),
                None => home.cmd(&["watch"]),
            };
            let watcher = cmd
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            // Waiting for events, with none coming.
            std::thread::sleep(Duration::from_millis(700));
            let sent = Instant::now();
            kill_process(Pid::from_child(&watcher), signal).unwrap();
            let out = output_within(watcher, Duration::from_secs(10));
            assert_eq!(
                out.status.code(),
                Some(0),
                "server {through_server}, {signal:?}: {}",
                stderr(&out)
            );
            assert!(
                sent.elapsed() < Duration::from_secs(2),
                "server {through_server}, {signal:?}: stopped after {:?}",
                sent.elapsed()
            );
        }
    }
}

#[test]
fn the_config_files_token_is_sent_to_a_server_with_tokens() {
    let home = Env::new();
    let out = home.run(&["token", "create", "--name", "ci", "--role", "client"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let served = Served::start(&home, &[]);
    let client = Env::new();
    let acquire = |token: &str| {
        std::fs::write(
            client.file("locksmith.toml"),
            format!("server = \"{}\"\ntoken = \"{token}\"\n", served.url),
        )
        .unwrap();
        client
            .cmd(&["acquire", "cfg/t", "--ttl", "1m"])
            .env_remove("LOCKSMITH_SERVER")
            .env_remove("LOCKSMITH_TOKEN")
            .output()
            .unwrap()
    };
    let refused = acquire("lst_wrong");
    assert_eq!(code(&refused), 8, "{}", stderr(&refused));
    let taken = acquire(&token);
    assert_eq!(code(&taken), 0, "{}", stderr(&taken));
}

#[test]
fn the_server_and_token_can_come_from_the_config_file_and_the_token_is_redacted() {
    let home = Env::new();
    let served = Served::start(&home, &[]);
    let client = Env::new();
    std::fs::write(
        client.file("locksmith.toml"),
        format!(
            "server = \"{}\"\ntoken = \"lst_not_needed_here\"\n",
            served.url
        ),
    )
    .unwrap();
    let out = client
        .cmd(&["acquire", "cfg/k", "--ttl", "1m"])
        .env_remove("LOCKSMITH_SERVER")
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        !client.file("locksmith.db").exists(),
        "the embedded store was not used"
    );
    let (_, st) = json_of(served.cmd(&client, &["status", "cfg/k"]));
    assert_eq!(st["free"], Value::Bool(false));
    let (_, cfg) = json_of(client.cmd(&["config"]));
    assert_eq!(cfg["token"]["value"], "<redacted>");
    assert_eq!(cfg["server"]["value"], served.url.as_str());
}
