//! Connections: the URL, a small pool, one transaction at a time with its
//! key locks and the database's clock, typed statement arguments, and what
//! a PostgreSQL failure means for the user.
//!
//! The loads a call makes first go with its key locks ([`Tx::lock`]);
//! other reads are sent unnamed with their argument types (`query_typed`,
//! one round trip each); statements without results are kept and sent with
//! the next read or with `COMMIT` (see [`Tx`]). The statements of the hot
//! path are prepared once per connection ([`Tx::exec_prepared`]) until a
//! pooler in transaction mode shows it cannot keep them; nothing the rules
//! need lives in the session.

use std::collections::BTreeMap;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use locksmith_core::{Key, Mono, Now, Scope, StoreError, Wall};
use postgres::error::SqlState;
use postgres::types::{ToSql, Type};
use postgres::{Client, NoTls, Row, SimpleQueryRow};

use crate::rows::{Ahead, Cells};

/// A statement argument with its PostgreSQL type.
pub(crate) trait Arg {
    /// The value.
    fn sql(&self) -> &(dyn ToSql + Sync);
    /// Its type.
    fn ty(&self) -> Type;
    /// The value as an SQL literal of its type.
    fn literal(&self) -> Result<String, Fail>;
}

/// Rust types with one PostgreSQL type.
pub(crate) trait Typed: ToSql + Sync {
    fn pg() -> Type;
    /// The value as an SQL literal (without its type).
    fn lit(&self) -> Result<String, Fail>;
}

/// Text as an escape string literal (`E'…'`), read the same whatever the
/// server's `standard_conforming_strings`: the backslash and the quote are
/// doubled. Text with a NUL character cannot be stored in PostgreSQL and
/// is refused.
fn quote(s: &str) -> Result<String, Fail> {
    if s.contains('\0') {
        return Err(Fail::Store(StoreError::Invalid(
            "text with a NUL character cannot be stored".into(),
        )));
    }
    Ok(format!(
        "E'{}'",
        s.replace('\\', "\\\\").replace('\'', "''")
    ))
}

macro_rules! typed {
    ($($t:ty => $pg:ident, $v:ident => $lit:expr);* $(;)?) => {
        $(impl Typed for $t {
            fn pg() -> Type {
                Type::$pg
            }
            fn lit(&self) -> Result<String, Fail> {
                let $v = self;
                $lit
            }
        })*
    };
}

typed!(
    i64 => INT8, v => Ok(v.to_string());
    i32 => INT4, v => Ok(v.to_string());
    bool => BOOL, v => Ok(v.to_string());
    String => TEXT, v => quote(v);
    &str => TEXT, v => quote(v);
);

impl<T: Typed> Typed for Vec<T> {
    fn pg() -> Type {
        match T::pg() {
            Type::INT8 => Type::INT8_ARRAY,
            Type::INT4 => Type::INT4_ARRAY,
            Type::BOOL => Type::BOOL_ARRAY,
            _ => Type::TEXT_ARRAY,
        }
    }
    fn lit(&self) -> Result<String, Fail> {
        let items: Vec<String> = self.iter().map(Typed::lit).collect::<Result<_, _>>()?;
        Ok(format!("ARRAY[{}]::{}[]", items.join(","), T::pg().name()))
    }
}

impl<T: Typed> Typed for Option<T> {
    fn pg() -> Type {
        T::pg()
    }
    fn lit(&self) -> Result<String, Fail> {
        match self {
            Some(v) => v.lit(),
            None => Ok("NULL".into()),
        }
    }
}

impl<T: Typed> Arg for T {
    fn sql(&self) -> &(dyn ToSql + Sync) {
        self
    }
    fn ty(&self) -> Type {
        T::pg()
    }
    fn literal(&self) -> Result<String, Fail> {
        Ok(format!("({})::{}", self.lit()?, Self::pg().name()))
    }
}

/// The settings taken from a `postgres://` URL, with the password kept out
/// of anything shown.
#[derive(Clone)]
pub(crate) struct Target {
    pub config: postgres::Config,
    /// The schema that holds the store's tables.
    pub schema: String,
    /// Whether this process listens for wake-ups (`listen=off` behind a
    /// pooler in transaction mode, where LISTEN cannot work).
    pub listen: bool,
    /// Whether the statements of the hot path are prepared on each
    /// connection (`prepare=off` behind a pooler in transaction mode, which
    /// cannot keep them; the store also finds out by itself).
    pub prepare: bool,
    /// The URL without its password, for messages and logs.
    pub shown: String,
}

/// The URL with any password replaced by `***`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (auth, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let auth = match auth.rsplit_once('@') {
        Some((user, host)) => match user.split_once(':') {
            Some((name, _)) => format!("{name}:***@{host}"),
            None => auth.to_string(),
        },
        None => auth.to_string(),
    };
    // A password given as a query parameter is hidden as well.
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some(("password", _)) => "password=***".to_string(),
                    _ => p.to_string(),
                })
                .collect();
            format!("{path}?{}", params.join("&"))
        }
        None => tail.to_string(),
    };
    format!("{scheme}://{auth}{tail}")
}

