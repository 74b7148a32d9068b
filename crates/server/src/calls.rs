//! Where the server runs its store calls, which block: on the runtime's
//! blocking threads, or one after another on one thread of their own.
//!
//! The embedded store has one SQLite connection behind a mutex, so its calls
//! run one at a time whatever the server does. Run from many blocking
//! threads, each call first waits for that mutex and is then handed it
//! by a wake-up of the kernel; on a busy machine most of a call's time is
//! that hand-over. One thread that takes the calls from a queue runs them
//! back to back instead, while the queue fills behind it; a call that comes
//! alone runs at once where it arrived (see [`Calls::run`]).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use locksmith_core::{Code, Store, StoreError};
use prometheus_client::metrics::histogram::Histogram;

use crate::error::ApiError;

/// How the server runs its store calls (see [`crate::Settings::store_calls`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StoreCalls {
    /// On the runtime's blocking threads, as many at once as arrive: for a
    /// store whose calls can overlap (PostgreSQL, with a connection each).
    #[default]
    Parallel,
    /// One after another on one thread: for a store whose calls cannot
    /// overlap anyway (the embedded store, one connection). The calls that
    /// queued up while one ran commit together ([`Store::together`]).
    OneThread,
}

/// A queued call. Given no error, it makes the store call and answers how
/// to hand its answer over once the calls run with it have committed; given
/// the error of a group that could not begin, it tells its caller that.
type Job = Box<dyn FnOnce(Option<&StoreError>) -> Option<Answer> + Send>;

/// Hands a call's answer to its caller, given whether the calls run with
/// it were kept (`Ok`) or not (the commit's error).
type Answer = Box<dyn FnOnce(Result<(), &StoreError>) + Send>;

/// At most this many queued calls commit together.
const TOGETHER_MAX: usize = 64;

/// The runner of store calls; the thread of [`StoreCalls::OneThread`]
/// ends when this is dropped and its queue is empty.
pub(crate) struct Calls {
    queue: Option<mpsc::Sender<Job>>,
    /// Calls of [`StoreCalls::OneThread`] begun and not yet answered.
    in_flight: Arc<AtomicUsize>,
    /// Until when (nanoseconds after `born`) every call goes to the queue:
    /// calls overlapped lately.
    queue_until: AtomicU64,
    born: Instant,
}

/// How long every call goes to the queue after one found two or more begun.
const BUSY_SPELL: Duration = Duration::from_millis(50);

/// Counts a call out of [`Calls::in_flight`] when it ends, also by a panic.
struct Done(Arc<AtomicUsize>);

impl Drop for Done {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Calls {
    /// A runner of calls of `store`, `how` it takes them; the calls of
    /// each commit of its thread are counted in `per_commit`.
    pub(crate) fn new(
        how: StoreCalls,
        store: Arc<dyn Store>,
        per_commit: Histogram,
    ) -> Result<Calls, String> {
        let queue = match how {
            StoreCalls::Parallel => None,
            StoreCalls::OneThread => {
                let (tx, rx) = mpsc::channel::<Job>();
                std::thread::Builder::new()
                    .name("store-calls".into())
                    .spawn(move || run_queue(&rx, &*store, &per_commit))
                    .map_err(|e| format!("cannot start the thread of store calls: {e}"))?;
                Some(tx)
            }
        };
        Ok(Calls {
            queue,
            in_flight: Arc::new(AtomicUsize::new(0)),
            queue_until: AtomicU64::new(0),
            born: Instant::now(),
        })
    }

