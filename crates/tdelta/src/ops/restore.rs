//! Restoring a version: every block decoded in parallel and written at its
//! final offset; files appear under their names only when complete.
//!
//! The output is never deleted. A new output is staged beside it and
//! renamed into place; an existing directory receives the version's files
//! one by one (each staged, then renamed over its target), and nothing
//! else in it is touched; the store is never written.

mod select;
mod stream;
mod target;

use std::fs::{self, File, OpenOptions};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::Ordering;

use rayon::prelude::*;
use serde::Serialize;

use select::OutFile;
pub use select::Selection;
pub use stream::{write_file, write_tensor};
use target::{Existing, Guard, Staging};

use super::Progress;
use crate::Hash;
use crate::error::CorruptKind;
use crate::error::IoContext;
use crate::ops::blocks::{ReadCounters, Scratch};
use crate::store::manifest::{BlockRef, FileEntry, LayoutKind, Manifest, TensorEntry};
use crate::store::{Store, fsutil};
use crate::{Error, OutputRefusal, Result};

/// What the names of restore staging directories contain
/// (`.<name>.tdelta-partial-<pid>-<random>`).
pub const PARTIAL_TAG: &str = target::STAGING_TAG;

/// Options of [`restore`].
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Replace an existing output file (a file version), or write the
    /// version's files into an existing non-empty directory, replacing the
    /// files of the same names (a directory version). Nothing the version
    /// does not contain is ever removed.
    pub force: bool,
}

/// What [`restore`] did. Serialises to the JSON every front-end prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
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
    #[serde(rename = "decoded_blocks")]
    pub decoded: u64,
    /// Payload bytes read from packs.
    pub payload_bytes: u64,
    /// The deepest chain one block needed (1 = no delta).
    #[serde(rename = "max_chain")]
    pub max_levels: u64,
    /// Where the output went (a file version restored into an existing
    /// directory lands at `OUT/<its file name>`).
    pub out: PathBuf,
    /// Whether the version was stored lossily (its bytes are then the
    /// recorded reconstruction, not the original source).
    pub lossy: bool,
    /// Seconds the restore took.
    pub seconds: f64,
}

/// Restores version `id` to `out`: a file for a file version (inside `out`
/// when `out` is a directory), a directory for a directory version.
pub fn restore(
    store: &Store,
    id: Hash,
    out: &Path,
    opts: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    restore_parts(store, id, out, opts, &Selection::default(), progress)
}

