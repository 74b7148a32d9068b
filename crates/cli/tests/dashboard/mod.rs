//! The dashboard in a real headless Chromium (Debian's `chromium` and
//! `chromium-driver`, driven through Selenium) against a real `locksmith
//! serve`: `test_dashboard.py` beside this file.

use std::path::Path;
use std::process::Command;

#[test]
fn dashboard_in_a_real_browser() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dashboard");
    let scratch = tempfile::tempdir().unwrap();
    let out = Command::new("python3")
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(&here)
        .current_dir(scratch.path())
        .env("LOCKSMITH_BIN", env!("CARGO_BIN_EXE_locksmith"))
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        !stderr.contains("No module named"),
        "a test dependency is missing: python3 -m pip install pytest selenium==4.45.0, and apt-get install chromium chromium-driver (.ci/run does)"
    );
    assert!(
        out.status.success(),
        "the dashboard tests failed (see above)"
    );
    assert!(stdout.contains(" passed"), "pytest ran no test");
}
