//! Packing a checkpoint into the store as a new version.
//!
//! The source is cut into runs (the verbatim header of a safetensors file,
//! each tensor, each blob file), each run into element-aligned blocks
//! ([`plan`]). The files are read in windows of at most
//! [`PackOptions::window`] bytes; within a window, blocks are read (`pread`
//! into a per-thread buffer), hashed and encoded in parallel ([`encode`],
//! its base chosen by [`base`]), each from the one copy it hashed; a writer
//! thread ([`sink`]) appends the new ones, in order, to pack files while the
//! next window is encoded (a bounded pipeline: at most two windows of
//! encoded payloads wait). Before the manifest is written every source file
//! is checked to be as it was when opened (size, times, inode): a file that
//! changed meanwhile fails the pack and the packs written are taken back.
//! The manifest lands after its packs, `HEAD` moves last ([`commit`]).

mod base;
mod encode;
mod plan;
mod sink;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

use self::base::NearPicks;
use self::encode::{Tally, encode_block};
use self::plan::{Job, Plan, Run, windows};
use super::Progress;
use super::policy::Policy;
use crate::Hash;
use crate::checkpoint::{self, FileKind, Layout};
use crate::codec::EncodeParams;
use crate::lossy::LossyOptions;
use crate::ops::blocks::Scratch;
use crate::store::manifest::{LayoutKind, Manifest, VersionStats};
use crate::store::{Store, WriteTxn};
use crate::{Error, Result};

/// Which version serves as the delta base.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum BaseChoice {
    /// The version `HEAD` points to (none in an empty store).
    #[default]
    Head,
    /// A given version.
    Version(Hash),
    /// No base: content dedup only.
    None,
}

/// Options of [`pack`].
#[derive(Debug, Clone)]
pub struct PackOptions {
    /// Free text describing the version.
    pub message: String,
    /// Who packs it (default: [`Store::author`], then `TDELTA_AUTHOR`,
    /// then `$USER@host`).
    pub author: Option<String>,
    /// Free key/value metadata.
    pub meta: BTreeMap<String, String>,
    /// Metrics (e.g. eval scores).
    pub metrics: BTreeMap<String, serde_json::Value>,
    /// The delta base.
    pub base: BaseChoice,
    /// The chain-depth policy.
    pub policy: Policy,
    /// Encoder settings.
    pub encode: EncodeParams,
    /// A tag (ref) to point at the new version.
    pub tag: Option<String>,
    /// Move the tag even if it exists.
    pub force_tag: bool,
    /// Bytes of source mapped and encoded at a time.
    pub window: u64,
    /// Opt-in lossy storage of float tensors (quantized deltas); `None`
    /// (the default) keeps every byte exact. A version with any lossy
    /// block is marked by [`Manifest::lossy`].
    pub lossy: Option<LossyOptions>,
    /// Only files matching one of these glob patterns (when not empty).
    pub include: Vec<String>,
    /// Files and directories matching one of these glob patterns are left
    /// out (besides the default skips and the store's own directory).
    pub exclude: Vec<String>,
}

impl Default for PackOptions {
    fn default() -> Self {
        PackOptions {
            message: String::new(),
            author: None,
            meta: BTreeMap::new(),
            metrics: BTreeMap::new(),
            base: BaseChoice::Head,
            policy: Policy::default(),
            encode: EncodeParams::default(),
            tag: None,
            force_tag: false,
            window: 64 << 20,
            lossy: None,
            include: Vec::new(),
            exclude: Vec::new(),
        }
    }
}

/// What [`pack`] did. Serialises to the JSON every front-end prints: the
/// id, the version's storage figures, the times, the tag, the files left
/// out and whether it is lossy (not the manifest or the packs).
#[derive(Debug, Clone, Serialize)]
pub struct PackReport {
    /// The new version.
    pub id: Hash,
    /// Its manifest.
    #[serde(skip)]
    pub manifest: Manifest,
    /// Its storage figures (a copy of the manifest's).
    #[serde(flatten)]
    pub stats: VersionStats,
    /// Packs written.
    #[serde(skip)]
    pub packs: Vec<Hash>,
    /// Seconds spent packing, not counting the wait for the store's lock.
    pub seconds: f64,
    /// Seconds spent waiting for another writer's lock.
    pub lock_wait_seconds: f64,
    /// The tag pointed at the new version, if one was asked for.
    pub tag: Option<String>,
    /// Files of the source directory left out (default skips, the store's
    /// directory, include/exclude).
    #[serde(rename = "skipped_files")]
    pub skipped: u64,
    /// Whether some tensors were stored lossily.
    pub lossy: bool,
}

