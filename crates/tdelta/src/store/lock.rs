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
    _file: File,
}

/// Takes the lock at `path`, waiting up to `wait` for another writer.
pub(crate) fn acquire(path: &Path, wait: Duration) -> Result<WriteLock> {
    let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).at(path)?;
    let start = Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) => {
                if start.elapsed() >= wait {
                    let mut holder = String::new();
                    let _ = file.read_to_string(&mut holder);
                    let holder = holder.trim();
                    return Err(Error::Locked {
                        path: PathBuf::from(path),
                        holder: if holder.is_empty() { "unknown".into() } else { holder.to_string() },
                    });
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(path, e)),
        }
    }
    let me = format!("pid {} since {}", std::process::id(), super::now());
    file.set_len(0).at(path)?;
    file.seek(SeekFrom::Start(0)).at(path)?;
    file.write_all(me.as_bytes()).at(path)?;
    Ok(WriteLock { _file: file })
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
}
