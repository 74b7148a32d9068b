//! Where the server runs its store calls, which block: on the runtime's
//! blocking threads, or one after another on one thread of their own.
//!
//! The embedded store has one SQLite connection behind a mutex, so its calls
//! run one at a time whatever the server does. Run from many blocking
//! threads, each call first waits for that mutex and is then handed it
//! by a wake-up of the kernel; on a busy machine most of a call's time is
//! that hand-over. One thread that takes the calls from a queue runs them
//! back to back instead, while the queue fills behind it.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;

use locksmith_core::Code;

use crate::error::ApiError;

/// How the server runs its store calls (see [`crate::Settings::store_calls`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StoreCalls {
    /// On the runtime's blocking threads, as many at once as arrive: for a
    /// store whose calls can overlap (PostgreSQL, with a connection each).
    #[default]
    Parallel,
    /// One after another on one thread: for a store whose calls cannot
    /// overlap anyway (the embedded store, one connection).
    OneThread,
}

type Job = Box<dyn FnOnce() + Send>;

/// The runner of store calls; the thread of [`StoreCalls::OneThread`]
/// ends when this is dropped and its queue is empty.
pub(crate) struct Calls {
    queue: Option<mpsc::Sender<Job>>,
}

impl Calls {
    pub(crate) fn new(how: StoreCalls) -> Result<Calls, String> {
        let queue = match how {
            StoreCalls::Parallel => None,
            StoreCalls::OneThread => {
                let (tx, rx) = mpsc::channel::<Job>();
                std::thread::Builder::new()
                    .name("store-calls".into())
                    .spawn(move || {
                        while let Ok(job) = rx.recv() {
                            // A call that panics answers its caller with an
                            // error (its answer channel is dropped) and
                            // leaves the thread to the next call.
                            let _ = catch_unwind(AssertUnwindSafe(job));
                        }
                    })
                    .map_err(|e| format!("cannot start the thread of store calls: {e}"))?;
                Some(tx)
            }
        };
        Ok(Calls { queue })
    }

    /// Runs `f` where store calls run and answers what it returns.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let Some(queue) = &self.queue else {
            return crate::poll::blocking(f).await;
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        queue
            .send(Box::new(move || {
                // The caller may have gone (a dropped connection); the
                // call has been made all the same.
                let _ = tx.send(f());
            }))
            .map_err(|_| ApiError::new(Code::StoreError, "the thread of store calls has ended"))?;
        rx.await
            .map_err(|_| ApiError::new(Code::StoreError, "the store call failed (it panicked)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    #[test]
    fn one_thread_runs_the_calls_in_order_on_one_thread() {
        let calls = Calls::new(StoreCalls::OneThread).unwrap();
        runtime().block_on(async {
            let mut seen = Vec::new();
            for i in 0..5 {
                let (n, thread) = calls
                    .run(move || (i, std::thread::current().id()))
                    .await
                    .unwrap();
                assert_eq!(n, i);
                seen.push(thread);
            }
            assert!(seen.windows(2).all(|w| w[0] == w[1]), "{seen:?}");
            assert_ne!(seen[0], std::thread::current().id());
        });
    }

    #[test]
    fn a_call_that_panics_fails_alone() {
        for how in [StoreCalls::OneThread, StoreCalls::Parallel] {
            let calls = Calls::new(how).unwrap();
            runtime().block_on(async {
                let failed = calls.run(|| -> u8 { panic!("a store call broke") }).await;
                let e = failed.expect_err("the panic is an error");
                assert_eq!(e.problem.code, Code::StoreError.name(), "{how:?}");
                assert_eq!(
                    calls.run(|| 7).await.unwrap(),
                    7,
                    "{how:?}: the next call runs"
                );
            });
        }
    }
}