    /// Runs `f` where store calls run and answers what it returns.
    ///
    /// With [`StoreCalls::OneThread`], while calls come one at a time, a
    /// call runs at once on the caller's thread, on a runtime of several
    /// threads: no other call of this runner is begun, and the two
    /// hand-overs between threads were most of a lone client's wait. A call
    /// that has to wait there (for another process at the write gate, or
    /// for the connection) first hands the thread's other tasks and the
    /// runtime's I/O to another thread, inside the store; a call that does
    /// not wait pays nothing for it. A call that finds another
    /// begun goes to the queue, whose calls run in the order they came; one
    /// that finds two or more begun sends every call for [`BUSY_SPELL`]
    /// after it there too: calls that crowd in run back to back on the one
    /// thread, not in turns for the connection. (Long polls and the sweeper
    /// call the store outside this runner, on blocking threads.)
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let Some(queue) = &self.queue else {
            return crate::poll::blocking(f).await;
        };
        let panicked = || ApiError::new(Code::StoreError, "the store call failed (it panicked)");
        let now = self.born.elapsed().as_nanos() as u64;
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let done = Done(self.in_flight.clone());
        let (here, until) = route(before, now, self.queue_until.load(Ordering::Relaxed));
        self.queue_until.fetch_max(until, Ordering::Relaxed);
        if here && multi_thread() {
            let call = || locksmith_core::store::call_on_async_worker(f);
            let out = catch_unwind(AssertUnwindSafe(call)).map_err(|_| panicked());
            drop(done);
            return out;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        queue
            .send(Box::new(move |refused: Option<&StoreError>| {
                if let Some(e) = refused {
                    drop(done);
                    let _ = tx.send(Err(not_kept(e)));
                    return None;
                }
                let out = f();
                Some(Box::new(move |kept: Result<(), &StoreError>| {
                    drop(done);
                    // The caller may have gone (a dropped connection); the
                    // call has been made all the same.
                    let _ = tx.send(kept.map(|()| out).map_err(not_kept));
                }) as Answer)
            }))
            .map_err(|_| ApiError::new(Code::StoreError, "the thread of store calls has ended"))?;
        rx.await.unwrap_or_else(|_| Err(panicked()))
    }
}

/// The thread of [`StoreCalls::OneThread`]: takes a call, and with it every
/// call queued meanwhile (up to [`TOGETHER_MAX`]), runs them in order in
/// one commit, then answers them. A lone call commits by itself; a group
/// the store cannot begin makes none of its calls.
fn run_queue(rx: &mpsc::Receiver<Job>, store: &dyn Store, per_commit: &Histogram) {
    while let Ok(first) = rx.recv() {
        let jobs: Vec<Job> = std::iter::once(first)
            .chain(rx.try_iter().take(TOGETHER_MAX - 1))
            .collect();
        per_commit.observe(jobs.len() as f64);
        let mut answers = Vec::with_capacity(jobs.len());
        let kept = if jobs.len() == 1 {
            run_all(jobs, &mut answers);
            Ok(())
        } else {
            let mut left = Some(jobs);
            let kept = catch_unwind(AssertUnwindSafe(|| {
                store.together(&mut || run_all(left.take().unwrap_or_default(), &mut answers))
            }))
            .unwrap_or_else(|_| Err(StoreError::backend("a group commit failed (it panicked)")));
            match (left, &kept) {
                // The group could not begin (its gate stayed taken, say):
                // none of its calls ran, and each caller is told why.
                (Some(jobs), Err(e)) => {
                    for job in jobs {
                        let _ = catch_unwind(AssertUnwindSafe(|| job(Some(e))));
                    }
                }
                (Some(jobs), Ok(())) => run_all(jobs, &mut answers),
                (None, _) => {}
            }
            kept
        };
        for answer in answers {
            answer(kept.as_ref().map(|_| ()));
        }
    }
}

/// Makes each call; one that panics answers its caller with an error (its
/// answer channel is dropped) and leaves the thread to the next call.
fn run_all(jobs: Vec<Job>, answers: &mut Vec<Answer>) {
    for job in jobs {
        if let Ok(Some(answer)) = catch_unwind(AssertUnwindSafe(|| job(None))) {
            answers.push(answer);
        }
    }
}

/// The answer of a call whose group commit failed: its writes were not kept.
fn not_kept(e: &StoreError) -> ApiError {
    ApiError::new(
        e.code(),
        format!("the store did not keep this call's changes: {e}; nothing changed, try again"),
    )
}

/// Whether the caller runs on a runtime of several threads, whose other
/// workers carry on while this one makes a call.
fn multi_thread() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

/// Where a call that found `before` calls begun runs, at `now` (in
/// nanoseconds, as `queue_until`, until when calls go to the queue): true
/// for the caller's thread. Also answers the new `queue_until`. One other
/// call is no crowd: the event feed's read of the history meets a lone
/// client's call now and then.
fn route(before: usize, now: u64, queue_until: u64) -> (bool, u64) {
    let until = match before {
        0 | 1 => queue_until,
        _ => queue_until.max(now + BUSY_SPELL.as_nanos() as u64),
    };
    (before == 0 && now >= until, until)
}

#[cfg(test)]
mod tests {
    use super::*;
    use locksmith_core::Attempt;
    use locksmith_sqlite::SqliteStore;
    use locksmith_testkit::{key, request};

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    const SECONDS: Duration = Duration::from_secs(30);

