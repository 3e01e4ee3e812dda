//! The block encoder: hashes one block, checks whether the store (or this
//! pack) has it already, picks its base and codec, and takes the lossy path
//! where the run allows it, with the error figures each tensor's lossy
//! record adds up ([`Tally`]). Reads base blocks from the store; never
//! touches the source or writes.

use std::collections::HashSet;

use super::PackOptions;
use super::base::{self, Candidate, NearPicks, ReadRunBlock};
use super::plan::{Job, Run};
use crate::checkpoint::Checkpoint;
use crate::codec::{self, EncodeParams};
use crate::lossy::{self, Bits, ErrorSums, LossyOptions};
use crate::ops::blocks::Scratch;
use crate::ops::policy::Policy;
use crate::store::Store;
use crate::store::manifest::VersionStats;
use crate::store::pack::BlockMeta;
use crate::{DType, Hash, Result};

/// The id of a block's raw bytes: the one place pack hashes blocks.
pub(super) fn block_hash(store: &Store, bytes: &[u8]) -> Hash {
    store.hasher().block(bytes)
}

/// A block new to the store, encoded.
pub(super) struct NewBlock {
    pub meta: BlockMeta,
    pub payload: Vec<u8>,
}

/// What became of one block.
pub(super) enum Outcome {
    /// The store or this pack has it already.
    Known(Hash),
    /// Encoded; a block encoded twice in one window is dropped by [`Tally`].
    New(NewBlock),
}

/// What a block of a lossy-eligible run adds to its tensor's figures.
pub(super) struct LossyNote {
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

/// The bookkeeping of a pack, fed the outcomes in block order: each run's
/// block hashes, the blocks new to the store (each once), the version's
/// stats and the lossy figures.
pub(super) struct Tally {
    pub seen: HashSet<Hash>,
    pub stats: VersionStats,
    pub run_hashes: Vec<Vec<Hash>>,
    run_lossy: Vec<Option<RunLossy>>,
}

impl Tally {
    /// An empty tally for `runs` (with room for `blocks(ri)` hashes each).
    pub fn new(runs: &[Run], blocks: impl Fn(usize) -> u64, raw_bytes: u64) -> Tally {
        Tally {
            seen: HashSet::new(),
            stats: VersionStats { raw_bytes, ..VersionStats::default() },
            run_hashes: (0..runs.len()).map(|ri| Vec::with_capacity(blocks(ri) as usize)).collect(),
            run_lossy: runs.iter().map(|r| r.lossy.then(RunLossy::default)).collect(),
        }
    }

    /// Records the outcome of `job`; returns the block when it is new to
    /// the store and to this pack (to be written).
    pub fn add(&mut self, store: &Store, job: &Job, o: Outcome, note: Option<LossyNote>) -> Option<NewBlock> {
        if let (Some(note), Some(rl)) = (note, self.run_lossy[job.run].as_mut()) {
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
        let stats = &mut self.stats;
        let (hash, new) = match o {
            Outcome::Known(h) => {
                stats.reused_blocks += 1;
                (h, None)
            }
            Outcome::New(nb) => {
                let h = nb.meta.hash;
                if store.has_whole_block(h) || !self.seen.insert(h) {
                    stats.reused_blocks += 1;
                    (h, None)
                } else {
                    stats.new_blocks += 1;
                    stats.stored_bytes += nb.payload.len() as u64;
                    if nb.meta.base.is_some() {
                        stats.delta_blocks += 1;
                    }
                    stats.max_depth = stats.max_depth.max(nb.meta.depth);
                    (h, Some(nb))
                }
            }
        };
        self.run_hashes[job.run].push(hash);
        new
    }

    /// The manifest's `lossy` record (`FORMAT.md`): the settings and, for
    /// every tensor with at least one lossy block, its measured error and the
    /// hash of its original bytes. `None` when no block was stored lossily.
    pub fn lossy_record(
        &self,
        l: &LossyOptions,
        ckpt: &Checkpoint,
        runs: &[Run],
        algo: crate::Algo,
    ) -> Option<crate::LossyRecord> {
        use tdelta_format::lossy_record::{LossyBlocks, LossyRecord, LossyTensor, finite as num};
        let mut tensors = Vec::new();
        let mut total = ErrorSums::default();
        let mut blocks = [0u64; 4];
        let mut worst = 0f64;
        for (r, rl) in runs.iter().zip(&self.run_lossy) {
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
                original_hash: algo.list(&rl.orig).to_string(),
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
}

/// Hashes one block and, when it is new, encodes it against its base
/// (lossily when the run allows it and that is smaller). Blocks of
/// lossy-eligible runs also return their share of the tensor's figures.
/// `near` holds the runs' base picks at the limit of `near:K`, and reads
/// block `i` of this block's run when its pick is to be made; `spare` is
/// an allocation the payload may reuse.
#[allow(clippy::too_many_arguments)]
pub(super) fn encode_block(
    store: &Store,
    run: &Run,
    job: &Job,
    bytes: &[u8],
    seen: &HashSet<Hash>,
    opts: &PackOptions,
    near: (&NearPicks, &ReadRunBlock<'_>),
    scratch: &mut Scratch,
    basebuf: &mut Vec<u8>,
    spare: Vec<u8>,
) -> Result<(Outcome, Option<LossyNote>)> {
    let hash = block_hash(store, bytes);
    let lossy_opts = opts.lossy.as_ref().filter(|_| run.lossy);
    let exact_note = |base: Option<&[u8]>| {
        lossy_opts.map(|_| LossyNote { orig: hash, bits: None, sums: lossy::measure(run.dtype, bytes, bytes, base) })
    };
    if store.has_whole_block(hash) || seen.contains(&hash) {
        // Stored exactly already (its delta to the base is not measured).
        return Ok((Outcome::Known(hash), exact_note(None)));
    }
    let prev = match run.base.and_then(|b| b.get(job.index)) {
        Some(&bh) if opts.policy != Policy::Full => {
            let e = store.entry(bh)?;
            Some(Candidate { hash: bh, depth: e.depth, dtype: e.dtype })
        }
        _ => None,
    };
    let choice = base::choose(opts.policy, run.dtype, prev);
    let near_pick = || {
        let (picks, read) = near;
        picks.get(job.run, || match (choice, run.base) {
            (base::Choice::Near { k, .. }, Some(prevs)) => base::sample_pick(store, run.dtype, prevs, k, read),
            _ => None,
        })
    };
    // The next block's base, when at the next place of the same tensor.
    let next = run.base.and_then(|b| b.get(job.index + 1)).copied();
    let base = base::resolve(store, choice, run.dtype, bytes, scratch, basebuf, near_pick, next)?;
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
                        let rh = block_hash(store, &q.recon);
                        if store.has_whole_block(rh) || seen.contains(&rh) {
                            return Ok((Outcome::Known(rh), Some(note)));
                        }
                        let nb =
                            NewBlock { meta: meta(rh, codec::CodecId::QuantEc, Some(bh), depth), payload: q.payload };
                        return Ok((Outcome::New(nb), Some(note)));
                    }
                }
            }
            let e = exact.unwrap_or_else(|| codec::encode_into(run.dtype, bytes, Some(basebuf), &opts.encode, spare));
            let note = exact_note(Some(basebuf));
            if e.codec.needs_base() { (e, Some(bh), depth, note) } else { (e, None, 0, note) }
        }
        None => (codec::encode_into(run.dtype, bytes, None, &opts.encode, spare), None, 0, exact_note(None)),
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
