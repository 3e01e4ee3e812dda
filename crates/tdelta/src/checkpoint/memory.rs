//! Checkpoints that are not files: a safetensors file held in memory, its
//! header built by the caller and its tensors' bytes borrowed from the
//! caller's arrays, and [`Source`], what pack reads blocks from (files on
//! disk with `pread` and a stamp check, or such a memory file).

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use super::header::parse_header;
use super::stamp::{Stamp, open_unchanged, read_at};
use super::{Checkpoint, FileKind, Layout, SourceFile};
use crate::{Error, Result};

/// Unix permission bits a memory file is recorded with (those of a file
/// written under the usual umask `022`).
pub const MEMORY_FILE_MODE: u32 = 0o644;

/// A safetensors file in memory: the verbatim header region (8-byte length
/// and JSON, as the file would start) and each tensor's bytes, borrowed.
/// Packing it stores exactly the version packing the file
/// `header ++ tensors in offset order` would.
#[derive(Debug)]
pub struct MemoryFile<'a> {
    file: SourceFile,
    /// Start offset in the file and bytes of each piece, header first,
    /// sorted by offset; together they tile the file.
    parts: Vec<(u64, &'a [u8])>,
    raw_header: Vec<u8>,
}

impl<'a> MemoryFile<'a> {
    /// Checks `header` (the file's first bytes: 8-byte length and JSON)
    /// like a file's and pairs each tensor it declares with its bytes in
    /// `tensors` (by name; the lengths must match, every tensor must be
    /// given once, no other). `rel_path` is the file's name in the version.
    pub fn new(rel_path: &str, header: Vec<u8>, tensors: Vec<(String, &'a [u8])>) -> Result<MemoryFile<'a>> {
        let path = PathBuf::from(rel_path);
        if let Some(why) = crate::relpath::problem(rel_path) {
            return Err(Error::checkpoint(&path, format!("cannot store the path `{rel_path}`: it {why}")));
        }
        if !rel_path.ends_with(".safetensors") {
            return Err(Error::checkpoint(&path, "a file built in memory must be named *.safetensors"));
        }
        let mut given: HashMap<String, &'a [u8]> = HashMap::with_capacity(tensors.len());
        for (name, bytes) in tensors {
            if given.insert(name.clone(), bytes).is_some() {
                return Err(Error::checkpoint(&path, format!("tensor `{name}` is given twice")));
            }
        }
        let data: u64 = given.values().map(|b| b.len() as u64).sum();
        let len = (header.len() as u64)
            .checked_add(data)
            .ok_or_else(|| Error::checkpoint(&path, "the tensors' total size overflows"))?;
        let parsed = parse_header(&path, &header, len)?;
        if parsed.data_start != header.len() as u64 {
            return Err(Error::checkpoint(
                &path,
                format!("header region is {} bytes where its length prefix says {}", header.len(), parsed.data_start),
            ));
        }
        let mut parts = vec![(0, &[][..])];
        for t in &parsed.tensors {
            let Some(bytes) = given.remove(&t.name) else {
                return Err(Error::checkpoint(&path, format!("tensor `{}` is in the header but not given", t.name)));
            };
            if bytes.len() as u64 != t.len {
                return Err(Error::checkpoint(
                    &path,
                    format!("tensor `{}` is {} bytes where the header says {}", t.name, bytes.len(), t.len),
                ));
            }
            // Empty tensors hold no bytes: every part left starts past the
            // one before it.
            if !bytes.is_empty() {
                parts.push((t.start, bytes));
            }
        }
        if let Some(name) = given.keys().min() {
            return Err(Error::checkpoint(&path, format!("tensor `{name}` is given but not in the header")));
        }
        let stamp = Stamp { len, mtime_ns: 0, ctime_ns: 0, dev: 0, ino: 0 };
        let file = SourceFile {
            rel_path: rel_path.to_string(),
            path,
            len,
            kind: FileKind::Safetensors(parsed),
            stamp,
            mode: Some(MEMORY_FILE_MODE),
        };
        Ok(MemoryFile { file, parts, raw_header: header })
    }

    /// The checkpoint of this one file.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            root: self.file.path.clone(),
            layout: Layout::File,
            files: vec![self.file.clone()],
            empty_dirs: Vec::new(),
            skipped: 0,
        }
    }

    /// Fills `buf` with the file's bytes from `offset`.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let end = offset.checked_add(buf.len() as u64).filter(|&e| e <= self.file.len).ok_or_else(|| {
            Error::checkpoint(&self.file.path, format!("{} bytes at {offset} lie past the end", buf.len()))
        })?;
        // The last part starting at or before `offset`, then onwards.
        let mut i = self.parts.partition_point(|&(s, _)| s <= offset).saturating_sub(1);
        let (mut at, mut out) = (offset, &mut buf[..]);
        while at < end {
            let (start, bytes) = self.parts[i];
            let bytes = if i == 0 { &self.raw_header[..] } else { bytes };
            let from = (at - start) as usize;
            let n = (bytes.len() - from).min(out.len());
            out[..n].copy_from_slice(&bytes[from..from + n]);
            out = &mut out[n..];
            at += n as u64;
            i += 1;
        }
        Ok(())
    }
}

