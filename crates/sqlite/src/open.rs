//! Opening the database file safely: refuse foreign, newer, corrupt or
//! network-mounted files without touching them, set the pragmas, apply the
//! migrations, and carry lease deadlines across a reboot.

use std::fs;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use locksmith_core::{Now, StoreError};
use rusqlite::config::DbConfig;
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, params};

use crate::rows::HostFacts;
use crate::{Durability, Options};

/// `PRAGMA application_id` of a locksmith database: "LKSM".
const APPLICATION_ID: i32 = 0x4C4B_534D;

/// The numbered migrations, applied in order; `user_version` is the count applied.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_init.sql"),
    include_str!("../migrations/0002_process_binding.sql"),
    include_str!("../migrations/0003_stale_after.sql"),
    include_str!("../migrations/0004_history_retention.sql"),
    include_str!("../migrations/0005_fences_from_history.sql"),
    include_str!("../migrations/0006_holder_uid.sql"),
    include_str!("../migrations/0007_handover.sql"),
];

/// Kinds of filesystem the store cares about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsKind {
    /// Local: kernel locking is sound.
    Local,
    /// A network filesystem where SQLite's locking is unsafe.
    Network(&'static str),
}

/// Classifies a `statfs` magic number.
pub fn classify_fs(magic: i64) -> FsKind {
    match magic {
        0x6969 => FsKind::Network("NFS"),
        0x517B => FsKind::Network("SMB"),
        0xFF53_4D42 => FsKind::Network("CIFS"),
        0xFE53_4D42 => FsKind::Network("SMB2"),
        0x0102_1997 => FsKind::Network("9P"),
        0x5346_414F => FsKind::Network("AFS"),
        0x00C3_6400 => FsKind::Network("Ceph"),
        0x0BD0_0BD0 => FsKind::Network("Lustre"),
        0x0116_1970 => FsKind::Network("GFS2"),
        0x7461_636F => FsKind::Network("OCFS2"),
        0x0131_11A8 => FsKind::Network("IBRIX"),
        _ => FsKind::Local,
    }
}

fn unusable(path: &Path, why: &str) -> StoreError {
    StoreError::Unusable(format!(
        "{}: {why}. The file was left untouched; set LOCKSMITH_HOME to another folder or move the file away",
        path.display()
    ))
}

/// Maps a SQLite error to a store error with advice, keeping it as the source.
pub(crate) fn map_err(e: rusqlite::Error) -> StoreError {
    let with = |message: String, e: rusqlite::Error| StoreError::Backend {
        message,
        source: Some(Box::new(e)),
    };
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked) => StoreError::Busy(
            "the lock database stayed busy past the busy timeout: another process keeps a write transaction open; try again".into(),
        ),
        Some(ErrorCode::DatabaseCorrupt) | Some(ErrorCode::NotADatabase) => StoreError::Corrupt {
            message: format!(
                "the lock database is damaged ({e}); nothing was changed. Move the file away (keep it for inspection) and run again to start a new one"
            ),
            source: Some(Box::new(e)),
        },
        Some(ErrorCode::DiskFull) => with(format!(
            "the disk holding the lock database is full ({e}); nothing was changed. Free some space and try again"
        ), e),
        Some(ErrorCode::ReadOnly) | Some(ErrorCode::PermissionDenied) | Some(ErrorCode::CannotOpen) => {
            with(format!(
                "cannot write the lock database ({e}); check the permissions of the store's folder"
            ), e)
        }
        _ => with(format!("lock database error: {e}"), e),
    }
}

/// Free bytes below which an I/O error of the store is taken for a full disk.
const NEARLY_FULL: u64 = 1024 * 1024;

