//! `locksmith run` with real processes and real signals: exit status and
//! reasons, signal forwarding to the process group (also while waiting),
//! SIGKILL of run, and a SIGSTOP past the lease.

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};
use serde_json::Value;

use crate::common::*;

fn signal(pid: u32, sig: Signal) {
    kill_process(Pid::from_raw(pid as i32).unwrap(), sig).unwrap();
}

/// Polls `cond` for up to `limit`.
fn eventually(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until `run` holds `key`; fails with run's own words if it ended first.
fn wait_until_held(env: &Env, run: &mut Child, key: &str) {
    eventually(Duration::from_secs(10), "the lock", || {
        if let Ok(Some(status)) = run.try_wait() {
            let mut err = String::new();
            let _ = std::io::Read::read_to_string(run.stderr.as_mut().unwrap(), &mut err);
            panic!("run ended early ({status}): {err}");
        }
        env.json(&["status", key])["free"] == false
    });
}

/// Waits (up to 10 s) for a command to write a pid into `path`, and reads it.
fn wait_for_pid(path: &Path, what: &str) -> u32 {
    eventually(Duration::from_secs(10), what, || {
        std::fs::read_to_string(path).is_ok_and(|t| t.trim().parse::<u32>().is_ok())
    });
    std::fs::read_to_string(path)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Gone or a zombie: either way no longer running.
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

#[test]
fn exit_status_passes_through_with_completed_or_failed() {
    let env = Env::new();
    let ok = env.run(&["run", "-l", "job", "--", "sh", "-c", "test \"$LOCKSMITH_KEYS\" = job && test -n \"$LOCKSMITH_FENCE\" && test -n \"$LOCKSMITH_HANDLE\""]);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(env.last_reason("job"), "completed");
    let bad = env.run(&["run", "-l", "job", "--", "sh", "-c", "exit 3"]);
    assert_eq!(bad.status.code(), Some(3));
    assert_eq!(env.last_reason("job"), "failed");
    let missing = env.run(&["run", "-l", "job", "--", "/no/such/program"]);
    assert_eq!(missing.status.code(), Some(127));
    assert_eq!(
        env.last_reason("job"),
        "failed",
        "a command that cannot start failed"
    );
    assert_eq!(env.json(&["status", "job"])["free"], true);
}

#[test]
fn several_keys_are_listed_one_per_line() {
    let env = Env::new();
    let out = env.run(&[
        "run",
        "-l",
        "a",
        "-l",
        "b",
        "--",
        "sh",
        "-c",
        "printf '%s|%s' \"$LOCKSMITH_KEYS\" \"$LOCKSMITH_FENCE\"",
    ]);
    let text = String::from_utf8(out.stdout).unwrap();
    let (keys, fences) = text.split_once('|').unwrap();
    assert_eq!(keys, "a\nb");
    let f: Vec<u64> = fences.lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(f.len(), 2);
    assert!(f[1] > f[0]);
}

#[test]
fn busy_lock_does_not_start_the_command() {
    let env = Env::new();
    env.run(&["acquire", "k", "--owner", "other"]);
    let marker = env.file("started");
    let out = env.run(&["run", "-l", "k", "--", "touch", marker.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
    assert!(!marker.exists());
}

#[test]
fn signals_reach_the_whole_process_group() {
    let env = Env::new();
    let pidfile = env.file("grandchild");
    let trapped = env.file("trapped");
    // The command starts a grandchild in its group, then waits.
    let script = format!(
        "sleep 30 & echo $! > {}; trap 'echo INT > {}; kill $!; exit 130' INT; wait",
        pidfile.display(),
        trapped.display()
    );
    let run = env.spawn(&["run", "-l", "sig", "--", "sh", "-c", &script]);
    let grandchild = wait_for_pid(&pidfile, "the grandchild");
    signal(run.id(), Signal::INT);
    let out = run.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&trapped).unwrap().trim(), "INT");
    eventually(Duration::from_secs(5), "the grandchild to end", || {
        !running(grandchild)
    });
    assert_eq!(env.last_reason("sig"), "failed");

    // SIGTERM to the group reaches a grandchild that does not trap it.
    let run = env.spawn(&[
        "run",
        "-l",
        "sig",
        "--",
        "sh",
        "-c",
        &format!("sleep 30 & echo $! > {}; wait", pidfile.display()),
    ]);
    std::fs::remove_file(&pidfile).ok();
    let grandchild = wait_for_pid(&pidfile, "the grandchild");
    signal(run.id(), Signal::TERM);
    let out = run.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143));
    eventually(Duration::from_secs(5), "the grandchild to end", || {
        !running(grandchild)
    });
}

