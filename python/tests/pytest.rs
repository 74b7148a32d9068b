//! Runs the Python package's tests (`python/tests`, pytest) against this
//! build: the native module just built by cargo and the package's Python
//! files are put together in a temporary folder, so `cargo test` always
//! tests the sources as they are, with nothing to install but pytest.

use std::path::{Path, PathBuf};

use locksmith_testkit::pg::PgServer;

fn target_dir() -> PathBuf {
    // target/<profile>/deps/pytest-HASH
    let exe = std::env::current_exe().expect("the test's own path");
    exe.parent()
        .and_then(Path::parent)
        .expect("the test runs from target/<profile>/deps")
        .to_path_buf()
}

#[test]
fn python_package() {
    let python = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = target_dir();
    // The module as built for this test run (deps/), or by `cargo build`:
    // the newer of the two.
    let native = [
        target.join("deps/lib_native.so"),
        target.join("lib_native.so"),
    ]
    .into_iter()
    .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
    .max()
    .map(|(_, p)| p)
    .expect("lib_native.so is built with the package (cargo test -p locksmith-python)");
    let bin = std::env::var_os("LOCKSMITH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| target.join("locksmith"));
    assert!(
        bin.exists(),
        "{} is missing: build the command line first (cargo build, or cargo test --workspace)",
        bin.display()
    );

    let site = tempfile::tempdir().unwrap();
    let package = site.path().join("locksmith");
    std::fs::create_dir(&package).unwrap();
    for entry in std::fs::read_dir(python.join("locksmith")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, package.join(path.file_name().unwrap())).unwrap();
        }
    }
    std::fs::copy(&native, package.join("_native.abi3.so")).unwrap();

    // From a folder of its own, so that the sources in python/locksmith
    // (without the native module) are not imported instead.
    let pg = PgServer::shared();
    locksmith_testkit::pytest(
        &python.join("tests"),
        site.path(),
        &[
            ("PYTHONPATH", site.path().as_os_str()),
            ("LOCKSMITH_BIN", bin.as_os_str()),
            // PostgreSQL for the tests that run on every store: started here
            // (initdb into a temporary folder), or LOCKSMITH_TEST_PG_URL's.
            ("LOCKSMITH_TEST_PG_URL", pg.url.as_ref()),
        ],
        "python3 -m pip install pytest (.ci/run does)",
    );
}