/// SQLite reports a write that found no space as a plain "disk I/O error"
/// when it happens in the write-ahead log or its index; when the disk of
/// the store is (nearly) full, say so, and what to do.
pub(crate) fn explain_full(e: StoreError, path: &Path) -> StoreError {
    let StoreError::Backend { message, source } = e else {
        return e;
    };
    let io = source
        .as_deref()
        .and_then(|s| s.downcast_ref::<rusqlite::Error>())
        .and_then(|e| e.sqlite_error_code())
        == Some(ErrorCode::SystemIoFailure);
    let dir = folder(path);
    let free = rustix::fs::statvfs(dir)
        .ok()
        .map(|v| v.f_bavail.saturating_mul(v.f_frsize));
    match free {
        Some(free) if io && free < NEARLY_FULL => StoreError::Backend {
            message: format!(
                "the disk holding the lock database {} is full ({free} bytes free); nothing was changed. Free some space and try again",
                path.display()
            ),
            source,
        },
        _ => StoreError::Backend { message, source },
    }
}

/// Busy handler: yield briefly first (hand-over latency), then back off to
/// 1 ms sleeps. Returning false ends the wait with SQLITE_BUSY.
fn busy_handler(attempt: i32) -> bool {
    let attempt = attempt as u64;
    let limit = BUSY_LIMIT_MS.load(std::sync::atomic::Ordering::Relaxed);
    crate::wait::long(|| match attempt {
        0..20 => std::thread::yield_now(),
        20..200 => std::thread::sleep(std::time::Duration::from_micros(50)),
        _ => std::thread::sleep(std::time::Duration::from_millis(1)),
    });
    // ~200 attempts cover the first ~10 ms; afterwards each attempt is ~1 ms.
    attempt < 200 + limit
}

static BUSY_LIMIT_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(30_000);

/// Checkpoint the WAL into the database every this many pages (default
/// SQLite: 1000). A checkpoint costs two fsyncs; every grant writes several
/// pages, so the default would checkpoint every hundred grants or so and the
/// fsyncs would take a large share of the time (see docs/benchmarks.md).
const WAL_CHECKPOINT_PAGES: u32 = 8000;
/// A short-lived process ([`crate::Options::short_lived`]) leaves a log up
/// to this long in place when it closes the store; a longer one is
/// checkpointed and removed then (when no other process has the store open).
/// The first process to open the store reads the whole log: 512 KiB is
/// about 250 pages, or 70 commands that write, and about half a
/// millisecond to read.
pub(crate) const SHORT_LIVED_LOG_BYTES: u64 = 512 * 1024;

/// The folder of the database file (`.` for a bare file name).
pub(crate) fn folder(db: &Path) -> &Path {
    db.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// The file next to the database named by `suffix` (`-wal`, `-shm`, `-gate`).
pub(crate) fn beside(db: &Path, suffix: &str) -> std::path::PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

/// Before a short-lived process closes the store: a short log stays as it
/// is (no checkpoint, no fsync, no files removed and made again by the next
/// command); a long one is checkpointed by the close, as SQLite does by
/// default, so that commands alone never let it grow.
pub(crate) fn before_close(conn: &Connection, path: &Path) {
    let long = fs::metadata(beside(path, "-wal"))
        .map(|m| m.len() > SHORT_LIVED_LOG_BYTES)
        .unwrap_or(false);
    if !long {
        let _ = conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true);
    }
}
/// Page size of a new store file, chosen by measurement (docs/benchmarks.md).
const PAGE_SIZE: u32 = 2048;
/// Truncate the WAL back to this size after a checkpoint (bytes).
const WAL_SIZE_LIMIT: u64 = 64 * 1024 * 1024;

/// Opens or creates the database; returns the connection and the store id.
pub(crate) fn open(
    path: &Path,
    opts: &Options,
    host: &HostFacts,
    now: Now,
) -> Result<(Connection, String), StoreError> {
    // Processes that open a new store at the same moment race to switch it
    // to WAL and migrate it; SQLite answers some of those steps with BUSY
    // without calling the busy handler. Start over until the busy timeout.
    let started = Instant::now();
    loop {
        match open_once(path, opts, host, now) {
            Err(StoreError::Busy(_)) if started.elapsed() < opts.busy_timeout => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) if folder_read_only(path) && path.is_file() => {
                return open_read_only(path).map_err(|ro| match ro {
                    // Nothing better to say than why the normal open failed.
                    StoreError::Backend { .. } => e,
                    ro => ro,
                });
            }
            other => return other,
        }
    }
}

