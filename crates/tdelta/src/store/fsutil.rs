//! Durable file writes (for the local backend) and the framed-file
//! envelope shared by the store's small files (config, manifests).
//! Layouts are in `FORMAT.md`.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::CorruptKind;
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

/// Size of the framed envelope header: magic (8), version (4), flags (4),
/// body length (8).
const FRAME_HEADER: usize = 24;

/// Wraps `body` in the framed envelope: magic, version, flags, length,
/// body, xxh3-64 of everything before the checksum.
pub(crate) fn frame(magic: &[u8; 8], version: u32, flags: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FRAME_HEADER + body.len() + 8);
    out.extend_from_slice(magic);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(body);
    let sum = xxhash_rust::xxh3::xxh3_64(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

/// A parsed framed file.
#[derive(Debug)]
pub(crate) struct Framed<'a> {
    pub flags: u32,
    pub body: &'a [u8],
}

/// Checks and unwraps a framed file. `what` names the kind of file in
/// errors; versions above `max_version` are refused.
pub(crate) fn unframe<'a>(
    path: &Path,
    bytes: &'a [u8],
    magic: &[u8; 8],
    max_version: u32,
    what: &str,
) -> Result<Framed<'a>> {
    if bytes.len() < FRAME_HEADER + 8 {
        return Err(Error::corrupt_as(
            CorruptKind::Truncated,
            path,
            format!("truncated {what}: {} bytes", bytes.len()),
        ));
    }
    if &bytes[..8] != magic {
        return Err(Error::corrupt_as(CorruptKind::Magic, path, format!("not a tdelta {what} (bad magic)")));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().unwrap_or_default());
    if version == 0 {
        return Err(Error::corrupt_as(CorruptKind::Version, path, format!("{what} has format version 0")));
    }
    if version > max_version {
        return Err(Error::UnsupportedFormat { file: path.to_path_buf(), found: version, supported: max_version });
    }
    let flags = u32::from_le_bytes(bytes[12..16].try_into().unwrap_or_default());
    let len = u64::from_le_bytes(bytes[16..24].try_into().unwrap_or_default());
    let expected = (FRAME_HEADER as u64).checked_add(len).and_then(|n| n.checked_add(8));
    if expected != Some(bytes.len() as u64) {
        return Err(Error::corrupt_as(
            CorruptKind::Truncated,
            path,
            format!("{what} length mismatch: header says {len} body bytes, file has {}", bytes.len()),
        ));
    }
    let end = FRAME_HEADER + len as usize;
    let stored = u64::from_le_bytes(bytes[end..end + 8].try_into().unwrap_or_default());
    let actual = xxhash_rust::xxh3::xxh3_64(&bytes[..end]);
    if stored != actual {
        return Err(Error::corrupt_as(
            CorruptKind::Checksum,
            path,
            format!("{what} checksum mismatch (stored {stored:016x}, computed {actual:016x})"),
        ));
    }
    Ok(Framed { flags, body: &bytes[FRAME_HEADER..end] })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trip_and_detects_damage() {
        let p = Path::new("x");
        let f = frame(b"TDTEST\0\0", 1, 7, b"hello");
        let u = unframe(p, &f, b"TDTEST\0\0", 1, "test file").unwrap();
        assert_eq!((u.flags, u.body), (7, &b"hello"[..]));

        let mut flipped = f.clone();
        flipped[26] ^= 1;
        let e = unframe(p, &flipped, b"TDTEST\0\0", 1, "test file").unwrap_err();
        assert!(e.to_string().contains("checksum mismatch"), "{e}");

        let e = unframe(p, &f[..f.len() - 1], b"TDTEST\0\0", 1, "test file").unwrap_err();
        assert!(e.to_string().contains("length mismatch"), "{e}");

        let e = unframe(p, &f, b"TDOTHER\0", 1, "test file").unwrap_err();
        assert!(e.to_string().contains("bad magic"), "{e}");

        let newer = frame(b"TDTEST\0\0", 2, 0, b"x");
        let e = unframe(p, &newer, b"TDTEST\0\0", 1, "test file").unwrap_err();
        assert!(e.to_string().contains("format version 2 is not supported"), "{e}");
    }
}
