//! The planner: from the source's files, the store's block size and the
//! base version's manifest to runs (a safetensors header, a tensor, a blob)
//! cut into element-aligned blocks, each run with the blocks of the same
//! run in the base. Pure: no I/O.

use std::collections::HashMap;

use crate::checkpoint::{FileKind, SourceFile};
use crate::lossy::{self, LossyOptions};
use crate::store::manifest::{FileContent, FileEntry, Manifest, TensorEntry};
use crate::{DType, Hash};

/// One run of bytes cut into blocks: a header, a tensor or a blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Run<'a> {
    /// Index of its file in the source.
    pub file: usize,
    pub dtype: DType,
    /// Offset in its file.
    pub offset: u64,
    pub len: u64,
    /// The blocks of the same run in the base version.
    pub base: Option<&'a [Hash]>,
    /// The tensor's name (tensor runs only).
    pub name: Option<&'a str>,
    /// Whether its blocks may be stored lossily.
    pub lossy: bool,
}

/// One block to hash and maybe encode: its run, its place in the run and
/// its byte range in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Job {
    pub run: usize,
    pub index: usize,
    pub offset: u64,
    pub len: u64,
}

/// The runs of a source, in file order, and how they are cut.
#[derive(Debug)]
pub(super) struct Plan<'a> {
    pub runs: Vec<Run<'a>>,
    pub block_size: u32,
}

impl<'a> Plan<'a> {
    /// Plans `files` (in source order) against the `base` version: a
    /// header run then one run per tensor for a safetensors file, one run
    /// for a blob. A tensor's base is the base version's tensor of the
    /// same name and dtype (in any file); a header's or blob's, the same
    /// kind of file at the same path. Tensors of a lossily-stored dtype,
    /// not kept exact, are marked lossy when `lossy` is set.
    pub fn new(
        files: &'a [SourceFile],
        block_size: u32,
        base: Option<&'a Manifest>,
        lossy: Option<&LossyOptions>,
    ) -> Self {
        let mut base_tensors: HashMap<&str, &TensorEntry> = HashMap::new();
        let mut base_files: HashMap<&str, &FileEntry> = HashMap::new();
        if let Some(b) = base {
            for f in &b.files {
                base_files.insert(&f.path, f);
                for t in f.tensors() {
                    base_tensors.entry(&t.name).or_insert(t);
                }
            }
        }
        let mut runs = Vec::new();
        for (fi, f) in files.iter().enumerate() {
            let bf = base_files.get(f.rel_path.as_str());
            match &f.kind {
                FileKind::Safetensors(h) => {
                    let base_header = bf.and_then(|b| match &b.content {
                        FileContent::Safetensors { header_blocks, .. } => Some(header_blocks.as_slice()),
                        FileContent::Blob { .. } => None,
                    });
                    runs.push(Run {
                        file: fi,
                        dtype: DType::U8,
                        offset: 0,
                        len: h.data_start,
                        base: base_header,
                        name: None,
                        lossy: false,
                    });
                    for t in &h.tensors {
                        let bt = base_tensors.get(t.name.as_str()).filter(|b| b.dtype == t.dtype);
                        runs.push(Run {
                            file: fi,
                            dtype: t.dtype,
                            offset: t.start,
                            len: t.len,
                            base: bt.map(|b| b.blocks.as_slice()),
                            name: Some(&t.name),
                            lossy: lossy.is_some_and(|l| lossy::supports(t.dtype) && !l.keeps_exact(&t.name)),
                        });
                    }
                }
                FileKind::Blob => {
                    let base_blob = bf.and_then(|b| match &b.content {
                        FileContent::Blob { blocks } => Some(blocks.as_slice()),
                        FileContent::Safetensors { .. } => None,
                    });
                    runs.push(Run {
                        file: fi,
                        dtype: DType::U8,
                        offset: 0,
                        len: f.len,
                        base: base_blob,
                        name: None,
                        lossy: false,
                    });
                }
            }
        }
        Plan { runs, block_size }
    }

    /// How many blocks run `ri` is cut into.
    pub fn blocks(&self, ri: usize) -> u64 {
        let r = &self.runs[ri];
        crate::block::count(r.len, self.block_size, r.dtype.align())
    }

    /// The blocks of file `fi`, in file order.
    pub fn jobs(&self, fi: usize) -> Vec<Job> {
        let block_size = self.block_size;
        self.runs
            .iter()
            .enumerate()
            .filter(|(_, r)| r.file == fi)
            .flat_map(|(ri, r)| {
                crate::block::ranges(r.len, block_size, r.dtype.align())
                    .enumerate()
                    .map(move |(index, (off, len))| Job { run: ri, index, offset: r.offset + off, len })
            })
            .collect()
    }

    /// The manifest's file entries from the runs and their block hashes
    /// (`run_hashes[ri]`: the blocks of run `ri`, in order).
    pub fn files(&self, files: &[SourceFile], run_hashes: &[Vec<Hash>], algo: crate::Algo) -> Vec<FileEntry> {
        let mut per_file: Vec<Vec<usize>> = vec![Vec::new(); files.len()];
        for (ri, r) in self.runs.iter().enumerate() {
            per_file[r.file].push(ri);
        }
        files
            .iter()
            .zip(per_file)
            .map(|(f, rs)| {
                let content = match &f.kind {
                    FileKind::Safetensors(h) => FileContent::Safetensors {
                        header_len: h.data_start,
                        header_blocks: run_hashes[rs[0]].clone(),
                        tensors: h
                            .tensors
                            .iter()
                            .zip(&rs[1..])
                            .map(|(t, &ri)| TensorEntry {
                                name: t.name.clone(),
                                dtype: t.dtype,
                                shape: t.shape.clone(),
                                offset: t.start,
                                len: t.len,
                                hash: algo.list(&run_hashes[ri]),
                                blocks: run_hashes[ri].clone(),
                            })
                            .collect(),
                    },
                    FileKind::Blob => FileContent::Blob { blocks: run_hashes[rs[0]].clone() },
                };
                let mut fe =
                    FileEntry { path: f.rel_path.clone(), size: f.len, hash: Hash::default(), mode: f.mode, content };
                fe.hash = algo.list(&fe.block_hashes());
                fe
            })
            .collect()
    }
}

/// Splits the jobs of one file into consecutive groups spanning at most
/// `window` bytes (a single block larger than that gets its own group).
pub(super) fn windows(jobs: &[Job], window: u64) -> Vec<&[Job]> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=jobs.len() {
        let span_end = jobs.get(i).map(|j| j.offset + j.len);
        let too_big = span_end.is_some_and(|end| end - jobs[start].offset > window);
        if i == jobs.len() || too_big {
            out.push(&jobs[start..i]);
            start = i;
        }
    }
    out
}
