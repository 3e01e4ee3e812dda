//! The writer lock: one writer at a time per store.
//!
//! An advisory `flock`-style lock on `lock` (std `File::try_lock`). The
//! kernel releases it when the holder dies, so a killed writer never
//! leaves a stale lock; the holder's description in the file is only
//! informational.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::IoContext;
use crate::{Error, Result};

/// Held while writing; dropping it releases the lock.
#[derive(Debug)]
pub(crate) struct WriteLock {
    file: File,
}

impl Drop for WriteLock {
    /// Clears the holder's description before the lock goes, so that a
    /// later waiter never reads the name of a writer that has finished.
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
    }
}

/// Takes the lock at `path`, waiting up to `wait` for another writer.
#[cfg(test)]
pub(crate) fn acquire(path: &Path, wait: Duration) -> Result<WriteLock> {
    acquire_noting(path, wait, None).map(|(l, _)| l)
}

/// Takes the lock at `path`, waiting up to `wait` for another writer;
/// `notice` hears once, with the holder's description, that we wait.
/// Returns the lock and how long it waited.
pub(crate) fn acquire_noting(
    path: &Path,
    wait: Duration,
    notice: Option<&dyn Fn(&str)>,
) -> Result<(WriteLock, Duration)> {
    let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).at(path)?;
    let start = Instant::now();
    let mut noted = false;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) => {
                if !noted && let Some(f) = notice {
                    f(&holder(&mut file));
                    noted = true;
                }
                if start.elapsed() >= wait {
                    return Err(Error::Locked { path: PathBuf::from(path), holder: holder(&mut file) });
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(path, e)),
        }
    }
    let waited = if noted { start.elapsed() } else { Duration::ZERO };
    let me = format!("pid {} since {}", std::process::id(), super::now());
    file.set_len(0).at(path)?;
    file.seek(SeekFrom::Start(0)).at(path)?;
    file.write_all(me.as_bytes()).at(path)?;
    Ok((WriteLock { file }, waited))
}

/// Who holds the lock on `file`: the process the kernel names (Linux
/// `/proc/locks`), with the holder's own description when it is that
/// process's; else the description alone; else `unknown`.
fn holder(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.seek(SeekFrom::Start(0));
    let _ = file.read_to_string(&mut text);
    let text = text.trim().to_string();
    match kernel_holder(file) {
        Some(pid) if text.starts_with(&format!("pid {pid} ")) || text == format!("pid {pid}") => text,
        Some(pid) => format!("pid {pid}"),
        None if text.is_empty() => "unknown".into(),
        None => text,
    }
}

/// The pid holding a `flock` on `file`, from `/proc/locks` (Linux).
#[cfg(target_os = "linux")]
fn kernel_holder(file: &File) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let md = file.metadata().ok()?;
    let dev = md.dev();
    let (major, minor) =
        (((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff), ((dev >> 12) & 0xffff_ff00) | (dev & 0xff));
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    // `1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF`
    locks.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.get(1) != Some(&"FLOCK") {
            return None;
        }
        let mut id = f.get(5)?.split(':');
        let (ma, mi, ino) = (id.next()?, id.next()?, id.next()?);
        let same = u64::from_str_radix(ma, 16).ok()? == major
            && u64::from_str_radix(mi, 16).ok()? == minor
            && ino.parse::<u64>().ok()? == md.ino();
        if same { f.get(4)?.parse().ok() } else { None }
    })
}

#[cfg(not(target_os = "linux"))]
fn kernel_holder(_file: &File) -> Option<u32> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_writer_waits_then_fails_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lock");
        let held = acquire(&p, Duration::ZERO).unwrap();
        let e = acquire(&p, Duration::from_millis(120)).unwrap_err().to_string();
        assert!(e.contains("locked by another writer") && e.contains("pid"), "{e}");
        drop(held);
        acquire(&p, Duration::ZERO).unwrap();
    }

    #[test]
    fn timeout_names_the_holder_not_an_earlier_writer() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lock");
        // A writer that finished, then a holder that wrote nothing.
        drop(acquire(&p, Duration::ZERO).unwrap());
        std::fs::write(&p, "pid 4194000 since 1").unwrap();
        let other = File::open(&p).unwrap();
        other.lock().unwrap();
        let e = acquire(&p, Duration::from_millis(60)).unwrap_err().to_string();
        assert!(!e.contains("4194000"), "{e}");
        if cfg!(target_os = "linux") {
            assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
        }
    }

    #[test]
    fn release_clears_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lock");
        drop(acquire(&p, Duration::ZERO).unwrap());
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "");
    }
}
