//! Parts of a version: the files and tensors a partial restore writes, and
//! where each block lands. A safetensors file cut down to some tensors
//! gets a new header (the original metadata and tensor entries, offsets
//! recomputed), and a shard index its `weight_map` cut down to match; only
//! the blocks of the chosen tensors (and of those headers) are read.

use std::collections::BTreeSet;

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde_json::{Map, Value};

use super::{block_error, check_len};
use crate::Hash;
use crate::ops::blocks::{ReadCounters, Scratch};
use crate::store::Store;
use crate::store::manifest::{BlockRef, FileContent, FileEntry, Manifest};
use crate::{Error, Result};

/// Which parts of a version [`super::restore_parts`] writes. Empty lists
/// select everything.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only the files whose path (`/`-separated, relative to the version's
    /// root) matches one of these globs.
    pub files: Vec<String>,
    /// Only the tensors whose name matches one of these globs: each
    /// safetensors file is rewritten with those tensors and its original
    /// metadata, files holding none of them are left out, and shard
    /// indexes (`*.safetensors.index.json`) list only them. Other files are
    /// kept.
    pub tensors: Vec<String>,
}

/// Largest shard index read to be cut down.
const MAX_INDEX: u64 = 256 << 20;

/// One file to write: its path in the output, its size, literal byte runs
/// and blocks placed at output offsets.
#[derive(Debug)]
pub(super) struct OutFile {
    /// Index of the source file in the manifest.
    pub file: usize,
    /// Path relative to the output root.
    pub rel: String,
    pub size: u64,
    pub literal: Vec<(u64, Vec<u8>)>,
    pub blocks: Vec<(BlockRef, u64)>,
}

fn globs(patterns: &[String], what: &str) -> Result<Option<GlobSet>> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        let g = Glob::new(p).map_err(|e| Error::InvalidArgument(format!("invalid {what} pattern `{p}`: {e}")))?;
        b.add(g);
    }
    b.build().map(Some).map_err(|e| Error::InvalidArgument(format!("invalid {what} patterns: {e}")))
}

/// Lists at most a few names for an error message.
fn some(names: impl Iterator<Item = String>) -> String {
    let v: Vec<String> = names.collect();
    let shown = v.iter().take(8).cloned().collect::<Vec<_>>().join(", ");
    if v.len() > 8 { format!("{shown}, … ({} in all)", v.len()) } else { shown }
}

/// What to write for version `id` under `sel`.
pub(super) fn plan(
    store: &Store,
    id: Hash,
    m: &Manifest,
    sel: &Selection,
    counters: &ReadCounters,
) -> Result<Vec<OutFile>> {
    let file_set = globs(&sel.files, "file")?;
    let tensor_set = globs(&sel.tensors, "tensor")?;
    let chosen: Vec<usize> =
        (0..m.files.len()).filter(|&i| file_set.as_ref().is_none_or(|g| g.is_match(&m.files[i].path))).collect();
    if chosen.is_empty() {
        return Err(Error::NotInVersion {
            version: id.short(),
            what: format!("file matching {}", sel.files.join(" ")),
            detail: Some(format!("its files are: {}", some(m.files.iter().map(|f| f.path.clone())))),
        });
    }
    let whole = |i: usize| {
        let f = &m.files[i];
        OutFile {
            file: i,
            rel: f.path.clone(),
            size: f.size,
            literal: Vec::new(),
            blocks: f.blocks(m.block_size).into_iter().map(|b| (b, b.offset)).collect(),
        }
    };
    let Some(tensor_set) = tensor_set else {
        return Ok(chosen.into_iter().map(whole).collect());
    };
    let mut out = Vec::new();
    let mut kept: BTreeSet<String> = BTreeSet::new();
    let mut kept_bytes = 0u64;
    let mut indexes = Vec::new();
    for i in chosen {
        let f = &m.files[i];
        match &f.content {
            FileContent::Safetensors { tensors, .. } => {
                let pick: Vec<usize> = (0..tensors.len()).filter(|&t| tensor_set.is_match(&tensors[t].name)).collect();
                if pick.is_empty() {
                    continue;
                }
                kept.extend(pick.iter().map(|&t| tensors[t].name.clone()));
                kept_bytes += pick.iter().map(|&t| tensors[t].len).sum::<u64>();
                out.push(cut_safetensors(store, id, m, i, &pick, counters)?);
            }
            FileContent::Blob { .. } if f.path.ends_with(".safetensors.index.json") && f.size <= MAX_INDEX => {
                indexes.push(out.len());
                out.push(whole(i));
            }
            FileContent::Blob { .. } => out.push(whole(i)),
        }
    }
    if kept.is_empty() {
        let names = m.files.iter().flat_map(|f| f.tensors().iter().map(|t| t.name.clone()));
        return Err(Error::NotInVersion {
            version: id.short(),
            what: format!("tensor matching {}", sel.tensors.join(" ")),
            detail: Some(format!("its tensors are: {}", some(names))),
        });
    }
    for k in indexes {
        let f = &m.files[out[k].file];
        let bytes = read_bytes(store, id, (f, super::levels_bound(m)), &f.blocks(m.block_size), counters)?;
        if let Some(cut) = cut_index(&bytes, &kept, kept_bytes) {
            out[k] = OutFile {
                file: out[k].file,
                rel: f.path.clone(),
                size: cut.len() as u64,
                literal: vec![(0, cut)],
                blocks: Vec::new(),
            };
        }
    }
    Ok(out)
}