/// [`restore`] of the parts of version `id` that `sel` selects.
pub fn restore_parts(
    store: &Store,
    id: Hash,
    out: &Path,
    opts: &RestoreOptions,
    sel: &Selection,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    let t0 = std::time::Instant::now();
    let m = store.manifest(id)?;
    m.check_paths().map_err(|e| Error::corrupt(store.manifest_path(id), e))?;
    if m.layout == LayoutKind::File && m.files.len() != 1 {
        return Err(Error::corrupt(
            store.manifest_path(id),
            format!("file version {} lists {} files", id.short(), m.files.len()),
        ));
    }
    let guard = Guard::new(store.root())?;
    let mut dest = target::normalize(out)?;
    guard.check(&dest)?;
    let counters = ReadCounters::default();
    let files = select::plan(store, id, &m, sel, &counters)?;
    let kind = target::existing(&dest)?;
    let layout = match (m.layout, kind) {
        (LayoutKind::File, Existing::Dir) => {
            let name = Path::new(&files[0].rel).file_name().map(PathBuf::from).unwrap_or_else(|| "restored".into());
            dest.push(name);
            guard.check(&dest)?;
            (LayoutKind::File, target::existing(&dest)?)
        }
        other => other,
    };
    let parent = dest.parent().map(Path::to_path_buf).unwrap_or_default();
    // Each arm gives the staging directory, the fresh paths the files are
    // written to, and the renames that then put them in place.
    let (stage, targets, renames): (Staging, Vec<PathBuf>, Vec<(PathBuf, PathBuf)>) = match layout {
        (_, Existing::Other) => {
            return Err(refused(&dest, OutputRefusal::Special));
        }
        (LayoutKind::File, Existing::Dir) => {
            return Err(refused(&dest, OutputRefusal::IsDirectory));
        }
        (LayoutKind::File, Existing::File | Existing::Symlink) | (LayoutKind::Directory, Existing::Dir)
            if !opts.force && !is_empty_dir(&dest) =>
        {
            let directory = layout.0 == LayoutKind::Directory;
            return Err(refused(&dest, OutputRefusal::Exists { directory }));
        }
        (LayoutKind::Directory, Existing::File | Existing::Symlink) => {
            return Err(refused(&dest, OutputRefusal::NotDirectory));
        }
        (LayoutKind::File, _) => {
            fs::create_dir_all(&parent).at(&parent)?;
            target::clean_leftovers(&parent);
            let stage = Staging::create(&parent, &file_name(&dest))?;
            let tmp = stage.path().join("file");
            (stage, vec![tmp.clone()], vec![(tmp, dest.clone())])
        }
        (LayoutKind::Directory, Existing::Nothing) => {
            fs::create_dir_all(&parent).at(&parent)?;
            target::clean_leftovers(&parent);
            let stage = Staging::create(&parent, &file_name(&dest))?;
            let tree = stage.path().join("tree");
            fs::create_dir(&tree).at(&tree)?;
            make_empty_dirs(&m, sel, &tree)?;
            let targets = files.iter().map(|f| safe_join(&tree, &f.rel)).collect::<Result<_>>()?;
            (stage, targets, vec![(tree, dest.clone())])
        }
        (LayoutKind::Directory, Existing::Dir) => {
            target::clean_leftovers(&dest);
            let finals = files.iter().map(|f| safe_join(&dest, &f.rel)).collect::<Result<Vec<_>>>()?;
            for p in &finals {
                check_merge_target(&guard, &dest, p, false)?;
            }
            for d in empty_dirs(&m, sel) {
                check_merge_target(&guard, &dest, &safe_join(&dest, d)?, true)?;
            }
            make_empty_dirs(&m, sel, &dest)?;
            let stage = Staging::create(&dest, "restore")?;
            let targets: Vec<PathBuf> = (0..finals.len()).map(|i| stage.path().join(i.to_string())).collect();
            let renames = targets.iter().cloned().zip(finals).collect();
            (stage, targets, renames)
        }
    };
    write_all(store, id, &m, &files, &targets, &counters, progress)?;
    for (from, to) in &renames {
        if let Some(p) = to.parent() {
            fs::create_dir_all(p).at(p)?;
        }
        if opts.force {
            fs::rename(from, to).at(to)?;
        } else {
            place_new(from, to)?;
        }
        if let Some(p) = to.parent() {
            fsutil::sync_dir(p)?;
        }
    }
    drop(stage);
    Ok(RestoreReport {
        id,
        bytes: files.iter().map(|f| f.size).sum(),
        files: files.len(),
        blocks: files.iter().map(|f| f.blocks.len() as u64).sum(),
        decoded: counters.decoded.load(Ordering::Relaxed),
        payload_bytes: counters.payload_bytes.load(Ordering::Relaxed),
        max_levels: counters.max_levels.load(Ordering::Relaxed),
        out: dest,
        lossy: m.lossy.is_some(),
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// The blocks a restore of the parts of version `id` that `sel` selects
/// reads (each once, delta bases not included): what a remote read
/// (`remote::unpack`) fetches ahead of the restore.
pub(crate) fn needed_blocks(store: &Store, id: Hash, sel: &Selection) -> Result<Vec<Hash>> {
    let m = store.manifest(id)?;
    let files = select::plan(store, id, &m, sel, &ReadCounters::default())?;
    let mut seen = std::collections::HashSet::new();
    Ok(files.iter().flat_map(|f| f.blocks.iter().map(|(b, _)| b.hash)).filter(|h| seen.insert(*h)).collect())
}

/// Moves the staged `from` to `to`, which was free when the restore
/// began, without replacing anything that appeared there since: a file is
/// hard-linked (which fails on an existing name) where the file system
/// allows it; a directory rename fails on anything but an empty directory.
fn place_new(from: &Path, to: &Path) -> Result<()> {
    if !from.is_dir() {
        match fs::hard_link(from, to) {
            Ok(()) => return fs::remove_file(from).at(from),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(refused(to, OutputRefusal::Appeared));
            }
            Err(_) if target::existing(to)? != Existing::Nothing => {
                return Err(refused(to, OutputRefusal::Appeared));
            }
            Err(_) => {}
        }
    }
    fs::rename(from, to).at(to)
}

/// The refusal of output `path`.
pub(super) fn refused(path: &Path, refusal: OutputRefusal) -> Error {
    Error::OutputRefused { path: path.to_path_buf(), refusal }
}

fn file_name(p: &Path) -> String {
    p.file_name().map_or_else(|| "out".into(), |n| n.to_string_lossy().into_owned())
}

fn is_empty_dir(p: &Path) -> bool {
    fs::read_dir(p).is_ok_and(|mut rd| rd.next().is_none())
}

/// A file of the version written into the existing directory `root` at
/// `path`: refused when it would land in the store, replace a directory,
/// or go through a symlink or a file on the way.
fn check_merge_target(guard: &Guard, root: &Path, path: &Path, is_dir: bool) -> Result<()> {
    guard.check(path)?;
    let mut cur = root.to_path_buf();
    let rel = path.strip_prefix(root).unwrap_or(path);
    let n = rel.components().count();
    for (i, c) in rel.components().enumerate() {
        cur.push(c);
        let last = i + 1 == n && !is_dir;
        match (target::existing(&cur)?, last) {
            (Existing::Nothing, _) => return Ok(()),
            (Existing::Dir, false) | (Existing::File | Existing::Symlink, true) => {}
            (Existing::Dir, true) => {
                return Err(refused(&cur, OutputRefusal::DirectoryInTheWay));
            }
            (Existing::Symlink, false) => {
                return Err(refused(&cur, OutputRefusal::Symlink));
            }
            (_, false) => {
                return Err(refused(&cur, OutputRefusal::FileInTheWay));
            }
            (Existing::Other, true) => {
                return Err(refused(&cur, OutputRefusal::Special));
            }
        }
    }
    Ok(())
}

/// Joins a manifest path (`/`-separated, relative) under `root`, refusing
/// anything that could escape it.
fn safe_join(root: &Path, rel: &str) -> Result<PathBuf> {
    let p = Path::new(rel);
    let ok = crate::relpath::problem(rel).is_none() && p.components().all(|c| matches!(c, Component::Normal(_)));
    if !ok {
        return Err(Error::corrupt(root, format!("manifest names an unsafe path `{}`", rel.escape_debug())));
    }
    Ok(root.join(p))
}

/// Writes every planned file to its (fresh) target path, blocks in
/// parallel, and fsyncs them.
fn write_all(
    store: &Store,
    id: Hash,
    m: &Manifest,
    files: &[OutFile],
    targets: &[PathBuf],
    counters: &ReadCounters,
    progress: &dyn Progress,
) -> Result<()> {
    progress.begin("restoring", files.iter().map(|f| f.size).sum());
    let res = write_files(store, id, m, files, targets, counters, progress);
    progress.end();
    res
}

/// The empty directories a restore of `sel` creates: those of a directory
/// version, on whole restores only (a selection names files).
fn empty_dirs<'m>(m: &'m Manifest, sel: &Selection) -> &'m [String] {
    if m.layout != LayoutKind::Directory || !sel.files.is_empty() || !sel.tensors.is_empty() {
        return &[];
    }
    &m.empty_dirs
}

