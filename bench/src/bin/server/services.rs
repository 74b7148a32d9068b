//! The servers under test: each started here on 127.0.0.1 on a free port,
//! with its data in a fresh temporary folder, waited for until it answers,
//! and stopped (killed if it will not stop) when its [`Service`] is dropped,
//! also while a panic unwinds.

use std::fs::File;
use std::io::{BufRead as _, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};
use tempfile::TempDir;

/// How long a service may take to answer after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a service may take to stop before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the clients of a service connect.
#[derive(Clone, Debug)]
pub(super) enum Endpoint {
    /// `http://127.0.0.1:PORT` of `locksmith serve`.
    Locksmith(String),
    /// `redis://127.0.0.1:PORT/`.
    Redis(String),
    /// A libpq-style connection string for 127.0.0.1.
    Postgres(String),
    /// `http://127.0.0.1:PORT` of etcd's JSON gateway.
    Etcd(String),
}

/// One running server.
pub(super) struct Service {
    /// The server process.
    child: Child,
    /// The signal that stops it cleanly.
    stop: Signal,
    /// Where its clients connect.
    pub(super) endpoint: Endpoint,
    /// Its log (stdout and stderr), for error messages.
    log: PathBuf,
    /// Its data; removed after the process has stopped (fields drop after `drop`).
    _dir: TempDir,
}

impl Drop for Service {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        if let Some(pid) = Pid::from_raw(self.child.id() as i32) {
            let _ = kill_process(pid, self.stop);
        }
        let until = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < until {
            if matches!(self.child.try_wait(), Ok(Some(_)) | Err(_)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Service {
    /// The last lines of its log, for an error message.
    pub(super) fn log_tail(&self) -> String {
        log_tail(&self.log)
    }
}

/// The last few lines of a log file.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(6)..].join(" / ")
}

/// A port that was free on 127.0.0.1 a moment ago.
fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port on 127.0.0.1: {e}"))
}

/// A fresh data folder under /tmp.
fn data_dir(prefix: &str) -> Result<TempDir, String> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|e| format!("cannot create a data folder: {e}"))
}

/// Starts `cmd` with stdout and stderr going to `log`.
fn spawn_logged(mut cmd: Command, log: &Path) -> Result<Child, String> {
    let out = File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let err = out
        .try_clone()
        .map_err(|e| format!("{}: {e}", log.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot start {:?}: {e}", cmd.get_program()))
}

/// Polls `ready` every 20 ms until it answers true, the process exits, or
/// [`START_TIMEOUT`] passes.
fn wait_ready(
    service: &mut Service,
    what: &str,
    mut ready: impl FnMut(&Endpoint) -> bool,
) -> Result<(), String> {
    let until = Instant::now() + START_TIMEOUT;
    while Instant::now() < until {
        if let Ok(Some(status)) = service.child.try_wait() {
            return Err(format!(
                "{what} exited at start ({status}): {}",
                service.log_tail()
            ));
        }
        if ready(&service.endpoint) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!(
        "{what} did not answer within {} s: {}",
        START_TIMEOUT.as_secs(),
        service.log_tail()
    ))
}

/// `locksmith serve --listen 127.0.0.1:0` over a fresh `$LOCKSMITH_HOME`,
/// with the store's defaults or with `durability = full`; ready once it
/// prints its address.
pub(super) fn locksmith(bin: &Path, full: bool) -> Result<Service, String> {
    let dir = data_dir("locksmith-server-ls-")?;
    let log = dir.path().join("serve.log");
    let err = File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let mut child = Command::new(bin)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("LOCKSMITH_HOME", dir.path().join("home"))
        .env_remove("LOCKSMITH_STORE")
        .env("LOCKSMITH_DURABILITY", if full { "full" } else { "normal" })
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    // The first line names the address; the rest of stdout is drained so
    // that the server never writes into a closed pipe.
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let _ = tx.send(lines.next());
        for _ in lines.by_ref() {}
    });
    let mut service = Service {
        child,
        stop: Signal::TERM,
        endpoint: Endpoint::Locksmith(String::new()),
        log,
        _dir: dir,
    };
    let line = match rx.recv_timeout(START_TIMEOUT) {
        Ok(Some(Ok(line))) => line,
        _ => {
            return Err(format!(
                "locksmith serve printed no address: {}",
                service.log_tail()
            ));
        }
    };
    let url = line
        .strip_prefix("listening on ")
        .filter(|u| u.starts_with("http://127.0.0.1:"))
        .ok_or_else(|| format!("unexpected first line of locksmith serve: {line:?}"))?;
    service.endpoint = Endpoint::Locksmith(url.trim().to_string());
    Ok(service)
}

