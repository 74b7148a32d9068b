//! `queue_costs`: a diagnostic for the hand-over path. One process drives the
//! store API through the steps of a hand-over with W requests queued on one
//! key, sequentially and without contention, and times each store call:
//! the holder's release (which finds whom to wake), the head waiter's
//! granted attempt, the releaser joining the queue again, and a queued
//! waiter's periodic re-check. Also times one `/proc/PID/stat` read
//! (`sys::process_start`), which the store does per queue entry.
//!
//! With `--bind 1` the requests are bound to this process, as the library's
//! are: a release then grants the head waiter in its own transaction (a
//! hand-over), and the head waiter's attempt only picks its grant up.
//!
//! ```text
//! queue_costs [--waiters 1,7,15,31] [--cycles 200] [--secs 60] [--bind 1] [--dir DIR]
//! ```

use std::collections::VecDeque;

use locksmith_bench::{Args, Machine, Summary, WorkDir, fmt_ns, median_of, mono_ns, table};
use locksmith_core::store::{Proof, Target, Ticket as Waiter};
use locksmith_core::{
    AcquireRequest, Attempt, Grant, Key, Mode, ReleaseReason, Scope, Store, Takeover,
};
use locksmith_core::{Notifier, WakeSource};
use locksmith_sqlite::{Options, SqliteStore};

/// A new ticket whose wake socket is kept in `wakes`.
fn new_waiter(notifier: &dyn Notifier, wakes: &mut Vec<Box<dyn WakeSource>>) -> Waiter {
    let source = notifier.wake_source().expect("wake socket");
    let ticket = Waiter {
        seq: None,
        wake: source.address().to_string(),
        claim: None,
    };
    wakes.push(source);
    ticket
}

fn request(owner: &str, bind: bool) -> AcquireRequest {
    let holder = locksmith::host::this_process(owner);
    let bind = bind.then_some(locksmith_core::Binding {
        pid: holder.pid,
        start: holder.pid_start,
        life_file: None,
    });
    AcquireRequest {
        keys: vec![Key::new("probe/k").expect("valid key")],
        mode: Mode::Exclusive,
        scope: Scope::Key,
        holder,
        ttl: Some(std::time::Duration::from_secs(30)),
        max_hold: None,
        priority: 0,
        takeover: Takeover::None,
        request_id: None,
        bind,
    }
}

/// Medians (ns) of each step with `w` requests queued behind the holder.
struct Row {
    waiters: usize,
    release: Summary,
    grant: Summary,
    enqueue: Summary,
    recheck: Summary,
}