#[test]
fn a_signal_while_waiting_stops_the_wait() {
    let env = Env::new();
    env.run(&["acquire", "busy", "--owner", "other"]);
    let marker = env.file("started");
    let run = env.spawn(&[
        "run",
        "-l",
        "busy",
        "--wait",
        "60s",
        "--",
        "touch",
        marker.to_str().unwrap(),
    ]);
    eventually(Duration::from_secs(10), "the queue entry", || {
        env.json(&["list", "--waiting"]).as_array().unwrap().len() == 1
    });
    let sent = Instant::now();
    signal(run.id(), Signal::TERM);
    let out = run.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143));
    assert!(sent.elapsed() < Duration::from_secs(2));
    assert!(!marker.exists());
    assert_eq!(
        env.json(&["list", "--waiting"]).as_array().unwrap().len(),
        0
    );
    assert_eq!(
        env.json(&["history", "busy", "--kind", "wait_cancelled"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn sigkill_of_run_takes_its_command_and_frees_the_lock() {
    let env = Env::new();
    let pidfile = env.file("child");
    let run = env.spawn(&[
        "run",
        "-l",
        "killed",
        "--ttl",
        "60s",
        "--",
        "sh",
        "-c",
        &format!("echo $$ > {}; exec sleep 30", pidfile.display()),
    ]);
    let child = wait_for_pid(&pidfile, "the child");
    assert!(running(child));
    let waiter = env.spawn(&[
        "acquire", "killed", "--owner", "next", "--wait", "20s", "--json",
    ]);
    eventually(Duration::from_secs(10), "the waiter", || {
        env.json(&["list", "--waiting"]).as_array().unwrap().len() == 1
    });
    let killed = Instant::now();
    signal(run.id(), Signal::KILL);
    let out = waiter.wait_with_output().unwrap();
    // Freed on proof of death, long before the 60 s lease.
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        killed.elapsed() < Duration::from_secs(2),
        "took {:?}",
        killed.elapsed()
    );
    eventually(Duration::from_secs(5), "the child to die with run", || {
        !running(child)
    });
    let reaped = env.json(&["history", "killed", "--kind", "reaped"]);
    assert_eq!(reaped[0]["reason"], "dead_process");
    let mut run = run;
    run.wait().unwrap();
}

#[test]
fn sigstop_past_the_lease_loses_the_lock_and_stops_the_command() {
    let env = Env::new();
    let termed = env.file("termed");
    let script = format!(
        "trap 'echo TERM > {}; exit 143' TERM; while :; do sleep 0.05; done",
        termed.display()
    );
    let mut run = env.spawn(&[
        "run", "-l", "paused", "--ttl", "2s", "--grace", "5s", "--", "sh", "-c", &script,
    ]);
    wait_until_held(&env, &mut run, "paused");
    signal(run.id(), Signal::STOP);
    // Another process takes the lock once the lease has run out.
    let other = env.run(&[
        "acquire", "paused", "--owner", "other", "--wait", "10s", "--json",
    ]);
    assert_eq!(
        other.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&other.stdout)
    );
    signal(run.id(), Signal::CONT);
    let out = run.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&termed).unwrap().trim(), "TERM");
    assert_eq!(
        env.json(&["status", "paused"])["holders"][0]["owner"],
        "other"
    );
}