/// Reads a `postgres://` URL: the connection settings PostgreSQL knows,
/// plus `schema=` (default `locksmith`) and `listen=on|off`.
pub(crate) fn parse(url: &str, connect_timeout: Duration) -> Result<Target, StoreError> {
    let shown = redact(url);
    let bad = |why: String| StoreError::Invalid(format!("store URL {shown}: {why}"));
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, q),
        None => (url, ""),
    };
    let mut schema = "locksmith".to_string();
    let mut listen = true;
    let mut prepare = true;
    let mut kept = Vec::new();
    for p in query.split('&').filter(|p| !p.is_empty()) {
        match p.split_once('=') {
            Some(("schema", s)) => schema = s.to_string(),
            Some(("listen", "on" | "true")) => listen = true,
            Some(("listen", "off" | "false")) => listen = false,
            Some(("prepare", "on" | "true")) => prepare = true,
            Some(("prepare", "off" | "false")) => prepare = false,
            Some(("prepare", other)) => {
                return Err(bad(format!(
                    "prepare={other}: use prepare=on or prepare=off"
                )));
            }
            Some(("listen", other)) => {
                return Err(bad(format!("listen={other}: use listen=on or listen=off")));
            }
            _ => kept.push(p),
        }
    }
    let valid = !schema.is_empty()
        && schema.len() <= 63
        && schema.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid {
        return Err(bad(format!(
            "schema={schema}: a schema name is 1 to 63 of a-z, 0-9 and _, not starting with a digit"
        )));
    }
    let url = match kept.is_empty() {
        true => base.to_string(),
        false => format!("{base}?{}", kept.join("&")),
    };
    let mut config: postgres::Config = url
        .parse()
        .map_err(|e: postgres::Error| bad(format!("{e}")))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(connect_timeout);
    }
    if config.get_application_name().is_none() {
        config.application_name("locksmith");
    }
    // A server that vanishes without closing the connection (a cable, a
    // crashed host) is noticed by the kernel within about 20 seconds.
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(10));
    config.keepalives_interval(Duration::from_secs(2));
    config.keepalives_retries(5);
    config.tcp_user_timeout(Duration::from_secs(20));
    Ok(Target {
        config,
        schema,
        listen,
        prepare,
        shown,
    })
}

/// Connects within `limit`, the whole start-up included: the driver bounds
/// only the socket's connect, and a server that accepts the connection but
/// never answers (stopped, overloaded, not PostgreSQL) must not hang the
/// caller. The attempt runs on a thread of its own, left to finish by
/// itself when it overruns.
pub(crate) fn connect(target: &Target, limit: Duration) -> Result<Client, StoreError> {
    let (tx, rx) = std::sync::mpsc::channel();
    let config = target.config.clone();
    let spawned = std::thread::Builder::new()
        .name("locksmith-connect".into())
        .spawn(move || {
            let _ = tx.send(config.connect(NoTls));
        });
    if let Err(e) = spawned {
        return Err(StoreError::backend_from("cannot start a thread", e));
    }
    match rx.recv_timeout(limit) {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(map_err(e, &target.shown)),
        Err(_) => Err(StoreError::Busy(format!(
            "PostgreSQL at {} did not answer within {limit:?}; nothing was changed. Check that the server is up and not overloaded, then try again",
            target.shown
        ))),
    }
}

/// What a PostgreSQL failure means, and what to do.
pub(crate) fn map_err(e: postgres::Error, target: &str) -> StoreError {
    let Some(code) = e.code().cloned() else {
        return StoreError::Busy(format!(
            "cannot reach PostgreSQL at {target} ({e}); nothing was changed. Start the server or check the URL, then try again"
        ));
    };
    let message = e
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_else(|| e.to_string());
    if code == SqlState::INVALID_PASSWORD || code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION {
        return StoreError::Unusable(format!(
            "PostgreSQL at {target} refused the login: {message}. Check the user name and password in the store URL"
        ));
    }
    if code == SqlState::INVALID_CATALOG_NAME {
        return StoreError::Unusable(format!(
            "PostgreSQL at {target}: {message}. Create the database first (createdb) or fix the URL"
        ));
    }
    if code == SqlState::INSUFFICIENT_PRIVILEGE {
        return StoreError::Unusable(format!(
            "PostgreSQL at {target}: {message}. The store's user needs to create and use its schema"
        ));
    }
    if code == SqlState::DISK_FULL || code == SqlState::OUT_OF_MEMORY {
        return StoreError::backend_from(
            format!(
                "PostgreSQL at {target} is out of space ({message}); nothing was changed. Free space on the database server and try again"
            ),
            e,
        );
    }
    if code == SqlState::ADMIN_SHUTDOWN
        || code == SqlState::CRASH_SHUTDOWN
        || code == SqlState::CANNOT_CONNECT_NOW
        || code == SqlState::TOO_MANY_CONNECTIONS
        || code == SqlState::READ_ONLY_SQL_TRANSACTION
    {
        return StoreError::Busy(format!(
            "PostgreSQL at {target} is not available ({message}); try again shortly"
        ));
    }
    StoreError::backend_from(format!("PostgreSQL error at {target}: {message}"), e)
}

/// True for the failures after which the transaction certainly rolled back
/// and may simply run again: a serialization failure or a deadlock that
/// PostgreSQL broke, also when it reached us as a store error.
fn retryable(e: &Fail) -> bool {
    matches!(
        db_code(e),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
    )
}

