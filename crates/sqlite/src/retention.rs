//! History retention: events older than the store's retention are dropped,
//! oldest first, in bounded batches.

use locksmith_core::{Now, StoreError};
use rusqlite::OptionalExtension;

use crate::Options;
use crate::open::map_err;

/// Wall time (ms) before which history is past the retention.
fn retention_cutoff(now: Now, opts: &Options) -> i64 {
    now.wall
        .0
        .saturating_sub(opts.history_retention.as_millis() as u64) as i64
}

/// Deletes history older than the retention, oldest first, in bounded batches.
pub(crate) fn prune_history(
    tx: &rusqlite::Transaction<'_>,
    now: Now,
    opts: &Options,
) -> Result<usize, StoreError> {
    let cutoff = retention_cutoff(now, opts);
    tx.execute(
        "DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY id LIMIT 10000) AND at_wall < ?1",
        [cutoff],
    )
    .map_err(map_err)
}

/// True when the oldest kept event is past the retention (cheap: one row).
pub(crate) fn history_due(
    tx: &rusqlite::Transaction<'_>,
    now: Now,
    opts: &Options,
) -> Result<bool, StoreError> {
    let cutoff = retention_cutoff(now, opts);
    let oldest: Option<i64> = tx
        .query_row("SELECT at_wall FROM events ORDER BY id LIMIT 1", [], |r| {
            r.get(0)
        })
        .optional()
        .map_err(map_err)?;
    Ok(oldest.is_some_and(|t| t < cutoff))
}
