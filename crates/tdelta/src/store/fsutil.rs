//! Durable file writes (for the local backend), and the framed-file
//! envelope of the format crate with the file's path in errors.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::IoContext;
use crate::{Error, Result};

/// Creates a fresh temporary file in `tmp_dir`, unique within this process
/// and across processes (pid + counter).
pub(crate) fn temp_file(tmp_dir: &Path, what: &str) -> Result<(PathBuf, File)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let path = tmp_dir.join(format!("{}-{n}-{what}.tmp", std::process::id()));
    let f = OpenOptions::new().write(true).read(true).create_new(true).open(&path).at(&path)?;
    Ok((path, f))
}

/// Flushes a directory entry to disk so that a rename in it is durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).at(dir)?.sync_all().at(dir)
}

/// Starts writing back `len` bytes of `file` at `offset` without waiting
/// (Linux `sync_file_range(SYNC_FILE_RANGE_WRITE)`), so that a large file
/// written piecewise reaches the disk while the next pieces are produced
/// and its final fsync has little left to do. Durability still comes only
/// from that fsync; elsewhere, and on any error, this does nothing.
pub(crate) fn start_writeback(file: &File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let (Ok(off), Ok(n)) = (libc::off64_t::try_from(offset), libc::off64_t::try_from(len)) else {
            return;
        };
        // SAFETY: a plain syscall on a valid open descriptor; it reads no
        // memory of ours.
        let _ = unsafe { libc::sync_file_range(file.as_raw_fd(), off, n, libc::SYNC_FILE_RANGE_WRITE) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

/// fsyncs `file` (at `tmp`), renames it to `dest` and syncs the directory.
pub(crate) fn commit_file(file: File, tmp: &Path, dest: &Path) -> Result<()> {
    file.sync_all().at(tmp)?;
    drop(file);
    fs::rename(tmp, dest).at(dest)?;
    if let Some(parent) = dest.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

pub(crate) use tdelta_format::frame::frame;

/// Checks and unwraps a framed file read from `path` (the envelope is
/// the format crate's, `tdelta_format::frame`); versions above
/// `max_version` are refused.
pub(crate) fn unframe<'a>(
    path: &Path,
    bytes: &'a [u8],
    magic: &[u8; 8],
    max_version: u32,
    kind: tdelta_format::FileKind,
) -> Result<tdelta_format::frame::Framed<'a>> {
    tdelta_format::frame::unframe(kind, bytes, magic, max_version).map_err(|e| Error::format(path, e))
}

/// Reads a whole small file, refusing anything larger than `cap` bytes.
pub(crate) fn read_capped(path: &Path, cap: u64) -> Result<Vec<u8>> {
    let meta = fs::metadata(path).at(path)?;
    // A directory is not a damaged file: reading it says what it is.
    if meta.len() > cap && !meta.is_dir() {
        return Err(Error::corrupt(path, format!("file is {} bytes, more than the {cap} allowed", meta.len())));
    }
    fs::read(path).at(path)
}
