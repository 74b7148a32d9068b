//! The effective configuration, read the same way by the command line and
//! every other front end: flags > environment (`LOCKSMITH_<NAME>`) >
//! config file (`locksmith.toml` in `$LOCKSMITH_HOME`, or `--config`) >
//! defaults, with the source of every value kept for `locksmith config`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{Durability, Options, default_home};
use anyhow::{Context, bail};
use locksmith_core::time::{format_duration, parse_duration};

/// Where a value came from.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Built-in default.
    Default,
    /// The config file.
    File(PathBuf),
    /// An environment variable.
    Env(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File(p) => write!(f, "file {}", p.display()),
            Source::Env(v) => write!(f, "env {v}"),
        }
    }
}

/// One setting: its name, meaning and default.
struct Setting {
    name: &'static str,
    default: &'static str,
    help: &'static str,
}

const SETTINGS: &[Setting] = &[
    Setting {
        name: "home",
        default: "$XDG_STATE_HOME/locksmith",
        help: "folder of the embedded store (locksmith.db) and of locksmith.toml; environment only",
    },
    Setting {
        name: "owner",
        default: "user@host",
        help: "owner name recorded with every lock",
    },
    Setting {
        name: "stale_after",
        default: "30m",
        help: "a lock without a lease and with no sign of life for this long is stale (sweeper backstop; --steal-stale may take it); recorded with each lock when granted, at least 1m",
    },
    Setting {
        name: "history_retention",
        default: "30d",
        help: "how long the audit history is kept (at least 1h); a new store records it, later callers can lengthen it but not shorten it",
    },
    Setting {
        name: "durability",
        default: "normal",
        help: "normal (fast; a power loss may undo the last grants, fences stay unique) or full (fsync every grant)",
    },
    Setting {
        name: "busy_timeout",
        default: "30s",
        help: "how long a command waits for another process's database transaction",
    },
    Setting {
        name: "task_hook",
        default: "",
        help: "sweeper: command run as `HOOK TASK_ID`; exit 0 means the task is done and its lock ends (task_completed)",
    },
    Setting {
        name: "store",
        default: "sqlite:",
        help: "the store: sqlite: (the embedded file in home), sqlite:///path/to/locksmith.db, or postgres://USER:PASSWORD@HOST/DATABASE (?schema=NAME, ?listen=off&prepare=off behind PgBouncer); --store overrides it; printed without its password",
    },
    Setting {
        name: "server",
        default: "",
        help: "a locksmith server (http://HOST:PORT) that every command uses instead of the embedded store; --server overrides it",
    },
    Setting {
        name: "token",
        default: "",
        help: "the bearer token sent to the server (printed redacted)",
    },
    Setting {
        name: "allow_network_fs",
        default: "false",
        help: "allow the store on a network filesystem (unsafe: its file locking cannot be trusted)",
    },
];

/// The effective configuration.
pub struct Config {
    values: BTreeMap<&'static str, (String, Source)>,
}

impl Config {
    /// Loads defaults, the file, then the environment.
    pub fn load(explicit_file: Option<&Path>) -> anyhow::Result<Config> {
        let mut values: BTreeMap<&'static str, (String, Source)> = SETTINGS
            .iter()
            .map(|s| (s.name, (s.default.to_string(), Source::Default)))
            .collect();
        values.insert(
            "home",
            (default_home().display().to_string(), Source::Default),
        );
        values.insert("owner", (locksmith_host::default_owner(), Source::Default));
        if let Ok(h) = std::env::var("LOCKSMITH_HOME")
            && !h.is_empty()
        {
            values.insert("home", (h, Source::Env("LOCKSMITH_HOME".into())));
        }
        let file = match explicit_file {
            Some(f) => Some(f.to_path_buf()),
            None => {
                let f = PathBuf::from(&values["home"].0).join("locksmith.toml");
                f.exists().then_some(f)
            }
        };
        if let Some(file) = file {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read the config file {}", file.display()))?;
            let table: toml::Table = toml::from_str(&text)
                .with_context(|| format!("invalid config file {}", file.display()))?;
            for (k, v) in table {
                let Some(s) = SETTINGS.iter().find(|s| s.name == k && s.name != "home") else {
                    let names: Vec<_> = SETTINGS
                        .iter()
                        .filter(|s| s.name != "home")
                        .map(|s| s.name)
                        .collect();
                    bail!(
                        "unknown setting {k:?} in {}; known settings: {}",
                        file.display(),
                        names.join(", ")
                    );
                };
                let text = match v {
                    toml::Value::String(s) => s,
                    toml::Value::Integer(i) => i.to_string(),
                    toml::Value::Boolean(b) => b.to_string(),
                    other => bail!(
                        "setting {k:?} in {}: expected text such as \"30m\", found {}",
                        file.display(),
                        other.type_str()
                    ),
                };
                values.insert(s.name, (text, Source::File(file.clone())));
            }
        }
        for s in SETTINGS {
            let var = format!("LOCKSMITH_{}", s.name.to_uppercase());
            if let Ok(v) = std::env::var(&var)
                && !v.is_empty()
            {
                values.insert(s.name, (v, Source::Env(var)));
            }
        }
        let cfg = Config { values };
        cfg.options()?;
        Ok(cfg)
    }

