//! `locksmith sweep`: end locks whose lease ran out, whose holder process is
//! dead, that went stale, passed `max_hold`, or whose task is done; one pass
//! (`--once`) or a loop (`--interval`) that stops cleanly on SIGTERM.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use locksmith::sweep;
use locksmith_core::sweep::SweepAction;
use locksmith_core::time::parse_duration;
use locksmith_core::{Store, Wall};
use serde_json::json;

use crate::output::table;
use crate::{Ctx, Failure};
use locksmith_core::Code;

/// End expired, dead, stale, over-long and finished locks, recording why.
///
/// Every action is a history event and one JSON log line on stderr. The
/// task hook (setting `task_hook`) is run as `HOOK TASK_ID`; exit status 0
/// means the task is done (its lock is ended as `task_completed`), 1 means
/// not done, anything else is reported and the lock is kept.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// One pass, then exit.
    #[arg(
        long,
        conflicts_with = "interval",
        required_unless_present = "interval"
    )]
    once: bool,
    /// Run a pass every DURATION until SIGTERM or SIGINT.
    #[arg(long, value_name = "DURATION")]
    interval: Option<String>,
    /// Only list what would be done.
    #[arg(long)]
    dry_run: bool,
}

fn now_text() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Wall(ms).rfc3339()
}

/// One structured log line on stderr.
fn log(level: &str, fields: serde_json::Value) {
    let mut line = json!({ "ts": now_text(), "level": level, "component": "sweeper" });
    if let (Some(obj), serde_json::Value::Object(extra)) = (line.as_object_mut(), fields) {
        obj.extend(extra);
    }
    err!("{line}");
}

/// Asks the hook whether `task` is done.
fn hook_says_done(hook: &str, task: &str) -> bool {
    let mut parts = hook.split_whitespace();
    let Some(program) = parts.next() else {
        return false;
    };
    let child = Command::new(program)
        .args(parts)
        .arg(task)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            log(
                "warn",
                json!({ "event": "task_hook_failed", "task": task, "error": e.to_string() }),
            );
            return false;
        }
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                return match status.code() {
                    Some(0) => true,
                    Some(1) => false,
                    other => {
                        log(
                            "warn",
                            json!({ "event": "task_hook_failed", "task": task, "exit": other }),
                        );
                        false
                    }
                };
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                log(
                    "warn",
                    json!({ "event": "task_hook_timed_out", "task": task }),
                );
                return false;
            }
        }
    }
}

fn pass(ctx: &Ctx, store: &dyn Store, dry_run: bool) -> Result<Vec<SweepAction>, Failure> {
    let hook = ctx.config.task_hook();
    let mut task_done = |task: &str| hook.as_deref().is_some_and(|h| hook_says_done(h, task));
    let asker: Option<&mut dyn FnMut(&str) -> bool> = match hook {
        Some(_) => Some(&mut task_done),
        None => None,
    };
    let actions = sweep::sweep(store, dry_run, asker)?;
    for a in &actions {
        log(
            "info",
            json!({
                "event": if dry_run { "would_reap" } else { "reaped" },
                "key": a.key, "fence": a.fence, "owner": a.owner, "task": a.task, "reason": a.reason,
            }),
        );
    }
    Ok(actions)
}

/// Runs `sweep`.
pub fn run(ctx: &Ctx, a: Args) -> Result<(), Failure> {
    let store = ctx.store()?;
    if a.once {
        let actions = pass(ctx, &*store, a.dry_run)?;
        if ctx.json {
            crate::output::json(&actions);
        } else if actions.is_empty() {
            out!("nothing to sweep");
        } else {
            let rows: Vec<Vec<String>> = actions
                .iter()
                .map(|x| {
                    vec![
                        x.key.to_string(),
                        x.owner.clone(),
                        x.fence.to_string(),
                        x.reason.to_string(),
                        if x.applied {
                            "ended".into()
                        } else {
                            "would end (dry run)".into()
                        },
                    ]
                })
                .collect();
            table(&["KEY", "OWNER", "FENCE", "REASON", "ACTION"], &rows);
        }
        return Ok(());
    }
    let every = a
        .interval
        .as_deref()
        .map(parse_duration)
        .transpose()
        .map_err(|e| Failure::new(Code::Invalid, format!("--interval: {e}")))?
        .unwrap_or(Duration::from_secs(60));
    if every.is_zero() {
        return Err(Failure::new(
            Code::Invalid,
            "--interval must be more than 0",
        ));
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        let _ = signal_hook::flag::register(sig, stop.clone());
    }
    log(
        "info",
        json!({ "event": "started", "interval_ms": every.as_millis() as u64, "dry_run": a.dry_run, "store": ctx.store_shown() }),
    );
    while !stop.load(Ordering::SeqCst) {
        match pass(ctx, &*store, a.dry_run) {
            Ok(actions) => log("info", json!({ "event": "pass", "ended": actions.len() })),
            Err(f) => log(
                "error",
                json!({ "event": "pass_failed", "error": f.message }),
            ),
        }
        let next = Instant::now() + every;
        while Instant::now() < next && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50).min(next - Instant::now()));
        }
    }
    log("info", json!({ "event": "stopped" }));
    Ok(())
}
