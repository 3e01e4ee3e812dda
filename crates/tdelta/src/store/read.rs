//! Locating blocks: index entries, their checked base chains and their
//! payload bytes. Decoding them is the engine's (`ops/blocks.rs`).

use super::Store;
use super::pack::{self, Entry};
use crate::Hash;
use crate::{Error, Result};

/// Deepest delta chain any policy writes (`chain:1000`): an index entry
/// claiming more is damage, refused before its chain is followed.
pub const MAX_DEPTH: u16 = 1000;

impl Store {
    /// The index entry of a stored block.
    pub(crate) fn entry(&self, hash: Hash) -> Result<&Entry> {
        self.index.get(&hash).ok_or_else(|| Error::MissingBlock { block: hash.to_hex() })
    }

    /// True when the store holds the block and its whole chain of bases,
    /// each one level lower than the block above it. A block left behind
    /// by an interrupted `gc` (whose base pack was deleted first) fails
    /// this: a writer must store such a block again, not reuse it.
    pub(crate) fn has_whole_block(&self, hash: Hash) -> bool {
        self.chain(hash).is_ok()
    }

    /// The chain of `hash` from the block itself down to its full (depth 0)
    /// root, checked: every base exists and sits exactly one level lower,
    /// so a corrupt index cannot make a reader loop.
    pub(crate) fn chain(&self, hash: Hash) -> Result<Vec<&Entry>> {
        self.chain_within(hash, MAX_DEPTH + 1)
    }

    /// [`Store::chain`], refusing as damage a block whose entry claims a
    /// chain of more than `max_levels` levels (decodes) before following it.
    pub(crate) fn chain_within(&self, hash: Hash, max_levels: u16) -> Result<Vec<&Entry>> {
        let top = self.entry(hash)?;
        if u32::from(top.depth) + 1 > u32::from(max_levels.min(MAX_DEPTH + 1)) {
            return Err(Error::corrupt(
                &self.packs[top.pack as usize].path,
                format!(
                    "block {} claims a chain of {} levels where at most {} are allowed",
                    top.hash,
                    u32::from(top.depth) + 1,
                    max_levels.min(MAX_DEPTH + 1)
                ),
            ));
        }
        let mut chain = vec![top];
        loop {
            let e = chain[chain.len() - 1];
            let Some(base) = e.base else { break };
            let b = self.entry(base)?;
            if b.depth.checked_add(1) != Some(e.depth) {
                return Err(Error::corrupt(
                    &self.packs[e.pack as usize].path,
                    format!("block {} at depth {} has base {} at depth {}", e.hash, e.depth, b.hash, b.depth),
                ));
            }
            chain.push(b);
        }
        Ok(chain)
    }

    /// The payload bytes of a stored block, into `buf`, checked against
    /// the entry's checksum when `sum` (a read whose output is checked
    /// against its block id needs no checksum to be correct: see
    /// `ops::blocks`).
    pub(crate) fn read_payload(&self, e: &Entry, buf: &mut Vec<u8>, sum: bool) -> Result<()> {
        let pf = &self.packs[e.pack as usize];
        if sum { pack::read_payload(self, pf, e, buf) } else { pack::read_payload_bytes(self, pf, e, buf) }
    }

    /// The pack file holding a stored block (for error messages).
    pub(crate) fn pack_path(&self, e: &Entry) -> &std::path::Path {
        &self.packs[e.pack as usize].path
    }
}
