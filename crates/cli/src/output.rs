//! Human output: aligned tables and short descriptions of holders.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use locksmith_core::LockInfo;
use locksmith_core::time::format_duration;

/// Prints rows as left-aligned columns under a header.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        out!("{}", s.trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
}

/// "agent-3 (task 42) for 3m12s, fence 17".
pub fn holder(h: &LockInfo) -> String {
    let task = h
        .task
        .as_ref()
        .map(|t| format!(" (task {t})"))
        .unwrap_or_default();
    format!(
        "{}{task} for {}, fence {}",
        h.owner,
        format_duration(h.held_for),
        h.fence
    )
}

pub use locksmith_core::view::ordinal;

/// Prints a value as one line of JSON.
pub fn json(v: &impl serde::Serialize) {
    out!("{}", serde_json::to_string(v).expect("values serialize"));
}

/// Set once a write to stdout failed (closed pipe, full disk).
static STDOUT_FAILED: AtomicBool = AtomicBool::new(false);

/// Writes to stdout; a failure is recorded, never a panic.
pub fn write_out(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if out.write_fmt(args).and_then(|()| out.flush()).is_err() {
        STDOUT_FAILED.store(true, Ordering::Relaxed);
    }
}

/// Writes to stderr; a closed stderr loses the text, nothing else.
pub fn write_err(args: std::fmt::Arguments<'_>) {
    let _ = std::io::stderr().lock().write_fmt(args);
}

/// True when some output could not be written to stdout.
pub fn stdout_failed() -> bool {
    STDOUT_FAILED.load(Ordering::Relaxed)
}
