//! Rule tests: every mode x scope x key relation for conflicts, every
//! lifetime for endings and health, queue order and cycle search. Time is
//! always an explicit [`Mono`] argument; nothing sleeps.

use std::collections::HashMap;
use std::time::Duration;

use super::*;
use crate::model::{Fence, Holder};
use crate::time::Wall;

const EXCLUSIVE: Mode = Mode::Exclusive;
const SHARED: Mode = Mode::Shared;
const SEM2: Mode = Mode::Semaphore { limit: 2 };
const MODES: [Mode; 3] = [EXCLUSIVE, SHARED, SEM2];
const SCOPES: [Scope; 2] = [Scope::Key, Scope::Tree];

fn key(s: &str) -> Key {
    Key::new(s).unwrap()
}

fn claim(key: &Key, mode: Mode, scope: Scope) -> Claim<'_> {
    Claim { key, mode, scope }
}

/// Where the wanted key lies relative to the held key `a/b`.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Rel {
    /// `a/b` itself.
    Same,
    /// `a`: an ancestor of the held key.
    Ancestor,
    /// `a/b/c`: a descendant of the held key.
    Descendant,
    /// `a/bc`: shares a text prefix but is an unrelated sibling.
    Sibling,
}

const HELD_KEY: &str = "a/b";

impl Rel {
    fn key(self) -> &'static str {
        match self {
            Rel::Same => "a/b",
            Rel::Ancestor => "a",
            Rel::Descendant => "a/b/c",
            Rel::Sibling => "a/bc",
        }
    }
}

/// Whether the two claims cover a common key, spelled out case by case.
fn expect_overlap(rel: Rel, want: Scope, held: Scope) -> bool {
    match rel {
        Rel::Same => true,
        // The wanted key is above the held one: only a tree claim reaches down.
        Rel::Ancestor => want == Scope::Tree,
        // The wanted key is below the held one: only a held tree reaches down.
        Rel::Descendant => held == Scope::Tree,
        Rel::Sibling => false,
    }
}

const T0: Mono = Mono(5_000_000_000);

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

pub(crate) fn held(k: &str, mode: Mode, scope: Scope, fence: u64) -> HeldLock {
    HeldLock {
        grant: fence as i64,
        key: key(k),
        mode,
        scope,
        fence: Fence(fence),
        holder: Holder {
            owner: format!("owner{fence}"),
            task: None,
            metadata: None,
            hostname: "host".into(),
            boot_id: "boot".into(),
            pid: 1,
            pid_start: Some(1),
        },
        acquired: T0,
        acquired_wall: Wall(1_700_000_000_000),
        last_seen: T0,
        expires: None,
        ttl: None,
        max_hold: None,
        request_id: None,
        bind: None,
        stale_after: None,
    }
}

fn blockers_of(want: &Claim, holds: &[HeldLock]) -> Result<Vec<u64>, LimitMismatch> {
    blockers(want, holds, |h: &HeldLock| claim(&h.key, h.mode, h.scope))
        .map(|v| v.into_iter().map(|h| h.fence.0).collect())
}