/// True when this process cannot create files in the store's folder (a
/// read-only file system, or a folder of another user).
fn folder_read_only(path: &Path) -> bool {
    let dir = folder(path);
    rustix::fs::access(dir, rustix::fs::Access::WRITE_OK).is_err()
}

/// Opens a store whose folder cannot be written, for reading only. SQLite
/// needs to make a `-shm` file next to a WAL database to read it; when
/// there is no `-wal` file, every commit is in the database file itself,
/// which is then read as it is (SQLite's `immutable`). Every write answers
/// that the database cannot be written. A store that still has a `-wal`
/// file, or whose schema is not this version's, is refused with advice.
fn open_read_only(path: &Path) -> Result<(Connection, String), StoreError> {
    if fs::metadata(beside(path, "-wal")).is_ok_and(|m| m.len() > 0) {
        return Err(unusable(
            path,
            "its folder cannot be written, and its newest commits are in its write-ahead log (-wal), which SQLite can read only with a -shm file it makes next to it; run one locksmith command where the folder can be written (it leaves the -shm file), or make the folder writable",
        ));
    }
    let mut uri = String::from("file:");
    for c in path.to_string_lossy().chars() {
        match c {
            '%' => uri.push_str("%25"),
            '?' => uri.push_str("%3F"),
            '#' => uri.push_str("%23"),
            c => uri.push(c),
        }
    }
    uri.push_str("?immutable=1");
    let conn = Connection::open_with_flags(
        &uri,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(map_err)?;
    identify(&conn, path)?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(map_err)?;
    if version as usize != MIGRATIONS.len() {
        return Err(unusable(
            path,
            &format!(
                "its folder cannot be written, and its schema (version {version}) needs this locksmith's (version {}), which is a write; run one locksmith command where the folder can be written",
                MIGRATIONS.len()
            ),
        ));
    }
    let id: String = conn
        .query_row("SELECT v FROM meta WHERE k = 'store_id'", [], |r| r.get(0))
        .map_err(map_err)?;
    Ok((conn, id))
}

fn open_once(
    path: &Path,
    opts: &Options,
    host: &HostFacts,
    now: Now,
) -> Result<(Connection, String), StoreError> {
    let dir = folder(path);
    fs::create_dir_all(dir).map_err(|e| {
        StoreError::backend_from(
            format!("cannot create the folder {}: {e}", dir.display()),
            e,
        )
    })?;
    if !opts.allow_network_fs
        && let Ok(st) = rustix::fs::statfs(dir)
        && let FsKind::Network(name) = classify_fs(st.f_type)
    {
        return Err(unusable(
            path,
            &format!(
                "it is on a {name} network filesystem, where SQLite's file locking is unsafe and two holders could be granted one lock. Keep LOCKSMITH_HOME on a local disk, or use a locksmith server for many machines"
            ),
        ));
    }
    check_header(path)?;
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(map_err)?;
    BUSY_LIMIT_MS.store(
        opts.busy_timeout.as_millis() as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
    conn.busy_handler(Some(busy_handler)).map_err(map_err)?;
    conn.set_prepared_statement_cache_capacity(64);
    identify(&conn, path)?;
    let sync = match opts.durability {
        Durability::Normal => "NORMAL",
        Durability::Full => "FULL",
    };
    // Small pages: a grant writes a handful of small rows, and every page it
    // touches is written whole to the WAL (only takes effect on a new file).
    conn.execute_batch(&format!("PRAGMA page_size={PAGE_SIZE}"))
        .map_err(map_err)?;
    conn.execute_batch(&format!(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous={sync}; PRAGMA foreign_keys=ON; PRAGMA temp_store=MEMORY;
         PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}; PRAGMA journal_size_limit={WAL_SIZE_LIMIT};"
    ))
    .map_err(map_err)?;
    migrate(&conn, path)?;
    let store_id = after_boot(&conn, host, now, opts)?;
    restrict_permissions(path);
    Ok((conn, store_id))
}

/// A non-empty file must start with the SQLite header, or it is not ours.
fn check_header(path: &Path) -> Result<(), StoreError> {
    let Ok(mut f) = fs::File::open(path) else {
        return Ok(());
    };
    let mut head = [0u8; 100];
    let n = read_up_to(&mut f, &mut head);
    if n == 0 {
        return Ok(());
    }
    if n < 16 || &head[..16] != b"SQLite format 3\0" {
        return Err(unusable(
            path,
            "this is not a locksmith database (not an SQLite file)",
        ));
    }
    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
    // With a write-ahead log still holding pages (a crash before the last
    // checkpoint), the file's own size and header are not the last word:
    // SQLite recovers from the log, so only a store without one is judged.
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let wal_pending = fs::metadata(Path::new(&wal)).is_ok_and(|m| m.len() > 0);
    if !wal_pending && let Some(why) = truncated(&head[..n], size) {
        return Err(StoreError::corrupt(format!(
            "{}: the lock database is damaged ({why}); nothing was changed. Move the file away (keep it for inspection) and run again to start a new one",
            path.display()
        )));
    }
    Ok(())
}

/// Reads until `buf` is full or the file ends; how many bytes were read.
fn read_up_to(f: &mut fs::File, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    n
}

/// What the SQLite header (its first 100 bytes) says is wrong with a file
/// of `size` bytes: a page size that is not one, a file that is not a whole
/// number of pages, or fewer pages than the header counts (cut short).
pub(crate) fn truncated(head: &[u8], size: u64) -> Option<String> {
    if head.len() < 100 {
        return Some(format!(
            "the file ends after {} bytes, inside its header",
            head.len()
        ));
    }
    let page = match u16::from_be_bytes([head[16], head[17]]) {
        1 => 65536u64,
        p => u64::from(p),
    };
    if !(512..=65536).contains(&page) || !page.is_power_of_two() {
        return Some(format!("its header names a page size of {page} bytes"));
    }
    if !size.is_multiple_of(page) {
        return Some(format!(
            "it is {size} bytes long, not a whole number of {page}-byte pages: it was cut short"
        ));
    }
    let pages = u64::from(u32::from_be_bytes([head[28], head[29], head[30], head[31]]));
    // The page count is valid when "version-valid-for" matches the change counter.
    let valid = head[92..96] == head[24..28];
    if valid && pages > 0 && size < pages * page {
        return Some(format!(
            "it has {} pages where its header counts {pages}: it was cut short",
            size / page
        ));
    }
    None
}

/// Refuses SQLite files that belong to something else.
fn identify(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    // One statement, one snapshot: another process may be creating the
    // store right now, and two separate reads could see half of it.
    let (app, tables): (i32, i64) = conn
        .query_row(
            "SELECT (SELECT application_id FROM pragma_application_id),
                    (SELECT count(*) FROM sqlite_schema)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(map_err)?;
    if app == APPLICATION_ID || (app == 0 && tables == 0) {
        return Ok(());
    }
    Err(unusable(
        path,
        "this SQLite file belongs to another program, not locksmith",
    ))
}

fn migrate(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(map_err)?;
    if version as usize > MIGRATIONS.len() {
        return Err(unusable(
            path,
            &format!(
                "it was written by a newer locksmith (schema {version}, this one knows {}); upgrade locksmith",
                MIGRATIONS.len()
            ),
        ));
    }
    if version as usize == MIGRATIONS.len() {
        return Ok(());
    }
    let tx = immediate(conn)?;
    // Another process may have migrated while we waited for the write lock.
    let version: i64 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(map_err)?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.execute_batch(sql).map_err(map_err)?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))
            .map_err(map_err)?;
    }
    tx.execute_batch(&format!("PRAGMA application_id = {APPLICATION_ID}"))
        .map_err(map_err)?;
    tx.commit().map_err(map_err)
}

