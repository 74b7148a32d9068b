//! Wake-ups across machines: a writer that may have let waiters in sends
//! `NOTIFY locksmith, '<machine> <address>'` inside its transaction, which
//! PostgreSQL delivers only if it commits. Each process keeps one dedicated
//! connection that `LISTEN`s and hands every address of another machine to
//! its wake socket on this one (addresses of this machine were woken
//! directly). The notification is a hint: the listener notices a dropped
//! connection (a failed check every few quiet seconds) and reconnects, and
//! every waiter looks again at least once a second (`decide::REFRESH`), so
//! a lost notification costs latency, never a stuck waiter.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use locksmith_host::wake::Waker;
use postgres::fallible_iterator::FallibleIterator;

use crate::conn::{Fail, Target, Tx};

/// The channel of every locksmith store; payloads name their store.
const CHANNEL: &str = "locksmith";

/// A short tag of a machine, to tell our own notifications from others'.
pub(crate) fn tag(machine: &str) -> String {
    format!("{:08x}", crate::conn::lock_id(machine) as u32)
}

/// Queues one notification per address, sent when the transaction commits;
/// `tag` names this machine.
pub(crate) fn notify(tx: &mut Tx<'_>, tag: &str, wakes: &[String]) -> Result<(), Fail> {
    // Addresses only: a hand-over's message (its grant's secret) goes to
    // its waiter on this machine alone, never to every listener.
    let wakes: Vec<&str> = wakes
        .iter()
        .map(|w| locksmith_core::local::split_wake(w).0)
        .collect();
    tx.exec(
        "SELECT pg_notify($1, $2 || ' ' || a) FROM unnest($3::text[]) AS a",
        &[&CHANNEL, &tag, &wakes],
    )
}

/// Databases this process already listens to.
static LISTENING: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();

/// Starts this process's listener for the database of `target`, once;
/// `own` is this machine's tag.
pub(crate) fn ensure(target: &Target, own: &str) {
    let id = format!("{:?}", target.config);
    let set = LISTENING.get_or_init(|| Mutex::new(HashSet::new()));
    if !set
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id.clone())
    {
        return;
    }
    let target = target.clone();
    let own = own.to_string();
    let spawned = std::thread::Builder::new()
        .name("locksmith-listen".into())
        .spawn(move || listen(&target, &own));
    if spawned.is_err() {
        // Without a listener, waiters still look again every second; the
        // next store opened tries again.
        set.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    }
}

/// Listens forever, reconnecting after a second when the connection drops.
fn listen(target: &Target, own: &str) {
    let waker = Waker::new();
    // Named, so that an administrator (and a test) can tell it apart.
    let mut target = target.clone();
    target.config.application_name("locksmith-listen");
    loop {
        if let Ok(mut client) = crate::conn::connect(&target, Duration::from_secs(10))
            && client.batch_execute(&format!("LISTEN {CHANNEL}")).is_ok()
        {
            loop {
                let next = client
                    .notifications()
                    .timeout_iter(Duration::from_secs(5))
                    .next();
                match next {
                    Ok(Some(n)) => {
                        if let Some((from, address)) = n.payload().split_once(' ')
                            && from != own
                        {
                            waker.wake(address);
                        }
                    }
                    Ok(None) => {
                        if client.is_valid(Duration::from_secs(5)).is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}