/// Packs the checkpoint at `source` as a new version and moves `HEAD` (and
/// the tag, if asked) to it.
pub fn pack(store: &mut Store, source: &Path, opts: &PackOptions, progress: &dyn Progress) -> Result<PackReport> {
    let t0 = Instant::now();
    let selection = checkpoint::Selection {
        include: opts.include.clone(),
        exclude: opts.exclude.clone(),
        skip_dirs: vec![store.root().to_path_buf()],
    };
    let ckpt = checkpoint::open_with(source, &selection)?;
    pack_from(store, &ckpt, checkpoint::Source::Files, t0, opts, progress)
}

/// [`pack`] of a safetensors file held in memory (no file is written):
/// the version is the one packing the same bytes from a file gives.
pub fn pack_memory(
    store: &mut Store,
    file: &checkpoint::MemoryFile<'_>,
    opts: &PackOptions,
    progress: &dyn Progress,
) -> Result<PackReport> {
    let t0 = Instant::now();
    pack_from(store, &file.checkpoint(), checkpoint::Source::Memory(file), t0, opts, progress)
}

/// Packs `ckpt`, its bytes read from `src`.
fn pack_from(
    store: &mut Store,
    ckpt: &checkpoint::Checkpoint,
    src: checkpoint::Source<'_>,
    t0: Instant,
    opts: &PackOptions,
    progress: &dyn Progress,
) -> Result<PackReport> {
    let waited_before = store.lock_waited();
    if opts.window < u64::from(store.config().block_size) {
        return Err(Error::InvalidArgument("pack window is smaller than a block".into()));
    }
    let txn = store.begin_write()?;
    store.load_packs()?;
    if let Some(tag) = &opts.tag {
        crate::store::refs::validate_new_ref_name(tag)?;
        if !opts.force_tag
            && let Some(old) = store.read_ref(tag)?
        {
            return Err(Error::AlreadyExists { what: format!("tag `{tag}` (it points to {})", old.short()) });
        }
    }
    let head = store.read_ref("HEAD")?;
    let base_id = match &opts.base {
        BaseChoice::Head => head,
        BaseChoice::Version(id) => Some(*id),
        BaseChoice::None => None,
    };
    if let Some(l) = &opts.lossy {
        l.validate()?;
    }
    let base = base_id.map(|id| store.manifest(id)).transpose()?;
    let plan = Plan::new(&ckpt.files, store.config().block_size, base.as_ref(), opts.lossy.as_ref());
    let total: u64 = ckpt.files.iter().map(|f| f.len).sum();
    let mut tally = Tally::new(&plan.runs, |ri| plan.blocks(ri), total);

    progress.begin("packing", total);
    let packs = run(store, &txn, ckpt, src, &plan, &mut tally, opts, progress);
    progress.end();
    let packs = packs?;
    // The last point to stop at: past it, the manifest and ref land.
    if progress.cancelled() {
        txn.discard_packs(store, &packs);
        let _ = store.load_packs();
        return Err(crate::progress::interrupted());
    }
    // A source that changed since it was opened may have given blocks of
    // two different states: refuse the version.
    if let Err(e) = ckpt.files.iter().try_for_each(|f| src.check_unchanged(f)) {
        txn.discard_packs(store, &packs);
        let _ = store.load_packs();
        return Err(e);
    }
    // Until the manifest lands, a failure takes back the packs written.
    let manifest = match build_manifest(store, ckpt, &plan, tally, head, base_id, opts) {
        Ok(m) => m,
        Err(e) => {
            txn.discard_packs(store, &packs);
            let _ = store.load_packs();
            return Err(e);
        }
    };
    let id = commit(store, &txn, &manifest, head, &packs, opts)?;
    let waited = store.lock_waited().saturating_sub(waited_before);
    Ok(PackReport {
        id,
        stats: manifest.stats.clone(),
        lossy: manifest.lossy.is_some(),
        manifest,
        packs,
        seconds: t0.elapsed().saturating_sub(waited).as_secs_f64(),
        lock_wait_seconds: waited.as_secs_f64(),
        tag: opts.tag.clone(),
        skipped: ckpt.skipped,
    })
}

