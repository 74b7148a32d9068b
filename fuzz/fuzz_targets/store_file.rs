//! Any bytes as the store file `locksmith.db`: the store refuses to open it
//! (with a reason), or opens it and then never grants one key to two
//! owners. Never a panic. The file is left as it was when refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use locksmith_core::{AcquireRequest, Attempt, Holder, Key, Mode, Scope, Store, Takeover};
use locksmith_sqlite::{Options, SqliteStore};

fn request(owner: &str) -> AcquireRequest {
    AcquireRequest {
        keys: vec![Key::new("fuzz/k").unwrap()],
        mode: Mode::Exclusive,
        scope: Scope::Key,
        holder: Holder {
            owner: owner.into(),
            task: None,
            metadata: None,
            hostname: "fuzz".into(),
            boot_id: "fuzz".into(),
            pid: std::process::id(),
            pid_start: None,
        },
        ttl: Some(std::time::Duration::from_secs(60)),
        max_hold: None,
        priority: 0,
        takeover: Takeover::None,
        request_id: None,
        bind: None,
    }
}

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let path = dir.path().join("locksmith.db");
    std::fs::write(&path, data).expect("write the file");
    let opts = Options {
        busy_timeout: std::time::Duration::from_millis(100),
        ..Options::default()
    };
    let store = match SqliteStore::open(&path, opts) {
        Ok(store) => store,
        Err(_) => {
            if !data.is_empty() {
                assert_eq!(
                    std::fs::read(&path).unwrap(),
                    data,
                    "a refused file was changed"
                );
            }
            return;
        }
    };
    let first = store.acquire(&request("a"), None);
    let second = store.acquire(&request("b"), None);
    if let (Ok(Attempt::Granted(_)), Ok(Attempt::Granted(_))) = (&first, &second) {
        panic!("one key granted to two owners");
    }
});