/// `redis-server` on 127.0.0.1 with persistence off, or with an
/// append-only file written with `appendfsync always`.
pub(super) fn redis(bin: &Path, fsync_always: bool) -> Result<Service, String> {
    let dir = data_dir("locksmith-server-redis-")?;
    let port = free_port()?;
    let log = dir.path().join("redis.log");
    let mut cmd = Command::new(bin);
    cmd.args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .arg("--dir")
        .arg(dir.path())
        .args(["--daemonize", "no", "--save", ""]);
    match fsync_always {
        true => cmd.args(["--appendonly", "yes", "--appendfsync", "always"]),
        false => cmd.args(["--appendonly", "no"]),
    };
    let child = spawn_logged(cmd, &log)?;
    let mut service = Service {
        child,
        stop: Signal::TERM,
        endpoint: Endpoint::Redis(format!("redis://127.0.0.1:{port}/")),
        log,
        _dir: dir,
    };
    wait_ready(&mut service, "redis-server", |e| {
        let Endpoint::Redis(url) = e else {
            return false;
        };
        redis::Client::open(url.as_str())
            .and_then(|c| c.get_connection())
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_ok_and(|p| p == "PONG")
    })?;
    Ok(service)
}

/// A single-member etcd cluster on 127.0.0.1 (client and peer ports).
pub(super) fn etcd(bin: &Path) -> Result<Service, String> {
    let dir = data_dir("locksmith-server-etcd-")?;
    let (client, peer) = (free_port()?, free_port()?);
    let log = dir.path().join("etcd.log");
    let client_url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let mut cmd = Command::new(bin);
    cmd.args(["--name", "bench"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--listen-client-urls", &client_url])
        .args(["--advertise-client-urls", &client_url])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("bench={peer_url}")])
        .args(["--initial-cluster-state", "new"]);
    let child = spawn_logged(cmd, &log)?;
    let mut service = Service {
        child,
        stop: Signal::TERM,
        endpoint: Endpoint::Etcd(client_url),
        log,
        _dir: dir,
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(1)))
        .http_status_as_error(false)
        .build()
        .into();
    wait_ready(&mut service, "etcd", |e| {
        let Endpoint::Etcd(url) = e else {
            return false;
        };
        agent
            .get(format!("{url}/health"))
            .call()
            .ok()
            .filter(|r| r.status() == 200)
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .is_some_and(|b| b.contains("true"))
    })?;
    Ok(service)
}

/// Uid and gid of a user, from /etc/passwd.
fn user_ids(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 3 && f[0] == name).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

/// A fresh PostgreSQL cluster (`initdb`, trust authentication) served by
/// `postgres` on 127.0.0.1 with its default durability settings; as root,
/// both run as `user` (PostgreSQL refuses to run as root).
pub(super) fn postgres(bin: &Path, user: &str) -> Result<Service, String> {
    let dir = data_dir("locksmith-server-pg-")?;
    let ids = match rustix::process::geteuid().is_root() {
        true => Some(user_ids(user).ok_or_else(|| {
            format!(
                "running as root and there is no user {user:?} to run PostgreSQL as (--pg-user)"
            )
        })?),
        false => None,
    };
    if let Some((uid, gid)) = ids {
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
            .map_err(|e| format!("cannot hand {} to {user}: {e}", dir.path().display()))?;
    }
    let as_user = |program: &str| {
        let mut cmd = Command::new(bin.join(program));
        if let Some((uid, gid)) = ids {
            use std::os::unix::process::CommandExt as _;
            cmd.uid(uid).gid(gid);
        }
        cmd
    };
    let data = dir.path().join("data");
    let init_log = dir.path().join("initdb.log");
    let mut init = as_user("initdb");
    init.arg("-D")
        .arg(&data)
        .args(["-U", "bench", "-A", "trust", "-E", "UTF8", "--no-sync"]);
    let status = spawn_logged(init, &init_log)?
        .wait()
        .map_err(|e| format!("initdb: {e}"))?;
    if !status.success() {
        return Err(format!("initdb failed ({status}): {}", log_tail(&init_log)));
    }
    let port = free_port()?;
    let log = dir.path().join("postgres.log");
    let mut cmd = as_user("postgres");
    cmd.arg("-D")
        .arg(&data)
        .args(["-p", &port.to_string()])
        .args(["-c", "listen_addresses=127.0.0.1"])
        .arg("-k")
        .arg(dir.path());
    let child = spawn_logged(cmd, &log)?;
    let mut service = Service {
        child,
        // Fast shutdown: SIGTERM would wait for every session to end.
        stop: Signal::INT,
        endpoint: Endpoint::Postgres(format!(
            "host=127.0.0.1 port={port} user=bench dbname=postgres connect_timeout=5"
        )),
        log,
        _dir: dir,
    };
    wait_ready(&mut service, "postgres", |e| {
        let Endpoint::Postgres(conn) = e else {
            return false;
        };
        postgres::Client::connect(conn, postgres::NoTls)
            .and_then(|mut c| c.simple_query("SELECT 1"))
            .is_ok()
    })?;
    Ok(service)
}

/// The first line of `PROGRAM --version`.
pub(super) fn version(program: &Path) -> String {
    Some(locksmith_bench::first_line(program, &["--version"]))
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| format!("unknown ({} --version gave nothing)", program.display()))
}
