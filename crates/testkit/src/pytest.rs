//! Runs a pytest suite as part of `cargo test`, from a folder of its own.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

/// Runs `python3 -m pytest -q TESTS` in `cwd` with `env`, prints its
/// output, and fails unless every test passed and at least one ran.
/// `missing` tells how to install what an import error names.
pub fn pytest(tests: &Path, cwd: &Path, env: &[(&str, &OsStr)], missing: &str) {
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(tests)
        .current_dir(cwd);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        !stderr.contains("No module named"),
        "a test dependency is missing: {missing}"
    );
    assert!(out.status.success(), "the Python tests failed (see above)");
    assert!(stdout.contains(" passed"), "pytest ran no test");
}