/// Reads the given blocks of file `f` of version `id` (each within
/// `bound` decodes, the version's `max_levels`) and concatenates them.
fn read_bytes(
    store: &Store,
    id: Hash,
    (f, bound): (&FileEntry, u16),
    blocks: &[BlockRef],
    counters: &ReadCounters,
) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let (mut scratch, mut buf) = (Scratch::default(), Vec::new());
    for b in blocks {
        store
            .read_block_within(b.hash, bound, &mut buf, &mut scratch, Some(counters))
            .map_err(|e| block_error(id, f, b, e))?;
        check_len(store, id, f, b, &buf)?;
        out.extend_from_slice(&buf);
    }
    Ok(out)
}

/// File `i` of `m` holding only tensors `pick` (indexes in offset order).
fn cut_safetensors(
    store: &Store,
    id: Hash,
    m: &Manifest,
    i: usize,
    pick: &[usize],
    counters: &ReadCounters,
) -> Result<OutFile> {
    let f = &m.files[i];
    let blocks = f.blocks(m.block_size);
    let header_blocks: Vec<BlockRef> = blocks.iter().filter(|b| b.tensor.is_none()).copied().collect();
    let header = read_bytes(store, id, (f, super::levels_bound(m)), &header_blocks, counters)?;
    let bad = |why: &str| Error::corrupt(store.manifest_path(id), format!("version {}: {}: {why}", id.short(), f.path));
    let json = header.get(8..).ok_or_else(|| bad("header shorter than 8 bytes"))?;
    let old: Map<String, Value> =
        serde_json::from_slice(json.trim_ascii_end()).map_err(|e| bad(&format!("header is not a JSON object: {e}")))?;
    let tensors = f.tensors();
    let mut new = Map::new();
    if let Some(meta) = old.get("__metadata__") {
        new.insert("__metadata__".into(), meta.clone());
    }
    let mut starts = Vec::with_capacity(pick.len());
    let mut at = 0u64;
    for &t in pick {
        let te = &tensors[t];
        let mut entry = old.get(&te.name).cloned().ok_or_else(|| bad(&format!("header lacks tensor `{}`", te.name)))?;
        let Some(obj) = entry.as_object_mut() else {
            return Err(bad(&format!("header entry of `{}` is not an object", te.name)));
        };
        obj.insert("data_offsets".into(), Value::from(vec![at, at + te.len]));
        new.insert(te.name.clone(), entry);
        starts.push(at);
        at += te.len;
    }
    let mut body = serde_json::to_vec(&new).map_err(|e| bad(&format!("cannot write header: {e}")))?;
    // The official writer pads the header to 8 bytes with spaces, so that
    // the data that follows stays aligned.
    body.resize(body.len().next_multiple_of(8), b' ');
    let mut lit = (body.len() as u64).to_le_bytes().to_vec();
    lit.extend_from_slice(&body);
    let data_start = lit.len() as u64;
    let mut placed = Vec::new();
    for (&t, start) in pick.iter().zip(&starts) {
        let te = &tensors[t];
        for b in blocks.iter().filter(|b| b.tensor == Some(t)) {
            placed.push((*b, data_start + start + (b.offset - te.offset)));
        }
    }
    Ok(OutFile { file: i, rel: f.path.clone(), size: data_start + at, literal: vec![(0, lit)], blocks: placed })
}

/// A shard index listing only the tensors kept, with `metadata.total_size`
/// updated; `None` if it is not the usual JSON (then it is kept verbatim).
fn cut_index(bytes: &[u8], kept: &BTreeSet<String>, kept_bytes: u64) -> Option<Vec<u8>> {
    let mut v: Value = serde_json::from_slice(bytes).ok()?;
    let map = v.get_mut("weight_map")?.as_object_mut()?;
    map.retain(|k, _| kept.contains(k));
    if let Some(total) = v.get_mut("metadata").and_then(|m| m.get_mut("total_size")).filter(|t| t.is_number()) {
        *total = Value::from(kept_bytes);
    }
    let mut out = serde_json::to_vec_pretty(&v).ok()?;
    out.push(b'\n');
    Some(out)
}