#[test]
fn sweep_once_uses_the_task_hook_and_the_loop_stops_on_sigterm() {
    let env = Env::new();
    env.run(&["acquire", "done-task", "--task", "T1"]);
    env.run(&["acquire", "open-task", "--task", "T2"]);
    let hook = env.file("hook.sh");
    std::fs::write(&hook, "#!/bin/sh\n[ \"$1\" = T1 ]\n").unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let dry = env
        .cmd(&["sweep", "--once", "--dry-run", "--json"])
        .env("LOCKSMITH_TASK_HOOK", &hook)
        .output()
        .unwrap();
    let planned: Value = serde_json::from_slice(&dry.stdout).unwrap();
    assert_eq!(planned.as_array().unwrap().len(), 1);
    assert_eq!(planned[0]["applied"], false);
    assert_eq!(
        env.json(&["list"]).as_array().unwrap().len(),
        2,
        "a dry run changes nothing"
    );
    let out = env
        .cmd(&["sweep", "--once", "--json"])
        .env("LOCKSMITH_TASK_HOOK", &hook)
        .output()
        .unwrap();
    let done: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(done[0]["key"], "done-task");
    assert_eq!(done[0]["reason"], "task_completed");
    let log = String::from_utf8(out.stderr).unwrap();
    let line: Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert_eq!(
        (line["event"].as_str(), line["reason"].as_str()),
        (Some("reaped"), Some("task_completed"))
    );
    assert_eq!(env.json(&["status", "open-task"])["free"], false);

    let looping = env.spawn(&["sweep", "--interval", "100ms"]);
    std::thread::sleep(Duration::from_millis(300));
    signal(looping.id(), Signal::TERM);
    let out = looping.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let last: Value = serde_json::from_str(
        String::from_utf8(out.stderr)
            .unwrap()
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(last["event"], "stopped");
}

#[test]
fn a_lock_lost_before_cmd_ends_is_reported_even_without_a_renewal() {
    let env = Env::new();
    let marker = env.file("go");
    let script = format!("while [ ! -e {} ]; do sleep 0.02; done", marker.display());
    // Two keys; the second is forced away; CMD ends before the next renewal.
    let mut run = env.spawn(&[
        "run", "-l", "a", "-l", "b", "--ttl", "30s", "--", "sh", "-c", &script,
    ]);
    wait_until_held(&env, &mut run, "b");
    assert_eq!(
        env.run(&["force-release", "b", "--reason", "test"])
            .status
            .code(),
        Some(0)
    );
    assert_eq!(
        env.run(&["acquire", "b", "--owner", "other"]).status.code(),
        Some(0)
    );
    std::fs::write(&marker, "").unwrap();
    let out = run.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("forced"));
}

#[test]
fn a_forced_run_stops_cmd_at_once_not_at_its_next_renewal() {
    let env = Env::new();
    let termed = env.file("termed");
    let script = format!(
        "trap 'echo TERM > {}; exit 143' TERM; while :; do sleep 0.05; done",
        termed.display()
    );
    // A 60 s lease is renewed every 20 s: only being told stops CMD sooner.
    let mut run = env.spawn(&["run", "-l", "k", "--ttl", "60s", "--", "sh", "-c", &script]);
    wait_until_held(&env, &mut run, "k");
    assert_eq!(
        env.run(&["force-release", "k", "--reason", "test"])
            .status
            .code(),
        Some(0)
    );
    // Killed (no exit code) if it goes on for 5 s.
    let out = output_within(run, Duration::from_secs(5));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{err}");
    assert!(err.contains("lost (forced)"), "{err}");
    assert_eq!(std::fs::read_to_string(&termed).unwrap().trim(), "TERM");
}

#[test]
fn losing_one_key_of_several_is_seen_by_the_renewal() {
    let env = Env::new();
    let termed = env.file("termed");
    let script = format!(
        "trap 'echo TERM > {}; exit 143' TERM; while :; do sleep 0.05; done",
        termed.display()
    );
    let mut run = env.spawn(&[
        "run", "-l", "a", "-l", "b", "--ttl", "3s", "--", "sh", "-c", &script,
    ]);
    wait_until_held(&env, &mut run, "b");
    env.run(&["force-release", "b", "--reason", "test"]);
    let out = run.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&termed).unwrap().trim(), "TERM");
}

