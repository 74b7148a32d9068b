//! The Rust examples of the README and docs/http.md, run as written: each
//! is the body of a function below, checked to be the same text as the
//! block, and run in a process of its own (this test binary, started
//! again for that one function) with a home folder of its own; the one
//! against a server runs beside a `locksmith serve` on 127.0.0.1:7420 in a
//! network namespace of its own (as root, as CI runs; skipped otherwise).

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{blocks, is_root, output_of_group, quoted};

/// Set in the process that runs one example.
const INNER: &str = "LOCKSMITH_DOCS_EXAMPLE";

static WRITTEN: AtomicU64 = AtomicU64::new(0);

/// What the README's example writes to: remembers the fence.
fn write_with_fence(fence: locksmith::Fence) {
    WRITTEN.store(fence.0, Ordering::SeqCst);
}

#[rustfmt::skip]
async fn readme_example() -> Result<(), locksmith::Error> {
    use std::time::Duration;

    let client = locksmith::Client::open("sqlite:")?;   // $LOCKSMITH_HOME/locksmith.db
    let guard = client
        .lock("repo/acme")
        .ttl(Duration::from_secs(30))
        .wait(Duration::from_secs(60))
        .acquire()
        .await?;
    write_with_fence(guard.fence());   // the resource refuses fences older than the newest it saw
    drop(guard);                       // renewed in the background until now; released here
    Ok(())
}

#[rustfmt::skip]
async fn http_example() -> Result<locksmith::Guard, locksmith::Error> {
    let client = locksmith::Client::open("http://127.0.0.1:7420")?;   // token from $LOCKSMITH_TOKEN
    let guard = client.lock("repo/acme").ttl(Duration::from_secs(30)).wait(Duration::from_secs(60)).acquire().await?;
    Ok(guard)
}

/// The lines of `text`, trimmed, without blank ones.
fn trimmed(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect()
}

/// Asserts that the Rust block of `file` is, line for line, text of this file.
fn written_here(file: &str) {
    let this = trimmed(include_str!("rust.rs"));
    let rust: Vec<_> = blocks(file)
        .into_iter()
        .filter(|b| b.lang == "rust")
        .collect();
    assert_eq!(rust.len(), 1, "{file} has one Rust example");
    let block = trimmed(&rust[0].code);
    assert!(
        this.windows(block.len()).any(|w| w == block.as_slice()),
        "{file}:{}: the Rust example is not the one tested in docs/rust.rs; copy it there",
        rust[0].line
    );
}

/// Runs `test` (one of the `inner_*` tests) in a new process of this test
/// binary, from a shell that first runs `setup`.
fn run_inner(test: &str, setup: &str, own_net: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_locksmith")).parent().unwrap();
    let script = format!(
        "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n{setup}\n{} --exact docs::rust::{test} --nocapture --test-threads 1",
        quoted(&exe.to_string_lossy())
    );
    let mut c = match own_net {
        true => {
            let mut c = Command::new("unshare");
            c.args(["--net", "--", "setsid", "bash", "-c"]);
            c
        }
        false => {
            let mut c = Command::new("setsid");
            c.args(["bash", "-c"]);
            c
        }
    };
    let child = c
        .arg(format!("set -e\n{script}"))
        .current_dir(tmp.path())
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("LOCKSMITH_HOME", tmp.path())
        .env(INNER, "1")
        .env_remove("LOCKSMITH_OWNER")
        .env_remove("LOCKSMITH_SERVER")
        .env_remove("LOCKSMITH_STORE")
        .env_remove("LOCKSMITH_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = output_of_group(child, Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{test} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn inner_readme_example() {
    if std::env::var_os(INNER).is_none() {
        return;
    }
    runtime()
        .block_on(readme_example())
        .expect("the README example runs");
    assert!(
        WRITTEN.load(Ordering::SeqCst) > 0,
        "the guard's fence was written"
    );
    // The guard was dropped: another owner takes the lock at once.
    let client = locksmith::Client::open("sqlite:").unwrap();
    let other = runtime().block_on(client.lock("repo/acme").owner("other").acquire());
    assert!(other.is_ok(), "released on drop: {:?}", other.err());
}

#[test]
fn inner_http_example() {
    if std::env::var_os(INNER).is_none() {
        return;
    }
    let guard = runtime()
        .block_on(http_example())
        .expect("the example runs against the server");
    assert!(guard.fence().0 > 0);
}

#[test]
fn the_readme_rust_example_runs_as_written() {
    written_here("README.md");
    run_inner("inner_readme_example", "true", false);
}

#[test]
fn the_http_rust_example_runs_as_written() {
    written_here("docs/http.md");
    if !is_root() {
        eprintln!("skipped: a network namespace of its own needs root (CI runs as root)");
        return;
    }
    let setup = "ip link set lo up\n\
        locksmith serve > serve.log 2>&1 &\n\
        for _ in $(seq 300); do grep -q '^listening on' serve.log && break; sleep 0.1; done";
    run_inner("inner_http_example", setup, true);
}
