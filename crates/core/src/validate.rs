//! Refusing malformed requests before any store is touched: the limits on
//! keys, names, metadata and durations that every store enforces alike.

use std::time::Duration;

use crate::model::{MAX_METADATA_BYTES, Mode};
use crate::rules::{self, Claim};
use crate::store::{AcquireRequest, StoreError, Takeover};

/// Most keys one request may name.
pub const MAX_KEYS: usize = 64;
/// Longest owner name, task or request id, in bytes.
pub const MAX_TEXT: usize = 256;
/// Longest lease or `max_hold` accepted: deadlines stay far inside a 63-bit
/// microsecond clock.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86_400);
/// Shortest lease accepted.
pub const MIN_TTL: Duration = Duration::from_millis(100);

fn invalid<T>(message: String) -> Result<T, StoreError> {
    Err(StoreError::Invalid(message))
}

/// A lease must be at least [`MIN_TTL`] and at most [`MAX_DURATION`].
pub fn check_ttl(ttl: Option<Duration>) -> Result<(), StoreError> {
    match ttl {
        Some(t) if t < MIN_TTL => invalid("a lease (ttl) must be at least 100ms".into()),
        Some(t) if t > MAX_DURATION => invalid("a lease (ttl) may be at most 100 years".into()),
        _ => Ok(()),
    }
}

/// Refuses a malformed acquire request, saying what is wrong.
pub fn request(req: &AcquireRequest) -> Result<(), StoreError> {
    if req.keys.is_empty() {
        return invalid("no key given: name at least one key".into());
    }
    if req.keys.len() > MAX_KEYS {
        return invalid(format!(
            "{} keys in one request; the limit is {MAX_KEYS}",
            req.keys.len()
        ));
    }
    for (i, a) in req.keys.iter().enumerate() {
        for b in &req.keys[i + 1..] {
            let ca = Claim {
                key: a,
                mode: req.mode,
                scope: req.scope,
            };
            let cb = Claim { key: b, ..ca };
            if rules::overlaps(&ca, &cb) {
                return invalid(format!(
                    "keys {a} and {b} overlap in one request; name each lock once"
                ));
            }
        }
    }
    if let Mode::Semaphore { limit: 0 } = req.mode {
        return invalid("a semaphore limit must be at least 1".into());
    }
    if req.holder.owner.trim().is_empty() || req.holder.owner.len() > MAX_TEXT {
        return invalid(format!("the owner name must be 1 to {MAX_TEXT} bytes"));
    }
    for (what, v) in [("task", &req.holder.task), ("request id", &req.request_id)] {
        if v.as_ref()
            .is_some_and(|t| t.is_empty() || t.len() > MAX_TEXT)
        {
            return invalid(format!("the {what} must be 1 to {MAX_TEXT} bytes"));
        }
    }
    // Names are shown in terminals and pages: no control characters (an
    // escape sequence in an owner name would rewrite an admin's screen).
    let host = (!req.holder.hostname.is_empty()).then_some(&req.holder.hostname);
    for (what, v) in [
        ("owner name", Some(&req.holder.owner)),
        ("task", req.holder.task.as_ref()),
        ("request id", req.request_id.as_ref()),
        ("host name", host),
    ] {
        if let Some(t) = v {
            plain(what, t)?;
        }
    }
    if let Some(meta) = &req.holder.metadata {
        if !meta.is_object() {
            return invalid("metadata must be a JSON object".into());
        }
        let size = meta.to_string().len();
        if size > MAX_METADATA_BYTES {
            return invalid(format!(
                "metadata is {size} bytes; the limit is {MAX_METADATA_BYTES}"
            ));
        }
    }
    check_ttl(req.ttl)?;
    match req.max_hold {
        Some(m) if m < MIN_TTL => {
            return invalid(
                "max_hold must be at least 100ms: a shorter cap ends the lock as it is granted"
                    .into(),
            );
        }
        Some(m) if m > MAX_DURATION => return invalid("max_hold may be at most 100 years".into()),
        _ => {}
    }
    if let Takeover::Force { reason } = &req.takeover
        && reason.trim().is_empty()
    {
        return invalid(
            "a forced takeover needs a reason: say why the holder is pushed out".into(),
        );
    }
    Ok(())
}

/// Shortest `stale_after` a store accepts: a lock without a lease is not
/// taken for abandoned after a moment of silence.
pub const MIN_STALE_AFTER: Duration = Duration::from_secs(60);

/// A store's `stale_after` must be at least [`MIN_STALE_AFTER`] and at most
/// [`MAX_DURATION`].
pub fn stale_after(d: Duration) -> Result<(), StoreError> {
    if d < MIN_STALE_AFTER {
        return invalid(format!(
            "stale_after must be at least 1m (it was {}): a lock without a lease is not abandoned after a moment of silence",
            crate::time::format_duration(d)
        ));
    }
    if d > MAX_DURATION {
        return invalid("stale_after may be at most 100 years".into());
    }
    Ok(())
}

/// Shortest history retention a store accepts.
pub const MIN_RETENTION: Duration = Duration::from_secs(3600);

/// A history retention must be at least [`MIN_RETENTION`].
pub fn history_retention(d: Duration) -> Result<(), StoreError> {
    if d < MIN_RETENTION {
        return invalid(format!(
            "history_retention must be at least 1h (it was {}): the audit history is not a scratch pad",
            crate::time::format_duration(d)
        ));
    }
    Ok(())
}

/// Refuses a force-release without a reason, or whose reason or the name
/// of who forces is not plain text.
pub fn force(why: &str, by: Option<&str>) -> Result<(), StoreError> {
    if why.trim().is_empty() {
        return invalid("a force-release needs a reason: say why the holder is pushed out".into());
    }
    plain("reason", why)?;
    match by {
        Some(by) => plain("name of who forces", by),
        None => Ok(()),
    }
}

/// Refuses text with control characters (including escape sequences and
/// line breaks), naming what it is.
pub fn plain(what: &str, text: &str) -> Result<(), StoreError> {
    match text.chars().find(|c| c.is_control()) {
        Some(c) => invalid(format!(
            "the {what} {text:?} contains the control character {c:?}; use plain text"
        )),
        None => Ok(()),
    }
}
