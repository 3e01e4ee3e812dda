//! Delta policies: how deep chains of deltas may grow, and which block a
//! new block is a delta against (README, "Choosing a delta policy").

use std::str::FromStr;

use crate::Hash;
use crate::lossy;
use crate::store::Store;
use crate::store::read::Scratch;
use crate::{DType, Error, Result};

/// How deep delta chains may grow, which bounds what a restore decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Delta against the base version's block while that block is less than
    /// `K` levels deep; past that, delta against the full block at the root
    /// of its chain (depth 1 again). `chain:1` deltas every version against
    /// the last full version (the "root" policy).
    Chain(u16),
    /// Delta against the base version's block while that block is less than
    /// `K` levels deep; past that, store the block in full (a keyframe).
    Keyframe(u16),
    /// Never delta: every new block is stored in full.
    Full,
    /// At most `K` levels deep, the base chosen by size: delta against the
    /// base version's block while that is less than `K` levels deep; at
    /// the limit, against the nearest block of its chain whose delta costs
    /// clearly less extra (over a delta against the base version's block)
    /// than the next shallower one (`NEAR_GAIN`, one half): the chain re-roots on
    /// a delta rather than on the full block when the versions drift apart.
    /// Estimates on float tensors; other runs re-root on the full block.
    Near(u16),
}

/// At the depth limit of [`Policy::Near`], a deeper candidate base is taken
/// when the estimated extra cost of its delta (over one against the base
/// version's block) is at most this share of the next shallower one's.
pub const NEAR_GAIN: f64 = 0.5;

impl Default for Policy {
    fn default() -> Self {
        Policy::DEFAULT
    }
}

impl Policy {
    /// Every block a delta against the last full block of its position
    /// (`chain:1`): restores decode at most two levels.
    pub const ROOT: Policy = Policy::Chain(1);

    /// The default, `near:3`: at most four decodes per block, chosen by
    /// measurement (README, "Choosing a delta policy").
    pub const DEFAULT: Policy = Policy::Near(3);

    /// Most decodes one block read needs for blocks this policy writes
    /// (its deepest delta plus the full block).
    pub fn max_levels(self) -> u16 {
        match self {
            Policy::Chain(k) | Policy::Keyframe(k) | Policy::Near(k) => k + 1,
            Policy::Full => 1,
        }
    }
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Policy::Chain(1) => write!(f, "root"),
            Policy::Chain(k) => write!(f, "chain:{k}"),
            Policy::Keyframe(k) => write!(f, "keyframe:{k}"),
            Policy::Full => write!(f, "full"),
            Policy::Near(k) => write!(f, "near:{k}"),
        }
    }
}

impl FromStr for Policy {
    type Err = Error;

    fn from_str(s: &str) -> Result<Policy> {
        let bad = || {
            Error::InvalidArgument(format!(
                "invalid policy `{s}`: expected near:K, chain:K, keyframe:K (K in 1..=1000), root or full"
            ))
        };
        let depth = |k: &str| match k.parse::<u16>() {
            Ok(k) if (1..=1000).contains(&k) => Ok(k),
            _ => Err(bad()),
        };
        match s.split_once(':') {
            None if s == "root" => Ok(Policy::Chain(1)),
            None if s == "full" => Ok(Policy::Full),
            Some(("chain", k)) => Ok(Policy::Chain(depth(k)?)),
            Some(("keyframe", k)) => Ok(Policy::Keyframe(depth(k)?)),
            Some(("near", k)) => Ok(Policy::Near(depth(k)?)),
            _ => Err(bad()),
        }
    }
}

/// The base of a block under [`Policy::Near`]`(k)` given the base
/// version's block `prev` (at depth `d`). While `d < k`, `prev` itself
/// (depth `d + 1`). At the limit, the candidates are the blocks of its
/// chain less than `k` levels deep, nearest first; each costs an excess
/// over the delta against `prev` (estimated, [`lossy::ec::exact_estimate`]),
/// and the first whose excess is at most [`NEAR_GAIN`] of the next one's
/// is taken (the last, the full block, when none is). Returns its hash and
/// the new block's depth, its bytes in `basebuf`.
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
    let mut at = cands.len() - 1;
    if near != usize::MAX && cands.iter().all(|c| c.3 != usize::MAX) {
        let excess = |c: &(Hash, u16, Vec<u8>, usize)| c.3.saturating_sub(near) as f64;
        at = (0..cands.len() - 1).find(|&i| excess(&cands[i]) <= NEAR_GAIN * excess(&cands[i + 1])).unwrap_or(at);
    }
    let (hash, depth, b, _) = cands.swap_remove(at);
    *basebuf = b;
    Ok((hash, depth))
}