/// The SQLSTATE of the database error under `e`, if any (also when it
/// reached us as a store error).
fn db_code(e: &Fail) -> Option<&SqlState> {
    let db = match e {
        Fail::Db(e) | Fail::Commit(e) => Some(e),
        Fail::Store(StoreError::Backend {
            source: Some(s), ..
        }) => s.downcast_ref::<postgres::Error>(),
        _ => None,
    };
    db.and_then(|e| e.code())
}

/// True for the failures that show prepared statements cannot be kept on
/// this connection: one is missing, or one of the same name is there.
fn unprepared(e: &Fail) -> bool {
    matches!(
        db_code(e),
        Some(c) if *c == SqlState::INVALID_SQL_STATEMENT_NAME || *c == SqlState::DUPLICATE_PSTATEMENT
    )
}

/// A connection of the pool and the statements prepared on it.
struct Conn {
    client: Client,
    prepared: std::collections::HashSet<u64>,
}

/// A failure inside a transaction: a store answer, or a database error that
/// decides whether to run the transaction again.
pub(crate) enum Fail {
    Store(StoreError),
    Db(postgres::Error),
    /// The batch that ended with `COMMIT` failed.
    Commit(postgres::Error),
}

impl Fail {
    /// The failure as the store reports it; a database error keeps its
    /// source, so that a transaction PostgreSQL rolled back runs again.
    pub fn into_store(self, shown: &str) -> StoreError {
        match self {
            Fail::Store(e) => e,
            Fail::Db(e) | Fail::Commit(e) => map_err(e, shown),
        }
    }
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Fail {
        Fail::Store(e)
    }
}

impl From<postgres::Error> for Fail {
    fn from(e: postgres::Error) -> Fail {
        Fail::Db(e)
    }
}

/// A small pool of connections; a connection that failed is dropped.
pub(crate) struct Pool {
    target: Target,
    state: Mutex<(Vec<Conn>, usize)>,
    /// Statements are prepared (see [`Tx::exec_prepared`]); turned off for
    /// good when the server says one is missing or already there, as it
    /// does behind a pooler in transaction mode.
    prepare: std::sync::atomic::AtomicBool,
    /// Mixed into the names of prepared statements: the schema they were
    /// planned in.
    seed: u64,
    freed: Condvar,
    max: usize,
    wait: Duration,
    /// What opens a write transaction, and a read transaction.
    begin: [String; 2],
}

