//! The one table of outcomes. Every refusal or failure has a stable machine
//! [`Code`]; the CLI exit code, the HTTP status and the JSON `code` all come
//! from this table, never from matching message text.

use serde::{Deserialize, Serialize};

/// Process exit statuses of the `locksmith` command, by name.
pub mod exit {
    /// Success.
    pub const SUCCESS: u8 = 0;
    /// An error: the store is unreadable, damaged or full, or the system failed.
    pub const ERROR: u8 = 1;
    /// Usage or invalid input (bad key, duration, limit).
    pub const USAGE: u8 = 2;
    /// Busy: the lock is held and the request did not wait.
    pub const BUSY: u8 = 3;
    /// The wait timed out.
    pub const WAIT_TIMED_OUT: u8 = 4;
    /// Deadlock refused: waiting would close a cycle.
    pub const DEADLOCK: u8 = 5;
    /// Not the holder: another owner holds the lock.
    pub const NOT_HOLDER: u8 = 6;
    /// The lock was lost.
    pub const LOST: u8 = 7;
    /// Not allowed: the server refused the token, or its role does not permit the request.
    pub const NOT_ALLOWED: u8 = 8;
    /// Interrupted while waiting (SIGINT, SIGTERM, SIGHUP).
    pub const INTERRUPTED: u8 = 130;
}

/// A stable name for every way a request can end other than success.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Code {
    /// The lock is held and the request did not wait.
    Busy,
    /// The wait deadline passed before the lock was granted.
    WaitTimedOut,
    /// Waiting would close a cycle of waiters.
    Deadlock,
    /// The caller is not the holder of the lock it names.
    NotHolder,
    /// The caller's lock is no longer held.
    Lost,
    /// The request is malformed (key, duration, limit, owner, metadata).
    Invalid,
    /// The caller gave up while waiting.
    Cancelled,
    /// The store's data is damaged.
    Corrupt,
    /// The store cannot be used as it is (foreign, newer, on a network filesystem).
    Unusable,
    /// The store cannot be reached or stayed busy past its timeout; try again.
    Unavailable,
    /// The store failed (I/O error, full disk, permissions).
    StoreError,
    /// The request carries no valid token where one is needed.
    Unauthorized,
    /// The token's role does not permit the request.
    Forbidden,
    /// The request body, its metadata or its list of keys is too large.
    TooLarge,
    /// Too many requests: a limit on waiters or requests was reached.
    TooMany,
}

impl Code {
    /// Every code, in documentation order.
    pub const ALL: [Code; 15] = [
        Code::Busy,
        Code::WaitTimedOut,
        Code::Deadlock,
        Code::NotHolder,
        Code::Lost,
        Code::Invalid,
        Code::Cancelled,
        Code::Corrupt,
        Code::Unusable,
        Code::Unavailable,
        Code::StoreError,
        Code::Unauthorized,
        Code::Forbidden,
        Code::TooLarge,
        Code::TooMany,
    ];

    /// The code of a stable name, as in JSON bodies.
    pub fn from_name(name: &str) -> Option<Code> {
        Code::ALL.into_iter().find(|c| c.name() == name)
    }

    /// Stable snake_case name, as in JSON bodies.
    pub fn name(self) -> &'static str {
        self.row().0
    }
    /// The exit status of the `locksmith` command.
    pub fn exit_status(self) -> u8 {
        self.row().1
    }
    /// The HTTP status of an API answer.
    pub fn http_status(self) -> u16 {
        self.row().2
    }

    /// The table: name, exit status, HTTP status.
    fn row(self) -> (&'static str, u8, u16) {
        match self {
            Code::Busy => ("busy", exit::BUSY, 409),
            Code::WaitTimedOut => ("wait_timed_out", exit::WAIT_TIMED_OUT, 409),
            Code::Deadlock => ("deadlock", exit::DEADLOCK, 409),
            Code::NotHolder => ("not_holder", exit::NOT_HOLDER, 409),
            Code::Lost => ("lost", exit::LOST, 410),
            Code::Invalid => ("invalid", exit::USAGE, 422),
            Code::Cancelled => ("cancelled", exit::INTERRUPTED, 499),
            Code::Corrupt => ("corrupt", exit::ERROR, 500),
            Code::Unusable => ("unusable", exit::ERROR, 500),
            Code::Unavailable => ("unavailable", exit::ERROR, 503),
            Code::StoreError => ("store_error", exit::ERROR, 500),
            Code::Unauthorized => ("unauthorized", exit::NOT_ALLOWED, 401),
            Code::Forbidden => ("forbidden", exit::NOT_ALLOWED, 403),
            Code::TooLarge => ("too_large", exit::USAGE, 413),
            Code::TooMany => ("too_many", exit::ERROR, 429),
        }
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_round_trip_through_json() {
        let mut names: Vec<&str> = Code::ALL.iter().map(|c| c.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Code::ALL.len());
        for c in Code::ALL {
            let text = serde_json::to_string(&c).unwrap();
            assert_eq!(text, format!("\"{}\"", c.name()));
            assert_eq!(serde_json::from_str::<Code>(&text).unwrap(), c);
            assert_eq!(Code::from_name(c.name()), Some(c));
        }
        assert_eq!(Code::from_name("nonsense"), None);
    }

    #[test]
    fn refusals_have_their_documented_exit_codes() {
        assert_eq!(Code::Busy.exit_status(), 3);
        assert_eq!(Code::WaitTimedOut.exit_status(), 4);
        assert_eq!(Code::Deadlock.exit_status(), 5);
        assert_eq!(Code::NotHolder.exit_status(), 6);
        assert_eq!(Code::Lost.exit_status(), 7);
        assert_eq!(Code::Invalid.exit_status(), 2);
        assert_eq!(Code::Lost.http_status(), 410);
        assert_eq!(Code::Unavailable.http_status(), 503);
        assert_eq!(Code::Forbidden.exit_status(), 8);
        assert_eq!(Code::Unauthorized.exit_status(), 8);
        assert_eq!(Code::TooLarge.http_status(), 413);
        assert_eq!(Code::TooMany.http_status(), 429);
    }
}
