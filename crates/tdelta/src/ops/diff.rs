//! Comparing two versions tensor by tensor, from the stored blocks.

use std::collections::BTreeMap;

use half::{bf16, f16};
use rayon::prelude::*;
use serde::Serialize;

use crate::Hash;
use crate::ops::blocks::Scratch;
use crate::store::Store;
use crate::store::manifest::{FileContent, FileEntry, TensorEntry};
use crate::{DType, Result};

/// How a tensor differs between two versions.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum TensorStatus {
    /// Values changed (same dtype and shape).
    Changed,
    /// Shape changed (e.g. rows added).
    Reshaped,
    /// Element type changed.
    DtypeChanged,
    /// Only in the second version.
    Added,
    /// Only in the first version.
    Removed,
    /// Bit-identical.
    Unchanged,
}

impl TensorStatus {
    /// The lowercase name, as in JSON (`dtype_changed`).
    pub fn name(self) -> &'static str {
        match self {
            TensorStatus::Changed => "changed",
            TensorStatus::Reshaped => "reshaped",
            TensorStatus::DtypeChanged => "dtype_changed",
            TensorStatus::Added => "added",
            TensorStatus::Removed => "removed",
            TensorStatus::Unchanged => "unchanged",
        }
    }
}

/// How a file differs between two versions, other than through its
/// tensors.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum FileStatus {
    /// Only in the second version.
    Added,
    /// Only in the first version.
    Removed,
    /// Other bytes (a file that is not safetensors in one of them).
    Changed,
    /// A safetensors file whose header (metadata, names, layout) changed.
    #[serde(rename = "header changed")]
    HeaderChanged,
}

impl FileStatus {
    /// The name, as in JSON (`header changed`).
    pub fn name(self) -> &'static str {
        match self {
            FileStatus::Added => "added",
            FileStatus::Removed => "removed",
            FileStatus::Changed => "changed",
            FileStatus::HeaderChanged => "header changed",
        }
    }
}

/// One tensor of a [`DiffReport`].
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TensorDiff {
    /// Tensor name.
    pub name: String,
    /// What changed.
    pub status: TensorStatus,
    /// Dtype in A and B.
    pub dtype: (Option<DType>, Option<DType>),
    /// Shape in A and B.
    pub shape: (Option<Vec<u64>>, Option<Vec<u64>>),
    /// Bytes in B (or A when removed).
    pub bytes: u64,
    /// Blocks that differ (of B's blocks), for changed tensors.
    pub changed_blocks: u64,
    /// Fraction of elements whose bits changed.
    pub changed_fraction: Option<f64>,
    /// `‖B − A‖₂ / ‖A‖₂` over finite elements (float and integer dtypes).
    pub rel_l2: Option<f64>,
    /// Largest `|B − A|` over finite elements.
    pub max_abs: Option<f64>,
}

/// A non-tensor file (or a safetensors header) that differs.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FileDiff {
    /// Path inside the version.
    pub path: String,
    /// What changed.
    pub status: FileStatus,
}

/// What [`diff`] found.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DiffReport {
    /// Version A.
    pub a: Hash,
    /// Version B.
    pub b: Hash,
    /// Every tensor, most changed first (changed by `rel_l2`, then other
    /// statuses, unchanged last).
    pub tensors: Vec<TensorDiff>,
    /// Files that differ other than through their tensors.
    pub files: Vec<FileDiff>,
}

