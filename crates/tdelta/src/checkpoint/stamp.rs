//! Noticing a source file that changes while it is being stored.
//!
//! Pack reads every block with `pread` into a buffer that is then both
//! hashed and encoded, so a version always restores to the bytes pack read.
//! To make sure those are the bytes of one state of the file, the file's
//! stamp (size, modification and change times, inode) is taken when the
//! checkpoint is opened and compared when the file is opened for reading
//! and again before the version is written.

use std::fs::{self, File};
use std::io;
use std::path::Path;

use super::dir::open_regular;
use crate::portable;
use crate::{Error, Result};

/// What identifies one state of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Length in bytes.
    pub len: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i128,
    /// Status change time, nanoseconds since the epoch (moves on writes
    /// even when a tool puts the modification time back).
    pub ctime_ns: i128,
    /// Device and inode: which file it is (0 where the system does not
    /// say).
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
}

impl Stamp {
    /// The stamp of a file's metadata.
    pub fn of(meta: &fs::Metadata) -> Stamp {
        let (dev, ino) = portable::file_id(meta).unwrap_or_default();
        Stamp { len: meta.len(), mtime_ns: portable::mtime_ns(meta), ctime_ns: portable::ctime_ns(meta), dev, ino }
    }

    /// How `now` differs from `self`, if it does.
    fn difference(&self, now: &Stamp) -> Option<String> {
        if (self.dev, self.ino) != (now.dev, now.ino) {
            Some("it was replaced by another file".into())
        } else if self.len != now.len {
            Some(format!("its size went from {} to {} bytes", self.len, now.len))
        } else if self.mtime_ns != now.mtime_ns || self.ctime_ns != now.ctime_ns {
            Some("it was written to".into())
        } else {
            None
        }
    }
}

/// The error for a source that changed under pack.
pub(crate) fn changed(path: &Path, detail: &str) -> Error {
    Error::checkpoint(path, format!("the file changed while it was being stored ({detail}); nothing was written"))
}

/// Errors unless the file at `path` (symlinks followed) still has `stamp`.
pub fn check_unchanged(path: &Path, stamp: &Stamp) -> Result<()> {
    let meta = fs::metadata(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => changed(path, "it was removed"),
        _ => Error::io(path, e),
    })?;
    match stamp.difference(&Stamp::of(&meta)) {
        Some(d) => Err(changed(path, &d)),
        None => Ok(()),
    }
}

/// Opens `path` for reading, refusing it unless it is still the regular
/// file with `stamp`.
pub fn open_unchanged(path: &Path, stamp: &Stamp) -> Result<File> {
    let f = open_regular(path)?;
    let meta = f.metadata().map_err(|e| Error::io(path, e))?;
    match stamp.difference(&Stamp::of(&meta)) {
        Some(d) => Err(changed(path, &d)),
        None => Ok(f),
    }
}

/// Fills `buf` from `offset` of `file` with `pread`. A file that ends early
/// was truncated since it was opened: that is reported as a change, never
/// a crash (reading a mapped file past its new end would raise SIGBUS).
pub fn read_at(file: &File, path: &Path, offset: u64, buf: &mut [u8]) -> Result<()> {
    portable::read_exact_at(file, buf, offset).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => changed(path, "it became shorter"),
        _ => Error::io(path, e),
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::time::{Duration, SystemTime};

    use super::*;

    fn stamped(bytes: &[u8]) -> (tempfile::TempDir, std::path::PathBuf, Stamp) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f.bin");
        fs::write(&path, bytes).expect("write");
        let stamp = Stamp::of(&fs::metadata(&path).expect("stat"));
        (dir, path, stamp)
    }

    #[test]
    fn an_untouched_file_passes() {
        let (_d, path, stamp) = stamped(b"0123456789");
        check_unchanged(&path, &stamp).expect("unchanged");
        let f = open_unchanged(&path, &stamp).expect("open");
        let mut buf = [0u8; 4];
        read_at(&f, &path, 3, &mut buf).expect("read");
        assert_eq!(&buf, b"3456");
    }

    #[test]
    fn size_time_and_identity_changes_are_refused() {
        // Size.
        let (_d, path, stamp) = stamped(b"0123456789");
        fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"x").unwrap();
        let e = check_unchanged(&path, &stamp).expect_err("grown").to_string();
        assert!(e.contains("changed while it was being stored (its size went from 10 to 11 bytes)"), "{e}");
        assert!(e.contains("nothing was written") && e.contains("f.bin"), "{e}");
        assert!(open_unchanged(&path, &stamp).is_err());

        // Same size, bytes rewritten in place, modification time put back:
        // the change time still moves.
        let (_d, path, stamp) = stamped(b"0123456789");
        let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        crate::portable::write_all_at(&f, b"ab", 2).unwrap();
        let mtime = SystemTime::UNIX_EPOCH + Duration::from_nanos(stamp.mtime_ns as u64);
        f.set_modified(mtime).unwrap();
        let e = check_unchanged(&path, &stamp).expect_err("rewritten").to_string();
        assert!(e.contains("(it was written to)"), "{e}");

        // Replaced by another file of the same size.
        let (d, path, stamp) = stamped(b"0123456789");
        let other = d.path().join("g.bin");
        fs::write(&other, b"9876543210").unwrap();
        fs::rename(&other, &path).unwrap();
        let e = check_unchanged(&path, &stamp).expect_err("replaced").to_string();
        assert!(e.contains("(it was replaced by another file)"), "{e}");

        // Removed.
        fs::remove_file(&path).unwrap();
        let e = check_unchanged(&path, &stamp).expect_err("removed").to_string();
        assert!(e.contains("(it was removed)"), "{e}");
    }

    #[test]
    fn a_read_past_a_truncated_end_is_a_change_not_a_crash() {
        let (_d, path, stamp) = stamped(&[7u8; 100]);
        let f = open_unchanged(&path, &stamp).expect("open");
        fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(40).unwrap();
        let mut buf = [0u8; 50];
        let e = read_at(&f, &path, 20, &mut buf).expect_err("short").to_string();
        assert!(e.contains("changed while it was being stored (it became shorter)"), "{e}");
    }
}
