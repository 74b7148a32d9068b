//! A real PostgreSQL server for tests and benchmarks: `initdb` into a
//! temporary folder, listening on 127.0.0.1 on a free port, stopped (and
//! its folder removed) when the process that started it exits, however it
//! exits. `LOCKSMITH_TEST_PG_URL` points at an existing server instead.
//!
//! The server is started through a small shell that waits on a pipe from
//! this process: when the pipe closes (exit, SIGKILL, a panic), the shell
//! stops the server with a fast shutdown and removes its folder. Run as
//! root, the server runs as the `postgres` user, as PostgreSQL requires.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A running server.
pub struct PgServer {
    /// `postgres://…` of its `postgres` database, as superuser.
    pub url: String,
    /// Its data folder (empty for an existing server).
    pub data: PathBuf,
    /// Its port (0 for an existing server).
    pub port: u16,
    bin: PathBuf,
    as_postgres: bool,
    /// The folder of its data, socket and log, removed at the end.
    dir: PathBuf,
    /// Its `-c name=value` settings, kept for a restart.
    settings: Vec<String>,
    keeper: Mutex<Option<Child>>,
    retired: Mutex<Vec<Child>>,
}

/// The folder of PostgreSQL's programs: `pg_config --bindir`, else the
/// newest `/usr/lib/postgresql/*/bin` (Debian keeps them out of `PATH`).
pub fn bindir() -> Option<PathBuf> {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return Some(dir);
        }
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, b)| b)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Shell-quotes one word.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl PgServer {
    /// The server shared by every test of this process: started on first
    /// use, or the one of `LOCKSMITH_TEST_PG_URL`.
    pub fn shared() -> &'static PgServer {
        static SERVER: OnceLock<PgServer> = OnceLock::new();
        SERVER.get_or_init(|| match std::env::var("LOCKSMITH_TEST_PG_URL") {
            Ok(url) if !url.is_empty() => PgServer {
                url,
                data: PathBuf::new(),
                port: 0,
                bin: bindir().unwrap_or_default(),
                as_postgres: false,
                dir: PathBuf::new(),
                settings: Vec::new(),
                keeper: Mutex::new(None),
                retired: Mutex::new(Vec::new()),
            },
            _ => PgServer::start(&[]).expect("start a PostgreSQL server for the tests"),
        })
    }

    /// Starts a new server with extra `-c name=value` settings.
    pub fn start(settings: &[&str]) -> Result<PgServer, String> {
        let bin = bindir().ok_or(
            "PostgreSQL is not installed: apt-get install postgresql (or set LOCKSMITH_TEST_PG_URL)",
        )?;
        let as_postgres = is_root();
        let dir = std::env::temp_dir().join(format!(
            "locksmith-pg-{}-{}",
            std::process::id(),
            locksmith_host::random_hex(4)
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if as_postgres {
            let ok = Command::new("chown")
                .args(["postgres:postgres", &dir.to_string_lossy()])
                .status()
                .map_err(|e| e.to_string())?;
            if !ok.success() {
                return Err("cannot hand the data folder to the postgres user".into());
            }
        }
        let data = dir.join("data");
        let port = free_port();
        let server = PgServer {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            data: data.clone(),
            port,
            bin,
            as_postgres,
            settings: [
                "listen_addresses=127.0.0.1".to_string(),
                format!("unix_socket_directories={}", dir.display()),
                "max_connections=300".into(),
                // Tests never lose the machine, only the server process.
                "fsync=off".into(),
            ]
            .into_iter()
            .chain(settings.iter().map(|s| s.to_string()))
            .collect(),
            dir,
            keeper: Mutex::new(None),
            retired: Mutex::new(Vec::new()),
        };
        let out = server
            .command("initdb")
            .args(["-N", "-A", "trust", "-U", "postgres", "-E", "UTF8"])
            .arg("-D")
            .arg(&data)
            .output()
            .map_err(|e| format!("initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        server.launch()?;
        Ok(server)
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        match self.as_postgres {
            true => {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(path);
                c
            }
            false => Command::new(path),
        }
    }

    /// Starts `postgres` under the keeper shell and waits until it answers.
    fn launch(&self) -> Result<(), String> {
        let dir = &self.dir;
        let mut cmd = format!(
            "{} -D {} -p {}",
            quote(&self.bin.join("postgres").to_string_lossy()),
            quote(&self.data.to_string_lossy()),
            self.port
        );
        for o in &self.settings {
            cmd.push_str(&format!(" -c {}", quote(o)));
        }
        let stop = format!(
            "{} stop -m fast -w -D {}",
            quote(&self.bin.join("pg_ctl").to_string_lossy()),
            quote(&self.data.to_string_lossy())
        );
        let (run, stop) = match self.as_postgres {
            true => (
                format!("runuser -u postgres -- {cmd}"),
                format!("runuser -u postgres -- {stop}"),
            ),
            false => (cmd, stop),
        };
        // pg_ctl, not a signal: runuser does not pass signals on.
        let script = format!(
            "{run} >{log} 2>&1 & pid=$!\nread _ignored\n{stop} >/dev/null 2>&1\nwait $pid\nrm -rf {dir}\n",
            log = quote(&dir.join("log").to_string_lossy()),
            dir = quote(&dir.to_string_lossy()),
        );
        let child = keeper(&script)?;
        *self.keeper.lock().unwrap_or_else(|p| p.into_inner()) = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.ready() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "PostgreSQL did not start within 30s: {}",
            std::fs::read_to_string(dir.join("log")).unwrap_or_default()
        ))
    }

    /// True when the server accepts connections.
    pub fn ready(&self) -> bool {
        Command::new(self.bin.join("pg_isready"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Runs `psql -c sql` against the server's `postgres` database.
    pub fn psql(&self, sql: &str) -> Result<String, String> {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                &self.url,
                "-c",
                sql,
            ])
            .output()
            .map_err(|e| format!("psql: {e}"))?;
        match out.status.success() {
            true => Ok(String::from_utf8_lossy(&out.stdout).trim().to_string()),
            false => Err(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        }
    }

    /// The URL of a fresh schema of its own on this server.
    pub fn fresh_schema_url(&self) -> String {
        format!("{}?schema=t_{}", self.url, locksmith_host::random_hex(6))
    }

    /// Stops the server at once, as a crash would (`pg_ctl stop -m immediate`).
    pub fn crash(&self) -> Result<(), String> {
        self.pg_ctl(&["stop", "-m", "immediate", "-w"])
    }

    /// Starts a server stopped by [`PgServer::crash`] again (recovery runs).
    pub fn restart(&self) -> Result<(), String> {
        // The old keeper's server is gone; it stays (pipe open) until the
        // end, when it stops whatever runs in the folder and removes it.
        let old = self.keeper.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.retired
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(old);
        self.launch()
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<(), String> {
        let out = self
            .command("pg_ctl")
            .args(args)
            .arg("-D")
            .arg(&self.data)
            .output()
            .map_err(|e| format!("pg_ctl: {e}"))?;
        match out.status.success() {
            true => Ok(()),
            false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
        }
    }
}

/// Runs `script` in a shell that reads its standard input from us: the
/// script starts a service, waits for a line or the end of input (our
/// exit, however it comes), then stops the service and cleans up.
fn keeper(script: &str) -> Result<Child, String> {
    Command::new("sh")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("sh: {e}"))
}

/// Tells a keeper to stop its service now, and waits for it.
fn stop_keeper(mut child: Child) {
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(b"stop\n");
    }
    let _ = child.wait();
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let current = self.keeper.lock().unwrap_or_else(|p| p.into_inner()).take();
        let retired = std::mem::take(&mut *self.retired.lock().unwrap_or_else(|p| p.into_inner()));
        current.into_iter().chain(retired).for_each(stop_keeper);
    }
}

/// PgBouncer in transaction pooling mode in front of a [`PgServer`], on a
/// free port of 127.0.0.1, stopped when this process exits.
pub struct Bouncer {
    /// `postgres://…` of the `postgres` database through the pooler.
    pub url: String,
    keeper: Mutex<Option<Child>>,
}

impl Bouncer {
    /// Starts one (Debian's `pgbouncer` package).
    pub fn start(server: &PgServer) -> Result<Bouncer, String> {
        let program = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .ok_or("PgBouncer is not installed: apt-get install pgbouncer")?;
        let (host, port) = match server.port {
            0 => {
                return Err(
                    "PgBouncer tests need the server the tests start (unset LOCKSMITH_TEST_PG_URL)"
                        .into(),
                );
            }
            p => ("127.0.0.1", p),
        };
        let dir = std::env::temp_dir().join(format!(
            "locksmith-bouncer-{}-{}",
            std::process::id(),
            locksmith_host::random_hex(4)
        ));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let listen = free_port();
        let pidfile = dir.join("pgbouncer.pid");
        let ini = format!(
            "[databases]\npostgres = host={host} port={port} dbname=postgres\n\n\
             [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {listen}\n\
             unix_socket_dir =\nauth_type = trust\nauth_file = {users}\n\
             pool_mode = transaction\nmax_client_conn = 500\ndefault_pool_size = 10\n\
             ignore_startup_parameters = extra_float_digits,options\n\
             logfile = {log}\npidfile = {pid}\n",
            users = dir.join("users.txt").display(),
            log = dir.join("pgbouncer.log").display(),
            pid = pidfile.display(),
        );
        std::fs::write(dir.join("users.txt"), "\"postgres\" \"\"\n").map_err(|e| e.to_string())?;
        std::fs::write(dir.join("pgbouncer.ini"), ini).map_err(|e| e.to_string())?;
        let run = format!(
            "{program} -d {}",
            quote(&dir.join("pgbouncer.ini").to_string_lossy())
        );
        let run = match server.as_postgres {
            true => {
                Command::new("chown")
                    .args(["-R", "postgres:postgres", &dir.to_string_lossy()])
                    .status()
                    .map_err(|e| e.to_string())?;
                format!("runuser -u postgres -- {run}")
            }
            false => run,
        };
        let script = format!(
            "{run} || exit 1\nread _ignored\nkill -INT $(cat {pid}) 2>/dev/null\nsleep 0.2\nrm -rf {dir}\n",
            pid = quote(&pidfile.to_string_lossy()),
            dir = quote(&dir.to_string_lossy()),
        );
        let child = keeper(&script)?;
        let bouncer = Bouncer {
            url: format!("postgres://postgres@127.0.0.1:{listen}/postgres"),
            keeper: Mutex::new(Some(child)),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", listen)).is_ok() {
                return Ok(bouncer);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "PgBouncer did not start: {}",
            std::fs::read_to_string(dir.join("pgbouncer.log")).unwrap_or_default()
        ))
    }

    /// The URL of a fresh schema through the pooler. LISTEN cannot work
    /// through a pooler in transaction mode, so it is off: waiters on this
    /// machine are woken directly, others look again every second.
    pub fn fresh_schema_url(&self) -> String {
        format!(
            "{}?schema=t_{}&listen=off",
            self.url,
            locksmith_host::random_hex(6)
        )
    }
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        let current = self.keeper.lock().unwrap_or_else(|p| p.into_inner()).take();
        current.into_iter().for_each(stop_keeper);
    }
}
