//! A small disk of its own, to fill up: a 2 MiB tmpfs in a temporary
//! folder, unmounted when dropped.

use std::path::{Path, PathBuf};

/// A mounted 2 MiB tmpfs.
pub struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    /// Mounts it; `None` where mounting is not allowed (not root).
    pub fn mount() -> Option<SmallDisk> {
        let dir = tempfile::tempdir().ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(SmallDisk(dir))
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// Fills it to the last byte with one file, whose path it answers:
    /// remove that file to free the space again.
    pub fn fill(&self) -> PathBuf {
        let fill = self.path().join("fill");
        let mut f = std::fs::File::create(&fill).expect("create the filling file");
        let block = vec![0u8; 64 * 1024];
        while std::io::Write::write_all(&mut f, &block).is_ok() {}
        fill
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}
