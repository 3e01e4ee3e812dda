//! Restoring a version: every block decoded in parallel and written at its
//! final offset; files appear under their names only when complete.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::Ordering;

use rayon::prelude::*;

use super::Progress;
use crate::error::IoContext;
use crate::hash::Hash;
use crate::store::manifest::{BlockRef, FileEntry, LayoutKind, Manifest, TensorEntry};
use crate::store::read::{ReadCounters, Scratch};
use crate::store::{Store, fsutil};
use crate::{Error, Result};

/// Suffix of files and directories being restored.
pub const PARTIAL_SUFFIX: &str = ".tdelta-partial";

/// Options of [`restore`].
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Replace the output if it exists.
    pub force: bool,
}

/// What [`restore`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreReport {
    /// The version restored.
    pub id: Hash,
    /// Bytes written.
    pub bytes: u64,
    /// Files written.
    pub files: usize,
    /// Blocks written.
    pub blocks: u64,
    /// Blocks decoded, counting every level of every delta chain.
    pub decoded: u64,
    /// Payload bytes read from packs.
    pub payload_bytes: u64,
    /// The deepest chain one block needed (1 = no delta).
    pub max_levels: u64,
}

/// Restores version `id` to `out`: a file for a file version, a directory
/// for a directory version.
pub fn restore(
    store: &Store,
    id: Hash,
    out: &Path,
    opts: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    let m = store.manifest(id)?;
    let counters = ReadCounters::default();
    if out.exists() && !opts.force {
        return Err(Error::InvalidArgument(format!(
            "{} already exists; choose another output or pass --force to replace it",
            out.display()
        )));
    }
    let staging = partial_path(out);
    fsutil::remove_any(&staging)?;
    let targets: Vec<PathBuf> = match m.layout {
        LayoutKind::File => {
            if m.files.len() != 1 {
                return Err(Error::corrupt(
                    store.root().join("versions"),
                    format!("file version {} lists {} files", id.short(), m.files.len()),
                ));
            }
            vec![staging.clone()]
        }
        LayoutKind::Directory => {
            fs::create_dir_all(&staging).at(&staging)?;
            m.files.iter().map(|f| safe_join(&staging, &f.path)).collect::<Result<_>>()?
        }
    };
    progress.begin("restoring", m.size());
    let res = write_files(store, id, &m, &targets, &counters, progress);
    progress.end();
    if let Err(e) = res {
        let _ = fsutil::remove_any(&staging);
        return Err(e);
    }
    if out.exists() {
        fsutil::remove_any(out)?;
    }
    fs::rename(&staging, out).at(out)?;
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        fsutil::sync_dir(parent)?;
    }
    Ok(RestoreReport {
        id,
        bytes: m.size(),
        files: m.files.len(),
        blocks: m.files.iter().map(|f| f.block_hashes().len() as u64).sum(),
        decoded: counters.decoded.load(Ordering::Relaxed),
        payload_bytes: counters.payload_bytes.load(Ordering::Relaxed),
        max_levels: counters.max_levels.load(Ordering::Relaxed),
    })
}

fn partial_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(PARTIAL_SUFFIX);
    PathBuf::from(s)
}

/// Joins a manifest path (`/`-separated, relative) under `root`, refusing
/// anything that could escape it.
fn safe_join(root: &Path, rel: &str) -> Result<PathBuf> {
    let p = Path::new(rel);
    let ok = !rel.is_empty() && !rel.contains('\\') && p.components().all(|c| matches!(c, Component::Normal(_)));
    if !ok {
        return Err(Error::corrupt(root, format!("manifest names an unsafe path `{rel}`")));
    }
    Ok(root.join(p))
}