/// Where pack reads a checkpoint's bytes from.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// The checkpoint's files on disk (`pread`, stamp-checked).
    Files,
    /// A file held in memory.
    Memory(&'a MemoryFile<'a>),
}

/// One file of a [`Source`], open for reading.
#[derive(Debug)]
pub enum Opened<'a> {
    /// A file on disk, still as it was stamped.
    File(File, &'a Path),
    /// A memory file.
    Memory(&'a MemoryFile<'a>),
}

impl<'a> Source<'a> {
    /// Opens `f` (a file of the checkpoint this source reads) for reading.
    pub fn open(&self, f: &'a SourceFile) -> Result<Opened<'a>> {
        match self {
            Source::Files => Ok(Opened::File(open_unchanged(&f.path, &f.stamp)?, &f.path)),
            Source::Memory(m) => Ok(Opened::Memory(m)),
        }
    }

    /// Errors unless `f` is still as it was when the checkpoint was opened
    /// (memory files: the caller keeps them as they are).
    pub fn check_unchanged(&self, f: &SourceFile) -> Result<()> {
        match self {
            Source::Files => f.check_unchanged(),
            Source::Memory(_) => Ok(()),
        }
    }
}

impl Opened<'_> {
    /// The file on disk, if it is one.
    pub fn as_file(&self) -> Option<&File> {
        match self {
            Opened::File(f, _) => Some(f),
            Opened::Memory(_) => None,
        }
    }

    /// Fills `buf` from `offset` of the file.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        match self {
            Opened::File(f, path) => read_at(f, path, offset, buf),
            Opened::Memory(m) => m.read_at(offset, buf),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The header and data a safetensors writer gives for `tensors`.
    fn serialized(tensors: &[(&str, Vec<u8>)]) -> (Vec<u8>, Vec<u8>) {
        let views: Vec<_> = tensors
            .iter()
            .map(|(n, b)| {
                let v = safetensors::tensor::TensorView::new(safetensors::Dtype::U8, vec![b.len()], b).unwrap();
                (n.to_string(), v)
            })
            .collect();
        let file = safetensors::serialize(views, None).unwrap();
        let n = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
        (file[..8 + n].to_vec(), file)
    }

    #[test]
    fn reads_at_any_offset_equal_the_file() {
        let ts = [("a", (0..100u8).collect::<Vec<_>>()), ("b", vec![7u8; 3]), ("c", vec![])];
        let (header, file) = serialized(&ts);
        let given = ts.iter().map(|(n, b)| (n.to_string(), &b[..])).collect();
        let m = MemoryFile::new("m.safetensors", header, given).unwrap();
        let c = m.checkpoint();
        assert_eq!(c.files[0].len, file.len() as u64);
        for (off, len) in [(0, file.len()), (0, 8), (5, 40), (file.len() - 103, 103), (file.len() - 2, 2), (9, 0)] {
            let mut buf = vec![0u8; len];
            m.read_at(off as u64, &mut buf).unwrap();
            assert_eq!(buf, file[off..off + len], "{off}+{len}");
        }
        let e = m.read_at(file.len() as u64 - 1, &mut [0u8; 2]).unwrap_err().to_string();
        assert!(e.contains("past the end"), "{e}");
    }

    #[test]
    fn tensors_must_match_the_header() {
        let ts = [("a", vec![1u8; 4]), ("b", vec![2u8; 2])];
        let (header, _) = serialized(&ts);
        let mk = |given: Vec<(&str, &'static [u8])>| {
            let given = given.into_iter().map(|(n, b)| (n.to_string(), b)).collect();
            MemoryFile::new("m.safetensors", header.clone(), given).unwrap_err().to_string()
        };
        let e = mk(vec![("a", &[1; 4]), ("z", &[2; 2])]);
        assert!(e.contains("tensor `b` is in the header but not given"), "{e}");
        let e = mk(vec![("a", &[1; 4]), ("b", &[2; 3])]);
        assert!(e.contains("m.safetensors: 1 trailing bytes after the last tensor"), "{e}");
        let e = mk(vec![("a", &[1; 3]), ("b", &[2; 3])]);
        assert!(e.contains("tensor `a` is 3 bytes where the header says 4"), "{e}");
        let e = mk(vec![("a", &[1; 4]), ("b", &[2; 2]), ("z", &[])]);
        assert!(e.contains("tensor `z` is given but not in the header"), "{e}");
        let e = mk(vec![("a", &[1; 4]), ("a", &[1; 4]), ("b", &[2; 2])]);
        assert!(e.contains("tensor `a` is given twice"), "{e}");
        let e = MemoryFile::new("m.bin", header.clone(), vec![]).unwrap_err().to_string();
        assert!(e.contains("must be named *.safetensors"), "{e}");
        let e = MemoryFile::new("m.safetensors", b"garbage".to_vec(), vec![]).unwrap_err().to_string();
        assert!(e.contains("m.safetensors"), "{e}");
    }
}