#[test]
fn overlaps_for_every_scope_and_relation() {
    let held_key = key(HELD_KEY);
    for rel in [Rel::Same, Rel::Ancestor, Rel::Descendant, Rel::Sibling] {
        let want_key = key(rel.key());
        for want_scope in SCOPES {
            for held_scope in SCOPES {
                for mode in MODES {
                    let a = claim(&want_key, mode, want_scope);
                    let b = claim(&held_key, mode, held_scope);
                    let expect = expect_overlap(rel, want_scope, held_scope);
                    assert_eq!(
                        overlaps(&a, &b),
                        expect,
                        "{rel:?} want {want_scope:?} held {held_scope:?}"
                    );
                    assert_eq!(
                        overlaps(&b, &a),
                        expect,
                        "symmetry: {rel:?} {want_scope:?} {held_scope:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn overlaps_edge_keys() {
    fn tree(k: &Key) -> Claim<'_> {
        claim(k, EXCLUSIVE, Scope::Tree)
    }
    let (abs, abs_child, rel_like) = (
        key("/srv/repos"),
        key("/srv/repos/acme"),
        key("srv/repos/acme"),
    );
    assert!(overlaps(
        &tree(&abs),
        &claim(&abs_child, EXCLUSIVE, Scope::Key)
    ));
    assert!(
        !overlaps(&tree(&abs), &claim(&rel_like, EXCLUSIVE, Scope::Key)),
        "/srv and srv are different trees"
    );
    let (a, a_dot) = (key("a"), key("a.b"));
    assert!(!overlaps(&tree(&a), &claim(&a_dot, EXCLUSIVE, Scope::Key)));
    let (deep, top) = (key("a/b/c/d/e"), key("a"));
    assert!(
        overlaps(&tree(&top), &claim(&deep, EXCLUSIVE, Scope::Key)),
        "a tree covers every depth"
    );
    assert!(!overlaps(
        &claim(&top, EXCLUSIVE, Scope::Key),
        &claim(&deep, EXCLUSIVE, Scope::Key)
    ));
}

#[test]
fn blockers_for_every_mode_scope_and_relation() {
    for rel in [Rel::Same, Rel::Ancestor, Rel::Descendant, Rel::Sibling] {
        let want_key = key(rel.key());
        for want_mode in MODES {
            for held_mode in MODES {
                for want_scope in SCOPES {
                    for held_scope in SCOPES {
                        let holds = [held(HELD_KEY, held_mode, held_scope, 7)];
                        let want = claim(&want_key, want_mode, want_scope);
                        let overlap = expect_overlap(rel, want_scope, held_scope);
                        // With one holder, only these pairs may share a covered key.
                        let compatible = match (want_mode, held_mode) {
                            (Mode::Shared, Mode::Shared) => true,
                            // One slot of two is taken: the second is free, but only
                            // for the very same key (a semaphore is per key).
                            (Mode::Semaphore { .. }, Mode::Semaphore { .. }) => rel == Rel::Same,
                            _ => false,
                        };
                        let expect: Vec<u64> = if overlap && !compatible {
                            vec![7]
                        } else {
                            vec![]
                        };
                        let ctx = format!(
                            "{rel:?}: want {want_mode} {want_scope:?} vs held {held_mode} {held_scope:?}"
                        );
                        assert_eq!(blockers_of(&want, &holds), Ok(expect), "{ctx}");
                    }
                }
            }
        }
    }
}

#[test]
fn shared_readers_share_and_block_writers() {
    let k = key("db");
    let readers = [
        held("db", SHARED, Scope::Key, 1),
        held("db", SHARED, Scope::Key, 2),
    ];
    assert_eq!(
        blockers_of(&claim(&k, SHARED, Scope::Key), &readers),
        Ok(vec![])
    );
    assert_eq!(
        blockers_of(&claim(&k, EXCLUSIVE, Scope::Key), &readers),
        Ok(vec![1, 2])
    );
    assert_eq!(
        blockers_of(&claim(&k, SEM2, Scope::Key), &readers),
        Ok(vec![1, 2])
    );
    // A shared tree above shared readers is fine; an exclusive one is not.
    assert_eq!(
        blockers_of(&claim(&k, SHARED, Scope::Tree), &readers),
        Ok(vec![])
    );
    let parent_readers = [held("p/q", SHARED, Scope::Key, 3)];
    let p = key("p");
    assert_eq!(
        blockers_of(&claim(&p, SHARED, Scope::Tree), &parent_readers),
        Ok(vec![])
    );
    assert_eq!(
        blockers_of(&claim(&p, EXCLUSIVE, Scope::Tree), &parent_readers),
        Ok(vec![3])
    );
}

#[test]
fn semaphore_counts_slots_per_key() {
    let k = key("pool");
    let one = [held("pool", SEM2, Scope::Key, 1)];
    let two = [
        held("pool", SEM2, Scope::Key, 1),
        held("pool", SEM2, Scope::Key, 2),
    ];
    assert_eq!(
        blockers_of(&claim(&k, SEM2, Scope::Key), &[] as &[HeldLock]),
        Ok(vec![])
    );
    assert_eq!(blockers_of(&claim(&k, SEM2, Scope::Key), &one), Ok(vec![]));
    assert_eq!(
        blockers_of(&claim(&k, SEM2, Scope::Key), &two),
        Ok(vec![1, 2]),
        "full: every slot holder blocks"
    );
    // A different slot count is refused with both numbers, full or not.
    let sem3 = Mode::Semaphore { limit: 3 };
    assert_eq!(
        blockers_of(&claim(&k, sem3, Scope::Key), &one),
        Err(LimitMismatch { held: 2, asked: 3 })
    );
    assert_eq!(
        blockers_of(&claim(&k, sem3, Scope::Key), &two),
        Err(LimitMismatch { held: 2, asked: 3 })
    );
    let msg = LimitMismatch { held: 2, asked: 3 }.to_string();
    assert!(msg.contains("--limit 2"), "{msg}");
    // Semaphores on other keys are not slots of this one, and never mismatch.
    let child = key("pool/a");
    let tree_two = [held("pool", SEM2, Scope::Tree, 1)];
    assert_eq!(
        blockers_of(&claim(&child, SEM2, Scope::Key), &tree_two),
        Ok(vec![1])
    );
    assert_eq!(
        blockers_of(&claim(&child, sem3, Scope::Key), &tree_two),
        Ok(vec![1])
    );
    let other = key("pool2");
    assert_eq!(
        blockers_of(&claim(&other, sem3, Scope::Key), &two),
        Ok(vec![])
    );
    // A limit-1 semaphore behaves like an exclusive lock among its slots.
    let sem1 = Mode::Semaphore { limit: 1 };
    let single = [held("pool", sem1, Scope::Key, 4)];
    assert_eq!(
        blockers_of(&claim(&k, sem1, Scope::Key), &single),
        Ok(vec![4])
    );
    // Exclusive and shared holders block a semaphore and are not counted as slots.
    let mixed = [held("pool", SHARED, Scope::Key, 5)];
    assert_eq!(
        blockers_of(&claim(&k, SEM2, Scope::Key), &mixed),
        Ok(vec![5])
    );
}

#[test]
fn blockers_lists_each_holder_in_the_way_once() {
    let k = key("r/x");
    let holds = [
        held("r", EXCLUSIVE, Scope::Tree, 1),
        held("r/x", SHARED, Scope::Key, 2),
        held("r/xy", EXCLUSIVE, Scope::Key, 3),
        held("r/x/1", EXCLUSIVE, Scope::Key, 4),
        held("q", EXCLUSIVE, Scope::Tree, 5),
    ];
    assert_eq!(
        blockers_of(&claim(&k, SHARED, Scope::Key), &holds),
        Ok(vec![1])
    );
    assert_eq!(
        blockers_of(&claim(&k, SHARED, Scope::Tree), &holds),
        Ok(vec![1, 4])
    );
    assert_eq!(
        blockers_of(&claim(&k, EXCLUSIVE, Scope::Tree), &holds),
        Ok(vec![1, 2, 4])
    );
}

/// The three lifetimes: a lease, no lease at all, and a `max_hold` cap (with
/// and without a lease).
#[test]
fn ended_for_every_lifetime() {
    let k = "t";
    // Lease of 30 s granted at T0: alive up to the deadline, ended at it.
    let mut lease = held(k, EXCLUSIVE, Scope::Key, 1);
    lease.ttl = Some(secs(30));
    lease.expires = Some(T0.plus(secs(30)));
    assert_eq!(ended(&lease, T0), None);
    assert_eq!(ended(&lease, T0.plus(secs(29))), None);
    assert_eq!(
        ended(&lease, Mono(T0.plus(secs(30)).0 - 1)),
        None,
        "never early"
    );
    assert_eq!(
        ended(&lease, T0.plus(secs(30))),
        Some(ReleaseReason::LeaseExpired)
    );
    assert_eq!(
        ended(&lease, T0.plus(secs(3600))),
        Some(ReleaseReason::LeaseExpired)
    );
    // A renewal moved the deadline: judged by the new one only.
    lease.last_seen = T0.plus(secs(20));
    lease.expires = Some(T0.plus(secs(50)));
    assert_eq!(ended(&lease, T0.plus(secs(40))), None);
    assert_eq!(
        ended(&lease, T0.plus(secs(50))),
        Some(ReleaseReason::LeaseExpired)
    );

    // No lease: never ends by itself, however old.
    let none = held(k, SHARED, Scope::Tree, 2);
    assert_eq!(ended(&none, T0), None);
    assert_eq!(ended(&none, T0.plus(secs(365 * 86_400))), None);

    // max_hold without a lease.
    let mut capped = held(k, SEM2, Scope::Key, 3);
    capped.max_hold = Some(secs(60));
    assert_eq!(ended(&capped, T0.plus(secs(59))), None);
    assert_eq!(
        ended(&capped, T0.plus(secs(60))),
        Some(ReleaseReason::MaxHold)
    );

    // max_hold with a lease that keeps being renewed: the cap still wins.
    let mut both = held(k, EXCLUSIVE, Scope::Key, 4);
    both.ttl = Some(secs(30));
    both.max_hold = Some(secs(60));
    both.last_seen = T0.plus(secs(55));
    both.expires = Some(T0.plus(secs(85)));
    assert_eq!(ended(&both, T0.plus(secs(59))), None);
    assert_eq!(
        ended(&both, T0.plus(secs(60))),
        Some(ReleaseReason::MaxHold)
    );
    // A lapsed lease ends it first; once the cap has passed too, max_hold is the reason given.
    both.expires = Some(T0.plus(secs(40)));
    assert_eq!(
        ended(&both, T0.plus(secs(45))),
        Some(ReleaseReason::LeaseExpired)
    );
    assert_eq!(
        ended(&both, T0.plus(secs(61))),
        Some(ReleaseReason::MaxHold)
    );
}

#[test]
fn health_for_every_lifetime() {
    let stale_after = secs(30 * 60);
    let mut lease = held("h", EXCLUSIVE, Scope::Key, 1);
    lease.ttl = Some(secs(30));
    lease.expires = Some(T0.plus(secs(30)));
    assert_eq!(
        health(&lease, T0.plus(secs(10)), stale_after, None),
        Health::Healthy
    );
    assert_eq!(
        health(&lease, T0.plus(secs(10)), stale_after, Some(true)),
        Health::Healthy
    );
    assert_eq!(
        health(&lease, T0.plus(secs(10)), stale_after, Some(false)),
        Health::Dead
    );
    assert_eq!(
        health(&lease, T0.plus(secs(30)), stale_after, None),
        Health::Expired
    );
    assert_eq!(
        health(&lease, T0.plus(secs(30)), stale_after, Some(false)),
        Health::Expired,
        "expired wins over dead"
    );

    // No lease: healthy until stale_after without a sign of life, then stale.
    let mut none = held("h", SHARED, Scope::Key, 2);
    assert_eq!(
        health(&none, T0.plus(stale_after - secs(1)), stale_after, None),
        Health::Healthy
    );
    assert_eq!(
        health(&none, T0.plus(stale_after), stale_after, None),
        Health::Stale
    );
    assert_eq!(
        health(&none, T0.plus(stale_after), stale_after, Some(false)),
        Health::Dead,
        "dead wins over stale"
    );
    // A sign of life resets the stale clock.
    none.last_seen = T0.plus(secs(1000));
    assert_eq!(
        health(&none, T0.plus(stale_after), stale_after, None),
        Health::Healthy
    );
    assert_eq!(
        health(
            &none,
            T0.plus(secs(1000)).plus(stale_after),
            stale_after,
            None
        ),
        Health::Stale
    );

    // max_hold: expired once the cap passes, whatever else.
    let mut capped = held("h", SEM2, Scope::Tree, 3);
    capped.max_hold = Some(secs(60));
    assert_eq!(
        health(&capped, T0.plus(secs(59)), stale_after, None),
        Health::Healthy
    );
    assert_eq!(
        health(&capped, T0.plus(secs(60)), stale_after, None),
        Health::Expired
    );
    assert_eq!(
        health(&capped, T0.plus(secs(59)), secs(10), None),
        Health::Stale
    );
}

#[test]
fn queue_order_is_priority_then_arrival() {
    // (priority, arrival)
    assert!(is_ahead((0, 1), (0, 2)), "first come first served");
    assert!(!is_ahead((0, 2), (0, 1)));
    assert!(!is_ahead((0, 1), (0, 1)), "nobody is ahead of itself");
    assert!(is_ahead((5, 9), (0, 1)), "higher priority first");
    assert!(!is_ahead((0, 1), (5, 9)));
    assert!(is_ahead((-1, 1), (-2, 0)));
    assert!(
        is_ahead((0, 7), (0, i64::MAX)),
        "a newcomer is behind every queued request of its priority"
    );
    assert!(
        !is_ahead((0, 7), (1, i64::MAX)),
        "but not behind lower priorities"
    );
    let mut q = vec![(0, 3), (2, 5), (0, 1), (2, 4), (-1, 0)];
    q.sort_by(|a, b| queue_order(*a, *b));
    assert_eq!(q, vec![(2, 4), (2, 5), (0, 1), (0, 3), (-1, 0)]);
}

fn graph(edges: &[(&str, &str)]) -> HashMap<String, Vec<String>> {
    let mut g: HashMap<String, Vec<String>> = HashMap::new();
    for (a, b) in edges {
        g.entry(a.to_string()).or_default().push(b.to_string());
    }
    g
}

fn cycle_from(start: &str, edges: &[(&str, &str)]) -> Option<Vec<String>> {
    let g = graph(edges);
    find_cycle(start, |n| g.get(n).cloned().unwrap_or_default())
}

fn is_path(g: &HashMap<String, Vec<String>>, path: &[String]) -> bool {
    path.windows(2)
        .all(|w| g.get(&w[0]).is_some_and(|n| n.contains(&w[1])))
}

#[test]
fn find_cycle_two_and_three_party() {
    assert_eq!(
        cycle_from("a", &[("a", "b"), ("b", "a")]),
        Some(vec!["a".into(), "b".into(), "a".into()])
    );
    let three = [("a", "b"), ("b", "c"), ("c", "a")];
    assert_eq!(
        cycle_from("a", &three),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    // Found from any member, starting and ending at the start.
    let c = cycle_from("b", &three).unwrap();
    assert_eq!(
        (c.first().unwrap().as_str(), c.last().unwrap().as_str()),
        ("b", "b")
    );
    assert!(is_path(&graph(&three), &c));
}

#[test]
fn find_cycle_none_without_a_way_back() {
    assert_eq!(cycle_from("a", &[]), None);
    assert_eq!(cycle_from("a", &[("a", "b"), ("b", "c")]), None);
    // A cycle elsewhere that does not pass through the start is not ours.
    assert_eq!(cycle_from("a", &[("a", "b"), ("b", "c"), ("c", "b")]), None);
    // Self-edges (one owner name shared by independent workers) are ignored.
    assert_eq!(cycle_from("a", &[("a", "a")]), None);
    assert_eq!(cycle_from("a", &[("a", "b"), ("b", "b")]), None);
}

#[test]
fn find_cycle_in_a_branching_graph_gives_a_real_path() {
    let edges = [
        ("me", "x"),
        ("me", "y"),
        ("x", "z"),
        ("y", "z"),
        ("z", "w"),
        ("w", "x"),
        ("w", "me"),
        ("y", "y"),
    ];
    let c = cycle_from("me", &edges).expect("cycle through w");
    assert_eq!(c.first().map(String::as_str), Some("me"));
    assert_eq!(c.last().map(String::as_str), Some("me"));
    assert!(is_path(&graph(&edges), &c), "{c:?}");
    // No owner appears twice inside the cycle.
    let inner = &c[..c.len() - 1];
    let mut uniq = inner.to_vec();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), inner.len(), "{c:?}");
}

#[test]
fn find_cycle_terminates_on_large_graphs() {
    // A long chain back to the start, with a dense thicket hanging off it.
    let names: Vec<String> = (0..200).map(|i| format!("n{i}")).collect();
    let mut g: HashMap<String, Vec<String>> = HashMap::new();
    for i in 0..199 {
        g.entry(names[i].clone())
            .or_default()
            .push(names[i + 1].clone());
        for j in (0..i).step_by(7) {
            g.entry(names[i].clone())
                .or_default()
                .push(names[j].clone());
        }
    }
    let mut calls = 0;
    assert!(
        find_cycle("n0", |n| {
            calls += 1;
            g.get(n).cloned().unwrap_or_default()
        })
        .is_some()
    );
    assert!(
        calls <= names.len(),
        "each node is expanded at most once ({calls})"
    );
    assert_eq!(
        find_cycle("n199", |n| g.get(n).cloned().unwrap_or_default()),
        None
    );
}

/// A probe that answers from a table, and counts the pid look-ups.
struct Probe {
    file: LifeFile,
    pid: Option<bool>,
    asked_pid: std::cell::Cell<u32>,
}

impl ProcessProbe for Probe {
    fn life_file(&self, _path: &str) -> LifeFile {
        self.file
    }
    fn process(&self, _pid: u32, _start: Option<u64>) -> Option<bool> {
        self.asked_pid.set(self.asked_pid.get() + 1);
        self.pid
    }
}

#[test]
fn bound_processes_are_judged_only_where_their_death_can_be_proven() {
    let here = Machine {
        boot_id: "boot".into(),
        hostname: "host".into(),
    };
    let probe = |file, pid| Probe {
        file,
        pid,
        asked_pid: std::cell::Cell::new(0),
    };
    let mut lock = held("k", EXCLUSIVE, Scope::Key, 1);
    let p = probe(LifeFile::Free, Some(true));
    assert_eq!(bound_alive(&lock, &here, &p), None, "unbound: no opinion");
    lock.bind = Some(crate::model::Binding {
        pid: 7,
        start: Some(70),
        life_file: Some("holders/x".into()),
    });
    // The life file is proof either way; the pid is not asked.
    let p = probe(LifeFile::Free, Some(true));
    assert_eq!(bound_alive(&lock, &here, &p), Some(false));
    let p = probe(LifeFile::Held, Some(false));
    assert_eq!(bound_alive(&lock, &here, &p), Some(true));
    assert_eq!(p.asked_pid.get(), 0);
    // An unreadable file proves nothing, and the pid is not trusted instead.
    let p = probe(LifeFile::Unreadable, Some(false));
    assert_eq!(bound_alive(&lock, &here, &p), None);
    // Without the file, pid and start time decide on the same host only.
    let p = probe(LifeFile::Missing, Some(false));
    assert_eq!(bound_alive(&lock, &here, &p), Some(false));
    let container = Machine {
        hostname: "other".into(),
        ..here.clone()
    };
    let p = probe(LifeFile::Missing, Some(false));
    assert_eq!(bound_alive(&lock, &container, &p), None);
    assert_eq!(p.asked_pid.get(), 0, "another pid space is never asked");
    // An earlier boot of this host is dead; another host's binding is left to its lease.
    let rebooted = Machine {
        boot_id: "boot2".into(),
        ..here.clone()
    };
    assert_eq!(
        bound_alive(&lock, &rebooted, &probe(LifeFile::Held, Some(true))),
        Some(false)
    );
    let elsewhere = Machine {
        boot_id: "boot2".into(),
        hostname: "other".into(),
    };
    assert_eq!(
        bound_alive(&lock, &elsewhere, &probe(LifeFile::Free, Some(false))),
        None
    );
}

/// A renewed, unexpired lease is its own sign of life: however short
/// `stale_after` is, a leased lock is never stale while its lease runs.
#[test]
fn a_running_lease_is_never_stale() {
    let stale_after = secs(1);
    let mut lease = held("h", EXCLUSIVE, Scope::Key, 1);
    lease.ttl = Some(secs(3600));
    lease.expires = Some(T0.plus(secs(3600)));
    assert_eq!(
        health(&lease, T0.plus(secs(10)), stale_after, None),
        Health::Healthy
    );
    assert_eq!(
        health(&lease, T0.plus(secs(3599)), stale_after, None),
        Health::Healthy
    );
    assert_eq!(
        health(&lease, T0.plus(secs(3600)), stale_after, None),
        Health::Expired
    );
}
