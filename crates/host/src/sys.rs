//! Facts about this machine and its processes, captured into every
//! `Holder`: host name, boot id, pid, start time.

use std::fs;

/// The kernel's boot id, or `"unknown"` where `/proc` does not have it.
pub fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}

/// This machine's host name.
pub fn hostname() -> String {
    let uts = rustix::system::uname();
    uts.nodename().to_string_lossy().into_owned()
}

/// Start time of process `pid` in clock ticks since boot (field 22 of
/// `/proc/PID/stat`), `None` when the process does not exist.
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: skip past its last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// True when process `pid` still runs and started at `start` (so a reused
/// pid does not count), `None` when it cannot be told.
pub fn process_alive(pid: u32, start: Option<u64>) -> Option<bool> {
    match (process_start(pid), start) {
        (None, _) => Some(false),
        (Some(now), Some(then)) => Some(now == then),
        (Some(_), None) => None,
    }
}

/// The current user's name, from the environment or the uid.
pub fn username() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| format!("uid{}", rustix::process::getuid().as_raw()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_a_wrong_start_is_not() {
        let me = std::process::id();
        let start = process_start(me).expect("own stat");
        assert_eq!(process_alive(me, Some(start)), Some(true));
        assert_eq!(process_alive(me, Some(start + 1)), Some(false));
        assert_eq!(process_alive(u32::MAX - 7, Some(1)), Some(false));
        assert!(!hostname().is_empty());
    }
}
