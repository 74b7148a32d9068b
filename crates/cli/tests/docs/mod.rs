//! Every shell example of the README and `docs/`, run as written: each
//! ```sh block in one shell of its own, every command expected to exit 0, or
//! with the status its comment names ("exit 3"), on a home folder and store of
//! its own, bounded in time.
//!
//! A line ending in `&` runs in the background; a `locksmith serve` line is
//! waited for until it prints `listening on http://…`. When the block ends,
//! whatever still runs in the background gets SIGTERM, and every background
//! command must have exited 0.
//!
//! An HTML comment on the line before a block says how it is run:
//!
//! - `<!-- docs-test: skip (REASON) -->`: not run, for the reason given;
//! - `<!-- docs-test: server -->`: a `locksmith serve` is started first;
//! - `<!-- docs-test: each line a server -->`: each line starts a server,
//!   which must print its address and stop with exit 0 on SIGTERM;
//! - `<!-- docs-test: postgres -->`: against a PostgreSQL server started for
//!   the test, reached as a superuser through `PGHOST`/`PGPORT`/`PGUSER`.
//!
//! The names a reader must put their own values in for are given real
//! ones: `db.internal` is that PostgreSQL server and `PASSWORD` the password
//! typed at `--pwprompt`, `locks.internal` is this machine, `lst_...` a
//! token made for the block, `/srv/` a folder of the test's, and `./task.sh`
//! a script that prints its fence. Run as root (as CI is), each block that
//! needs no PostgreSQL runs in a network namespace of its own, so the fixed
//! port 7420 is always free.

mod rust;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The files whose shell examples the tests below run; every other file
/// must have none that runs (the coverage test checks it).
const FILES: [&str; 3] = ["README.md", "docs/http.md", "docs/operations.md"];

const PASSWORD: &str = "docs-example-password";

/// How a block is run.
#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Run,
    Skip(String),
    Server,
    EachLineServer,
    Postgres,
}

/// One fenced block of a Markdown file.
#[derive(Debug, Clone)]
pub(crate) struct Block {
    pub file: String,
    /// The line of its opening fence, from 1.
    pub line: usize,
    pub lang: String,
    kind: Kind,
    pub code: String,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// README.md and every `docs/*.md`, as paths from the repository's root.
fn markdown_files() -> Vec<String> {
    let mut files = vec!["README.md".to_string()];
    let mut docs: Vec<String> = std::fs::read_dir(repo().join("docs"))
        .expect("docs/")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md"))
        .map(|n| format!("docs/{n}"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

fn kind_of(marker: Option<&str>, at: &str) -> Kind {
    let Some(m) = marker else { return Kind::Run };
    match m {
        "server" => Kind::Server,
        "each line a server" => Kind::EachLineServer,
        "postgres" => Kind::Postgres,
        _ => {
            let reason = m
                .strip_prefix("skip (")
                .and_then(|r| r.strip_suffix(')'))
                .map(str::trim)
                .unwrap_or_else(|| panic!("{at}: unknown docs-test marker {m:?}"));
            assert!(!reason.is_empty(), "{at}: a skipped example says why");
            Kind::Skip(reason.to_string())
        }
    }
}

/// The fenced blocks of one file.
pub(crate) fn blocks(file: &str) -> Vec<Block> {
    let text = std::fs::read_to_string(repo().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(lang) = lines[i].strip_prefix("```") else {
            i += 1;
            continue;
        };
        let marker = i
            .checked_sub(1)
            .map(|p| lines[p].trim())
            .and_then(|l| l.strip_prefix("<!-- docs-test:"))
            .and_then(|l| l.strip_suffix("-->"))
            .map(str::trim);
        let at = format!("{file}:{}", i + 1);
        let end = (i + 1..lines.len())
            .find(|&j| lines[j].starts_with("```"))
            .unwrap_or_else(|| panic!("{at}: the block ends"));
        out.push(Block {
            file: file.to_string(),
            line: i + 1,
            lang: lang.trim().to_string(),
            kind: kind_of(marker, &at),
            code: lines[i + 1..end].join("\n") + "\n",
        });
        i = end + 1;
    }
    out
}

/// The command part of a line: up to a `#` that starts a comment.
fn command_of(line: &str) -> &str {
    let mut quote = None;
    for (n, c) in line.char_indices() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '#') if n == 0 || line[..n].ends_with(char::is_whitespace) => {
                return line[..n].trim();
            }
            _ => {}
        }
    }
    line.trim()
}

/// The exit status a line's comment names ("exit 3"), else 0.
fn expected_status(line: &str) -> i32 {
    let comment = &line[command_of(line).len().min(line.len())..];
    comment
        .split("exit ")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|d| d.parse().ok())
        .unwrap_or(0)
}

/// Single-quotes a word for the shell.
fn quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

