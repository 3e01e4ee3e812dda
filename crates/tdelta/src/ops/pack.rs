//! Packing a checkpoint into the store as a new version.
//!
//! The source is cut into runs (the verbatim header of a safetensors file,
//! each tensor, each blob file), each run into element-aligned blocks. The
//! files are read in windows of at most [`PackOptions::window`] bytes;
//! within a window, blocks are read (`pread` into a per-thread buffer),
//! hashed and encoded in parallel, each from the one copy it hashed; a writer
//! thread appends the new ones, in order, to pack files while the next
//! window is encoded (a bounded pipeline: at most two windows of encoded
//! payloads wait). Before the manifest is written every source file is
//! checked to be as it was when opened (size, times, inode): a file that
//! changed meanwhile fails the pack and the packs written are taken back.
//! The manifest lands after its packs, `HEAD` moves last.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::thread;

use rayon::prelude::*;

use super::Progress;
use super::policy::{Policy, near_base};
use crate::Hash;
use crate::checkpoint::{self, FileKind, Layout};
use crate::codec::{self, EncodeParams};
use crate::lossy::{self, Bits, ErrorSums, LossyOptions};
use crate::store::Store;
use crate::store::manifest::{FileContent, FileEntry, LayoutKind, Manifest, TensorEntry, VersionStats};
use crate::store::pack::{BlockMeta, PackWriter};
use crate::store::read::Scratch;
use crate::{DType, Error, Result};

/// A pack file is closed and a new one started past this size.
const PACK_ROLL_BYTES: u64 = 1 << 30;

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

/// What [`pack`] did.
#[derive(Debug, Clone)]
pub struct PackReport {
    /// The new version.
    pub id: Hash,
    /// Its manifest.
    pub manifest: Manifest,
    /// Packs written.
    pub packs: Vec<Hash>,
    /// Files of the source directory left out (default skips, the store's
    /// directory, include/exclude).
    pub skipped: u64,
}

/// One run of bytes cut into blocks: a header, a tensor or a blob.
struct Run<'a> {
    file: usize,
    dtype: DType,
    offset: u64,
    len: u64,
    /// The blocks of the same run in the base version.
    base: Option<&'a [Hash]>,
    /// The tensor's name (tensor runs only).
    name: Option<&'a str>,
    /// Whether its blocks may be stored lossily.
    lossy: bool,
}

/// One block to hash and maybe encode.
#[derive(Clone, Copy)]
struct Job {
    run: usize,
    index: usize,
    offset: u64,
    len: u64,
}

/// A block new to the store, encoded.
struct NewBlock {
    meta: BlockMeta,
    payload: Vec<u8>,
}

enum Outcome {
    Known(Hash),
    New(NewBlock),
}

/// What a block of a lossy-eligible run adds to its tensor's figures.
struct LossyNote {
    /// Hash of the original bytes.
    orig: Hash,
    /// The width it was stored with, when lossy.
    bits: Option<Bits>,
    /// Its error sums.
    sums: ErrorSums,
}

/// Lossy figures of one tensor, accumulated in block order.
#[derive(Default)]
struct RunLossy {
    orig: Vec<Hash>,
    sums: ErrorSums,
    /// Blocks stored with int2, int4, int8 codes, and exactly.
    blocks: [u64; 4],
}

