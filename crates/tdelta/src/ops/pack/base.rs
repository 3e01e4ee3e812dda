//! Base selection: which stored block a new block is a delta against,
//! under the version's [`Policy`]. [`choose`] and [`pick_near`] decide
//! from index entries and size estimates alone (pure); [`resolve`] reads
//! the blocks they name.

use crate::Hash;
use crate::lossy;
use crate::ops::blocks::Scratch;
use crate::ops::policy::{NEAR_GAIN, Policy};
use crate::store::Store;
use crate::{DType, Result};

/// What the index says of a candidate base block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Candidate {
    pub hash: Hash,
    /// Its delta depth (0: a full block).
    pub depth: u16,
    /// Its dtype code.
    pub dtype: u8,
}

/// The base decision for one block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Choice {
    /// No base: the block is encoded on its own.
    Full,
    /// A delta against `base`; the new block sits at `depth`.
    Delta { base: Hash, depth: u16 },
    /// A delta against the full block at the root of `of`'s chain
    /// (depth 1): `chain:K` at its limit.
    Root { of: Hash },
    /// `near:K` at its limit: a delta against the block of `of`'s chain
    /// that [`pick_near`] picks by size.
    Near { of: Hash, k: u16 },
}

/// The base of a block of `dtype` whose run has `prev` in the base
/// version (the block at the same place), under `policy`. A base of another
/// dtype (a corrupt or hand-made index) is not used.
pub(super) fn choose(policy: Policy, dtype: DType, prev: Option<Candidate>) -> Choice {
    let Some(p) = prev else { return Choice::Full };
    if policy == Policy::Full || DType::from_code(p.dtype) != Some(dtype) {
        return Choice::Full;
    }
    match policy {
        Policy::Chain(k) if p.depth >= k => Choice::Root { of: p.hash },
        Policy::Keyframe(k) if p.depth >= k => Choice::Full,
        Policy::Near(k) if p.depth >= k => Choice::Near { of: p.hash, k },
        _ => Choice::Delta { base: p.hash, depth: p.depth + 1 },
    }
}

/// Of the candidates of [`Choice::Near`], nearest first and the full block
/// last, given each one's estimated delta size and the estimate against
/// the base version's block (`near`): the index of the first whose excess
/// over `near` is at most [`NEAR_GAIN`] of the next one's; the last (the
/// full block) when none is or an estimate is missing (`usize::MAX`).
pub(super) fn pick_near(near: usize, estimates: &[usize]) -> usize {
    let last = estimates.len().saturating_sub(1);
    if near == usize::MAX || estimates.contains(&usize::MAX) {
        return last;
    }
    let excess = |e: usize| e.saturating_sub(near) as f64;
    (0..last).find(|&i| excess(estimates[i]) <= NEAR_GAIN * excess(estimates[i + 1])).unwrap_or(last)
}

/// Carries out `choice` for the block `bytes`: returns the base's hash
/// and the new block's depth, the base's bytes in `basebuf`, or `None` for
/// [`Choice::Full`]. `near_pick` gives, for [`Choice::Near`], the depth of
/// the base its run takes ([`NearPicks`]); it is asked only then. `next`
/// is the block at the next place of the base version, a full block
/// decoded with this one's full base when both are ([`read_full_base`]).
#[allow(clippy::too_many_arguments)]
pub(super) fn resolve(
    store: &Store,
    choice: Choice,
    dtype: DType,
    bytes: &[u8],
    scratch: &mut Scratch,
    basebuf: &mut Vec<u8>,
    near_pick: impl FnOnce() -> Option<u16>,
    next: Option<Hash>,
) -> Result<Option<(Hash, u16)>> {
    let (base, depth) = match choice {
        Choice::Full => return Ok(None),
        Choice::Delta { base, depth } => (base, depth),
        Choice::Root { of } => {
            let chain = store.chain(of)?;
            (chain[chain.len() - 1].hash, 1)
        }
        Choice::Near { of, k } => {
            // The run's pick, when this block's chain has a block at that
            // depth; else this block's own choice.
            let picked =
                near_pick().and_then(|d| Some((store.chain(of).ok()?.into_iter().find(|e| e.depth == d)?.hash, d)));
            match picked {
                Some((base, d)) => (base, d + 1),
                None => return near_base(store, dtype, bytes, of, k, scratch, basebuf).map(Some),
            }
        }
    };
    if !(depth == 1 && next.is_some_and(|n| read_full_base(store, base, n, basebuf, scratch))) {
        store.read_block(base, basebuf, scratch, None)?;
    }
    Ok(Some((base, depth)))
}

thread_local! {
    /// A full base block decoded ahead, with the one before it, for this
    /// thread's next block ([`read_full_base`]): its id and bytes.
    static NEXT_BASE: std::cell::RefCell<(Option<Hash>, Vec<u8>)> = const { std::cell::RefCell::new((None, Vec::new())) };
}