impl Pool {
    pub fn new(target: Target, max: usize, wait: Duration) -> Pool {
        let begin = |how: &str| format!("{how}; SET LOCAL search_path TO {};", target.schema);
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        target.schema.hash(&mut h);
        Pool {
            prepare: std::sync::atomic::AtomicBool::new(target.prepare),
            seed: h.finish(),
            begin: [
                begin("BEGIN"),
                begin("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"),
            ],
            target,
            state: Mutex::new((Vec::new(), 0)),
            freed: Condvar::new(),
            max: max.max(1),
            wait,
        }
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// A new connection, outside the pool.
    pub fn connect(&self) -> Result<Client, StoreError> {
        connect(&self.target, self.wait)
    }

    fn take(&self) -> Result<Conn, StoreError> {
        let deadline = Instant::now() + self.wait;
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(c) = st.0.pop() {
                return Ok(c);
            }
            if st.1 < self.max {
                st.1 += 1;
                drop(st);
                return self
                    .connect()
                    .map(|client| Conn {
                        client,
                        prepared: std::collections::HashSet::new(),
                    })
                    .inspect_err(|_| self.give_back(None));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(StoreError::Busy(format!(
                    "all {} connections to PostgreSQL at {} stayed busy for {:?}; try again",
                    self.max, self.target.shown, self.wait
                )));
            }
            st = self
                .freed
                .wait_timeout(st, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn give_back(&self, c: Option<Conn>) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match c {
            Some(c) if !c.client.is_closed() => st.0.push(c),
            _ => st.1 -= 1,
        }
        drop(st);
        self.freed.notify_one();
    }

    /// Runs `f` in one transaction and commits it; runs it again (up to 20
    /// times) when PostgreSQL rolled it back for a serialization failure
    /// or a deadlock. `read` runs a read-only snapshot.
    pub fn run<T>(
        &self,
        read: bool,
        mut f: impl FnMut(&mut Tx<'_>) -> Result<T, Fail>,
    ) -> Result<T, StoreError> {
        let mut conn = self.take()?;
        let mut tries = 0;
        let begin = &self.begin[read as usize];
        let out = loop {
            tries += 1;
            let prepare = self.prepare.load(std::sync::atomic::Ordering::Relaxed);
            let mut tx = Tx {
                c: &mut conn.client,
                shown: &self.target.shown,
                begin,
                pending: String::new(),
                sent: false,
                ahead: Vec::new(),
                prepared: prepare.then_some(&mut conn.prepared),
                unsent: Vec::new(),
                broke: false,
                seed: self.seed,
                locked: BTreeMap::new(),
                drawn: Vec::new(),
            };
            let result = f(&mut tx).and_then(|v| tx.commit().map(|()| v));
            let (sent, unsent, broke) = (tx.sent, std::mem::take(&mut tx.unsent), tx.broke);
            if result.is_err() {
                // A batch that failed may have stopped before some of its
                // PREPAREs (which a rollback does not undo): start over.
                // Otherwise every batch sent went through (a refusal of the
                // rules, a failed read): only the PREPAREs never sent are
                // forgotten.
                let forget_all = prepare && broke;
                if sent {
                    let reset = match forget_all {
                        true => "ROLLBACK; DEALLOCATE ALL",
                        false => "ROLLBACK",
                    };
                    let _ = conn.client.batch_execute(reset);
                }
                match forget_all {
                    true => conn.prepared.clear(),
                    false => unsent.iter().for_each(|id| {
                        conn.prepared.remove(id);
                    }),
                }
            }
            if result.as_ref().is_err_and(unprepared) {
                // Behind a pooler in transaction mode the next transaction
                // may run on another server connection: prepare no more.
                if self
                    .prepare
                    .swap(false, std::sync::atomic::Ordering::Relaxed)
                {
                    tracing::info!(
                        event = "prepared_statements_off",
                        store = %self.target.shown,
                        "PostgreSQL lost or already had a prepared statement (a pooler in transaction mode?); statements are no longer prepared. Add prepare=off to the URL to skip this"
                    );
                }
                if tries < 20 {
                    continue;
                }
            }
            let result = match result {
                // The connection broke during the commit: it may or may not
                // have happened, and nobody can tell until the server
                // answers again.
                Err(Fail::Commit(e)) if !read && e.code().is_none() => {
                    Err(Fail::Store(StoreError::Busy(format!(
                        "the connection to PostgreSQL at {} broke while committing ({e}): the change may or may not have been made. A lock taken this way ends with its lease; give the request an id (request_id) to make a retry return the same grant",
                        self.target.shown
                    ))))
                }
                Err(Fail::Commit(e)) => Err(Fail::Db(e)),
                other => other,
            };
            match result {
                Err(e) if retryable(&e) && tries < 20 => {
                    std::thread::sleep(Duration::from_micros(200 * tries));
                }
                other => break other,
            }
        };
        self.give_back(Some(conn));
        out.map_err(|e| e.into_store(&self.target.shown))
    }
}

/// One transaction. Statements without results are kept and sent with the
/// next statement that reads, or with `COMMIT`, in one round trip (as
/// literals, in the simple query protocol); `BEGIN` goes with the key locks
/// or with the first statement kept.
pub(crate) struct Tx<'c> {
    c: &'c mut Client,
    shown: &'c str,
    /// `BEGIN …; SET LOCAL …;`
    begin: &'c str,
    /// Statements kept for the next round trip (`BEGIN` first until sent).
    pending: String,
    /// Whether `BEGIN` has gone to the server.
    sent: bool,
    /// Reads sent ahead with the key locks (see [`Tx::lock`]): each one's
    /// text and rows, until it is asked for or anything is written.
    ahead: Vec<(Stmt, Vec<SimpleQueryRow>)>,
    /// The statements prepared on this connection, when they are used.
    prepared: Option<&'c mut std::collections::HashSet<u64>>,
    /// Statements counted as prepared whose `PREPARE` is still kept.
    unsent: Vec<u64>,
    /// A batch of kept statements failed: which of its `PREPARE`s ran is
    /// unknown.
    broke: bool,
    /// See [`Pool::seed`].
    seed: u64,
    /// The key lock ids taken so far, true for exclusive (see [`Tx::covers`]).
    locked: BTreeMap<i32, bool>,
    /// Fences drawn ahead for the next [`Tx::draw_fences`].
    drawn: Vec<i64>,
}

fn params<'a>(args: &'a [&'a dyn Arg]) -> Vec<(&'a (dyn ToSql + Sync), Type)> {
    args.iter().map(|a| (a.sql(), a.ty())).collect()
}

impl Tx<'_> {
    /// Opens the transaction in the kept statements, once.
    fn open(&mut self) {
        if !self.sent && !self.pending.starts_with(self.begin) {
            self.pending.insert_str(0, self.begin);
        }
    }
    /// Sends the kept statements, if any.
    fn flush(&mut self) -> Result<(), Fail> {
        if !self.pending.is_empty() {
            let sql = std::mem::take(&mut self.pending);
            self.send(|c| c.batch_execute(&sql))?;
        }
        Ok(())
    }
    /// Sends a batch of kept statements with `how`. It counts as sent even
    /// if it fails (the server may have begun); a failure leaves unknown
    /// which of its `PREPARE`s ran, a success that all of them did.
    fn send<T>(
        &mut self,
        how: impl FnOnce(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, postgres::Error> {
        self.sent = true;
        self.broke = true;
        let out = how(self.c)?;
        self.broke = false;
        self.unsent.clear();
        Ok(out)
    }
    fn commit(&mut self) -> Result<(), Fail> {
        if !self.sent && self.pending.is_empty() {
            return Ok(());
        }
        let mut sql = std::mem::take(&mut self.pending);
        sql.push_str("COMMIT");
        self.send(|c| c.batch_execute(&sql)).map_err(Fail::Commit)
    }
    /// The rows of one statement.
    pub fn rows(&mut self, sql: &str, args: &[&dyn Arg]) -> Result<Vec<Row>, Fail> {
        // It may write (`INSERT … RETURNING`): reads sent ahead are stale.
        self.ahead.clear();
        self.open();
        self.flush()?;
        Ok(self.c.query_typed(sql, &params(args))?)
    }
    /// The first row of one statement, if any.
    pub fn opt(&mut self, sql: &str, args: &[&dyn Arg]) -> Result<Option<Row>, Fail> {
        self.ahead.clear();
        self.open();
        self.flush()?;
        Ok(self.c.query_typed_opt(sql, &params(args))?)
    }
    /// The one row of one statement.
    pub fn one(&mut self, sql: &str, args: &[&dyn Arg]) -> Result<Row, Fail> {
        self.ahead.clear();
        self.open();
        self.flush()?;
        Ok(self.c.query_typed_one(sql, &params(args))?)
    }
    /// The rows of `sql` with `args`, each decoded by `decode`: those of
    /// the same read sent ahead (see [`Tx::lock`]) while nothing was kept
    /// or written since, else in a round trip of their own.
    pub fn load<T>(
        &mut self,
        sql: &str,
        args: &[&dyn Arg],
        decode: impl Fn(&dyn Cells) -> Result<T, Fail>,
    ) -> Result<Vec<T>, Fail> {
        if !self.ahead.is_empty() && self.pending.is_empty() {
            let stmt = Stmt::new(sql, args)?;
            if let Some(at) = self.ahead.iter().position(|(s, _)| *s == stmt) {
                let (_, rows) = self.ahead.swap_remove(at);
                return rows.iter().map(|r| decode(&Ahead(r))).collect();
            }
        }
        // Statements kept (writes) go with the read, in one round trip.
        if !self.pending.is_empty() {
            let stmt = Stmt::new(sql, args)?;
            self.ahead.clear();
            let rows = self.send_reads(&[stmt])?.pop().unwrap_or_default();
            return rows.iter().map(|r| decode(&Ahead(r))).collect();
        }
        self.rows(sql, args)?.iter().map(|r| decode(r)).collect()
    }

    /// Sends the kept statements and `reads` in one round trip, and keeps
    /// the rows of the reads for [`Tx::load`], as [`Tx::lock`] does.
    pub fn fetch_ahead(&mut self, reads: Vec<Stmt>) -> Result<(), Fail> {
        let rows = self.send_reads(&reads)?;
        self.ahead = reads.into_iter().zip(rows).collect();
        Ok(())
    }

    /// Sends the kept statements and `reads` (prepared where statements
    /// are) in one simple query; the rows of each read.
    fn send_reads(&mut self, reads: &[Stmt]) -> Result<Vec<Vec<SimpleQueryRow>>, Fail> {
        self.open();
        let runs = self.prepare_reads(reads)?;
        let mut sql = std::mem::take(&mut self.pending);
        for r in &runs {
            sql.push_str(r);
            sql.push_str(";\n");
        }
        let answer = self.send(|c| c.simple_query(&sql))?;
        Ok(self.split_answer(answer, runs.len())?.1)
    }

    /// Keeps the `PREPARE`s `reads` need (where statements are prepared)
    /// for the next round trip; the statements that run them.
    fn prepare_reads(&mut self, reads: &[Stmt]) -> Result<Vec<String>, Fail> {
        let mut runs = Vec::with_capacity(reads.len());
        for stmt in reads {
            let (prepare, run) = self.statement(stmt)?;
            if let Some(p) = prepare {
                self.pending.push_str(&p);
                self.pending.push_str(";\n");
            }
            runs.push(run);
        }
        Ok(runs)
    }

    /// The rows of a simple query's answer: those of the statements before
    /// the last `reads`, and those of each of the last `reads` (each
    /// statement ends with one CommandComplete).
    fn split_answer(
        &self,
        answer: Vec<postgres::SimpleQueryMessage>,
        reads: usize,
    ) -> Result<(Vec<SimpleQueryRow>, Vec<Vec<SimpleQueryRow>>), Fail> {
        let statements = answer
            .iter()
            .filter(|m| matches!(m, postgres::SimpleQueryMessage::CommandComplete(_)))
            .count();
        let first_read = statements.checked_sub(reads).ok_or_else(|| {
            Fail::Store(StoreError::backend(format!(
                "PostgreSQL at {} answered {statements} statements of more",
                self.shown
            )))
        })?;
        let mut before = Vec::new();
        let mut read: Vec<Vec<SimpleQueryRow>> = (0..reads).map(|_| Vec::new()).collect();
        let mut done = 0;
        for m in answer {
            match m {
                postgres::SimpleQueryMessage::CommandComplete(_) => done += 1,
                postgres::SimpleQueryMessage::Row(r) if done >= first_read => {
                    read[done - first_read].push(r)
                }
                postgres::SimpleQueryMessage::Row(r) => before.push(r),
                _ => {}
            }
        }
        Ok((before, read))
    }

    /// Keeps one statement of the hot path for the next round trip, as
    /// [`Tx::exec`] does; where statements are prepared, as `EXECUTE` of a
    /// statement prepared on this connection (first in the same batch),
    /// so that PostgreSQL neither parses nor plans it again.
    pub fn exec_prepared(&mut self, sql: &str, args: &[&dyn Arg]) -> Result<(), Fail> {
        self.keep(Stmt::new(sql, args)?, true)
    }

    /// Keeps `stmt` for the next round trip, prepared where `prepare` and
    /// statements are prepared on this connection.
    fn keep(&mut self, stmt: Stmt, prepare: bool) -> Result<(), Fail> {
        self.ahead.clear();
        self.open();
        let (prepare, run) = match prepare {
            true => self.statement(&stmt)?,
            false => (None, stmt.literal()?),
        };
        for s in prepare.iter().chain([&run]) {
            self.pending.push_str(s);
            self.pending.push_str(";\n");
        }
        Ok(())
    }

    /// `stmt` as statements to send: the `PREPARE` of it where it is not
    /// prepared on this connection yet, and its `EXECUTE`; or, where
    /// statements are not prepared, no `PREPARE` and the statement with
    /// its arguments written in.
    fn statement(&mut self, stmt: &Stmt) -> Result<(Option<String>, String), Fail> {
        let Some(prepared) = self.prepared.as_deref_mut() else {
            return Ok((None, stmt.literal()?));
        };
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let types: Vec<u32> = stmt.types.iter().map(Type::oid).collect();
        (self.seed, &stmt.sql, types).hash(&mut h);
        let id = h.finish();
        let name = format!("locksmith_{id:016x}");
        let fresh = prepared.insert(id);
        if fresh {
            self.unsent.push(id);
        }
        let prepare = fresh.then(|| {
            let types: Vec<&str> = stmt.types.iter().map(Type::name).collect();
            match types.is_empty() {
                true => format!("PREPARE {name} AS {}", stmt.sql),
                false => format!("PREPARE {name}({}) AS {}", types.join(", "), stmt.sql),
            }
        });
        let run = match stmt.values.is_empty() {
            true => format!("EXECUTE {name}"),
            false => format!("EXECUTE {name}({})", stmt.values.join(", ")),
        };
        Ok((prepare, run))
    }

    /// Keeps one statement without results for the next round trip.
    pub fn exec(&mut self, sql: &str, args: &[&dyn Arg]) -> Result<(), Fail> {
        self.keep(Stmt::new(sql, args)?, false)
    }
    /// Keeps statements without arguments for the next round trip.
    pub fn batch(&mut self, sql: &str) -> Result<(), Fail> {
        self.ahead.clear();
        self.open();
        self.pending.push_str(sql);
        self.pending.push_str(";\n");
        Ok(())
    }
    /// Where the store is, for messages.
    pub fn shown(&self) -> &str {
        self.shown
    }

    /// Keeps the key locks of `claims` (exclusive on each key, shared on its
    /// ancestors), sorted, for the next round trip, after `first` (a lock
    /// call) if given: one statement (one per [`LOCKS_PER_SELECT`] locks),
    /// whose calls PostgreSQL makes from left to right. Every statement after
    /// it sees what the transactions it waited for wrote.
    fn keep_locks(&mut self, ns: i32, claims: &[(Key, Scope)], first: Option<String>) {
        self.ahead.clear();
        let mut ids: BTreeMap<i32, bool> = BTreeMap::new();
        for (key, _) in claims {
            ids.insert(lock_id(key.as_str()), true);
        }
        for (key, _) in claims {
            for anc in key.ancestors() {
                ids.entry(lock_id(anc)).or_insert(false);
            }
        }
        let mut calls: Vec<String> = first.into_iter().collect();
        for (id, exclusive) in &ids {
            let f = match exclusive {
                true => "pg_advisory_xact_lock",
                false => "pg_advisory_xact_lock_shared",
            };
            calls.push(format!("{f}({ns}, {id})"));
            let held = self.locked.entry(*id).or_insert(false);
            *held |= *exclusive;
        }
        if calls.is_empty() {
            return;
        }
        self.open();
        // A target list holds at most 1664 entries; 64 deep keys can need
        // more locks than that. The statements run in order too.
        for chunk in calls.chunks(LOCKS_PER_SELECT) {
            self.pending
                .push_str(&format!("SELECT {};\n", chunk.join(", ")));
        }
    }

    /// Whether the key locks taken so far include every one that `claims`
    /// would take, each at least as strong: a grant of them may then be
    /// written in this transaction with no lock taken out of order.
    pub fn covers(&self, claims: &[(Key, Scope)]) -> bool {
        claims.iter().all(|(key, _)| {
            self.locked.get(&lock_id(key.as_str())) == Some(&true)
                && key
                    .ancestors()
                    .into_iter()
                    .all(|a| self.locked.contains_key(&lock_id(a)))
        })
    }

    /// Draws `n` fences from the store's sequence, in order, under the key
    /// locks this transaction holds (see [`Tx::covers`]); from the read of
    /// [`fences_stmt`] sent ahead when it was.
    pub fn draw_fences(&mut self, n: usize) -> Result<Vec<i64>, Fail> {
        if self.drawn.len() == n {
            return Ok(std::mem::take(&mut self.drawn));
        }
        let mut fences: Vec<i64> = self.load(FENCES, &[&(n as i32)], |r| r.num(0))?;
        fences.sort_unstable();
        Ok(fences)
    }

    /// Keeps the fences of a [`fences_stmt`] read sent ahead for the next
    /// [`Tx::draw_fences`], past writes that drop the other reads.
    pub fn keep_fences(&mut self, n: usize) -> Result<(), Fail> {
        self.drawn = self.draw_fences(n)?;
        Ok(())
    }

    /// Waits until no write transaction is running and answers the highest
    /// event id drawn so far: every event up to it is committed or will
    /// never be (see [`EVENTS_LOCK`]). Blocks writers only while it runs.
    pub fn events_horizon(&mut self, ns: i32) -> Result<i64, Fail> {
        self.exec(
            "SELECT pg_advisory_xact_lock($1, $2)",
            &[&ns.wrapping_add(1), &EVENTS_LOCK],
        )?;
        Ok(self
            .one(
                "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM events_id_seq",
                &[],
            )?
            .try_get(0)?)
    }

    /// Takes the transaction's key locks for `claims`, in one order for
    /// every transaction so that they never wait on each other in a
    /// circle; then reads the database's clock, after the locks, so that
    /// the instant is later than every change this transaction can see;
    /// whether anything is queued; `fences` fences, also under the locks;
    /// and the reads `ahead`, kept for [`Tx::load`]. One round trip,
    /// with `BEGIN` and whatever statements were kept.
    pub fn lock(
        &mut self,
        ns: i32,
        claims: &[(Key, Scope)],
        fences: usize,
        ahead: Vec<Stmt>,
    ) -> Result<Locked, Fail> {
        let events = format!(
            "pg_advisory_xact_lock_shared({}, {EVENTS_LOCK})",
            ns.wrapping_add(1)
        );
        self.keep_locks(ns, claims, Some(events));
        let mut tagged = vec!["SELECT 'q', (EXISTS (SELECT 1 FROM queue))::int::text".to_string()];
        if fences > 0 {
            tagged.push(format!(
                "SELECT 'f', nextval('fences')::text FROM generate_series(1, {fences})"
            ));
        }
        // The reads go last, after the clock, so that the last statements'
        // rows are theirs; their PREPAREs (if any) before.
        let reads = self.prepare_reads(&ahead)?;
        let Answer {
            now,
            tagged: answers,
            reads: read,
        } = self.send_with_clock(&tagged, &reads)?;
        self.ahead = ahead.into_iter().zip(read).collect();
        let mut queued = true;
        let mut drawn = Vec::with_capacity(fences);
        for (tag, v) in answers {
            match tag {
                'q' => queued = v != 0,
                'f' => drawn.push(v),
                _ => {}
            }
        }
        if drawn.len() != fences {
            return Err(Fail::Store(StoreError::backend(format!(
                "PostgreSQL at {} drew {} fences of {fences}",
                self.shown,
                drawn.len()
            ))));
        }
        drawn.sort_unstable();
        Ok(Locked {
            now,
            fences: drawn,
            queue_empty: !queued,
        })
    }

    /// The lock that orders every wait that checks the waiters' graph for
    /// a cycle: two requests that would close a cycle together cannot both
    /// look before the other joins. Taken after the key locks only.
    pub fn lock_graph(&mut self, ns: i32) -> Result<(), Fail> {
        self.exec(
            "SELECT pg_advisory_xact_lock($1, 0)",
            &[&ns.wrapping_add(1)],
        )
    }

    /// Takes the key locks of more claims, later in the transaction (the
    /// other keys of a grant or of a queue entry named by one of them),
    /// with the next read. Not in the one order of [`Tx::lock`]:
    /// PostgreSQL breaks a circle of such waits, and the transaction runs
    /// again.
    pub fn lock_more(&mut self, ns: i32, claims: &[(Key, Scope)]) {
        self.keep_locks(ns, claims, None);
    }

    /// Opens a read transaction and reads the database's clock, in one
    /// round trip.
    pub fn now(&mut self) -> Result<Now, Fail> {
        self.open();
        Ok(self.send_with_clock(&[], &[])?.now)
    }

    /// Sends the kept statements, a reading of the clock with the `tagged`
    /// selects of `(tag, number)` rows (one statement), and the `reads` in
    /// one simple query.
    fn send_with_clock(&mut self, tagged: &[String], reads: &[String]) -> Result<Answer, Fail> {
        let mut sql = std::mem::take(&mut self.pending);
        sql.push_str("SELECT 'c', (extract(epoch FROM clock_timestamp()) * 1000000)::int8::text");
        for t in tagged {
            sql.push_str("\nUNION ALL ");
            sql.push_str(t);
        }
        sql.push_str(";\n");
        for r in reads {
            sql.push_str(r);
            sql.push_str(";\n");
        }
        let answer = self.send(|c| c.simple_query(&sql))?;
        let (before, read) = self.split_answer(answer, reads.len())?;
        let mut now = None;
        let mut rows = Vec::new();
        for r in before {
            // The lock statement answers empty columns, the others a tag and a number.
            let tag = r.try_get(0).ok().flatten().and_then(|t| t.chars().next());
            let value = r.try_get(1).ok().flatten().and_then(|v| v.parse().ok());
            match (tag, value) {
                (Some('c'), Some(v)) => now = Some(now_from(v)),
                (Some(t), Some(v)) => rows.push((t, v)),
                _ => {}
            }
        }
        let now = now.ok_or_else(|| {
            Fail::Store(StoreError::backend(format!(
                "PostgreSQL at {} did not tell the time",
                self.shown
            )))
        })?;
        Ok(Answer {
            now,
            tagged: rows,
            reads: read,
        })
    }
}

/// The most lock calls in one `SELECT` (PostgreSQL takes at most 1664
/// entries in a target list).
const LOCKS_PER_SELECT: usize = 1000;

/// Draws `$1` fences (see [`Tx::draw_fences`]).
const FENCES: &str = "SELECT nextval('fences') FROM generate_series(1, $1)";

/// The read of [`Tx::draw_fences`] for `n` fences, to send ahead.
pub(crate) fn fences_stmt(n: usize) -> Result<Stmt, Fail> {
    Stmt::new(FENCES, &[&(n as i32)])
}

/// The lock every write transaction holds shared from its first statement
/// to its end, and a reader of new events takes exclusive for a moment
/// (second number; the first is the store's namespace + 1, as for the
/// waiters' graph lock, 0). Event ids come from a sequence, drawn in one
/// order and committed in another: a reader that went on from the newest
/// id it saw would skip an event of a transaction that commits later with
/// a smaller id. Taking this lock exclusive waits out every transaction
/// that may hold such an id, so the ids up to the sequence's last value
/// are final (see [`Tx::events_horizon`]).
pub(crate) const EVENTS_LOCK: i32 = 1;

/// What one round trip of [`Tx::send_with_clock`] answered.
struct Answer {
    /// The database's clock.
    now: Now,
    /// Every `(tag, number)` row of the clock's statement (the queue probe,
    /// the fences).
    tagged: Vec<(char, i64)>,
    /// The rows of each read, in order.
    reads: Vec<Vec<SimpleQueryRow>>,
}

/// What [`Tx::lock`] learnt.
pub(crate) struct Locked {
    /// The database's clock after the locks.
    pub now: Now,
    /// The fences drawn, ascending.
    pub fences: Vec<i64>,
    /// Nothing was queued, anywhere. Waiters join the queue only under the
    /// locks of their keys, so none can join on the locked keys until this
    /// transaction ends.
    pub queue_empty: bool,
}

/// A statement with its arguments written out: its text (with `$1`, `$2`,
/// …), and each argument's type and literal.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Stmt {
    sql: String,
    types: Vec<Type>,
    values: Vec<String>,
}

impl Stmt {
    pub fn new(sql: impl Into<String>, args: &[&dyn Arg]) -> Result<Stmt, Fail> {
        Ok(Stmt {
            sql: sql.into(),
            types: args.iter().map(|a| a.ty()).collect(),
            values: args.iter().map(|a| a.literal()).collect::<Result<_, _>>()?,
        })
    }

    /// The statement with its arguments in place.
    pub fn literal(&self) -> Result<String, Fail> {
        let mut out = String::with_capacity(self.sql.len() + 64);
        let mut chars = self.sql.char_indices().peekable();
        let mut quoted = false;
        while let Some((_, c)) = chars.next() {
            if c == '\'' {
                quoted = !quoted;
            }
            if c != '$' || quoted {
                out.push(c);
                continue;
            }
            let mut n = 0usize;
            let mut digits = 0;
            while let Some((_, d)) = chars.peek().copied().filter(|(_, d)| d.is_ascii_digit()) {
                n = n * 10 + (d as usize - '0' as usize);
                digits += 1;
                chars.next();
            }
            match (digits, self.values.get(n.wrapping_sub(1))) {
                (0, _) => out.push('$'),
                (_, Some(v)) => out.push_str(v),
                (_, None) => {
                    return Err(Fail::Store(StoreError::backend(format!(
                        "statement argument ${n} is missing"
                    ))));
                }
            }
        }
        Ok(out)
    }
}

/// The database's clock: microseconds since the epoch serve as the
/// deadline clock, and their milliseconds as the wall clock.
fn now_from(micros: i64) -> Now {
    let micros = micros.max(0) as u64;
    Now {
        mono: Mono(micros),
        wall: Wall(micros / 1000),
    }
}

/// A 32-bit FNV-1a hash of a key: the second half of its advisory lock id.
/// Two keys that share an id only wait for each other a little more.
pub(crate) fn lock_id(key: &str) -> i32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in key.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    // 0 is the graph lock's.
    match h as i32 {
        0 => 1,
        v => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://app:s3cret@db.example:5432/locks?schema=x"),
            "postgres://app:***@db.example:5432/locks?schema=x"
        );
        assert_eq!(
            redact("postgres://db/locks?user=a&password=s3cret"),
            "postgres://db/locks?user=a&password=***"
        );
        assert_eq!(redact("postgres://app@db/locks"), "postgres://app@db/locks");
    }

    #[test]
    fn our_parameters_are_read_and_checked() {
        let t = parse(
            "postgres://u@localhost/db?schema=team_a&listen=off",
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(t.schema, "team_a");
        assert!(!t.listen);
        assert_eq!(t.config.get_dbname(), Some("db"));
        assert!(t.prepare, "statements are prepared unless told not to");
        let t = parse(
            "postgres://u@localhost/db?prepare=off",
            Duration::from_secs(5),
        )
        .unwrap();
        assert!(!t.prepare);
        let e = parse(
            "postgres://u@localhost/db?prepare=maybe",
            Duration::from_secs(5),
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("prepare=on or prepare=off"), "{e}");
        let e = parse(
            "postgres://u@localhost/db?schema=Bad-Name",
            Duration::from_secs(5),
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("schema name"), "{e}");
        let e = parse(
            "postgres://u:pw@localhost/db?bogus=1",
            Duration::from_secs(5),
        )
        .err()
        .unwrap();
        assert!(!e.to_string().contains("pw@"), "{e}");
    }
}
