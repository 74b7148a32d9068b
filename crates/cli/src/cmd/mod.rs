//! One module per subcommand, plus the key arguments they share.

pub mod acquire;
pub mod config;
pub mod history;
pub mod mcp;
pub mod release;
pub mod run;
pub mod serve;
pub mod status;
pub mod sweep;
pub mod token;
pub mod watch;

use std::path::PathBuf;

use locksmith_core::Code;
use locksmith_core::{Holder, Key, Mode, Scope};

use crate::Failure;

/// Turns KEY arguments and `--path DIR` arguments into keys.
pub fn keys(raw: &[String], paths: &[PathBuf]) -> Result<Vec<Key>, Failure> {
    let mut out = Vec::new();
    for k in raw {
        out.push(Key::new(k.as_str())?);
    }
    for p in paths {
        out.push(locksmith::host::folder_key(p)?);
    }
    Ok(out)
}

/// This process as holder: `--owner` (else the configured owner) and `--task`.
pub fn holder(ctx: &crate::Ctx, owner: Option<&String>, task: Option<&String>) -> Holder {
    let mut h = locksmith::host::this_process(owner.cloned().unwrap_or_else(|| ctx.config.owner()));
    h.task = task.cloned();
    h
}

/// One key: KEY, or `--path DIR` for a directory.
#[derive(clap::Args, Debug)]
pub struct KeyArg {
    /// The key.
    #[arg(value_name = "KEY", required_unless_present = "path")]
    key: Option<String>,
    /// The key of a directory, by its canonical path.
    #[arg(long, value_name = "DIR")]
    path: Option<PathBuf>,
}

impl KeyArg {
    /// The key named.
    pub fn key(&self) -> Result<Key, Failure> {
        one_key(self.key.as_ref(), self.path.as_ref())
    }
}

/// How a lock shares its key, for `acquire` and `run`.
#[derive(clap::Args, Debug)]
pub struct ModeArgs {
    /// Shared (reader) lock: many readers, no writer.
    #[arg(long, conflicts_with = "limit")]
    shared: bool,
    /// Semaphore: up to N holders of the key.
    #[arg(long, value_name = "N")]
    limit: Option<u32>,
    /// Tree lock: also covers every key below (folder locks).
    #[arg(long)]
    tree: bool,
}

impl ModeArgs {
    /// The mode asked for.
    pub fn mode(&self) -> Mode {
        match (self.shared, self.limit) {
            (true, _) => Mode::Shared,
            (_, Some(limit)) => Mode::Semaphore { limit },
            _ => Mode::Exclusive,
        }
    }
    /// The scope asked for.
    pub fn scope(&self) -> Scope {
        if self.tree { Scope::Tree } else { Scope::Key }
    }
}

/// Exactly one key from KEY or `--path DIR`.
fn one_key(raw: Option<&String>, path: Option<&PathBuf>) -> Result<Key, Failure> {
    match (raw, path) {
        (Some(k), None) => Ok(Key::new(k.as_str())?),
        (None, Some(p)) => Ok(locksmith::host::folder_key(p)?),
        (Some(_), Some(_)) => Err(Failure::new(
            Code::Invalid,
            "give either KEY or --path DIR, not both",
        )),
        (None, None) => Err(Failure::new(Code::Invalid, "missing KEY (or --path DIR)")),
    }
}