/// Reads the full block `base` into `basebuf`: from this thread's block
/// decoded ahead when that is it, else together with `next` (the next
/// block's likely base, a full block too), whose bytes are kept for this
/// thread's next block. A full block's single stream keeps the core
/// waiting on its table gathers; two decoded at once take 0.61 of the time
/// of two one after the other (`cargo bench ... two_full`). The bytes are
/// checked against their ids either way, and a block id names its bytes
/// for good, so a kept block is never stale. False when not done (the
/// caller reads `base` alone).
fn read_full_base(store: &Store, base: Hash, next: Hash, basebuf: &mut Vec<u8>, scratch: &mut Scratch) -> bool {
    NEXT_BASE.with(|cell| {
        let mut cell = cell.borrow_mut();
        let (kept, bytes) = &mut *cell;
        if *kept == Some(base) {
            std::mem::swap(basebuf, bytes);
            *kept = None;
            return true;
        }
        *kept = None;
        if next != base && store.read_two_full((base, basebuf), (next, bytes), scratch) {
            *kept = Some(next);
            return true;
        }
        false
    })
}

/// The base depth each run takes under [`Policy::Near`] at its limit,
/// decided once per run on a sample of its blocks ([`sample_pick`])
/// instead of on every block: [`near_base`] decodes the whole chain and
/// estimates every candidate, which at the limit cost pack more than twice
/// the CPU of a delta against one base. The other blocks of a run whose
/// samples agree decode only the chain of the base picked.
pub(super) struct NearPicks(Vec<std::sync::OnceLock<Option<u16>>>);

impl NearPicks {
    /// No decision yet for any of `runs` runs.
    pub fn new(runs: usize) -> Self {
        NearPicks((0..runs).map(|_| std::sync::OnceLock::new()).collect())
    }

    /// Run `run`'s pick, made by `decide` the first time it is asked for
    /// (other threads asking meanwhile wait for it).
    pub fn get(&self, run: usize, decide: impl FnOnce() -> Option<u16>) -> Option<u16> {
        *self.0[run].get_or_init(decide)
    }
}

/// Reads block `i` of a run into the buffer (resized to the block).
pub(super) type ReadRunBlock<'a> = dyn Fn(usize, &mut Vec<u8>) -> Result<()> + 'a;

/// Blocks at the limit per sample [`sample_pick`] takes.
const PICK_EVERY: usize = 8;

/// The depth of the base that [`near_base`] picks for a run's blocks whose
/// base version's block (`prevs[i]`) is at the limit `k`, judged on one
/// such block in [`PICK_EVERY`] (at least one, the first; evenly spread):
/// the run's pick when every sample picks the same. `None` (every block
/// then decides for itself, as a run whose blocks drift unlike each other
/// needs: an embedding whose rows are updated unevenly) when they differ,
/// no block is at the limit, or a sample cannot be read or decoded (the
/// block meets the same error on its own). `read(i, buf)` reads block `i`.
pub(super) fn sample_pick(
    store: &Store,
    dtype: DType,
    prevs: &[Hash],
    k: u16,
    read: impl Fn(usize, &mut Vec<u8>) -> Result<()>,
) -> Option<u16> {
    let at_limit: Vec<usize> = (0..prevs.len())
        .filter(|&i| store.entry(prevs[i]).is_ok_and(|e| e.depth >= k && DType::from_code(e.dtype) == Some(dtype)))
        .collect();
    let samples = at_limit.len().div_ceil(PICK_EVERY);
    let (mut bytes, mut scratch, mut basebuf) = (Vec::new(), Scratch::default(), Vec::new());
    let mut pick = None;
    for j in 0..samples {
        let i = at_limit[j * at_limit.len() / samples];
        read(i, &mut bytes).ok()?;
        let (_, depth) = near_base(store, dtype, &bytes, prevs[i], k, &mut scratch, &mut basebuf).ok()?;
        if pick.is_some_and(|p| p != depth - 1) {
            return None;
        }
        pick = Some(depth - 1);
    }
    pick
}

