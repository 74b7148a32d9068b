//! The README's five-minute tour, run as written: every command line of its
//! first `sh` block in one shell, each expected to exit 0, or with the
//! status its comment names ("exit 3"), on a store and a home folder of its
//! own, bounded in time.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::output_within;

/// The first ```sh block after `heading` in the README.
fn block(readme: &str, heading: &str) -> String {
    let after = &readme[readme.find(heading).expect("the heading is in the README")..];
    let start = after.find("```sh\n").expect("an sh block follows") + "```sh\n".len();
    let end = after[start..].find("```").expect("the block ends");
    after[start..start + end].to_string()
}

/// The block as a script that checks every command's exit status.
fn checked(block: &str) -> String {
    let mut script = String::from("set -u\n");
    for (n, line) in block.lines().enumerate() {
        let code = line.split('#').next().unwrap_or("").trim();
        if code.is_empty() {
            continue;
        }
        script.push_str(line);
        script.push('\n');
        if code.ends_with('&') {
            continue;
        }
        let want = line
            .split("exit ")
            .nth(1)
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|d| d.parse::<i32>().ok())
            .filter(|_| line.contains('#'))
            .unwrap_or(0);
        let shown = code.replace('\'', "'\\''");
        script.push_str(&format!(
            "rc=$?; if [ $rc -ne {want} ]; then echo 'line {}: exit '$rc', expected {want}: {shown}' >&2; exit 1; fi\n",
            n + 1
        ));
    }
    // Background commands must have ended well too.
    script.push_str("for job in $(jobs -p); do wait $job || { echo 'a background command failed' >&2; exit 1; }; done\n");
    script
}

#[test]
fn the_five_minute_tour_runs_as_written() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .expect("README.md");
    let tour = block(&readme, "## Five-minute tour");
    let script = checked(&tour);
    let home = tempfile::tempdir().unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_locksmith")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let child = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(home.path())
        .env("PATH", path)
        .env("HOME", home.path())
        .env("LOCKSMITH_HOME", home.path().join("locksmith"))
        .env_remove("LOCKSMITH_OWNER")
        .env_remove("LOCKSMITH_SERVER")
        .env_remove("LOCKSMITH_STORE")
        .env_remove("LOCKSMITH_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bash runs");
    let out = output_within(child, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "the tour failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