/// A write transaction on a connection that is not yet a store; it rolls
/// back when dropped without commit.
fn immediate(conn: &Connection) -> Result<rusqlite::Transaction<'_>, StoreError> {
    rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)
        .map_err(map_err)
}

/// Reads (creating once) the store id, and after a reboot moves every lease
/// deadline onto the new boot clock, keeping the time each lease had left at
/// its last sign of life; queued requests of the old boot are dropped.
fn after_boot(
    conn: &Connection,
    host: &HostFacts,
    now: Now,
    opts: &Options,
) -> Result<String, StoreError> {
    let get = |k: &str| -> Result<Option<String>, StoreError> {
        conn.query_row("SELECT v FROM meta WHERE k = ?1", [k], |r| r.get(0))
            .optional()
            .map_err(map_err)
    };
    if let (Some(id), Some(boot)) = (get("store_id")?, get("boot_id")?)
        && boot == host.machine_id.boot_id
    {
        return Ok(id);
    }
    let tx = immediate(conn)?;
    let write = || -> rusqlite::Result<String> {
        let id: Option<String> = tx
            .query_row("SELECT v FROM meta WHERE k = 'store_id'", [], |r| r.get(0))
            .optional()?;
        let id = match id {
            Some(id) => id,
            None => {
                let id = locksmith_host::random_hex(8);
                tx.execute(
                    "INSERT INTO meta (k, v) VALUES ('store_id', ?1), ('fence', 0)",
                    [&id],
                )?;
                // The retention of a new store is its creator's setting.
                tx.execute(
                    "INSERT OR REPLACE INTO meta (k, v) VALUES ('history_retention_ms', ?1)",
                    [opts.history_retention.as_millis() as i64],
                )?;
                id
            }
        };
        let boot: Option<String> = tx
            .query_row("SELECT v FROM meta WHERE k = 'boot_id'", [], |r| r.get(0))
            .optional()?;
        if boot.as_deref() != Some(host.machine_id.boot_id.as_str()) {
            let last: Option<i64> =
                tx.query_row("SELECT max(seen_mono) FROM holds", [], |r| r.get(0))?;
            if let Some(last) = last {
                let shift = now.mono.0 as i64 - last;
                tx.execute(
                    "UPDATE holds SET acquired_mono = max(0, acquired_mono + ?1),
                        seen_mono = seen_mono + ?1, expires_mono = expires_mono + ?1",
                    [shift],
                )?;
            }
            tx.execute("DELETE FROM queue", [])?;
            tx.execute(
                "INSERT INTO meta (k, v) VALUES ('boot_id', ?1)
                 ON CONFLICT (k) DO UPDATE SET v = excluded.v",
                params![host.machine_id.boot_id],
            )?;
        }
        Ok(id)
    };
    let id = write().map_err(map_err)?;
    tx.commit().map_err(map_err)?;
    Ok(id)
}

/// The database holds lease handles: readable by its owner only, unless
/// the store is shared by a group (see [`locksmith_host::life::shared`]):
/// its folder group-writable and not world-writable (`chmod 2770`), or the
/// file made group-writable (`chmod 660`). A shared store keeps group read
/// and write on the database and the files beside it, whoever opens it; no
/// one else ever gets access. The WAL holds page images too, so it gets
/// the same mode, and so does the shared-memory index.
fn restrict_permissions(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let dir = folder(path);
    let db_mode = fs::metadata(path).map_or(0, |m| m.permissions().mode());
    let want = if db_mode & 0o060 == 0o060 || locksmith_host::life::shared(dir) {
        0o660
    } else {
        0o600
    };
    // The write gate follows the database's mode when it is opened.
    for suffix in ["", "-wal", "-shm"] {
        let file = beside(path, suffix);
        // Only the file's owner may change its mode; others leave it be.
        if let Ok(meta) = fs::metadata(&file)
            && meta.permissions().mode() & 0o777 != want
        {
            let _ = fs::set_permissions(&file, fs::Permissions::from_mode(want));
        }
    }
}
