//! History retention. The retention is the store's setting, recorded when
//! the store is made; a caller's own setting can lengthen it, never shorten
//! it. Only the sweeper prunes (never a reader, never a dry run), oldest
//! first in bounded batches, and it judges age from the earlier of its own
//! clock and the newest event: a clock set ahead cannot age recent events.

use locksmith_core::{Now, StoreError};
use rusqlite::{Connection, OptionalExtension};

use crate::Options;
use crate::open::map_err;

/// The store's retention in milliseconds, lengthened to the caller's when
/// the caller asks for more.
fn retention_ms(tx: &Connection, opts: &Options) -> Result<i64, StoreError> {
    let recorded: Option<i64> = tx
        .query_row(
            "SELECT v FROM meta WHERE k = 'history_retention_ms'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(map_err)?;
    let asked = opts.history_retention.as_millis().min(i64::MAX as u128) as i64;
    match recorded {
        Some(kept) if kept >= asked => Ok(kept),
        _ => {
            tx.execute(
                "INSERT OR REPLACE INTO meta (k, v) VALUES ('history_retention_ms', ?1)",
                [asked],
            )
            .map_err(map_err)?;
            Ok(asked)
        }
    }
}

/// Deletes history older than the store's retention, oldest first, at most
/// 10 000 events per call.
pub(crate) fn prune_history(
    tx: &Connection,
    now: Now,
    opts: &Options,
) -> Result<usize, StoreError> {
    let keep = retention_ms(tx, opts)?;
    let newest: Option<(i64, i64)> = tx
        .query_row(
            "SELECT at_wall, id FROM events ORDER BY id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(map_err)?;
    let Some((newest, last_id)) = newest else {
        return Ok(0);
    };
    let cutoff = (now.wall.0 as i64).min(newest).saturating_sub(keep);
    let pruned = tx
        .execute(
            "DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY id LIMIT 10000) AND at_wall < ?1",
            [cutoff],
        )
        .map_err(map_err)?;
    if pruned > 0 {
        // Fences are event ids (see `acquire`): the last id issued stays as
        // the floor of the next, even when the whole history was old.
        tx.execute(
            "UPDATE meta SET v = ?1 WHERE k = 'fence' AND v < ?1",
            [last_id],
        )
        .map_err(map_err)?;
    }
    Ok(pruned)
}
