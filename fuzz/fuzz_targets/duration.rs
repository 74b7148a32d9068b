//! Any text given as a duration (`--ttl`, `--wait`, settings): refused with
//! a reason, or a duration whose printed form reads back as a duration.
//! Never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use locksmith_core::time::{format_duration, parse_duration};

fuzz_target!(|text: &str| {
    if let Ok(d) = parse_duration(text) {
        let shown = format_duration(d);
        assert!(
            parse_duration(&shown).is_ok(),
            "{text:?} -> {d:?} -> {shown:?}"
        );
    }
});
