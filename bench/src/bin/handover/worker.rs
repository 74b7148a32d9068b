//! One contending process: wait, hold, note the times, release.

use super::*;

/// The binding the library makes for this process (its life file).
pub(super) fn bind_self(
    _client: &locksmith::Client,
    dir: &Path,
) -> Result<locksmith_core::Binding, String> {
    locksmith_sqlite::SqliteStore::open(&dir.join("locksmith.db"), Default::default())
        .and_then(|s| s.bind_current_process())
        .map_err(|e| e.to_string())
}

pub(super) fn owner_name(id: usize) -> String {
    format!("worker-{id}")
}

pub(super) fn worker(cfg: WorkerCfg) -> Result<(), String> {
    let counter = Counter(open_rw(&cfg.dir.join("counter")));
    let url = format!("sqlite://{}", cfg.dir.join("locksmith.db").display());
    let (attempt_at, woke_at) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let client = match cfg.kind {
        Kind::Locksmith => Some(locksmith::Client::open(&url).map_err(|e| e.to_string())?),
        Kind::Core => {
            let inner = Arc::new(
                locksmith_sqlite::SqliteStore::open(
                    &cfg.dir.join("locksmith.db"),
                    Default::default(),
                )
                .map_err(|e| e.to_string())?,
            );
            let notifier = Arc::new(TimedNotifier {
                inner: inner.notifier(),
                woke: woke_at.clone(),
            });
            Some(locksmith::Client::from_parts(
                Arc::new(Timed {
                    inner: inner.clone(),
                    attempt: attempt_at.clone(),
                }),
                notifier,
                Some(inner),
            ))
        }
        Kind::Flock => None,
    };
    // The core variant builds the same request as the library, once.
    let core_req = match (&client, cfg.kind) {
        (Some(c), Kind::Core) => Some(locksmith_core::AcquireRequest {
            keys: vec![locksmith_core::Key::new("handover/k").map_err(|e| e.to_string())?],
            mode: locksmith_core::Mode::Exclusive,
            scope: locksmith_core::Scope::Key,
            holder: locksmith::host::this_process(owner_name(cfg.id)),
            ttl: Some(cfg.ttl),
            max_hold: None,
            priority: 0,
            takeover: locksmith_core::Takeover::None,
            request_id: None,
            bind: Some(bind_self(c, &cfg.dir)?),
        }),
        _ => None,
    };
    let lockfile = open_rw(&cfg.dir.join("flock.lock"));
    let owner = owner_name(cfg.id);
    std::fs::write(cfg.dir.join(format!("ready-{}", cfg.id)), b"").map_err(|e| e.to_string())?;
    while !cfg.dir.join("go").exists() {
        if mono_ns() >= cfg.deadline {
            return Err("never told to go".into());
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let mut recs: Vec<[u64; 7]> = Vec::with_capacity(cfg.total as usize);
    // Bounded by the shared counter (each counted tenure bumps it) and by the deadline.
    while (recs.len() as u64) < cfg.total {
        let wait = mono_ns();
        let mut blocked = 0u64;
        match &client {
            Some(client) => {
                let guard = match &core_req {
                    Some(req) => {
                        let cancel = std::sync::atomic::AtomicBool::new(false);
                        let grant = locksmith::wait::acquire(
                            &**client.store(),
                            &**client.notifier(),
                            req,
                            locksmith_core::WaitPolicy::Forever,
                            &cancel,
                            &mut |_, _| blocked += 1,
                        )
                        .map_err(|e| e.to_string())?;
                        locksmith::Guard::start(client.store().clone(), grant)
                    }
                    None => client
                        .lock("handover/k")
                        .owner(&owner)
                        .ttl(cfg.ttl)
                        .wait_forever()
                        .acquire_blocking()
                        .map_err(|e| e.to_string())?,
                };
                let grant = mono_ns();
                let (woke, attempt) = match cfg.kind {
                    Kind::Core => (
                        woke_at.load(Ordering::Relaxed),
                        attempt_at.load(Ordering::Relaxed),
                    ),
                    _ => (0, 0),
                };
                // A wake-up from an earlier acquisition does not count.
                let woke = if woke < wait { 0 } else { woke };
                let counts = counter.take_turn(cfg.total, cfg.deadline);
                if counts && !cfg.hold.is_zero() {
                    std::thread::sleep(cfg.hold);
                }
                let release = mono_ns();
                guard.release().map_err(|e| e.to_string())?;
                let released = mono_ns();
                if !counts {
                    break;
                }
                recs.push([wait, grant, release, released, blocked, woke, attempt]);
            }
            None => {
                flock(&lockfile, FlockOperation::LockExclusive).map_err(|e| e.to_string())?;
                let grant = mono_ns();
                let counts = counter.take_turn(cfg.total, cfg.deadline);
                if counts && !cfg.hold.is_zero() {
                    std::thread::sleep(cfg.hold);
                }
                let release = mono_ns();
                flock(&lockfile, FlockOperation::Unlock).map_err(|e| e.to_string())?;
                let released = mono_ns();
                if !counts {
                    break;
                }
                recs.push([wait, grant, release, released, blocked, 0, 0]);
            }
        }
    }
    let mut out = String::with_capacity(recs.len() * 64);
    for r in recs {
        let line: Vec<String> = r.iter().map(u64::to_string).collect();
        out.push_str(&line.join(" "));
        out.push('\n');
    }
    std::fs::write(cfg.dir.join(format!("recs-{}", cfg.id)), out).map_err(|e| e.to_string())
}

pub(super) fn worker_main(a: &[String]) {
    let get = |i: usize| a.get(i).cloned().unwrap_or_default();
    let num = |i: usize| -> u64 { get(i).parse().expect("worker argument") };
    let cfg = WorkerCfg {
        kind: Kind::from_tag(&get(0)),
        id: num(1) as usize,
        dir: PathBuf::from(get(2)),
        total: num(3),
        hold: Duration::from_micros(num(4)),
        deadline: num(5),
        ttl: Duration::from_millis(num(6)),
    };
    let id = cfg.id;
    if let Err(e) = worker(cfg) {
        eprintln!("worker {id}: {e}");
        std::process::exit(1);
    }
}