/// Reads the source window by window, encodes each window's blocks in
/// parallel and hands the new ones to the sink. Returns the packs written;
/// on an error, none are left.
#[allow(clippy::too_many_arguments)]
fn run(
    store: &Store,
    txn: &WriteTxn,
    ckpt: &checkpoint::Checkpoint,
    src: checkpoint::Source<'_>,
    plan: &Plan,
    tally: &mut Tally,
    opts: &PackOptions,
    progress: &dyn Progress,
) -> Result<Vec<Hash>> {
    let (tx, rx) = sink::channel();
    // Payload allocations come back from the writer: a window's worth.
    let (done_with, reuse) = sink::recycling((opts.window / u64::from(plan.block_size).max(1)).clamp(1, 4096) as usize);
    let buffers = BufferPool::new(rayon::current_num_threads());
    let picks = NearPicks::new(plan.runs.len());
    thread::scope(|s| {
        let writer = s.spawn(|| sink::write_packs(rx, store, txn, &done_with));
        let produced = (|| -> Result<()> {
            for (fi, f) in ckpt.files.iter().enumerate() {
                let file = src.open(f)?;
                if let Some(fd) = file.as_file() {
                    advise_sequential(fd);
                }
                let jobs = plan.jobs(fi);
                for window in windows(&jobs, opts.window) {
                    if progress.cancelled() {
                        return Err(crate::progress::interrupted());
                    }
                    let start = window[0].offset;
                    let last = window[window.len() - 1];
                    let span = last.offset + last.len - start;
                    let seen = &tally.seen;
                    let outcomes: Vec<Result<_>> = window
                        .par_iter()
                        .map_init(
                            || buffers.take(),
                            |held, job| {
                                let Buffers { scratch, basebuf, bytes } = held.get();
                                // One copy of the block: what is hashed is
                                // what is encoded, whatever the file does.
                                bytes.resize(job.len as usize, 0);
                                file.read_at(job.offset, bytes)?;
                                let run = &plan.runs[job.run];
                                // Block `i` of this run, for its near:K pick.
                                let read = |i: usize, buf: &mut Vec<u8>| {
                                    let (off, len) = crate::block::ranges(run.len, plan.block_size, run.dtype.align())
                                        .nth(i)
                                        .ok_or_else(|| Error::Internal(format!("no block {i} in run")))?;
                                    buf.resize(len as usize, 0);
                                    file.read_at(run.offset + off, buf)
                                };
                                let spare = reuse.try_recv().unwrap_or_default();
                                encode_block(
                                    store,
                                    run,
                                    job,
                                    bytes,
                                    seen,
                                    opts,
                                    (&picks, &read),
                                    scratch,
                                    basebuf,
                                    spare,
                                )
                                .map_err(|e| in_block(&ckpt.root, f, run, job, e))
                            },
                        )
                        .collect();
                    let mut batch = Vec::new();
                    for (job, o) in window.iter().zip(outcomes) {
                        let (o, note) = o?;
                        batch.extend(tally.add(store, job, o, note));
                    }
                    if !batch.is_empty() && tx.send(batch).is_err() {
                        // The writer stopped: its error is reported below.
                        return Ok(());
                    }
                    progress.advance(span);
                }
            }
            Ok(())
        })();
        drop(tx);
        let written = writer.join().unwrap_or_else(|_| Err(Error::Internal("pack writer thread panicked".into())));
        match (produced, written) {
            (Err(e), Ok(packs)) => {
                txn.discard_packs(store, &packs);
                Err(e)
            }
            (Err(e), _) | (Ok(()), Err(e)) => Err(e),
            (Ok(()), Ok(packs)) => Ok(packs),
        }
    })
}

/// The buffers one encoding worker reads a block and its base into.
#[derive(Default)]
struct Buffers {
    scratch: Scratch,
    basebuf: Vec<u8>,
    bytes: Vec<u8>,
}

/// One set of [`Buffers`] per worker thread, kept for the whole pack: a
/// worker reuses the pages it touched in the windows before instead of
/// faulting in (and zeroing) fresh ones for every piece of work rayon
/// splits a window into.
struct BufferPool(Vec<Mutex<Buffers>>);

/// The buffers a piece of work holds: its thread's, or fresh ones when
/// that thread already holds them further up its stack (rayon ran this
/// piece while waiting on another).
enum Held<'a> {
    Pooled(MutexGuard<'a, Buffers>),
    Fresh(Buffers),
}

impl BufferPool {
    fn new(threads: usize) -> Self {
        BufferPool((0..threads.max(1)).map(|_| Mutex::default()).collect())
    }

    fn take(&self) -> Held<'_> {
        let slot = rayon::current_thread_index().unwrap_or(0) % self.0.len();
        match self.0[slot].try_lock() {
            Ok(g) => Held::Pooled(g),
            Err(_) => Held::Fresh(Buffers::default()),
        }
    }
}

