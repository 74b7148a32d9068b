//! Open file description locks (Linux `F_OFD_SETLK`, `F_OFD_GETLK`), the
//! kernel lock of a life file. Like `flock`, such a lock belongs to the open
//! file, so it is shared by every process that inherits the descriptor and
//! dropped when the last of them exits. Unlike `flock`, a write lock needs a
//! descriptor opened for writing, which only the file's owner can get, and
//! another process can ask what is locked without locking anything: a reader
//! of the file can never pass for its holder.

#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// What holds a file, as a lock on all of it would find.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Found {
    /// No lock.
    Nothing,
    /// Read locks only: the holder's write lock is gone.
    Readers,
    /// A write lock: the holder.
    Writer,
}

/// A lock of `kind` on the whole file.
fn whole(kind: libc::c_int) -> libc::flock {
    // SAFETY: `flock` is a plain C struct for which all-zero bytes are a
    // valid value; the fields that matter are set below.
    let mut f: libc::flock = unsafe { std::mem::zeroed() };
    f.l_type = kind as libc::c_short;
    f.l_whence = libc::SEEK_SET as libc::c_short;
    f.l_start = 0;
    f.l_len = 0;
    f.l_pid = 0;
    f
}

/// Takes a write lock on all of `file` (opened for writing), without waiting.
pub(crate) fn lock_write(file: &File) -> io::Result<()> {
    let mut f = whole(libc::F_WRLCK);
    // SAFETY: the descriptor is open for the whole call and `f` is a valid,
    // initialised `flock` that outlives it.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &mut f) };
    match r {
        -1 => Err(io::Error::last_os_error()),
        _ => Ok(()),
    }
}

/// What other open files hold on `file`, without taking anything.
pub(crate) fn probe(file: &File) -> io::Result<Found> {
    let mut f = whole(libc::F_WRLCK);
    // SAFETY: as in `lock_write`; F_OFD_GETLK only writes into `f`.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut f) };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(match f.l_type as libc::c_int {
        libc::F_UNLCK => Found::Nothing,
        libc::F_RDLCK => Found::Readers,
        _ => Found::Writer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_lock_is_found_by_a_reader_and_a_read_lock_is_not_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("life");
        let holder = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .unwrap();
        let reader = File::open(&path).unwrap();
        assert_eq!(probe(&reader).unwrap(), Found::Nothing);
        lock_write(&holder).unwrap();
        assert_eq!(probe(&reader).unwrap(), Found::Writer);
        // A reader cannot take the write lock, even after the holder is gone.
        assert!(lock_write(&reader).is_err());
        drop(holder);
        assert_eq!(probe(&reader).unwrap(), Found::Nothing);
        let mut f = whole(libc::F_RDLCK);
        // SAFETY: as in `lock_write`.
        let r = unsafe { libc::fcntl(reader.as_raw_fd(), libc::F_OFD_SETLK, &mut f) };
        assert_eq!(r, 0, "{}", io::Error::last_os_error());
        let other = File::open(&path).unwrap();
        assert_eq!(probe(&other).unwrap(), Found::Readers);
    }
}
