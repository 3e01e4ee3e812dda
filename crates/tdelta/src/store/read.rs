//! Reading blocks back: payload, checksum, base chain, decode, hash check.

use std::sync::atomic::{AtomicU64, Ordering};

use super::Store;
use super::pack::{self, Entry};
use crate::Hash;
use crate::codec::{self, CodecId};
use crate::{DType, Error, Result};

/// Deepest delta chain any policy writes (`chain:1000`): an index entry
/// claiming more is damage, refused before its chain is followed.
pub const MAX_DEPTH: u16 = 1000;

/// Reusable buffers of one reader thread: one block buffer (the other is
/// the caller's output) and one payload buffer, however deep the chain, so
/// that a long restore allocates only once.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    payload: Vec<u8>,
    other: Vec<u8>,
}

/// Counters of what block reads did; shared between threads.
#[derive(Debug, Default)]
pub struct ReadCounters {
    /// Blocks decoded (every level of every chain counts once).
    pub decoded: AtomicU64,
    /// Payload bytes read from packs.
    pub payload_bytes: AtomicU64,
    /// Deepest delta chain followed by one block read.
    pub max_levels: AtomicU64,
}

impl ReadCounters {
    fn record(&self, levels: u64, bytes: u64) {
        self.decoded.fetch_add(levels, Ordering::Relaxed);
        self.payload_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.max_levels.fetch_max(levels, Ordering::Relaxed);
    }
}

impl Store {
    /// The index entry of a stored block.
    pub(crate) fn entry(&self, hash: Hash) -> Result<&Entry> {
        self.index.get(&hash).ok_or_else(|| Error::MissingBlock { block: hash.to_hex() })
    }

    /// True when the store holds the block.
    pub(crate) fn has_block(&self, hash: Hash) -> bool {
        self.index.contains_key(&hash)
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

    /// Restores the raw bytes of block `hash` into `out` (resized to the
    /// block length), decoding its base chain first and checking the hash of
    /// every level.
    pub(crate) fn read_block(
        &self,
        hash: Hash,
        out: &mut Vec<u8>,
        scratch: &mut Scratch,
        counters: Option<&ReadCounters>,
    ) -> Result<()> {
        self.read_block_within(hash, MAX_DEPTH + 1, out, scratch, counters)
    }

    /// [`Store::read_block`] of a block that may need at most `max_levels`
    /// decodes; a deeper chain is refused as damage, not followed.
    pub(crate) fn read_block_within(
        &self,
        hash: Hash,
        max_levels: u16,
        out: &mut Vec<u8>,
        scratch: &mut Scratch,
        counters: Option<&ReadCounters>,
    ) -> Result<()> {
        let chain = self.chain_within(hash, max_levels)?;
        self.decode_chain(&chain, out, scratch, counters, |_, _| Ok(()))
    }

    /// Decodes block `hash` and its chain from the full block up, calling
    /// `visit` with each level's entry and bytes (the block itself last,
    /// also left in `out`).
    pub(crate) fn read_chain(
        &self,
        hash: Hash,
        out: &mut Vec<u8>,
        scratch: &mut Scratch,
        visit: impl FnMut(&Entry, &[u8]) -> Result<()>,
    ) -> Result<()> {
        let chain = self.chain(hash)?;
        self.decode_chain(&chain, out, scratch, None, visit)
    }

    fn decode_chain(
        &self,
        chain: &[&Entry],
        out: &mut Vec<u8>,
        scratch: &mut Scratch,
        counters: Option<&ReadCounters>,
        mut visit: impl FnMut(&Entry, &[u8]) -> Result<()>,
    ) -> Result<()> {
        let levels = chain.len();
        let mut bytes = 0u64;
        // Decode from the root up, two buffers in turn: each level is
        // decoded into one from its base in the other. The one decoded
        // last ends in `out`.
        let (mut base_buf, mut cur) =
            if levels % 2 == 1 { (&mut scratch.other, &mut *out) } else { (&mut *out, &mut scratch.other) };
        for (i, e) in chain.iter().rev().enumerate() {
            let base = if i == 0 {
                None
            } else {
                // A base shorter or longer than the block (a tensor that
                // gained or lost rows) is cut or zero-padded to its length.
                base_buf.resize(e.raw_len as usize, 0);
                Some(base_buf.as_slice())
            };
            self.decode_entry(e, base, cur, &mut scratch.payload)?;
            visit(e, cur)?;
            bytes += u64::from(e.stored_len);
            std::mem::swap(&mut base_buf, &mut cur);
        }
        if let Some(c) = counters {
            c.record(levels as u64, bytes);
        }
        Ok(())
    }

    /// Reads, checks and decodes one entry given its (already restored)
    /// base, and checks the result against the entry's hash.
    fn decode_entry(&self, e: &Entry, base: Option<&[u8]>, out: &mut Vec<u8>, payload: &mut Vec<u8>) -> Result<()> {
        let pf = &self.packs[e.pack as usize];
        pack::read_payload(&pf.file, &pf.path, e, payload)?;
        let codec = CodecId::from_u8(e.codec)?;
        let dtype = DType::from_code(e.dtype)
            .ok_or_else(|| Error::corrupt(&pf.path, format!("block {} has unknown dtype code {}", e.hash, e.dtype)))?;
        if codec.needs_base() != base.is_some() {
            return Err(Error::corrupt(
                &pf.path,
                format!("block {}: codec {} and base {:?} disagree", e.hash, codec.name(), e.base),
            ));
        }
        // Every codec writes each byte of `out` (or fails, and the buffer
        // is discarded): only a length change needs new zeroed bytes, so a
        // reused buffer is not cleared per block.
        out.resize(e.raw_len as usize, 0);
        codec::decode(dtype, codec, payload, base, out)?;
        let actual = e.hash.algo().block(out);
        if actual != e.hash {
            return Err(Error::HashMismatch { block: e.hash.to_hex(), actual: actual.to_hex() });
        }
        Ok(())
    }
}