impl Held<'_> {
    fn get(&mut self) -> &mut Buffers {
        match self {
            Held::Pooled(g) => g,
            Held::Fresh(b) => b,
        }
    }
}

/// The new version's manifest (after reloading the indexes, for its
/// `max_levels`).
fn build_manifest(
    store: &mut Store,
    ckpt: &checkpoint::Checkpoint,
    plan: &Plan,
    tally: Tally,
    head: Option<Hash>,
    base_id: Option<Hash>,
    opts: &PackOptions,
) -> Result<Manifest> {
    // Every run got all its blocks (the writer accepted every batch).
    for (ri, h) in tally.run_hashes.iter().enumerate() {
        if h.len() as u64 != plan.blocks(ri) {
            return Err(Error::Internal("pack stopped before the end of the source".into()));
        }
    }
    let lossy = opts.lossy.as_ref().and_then(|l| tally.lossy_record(l, ckpt, &plan.runs, store.hasher()));
    let mut manifest = Manifest {
        parent: head,
        base: base_id,
        created: crate::store::now(),
        author: opts.author.clone().unwrap_or_else(|| store.who()),
        message: opts.message.clone(),
        meta: opts.meta.clone(),
        metrics: opts.metrics.clone(),
        layout: match ckpt.layout {
            Layout::File => LayoutKind::File,
            Layout::Directory => LayoutKind::Directory,
        },
        block_size: plan.block_size,
        policy: opts.policy.to_string(),
        max_levels: None,
        lossy,
        files: plan.files(&ckpt.files, &tally.run_hashes, store.hasher()),
        empty_dirs: ckpt.empty_dirs.clone(),
        stats: tally.stats,
    };
    // The walk refused such names already; this guards the rule itself.
    manifest.check_paths().map_err(|e| Error::checkpoint(&ckpt.root, e))?;
    store.load_packs()?;
    let mut levels = 0u16;
    for f in &manifest.files {
        for h in f.block_hashes() {
            levels = levels.max(store.entry(h)?.depth.saturating_add(1));
        }
    }
    manifest.max_levels = Some(levels);
    Ok(manifest)
}

/// The commit of a pack, once its packs have landed: writes the manifest,
/// moves `HEAD`, then the tag (each move audited). Until `HEAD` has moved,
/// a failure takes back the manifest (when this pack wrote it) and `packs`.
fn commit(
    store: &mut Store,
    txn: &WriteTxn,
    manifest: &Manifest,
    head: Option<Hash>,
    packs: &[Hash],
    opts: &PackOptions,
) -> Result<Hash> {
    let (id, new_manifest) = match txn.write_manifest(store, manifest) {
        Ok(v) => v,
        Err(e) => {
            txn.discard_packs(store, packs);
            let _ = store.load_packs();
            return Err(e);
        }
    };
    let why = if opts.message.is_empty() { "pack".to_string() } else { opts.message.clone() };
    if let Err(e) = txn.move_ref(store, "HEAD", Some(id), "pack", &why) {
        // HEAD did not move (no space for it, say): take the version back.
        if new_manifest && store.read_ref("HEAD").ok() == Some(head) {
            let _ = txn.delete_manifest(store, id);
            txn.discard_packs(store, packs);
            let _ = store.load_packs();
        }
        return Err(e);
    }
    if let Some(tag) = &opts.tag {
        txn.move_ref(store, tag, Some(id), "tag", &why)?;
    }
    Ok(id)
}

/// Tells the kernel the file will be read front to back (larger
/// read-ahead). Only a hint: failures are ignored.
fn advise_sequential(file: &std::fs::File) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a valid open descriptor; the call only sets read-ahead
        // advice and touches no memory.
        let _ = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = file;
}

/// Puts a block-level error in context: which source file, tensor, block.
fn in_block(root: &Path, f: &checkpoint::SourceFile, run: &Run, job: &Job, e: Error) -> Error {
    let what = match &f.kind {
        FileKind::Safetensors(h) if run.offset >= h.data_start => h
            .tensors
            .iter()
            .find(|t| t.start == run.offset && t.len == run.len)
            .map_or_else(|| format!("block {}", job.index), |t| format!("tensor `{}` block {}", t.name, job.index)),
        FileKind::Safetensors(_) => format!("header block {}", job.index),
        FileKind::Blob => format!("block {}", job.index),
    };
    Error::InBlock {
        version: format!("packing {}", root.display()),
        file: f.rel_path.clone(),
        what,
        source: Box::new(e),
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_near;
