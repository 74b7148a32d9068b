//! One module per subcommand, plus the key arguments they share.

pub mod acquire;
pub mod config;
pub mod history;
pub mod release;
pub mod run;
pub mod status;
pub mod sweep;

use std::path::PathBuf;

use locksmith_core::Key;

use crate::Failure;

/// Turns KEY arguments and `--path DIR` arguments into keys.
pub fn keys(raw: &[String], paths: &[PathBuf]) -> Result<Vec<Key>, Failure> {
    let mut out = Vec::new();
    for k in raw {
        out.push(Key::new(k.as_str())?);
    }
    for p in paths {
        out.push(Key::from_dir(p)?);
    }
    Ok(out)
}

/// Exactly one key from KEY or `--path DIR`.
pub fn one_key(raw: Option<&String>, path: Option<&PathBuf>) -> Result<Key, Failure> {
    match (raw, path) {
        (Some(k), None) => Ok(Key::new(k.as_str())?),
        (None, Some(p)) => Ok(Key::from_dir(p)?),
        (Some(_), Some(_)) => Err(Failure::new(
            2,
            "invalid",
            "give either KEY or --path DIR, not both",
        )),
        (None, None) => Err(Failure::new(2, "invalid", "missing KEY (or --path DIR)")),
    }
}