/// Packs the checkpoint at `source` as a new version and moves `HEAD` (and
/// the tag, if asked) to it.
pub fn pack(store: &mut Store, source: &Path, opts: &PackOptions, progress: &dyn Progress) -> Result<PackReport> {
    let selection = checkpoint::Selection {
        include: opts.include.clone(),
        exclude: opts.exclude.clone(),
        skip_dirs: vec![store.root().to_path_buf()],
    };
    let ckpt = checkpoint::open_with(source, &selection)?;
    if opts.window < u64::from(store.config().block_size) {
        return Err(Error::InvalidArgument("pack window is smaller than a block".into()));
    }
    let _lock = store.lock()?;
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
    let block_size = store.config().block_size;

    // Runs, with their base blocks.
    let mut base_tensors: HashMap<&str, &TensorEntry> = HashMap::new();
    let mut base_files: HashMap<&str, &FileEntry> = HashMap::new();
    if let Some(b) = &base {
        for f in &b.files {
            base_files.insert(&f.path, f);
            for t in f.tensors() {
                base_tensors.entry(&t.name).or_insert(t);
            }
        }
    }
    let mut runs: Vec<Run> = Vec::new();
    for (fi, f) in ckpt.files.iter().enumerate() {
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
                        lossy: opts.lossy.as_ref().is_some_and(|l| lossy::supports(t.dtype) && !l.keeps_exact(&t.name)),
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
    let mut run_hashes: Vec<Vec<Hash>> = runs
        .iter()
        .map(|r| Vec::with_capacity(crate::block::count(r.len, block_size, r.dtype.align()) as usize))
        .collect();
    let mut run_lossy: Vec<Option<RunLossy>> = runs.iter().map(|r| r.lossy.then(RunLossy::default)).collect();

    let total: u64 = ckpt.files.iter().map(|f| f.len).sum();
    progress.begin("packing", total);

    let store_ref: &Store = store;
    let (tx, rx) = crossbeam_channel::bounded::<Vec<NewBlock>>(2);
    let tmp_dir = store_ref.tmp_dir();
    let packs_dir = store_ref.packs_dir();
    let mut stats = VersionStats { raw_bytes: total, ..VersionStats::default() };

    let result = thread::scope(|s| {
        let writer = s.spawn(move || write_packs(rx, &tmp_dir, &packs_dir));
        let produced = (|| -> Result<()> {
            let mut seen: HashSet<Hash> = HashSet::new();
            for (fi, f) in ckpt.files.iter().enumerate() {
                let file = checkpoint::open_unchanged(&f.path, &f.stamp)?;
                advise_sequential(&file);
                let jobs: Vec<Job> = runs
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.file == fi)
                    .flat_map(|(ri, r)| {
                        crate::block::ranges(r.len, block_size, r.dtype.align())
                            .enumerate()
                            .map(move |(index, (off, len))| Job { run: ri, index, offset: r.offset + off, len })
                    })
                    .collect();
                for window in windows(&jobs, opts.window) {
                    let start = window[0].offset;
                    let last = window[window.len() - 1];
                    let span = last.offset + last.len - start;
                    let outcomes: Vec<Result<(Outcome, Option<LossyNote>)>> = window
                        .par_iter()
                        .map_init(
                            || (Scratch::default(), Vec::new(), Vec::new()),
                            |(scratch, basebuf, bytes), job| {
                                // One copy of the block: what is hashed is
                                // what is encoded, whatever the file does.
                                bytes.resize(job.len as usize, 0);
                                checkpoint::read_at(&file, &f.path, job.offset, bytes)?;
                                encode_job(store_ref, &runs[job.run], job, bytes, &seen, opts, scratch, basebuf)
                                    .map_err(|e| in_block(&ckpt.root, f, &runs[job.run], job, e))
                            },
                        )
                        .collect();
                    let mut batch = Vec::new();
                    for (job, o) in window.iter().zip(outcomes) {
                        let (o, note) = o?;
                        if let (Some(note), Some(rl)) = (note, run_lossy[job.run].as_mut()) {
                            rl.orig.push(note.orig);
                            rl.sums.add(&note.sums);
                            let slot = match note.bits {
                                Some(Bits::Int2) => 0,
                                Some(Bits::Int4) => 1,
                                Some(Bits::Int8) => 2,
                                None => 3,
                            };
                            rl.blocks[slot] += 1;
                        }
                        let hash = match o {
                            Outcome::Known(h) => {
                                stats.reused_blocks += 1;
                                h
                            }
                            Outcome::New(nb) => {
                                let h = nb.meta.hash;
                                if store_ref.has_block(h) || !seen.insert(h) {
                                    stats.reused_blocks += 1;
                                } else {
                                    stats.new_blocks += 1;
                                    stats.stored_bytes += nb.payload.len() as u64;
                                    if nb.meta.base.is_some() {
                                        stats.delta_blocks += 1;
                                    }
                                    stats.max_depth = stats.max_depth.max(nb.meta.depth);
                                    batch.push(nb);
                                }
                                h
                            }
                        };
                        run_hashes[job.run].push(hash);
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
                discard_packs(&store_ref.packs_dir(), &packs);
                Err(e)
            }
            (Err(e), _) | (Ok(()), Err(e)) => Err(e),
            (Ok(()), Ok(packs)) => Ok(packs),
        }
    });
    progress.end();
    let packs = result?;
    // A source that changed since it was opened may have given blocks of
    // two different states: refuse the version.
    if let Err(e) = ckpt.files.iter().try_for_each(|f| f.check_unchanged()) {
        discard_packs(&store.packs_dir(), &packs);
        let _ = store.load_packs();
        return Err(e);
    }
    // Until the manifest lands, a failure takes back the packs written.
    let lossy_json = opts.lossy.as_ref().and_then(|l| lossy_record(l, &ckpt, &runs, &run_lossy));
    let landed = write_version(store, &ckpt, &runs, &run_hashes, head, base_id, stats, lossy_json, opts);
    let (id, manifest, new_manifest) = match landed {
        Ok(v) => v,
        Err(e) => {
            discard_packs(&store.packs_dir(), &packs);
            let _ = store.load_packs();
            return Err(e);
        }
    };
    let why = if opts.message.is_empty() { "pack".to_string() } else { opts.message.clone() };
    if let Err(e) = store.move_ref_locked("HEAD", Some(id), "pack", &why) {
        // HEAD did not move (no space for it, say): take the version back.
        if new_manifest && store.read_ref("HEAD").ok() == Some(head) {
            let _ = std::fs::remove_file(store.manifest_path(id));
            discard_packs(&store.packs_dir(), &packs);
            let _ = store.load_packs();
        }
        return Err(e);
    }
    if let Some(tag) = &opts.tag {
        store.move_ref_locked(tag, Some(id), "tag", &why)?;
    }
    Ok(PackReport { id, manifest, packs, skipped: ckpt.skipped })
}

/// Builds the manifest and writes it (after reloading the indexes).
#[allow(clippy::too_many_arguments)]
fn write_version(
    store: &mut Store,
    ckpt: &checkpoint::Checkpoint,
    runs: &[Run],
    run_hashes: &[Vec<Hash>],
    head: Option<Hash>,
    base_id: Option<Hash>,
    stats: VersionStats,
    lossy: Option<crate::LossyRecord>,
    opts: &PackOptions,
) -> Result<(Hash, Manifest, bool)> {
    let block_size = store.config().block_size;

    // Every run got all its blocks (the writer accepted every batch).
    for (r, h) in runs.iter().zip(run_hashes) {
        if h.len() as u64 != crate::block::count(r.len, block_size, r.dtype.align()) {
            return Err(Error::Internal("pack stopped before the end of the source".into()));
        }
    }
    let files = build_files(ckpt, runs, run_hashes);
    let manifest = Manifest {
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
        block_size,
        policy: opts.policy.to_string(),
        max_levels: None,
        lossy,
        files,
        empty_dirs: ckpt.empty_dirs.clone(),
        stats,
    };
    // The walk refused such names already; this guards the rule itself.
    manifest.check_paths().map_err(|e| Error::checkpoint(&ckpt.root, e))?;
    store.load_packs()?;
    let mut manifest = manifest;
    let mut levels = 0u16;
    for f in &manifest.files {
        for h in f.block_hashes() {
            levels = levels.max(store.entry(h)?.depth.saturating_add(1));
        }
    }
    manifest.max_levels = Some(levels);
    let (id, new) = store.write_manifest(&manifest)?;
    Ok((id, manifest, new))
}

/// Removes packs (index first) written by a pack that failed before its
/// manifest landed: nothing references them. Best effort.
fn discard_packs(dir: &Path, packs: &[Hash]) {
    for id in packs {
        let _ = std::fs::remove_file(dir.join(format!("{id}.idx")));
        let _ = crate::store::fsutil::sync_dir(dir);
        let _ = std::fs::remove_file(dir.join(format!("{id}.pack")));
    }
    let _ = crate::store::fsutil::sync_dir(dir);
}

/// Tells the kernel the file will be read front to back (larger
/// read-ahead). Only a hint: failures are ignored.
fn advise_sequential(file: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open descriptor; the call only sets read-ahead
    // advice and touches no memory.
    let _ = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL) };
}

/// Splits the jobs of one file into consecutive groups spanning at most
/// `window` bytes (a single block larger than that gets its own group).
fn windows(jobs: &[Job], window: u64) -> Vec<&[Job]> {
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

/// Hashes one block and, when it is new, encodes it against its base
/// (lossily when the run allows it and that is smaller). Blocks of
/// lossy-eligible runs also return their share of the tensor's figures.
#[allow(clippy::too_many_arguments)]
fn encode_job(
    store: &Store,
    run: &Run,
    job: &Job,
    bytes: &[u8],
    seen: &HashSet<Hash>,
    opts: &PackOptions,
    scratch: &mut Scratch,
    basebuf: &mut Vec<u8>,
) -> Result<(Outcome, Option<LossyNote>)> {
    let hash = Hash::of(bytes);
    let lossy_opts = opts.lossy.as_ref().filter(|_| run.lossy);
    let exact_note = |base: Option<&[u8]>| {
        lossy_opts.map(|_| LossyNote { orig: hash, bits: None, sums: lossy::measure(run.dtype, bytes, bytes, base) })
    };
    if store.has_block(hash) || seen.contains(&hash) {
        // Stored exactly already (its delta to the base is not measured).
        return Ok((Outcome::Known(hash), exact_note(None)));
    }
    let mut base_read = false;
    let base = match (run.base.and_then(|b| b.get(job.index)), opts.policy) {
        (None, _) | (_, Policy::Full) => None,
        (Some(&bh), policy) => {
            let be = store.entry(bh)?;
            match policy {
                _ if DType::from_code(be.dtype) != Some(run.dtype) => None,
                Policy::Chain(k) if be.depth >= k => {
                    let chain = store.chain(bh)?;
                    Some((chain[chain.len() - 1].hash, 1))
                }
                Policy::Keyframe(k) if be.depth >= k => None,
                Policy::Near(k) => {
                    base_read = true;
                    Some(near_base(store, run.dtype, bytes, bh, k, scratch, basebuf)?)
                }
                _ => Some((bh, be.depth + 1)),
            }
        }
    };
    let meta = |hash: Hash, codec: codec::CodecId, base: Option<Hash>, depth: u16| BlockMeta {
        hash,
        raw_len: bytes.len() as u32,
        codec: codec as u8,
        dtype: run.dtype as u8,
        depth,
        base,
    };
    let (encoded, base, depth, note) = match base {
        Some((bh, depth)) => {
            if !base_read {
                store.read_block(bh, basebuf, scratch, None)?;
            }
            // Elements past the base's end (rows the tensor gained) have a
            // zero base.
            let base_len = basebuf.len().min(bytes.len());
            basebuf.resize(bytes.len(), 0);
            let (lossy, exact) = match lossy_opts {
                Some(l) => quantize_block(run.dtype, bytes, basebuf, base_len, l, &opts.encode),
                None => (None, None),
            };
            if let Some((bits, q)) = lossy {
                match &exact {
                    // The exact encoding is smaller: keep it.
                    Some(e) if e.payload.len() <= q.payload.len() => {}
                    _ => {
                        let note = LossyNote { orig: hash, bits: Some(bits), sums: q.error };
                        let rh = Hash::of(&q.recon);
                        if store.has_block(rh) || seen.contains(&rh) {
                            return Ok((Outcome::Known(rh), Some(note)));
                        }
                        let nb =
                            NewBlock { meta: meta(rh, codec::CodecId::QuantEc, Some(bh), depth), payload: q.payload };
                        return Ok((Outcome::New(nb), Some(note)));
                    }
                }
            }
            let e = exact.unwrap_or_else(|| codec::encode(run.dtype, bytes, Some(basebuf), &opts.encode));
            let note = exact_note(Some(basebuf));
            if e.codec.needs_base() { (e, Some(bh), depth, note) } else { (e, None, 0, note) }
        }
        None => (codec::encode(run.dtype, bytes, None, &opts.encode), None, 0, exact_note(None)),
    };
    Ok((Outcome::New(NewBlock { meta: meta(hash, encoded.codec, base, depth), payload: encoded.payload }), note))
}

/// Quantizes one block against its (restored) base (codec `quant-ec`)
/// at the coarsest step whose error stays within `max_error` (or, without
/// it, the asked width's nominal error), with the narrowest width that
/// reaches it, starting at the asked width. Returns the width and the lossy
/// block, if any, and the exact encoding when it had to be made to compare
/// with. Work is spent on the lossy encoding only where it can pay:
///
/// - an exact delta far cheaper than any quantizer at this error: exact;
/// - otherwise a prediction of the lossy size from one group in eight; when
///   it is not clearly under a cheap estimate of the exact size, the exact
///   encoding is made first, and the block stays exact unless the lossy
///   prediction saves at least 10% of it;
/// - the lossy block is then encoded; the exact one too, unless lossy is
///   clearly smaller than the estimate (the caller keeps the smaller).
///
/// No lossy block when no width keeps within the bound or the block cannot
/// be quantized.
fn quantize_block(
    dtype: DType,
    new: &[u8],
    base: &[u8],
    base_len: usize,
    l: &LossyOptions,
    params: &EncodeParams,
) -> (Option<(Bits, lossy::Quantized)>, Option<codec::Encoded>) {
    let bound = l.max_error.unwrap_or_else(|| l.bits.nominal_error());
    // A block with new rows (zero base past `base_len`) holds the bound on
    // each part: the changed rows against their delta and the new rows
    // against their values. One step serves the whole block, so it aims
    // at the bound scaled to the smaller part (all the error in it would
    // still be within the bound).
    let esize = (dtype.bits() / 8).max(1) as usize;
    let split = (base_len / esize * esize).min(new.len());
    let parts = (split > 0 && split < new.len()).then(|| {
        let d = |r: std::ops::Range<usize>| {
            lossy::measure(dtype, &new[r.clone()], &new[r.clone()], Some(&base[r])).delta_sq
        };
        (d(0..split), d(split..new.len()))
    });
    let target = match parts {
        Some((old, fresh)) if old + fresh > 0.0 => bound * (old.min(fresh) / (old + fresh)).sqrt(),
        _ => bound,
    };
    // The exact delta needs about this many bytes (a cheap estimate).
    let estimate = lossy::ec::exact_estimate(dtype, new, base);
    let elems = new.len() / (dtype.bits() / 8).max(1) as usize;
    // Far under what a quantizer needs at this error on dense Gaussian-like
    // changes (a twentieth of its rate-distortion bound): exact.
    if (estimate as f64) * 8.0 < 0.05 * (1.0 / (target * target)).log2() * elems as f64 {
        return (None, None);
    }
    let mut exact = None;
    // The narrowest width the sample says can reach the target.
    let mut bits = l.bits;
    let mut prediction = lossy::ec::predict(dtype, new, base, bits, l.group, target);
    while let Some((_, 0.0)) = prediction
        && let Some(w) = bits.wider()
    {
        bits = w;
        prediction = lossy::ec::predict(dtype, new, base, bits, l.group, target);
    }
    let first = bits;
    if let Some((pred, _)) = prediction
        && pred.saturating_mul(2) > estimate
    {
        let e = codec::encode(dtype, new, Some(base), params);
        if pred.saturating_mul(10) >= e.payload.len().saturating_mul(9) {
            return (None, Some(e));
        }
        exact = Some(e);
    }
    // That width first, wider ones when it cannot reach the target;
    // without `max_error`, the widest one's best effort last.
    let q = loop {
        // The predicted step is a good start for the predicted width.
        let start = prediction.filter(|_| bits == first).map(|(_, step)| step);
        if let Some(q) = lossy::ec::encode_from(dtype, new, base, bits, l.group, target, true, start) {
            break q;
        }
        match bits.wider() {
            Some(w) => bits = w,
            None if l.max_error.is_none() => match lossy::ec::encode(dtype, new, base, bits, l.group, target, false) {
                Some(q) => break q,
                None => return (None, exact),
            },
            None => return (None, exact),
        }
    };
    let e = &q.error;
    // The bound holds on every block, also without `max_error` (the
    // nominal error of the asked width): a block the widest codes cannot
    // bring within it (new rows against a zero base next to small changes,
    // say) stays exact. A hair of margin so that summing blocks in another
    // order cannot push the tensor past the bound.
    let eps = bound * (1.0 - 1e-9);
    let within = e.err_sq.is_finite()
        && e.err_sq <= eps * eps * e.delta_sq
        && (parts.is_none() || {
            let part =
                |r: std::ops::Range<usize>| lossy::measure(dtype, &new[r.clone()], &q.recon[r.clone()], Some(&base[r]));
            let (a, b) = (part(0..split), part(split..new.len()));
            a.err_sq <= eps * eps * a.delta_sq && b.err_sq <= eps * eps * b.delta_sq
        });
    if !within {
        return (None, exact);
    }
    // When the lossy payload is well under the estimate, skip encoding the
    // exact delta.
    if exact.is_none() && q.payload.len() * 10 >= estimate * 7 {
        exact = Some(codec::encode(dtype, new, Some(base), params));
    }
    (Some((bits, q)), exact)
}

/// The manifest's `lossy` record (`FORMAT.md`): the settings and, for
/// every tensor with at least one lossy block, its measured error and the
/// hash of its original bytes. `None` when no block was stored lossily.
fn lossy_record(
    l: &LossyOptions,
    ckpt: &checkpoint::Checkpoint,
    runs: &[Run],
    run_lossy: &[Option<RunLossy>],
) -> Option<crate::LossyRecord> {
    use crate::store::lossy_record::{LossyBlocks, LossyRecord, LossyTensor, finite as num};
    let mut tensors = Vec::new();
    let mut total = ErrorSums::default();
    let mut blocks = [0u64; 4];
    let mut worst = 0f64;
    for (r, rl) in runs.iter().zip(run_lossy) {
        let Some(rl) = rl else { continue };
        if rl.blocks[..3].iter().sum::<u64>() == 0 {
            continue;
        }
        total.add(&rl.sums);
        for (a, b) in blocks.iter_mut().zip(rl.blocks) {
            *a += b;
        }
        worst = worst.max(rl.sums.delta_rel_l2());
        tensors.push(LossyTensor {
            file: ckpt.files[r.file].rel_path.clone(),
            name: r.name.unwrap_or_default().to_string(),
            dtype: r.dtype.name().to_string(),
            original_hash: Hash::of_hashes(&rl.orig).to_string(),
            elements: rl.sums.elements,
            blocks: LossyBlocks { int2: rl.blocks[0], int4: rl.blocks[1], int8: rl.blocks[2], exact: rl.blocks[3] },
            max_abs_err: num(rl.sums.max_abs),
            delta_rel_l2: num(rl.sums.delta_rel_l2()),
            weight_rel_l2: num(rl.sums.weight_rel_l2()),
        });
    }
    if tensors.is_empty() {
        return None;
    }
    Some(LossyRecord {
        format: 1,
        bits: l.bits.to_string(),
        group: u64::from(l.group),
        metric: "delta_rel_l2".into(),
        max_error: l.max_error,
        keep_exact: l.keep_exact.clone(),
        lossy_blocks: blocks[0] + blocks[1] + blocks[2],
        exact_blocks: blocks[3],
        max_abs_err: num(total.max_abs),
        delta_rel_l2: num(total.delta_rel_l2()),
        weight_rel_l2: num(total.weight_rel_l2()),
        max_tensor_delta_rel_l2: num(worst),
        tensors,
    })
}

/// Appends batches of new blocks to pack files, rolling to a new pack past
/// [`PACK_ROLL_BYTES`]. Returns the ids of the packs written.
fn write_packs(rx: crossbeam_channel::Receiver<Vec<NewBlock>>, tmp_dir: &Path, packs_dir: &Path) -> Result<Vec<Hash>> {
    let mut done = Vec::new();
    let mut cur: Option<PackWriter> = None;
    let res = (|| -> Result<()> {
        for batch in rx {
            for nb in batch {
                if cur.is_none() {
                    cur = Some(PackWriter::create(tmp_dir)?);
                }
                let w = cur.as_mut().expect("writer just created");
                w.add(nb.meta, &nb.payload)?;
                if w.len() >= PACK_ROLL_BYTES {
                    let w = cur.take().expect("writer present");
                    done.push(w.finish(tmp_dir, packs_dir)?.0);
                }
            }
        }
        if let Some(w) = cur.take() {
            done.push(w.finish(tmp_dir, packs_dir)?.0);
        }
        Ok(())
    })();
    match res {
        Ok(()) => Ok(done),
        Err(e) => {
            if let Some(w) = cur.take() {
                w.abandon();
            }
            discard_packs(packs_dir, &done);
            Err(e)
        }
    }
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

/// The manifest's file entries from the runs and their block hashes.
fn build_files(ckpt: &checkpoint::Checkpoint, runs: &[Run], run_hashes: &[Vec<Hash>]) -> Vec<FileEntry> {
    let mut per_file: Vec<Vec<usize>> = vec![Vec::new(); ckpt.files.len()];
    for (ri, r) in runs.iter().enumerate() {
        per_file[r.file].push(ri);
    }
    ckpt.files
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
                            hash: Hash::of_hashes(&run_hashes[ri]),
                            blocks: run_hashes[ri].clone(),
                        })
                        .collect(),
                },
                FileKind::Blob => FileContent::Blob { blocks: run_hashes[rs[0]].clone() },
            };
            let mut fe =
                FileEntry { path: f.rel_path.clone(), size: f.len, hash: Hash::default(), mode: Some(f.mode), content };
            fe.hash = Hash::of_hashes(&fe.block_hashes());
            fe
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_parses_and_prints() {
        for s in ["chain:8", "keyframe:4", "full", "root", "near:3", "near:1000"] {
            assert_eq!(s.parse::<Policy>().unwrap().to_string(), s);
        }
        assert_eq!("chain:1".parse::<Policy>().unwrap(), Policy::ROOT);
        assert_eq!(Policy::default(), Policy::Near(3));
        assert_eq!(Policy::default().max_levels(), 4);
        for bad in ["chain", "chain:0", "chain:x", "keyframe:1001", "delta:3", "", "near", "near:0", "near:1001"] {
            assert!(bad.parse::<Policy>().is_err(), "{bad}");
        }
    }

    #[test]
    fn windows_cover_every_job_once_within_the_span() {
        let jobs: Vec<Job> = (0..10).map(|i| Job { run: 0, index: i, offset: i as u64 * 100, len: 100 }).collect();
        let w = windows(&jobs, 250);
        assert_eq!(w.iter().map(|w| w.len()).sum::<usize>(), 10);
        for g in &w {
            let span = g[g.len() - 1].offset + g[g.len() - 1].len - g[0].offset;
            assert!(span <= 250);
        }
        assert!(windows(&[], 250).is_empty());
    }
}