const PRELUDE: &str = r#"set -u
pids=()
bad=0
show_logs() { for f in bg_*.log; do [ -e "$f" ] && { echo "--- $f" >&2; cat "$f" >&2; }; done; }
fail() { echo "$1" >&2; show_logs; for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done; exit 1; }
stop_all() {
    # The newest first, each once it handles SIGTERM (or after 10 s).
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        p=${pids[$i]}
        for _ in $(seq 100); do
            kill -0 "$p" 2>/dev/null || break
            mask=$(awk '/^SigCgt:/ {print $2}' "/proc/$p/status" 2>/dev/null)
            [ -n "$mask" ] && (( (16#$mask >> 14) & 1 )) && break
            sleep 0.1
        done
        kill -0 "$p" 2>/dev/null && kill -TERM "$p"
        wait "$p"; rc=$?
        [ $rc -eq 0 ] || { echo "a background command (pid $p) exited $rc" >&2; bad=1; }
    done
    pids=()
    [ $bad -eq 0 ] || fail "a background command failed"
}
ready() {
    for _ in $(seq 300); do
        grep -q '^listening on http://' "$1" && return 0
        kill -0 "$2" 2>/dev/null || break
        sleep 0.1
    done
    fail "the server of $1 did not print its address"
}
"#;

/// The block as a script that checks every command.
fn script(block: &Block) -> String {
    let mut s = String::from(PRELUDE);
    let mut bg = 0;
    let each_a_server = block.kind == Kind::EachLineServer;
    let mut background = |s: &mut String, cmd: &str, n: usize| {
        bg += 1;
        let log = format!("bg_{bg}.log");
        s.push_str(&format!("{} > {log} 2>&1 &\npids+=($!)\n", cmd.trim()));
        if each_a_server || cmd.contains("locksmith serve") {
            s.push_str(&format!("ready {log} $! # line {n}\n"));
        }
    };
    if block.kind == Kind::Server {
        background(&mut s, "locksmith serve", 0);
    }
    // Logical lines: a trailing backslash continues a command.
    let mut logical: Vec<(usize, String)> = Vec::new();
    let mut open = false;
    for (n, line) in block.code.lines().enumerate() {
        match logical.last_mut() {
            Some((_, l)) if open => {
                l.push('\n');
                l.push_str(line);
            }
            _ => logical.push((block.line + 1 + n, line.to_string())),
        }
        open = command_of(line).ends_with('\\');
    }
    for (n, line) in logical {
        let cmd = command_of(&line);
        if cmd.is_empty() {
            continue;
        }
        if block.kind == Kind::EachLineServer {
            background(&mut s, cmd, n);
            s.push_str("stop_all\n");
            continue;
        }
        if let Some(cmd) = cmd.strip_suffix('&') {
            background(&mut s, cmd, n);
            continue;
        }
        let want = expected_status(&line);
        s.push_str(&line);
        s.push('\n');
        let shown = quoted(&format!("{}:{n}: {cmd}", block.file));
        s.push_str(&format!(
            "rc=$?; [ $rc -eq {want} ] || fail \"exit $rc, expected {want}: \"{shown}\n"
        ));
    }
    s.push_str("stop_all\n");
    s
}

/// Puts real values in for the names a reader replaces with their own.
fn substituted(code: &str, tmp: &Path, pg_port: Option<u16>, token: Option<&str>) -> String {
    let mut c = code.replace("/srv/", &format!("{}/srv/", tmp.display()));
    c = c.replace("locks.internal", "127.0.0.1");
    if let Some(port) = pg_port {
        c = c
            .replace("db.internal:5432", &format!("127.0.0.1:{port}"))
            .replace("db.internal", &format!("127.0.0.1:{port}"))
            .replace("PASSWORD", PASSWORD);
    }
    if let Some(token) = token {
        c = c.replace("lst_...", token);
    }
    c
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The output of `child`, killing its whole process group after `limit`.
fn output_of_group(mut child: Child, limit: Duration) -> Output {
    let until = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > until {
            if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// Runs one block; panics with its output when a command fails.
fn run_block(block: &Block) {
    let at = format!("{}:{}", block.file, block.line);
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("locksmith");
    std::fs::create_dir(&home).unwrap();
    let task = tmp.path().join("task.sh");
    std::fs::write(
        &task,
        "#!/bin/sh\necho \"task running with fence $LOCKSMITH_FENCE\"\n",
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&task, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let bin = Path::new(env!("CARGO_BIN_EXE_locksmith")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let env_for = |c: &mut Command| {
        c.current_dir(tmp.path())
            .env("PATH", &path)
            .env("HOME", tmp.path())
            .env("LOCKSMITH_HOME", &home)
            .env_remove("LOCKSMITH_OWNER")
            .env_remove("LOCKSMITH_SERVER")
            .env_remove("LOCKSMITH_STORE")
            .env_remove("LOCKSMITH_TOKEN")
            .env_remove("LOCKSMITH_STALE_AFTER");
    };
    let token = if block.code.contains("lst_...") {
        let mut c = Command::new(env!("CARGO_BIN_EXE_locksmith"));
        c.args(["token", "create", "--name", "docs", "--role", "client"]);
        env_for(&mut c);
        let out = c.output().unwrap();
        assert!(out.status.success(), "{at}: token create failed");
        Some(String::from_utf8(out.stdout).unwrap().trim().to_string())
    } else {
        None
    };
    let pg = (block.kind == Kind::Postgres).then(|| {
        locksmith_testkit::pg::PgServer::start(&[]).expect("a PostgreSQL server for the docs")
    });
    let code = substituted(
        &block.code,
        tmp.path(),
        pg.as_ref().map(|p| p.port),
        token.as_deref(),
    );
    let mut script = script(&Block {
        code,
        ..block.clone()
    });
    // A namespace of its own: port 7420 is free, and nothing outside it is
    // reached. The PostgreSQL examples reach the server outside.
    let own_net = is_root() && pg.is_none();
    if own_net {
        script = format!("ip link set lo up || exit 1\n{script}");
    }
    let mut c = if own_net {
        let mut c = Command::new("unshare");
        c.args(["--net", "--", "setsid", "bash", "-c", &script]);
        c
    } else {
        let mut c = Command::new("setsid");
        c.args(["bash", "-c", &script]);
        c
    };
    env_for(&mut c);
    if let Some(pg) = &pg {
        c.env("PGHOST", "127.0.0.1")
            .env("PGPORT", pg.port.to_string())
            .env("PGUSER", "postgres");
    }
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bash runs");
    {
        // Typed at --pwprompt: the password and its confirmation.
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        let _ = write!(stdin, "{PASSWORD}\n{PASSWORD}\n");
    }
    let out = output_of_group(child, Duration::from_secs(120));
    assert!(
        out.status.success(),
        "{at}: the example failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs every shell block of `file` that is not skipped; returns how many.
fn run_file(file: &str) -> usize {
    let mut ran = 0;
    for block in blocks(file) {
        if block.lang == "sh" && !matches!(block.kind, Kind::Skip(_)) {
            run_block(&block);
            ran += 1;
        }
    }
    ran
}

#[test]
fn every_shell_example_is_run_by_a_test_or_says_why_not() {
    let mut skipped = Vec::new();
    for file in markdown_files() {
        for b in blocks(&file) {
            if b.lang == "sh" || b.lang == "bash" || b.lang == "shell" {
                assert_eq!(b.lang, "sh", "{file}:{}: shell examples are ```sh", b.line);
                match &b.kind {
                    Kind::Skip(why) => skipped.push(format!("{file}:{}: {why}", b.line)),
                    _ => assert!(
                        FILES.contains(&file.as_str()),
                        "{file}:{}: a shell example in a file the tests do not run (add it to FILES)",
                        b.line
                    ),
                }
            } else {
                assert!(
                    b.kind == Kind::Run,
                    "{file}:{}: docs-test markers are for shell examples",
                    b.line
                );
            }
        }
    }
    eprintln!("not run, each with its reason:\n{}", skipped.join("\n"));
}

#[test]
fn the_readme_examples_run_as_written() {
    assert!(run_file("README.md") >= 3);
}

#[test]
fn the_http_examples_run_as_written() {
    assert!(run_file("docs/http.md") >= 3);
}

#[test]
fn the_operations_examples_run_as_written() {
    assert!(run_file("docs/operations.md") >= 1);
}

#[test]
fn a_failing_example_fails_the_test() {
    // The harness itself: a command with the wrong status, a background
    // command that fails, and a server that never says where it listens
    // are each caught.
    for (code, kind) in [
        ("true\nfalse\n", Kind::Run),
        ("locksmith acquire a   # exit 3\n", Kind::Run),
        ("sh -c 'exit 2' &\nsleep 0.2\n", Kind::Run),
        ("sleep 5\n", Kind::EachLineServer),
    ] {
        let block = Block {
            file: "test.md".into(),
            line: 1,
            lang: "sh".into(),
            kind,
            code: code.into(),
        };
        let failed = std::panic::catch_unwind(|| run_block(&block)).is_err();
        assert!(failed, "{code:?} should fail");
    }
    // And one that is right passes.
    run_block(&Block {
        file: "test.md".into(),
        line: 1,
        lang: "sh".into(),
        kind: Kind::Run,
        code: "locksmith acquire a --ttl 1m\nLOCKSMITH_OWNER=b locksmith acquire a   # exit 3\n"
            .into(),
    });
}