#[test]
fn after_sigkill_of_run_the_lock_lasts_while_cmds_children_run() {
    let env = Env::new();
    let gpid = env.file("grandchild");
    let script = format!("sleep 30 & echo $! > {}; wait", gpid.display());
    let mut run = env.spawn(&[
        "run", "-l", "tree", "--ttl", "60s", "--", "sh", "-c", &script,
    ]);
    let grandchild = wait_for_pid(&gpid, "the grandchild");
    signal(run.id(), Signal::KILL);
    run.wait().unwrap();
    // run and its direct child are gone; the grandchild still works: still held.
    std::thread::sleep(Duration::from_millis(200));
    assert!(running(grandchild));
    assert_eq!(
        env.run(&["acquire", "tree", "--owner", "other"])
            .status
            .code(),
        Some(3)
    );
    signal(grandchild, Signal::KILL);
    let next = env.run(&["acquire", "tree", "--owner", "other", "--wait", "10s"]);
    assert_eq!(
        next.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&next.stderr)
    );
    assert_eq!(
        env.json(&["history", "tree", "--kind", "reaped"])[0]["reason"],
        "dead_process"
    );
}

/// The one-letter state of a process (`T` when stopped).
fn state(pid: u32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit(')')
        .next()
        .unwrap_or("")
        .trim_start()
        .chars()
        .next()
        .unwrap_or('?')
}

#[test]
fn ctrl_z_suspends_the_command_with_run_and_sigcont_resumes_both() {
    let env = Env::new();
    let pidfile = env.file("child");
    let script = format!(
        "echo $$ > {}; while :; do sleep 0.02; done",
        pidfile.display()
    );
    let mut run = env.spawn(&["run", "-l", "tstp", "--", "sh", "-c", &script]);
    let child = wait_for_pid(&pidfile, "the child");
    signal(run.id(), Signal::TSTP);
    eventually(Duration::from_secs(5), "both stopped", || {
        state(child) == 'T' && state(run.id()) == 'T'
    });
    signal(run.id(), Signal::CONT);
    eventually(Duration::from_secs(5), "both running", || {
        state(child) != 'T' && state(run.id()) != 'T'
    });
    signal(run.id(), Signal::TERM);
    let out = run.wait().unwrap();
    assert_eq!(out.code(), Some(143));
}

/// A command that releases its own lock (through `LOCKSMITH_HANDLE`) gave
/// it up; `run` neither stops it nor reports a lost lock, whether a renewal
/// or only the final release finds out.
#[test]
fn a_command_that_releases_its_own_lock_is_not_lost() {
    let env = Env::new();
    let bin = env!("CARGO_BIN_EXE_locksmith");
    let script = format!(
        "\"{bin}\" release self/k --handle \"$LOCKSMITH_HANDLE\" >/dev/null && sleep 0.6 && echo still-running"
    );
    for ttl in ["30s", "300ms"] {
        let out = env.run(&[
            "run", "-l", "self/k", "--ttl", ttl, "--", "sh", "-c", &script,
        ]);
        assert_eq!(code(&out), 0, "ttl {ttl}: {}", stderr(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("still-running"),
            "ttl {ttl}: CMD was stopped"
        );
    }
}

#[test]
fn the_life_file_of_a_run_killed_while_waiting_is_swept_away() {
    let env = Env::new();
    assert_eq!(code(&env.run(&["acquire", "busy", "--ttl", "1m"])), 0);
    let mut waiter = env.spawn(&["run", "-l", "busy", "--wait", "30s", "--", "true"]);
    eventually(Duration::from_secs(10), "the waiter in the queue", || {
        env.json(&["status", "busy"])["waiters"]
            .as_array()
            .is_some_and(|w| w.len() == 1)
    });
    let pid = waiter.id();
    let holders = env.file("holders");
    let mine = |p: &std::path::PathBuf| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.contains(&format!("-{pid}-")))
    };
    let files = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&holders)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    assert!(
        files().iter().any(mine),
        "run made its life file: {:?}",
        files()
    );
    signal(pid, Signal::KILL);
    let _ = waiter.wait();
    // A minute later (backdated here), the sweeper removes what it left.
    for f in files().iter().filter(|f| mine(f)) {
        let old = std::time::SystemTime::now() - Duration::from_secs(120);
        std::fs::File::options()
            .write(true)
            .open(f)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    assert_eq!(code(&env.run(&["sweep", "--once"])), 0);
    assert!(!files().iter().any(mine), "left behind: {:?}", files());
    // The holder's lock is untouched.
    assert_eq!(env.json(&["status", "busy"])["free"], false);
}
