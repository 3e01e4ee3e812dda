//! Small system helpers of the benchmark: hashing, sizing, counting and
//! removing files, peak memory.

use std::fs;
use std::io::Read;
use std::path::Path;

use tdelta::IoContext;
use tdelta::Result;

/// Number of regular files under `dir`, recursively.
pub(crate) fn count_files(dir: &Path) -> Result<usize> {
    let mut n = 0;
    for e in fs::read_dir(dir).at(dir)? {
        let p = e.at(dir)?.path();
        if p.is_dir() {
            n += count_files(&p)?;
        } else {
            n += 1;
        }
    }
    Ok(n)
}

/// Resets the peak resident memory of this process to its current value
/// (Linux: writes `5` to `/proc/self/clear_refs`). Returns whether it
/// worked; if not, [`peak_rss`] is the peak of the whole process.
pub fn reset_peak_rss() -> bool {
    cfg!(target_os = "linux") && fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Peak resident memory of this process in bytes (`VmHWM` of
/// `/proc/self/status`), or `None` where it cannot be read.
pub fn peak_rss() -> Option<u64> {
    status_kb("VmHWM:")
}

/// Current resident memory of this process in bytes (`VmRSS`).
pub fn current_rss() -> Option<u64> {
    status_kb("VmRSS:")
}

fn status_kb(key: &str) -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// xxh3-128 of a whole file, read in 4 MiB pieces (reported to `progress`
/// as bytes read).
pub fn hash_file(path: &Path, progress: &dyn tdelta::Progress) -> Result<tdelta::Hash> {
    let mut f = fs::File::open(path).at(path)?;
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 4 << 20];
    loop {
        let n = f.read(&mut buf).at(path)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        progress.advance(n as u64);
    }
    Ok(tdelta::Hash::from_u128(h.digest128()))
}

/// Sum of the lengths of every file under `path` (or of `path` itself).
pub fn dir_bytes(path: &Path) -> Result<u64> {
    let meta = fs::symlink_metadata(path).at(path)?;
    if !meta.is_dir() {
        return Ok(meta.len());
    }
    let mut total = 0;
    for e in fs::read_dir(path).at(path)? {
        total += dir_bytes(&e.at(path)?.path())?;
    }
    Ok(total)
}

/// Removes a file or a directory tree; nothing there is fine.
pub fn remove_any(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(tdelta::Error::io(path, e)),
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).at(path),
        Ok(_) => fs::remove_file(path).at(path),
    }
}

/// Fills `buf` from `offset` of `file`: `pread` on Unix; elsewhere a seek
/// and a read under one lock (the bench's threads share its files).
pub(crate) fn read_at(file: &fs::File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    #[cfg(unix)]
    return std::os::unix::fs::FileExt::read_exact_at(file, buf, offset);
    #[cfg(not(unix))]
    {
        use std::io::{Seek, SeekFrom};
        let _one = SEEK_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let mut f = file;
        f.seek(SeekFrom::Start(offset))?;
        f.read_exact(buf)
    }
}

/// Writes `buf` at `offset` of `file`, as [`read_at`] reads.
pub(crate) fn write_at(file: &fs::File, buf: &[u8], offset: u64) -> std::io::Result<()> {
    #[cfg(unix)]
    return std::os::unix::fs::FileExt::write_all_at(file, buf, offset);
    #[cfg(not(unix))]
    {
        use std::io::{Seek, SeekFrom, Write};
        let _one = SEEK_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let mut f = file;
        f.seek(SeekFrom::Start(offset))?;
        f.write_all(buf)
    }
}

/// Keeps a seek and the read or write after it together.
#[cfg(not(unix))]
static SEEK_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