/// Compares versions `a` and `b`: per tensor (matched by name) and per
/// non-tensor file. Values of changed tensors are decoded from the store
/// in parallel, block by block; nothing is written to disk.
pub fn diff(store: &Store, a: Hash, b: Hash) -> Result<DiffReport> {
    let ma = store.manifest(a)?;
    let mb = store.manifest(b)?;
    let ta: BTreeMap<&str, &TensorEntry> =
        ma.files.iter().flat_map(|f| f.tensors()).map(|t| (t.name.as_str(), t)).collect();
    let tb: BTreeMap<&str, &TensorEntry> =
        mb.files.iter().flat_map(|f| f.tensors()).map(|t| (t.name.as_str(), t)).collect();
    let mut tensors = Vec::new();
    let mut to_measure = Vec::new();
    for (name, x) in &ta {
        if !tb.contains_key(name) {
            tensors.push(entry(name, TensorStatus::Removed, Some(x), None, x.len));
        }
    }
    for (name, y) in &tb {
        let d = match ta.get(name) {
            None => entry(name, TensorStatus::Added, None, Some(y), y.len),
            Some(x) if x.hash == y.hash && x.dtype == y.dtype && x.shape == y.shape => {
                entry(name, TensorStatus::Unchanged, Some(x), Some(y), y.len)
            }
            Some(x) if x.dtype != y.dtype => entry(name, TensorStatus::DtypeChanged, Some(x), Some(y), y.len),
            Some(x) if x.shape != y.shape => entry(name, TensorStatus::Reshaped, Some(x), Some(y), y.len),
            Some(x) => {
                to_measure.push((tensors.len(), *x, *y));
                entry(name, TensorStatus::Changed, Some(x), Some(y), y.len)
            }
        };
        tensors.push(d);
    }
    // One job per block pair of every changed tensor; partial sums come
    // back in order and are added sequentially, so figures do not depend
    // on scheduling.
    let jobs: Vec<(usize, Hash, Hash, DType)> = to_measure
        .iter()
        .flat_map(|(i, x, y)| x.blocks.iter().zip(&y.blocks).map(move |(p, q)| (*i, *p, *q, y.dtype)))
        .collect();
    // Each version's blocks within the decodes its manifest allows.
    let (bound_a, bound_b) = (super::restore::levels_bound(&ma), super::restore::levels_bound(&mb));
    let parts: Vec<(usize, Partial)> = jobs
        .par_iter()
        .map_init(
            || (Scratch::default(), Vec::new(), Vec::new()),
            |(scratch, ba, bb), (i, p, q, dtype)| -> Result<(usize, Partial)> {
                store.read_block_within(*p, bound_a, ba, scratch, None)?;
                if p == q {
                    return Ok((*i, Partial::unchanged(*dtype, ba)));
                }
                store.read_block_within(*q, bound_b, bb, scratch, None)?;
                Ok((*i, Partial::of(*dtype, ba, bb)))
            },
        )
        .collect::<Result<_>>()?;
    let mut sums: BTreeMap<usize, Partial> = BTreeMap::new();
    for (i, p) in parts {
        sums.entry(i).or_default().add(&p);
    }
    for (i, s) in sums {
        let t = &mut tensors[i];
        t.changed_blocks = s.changed_blocks;
        t.changed_fraction = (s.elements > 0).then(|| s.changed as f64 / s.elements as f64);
        if s.numeric {
            t.rel_l2 = Some(if s.norm2 > 0.0 { (s.diff2 / s.norm2).sqrt() } else { s.diff2.sqrt() });
            t.max_abs = Some(s.max_abs);
        }
    }
    tensors.sort_by(|x, y| {
        x.status
            .cmp(&y.status)
            .then_with(|| y.rel_l2.unwrap_or(0.0).total_cmp(&x.rel_l2.unwrap_or(0.0)).then_with(|| x.name.cmp(&y.name)))
    });
    Ok(DiffReport { a, b, tensors, files: file_diffs(&ma.files, &mb.files) })
}

fn entry(
    name: &str,
    status: TensorStatus,
    x: Option<&&TensorEntry>,
    y: Option<&&TensorEntry>,
    bytes: u64,
) -> TensorDiff {
    TensorDiff {
        name: name.to_string(),
        status,
        dtype: (x.map(|t| t.dtype), y.map(|t| t.dtype)),
        shape: (x.map(|t| t.shape.clone()), y.map(|t| t.shape.clone())),
        bytes,
        changed_blocks: 0,
        changed_fraction: None,
        rel_l2: None,
        max_abs: None,
    }
}

