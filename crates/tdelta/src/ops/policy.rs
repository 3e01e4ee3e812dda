//! Delta policies: how deep chains of deltas may grow, and which block a
//! new block is a delta against (README, "Choosing a delta policy"); the
//! choice itself is made in `pack/base.rs`.

use std::str::FromStr;

use crate::{Error, Result};

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
}