/// Writes every file of `m` to its target path, blocks in parallel.
fn write_files(
    store: &Store,
    id: Hash,
    m: &Manifest,
    targets: &[PathBuf],
    counters: &ReadCounters,
    progress: &dyn Progress,
) -> Result<()> {
    let mut outs = Vec::with_capacity(targets.len());
    for (f, path) in m.files.iter().zip(targets) {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).at(parent)?;
        }
        let file = File::create(path).at(path)?;
        file.set_len(f.size).at(path)?;
        outs.push(file);
    }
    let jobs: Vec<(usize, BlockRef)> = m
        .files
        .iter()
        .enumerate()
        .flat_map(|(fi, f)| f.blocks(m.block_size).into_iter().map(move |b| (fi, b)))
        .collect();
    jobs.par_iter().try_for_each_init(
        || (Scratch::default(), Vec::new()),
        |(scratch, buf), (fi, b)| {
            let f = &m.files[*fi];
            store
                .read_block_within(b.hash, levels_bound(m), buf, scratch, Some(counters))
                .map_err(|e| block_error(id, f, b, e))?;
            check_len(id, f, b, buf)?;
            outs[*fi].write_all_at(buf, b.offset).at(&targets[*fi])?;
            fsutil::start_writeback(&outs[*fi], b.offset, buf.len() as u64);
            progress.advance(b.len);
            Ok::<(), Error>(())
        },
    )?;
    for (file, path) in outs.iter().zip(targets) {
        file.sync_all().at(path)?;
    }
    Ok(())
}

/// Most decodes a block of version `m` may need: what its manifest
/// records, else the deepest any policy writes.
pub(crate) fn levels_bound(m: &Manifest) -> u16 {
    m.max_levels.unwrap_or(crate::store::read::MAX_DEPTH + 1)
}

/// Puts a block error in the context of a version, file, tensor and block.
pub(crate) fn block_error(id: Hash, f: &FileEntry, b: &BlockRef, e: Error) -> Error {
    Error::InBlock {
        version: id.short(),
        file: f.path.clone(),
        what: super::manage::block_name(f, b),
        source: Box::new(e),
    }
}

/// A block whose bytes hash right but whose length differs from where the
/// manifest places it (only a forged store gets here).
fn check_len(id: Hash, f: &FileEntry, b: &BlockRef, buf: &[u8]) -> Result<()> {
    if buf.len() as u64 == b.len {
        return Ok(());
    }
    let e = Error::InvalidArgument(format!("block is {} bytes where the manifest expects {}", buf.len(), b.len));
    Err(block_error(id, f, b, e))
}

/// Reads one tensor of version `id` without restoring anything else: only
/// the tensor's blocks (and their delta bases) are read. Returns the
/// tensor's entry, the file it is in and its raw bytes.
pub fn read_tensor(store: &Store, id: Hash, name: &str) -> Result<(String, TensorEntry, Vec<u8>)> {
    let m = store.manifest(id)?;
    let (f, ti) = m
        .files
        .iter()
        .find_map(|f| f.tensors().iter().position(|t| t.name == name).map(|i| (f, i)))
        .ok_or_else(|| Error::InvalidArgument(format!("version {} has no tensor `{name}`", id.short())))?;
    let t = &f.tensors()[ti];
    let blocks: Vec<BlockRef> = f.blocks(m.block_size).into_iter().filter(|b| b.tensor == Some(ti)).collect();
    let len = usize::try_from(t.len)
        .map_err(|_| Error::InvalidArgument(format!("tensor `{name}` is too large for memory")))?;
    let mut out = vec![0u8; len];
    let mut slices: Vec<(&BlockRef, &mut [u8])> = Vec::with_capacity(blocks.len());
    let mut rest = out.as_mut_slice();
    for b in &blocks {
        let (head, tail) = rest.split_at_mut(b.len as usize);
        slices.push((b, head));
        rest = tail;
    }
    slices.into_par_iter().try_for_each_init(
        || (Scratch::default(), Vec::new()),
        |(scratch, buf), (b, dst)| {
            store
                .read_block_within(b.hash, levels_bound(&m), buf, scratch, None)
                .map_err(|e| block_error(id, f, b, e))?;
            check_len(id, f, b, buf)?;
            dst.copy_from_slice(buf);
            Ok::<(), Error>(())
        },
    )?;
    Ok((f.path.clone(), t.clone(), out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_join_refuses_escapes() {
        let root = Path::new("/r");
        assert_eq!(safe_join(root, "a/b.json").unwrap(), Path::new("/r/a/b.json"));
        for bad in ["", "../x", "a/../../x", "/etc/passwd", "a\\b", "./a"] {
            assert!(safe_join(root, bad).is_err(), "{bad}");
        }
    }
}
