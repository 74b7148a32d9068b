//! Time as the lock rules see it: a monotonic instant for deadlines and a wall
//! instant for display, read from a [`Clock`] that tests can drive by hand.
//!
//! Deadlines use the machine's boot clock (`CLOCK_BOOTTIME`): the same for every
//! process until reboot and immune to wall-clock jumps, so a lease never
//! expires early because someone set the date.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Microseconds on the store's monotonic clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Mono(pub u64);

impl Mono {
    /// `self + d`, saturating.
    pub fn plus(self, d: Duration) -> Mono {
        Mono(
            self.0
                .saturating_add(d.as_micros().min(u64::MAX as u128) as u64),
        )
    }
    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Mono) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

/// Milliseconds since the Unix epoch; for display only, never for deadlines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Wall(pub u64);

impl Wall {
    /// Microseconds since the Unix epoch (fences are at least this).
    pub fn micros(self) -> u64 {
        self.0.saturating_mul(1000)
    }
    /// RFC 3339 text in UTC, millisecond precision.
    pub fn rfc3339(self) -> String {
        let secs = (self.0 / 1000) as i64;
        let ms = self.0 % 1000;
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        )
    }
}

// Howard Hinnant's days-to-civil algorithm (public domain description).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// One reading of a clock: both instants taken together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// For deadlines.
    pub mono: Mono,
    /// For display and fences.
    pub wall: Wall,
}

/// A source of [`Now`]. Stores read it once per transaction.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current instant.
    fn now(&self) -> Now;
}

/// A clock moved only by [`ManualClock::advance`]; cheap to clone, shared.
#[derive(Debug, Clone)]
pub struct ManualClock {
    mono: Arc<AtomicU64>,
    wall: Arc<AtomicU64>,
}

impl ManualClock {
    /// Starts at a fixed, recognisable instant.
    pub fn new() -> ManualClock {
        ManualClock {
            mono: Arc::new(AtomicU64::new(1_000_000_000)),
            wall: Arc::new(AtomicU64::new(1_780_000_000_000)),
        }
    }
    /// Moves both instants forward by `d`.
    pub fn advance(&self, d: Duration) {
        self.mono.fetch_add(d.as_micros() as u64, Ordering::SeqCst);
        self.wall.fetch_add(d.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Now {
        Now {
            mono: Mono(self.mono.load(Ordering::SeqCst)),
            wall: Wall(self.wall.load(Ordering::SeqCst)),
        }
    }
}

/// Parses `250ms`, `30s`, `5m`, `1h30m`, `2d`; a bare number means seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let bad = || {
        format!(
            "invalid duration {text:?}: use a number with a unit, e.g. 500ms, 30s, 5m, 1h30m, 2d"
        )
    };
    if t.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            "d" => Duration::from_secs(n.saturating_mul(86_400)),
            _ => return Err(bad()),
        };
        total = total.saturating_add(part);
    }
    Ok(total)
}

/// A duration given as a number of seconds by a front end whose users
/// write numbers (Python's `ttl=30`, `wait=0.5`): refuses negative, not a
/// number and endless values, naming `what`.
pub fn duration_from_secs(what: &str, secs: f64) -> Result<Duration, String> {
    if secs.is_nan() || secs.is_infinite() {
        return Err(format!(
            "invalid {what} {secs}: give a number of seconds such as 0.5 or 30, or a text such as 500ms, 30s, 5m"
        ));
    }
    if secs < 0.0 {
        return Err(format!(
            "invalid {what} {secs}: a duration cannot be negative; give 0 or more seconds"
        ));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| format!("invalid {what} {secs}: too long"))
}

/// Short human text: `850ms`, `42s`, `3m12s`, `2h05m`, `3d04h`.
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s == 0 {
        return format!("{}ms", d.as_millis());
    }
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_trip() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        for bad in ["", "s", "10x", "1.5s", "-3s", "m5"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(
            duration_from_secs("wait", 0.25),
            Ok(Duration::from_millis(250))
        );
        for bad in [-1.0, f64::NAN, f64::INFINITY, 1e300] {
            assert!(duration_from_secs("wait", bad).is_err(), "{bad}");
        }
        assert!(
            duration_from_secs("wait", -1.0)
                .unwrap_err()
                .contains("negative")
        );
        assert_eq!(format_duration(Duration::from_secs(192)), "3m12s");
        assert_eq!(format_duration(Duration::from_millis(850)), "850ms");
    }

    #[test]
    fn wall_formats_as_rfc3339() {
        assert_eq!(Wall(0).rfc3339(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            Wall(1_700_000_000_123).rfc3339(),
            "2023-11-14T22:13:20.123Z"
        );
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new();
        let a = c.now();
        c.advance(Duration::from_secs(2));
        let b = c.now();
        assert_eq!(b.mono.since(a.mono), Duration::from_secs(2));
        assert_eq!(b.wall.0 - a.wall.0, 2000);
    }
}
