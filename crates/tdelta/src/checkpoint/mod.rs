//! Reading checkpoints: safetensors headers, sharded directories, mapped
//! byte ranges.
//!
//! CONTRACT (used by `ops/`; the names and fields below are fixed):
//! - `open(path)` accepts a `.safetensors` file (or any single file, then a
//!   blob) or a directory (HF sharded layout or any directory of files) and
//!   returns a validated [`Checkpoint`].
//! - Every tensor's bytes lie at `[start, start + len)` of its file; the
//!   tensors of a safetensors file, sorted by `start`, tile the data region
//!   exactly, and `header.raw` is the verbatim prefix `[0, data_start)`.
//! - `map_range` maps a window of a file read-only.
//! - `SourceFile::stamp` is the file's identity when it was opened;
//!   `check_unchanged` refuses a file whose size, times or inode moved since.
//! - `Source` is what pack reads a checkpoint's bytes from: its files, or a
//!   `MemoryFile` (a safetensors file built in memory from borrowed bytes).

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::DType;

mod dir;
mod header;
mod map;
mod memory;
mod select;
mod stamp;
#[cfg(test)]
mod testdata;
#[cfg(test)]
mod tests;

pub use dir::{MAX_INDEX_LEN, open, open_with};
pub use header::{HEADER_LEN_PREFIX, MAX_HEADER_LEN, parse_header, read_header};
pub use map::{advise_sequential, map_range};
pub use memory::{MEMORY_FILE_MODE, MemoryFile, Opened, Source};
pub use select::{DEFAULT_EXCLUDES, Selection};
pub use stamp::{Stamp, check_unchanged, open_unchanged, read_at};

/// One tensor of a safetensors file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Tensor name as in the header.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Shape (empty for a scalar).
    pub shape: Vec<u64>,
    /// Absolute byte offset of the data in the file.
    pub start: u64,
    /// Byte length of the data.
    pub len: u64,
}

/// A parsed and validated safetensors header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The verbatim bytes `[0, data_start)`: the 8-byte length prefix and
    /// the JSON header including any padding.
    pub raw: Vec<u8>,
    /// Offset of the data region (8 + header length).
    pub data_start: u64,
    /// Tensors sorted by `start`.
    pub tensors: Vec<TensorInfo>,
    /// The `__metadata__` map, if present.
    pub metadata: Option<BTreeMap<String, String>>,
}

/// What a source file is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileKind {
    /// A safetensors file with its header.
    Safetensors(Header),
    /// Any other file, versioned as opaque bytes.
    Blob,
}

/// One file of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// Path relative to the checkpoint root, `/`-separated (for a single
    /// file checkpoint: its file name).
    pub rel_path: String,
    /// Path on disk.
    pub path: PathBuf,
    /// File length in bytes.
    pub len: u64,
    /// Parsed content description.
    pub kind: FileKind,
    /// Size, times and inode when the file was opened.
    pub stamp: Stamp,
    /// Unix permission bits (`0o777` at most); `None` on systems without
    /// them.
    pub mode: Option<u32>,
}

/// Whether a checkpoint is one file or a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// A single file.
    File,
    /// A directory of files (sharded or not).
    Directory,
}

/// A checkpoint on disk, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The path that was opened.
    pub root: PathBuf,
    /// File or directory.
    pub layout: Layout,
    /// Files sorted by `rel_path`.
    pub files: Vec<SourceFile>,
    /// Directories holding nothing at all, `/`-separated, sorted.
    pub empty_dirs: Vec<String>,
    /// Files left out by the default skips, the store's own directory and
    /// the include/exclude patterns.
    pub skipped: u64,
}

impl SourceFile {
    /// Errors unless the file at `path` still has the size, times and
    /// inode it had when it was opened.
    pub fn check_unchanged(&self) -> crate::Result<()> {
        check_unchanged(&self.path, &self.stamp)
    }
}
