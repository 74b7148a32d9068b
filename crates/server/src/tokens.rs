//! Bearer tokens and their roles (§9). The token file keeps only a SHA-256
//! of each token (tokens are 256 random bits, so a fast hash is enough);
//! a token is shown once, when it is made. The server compares hashes in
//! constant time and reloads the file on SIGHUP.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::poll::same;

/// What a token may do; each role may do what the ones before it may.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads: status, lists, history, stats, events, metrics.
    Viewer,
    /// Also acquires, renews and releases its own grants (by lease handle).
    Client,
    /// Also force-releases, forces, and releases by owner name.
    Admin,
}

impl Role {
    /// The role's name.
    pub fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Client => "client",
            Role::Admin => "admin",
        }
    }
    /// The role of a name.
    pub fn from_name(name: &str) -> Option<Role> {
        [Role::Viewer, Role::Client, Role::Admin]
            .into_iter()
            .find(|r| r.name() == name)
    }
}

/// One token as the file keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenEntry {
    /// A name for people (unique in the file).
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// SHA-256 of the token, hex.
    pub sha256: String,
    /// When it was made (RFC 3339).
    pub created_at: String,
}

#[derive(Default, Serialize, Deserialize)]
struct File {
    tokens: Vec<TokenEntry>,
}

/// The token file of a server.
#[derive(Clone, Debug, Default)]
pub struct Tokens {
    path: PathBuf,
    entries: Vec<TokenEntry>,
}

fn hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Tokens {
    /// The tokens of `path`; a missing file has none.
    pub fn load(path: &Path) -> Result<Tokens, String> {
        let entries = match std::fs::read(path) {
            Ok(bytes) => {
                serde_json::from_slice::<File>(&bytes)
                    .map_err(|e| {
                        format!(
                            "the token file {} is damaged ({e}); restore it from a copy, or move it away and create the tokens again",
                            path.display()
                        )
                    })?
                    .tokens
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                return Err(format!(
                    "cannot read the token file {}: {e}",
                    path.display()
                ));
            }
        };
        Ok(Tokens {
            path: path.to_path_buf(),
            entries,
        })
    }

    /// True when no token is configured (local trust).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The tokens, without secrets.
    pub fn entries(&self) -> &[TokenEntry] {
        &self.entries
    }

    /// The entry of a presented token.
    pub fn check(&self, token: &str) -> Option<&TokenEntry> {
        let h = hash(token);
        // Every entry is compared, so the time does not tell which matched.
        let mut found = None;
        for e in &self.entries {
            if same(&e.sha256, &h) {
                found = Some(e);
            }
        }
        found
    }

    /// Makes a token, saves its hash, and returns the token (shown once).
    pub fn create(&mut self, name: &str, role: Role, now: &str) -> Result<String, String> {
        if name.trim().is_empty() || name.chars().any(char::is_control) {
            return Err("a token name is plain text such as ci-workers".into());
        }
        if self.entries.iter().any(|e| e.name == name) {
            return Err(format!(
                "a token named {name:?} exists; revoke it first or choose another name"
            ));
        }
        let token = format!("lst_{}", locksmith::host::random_hex(32));
        self.entries.push(TokenEntry {
            name: name.to_string(),
            role,
            sha256: hash(&token),
            created_at: now.to_string(),
        });
        self.save()?;
        Ok(token)
    }

    /// Removes the token named `name`; false when there was none.
    pub fn revoke(&mut self, name: &str) -> Result<bool, String> {
        let before = self.entries.len();
        self.entries.retain(|e| e.name != name);
        if self.entries.len() == before {
            return Ok(false);
        }
        self.save()?;
        Ok(true)
    }

    /// Writes the file whole (a new file renamed over the old), owner-only.
    fn save(&self) -> Result<(), String> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let fail =
            |e: std::io::Error| format!("cannot write the token file {}: {e}", self.path.display());
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        let tmp = self.path.with_extension("json.new");
        let body = serde_json::to_vec_pretty(&File {
            tokens: self.entries.clone(),
        })
        .map_err(|e| format!("cannot encode the token file: {e}"))?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(fail)?;
        f.write_all(&body)
            .and_then(|()| f.sync_all())
            .map_err(fail)?;
        std::fs::rename(&tmp, &self.path).map_err(fail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_kept_only_as_its_hash_and_checks_by_role() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.json");
        let mut t = Tokens::load(&path).unwrap();
        assert!(t.is_empty());
        let admin = t.create("ops", Role::Admin, "now").unwrap();
        let viewer = t.create("board", Role::Viewer, "now").unwrap();
        assert!(t.create("ops", Role::Client, "now").is_err());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&admin) && !text.contains(&viewer));
        let again = Tokens::load(&path).unwrap();
        assert_eq!(again.check(&admin).map(|e| e.role), Some(Role::Admin));
        assert_eq!(again.check(&viewer).map(|e| e.role), Some(Role::Viewer));
        assert_eq!(again.check("lst_nope"), None);
        let mut again = again;
        assert!(again.revoke("ops").unwrap());
        assert!(!again.revoke("ops").unwrap());
        assert_eq!(Tokens::load(&path).unwrap().check(&admin), None);
        std::fs::write(&path, "{ not json").unwrap();
        assert!(Tokens::load(&path).unwrap_err().contains("damaged"));
    }
}
