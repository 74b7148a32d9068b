//! What the CLI test binaries share: a store folder of their own per test,
//! and the `locksmith` binary run against it.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

/// One test's store folder.
pub struct Env {
    pub home: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        Env {
            home: tempfile::tempdir().unwrap(),
        }
    }

    /// `locksmith ARGS` on this store, as owner `tester`.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_locksmith"));
        c.args(args)
            .env("LOCKSMITH_HOME", self.home.path())
            .env("LOCKSMITH_OWNER", "tester")
            .env_remove("LOCKSMITH_STALE_AFTER")
            .env_remove("LOCKSMITH_DURABILITY")
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    pub fn spawn(&self, args: &[&str]) -> Child {
        self.cmd(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Runs with `--json` and parses standard output.
    pub fn json(&self, args: &[&str]) -> Value {
        let out = self.run(&[args, &["--json"]].concat());
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
    }

    /// A path inside the store folder.
    pub fn file(&self, name: &str) -> PathBuf {
        self.home.path().join(name)
    }

    /// The reason of the newest event of `key`.
    pub fn last_reason(&self, key: &str) -> Value {
        let h = self.json(&["history", key, "--limit", "1"]);
        h[0]["reason"].clone()
    }
}

/// Waits for `child` (started with its output piped) at most `limit`,
/// killing it then, and collects its output.
pub fn output_within(mut child: Child, limit: std::time::Duration) -> Output {
    let until = std::time::Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > until {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

pub fn code(o: &Output) -> i32 {
    o.status.code().expect("exited normally")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
