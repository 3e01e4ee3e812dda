//! Read-only memory maps of byte ranges of checkpoint files.

use std::fs::File;
use std::path::Path;

use memmap2::{Mmap, MmapOptions};

use crate::{Error, Result};

/// Maps `[offset, offset + len)` of `file` read-only. `path` is for errors.
///
/// The range must lie within the file's current length (checked with one
/// `fstat`), so that reading the map cannot fault on a file that is not
/// modified meanwhile. `len == 0` gives an empty map.
pub fn map_range(file: &File, path: &Path, offset: u64, len: usize) -> Result<Mmap> {
    let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let end = u64::try_from(len).ok().and_then(|l| offset.checked_add(l));
    match end {
        Some(end) if end <= file_len => {}
        _ => {
            return Err(Error::checkpoint(
                path,
                format!(
                    "cannot map {len} bytes at offset {offset}: the range runs past the end of the file ({file_len} bytes)"
                ),
            ));
        }
    }
    // SAFETY: the map is read-only and the range lies within the file, but
    // another process could still truncate or rewrite the file while it is
    // mapped: reads would then fault (SIGBUS) or see changed bytes. We
    // accept this only where a fault or changed bytes lose nothing: pack
    // does not map sources (it reads them with `pread`, see `stamp.rs`);
    // maps serve `tdelta bench`, which reads its own generated files.
    let map = unsafe { MmapOptions::new().offset(offset).len(len).map(file) };
    map.map_err(|e| Error::io(path, e))
}

/// Tells the kernel that `map` will be read front to back, so it reads
/// ahead aggressively and drops pages behind. Only a hint: failures (and
/// platforms without `madvise`) are ignored.
pub fn advise_sequential(map: &Mmap) {
    #[cfg(unix)]
    if !map.is_empty() {
        // Ignored on purpose: the advice changes speed, never correctness.
        let _ = map.advise(memmap2::Advice::Sequential);
    }
    #[cfg(not(unix))]
    let _ = map;
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn temp_file(bytes: &[u8]) -> (tempfile::NamedTempFile, File) {
        let mut t = tempfile::NamedTempFile::new().expect("temp file");
        t.write_all(bytes).expect("write");
        t.flush().expect("flush");
        let f = File::open(t.path()).expect("reopen");
        (t, f)
    }

    #[test]
    fn maps_a_window_at_an_unaligned_offset() {
        let bytes: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let (t, f) = temp_file(&bytes);
        let map = map_range(&f, t.path(), 4099, 1000).expect("map");
        advise_sequential(&map);
        assert_eq!(&map[..], &bytes[4099..5099]);
        let whole = map_range(&f, t.path(), 0, bytes.len()).expect("map");
        assert_eq!(&whole[..], &bytes[..]);
    }

    #[test]
    fn zero_length_maps_are_empty() {
        let (t, f) = temp_file(b"abc");
        for offset in [0, 1, 3] {
            let map = map_range(&f, t.path(), offset, 0).expect("map");
            advise_sequential(&map);
            assert!(map.is_empty());
        }
        let (t, f) = temp_file(b"");
        assert!(map_range(&f, t.path(), 0, 0).expect("map").is_empty());
    }

    #[test]
    fn ranges_past_the_end_are_refused() {
        let (t, f) = temp_file(b"abcdef");
        for (offset, len) in [(0, 7), (6, 1), (4, 3), (u64::MAX, 1), (7, 0)] {
            let err = map_range(&f, t.path(), offset, len).expect_err("past end");
            let msg = err.to_string();
            assert!(msg.contains("runs past the end of the file (6 bytes)"), "{msg}");
        }
    }
}