    fn counts() -> Histogram {
        Histogram::new([1.0, 2.0, 4.0])
    }

    /// A fresh embedded store in `dir`, whose writers wait `busy` at most.
    fn store(dir: &tempfile::TempDir, busy: Duration) -> Arc<SqliteStore> {
        let opts = locksmith_sqlite::Options {
            busy_timeout: busy,
            ..Default::default()
        };
        Arc::new(SqliteStore::open(&dir.path().join("locksmith.db"), opts).unwrap())
    }

    /// Queues a call that holds the thread of `calls` until `go` is sent,
    /// then `n` more that acquire `q/0` … for owner `A`, each answering
    /// its store's answer and whether `other` saw `q/0` held meanwhile.
    /// Answers them once all are queued. On a runtime of one thread,
    /// where every call goes to the queue.
    #[allow(clippy::type_complexity)]
    async fn queue_behind_one(
        calls: &Arc<Calls>,
        store: &Arc<SqliteStore>,
        other: &Arc<SqliteStore>,
        n: usize,
        go: mpsc::Receiver<()>,
    ) -> Vec<tokio::task::JoinHandle<Result<(Result<Attempt, StoreError>, bool), ApiError>>> {
        let (started_tx, started) = mpsc::channel();
        let first = calls.clone();
        tokio::spawn(async move {
            first
                .run(move || {
                    started_tx.send(()).unwrap();
                    go.recv().unwrap();
                })
                .await
        });
        tokio::task::yield_now().await;
        started.recv().unwrap();
        let queued: Vec<_> = (0..n)
            .map(|i| {
                let (calls, s, o) = (calls.clone(), store.clone(), other.clone());
                tokio::spawn(async move {
                    calls
                        .run(move || {
                            let got = s.acquire(&request("A", &[&format!("q/{i}")]), None);
                            let seen = !o.status(&key("q/0")).unwrap().holders.is_empty();
                            (got, seen)
                        })
                        .await
                })
            })
            .collect();
        for _ in 0..1000 {
            if calls.in_flight.load(Ordering::Acquire) == n + 1 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(calls.in_flight.load(Ordering::Acquire), n + 1, "all queued");
        queued
    }

    #[test]
    fn calls_queued_while_one_runs_commit_together() {
        let dir = tempfile::tempdir().unwrap();
        let (store, other) = (store(&dir, SECONDS), store(&dir, SECONDS));
        let calls = Arc::new(Calls::new(StoreCalls::OneThread, store.clone(), counts()).unwrap());
        let (go, go_rx) = mpsc::channel();
        runtime().block_on(async {
            let queued = queue_behind_one(&calls, &store, &other, 4, go_rx).await;
            go.send(()).unwrap();
            for q in queued {
                let (got, seen) = q.await.unwrap().unwrap();
                assert!(matches!(got, Ok(Attempt::Granted(_))), "{got:?}");
                // Another connection saw none of the group's writes before
                // the group's one commit.
                assert!(!seen, "a write of the group was visible before its commit");
            }
        });
        for i in 0..4 {
            let k = key(&format!("q/{i}"));
            assert_eq!(other.status(&k).unwrap().holders.len(), 1, "q/{i} kept");
        }
    }

    #[test]
    fn a_group_that_cannot_begin_tells_every_caller_why() {
        let dir = tempfile::tempdir().unwrap();
        let short = Duration::from_millis(100);
        let (store, other) = (store(&dir, short), store(&dir, short));
        let calls = Arc::new(Calls::new(StoreCalls::OneThread, store.clone(), counts()).unwrap());
        let (go, go_rx) = mpsc::channel();
        // Another process in the middle of a write: the gate's kernel lock held.
        let gate = std::fs::File::open(dir.path().join("locksmith.db-gate")).unwrap();
        rustix::fs::flock(&gate, rustix::fs::FlockOperation::LockExclusive).unwrap();
        runtime().block_on(async {
            let queued = queue_behind_one(&calls, &store, &other, 3, go_rx).await;
            go.send(()).unwrap();
            for q in queued {
                let e = q.await.unwrap().expect_err("the gate stays taken");
                assert_eq!(e.problem.code, Code::Unavailable.name());
                let text = serde_json::to_string(&e.problem).unwrap();
                assert!(text.contains("write gate"), "{text}");
            }
        });
        assert!(other.status(&key("q/0")).unwrap().holders.is_empty());
        drop(gate);
        runtime().block_on(async {
            let s = store.clone();
            let got = calls
                .run(move || s.acquire(&request("A", &["q/0"]), None))
                .await
                .unwrap();
            assert!(matches!(got, Ok(Attempt::Granted(_))), "{got:?}");
        });
    }

    #[test]
    fn a_call_whose_group_was_not_kept_is_told_so_with_the_cause() {
        let e = not_kept(&StoreError::Busy("the disk is full".into()));
        assert_eq!(e.problem.code, Code::Unavailable.name());
        let text = serde_json::to_string(&e.problem).unwrap();
        assert!(
            text.contains("did not keep") && text.contains("the disk is full"),
            "{text}"
        );
    }

    /// A runtime of two threads, where a lone call runs where it arrived.
    fn several() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap()
    }

