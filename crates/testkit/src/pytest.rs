//! Runs a pytest suite as part of `cargo test`, from a folder of its own.

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a suite may run before it is killed and fails.
const LIMIT: Duration = Duration::from_secs(600);

/// Runs `python3 -m pytest -q TESTS` in `cwd` with `env`, prints its
/// output, and fails unless every test passed and at least one ran, within
/// ten minutes (a hung suite is killed with everything it started).
/// `missing` tells how to install what an import error names.
pub fn pytest(tests: &Path, cwd: &Path, env: &[(&str, &OsStr)], missing: &str) {
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(tests)
        .current_dir(cwd)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("python3 runs");
    let drain = |mut from: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = from.read_to_string(&mut text);
            text
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped")));
    let err = drain(Box::new(child.stderr.take().expect("piped")));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("pytest can be waited for") {
            break Some(status);
        }
        if started.elapsed() > LIMIT {
            if let Some(group) = rustix::process::Pid::from_raw(child.id() as i32) {
                let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
            }
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    println!("{stdout}");
    eprintln!("{stderr}");
    let status = status.unwrap_or_else(|| {
        panic!("the Python tests ran for over {LIMIT:?} and were killed (see above)")
    });
    assert!(
        !stderr.contains("No module named"),
        "a test dependency is missing: {missing}"
    );
    assert!(status.success(), "the Python tests failed (see above)");
    assert!(stdout.contains(" passed"), "pytest ran no test");
}