    fn get(&self, name: &str) -> &(String, Source) {
        &self.values[name]
    }

    fn duration(&self, name: &str) -> anyhow::Result<Duration> {
        let (v, src) = self.get(name);
        parse_duration(v).map_err(|e| anyhow::anyhow!("{name} (from {src}): {e}"))
    }

    /// The store folder.
    pub fn home(&self) -> PathBuf {
        PathBuf::from(&self.get("home").0)
    }

    /// The store file.
    pub fn db_path(&self) -> PathBuf {
        self.home().join("locksmith.db")
    }

    /// The default owner.
    pub fn owner(&self) -> String {
        self.get("owner").0.clone()
    }

    /// The owner when one was set (environment or config file), not defaulted.
    pub fn owner_set(&self) -> Option<String> {
        let (v, src) = self.get("owner");
        (!matches!(src, Source::Default)).then(|| v.clone())
    }

    /// The store URL.
    pub fn store(&self) -> String {
        match self.get("store").0.trim() {
            "" => "sqlite:".to_string(),
            s => s.to_string(),
        }
    }

    /// The server to use instead of the embedded store, if set.
    pub fn server(&self) -> Option<String> {
        Some(self.get("server").0.clone()).filter(|s| !s.trim().is_empty())
    }

    /// The bearer token for the server, if set.
    pub fn token(&self) -> Option<String> {
        Some(self.get("token").0.clone()).filter(|s| !s.trim().is_empty())
    }

    /// The sweeper's task hook, if set.
    pub fn task_hook(&self) -> Option<String> {
        Some(self.get("task_hook").0.clone()).filter(|h| !h.trim().is_empty())
    }

    /// Store options.
    pub fn options(&self) -> anyhow::Result<Options> {
        let durability = match self.get("durability").0.as_str() {
            "normal" => Durability::Normal,
            "full" => Durability::Full,
            other => bail!(
                "durability (from {}): {other:?} is not normal or full",
                self.get("durability").1
            ),
        };
        let allow = match self.get("allow_network_fs").0.as_str() {
            "true" | "1" | "yes" => true,
            "false" | "0" | "no" => false,
            other => bail!(
                "allow_network_fs (from {}): {other:?} is not true or false",
                self.get("allow_network_fs").1
            ),
        };
        let stale_after = self.duration("stale_after")?;
        locksmith_core::validate::stale_after(stale_after).map_err(|e| {
            anyhow::anyhow!("stale_after (from {}): {e}", self.get("stale_after").1)
        })?;
        let history_retention = self.duration("history_retention")?;
        locksmith_core::validate::history_retention(history_retention).map_err(|e| {
            anyhow::anyhow!(
                "history_retention (from {}): {e}",
                self.get("history_retention").1
            )
        })?;
        Ok(Options {
            stale_after,
            history_retention,
            durability,
            busy_timeout: self.duration("busy_timeout")?,
            allow_network_fs: allow,
            short_lived: false,
        })
    }

    /// The PostgreSQL store's settings: the store options, and the life
    /// files of process-bound locks where the embedded store keeps them.
    pub fn postgres_options(&self) -> anyhow::Result<locksmith_postgres::Options> {
        Ok(locksmith_postgres::Options {
            life_dir: Some(self.home()),
            ..crate::postgres_options(&self.options()?)
        })
    }

    /// `(name, value, source, help)` for every setting; secrets redacted.
    pub fn rows(&self) -> Vec<(&'static str, String, Source, &'static str)> {
        SETTINGS
            .iter()
            .map(|s| {
                let (v, src) = self.get(s.name);
                let shown = match s.name {
                    "token" if !v.is_empty() => "<redacted>".to_string(),
                    "store" => locksmith_postgres::redact(v),
                    _ => v.clone(),
                };
                (s.name, shown, src.clone(), s.help)
            })
            .collect()
    }
}

/// A commented example `locksmith.toml`.
pub fn example() -> String {
    let mut out = String::from(
        "# locksmith.toml: put it in $LOCKSMITH_HOME (or pass --config FILE).\n\
         # Precedence: flags > environment (LOCKSMITH_<NAME>) > this file > defaults.\n\n",
    );
    for s in SETTINGS.iter().filter(|s| s.name != "home") {
        out.push_str(&format!(
            "# {}\n# environment: LOCKSMITH_{}\n",
            s.help,
            s.name.to_uppercase()
        ));
        let value = match s.name {
            "allow_network_fs" => s.default.to_string(),
            "owner" => "\"agent-1\"".to_string(),
            "task_hook" => "\"/usr/local/bin/task-state\"".to_string(),
            "server" => "\"http://127.0.0.1:7420\"".to_string(),
            "store" => "\"postgres://locksmith:PASSWORD@db.internal/locks\"".to_string(),
            "token" => "\"lst_...\"".to_string(),
            _ => format!("{:?}", s.default),
        };
        out.push_str(&format!("# {} = {value}\n\n", s.name));
    }
    out
}

/// Duration text for display, `-` for none.
pub fn show_duration(d: Option<Duration>) -> String {
    d.map(format_duration).unwrap_or_else(|| "-".into())
}