    #[test]
    fn a_lone_call_runs_here_and_a_crowd_queues_for_a_spell() {
        let spell = BUSY_SPELL.as_nanos() as u64;
        // Alone, no spell: here.
        assert_eq!(route(0, 1_000, 0), (true, 0));
        // One call begun: the queue, and no spell.
        assert_eq!(route(1, 1_000, 0), (false, 0));
        // Two begun: the queue, and a spell from now.
        assert_eq!(route(2, 1_000, 0), (false, 1_000 + spell));
        // Alone again, within the spell: still the queue.
        assert_eq!(
            route(0, 1_000 + spell - 1, 1_000 + spell),
            (false, 1_000 + spell)
        );
        // Alone, the spell over: here.
        assert_eq!(
            route(0, 1_000 + spell, 1_000 + spell),
            (true, 1_000 + spell)
        );
        // A later crowd never shortens a spell.
        assert_eq!(route(5, 10, 1_000 + spell), (false, 1_000 + spell));
    }

    #[test]
    fn calls_made_while_one_runs_go_to_the_one_thread_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let calls =
            Arc::new(Calls::new(StoreCalls::OneThread, store(&dir, SECONDS), counts()).unwrap());
        let rt = several();
        let name = || std::thread::current().name().map(String::from);
        rt.block_on(async {
            // A lone call runs on the caller's thread.
            let here = std::thread::current().id();
            assert_eq!(
                calls
                    .run(move || std::thread::current().id())
                    .await
                    .unwrap(),
                here
            );
            // One that blocks, so that the next ones find it begun.
            let (started_tx, started) = std::sync::mpsc::channel();
            let (go, go_rx) = std::sync::mpsc::channel::<()>();
            let first = tokio::spawn({
                let calls = calls.clone();
                async move {
                    calls
                        .run(move || {
                            started_tx.send(()).unwrap();
                            go_rx.recv().unwrap();
                            "first"
                        })
                        .await
                }
            });
            tokio::task::spawn_blocking(move || started.recv().unwrap())
                .await
                .unwrap();
            let mut seen = Vec::new();
            for i in 0..5 {
                let (n, thread) = calls.run(move || (i, name())).await.unwrap();
                seen.push((n, thread));
            }
            let store_calls = Some("store-calls".to_string());
            assert_eq!(
                seen,
                (0..5).map(|i| (i, store_calls.clone())).collect::<Vec<_>>()
            );
            go.send(()).unwrap();
            assert_eq!(first.await.unwrap().unwrap(), "first");
        });
    }

    #[test]
    fn a_call_that_panics_fails_alone() {
        // On a runtime of one thread a call always goes to the queue; on one
        // of several, a lone call runs where it arrived.
        let one = runtime();
        let several = several();
        for how in [StoreCalls::OneThread, StoreCalls::Parallel] {
            for rt in [&one, &several] {
                let dir = tempfile::tempdir().unwrap();
                let calls = Calls::new(how, store(&dir, SECONDS), counts()).unwrap();
                rt.block_on(async {
                    let failed = calls.run(|| -> u8 { panic!("a store call broke") }).await;
                    let e = failed.expect_err("the panic is an error");
                    assert_eq!(e.problem.code, Code::StoreError.name(), "{how:?}");
                    assert_eq!(
                        calls.run(|| 7).await.unwrap(),
                        7,
                        "{how:?}: the next call runs"
                    );
                });
                assert_eq!(
                    calls.in_flight.load(Ordering::Acquire),
                    0,
                    "{how:?}: every call counted out"
                );
            }
        }
    }
}