fn file_diffs(fa: &[FileEntry], fb: &[FileEntry]) -> Vec<FileDiff> {
    let a: BTreeMap<&str, &FileEntry> = fa.iter().map(|f| (f.path.as_str(), f)).collect();
    let b: BTreeMap<&str, &FileEntry> = fb.iter().map(|f| (f.path.as_str(), f)).collect();
    let mut out = Vec::new();
    let header = |f: &FileEntry| match &f.content {
        FileContent::Safetensors { header_blocks, .. } => Some(header_blocks.clone()),
        FileContent::Blob { .. } => None,
    };
    for (p, x) in &a {
        let status = match b.get(p) {
            None => FileStatus::Removed,
            Some(y) if x.hash == y.hash => continue,
            Some(y) => match (header(x), header(y)) {
                (Some(hx), Some(hy)) if hx != hy => FileStatus::HeaderChanged,
                (Some(_), Some(_)) => continue,
                _ => FileStatus::Changed,
            },
        };
        out.push(FileDiff { path: p.to_string(), status });
    }
    for p in b.keys().filter(|p| !a.contains_key(*p)) {
        out.push(FileDiff { path: p.to_string(), status: FileStatus::Added });
    }
    out
}

/// Sums over some blocks of one tensor.
#[derive(Debug, Default, Clone, Copy)]
struct Partial {
    numeric: bool,
    elements: u64,
    changed: u64,
    changed_blocks: u64,
    diff2: f64,
    norm2: f64,
    max_abs: f64,
}

impl Partial {
    fn add(&mut self, o: &Partial) {
        self.numeric |= o.numeric;
        self.elements += o.elements;
        self.changed += o.changed;
        self.changed_blocks += o.changed_blocks;
        self.diff2 += o.diff2;
        self.norm2 += o.norm2;
        self.max_abs = self.max_abs.max(o.max_abs);
    }

    fn unchanged(dtype: DType, a: &[u8]) -> Partial {
        let mut p = Partial { numeric: values(dtype, a).is_some(), ..Partial::default() };
        if let Some(va) = values(dtype, a) {
            for x in va.filter(|x| x.is_finite()) {
                p.norm2 += x * x;
            }
        }
        p.elements = elements(dtype, a.len());
        p
    }

    fn of(dtype: DType, a: &[u8], b: &[u8]) -> Partial {
        let size = (dtype.bits() as usize).div_ceil(8).max(1);
        let mut p = Partial { changed_blocks: 1, ..Partial::default() };
        p.elements = elements(dtype, b.len());
        p.changed = if a.len() == b.len() && dtype.bits().is_multiple_of(8) {
            a.chunks_exact(size).zip(b.chunks_exact(size)).filter(|(x, y)| x != y).count() as u64
        } else {
            p.elements
        };
        if let (Some(va), Some(vb)) = (values(dtype, a), values(dtype, b)) {
            p.numeric = true;
            for (x, y) in va.zip(vb).filter(|(x, y)| x.is_finite() && y.is_finite()) {
                let d = y - x;
                p.diff2 += d * d;
                p.norm2 += x * x;
                p.max_abs = p.max_abs.max(d.abs());
            }
        }
        p
    }
}

fn elements(dtype: DType, bytes: usize) -> u64 {
    (bytes as u64 * 8) / dtype.bits().max(1)
}

/// The values of a block as f64, for the dtypes that have a plain numeric
/// reading (not the F8/F6/F4 micro-formats or complex).
fn values(dtype: DType, b: &[u8]) -> Option<Box<dyn Iterator<Item = f64> + '_>> {
    macro_rules! le {
        ($t:ty, $n:expr, $conv:expr) => {
            Some(Box::new(b.chunks_exact($n).map(|c| {
                let mut a = [0u8; $n];
                a.copy_from_slice(c);
                $conv(<$t>::from_le_bytes(a))
            })))
        };
    }
    match dtype {
        DType::BF16 => le!(u16, 2, |v| f64::from(bf16::from_bits(v).to_f32())),
        DType::F16 => le!(u16, 2, |v| f64::from(f16::from_bits(v).to_f32())),
        DType::F32 => le!(f32, 4, f64::from),
        DType::F64 => le!(f64, 8, |v| v),
        DType::I8 => le!(i8, 1, f64::from),
        DType::U8 | DType::BOOL => le!(u8, 1, f64::from),
        DType::I16 => le!(i16, 2, f64::from),
        DType::U16 => le!(u16, 2, f64::from),
        DType::I32 => le!(i32, 4, f64::from),
        DType::U32 => le!(u32, 4, f64::from),
        DType::I64 => le!(i64, 8, |v| v as f64),
        DType::U64 => le!(u64, 8, |v| v as f64),
        _ => None,
    }
}
