//! Any bytes as `locksmith.toml`: refused with a reason, or a configuration
//! whose every value can be shown and turned into store settings without a
//! panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use locksmith::config::Config;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let file = dir.path().join("locksmith.toml");
    std::fs::write(&file, data).expect("write the file");
    let Ok(cfg) = Config::load(Some(&file)) else {
        return;
    };
    let _ = cfg.options();
    let _ = cfg.postgres_options();
    let _ = cfg.rows();
    let _ = (cfg.store(), cfg.server(), cfg.owner(), cfg.db_path());
});
