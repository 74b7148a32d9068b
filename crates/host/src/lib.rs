//! Everything locksmith reads from the machine it runs on, kept out of the
//! pure rules of `locksmith-core`: process facts (host name, boot id, pid
//! start times), the system clock, canonical folder keys and the random
//! secrets of lease handles.

pub mod life;
mod ofd;
pub mod sys;
pub mod wake;

use std::path::Path;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use locksmith_core::{Clock, Holder, Key, KeyError, LeaseHandle, Mono, Now, Wall};

/// The machine clock: `CLOCK_BOOTTIME` for deadlines (the same for every
/// process until reboot, immune to wall-clock jumps) and the system wall
/// clock for display and fences.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Now {
        let ts = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
        let mono = ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000;
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Now {
            mono: Mono(mono),
            wall: Wall(wall),
        }
    }
}

/// A holder for this process, with host facts filled in.
pub fn this_process(owner: impl Into<String>) -> Holder {
    // Read once per process: these do not change while it runs (the pid
    // is checked, for a forked child).
    static FACTS: OnceLock<(u32, String, String, Option<u64>)> = OnceLock::new();
    let pid = std::process::id();
    let facts = FACTS.get_or_init(|| {
        (
            pid,
            sys::hostname(),
            sys::boot_id(),
            sys::process_start(pid),
        )
    });
    let pid_start = if facts.0 == pid {
        facts.3
    } else {
        sys::process_start(pid)
    };
    Holder {
        owner: owner.into(),
        task: None,
        metadata: None,
        hostname: facts.1.clone(),
        boot_id: facts.2.clone(),
        pid,
        pid_start,
    }
}

/// The default owner name: `$LOCKSMITH_OWNER`, else `user@host`.
pub fn default_owner() -> String {
    static USER_AT_HOST: OnceLock<String> = OnceLock::new();
    match std::env::var("LOCKSMITH_OWNER") {
        Ok(o) if !o.trim().is_empty() => o,
        _ => USER_AT_HOST
            .get_or_init(|| format!("{}@{}", sys::username(), sys::hostname()))
            .clone(),
    }
}

/// The canonical key of an existing directory: symlinks and `..` resolved.
pub fn folder_key(dir: &Path) -> Result<Key, KeyError> {
    let fail = |why: String| KeyError::Path {
        path: dir.display().to_string(),
        why,
    };
    let canon = dir
        .canonicalize()
        .map_err(|e| fail(format!("{e}; it must be an existing directory")))?;
    if !canon.is_dir() {
        return Err(fail("it is not a directory".into()));
    }
    let text = canon
        .to_str()
        .ok_or_else(|| fail("the path is not valid UTF-8".into()))?;
    Key::new(text)
}

/// `bytes` random bytes from the operating system, as hex.
pub fn random_hex(bytes: usize) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).expect("the operating system's random source failed");
    let mut out = String::with_capacity(bytes * 2);
    for x in b {
        out.push(char::from(DIGITS[usize::from(x >> 4)]));
        out.push(char::from(DIGITS[usize::from(x & 0xf)]));
    }
    out
}

/// A new lease handle for grant `grant` with 128 random bits of secret.
pub fn new_handle(grant: i64) -> LeaseHandle {
    LeaseHandle::from_parts(grant, &random_hex(16))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_hex_is_lowercase_hex_of_the_length_asked() {
        let a = random_hex(16);
        assert_eq!(a.len(), 32);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        );
        assert_ne!(a, random_hex(16));
    }

    #[test]
    fn path_keys_are_canonical() {
        let dir = std::env::temp_dir();
        let k = folder_key(&dir.join(".")).unwrap();
        assert_eq!(k.as_str(), dir.canonicalize().unwrap().to_str().unwrap());
        assert!(folder_key(Path::new("/definitely/not/here")).is_err());
    }

    #[test]
    fn handles_are_well_formed_and_differ() {
        let a = new_handle(7);
        let b = new_handle(7);
        assert_eq!(a.grant(), Some(7));
        assert_ne!(a, b);
    }
}
