//! The `locksmith` binary as scripts use it: every exit code, `--json`
//! output, and waiting across real processes, each test on its own store.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;

#[test]
fn acquire_json_has_the_promised_fields_and_release_frees() {
    let env = Env::new();
    let g = env.json(&["acquire", "repo/acme", "--ttl", "30s", "--task", "42"]);
    for field in ["key", "fence", "handle", "owner", "expires_at"] {
        assert!(g.get(field).is_some(), "missing {field} in {g}");
    }
    assert_eq!(g["key"], "repo/acme");
    assert_eq!(g["owner"], "tester");
    // Milliseconds since the Unix epoch, as in every other JSON answer.
    let expires = g["expires_at"].as_u64().expect("expires_at in ms");
    let none = env.json(&["acquire", "task/1"]);
    assert!(none["expires_at"].is_null(), "no lease: {none}");

    let st = env.json(&["status", "repo/acme"]);
    // The deadline is kept on the monotonic clock and shown on the wall
    // clock at the moment of each answer: the two may differ by rounding.
    let shown = st["holders"][0]["expires_at"].as_u64().unwrap();
    assert!(shown.abs_diff(expires) <= 5, "{shown} vs {expires}");
    let renewed = env.json(&["renew", "repo/acme", "--owner", "tester"]);
    assert!(renewed["locks"][0]["expires_at"].as_u64().unwrap() >= expires);
    assert_eq!(st["holders"][0]["task"], "42");
    assert_eq!(st["holders"][0]["health"], "healthy");
    assert!(
        st["holders"][0].get("handle").is_none(),
        "status must not show handles"
    );

    let handle = g["handle"].as_str().unwrap();
    let r = env.json(&["release", "repo/acme", "--handle", handle]);
    assert_eq!(r["status"], "released");
    let again = env.run(&["release", "repo/acme", "--handle", handle]);
    assert_eq!(
        code(&again),
        0,
        "releasing twice is fine: {}",
        stderr(&again)
    );
    assert_eq!(env.json(&["status", "repo/acme"])["free"], true);
}

#[test]
fn several_keys_come_in_one_locks_array() {
    let env = Env::new();
    let g = env.json(&["acquire", "a/1", "a/2", "--ttl", "10s"]);
    let locks = g["locks"].as_array().expect("locks array");
    assert_eq!(locks.len(), 2);
    assert!(locks[1]["fence"].as_u64() > locks[0]["fence"].as_u64());
    for l in locks {
        for field in ["key", "fence", "handle", "owner", "expires_at"] {
            assert!(l.get(field).is_some(), "missing {field} in {l}");
        }
    }
}

#[test]
fn exit_codes_busy_invalid_not_holder_lost() {
    let env = Env::new();
    assert_eq!(code(&env.run(&["acquire", "k", "--ttl", "5s"])), 0);
    let busy = env.run(&["acquire", "k", "--owner", "other"]);
    assert_eq!(code(&busy), 3);
    assert!(
        stderr(&busy).contains("held by tester"),
        "{}",
        stderr(&busy)
    );
    let busy_json = env.json(&["acquire", "k", "--owner", "other"]);
    assert_eq!(busy_json["error"], "busy");
    assert_eq!(busy_json["holders"][0]["owner"], "tester");

    let bad_key = env.run(&["acquire", "a//b"]);
    assert_eq!(code(&bad_key), 2);
    assert!(stderr(&bad_key).contains("segment 2 is empty"));
    assert_eq!(code(&env.run(&["acquire", "x", "--ttl", "soon"])), 2);
    assert_eq!(code(&env.run(&["acquire", "x", "--wait", "never"])), 2);
    assert_eq!(code(&env.run(&["acquire"])), 2);
    assert_eq!(
        code(&env.run(&["acquire", "x", "--force"])),
        2,
        "--force needs --reason"
    );
    assert_eq!(code(&env.run(&["no-such-command"])), 2);

    let wrong = env.run(&["release", "k", "--owner", "other"]);
    assert_eq!(code(&wrong), 6);
    assert_eq!(
        env.json(&["status", "k"])["holders"][0]["owner"],
        "tester",
        "wrong owner changed nothing"
    );

    assert_eq!(code(&env.run(&["release", "k"])), 0);
    let lost = env.run(&["renew", "k"]);
    assert_eq!(code(&lost), 7);
    assert!(stderr(&lost).contains("completed"), "{}", stderr(&lost));
}

