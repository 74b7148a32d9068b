//! Any text given as a key: refused with a reason, or a key that is valid
//! again as it is (normalized once and for all), within the length limit,
//! whose ancestors are keys too. Never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use locksmith_core::Key;
use locksmith_core::key::MAX_KEY_BYTES;

fuzz_target!(|text: &str| {
    let Ok(key) = Key::new(text) else {
        return;
    };
    assert!(!key.as_str().is_empty() && key.as_str().len() <= MAX_KEY_BYTES);
    assert_eq!(
        Key::new(key.as_str()).as_ref(),
        Ok(&key),
        "normalizing twice"
    );
    assert_eq!(Key::stored(key.as_str()).as_ref(), Ok(&key));
    for a in key.ancestors() {
        let a = Key::stored(a).expect("an ancestor is a key");
        assert!(key.as_str().starts_with(a.as_str()));
    }
    let (lo, hi) = key.descendant_range();
    assert!(lo.as_str() < hi.as_str());
});