/// Creates the empty directories a directory version records under
/// `root` (whole restores only: a selection names files, not directories).
fn make_empty_dirs(m: &Manifest, sel: &Selection, root: &Path) -> Result<()> {
    for d in empty_dirs(m, sel) {
        let path = safe_join(root, d)?;
        fs::create_dir_all(&path).at(&path)?;
    }
    Ok(())
}

/// Gives a restored file the permission bits its entry records, if any
/// (on systems that have them).
fn set_mode(file: &File, f: &FileEntry, path: &Path) -> Result<()> {
    match f.mode {
        Some(mode) => crate::portable::set_mode(file, mode).at(path),
        None => Ok(()),
    }
}

fn write_files(
    store: &Store,
    id: Hash,
    m: &Manifest,
    files: &[OutFile],
    targets: &[PathBuf],
    counters: &ReadCounters,
    progress: &dyn Progress,
) -> Result<()> {
    let mut outs = Vec::with_capacity(targets.len());
    for (f, path) in files.iter().zip(targets) {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).at(parent)?;
        }
        let file: File = OpenOptions::new().write(true).create_new(true).open(path).at(path)?;
        file.set_len(f.size).at(path)?;
        for (off, bytes) in &f.literal {
            crate::portable::write_all_at(&file, bytes, *off).at(path)?;
            progress.advance(bytes.len() as u64);
        }
        outs.push(file);
    }
    let jobs: Vec<(usize, BlockRef, u64)> =
        files.iter().enumerate().flat_map(|(fi, f)| f.blocks.iter().map(move |(b, at)| (fi, *b, *at))).collect();
    jobs.par_iter().try_for_each_init(
        || (Scratch::default(), Vec::new()),
        |(scratch, buf), (fi, b, at)| {
            if progress.cancelled() {
                return Err(crate::progress::interrupted());
            }
            let f = &m.files[files[*fi].file];
            store
                .read_block_within(b.hash, levels_bound(m), buf, scratch, Some(counters))
                .map_err(|e| block_error(id, f, b, e))?;
            check_len(store, id, f, b, buf)?;
            crate::portable::write_all_at(&outs[*fi], buf, *at).at(&targets[*fi])?;
            fsutil::start_writeback(&outs[*fi], *at, buf.len() as u64);
            progress.advance(b.len);
            Ok::<(), Error>(())
        },
    )?;
    for ((file, path), f) in outs.iter().zip(targets).zip(files) {
        set_mode(file, &m.files[f.file], path)?;
        file.sync_all().at(path)?;
    }
    // Their names too: a staged tree is renamed whole, so its own
    // directories must be durable first.
    let dirs: std::collections::BTreeSet<&Path> = targets.iter().filter_map(|p| p.parent()).collect();
    for d in dirs {
        fsutil::sync_dir(d)?;
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
fn check_len(store: &Store, id: Hash, f: &FileEntry, b: &BlockRef, buf: &[u8]) -> Result<()> {
    if buf.len() as u64 == b.len {
        return Ok(());
    }
    let e = Error::corrupt_as(
        CorruptKind::Invalid,
        store.manifest_path(id),
        format!("block is {} bytes where the manifest expects {}", buf.len(), b.len),
    );
    Err(block_error(id, f, b, e))
}

/// Reads one tensor of version `id` without restoring anything else: only
/// the tensor's blocks (and their delta bases) are read. Returns the
/// tensor's entry, the file it is in and its raw bytes.
pub fn read_tensor(store: &Store, id: Hash, name: &str) -> Result<(String, TensorEntry, Vec<u8>)> {
    let mut out = Vec::new();
    let (file, t) = write_tensor(store, id, name, &mut out)?;
    Ok((file, t, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn place_new_never_replaces_what_appeared() {
        let dir = tempfile::tempdir().unwrap();
        let (from, to) = (dir.path().join("staged"), dir.path().join("out"));
        fs::write(&from, b"restored").unwrap();
        fs::write(&to, b"user").unwrap();
        let e = place_new(&from, &to).unwrap_err().to_string();
        assert!(e.contains("appeared while restoring"), "{e}");
        assert_eq!(fs::read(&to).unwrap(), b"user");
        fs::remove_file(&to).unwrap();
        place_new(&from, &to).unwrap();
        assert_eq!(fs::read(&to).unwrap(), b"restored");
        assert!(!from.exists());
    }

    #[test]
    fn safe_join_refuses_escapes() {
        let root = Path::new("/r");
        assert_eq!(safe_join(root, "a/b.json").unwrap(), Path::new("/r/a/b.json"));
        for bad in ["", "../x", "a/../../x", "/etc/passwd", "a\\b", "./a"] {
            assert!(safe_join(root, bad).is_err(), "{bad}");
        }
    }
}