#[test]
fn wait_times_out_with_code_4_and_leaves_no_waiter() {
    let env = Env::new();
    env.run(&["acquire", "k"]);
    let started = Instant::now();
    let out = env.run(&["acquire", "k", "--owner", "other", "--wait", "300ms"]);
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        env.json(&["list", "--waiting"]).as_array().unwrap().len(),
        0
    );
    let hist = env.json(&["history", "k", "--kind", "wait_timed_out"]);
    assert_eq!(hist.as_array().unwrap().len(), 1);
}

fn wait_for_waiters(env: &Env, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while env.json(&["list", "--waiting"]).as_array().unwrap().len() < n {
        assert!(Instant::now() < deadline, "waiter never queued");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn deadlock_is_refused_with_code_5_naming_the_cycle() {
    let env = Env::new();
    env.run(&["acquire", "k1", "--owner", "A"]);
    env.run(&["acquire", "k2", "--owner", "B"]);
    let a_waits = env.spawn(&["acquire", "k2", "--owner", "A", "--wait", "30s", "--json"]);
    wait_for_waiters(&env, 1);
    let out = env.run(&["acquire", "k1", "--owner", "B", "--wait", "10s", "--json"]);
    assert_eq!(code(&out), 5, "{}", String::from_utf8_lossy(&out.stdout));
    let body: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(body["error"], "deadlock");
    assert_eq!(body["cycle"], serde_json::json!(["B", "A", "B"]));
    // B gives way; A's wait completes.
    assert_eq!(code(&env.run(&["release", "k2", "--owner", "B"])), 0);
    let a = a_waits.wait_with_output().unwrap();
    assert_eq!(code(&a), 0, "{}", stderr(&a));
    let g: Value = serde_json::from_slice(&a.stdout).unwrap();
    assert_eq!(g["key"], "k2");
}

#[test]
fn a_waiting_process_gets_the_lock_right_after_release() {
    let env = Env::new();
    env.run(&["acquire", "hand/over"]);
    let waiter = env.spawn(&[
        "acquire",
        "hand/over",
        "--owner",
        "next",
        "--wait",
        "30s",
        "--json",
    ]);
    wait_for_waiters(&env, 1);
    let place = env.json(&["list", "--waiting"]);
    assert_eq!(place[0]["position"], 1);
    assert_eq!(place[0]["owner"], "next");
    let released = Instant::now();
    env.run(&["release", "hand/over"]);
    let out = waiter.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // Woken by notification, not by the one-second re-check.
    assert!(
        released.elapsed() < Duration::from_millis(900),
        "took {:?}",
        released.elapsed()
    );
    assert_eq!(
        env.json(&["status", "hand/over"])["holders"][0]["owner"],
        "next"
    );
}

#[test]
fn path_keys_are_canonical_directories() {
    let env = Env::new();
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("repo");
    std::fs::create_dir(&sub).unwrap();
    let twisted = format!("{}/repo/../repo/.", dir.path().display());
    let g = env.json(&["acquire", "--path", &twisted]);
    let canon = sub.canonicalize().unwrap();
    assert_eq!(g["key"], canon.to_str().unwrap());
    let st = env.json(&["status", "--path", sub.to_str().unwrap()]);
    assert_eq!(st["free"], false);
    let missing = env.run(&["acquire", "--path", "/no/such/dir"]);
    assert_eq!(code(&missing), 2);
}

#[test]
fn force_release_needs_a_reason_and_is_recorded() {
    let env = Env::new();
    env.run(&["acquire", "k", "--owner", "stuck"]);
    assert_eq!(code(&env.run(&["force-release", "k"])), 2);
    assert_eq!(
        code(&env.run(&["force-release", "k", "--reason", "agent crashed"])),
        0
    );
    let h = env.json(&["history", "k", "--kind", "forced"]);
    assert_eq!(h[0]["reason"], "forced");
    assert_eq!(h[0]["detail"]["reason"], "agent crashed");
    let s = env.json(&["stats"]);
    assert_eq!(s["releases"]["forced"], 1);
}

#[test]
fn a_foreign_file_is_refused_with_code_1_and_left_untouched() {
    let env = Env::new();
    let db = env.home.path().join("locksmith.db");
    std::fs::write(&db, b"these are somebody's notes, not a database\n").unwrap();
    let out = env.run(&["acquire", "k"]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("not a locksmith database"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read(&db).unwrap(),
        b"these are somebody's notes, not a database\n"
    );
    assert!(!Path::new(&format!("{}-wal", db.display())).exists());
}

#[test]
fn config_shows_sources_and_example_parses() {
    let env = Env::new();
    std::fs::write(
        env.home.path().join("locksmith.toml"),
        "stale_after = \"10m\"\n",
    )
    .unwrap();
    let out = env
        .cmd(&["config", "--json"])
        .env("LOCKSMITH_HISTORY_RETENTION", "7d")
        .output()
        .unwrap();
    let cfg: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cfg["stale_after"]["value"], "10m");
    assert!(
        cfg["stale_after"]["source"]
            .as_str()
            .unwrap()
            .starts_with("file ")
    );
    assert_eq!(cfg["history_retention"]["value"], "7d");
    assert_eq!(
        cfg["history_retention"]["source"],
        "env LOCKSMITH_HISTORY_RETENTION"
    );
    assert_eq!(cfg["durability"]["source"], "default");
    let bad = env
        .cmd(&["config"])
        .env("LOCKSMITH_STALE_AFTER", "later")
        .output()
        .unwrap();
    assert_eq!(code(&bad), 2);
    assert!(
        stderr(&bad).contains("LOCKSMITH_STALE_AFTER"),
        "{}",
        stderr(&bad)
    );
    // A caller cannot make a lock stale by choosing a moment of silence.
    let too_short = env
        .cmd(&["acquire", "fresh", "--steal-stale"])
        .env("LOCKSMITH_STALE_AFTER", "1s")
        .output()
        .unwrap();
    assert_eq!(code(&too_short), 2);
    assert!(
        stderr(&too_short).contains("at least 1m"),
        "{}",
        stderr(&too_short)
    );
    let example = env.run(&["config", "--example"]);
    let text = String::from_utf8(example.stdout).unwrap();
    let uncommented: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("# ").filter(|l| l.contains(" = ")))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(env.home.path().join("locksmith.toml"), uncommented).unwrap();
    assert_eq!(
        code(&env.run(&["config"])),
        0,
        "the example, uncommented, is a valid file"
    );
}

#[test]
fn a_stuck_writer_gives_a_clear_busy_error_after_the_busy_timeout() {
    let env = Env::new();
    assert_eq!(code(&env.run(&["acquire", "k"])), 0);
    // Play a process stopped in the middle of a write transaction.
    let gate = std::fs::File::open(env.home.path().join("locksmith.db-gate")).unwrap();
    rustix::fs::flock(&gate, rustix::fs::FlockOperation::LockExclusive).unwrap();
    let started = Instant::now();
    let out = env
        .cmd(&["acquire", "k2"])
        .env("LOCKSMITH_BUSY_TIMEOUT", "500ms")
        .output()
        .unwrap();
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("write gate"), "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(gate);
    assert_eq!(
        code(&env.run(&["acquire", "k2"])),
        0,
        "nothing was left half done"
    );
}

#[test]
fn processes_creating_a_new_store_at_the_same_moment_all_succeed() {
    for round in 0..3 {
        let env = Env::new();
        let children: Vec<_> = (0..8)
            .map(|i| env.spawn(&["acquire", &format!("fresh/{round}/{i}")]))
            .collect();
        for c in children {
            let out = c.wait_with_output().unwrap();
            assert_eq!(code(&out), 0, "{}", stderr(&out));
        }
        assert_eq!(env.json(&["list"]).as_array().unwrap().len(), 8);
    }
}

/// A closed stdout is an error, never a panic (exit 101); a grant that could
/// not be reported is released again, so no lock is left that nobody knows of.
#[test]
fn a_closed_stdout_is_an_error_and_releases_the_unreported_grant() {
    let env = Env::new();
    let run_closed = |args: &[&str]| {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        env.cmd(args).stdout(writer).output().unwrap()
    };
    let out = run_closed(&["acquire", "k", "--ttl", "1h"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("released"), "{}", stderr(&out));
    let st = env.json(&["status", "k"]);
    assert_eq!(st["free"], true, "{st}");
    let hist = env.json(&["history", "k", "--kind", "released"]);
    assert_eq!(hist[0]["reason"], "failed", "{hist}");
    // A listing into a closed pipe fails cleanly too.
    env.run(&["acquire", "other"]);
    let out = run_closed(&["list"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
}

/// Small answers that used to mislead: a cap of zero, `--limit 0`, a filter
/// that matches nothing, and another lock's handle.
#[test]
fn limits_filters_and_handles_say_what_they_mean() {
    let env = Env::new();
    let zero = env.run(&["acquire", "capped", "--max-hold", "0"]);
    assert_eq!(code(&zero), 2, "{}", stderr(&zero));
    assert!(stderr(&zero).contains("max_hold"), "{}", stderr(&zero));
    for i in 0..60 {
        let k = format!("many/{i}");
        env.run(&["acquire", &k]);
        env.run(&["release", &k]);
    }
    let all = env.json(&["history", "--limit", "0"]);
    assert!(
        all.as_array().unwrap().len() >= 120,
        "{}",
        all.as_array().unwrap().len()
    );
    env.run(&["acquire", "held"]);
    let none = env.run(&["list", "--owner", "nobody-at-all"]);
    assert_eq!(code(&none), 0);
    assert!(String::from_utf8_lossy(&none.stdout).contains("no locks match"));
    let mine = env.json(&["acquire", "mine"]);
    let handle = mine["handle"].as_str().unwrap();
    let other = env.run(&["release", "held", "--handle", handle]);
    assert_eq!(code(&other), 6, "{}", stderr(&other));
    assert_eq!(env.json(&["status", "held"])["free"], false);
}

/// `acquire --pid P` binds the lock to P and shows P as its process; once P
/// is gone the next acquirer takes the lock over as `dead_process`.
#[test]
fn a_lock_bound_to_another_process_shows_it_and_dies_with_it() {
    let env = Env::new();
    let mut sleeper = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let pid = sleeper.id().to_string();
    let out = env.run(&["acquire", "bound", "--pid", &pid]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let st = env.json(&["status", "bound"]);
    assert_eq!(st["holders"][0]["pid"].to_string(), pid, "{st}");
    let busy = env.run(&["acquire", "bound", "--owner", "other"]);
    assert_eq!(code(&busy), 3);
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
    let taken = env.run(&["acquire", "bound", "--owner", "other"]);
    assert_eq!(code(&taken), 0, "{}", stderr(&taken));
    let hist = env.json(&["history", "bound", "--kind", "reaped"]);
    assert_eq!(hist[0]["reason"], "dead_process", "{hist}");
}

/// With `--json`, a usage error is one JSON object too, with exit code 2.
#[test]
fn usage_errors_are_json_with_json() {
    let env = Env::new();
    let out = env.run(&["--json", "acquire", "k", "--no-such-flag"]);
    assert_eq!(code(&out), 2);
    let body: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(body["error"], "invalid");
    assert_eq!(body["exit_code"], 2);
    assert!(
        body["message"].as_str().unwrap().contains("--no-such-flag"),
        "{body}"
    );
}

#[test]
fn force_release_with_the_fence_seen_ends_nothing_newer() {
    let env = Env::new();
    let first = env.json(&["acquire", "k", "--ttl", "1m"]);
    let old = first["fence"].as_u64().unwrap();
    assert_eq!(code(&env.run(&["release", "k"])), 0);
    let second = env.json(&["acquire", "k", "--ttl", "1m"]);
    let new = second["fence"].as_u64().unwrap();
    let out = env.run(&[
        "force-release",
        "k",
        "--reason",
        "stuck",
        "--fence",
        &old.to_string(),
    ]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(stderr(&out).contains("newer tenure"), "{}", stderr(&out));
    assert_eq!(env.json(&["status", "k"])["holders"][0]["fence"], new);
    let out = env.run(&[
        "force-release",
        "k",
        "--reason",
        "stuck",
        "--fence",
        &new.to_string(),
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(env.json(&["status", "k"])["free"], true);
    // Who forced, and why, is in the history.
    let forced = env.json(&["history", "k", "--kind", "forced"]);
    assert_eq!(forced[0]["detail"]["by"], "tester", "{forced}");
    assert_eq!(forced[0]["detail"]["reason"], "stuck", "{forced}");
}

#[test]
fn stats_show_waits_and_the_success_rate() {
    let env = Env::new();
    assert_eq!(
        code(&env.run(&["acquire", "k", "--ttl", "1s", "--owner", "a"])),
        0
    );
    // b waits until a's lease runs out, about a second.
    let b = env.run(&[
        "acquire", "k", "--wait", "10s", "--ttl", "1m", "--owner", "b",
    ]);
    assert_eq!(code(&b), 0, "{}", stderr(&b));
    let c = env.run(&["acquire", "k", "--wait", "200ms", "--owner", "c"]);
    assert_eq!(code(&c), 4);
    let s = env.json(&["stats"]);
    assert_eq!(s["waits"]["count"], 1, "{s}");
    let max = s["waits"]["max_ms"].as_u64().unwrap();
    assert!((300..=9000).contains(&max), "{s}");
    assert_eq!(s["waits"]["p99_ms"].as_u64(), Some(max));
    let rate = s["success_rate"].as_f64().unwrap();
    assert!((rate - 2.0 / 3.0).abs() < 1e-9, "{s}");
    let text = String::from_utf8(env.run(&["stats"]).stdout).unwrap();
    assert!(text.contains("success rate    66.7 %"), "{text}");
    assert!(text.contains("waited          1 requests"), "{text}");
}

#[test]
fn a_full_disk_is_named_and_loses_nothing() {
    let Some(disk) = locksmith_testkit::disk::SmallDisk::mount() else {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    };
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_locksmith"))
            .args(args)
            .env("LOCKSMITH_HOME", disk.path())
            .env("LOCKSMITH_OWNER", "tester")
            .output()
            .unwrap()
    };
    assert_eq!(code(&run(&["acquire", "kept", "--ttl", "1h"])), 0);
    let fill = disk.fill();
    let out = run(&["acquire", "new", "--ttl", "1h"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("is full"), "{}", stderr(&out));
    assert!(stderr(&out).contains("Free some space"), "{}", stderr(&out));
    // With space again, the lock taken before is still there, and nothing else.
    std::fs::remove_file(&fill).unwrap();
    let out = run(&["list", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let held: Value = serde_json::from_slice(&out.stdout).unwrap();
    let keys: Vec<&str> = held
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["kept"]);
}

#[test]
fn commands_leave_a_short_log_for_the_next_command_and_lose_nothing() {
    // A command leaves a short write-ahead log in place when it exits (no
    // checkpoint), and checkpoints a long one, so that commands alone never
    // let the log grow (the next command's start reads all of it). Every
    // grant and release is kept.
    let env = Env::new();
    let wal = || std::fs::metadata(env.file("locksmith.db-wal")).map(|m| m.len());
    let (mut longest, mut kept, mut removed) = (0, 0, 0);
    let mut after = || match wal() {
        Ok(len) => {
            kept += 1;
            longest = longest.max(len);
        }
        Err(_) => removed += 1,
    };
    for i in 0..100 {
        let key = format!("log/k{i}");
        assert_eq!(code(&env.run(&["acquire", &key])), 0, "acquire {key}");
        after();
        assert_eq!(code(&env.run(&["release", &key])), 0, "release {key}");
        after();
        let run = env.run(&["run", "-l", &key, "--", "true"]);
        assert_eq!(code(&run), 0, "run {key}: {}", stderr(&run));
        after();
    }
    // 300 commands write about 1000 pages: the log is checkpointed (and
    // removed) a few times, by the command that found it over 512 KiB, and
    // left in place by all the others.
    assert!(
        (1..=10).contains(&removed),
        "removed {removed} times, kept {kept}"
    );
    assert!(
        longest <= 512 * 1024 + 16 * (2048 + 24),
        "log of {longest} bytes"
    );
    let events = env.json(&["history", "--limit", "0"]);
    assert_eq!(events.as_array().unwrap().len(), 400);
    assert_eq!(env.json(&["list"]).as_array().unwrap().len(), 0);
}

#[test]
fn two_spellings_of_one_name_are_one_lock_and_invisible_characters_are_refused() {
    let env = Env::new();
    // "café" with the precomposed letter, then with a combining accent.
    let g = env.json(&["acquire", "docs/caf\u{e9}", "--ttl", "30s"]);
    assert_eq!(g["key"], "docs/caf\u{e9}");
    let other = env.run(&["acquire", "docs/cafe\u{301}", "--owner", "other"]);
    assert_eq!(code(&other), 3, "{}", stderr(&other));
    assert_eq!(
        env.json(&["status", "docs/cafe\u{301}"])["holders"][0]["owner"],
        "tester"
    );
    assert_eq!(code(&env.run(&["release", "docs/cafe\u{301}"])), 0);
    assert_eq!(env.json(&["status", "docs/caf\u{e9}"])["free"], true);

    let hidden = env.run(&["acquire", "docs/a\u{200b}b"]);
    assert_eq!(code(&hidden), 2);
    assert!(stderr(&hidden).contains("U+200B"), "{}", stderr(&hidden));
    let bidi = env.run(&["acquire", "docs/\u{202e}kcol"]);
    assert_eq!(code(&bidi), 2);
    assert!(env.json(&["list"]).as_array().unwrap().is_empty());
}

#[test]
fn a_handle_comes_from_standard_input_or_from_run_not_only_from_argv() {
    use std::io::Write;
    let env = Env::new();
    let g = env.json(&["acquire", "h/k", "--ttl", "30s"]);
    let handle = g["handle"].as_str().unwrap().to_string();
    // On standard input, as another owner (by name it would be refused).
    let mut child = env
        .cmd(&["release", "h/k", "--handle", "-"])
        .env("LOCKSMITH_OWNER", "someone-else")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{handle}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(env.json(&["status", "h/k"])["free"], true);

    // A command under `run` renews and releases its own key with the handle
    // run gave it, whatever owner name it runs under.
    let bin = env!("CARGO_BIN_EXE_locksmith");
    let script = format!(
        "LOCKSMITH_OWNER=someone-else {bin} renew h/k && LOCKSMITH_OWNER=someone-else {bin} release h/k"
    );
    let run = env.run(&["run", "-l", "h/k", "--", "sh", "-c", &script]);
    assert_eq!(code(&run), 0, "{}", stderr(&run));
    assert_eq!(env.last_reason("h/k"), "completed");

    // Another key is not the command's: it is proven by owner name.
    assert_eq!(code(&env.run(&["acquire", "h/other", "--ttl", "30s"])), 0);
    let script = format!("LOCKSMITH_OWNER=someone-else {bin} release h/other");
    let run = env.run(&["run", "-l", "h/k", "--", "sh", "-c", &script]);
    assert_eq!(code(&run), 6, "{}", stderr(&run));
    assert_eq!(
        env.json(&["status", "h/other"])["holders"][0]["owner"],
        "tester"
    );
}

/// `locksmith ARGS` on `env`'s store as the user `nobody` (uid 65534).
fn as_nobody(env: &Env, args: &[&str]) -> std::process::Output {
    as_user(env, 65534, 65534, "nobody-user", args)
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_store_whose_folder_cannot_be_written_is_read_and_never_written() {
    use std::os::unix::fs::PermissionsExt;
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: acting as another user needs root (CI runs as root)");
        return;
    }
    let env = Env::new();
    let home = env.home.path();
    assert_eq!(code(&env.run(&["acquire", "ro/a", "--ttl", "1h"])), 0);
    // A long-running command (sweep) checkpoints and removes the WAL when
    // it closes the store: the database file alone holds everything.
    assert_eq!(code(&env.run(&["sweep", "--once"])), 0);
    assert!(!env.file("locksmith.db-wal").exists());
    let chown = |p: &Path| {
        rustix::fs::chown(
            p,
            Some(rustix::process::Uid::from_raw(65534)),
            Some(rustix::process::Gid::from_raw(65534)),
        )
        .unwrap()
    };
    chown(home);
    for name in names(home) {
        chown(&home.join(name));
    }
    let mode = |m: u32| std::fs::set_permissions(home, std::fs::Permissions::from_mode(m)).unwrap();
    mode(0o555);
    let before = (
        names(home),
        std::fs::read(env.file("locksmith.db")).unwrap(),
    );

    let list = as_nobody(&env, &["list", "--json"]);
    assert_eq!(code(&list), 0, "{}", stderr(&list));
    let locks: Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(locks[0]["key"], "ro/a", "{locks}");
    let hist = as_nobody(&env, &["history", "ro/a"]);
    assert_eq!(code(&hist), 0, "{}", stderr(&hist));
    let take = as_nobody(&env, &["acquire", "ro/b"]);
    assert_eq!(code(&take), 1);
    assert!(stderr(&take).contains("cannot write"), "{}", stderr(&take));
    let after = (
        names(home),
        std::fs::read(env.file("locksmith.db")).unwrap(),
    );
    assert!(before == after, "a read-only store was changed");

    // Once a command has written where it could, its WAL and -shm stay, and
    // the store is read through them.
    mode(0o755);
    assert_eq!(
        code(&as_nobody(&env, &["acquire", "ro/b", "--ttl", "1h"])),
        0
    );
    mode(0o555);
    let list = as_nobody(&env, &["list", "--json"]);
    assert_eq!(code(&list), 0, "{}", stderr(&list));
    let locks: Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(locks.as_array().unwrap().len(), 2, "{locks}");
    mode(0o755);
}

/// `locksmith ARGS` on `env`'s store as user `uid` whose only group is `gid`.
fn as_user(env: &Env, uid: u32, gid: u32, owner: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new("setpriv")
        .args([
            format!("--reuid={uid}"),
            format!("--regid={gid}"),
            format!("--groups={gid}"),
        ])
        .arg(env!("CARGO_BIN_EXE_locksmith"))
        .args(args)
        .env("LOCKSMITH_HOME", env.home.path())
        .env("LOCKSMITH_OWNER", owner)
        .env("HOME", env.home.path())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("setpriv (util-linux) runs")
}

fn mode_of(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// A home with a store shared by a group ([`group_store`]); `None` (the
/// test is skipped) unless the tests run as root, who can act as others.
fn group_env() -> Option<Env> {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: acting as other users needs root (CI runs as root)");
        return None;
    }
    let env = Env::new();
    group_store(&env);
    Some(env)
}

/// The documented set-up of a store shared by a group: a folder of the
/// group (gid 40000, owned by uid 40001), setgid, 2770.
fn group_store(env: &Env) {
    use std::os::unix::fs::PermissionsExt;
    let home = env.home.path();
    rustix::fs::chown(
        home,
        Some(rustix::process::Uid::from_raw(40001)),
        Some(rustix::process::Gid::from_raw(40000)),
    )
    .unwrap();
    std::fs::set_permissions(home, std::fs::Permissions::from_mode(0o2770)).unwrap();
}

#[test]
fn by_owner_name_only_the_os_user_that_took_a_lock_or_root_may_end_it() {
    let Some(env) = group_env() else { return };
    // Both users run their workers under one owner name.
    let alice = |args: &[&str]| as_user(&env, 40001, 40000, "worker", args);
    let bob = |args: &[&str]| as_user(&env, 40002, 40000, "worker", args);
    let ok = |out: std::process::Output| {
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        out
    };
    let g: Value =
        serde_json::from_slice(&ok(alice(&["acquire", "team/a", "--ttl", "1h", "--json"])).stdout)
            .unwrap();
    let handle = g["handle"].as_str().unwrap();
    ok(alice(&["acquire", "team/b", "--ttl", "1h"]));

    // Another user who types the owner name is refused and changes nothing.
    for args in [["release", "team/a"], ["renew", "team/a"]] {
        let out = bob(&args);
        assert_eq!(code(&out), 6, "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("another OS user (uid 40001)"), "{err}");
        assert!(err.contains("--handle"), "{err}");
    }
    let st: Value =
        serde_json::from_slice(&ok(bob(&["status", "team/a", "--json"])).stdout).unwrap();
    assert!(g["fence"].is_u64(), "{g}");
    assert_eq!(st["holders"][0]["fence"], g["fence"], "{st}");

    // The handle works for anyone who has it; the same user and root may
    // use the name.
    ok(bob(&["renew", "team/a", "--handle", handle]));
    ok(bob(&["release", "team/a", "--handle", handle]));
    ok(alice(&["renew", "team/b"]));
    ok(env.run(&["release", "team/b", "--owner", "worker"]));
    ok(bob(&["acquire", "team/c", "--ttl", "1h"]));
    assert_eq!(code(&alice(&["release", "team/c"])), 6);
    ok(bob(&["release", "team/c"]));
}

/// `setpriv` as another user, for a command that runs on.
fn spawn_as(uid: u32, gid: u32, cmd: &[&str], env: &Env) -> std::process::Child {
    std::process::Command::new("setpriv")
        .args([
            format!("--reuid={uid}"),
            format!("--regid={gid}"),
            format!("--groups={gid}"),
        ])
        .args(cmd)
        .env("LOCKSMITH_HOME", env.home.path())
        .env("LOCKSMITH_OWNER", format!("uid{uid}"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("setpriv (util-linux) runs")
}

#[test]
fn a_group_member_cannot_keep_a_dead_holder_looking_alive() {
    use std::io::BufRead;
    let Some(env) = group_env() else { return };
    let home = env.home.path();
    // Alice runs a command under a lock with a long lease; the command
    // tells its pid.
    let pid_file = home.join("cmd.pid");
    let script = format!("echo $$ > {}; exec sleep 60", pid_file.display());
    let bin = env!("CARGO_BIN_EXE_locksmith");
    let mut alice = spawn_as(
        40001,
        40000,
        &[
            bin, "run", "-l", "team/x", "--ttl", "1h", "--", "sh", "-c", &script,
        ],
        &env,
    );
    let until = Instant::now() + Duration::from_secs(10);
    let cmd_pid: i32 = loop {
        if let Some(p) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            break p;
        }
        assert!(Instant::now() < until, "alice's command did not start");
        std::thread::sleep(Duration::from_millis(20));
    };
    let life = std::fs::read_dir(home.join("holders"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with("-tree.life"))
        .expect("run's life file");
    assert_eq!(
        mode_of(&life),
        0o640,
        "readable by the group, written by its owner only"
    );

    // Bob, of the same group, opens her life file and waits for an
    // exclusive flock on it, to keep it the moment she dies: that made a
    // dead holder look alive before.
    let life_s = life.to_string_lossy().to_string();
    let mut bob = spawn_as(
        40002,
        40000,
        &[
            "flock",
            "-x",
            &life_s,
            "sh",
            "-c",
            "echo locked; exec sleep 60",
        ],
        &env,
    );
    // While she lives, her lock stands, and bob can neither remove nor
    // replace her life file (the folder is sticky).
    assert_eq!(code(&env.run(&["acquire", "team/x"])), 3);
    let rm = spawn_as(40002, 40000, &["rm", "-f", &life_s], &env)
        .wait_with_output()
        .unwrap();
    assert!(
        !rm.status.success() && life.exists(),
        "bob removed her life file"
    );

    // She dies, command and all: the lock is free at once, lease or not.
    for pid in [alice.id() as i32, cmd_pid] {
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid).unwrap(),
            rustix::process::Signal::KILL,
        );
    }
    let _ = alice.wait();
    let mut line = String::new();
    std::io::BufReader::new(bob.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "locked", "bob holds her file's flock now");
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let out = env.run(&["acquire", "team/x", "--ttl", "1m"]);
        if code(&out) == 0 {
            break;
        }
        assert!(
            Instant::now() < until,
            "the dead holder still looks alive: {}",
            stderr(&out)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let history = env.json(&["history", "team/x"]);
    assert!(
        history
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["reason"] == "dead_process"),
        "{history}"
    );
    let _ = bob.kill();
    let _ = bob.wait();
}

#[test]
fn two_users_of_a_group_share_a_store_and_no_one_else_gets_in() {
    let Some(env) = group_env() else { return };
    let home = env.home.path();
    let alice = |args: &[&str]| as_user(&env, 40001, 40000, "alice", args);
    let bob = |args: &[&str]| as_user(&env, 40002, 40000, "bob", args);
    let ok = |out: std::process::Output| {
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        out
    };

    ok(alice(&["acquire", "team/a", "--ttl", "1h"]));
    ok(alice(&["run", "-l", "team/r", "--", "true"]));
    ok(bob(&["acquire", "team/b", "--ttl", "1h"]));
    ok(bob(&["run", "-l", "team/r", "--", "true"]));
    // A later open by the file's owner keeps the group's access.
    ok(alice(&["status", "team/a"]));
    ok(alice(&["run", "-l", "team/r", "--", "true"]));
    let listed: Value = serde_json::from_slice(&ok(bob(&["list", "--json"])).stdout).unwrap();
    let keys: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["team/a", "team/b"]);
    ok(bob(&["release", "team/b"]));

    for name in [
        "locksmith.db",
        "locksmith.db-wal",
        "locksmith.db-shm",
        "locksmith.db-gate",
    ] {
        let path = home.join(name);
        if path.exists() {
            assert_eq!(mode_of(&path), 0o660, "{name}");
        }
    }
    assert_eq!(mode_of(&home.join("holders")), 0o3770);
    for entry in std::fs::read_dir(home.join("holders")).unwrap() {
        assert_eq!(mode_of(&entry.unwrap().path()) & 0o007, 0);
    }
    // Someone outside the group is told, and changes nothing.
    let eve = as_user(&env, 40003, 40003, "eve", &["acquire", "team/e"]);
    assert_ne!(code(&eve), 0);
    assert!(
        stderr(&eve).contains("ermission") || stderr(&eve).contains("cannot"),
        "{}",
        stderr(&eve)
    );
}

#[test]
fn a_private_store_keeps_its_files_and_life_files_to_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let home = env.home.path();
    std::fs::set_permissions(home, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(code(&env.run(&["run", "-l", "own/r", "--", "true"])), 0);
    assert_eq!(code(&env.run(&["acquire", "own/a", "--ttl", "1h"])), 0);
    assert_eq!(mode_of(&env.file("locksmith.db")), 0o600);
    // No other user may open a life file, let alone keep its kernel lock
    // to make a dead holder look alive.
    assert_eq!(mode_of(&home.join("holders")), 0o700);
}
