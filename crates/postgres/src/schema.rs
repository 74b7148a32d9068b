//! The store's schema: numbered migrations applied on connect, one process
//! at a time, refusing a schema that is not ours or that a newer locksmith
//! wrote.

use locksmith_core::StoreError;

use crate::Options;
use crate::conn::{Fail, Pool};

/// Every migration, in order; never edit one after release.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_init.sql"),
    include_str!("../migrations/0002_holder_uid.sql"),
    include_str!("../migrations/0003_handover.sql"),
];

/// What `meta.app` says in a schema of ours.
const APP: &str = "locksmith";

/// Creates or migrates the schema and answers the store id. Concurrent
/// first connections wait for each other on a transaction-scoped lock; a
/// refusal changes nothing.
pub(crate) fn migrate(pool: &Pool, ns: i32, opts: &Options) -> Result<String, StoreError> {
    let schema = pool.target().schema.clone();
    let shown = pool.target().shown.clone();
    let refuse = |why: String| {
        Fail::Store(StoreError::Unusable(format!(
            "PostgreSQL at {shown}: {why}; nothing was changed"
        )))
    };
    pool.run(false, |tx| {
        // Waits for another process that is creating or migrating it.
        tx.exec("SELECT pg_advisory_xact_lock($1, -1)", &[&ns])?;
        let exists: bool = tx
            .one(
                "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
                &[&schema],
            )?
            .try_get(0)?;
        let mut version = 0usize;
        if exists {
            let has_meta: bool = tx
                .one(
                    "SELECT to_regclass(quote_ident($1) || '.meta') IS NOT NULL",
                    &[&schema],
                )?
                .try_get(0)?;
            let app = match has_meta {
                true => tx.opt("SELECT v FROM meta WHERE k = 'app'", &[])?,
                false => None,
            };
            let app: Option<String> = match app {
                Some(r) => Some(r.try_get(0)?),
                None => None,
            };
            if app.as_deref() != Some(APP) {
                let tables: i64 = tx
                    .one(
                        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                          WHERE n.nspname = $1",
                        &[&schema],
                    )?
                    .try_get(0)?;
                if tables > 0 {
                    return Err(refuse(format!(
                        "the schema {schema} belongs to another program, not locksmith. Choose another with ?schema=NAME in the store URL"
                    )));
                }
            } else {
                let v: String = tx
                    .one("SELECT v FROM meta WHERE k = 'schema_version'", &[])?
                    .try_get(0)?;
                version = v.parse().unwrap_or(usize::MAX);
            }
        } else {
            tx.batch(&format!("CREATE SCHEMA {schema}"))?;
        }
        if version > MIGRATIONS.len() {
            return Err(refuse(format!(
                "the schema {schema} was written by a newer locksmith (schema {version}, this one knows {}). Upgrade locksmith",
                MIGRATIONS.len()
            )));
        }
        for sql in &MIGRATIONS[version..] {
            tx.batch(sql)?;
        }
        if version == 0 {
            tx.exec(
                "INSERT INTO meta (k, v) VALUES ('app', $1), ('store_id', $2),
                     ('history_retention_ms', $3::int8::text), ('schema_version', '0')",
                &[
                    &APP,
                    &locksmith_host::random_hex(8),
                    &(opts.history_retention.as_millis() as i64),
                ],
            )?;
        }
        if version < MIGRATIONS.len() {
            tx.exec(
                "UPDATE meta SET v = $1 WHERE k = 'schema_version'",
                &[&MIGRATIONS.len().to_string()],
            )?;
        }
        Ok(tx
            .one("SELECT v FROM meta WHERE k = 'store_id'", &[])?
            .try_get(0)?)
    })
}
