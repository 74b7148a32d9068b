//! The live event stream (`GET /v1/events`, server-sent events). One pump
//! per server reads the store's history after the last event it saw and
//! hands each new event to every subscriber; the history is the source, so
//! changes made by other servers, the sweeper or the embedded CLI on the
//! same store appear too. A client resumes with `Last-Event-ID`: it gets
//! what it missed from the history, or a `reset` when that part of the
//! history is gone (or it fell too far behind) and it must read the state
//! again.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use locksmith_core::Event;
use locksmith_core::store::HistoryFilter;
use tokio::sync::{Notify, broadcast};

use crate::State;

/// How often the pump looks at the history without being poked.
const LOOK_EVERY: Duration = Duration::from_millis(250);
/// After a change, how long the pump gathers further changes before it
/// reads the history: one read for many writes under load.
const GATHER: Duration = Duration::from_millis(10);
/// Events a subscriber may be behind before it gets a `reset`.
const BACKLOG: usize = 4096;

/// The pump's side: new events go out here.
pub(crate) struct Feed {
    tx: broadcast::Sender<Arc<Event>>,
    /// The id of the last event sent (or seen at start).
    last: AtomicI64,
    /// Poked after every change this server makes.
    pub(crate) changed: Notify,
}

impl Default for Feed {
    fn default() -> Feed {
        Feed {
            tx: broadcast::channel(BACKLOG).0,
            last: AtomicI64::new(-1),
            changed: Notify::new(),
        }
    }
}

impl Feed {
    /// A receiver of every event sent from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }
    /// The id of the last event sent.
    pub(crate) fn last(&self) -> i64 {
        self.last.load(Ordering::Acquire)
    }
}

/// The newest event id of the store, or 0.
fn newest(store: &dyn locksmith_core::Store) -> Result<i64, locksmith_core::StoreError> {
    let top = store.history(&HistoryFilter {
        limit: 1,
        ..HistoryFilter::default()
    })?;
    Ok(top.first().map_or(0, |e| e.id))
}

/// Events after `after`, oldest first.
pub(crate) fn after(
    store: &dyn locksmith_core::Store,
    after: i64,
) -> Result<Vec<Event>, locksmith_core::StoreError> {
    let mut events = store.history(&HistoryFilter {
        after: Some(after),
        ..HistoryFilter::default()
    })?;
    events.reverse();
    Ok(events)
}

/// What the pump read: the events after its place, or, with nobody
/// subscribed, only the newest id (one row, not every event).
enum Read {
    Events(Vec<Event>),
    Newest(i64),
}

/// The events after `since`, or only the newest id while nobody listens.
fn unheard(
    feed: &Feed,
    store: &dyn locksmith_core::Store,
    since: i64,
) -> Result<Read, locksmith_core::StoreError> {
    if feed.tx.receiver_count() == 0 {
        return newest(store).map(Read::Newest);
    }
    after(store, since).map(Read::Events)
}

/// Runs until aborted: sends each new history event once, in order.
pub(crate) async fn pump(st: Arc<State>) {
    let start = match st.store_call(newest).await {
        Ok(Ok(id)) => id,
        _ => 0,
    };
    st.feed.last.store(start, Ordering::Release);
    loop {
        tokio::select! {
            () = st.feed.changed.notified() => tokio::time::sleep(GATHER).await,
            () = tokio::time::sleep(LOOK_EVERY) => {}
        }
        let since = st.feed.last();
        let feed = st.clone();
        let fresh = match st
            .store_call(move |store| unheard(&feed.feed, store, since))
            .await
        {
            Ok(Ok(Read::Events(events))) => events,
            Ok(Ok(Read::Newest(top))) => {
                // A later subscriber starts there. This answer comes after
                // the commit of the read and of the calls queued with it; a
                // subscriber that came meanwhile may want events up to
                // `top`, so then the place stays where it was.
                if st.feed.tx.receiver_count() == 0 {
                    st.feed.last.fetch_max(top, Ordering::AcqRel);
                }
                continue;
            }
            Ok(Err(e)) => {
                tracing::warn!(event = "events_read_failed", error = %e, "cannot read the history for the event stream");
                continue;
            }
            Err(_) => continue,
        };
        for e in fresh {
            let id = e.id;
            // No subscriber is not an error.
            let _ = st.feed.tx.send(Arc::new(e));
            st.feed.last.store(id, Ordering::Release);
        }
    }
}

/// Which events a subscriber wants.
#[derive(Clone, Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct Filter {
    /// Only keys starting with this text.
    pub prefix: Option<String>,
    /// Only this owner.
    pub owner: Option<String>,
    /// Start after this event id (as `Last-Event-ID` does).
    pub after: Option<i64>,
}

impl Filter {
    fn wants(&self, e: &Event) -> bool {
        self.prefix.as_deref().is_none_or(|p| e.key.starts_with(p))
            && self.owner.as_deref().is_none_or(|o| e.owner == o)
    }
}

/// One item of a subscriber's stream.
pub(crate) enum Item {
    /// An event of the history.
    Event(Arc<Event>),
    /// The subscriber missed events that cannot be replayed: read the state again.
    Reset(&'static str),
}

/// What a subscriber that resumes after `id` missed, oldest first, or
/// `None` when the history no longer holds event `id` (pruned).
pub(crate) fn missed(
    store: &dyn locksmith_core::Store,
    id: i64,
) -> Result<Option<Vec<Event>>, locksmith_core::StoreError> {
    if id <= 0 {
        return after(store, 0).map(Some);
    }
    let mut events = after(store, id - 1)?;
    match events.first() {
        Some(first) if first.id == id => {
            events.remove(0);
            Ok(Some(events))
        }
        _ => Ok(None),
    }
}

/// One subscriber's place: what is left of its backlog, its receiver, the
/// last id it got.
struct Sub {
    backlog: std::collections::VecDeque<Item>,
    rx: broadcast::Receiver<Arc<Event>>,
    stopping: tokio::sync::watch::Receiver<bool>,
    sent: i64,
    filter: Filter,
}

/// The stream of one subscriber: first what it missed, then live events,
/// each once and in order, until the server stops.
pub(crate) fn stream(
    st: &State,
    filter: Filter,
    backlog: Vec<Item>,
    sent: i64,
    rx: broadcast::Receiver<Arc<Event>>,
) -> impl futures_util::Stream<Item = Item> + Send + 'static {
    let sub = Sub {
        backlog: backlog.into(),
        rx,
        stopping: st.stopping.clone(),
        sent,
        filter,
    };
    futures_util::stream::unfold(sub, |mut sub| async move {
        if let Some(item) = sub.backlog.pop_front() {
            if let Item::Event(e) = &item {
                sub.sent = sub.sent.max(e.id);
            }
            return Some((item, sub));
        }
        loop {
            if *sub.stopping.borrow() {
                return None;
            }
            let got = tokio::select! {
                r = sub.rx.recv() => r,
                _ = sub.stopping.wait_for(|s| *s) => return None,
            };
            match got {
                Ok(e) if e.id <= sub.sent || !sub.filter.wants(&e) => continue,
                Ok(e) => {
                    sub.sent = e.id;
                    return Some((Item::Event(e), sub));
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    return Some((Item::Reset("fell_behind"), sub));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}