fn measure(store: &SqliteStore, w: usize, cycles: usize, secs: u64, bind: bool) -> Row {
    let deadline = mono_ns() + secs * 1_000_000_000;
    // Owners 0..=w: owner 0 holds, the others queue in order.
    let reqs: Vec<AcquireRequest> = (0..=w)
        .map(|i| request(&format!("owner-{i}"), bind))
        .collect();
    let first = match store.acquire(&reqs[0], None).expect("acquire") {
        Attempt::Granted(g) => g,
        Attempt::Blocked(_) => panic!("probe/k should be free"),
    };
    let notifier = store.notifier();
    // The wake sockets stay bound while their tickets wait.
    let mut wakes: Vec<Box<dyn WakeSource>> = Vec::new();
    let mut queue: VecDeque<(usize, Waiter)> = VecDeque::new();
    for (i, req) in reqs.iter().enumerate().skip(1) {
        let mut waiter = new_waiter(&notifier, &mut wakes);
        match store.acquire(req, Some(&mut waiter)).expect("enqueue") {
            Attempt::Blocked(_) => queue.push_back((i, waiter)),
            Attempt::Granted(_) => panic!("should be blocked"),
        }
    }
    let (mut holder, mut grant): (usize, Grant) = (0, first);
    let (mut rel, mut gr, mut enq, mut re) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..cycles {
        if mono_ns() >= deadline {
            break;
        }
        // A queued waiter's periodic re-check while the lock is held.
        if let Some((i, waiter)) = queue.back_mut() {
            let t = mono_ns();
            let a = store.acquire(&reqs[*i], Some(waiter)).expect("re-check");
            re.push(mono_ns() - t);
            assert!(matches!(a, Attempt::Blocked(_)));
        }
        // The holder releases: the store also works out whom to wake.
        let target = Target {
            key: reqs[holder].keys[0].clone(),
            by: Proof::Handle(grant.handle.clone()),
        };
        let t = mono_ns();
        store
            .release(&target, ReleaseReason::Completed)
            .expect("release");
        rel.push(mono_ns() - t);
        // The releaser asks again at once and joins the tail of the queue.
        let mut waiter = new_waiter(&notifier, &mut wakes);
        let (head, mut head_waiter) = queue.pop_front().expect("a waiter");
        let t = mono_ns();
        let a = store
            .acquire(&reqs[holder], Some(&mut waiter))
            .expect("enqueue");
        enq.push(mono_ns() - t);
        assert!(
            matches!(a, Attempt::Blocked(_)),
            "the releaser must not barge"
        );
        queue.push_back((holder, waiter));
        // The head waiter, woken, is granted.
        let t = mono_ns();
        let a = store
            .acquire(&reqs[head], Some(&mut head_waiter))
            .expect("grant");
        gr.push(mono_ns() - t);
        grant = match a {
            Attempt::Granted(g) => g,
            Attempt::Blocked(b) => panic!("the head waiter should be granted: {b:?}"),
        };
        holder = head;
    }
    // Clean up for the next size.
    let target = Target {
        key: reqs[holder].keys[0].clone(),
        by: Proof::Handle(grant.handle.clone()),
    };
    store
        .release(&target, ReleaseReason::Completed)
        .expect("release");
    for (_, waiter) in &queue {
        store
            .leave_queue(waiter, locksmith_core::store::LeaveReason::Cancelled)
            .expect("leave");
    }
    Row {
        waiters: w,
        release: Summary::of(&mut rel),
        grant: Summary::of(&mut gr),
        enqueue: Summary::of(&mut enq),
        recheck: Summary::of(&mut re),
    }
}

fn main() {
    let args = Args::parse();
    let sizes: Vec<usize> = args
        .text("waiters")
        .unwrap_or("1,7,15,31")
        .split(',')
        .map(|s| s.trim().parse().expect("--waiters takes numbers like 1,7"))
        .collect();
    let cycles = args.num("cycles", 200).max(1) as usize;
    let secs = args.num("secs", 60);
    let bind = args.num("bind", 0) != 0;
    let work = WorkDir::new(&args, "locksmith-queue-").expect("cannot create the work folder");
    let machine = Machine::current(work.path());
    let store = SqliteStore::open(&work.path().join("locksmith.db"), Options::default())
        .expect("open the store");
    let me = std::process::id();
    let (stat_ns, _) = median_of(1000, || locksmith::host::sys::process_start(me));
    let rows: Vec<Vec<String>> = sizes
        .iter()
        .map(|&w| {
            let r = measure(&store, w.max(1), cycles, secs, bind);
            let cell = |s: &Summary| format!("{} / {}", fmt_ns(s.p50), fmt_ns(s.p99));
            vec![
                r.waiters.to_string(),
                cell(&r.release),
                cell(&r.grant),
                cell(&r.enqueue),
                cell(&r.recheck),
                fmt_ns(r.release.p50 + r.grant.p50),
            ]
        })
        .collect();
    println!("## queue_costs: store calls on the hand-over path, one process, no contention\n");
    println!("Command: `{}`\n", locksmith_bench::command_line());
    println!("{}", machine.table());
    println!(
        "Up to {cycles} hand-over cycles (and {secs} s) per size; each cell is p50 / p99 of one store call. \
         One `/proc/PID/stat` read (`sys::process_start`): {} (median of 1000).\n",
        fmt_ns(stat_ns)
    );
    println!(
        "{}",
        table(
            &[
                "queued waiters",
                "release (finds whom to wake)",
                "head waiter's granted attempt",
                "releaser re-joins the queue",
                "queued waiter's re-check",
                "release + grant (p50)",
            ],
            &rows
        )
    );
}
