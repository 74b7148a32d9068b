//! The dashboard in a real headless Chromium (Debian's `chromium` and
//! `chromium-driver`, driven through Selenium) against a real `locksmith
//! serve`: `test_dashboard.py` beside this file.

use std::path::Path;

#[test]
fn dashboard_in_a_real_browser() {
    let scratch = tempfile::tempdir().unwrap();
    locksmith_testkit::pytest(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dashboard"),
        scratch.path(),
        &[("LOCKSMITH_BIN", env!("CARGO_BIN_EXE_locksmith").as_ref())],
        "python3 -m pip install pytest selenium==4.45.0, and apt-get install chromium chromium-driver (.ci/run does)",
    );
}
