//! Small system helpers of the benchmark: counting files, peak memory.
//! (Hashing, sizing and removing files live in `store::fsutil`.)

pub use crate::store::fsutil::{dir_bytes, hash_file, remove_any};

use std::fs;
use std::path::Path;

use crate::Result;
use crate::error::IoContext;

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