/// The base of a block under [`Policy::Near`]`(k)` given the base
/// version's block `prev` (at depth `d`). While `d < k`, `prev` itself
/// (depth `d + 1`). At the limit, the candidates are the blocks of its
/// chain less than `k` levels deep, nearest first; each costs an excess
/// over the delta against `prev` (estimated, [`lossy::ec::exact_estimate`]),
/// and [`pick_near`] takes one. Returns its hash and the new block's depth,
/// its bytes in `basebuf`.
pub(super) fn near_base(
    store: &Store,
    dtype: DType,
    bytes: &[u8],
    prev: Hash,
    k: u16,
    scratch: &mut Scratch,
    basebuf: &mut Vec<u8>,
) -> Result<(Hash, u16)> {
    let pe = store.entry(prev)?;
    if pe.depth < k {
        store.read_block(prev, basebuf, scratch, None)?;
        return Ok((prev, pe.depth + 1));
    }
    // A base of another length (a tensor that gained or lost rows) is cut
    // or zero-padded, as the encoder does.
    let estimate = |b: &[u8]| {
        if b.len() == bytes.len() {
            lossy::ec::exact_estimate(dtype, bytes, b)
        } else {
            let mut padded = b.to_vec();
            padded.resize(bytes.len(), 0);
            lossy::ec::exact_estimate(dtype, bytes, &padded)
        }
    };
    // One pass down the chain: each candidate's bytes and estimate, from
    // the full block up.
    let mut cands: Vec<(Hash, u16, Vec<u8>, usize)> = Vec::new();
    let mut near = usize::MAX;
    let mut top = std::mem::take(basebuf);
    store.read_chain(prev, &mut top, scratch, |e, b| {
        if e.depth < k {
            cands.push((e.hash, e.depth + 1, b.to_vec(), estimate(b)));
        } else if e.hash == prev {
            near = estimate(b);
        }
        Ok(())
    })?;
    *basebuf = top;
    // Nearest first; the chain always ends on a full block (depth 0 < k).
    cands.reverse();
    let estimates: Vec<usize> = cands.iter().map(|c| c.3).collect();
    let (hash, depth, b, _) = cands.swap_remove(pick_near(near, &estimates));
    // The chain check proved `prev`; the base kept is checked on its own
    // (a level's bytes past the length of the one above it do not show in
    // that one).
    let actual = hash.algo().block(&b);
    if actual != hash {
        return Err(crate::Error::HashMismatch { block: hash.to_hex(), actual: actual.to_hex() });
    }
    *basebuf = b;
    Ok((hash, depth))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(n: u8) -> Hash {
        Hash::of(&[n])
    }

    fn cand(n: u8, depth: u16) -> Option<Candidate> {
        Some(Candidate { hash: h(n), depth, dtype: DType::BF16 as u8 })
    }

    #[test]
    fn no_base_block_or_full_policy_means_no_base() {
        for p in ["near:3", "chain:2", "keyframe:2", "root", "full"] {
            assert_eq!(choose(p.parse().unwrap(), DType::BF16, None), Choice::Full, "{p}");
        }
        assert_eq!(choose(Policy::Full, DType::BF16, cand(1, 0)), Choice::Full);
    }

    #[test]
    fn a_base_of_another_dtype_is_not_used() {
        assert_eq!(choose(Policy::Near(3), DType::F16, cand(1, 0)), Choice::Full);
        let bad = Some(Candidate { hash: h(1), depth: 0, dtype: 250 });
        assert_eq!(choose(Policy::Chain(4), DType::BF16, bad), Choice::Full);
    }

    #[test]
    fn under_the_limit_every_policy_deltas_one_level_deeper() {
        for p in [Policy::Near(3), Policy::Chain(3), Policy::Keyframe(3)] {
            for d in 0..3 {
                assert_eq!(choose(p, DType::BF16, cand(7, d)), Choice::Delta { base: h(7), depth: d + 1 }, "{p} {d}");
            }
        }
    }

    #[test]
    fn at_the_limit_each_policy_does_its_own_thing() {
        assert_eq!(choose(Policy::Chain(2), DType::BF16, cand(7, 2)), Choice::Root { of: h(7) });
        assert_eq!(choose(Policy::ROOT, DType::BF16, cand(7, 1)), Choice::Root { of: h(7) });
        assert_eq!(choose(Policy::ROOT, DType::BF16, cand(7, 0)), Choice::Delta { base: h(7), depth: 1 });
        assert_eq!(choose(Policy::Keyframe(2), DType::BF16, cand(7, 2)), Choice::Full);
        assert_eq!(choose(Policy::Keyframe(2), DType::BF16, cand(7, 5)), Choice::Full);
        assert_eq!(choose(Policy::Near(2), DType::BF16, cand(7, 2)), Choice::Near { of: h(7), k: 2 });
        assert_eq!(choose(Policy::Near(2), DType::BF16, cand(7, 9)), Choice::Near { of: h(7), k: 2 });
    }

    #[test]
    fn near_takes_the_first_candidate_clearly_cheaper_than_the_next() {
        // Excess over `near` (100): 10, 30, 50 → 10 <= 0.5 * 30: the nearest.
        assert_eq!(pick_near(100, &[110, 130, 150]), 0);
        // 40 > 0.5 * 60; 60 <= 0.5 * 200: the second.
        assert_eq!(pick_near(100, &[140, 160, 300]), 1);
        // Excess grows slowly down the chain: the full block.
        assert_eq!(pick_near(100, &[180, 190, 200]), 2);
        // Equal to `near` (no excess) everywhere: 0 <= 0, the nearest.
        assert_eq!(pick_near(100, &[100, 100]), 0);
        // Cheaper than `near` counts as no excess.
        assert_eq!(pick_near(100, &[50, 300]), 0);
    }

    #[test]
    fn near_falls_back_to_the_full_block() {
        assert_eq!(pick_near(100, &[500]), 0);
        assert_eq!(pick_near(usize::MAX, &[110, 130, 150]), 2);
        assert_eq!(pick_near(100, &[110, usize::MAX, 150]), 2);
        assert_eq!(pick_near(100, &[]), 0);
    }
}
