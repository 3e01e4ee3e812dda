//! Reading blocks back: a stored block's chain decoded from its full
//! block up, the payload of every level read through the store
//! ([`Store::read_payload`]), its codec and dtype checked, and the hash of
//! the block checked. That one hash proves every level below it and every
//! payload read (the codecs are bijections in their base, and fuzzed on
//! arbitrary payloads), so the payloads' checksums are not computed on the
//! way; any failure decodes the chain again checking every payload's
//! checksum and every level's hash, to name the damaged payload or block.
//! A block one delta from its full block (BF16, F16) decodes both levels
//! in one pass, the full block's words never stored.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::prefetch::{Prefetched, Taken};
use crate::Hash;
use crate::codec::{self, CodecId};
use crate::store::Store;
use crate::store::pack::Entry;
use crate::store::read::MAX_DEPTH;
use crate::{DType, Error, Result};

/// Reusable buffers of one reader thread: one block buffer (the other is
/// the caller's output) and one payload buffer, however deep the chain, so
/// that a long restore allocates only once.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    payload: Vec<u8>,
    other: Vec<u8>,
    /// The base of the block read by [`Store::read_block_into`].
    base: Vec<u8>,
    /// Payloads read ahead by a thread of their own, taken from there
    /// when there (reads that check the block's hash only).
    pub(crate) prefetched: Option<Arc<Prefetched>>,
}

/// A payload to decode: read into a buffer of the reader, or read ahead
/// (and decoded from where the read-ahead put it).
enum Payload<'b> {
    Read(&'b [u8]),
    Ahead(Taken),
}

impl std::ops::Deref for Payload<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Payload::Read(b) => b,
            Payload::Ahead(t) => t,
        }
    }
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

// Decoding is the engine's, not the store's: the store locates entries and
// returns payload bytes; these methods live here, next to the codecs' use.
/// Which levels of a chain a decode checks against their hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// None: the caller checks what it builds on top.
    Nothing,
    /// The top level, the block returned (it proves the levels below).
    Top,
    /// Every level, to name the damaged one.
    Every,
}

impl Check {
    /// Whether a level is checked; `top` says it is the chain's last.
    fn level(self, top: bool) -> bool {
        match self {
            Check::Nothing => false,
            Check::Top => top,
            Check::Every => true,
        }
    }

    /// Whether the payloads' checksums are checked: only to name what is
    /// damaged once a check failed (the block's hash proves them).
    fn sums(self) -> bool {
        self == Check::Every
    }
}

impl Store {
    /// Restores the raw bytes of block `hash` into `out` (resized to the
    /// block length), decoding its base chain first and checking its hash
    /// (every level's when that fails, to name the damaged block).
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
    /// decodes; a deeper chain is refused as damage, not followed. A block
    /// one delta from its full block is decoded with both levels in one
    /// pass where the codecs allow ([`Store::decode_over_full`]).
    pub(crate) fn read_block_within(
        &self,
        hash: Hash,
        max_levels: u16,
        out: &mut Vec<u8>,
        scratch: &mut Scratch,
        counters: Option<&ReadCounters>,
    ) -> Result<()> {
        let chain = self.chain_within(hash, max_levels)?;
        if let [top, root] = chain[..] {
            out.resize(top.raw_len as usize, 0);
            match self.decode_over_full(root, top, out, scratch) {
                Ok(true) => {
                    if let Some(c) = counters {
                        c.record(2, u64::from(root.stored_len) + u64::from(top.stored_len));
                    }
                    return Ok(());
                }
                Ok(false) => {}
                Err(e) => return Err(self.name_damage(&chain, scratch, e)),
            }
        }
        self.decode_chain(&chain, out, scratch, counters, |_, _| Ok(()))
    }

    /// Reads the full blocks `a` and `b` (stored whole: chains of one
    /// level) at once, their streams interleaved ([`codec::decode_two_full`]),
    /// into `out_a` and `out_b` (resized to their length), and checks both
    /// hashes. False when not done that way (other codecs, lengths or
    /// depths, a CPU without the decoder, or any read, decode or check
    /// failing): the caller then reads each alone, which reports damage.
    pub(crate) fn read_two_full(
        &self,
        (a, out_a): (Hash, &mut Vec<u8>),
        (b, out_b): (Hash, &mut Vec<u8>),
        scratch: &mut Scratch,
    ) -> bool {
        let (Ok(ea), Ok(eb)) = (self.entry(a), self.entry(b)) else { return false };
        let planes = CodecId::Planes as u8;
        if ea.depth != 0 || eb.depth != 0 || ea.base.is_some() || eb.base.is_some() {
            return false;
        }
        if ea.codec != planes || eb.codec != planes || ea.dtype != eb.dtype || ea.raw_len != eb.raw_len {
            return false;
        }
        let Some(dtype) = DType::from_code(ea.dtype) else { return false };
        if self.read_payload(ea, &mut scratch.payload, false).is_err()
            || self.read_payload(eb, &mut scratch.other, false).is_err()
        {
            return false;
        }
        out_a.resize(ea.raw_len as usize, 0);
        out_b.resize(eb.raw_len as usize, 0);
        codec::decode_two_full(dtype, &scratch.payload, out_a, &scratch.other, out_b)
            && a.algo().block(out_a) == a
            && b.algo().block(out_b) == b
    }

    /// The error to report for a failed read of `chain` (`e`): the chain
    /// decoded again with every payload and level checked names the
    /// damaged one; when that pass goes through (a transient read error),
    /// `e` itself.
    fn name_damage(&self, chain: &[&Entry], scratch: &mut Scratch, e: Error) -> Error {
        let mut again = Vec::new();
        match self.decode_levels(chain, &mut again, scratch, Check::Every, &mut |_, _| Ok(())) {
            Err(named) => named,
            Ok(_) => e,
        }
    }

    /// Reads block `hash` (at most `max_levels` decodes) into `out`, which
    /// must be exactly the block's length: the block itself is decoded
    /// straight into `out`, with no copy (one delta from its full block:
    /// both levels in one pass, where the codecs allow). Only the block's
    /// own hash is checked, not those of the bases it is decoded from: a
    /// damaged base can only give a block that fails that check, and one
    /// hash over the output instead of one per level is what makes a read
    /// of a few tensors cheap.
    pub(crate) fn read_block_into(
        &self,
        hash: Hash,
        max_levels: u16,
        out: &mut [u8],
        scratch: &mut Scratch,
    ) -> Result<()> {
        let chain = self.chain_within(hash, max_levels)?;
        let top = chain[0];
        if top.raw_len as usize != out.len() {
            return Err(Error::corrupt(
                self.pack_path(top),
                format!("block {} is {} bytes where the manifest expects {}", top.hash, top.raw_len, out.len()),
            ));
        }
        let mut base = std::mem::take(&mut scratch.base);
        let res = (|| {
            let below = &chain[1..];
            if let [root] = below
                && self.decode_over_full(root, top, out, scratch)?
            {
                return Ok(());
            }
            if !below.is_empty() {
                self.decode_levels(below, &mut base, scratch, Check::Nothing, &mut |_, _| Ok(()))?;
                base.resize(top.raw_len as usize, 0);
            }
            let base = (!below.is_empty()).then_some(base.as_slice());
            self.decode_entry_into(top, base, out, (&mut scratch.payload, scratch.prefetched.as_deref()), true, false)
        })();
        scratch.base = base;
        res.map_err(|e| self.name_damage(&chain, scratch, e))
    }

    /// Decodes `top`, one delta from the full block `root` of the same
    /// length, straight into `out` with both levels in one pass
    /// ([`codec::decode_over_full`]: the full block is never stored), and
    /// checks its hash. False, with nothing read, when the codecs or the
    /// CPU do not allow it; false too when a payload does not decode that
    /// way (the caller then decodes level by level, which reports it).
    fn decode_over_full(&self, root: &Entry, top: &Entry, out: &mut [u8], scratch: &mut Scratch) -> Result<bool> {
        let (Ok(rc), Ok(tc)) = (CodecId::from_u8(root.codec), CodecId::from_u8(top.codec)) else { return Ok(false) };
        let Some(dtype) = DType::from_code(top.dtype) else { return Ok(false) };
        if root.dtype != top.dtype || root.raw_len != top.raw_len || !codec::decodes_over_full(dtype, rc, tc) {
            return Ok(false);
        }
        let pf = scratch.prefetched.as_deref();
        let root_payload = self.payload(root, &mut scratch.other, false, pf)?;
        let top_payload = self.payload(top, &mut scratch.payload, false, pf)?;
        if !codec::decode_over_full(dtype, rc, &root_payload, tc, &top_payload, out) {
            return Ok(false);
        }
        let actual = top.hash.algo().block(out);
        if actual != top.hash {
            return Err(Error::HashMismatch { block: top.hash.to_hex(), actual: actual.to_hex() });
        }
        Ok(true)
    }

    /// Decodes block `hash` and its chain from the full block up, calling
    /// `visit` with each level's entry and bytes (the block itself last,
    /// also left in `out`). Only the block's hash is checked (before it is
    /// visited, the levels below are not): a caller that keeps the bytes
    /// of a lower level checks that level's hash itself.
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

    /// Decodes `chain` (the block first, its full block last) into `out`.
    /// Only the block's own hash is checked on the way: a wrong level or
    /// payload below it (the codecs are bijections in the base) cannot
    /// give the right bytes on top, so one hash check proves every level.
    /// When the check, a read or a decode fails, the chain is decoded
    /// again with every payload and level checked, so that the error names
    /// the damaged one.
    fn decode_chain(
        &self,
        chain: &[&Entry],
        out: &mut Vec<u8>,
        scratch: &mut Scratch,
        counters: Option<&ReadCounters>,
        mut visit: impl FnMut(&Entry, &[u8]) -> Result<()>,
    ) -> Result<()> {
        match self.decode_levels(chain, out, scratch, Check::Top, &mut visit) {
            Ok(bytes) => {
                if let Some(c) = counters {
                    c.record(chain.len() as u64, bytes);
                }
                Ok(())
            }
            Err(e) => Err(self.name_damage(chain, scratch, e)),
        }
    }

    /// Decodes `chain` from the root up, checking the hashes `check` asks
    /// for; returns the payload bytes read.
    fn decode_levels(
        &self,
        chain: &[&Entry],
        out: &mut Vec<u8>,
        scratch: &mut Scratch,
        check: Check,
        visit: &mut dyn FnMut(&Entry, &[u8]) -> Result<()>,
    ) -> Result<u64> {
        let levels = chain.len();
        let mut bytes = 0u64;
        let pf = scratch.prefetched.clone();
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
            cur.resize(e.raw_len as usize, 0);
            let (hash, sum) = (check.level(i + 1 == levels), check.sums());
            self.decode_entry_into(e, base, cur, (&mut scratch.payload, pf.as_deref()), hash, sum)?;
            visit(e, cur)?;
            bytes += u64::from(e.stored_len);
            std::mem::swap(&mut base_buf, &mut cur);
        }
        Ok(bytes)
    }

    /// The payload of `e`: taken from `pf` when it was read ahead there
    /// and `sum` (a checksum check, to name damage) is not asked for, else
    /// read from its pack into `buf`.
    fn payload<'b>(&self, e: &Entry, buf: &'b mut Vec<u8>, sum: bool, pf: Option<&Prefetched>) -> Result<Payload<'b>> {
        if !sum && let Some(t) = pf.and_then(|p| p.take(e)) {
            return Ok(Payload::Ahead(t));
        }
        self.read_payload(e, buf, sum)?;
        Ok(Payload::Read(buf))
    }

    /// Reads and decodes one entry given its (already restored) base into
    /// `out` (of the entry's length), checking its payload's checksum when
    /// `sum` and the result against the entry's hash when `check`.
    fn decode_entry_into(
        &self,
        e: &Entry,
        base: Option<&[u8]>,
        out: &mut [u8],
        (payload, pf): (&mut Vec<u8>, Option<&Prefetched>),
        check: bool,
        sum: bool,
    ) -> Result<()> {
        let payload = self.payload(e, payload, sum, pf)?;
        let path = self.pack_path(e);
        let codec = CodecId::from_u8(e.codec)?;
        let dtype = DType::from_code(e.dtype)
            .ok_or_else(|| Error::corrupt(path, format!("block {} has unknown dtype code {}", e.hash, e.dtype)))?;
        if codec.needs_base() != base.is_some() {
            return Err(Error::corrupt(
                path,
                format!("block {}: codec {} and base {:?} disagree", e.hash, codec.name(), e.base),
            ));
        }
        // Every codec writes each byte of `out` (or fails, and the buffer
        // is discarded): only a length change needs new zeroed bytes, so a
        // reused buffer is not cleared per block (callers resize it).
        codec::decode(dtype, codec, &payload, base, out)?;
        if check {
            let actual = e.hash.algo().block(out);
            if actual != e.hash {
                return Err(Error::HashMismatch { block: e.hash.to_hex(), actual: actual.to_hex() });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use safetensors::tensor::{Dtype, TensorView};

    use super::*;
    use crate::ops::{PackOptions, Policy, Silent, pack};
    use crate::testutil::noise;
    use crate::{InitOptions, Store};

    /// A store holding two versions of one F32 tensor, the second a delta
    /// (chain:4); returns the store and the second version's block hashes.
    fn two_versions(dir: &std::path::Path) -> (Store, Vec<Hash>) {
        two_versions_of(dir, 4096)
    }

    /// [`two_versions`] of a tensor of `n` elements (blocks of 4 KiB, so
    /// `n / 1024` blocks).
    pub(crate) fn two_versions_of(dir: &std::path::Path, n: usize) -> (Store, Vec<Hash>) {
        let mut store = Store::init(&dir.join("store"), &InitOptions { block_size: 4096 }).unwrap();
        let mut w = noise(3, 4 * n);
        let src = dir.join("m.safetensors");
        for step in 0..2u8 {
            if step == 1 {
                for x in w.iter_mut().step_by(4) {
                    *x ^= 1;
                }
            }
            let opts = PackOptions { policy: Policy::Chain(4), ..Default::default() };
            pack_tensor(&mut store, &src, (Dtype::F32, n, &w), &opts);
        }
        head_blocks(store)
    }

    /// Packs a file of the one tensor `w` (`dtype`, `n` elements) at `src`.
    fn pack_tensor(store: &mut Store, src: &std::path::Path, (dtype, n, w): (Dtype, usize, &[u8]), o: &PackOptions) {
        let views = vec![("w".to_string(), TensorView::new(dtype, vec![n], w).unwrap())];
        std::fs::write(src, safetensors::serialize(views, None).unwrap()).unwrap();
        pack(store, src, o, &Silent).unwrap();
    }

    /// The store (its indexes reloaded) and the block ids of `HEAD`'s
    /// first tensor.
    fn head_blocks(mut store: Store) -> (Store, Vec<Hash>) {
        store.load_packs().unwrap();
        let head = store.read_ref("HEAD").unwrap().unwrap();
        let blocks = store.manifest(head).unwrap().files[0].tensors()[0].blocks.clone();
        (store, blocks)
    }

    /// Flips bits of the byte in the middle of `e`'s payload in its pack;
    /// returns the pack's bytes before, to put back.
    pub(crate) fn damage_payload(store: &Store, e: &Entry, bits: u8) -> (std::path::PathBuf, Vec<u8>) {
        use std::io::{Seek, SeekFrom, Write};
        let path = store.pack_path(e).to_path_buf();
        let good = std::fs::read(&path).unwrap();
        let at = e.offset + u64::from(e.stored_len) / 2;
        let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(&[good[at as usize] ^ bits]).unwrap();
        (path, good)
    }

    #[test]
    fn a_chain_decodes_from_its_full_block_up_to_the_block_asked_for() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, blocks) = two_versions(tmp.path());
        let top = blocks[0];
        assert_eq!(store.entry(top).unwrap().depth, 1);
        let mut levels = Vec::new();
        let (mut out, mut scratch) = (Vec::new(), Scratch::default());
        store
            .read_chain(top, &mut out, &mut scratch, |e, b| {
                levels.push((e.depth, e.hash.algo().block(b) == e.hash));
                Ok(())
            })
            .unwrap();
        assert_eq!(levels, vec![(0, true), (1, true)]);
        let counters = ReadCounters::default();
        let mut again = Vec::new();
        store.read_block(top, &mut again, &mut scratch, Some(&counters)).unwrap();
        assert_eq!(again, out);
        assert_eq!(top.algo().block(&again), top);
        assert_eq!(counters.decoded.load(Ordering::Relaxed), 2);
        assert_eq!(counters.max_levels.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn only_the_top_hash_is_checked_unless_it_fails_then_the_lowest_bad_level_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, blocks) = two_versions(tmp.path());
        let chain: Vec<Entry> = store.chain(blocks[0]).unwrap().into_iter().copied().collect();
        assert_eq!(chain.len(), 2);
        let bogus = Hash::of(b"not this block");
        let (mut out, mut scratch) = (Vec::new(), Scratch::default());
        // The root's recorded id is wrong, the bytes right: the top's check
        // proves them, the root's own check would not pass.
        let with_hash = |e: Entry, hash| Entry { index: tdelta_format::pack::IndexEntry { hash, ..e.index }, ..e };
        let root_off = [chain[0], with_hash(chain[1], bogus)];
        let refs: Vec<&Entry> = root_off.iter().collect();
        store.decode_chain(&refs, &mut out, &mut scratch, None, |_, _| Ok(())).unwrap();
        assert_eq!(blocks[0].algo().block(&out), blocks[0]);
        let e = store.decode_levels(&refs, &mut out, &mut scratch, Check::Every, &mut |_, _| Ok(())).unwrap_err();
        assert!(e.to_string().contains(&bogus.to_hex()), "{e}");
        // Both wrong: the failing top check leads to a checked pass, which
        // names the lowest level.
        let top = Hash::of(b"nor this one");
        let both = [with_hash(chain[0], top), with_hash(chain[1], bogus)];
        let refs: Vec<&Entry> = both.iter().collect();
        let e = store.decode_chain(&refs, &mut out, &mut scratch, None, |_, _| Ok(())).unwrap_err();
        assert!(e.to_string().contains(&bogus.to_hex()) && !e.to_string().contains(&top.to_hex()), "{e}");
    }

    #[test]
    fn payload_checksums_are_computed_only_to_name_a_damaged_payload() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, blocks) = two_versions(tmp.path());
        let chain: Vec<Entry> = store.chain(blocks[0]).unwrap().into_iter().copied().collect();
        let (mut out, mut scratch) = (Vec::new(), Scratch::default());
        // Recorded checksums that are wrong, payloads right: a read that
        // passes its hash check does not compute them.
        let with_sum =
            |e: Entry| Entry { index: tdelta_format::pack::IndexEntry { checksum: !e.checksum, ..e.index }, ..e };
        let sums_off = [with_sum(chain[0]), with_sum(chain[1])];
        let refs: Vec<&Entry> = sums_off.iter().collect();
        store.decode_chain(&refs, &mut out, &mut scratch, None, |_, _| Ok(())).unwrap();
        assert_eq!(blocks[0].algo().block(&out), blocks[0]);
        // A damaged payload, of the root or of the block on top, fails the
        // read; the error names the payload by its checksum, whichever way
        // the block is read.
        for (level, e) in [(1, chain[1]), (0, chain[0])] {
            let (path, good) = damage_payload(&store, &e, 0x55);
            let want = format!("payload of block {} at offset {} fails its checksum", e.hash, e.offset);
            let mut errs = vec![store.read_block(blocks[0], &mut out, &mut scratch, None).unwrap_err()];
            let mut exact = vec![0u8; 4096];
            errs.push(store.read_block_into(blocks[0], 2, &mut exact, &mut scratch).unwrap_err());
            if level == 1 {
                // The root alone, a chain of one level.
                errs.push(store.read_block(e.hash, &mut out, &mut scratch, None).unwrap_err());
            }
            for err in errs {
                assert_eq!(err.corrupt_kind(), Some(crate::CorruptKind::Checksum), "level {level}: {err}");
                assert!(err.to_string().contains(&want), "level {level}: {err}");
            }
            std::fs::write(&path, &good).unwrap();
        }
    }

    /// A store holding a BF16 tensor (weights of realistic spread, 16
    /// blocks of 4 KiB) and a fine-tune of it one delta away; returns the
    /// second version's block hashes.
    pub(crate) fn bf16_versions(dir: &std::path::Path) -> (Store, Vec<Hash>) {
        let mut store = Store::init(&dir.join("store"), &InitOptions { block_size: 4096 }).unwrap();
        let mut r = crate::testutil::Rng(11);
        let base: Vec<u16> = (0..32_768).map(|_| half::bf16::from_f64(r.normal() * 0.02).to_bits()).collect();
        let src = dir.join("m.safetensors");
        for step in 0..2u16 {
            let w: Vec<u8> =
                base.iter().enumerate().flat_map(|(i, &b)| (b + step * (i % 3 == 0) as u16).to_le_bytes()).collect();
            pack_tensor(&mut store, &src, (Dtype::BF16, 32_768, &w), &PackOptions::default());
        }
        head_blocks(store)
    }

    #[test]
    fn a_bf16_delta_over_its_full_block_reads_in_one_pass_with_the_same_bytes_and_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, blocks) = bf16_versions(tmp.path());
        let mut scratch = Scratch::default();
        let mut one_pass = 0;
        for &b in &blocks {
            let chain: Vec<Entry> = store.chain(b).unwrap().into_iter().copied().collect();
            assert_eq!(chain.len(), 2, "every block is a delta over a full block");
            let (rc, tc) = (CodecId::from_u8(chain[1].codec).unwrap(), CodecId::from_u8(chain[0].codec).unwrap());
            one_pass += usize::from(codec::decodes_over_full(DType::BF16, rc, tc));
            let mut want = Vec::new();
            store.read_block(b, &mut want, &mut scratch, None).unwrap();
            let mut out = vec![0u8; want.len()];
            store.read_block_into(b, 2, &mut out, &mut scratch).unwrap();
            assert!(out == want);
            assert_eq!(b.algo().block(&out), b);
        }
        if codec::decodes_over_full(DType::BF16, CodecId::Planes, CodecId::UlpPlanes) {
            assert!(one_pass > 0, "no block took the one-pass decode");
        }
        // A damaged payload of either level is named by its checksum.
        let chain: Vec<Entry> = store.chain(blocks[3]).unwrap().into_iter().copied().collect();
        for e in [chain[1], chain[0]] {
            let (path, good) = damage_payload(&store, &e, 0x10);
            let mut out = vec![0u8; e.raw_len as usize];
            let err = store.read_block_into(blocks[3], 2, &mut out, &mut scratch).unwrap_err();
            assert_eq!(err.corrupt_kind(), Some(crate::CorruptKind::Checksum), "{err}");
            assert!(err.to_string().contains(&format!("payload of block {} at offset", e.hash)), "{err}");
            std::fs::write(&path, &good).unwrap();
        }
    }

    #[test]
    fn two_full_blocks_read_at_once_as_one_by_one_and_nothing_else_does() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, blocks) = bf16_versions(tmp.path());
        let roots: Vec<Hash> = blocks.iter().map(|&b| store.chain(b).unwrap()[1].hash).collect();
        let mut scratch = Scratch::default();
        let fused = codec::decodes_over_full(DType::BF16, CodecId::Planes, CodecId::UlpPlanes);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let (mut want_a, mut want_b) = (Vec::new(), Vec::new());
        for pair in roots.windows(2) {
            assert_eq!(store.read_two_full((pair[0], &mut a), (pair[1], &mut b), &mut scratch), fused);
            if fused {
                store.read_block(pair[0], &mut want_a, &mut scratch, None).unwrap();
                store.read_block(pair[1], &mut want_b, &mut scratch, None).unwrap();
                assert!(a == want_a && b == want_b);
            }
        }
        // A delta is not a full block.
        assert!(!store.read_two_full((blocks[0], &mut a), (roots[1], &mut b), &mut scratch));
        // A damaged payload: not done (a read alone names the damage).
        let (path, good) = damage_payload(&store, store.entry(roots[1]).unwrap(), 0x10);
        assert!(!store.read_two_full((roots[0], &mut a), (roots[1], &mut b), &mut scratch));
        let err = store.read_block(roots[1], &mut a, &mut scratch, None).unwrap_err();
        assert_eq!(err.corrupt_kind(), Some(crate::CorruptKind::Checksum), "{err}");
        std::fs::write(&path, &good).unwrap();
    }

    #[test]
    fn a_chain_deeper_than_allowed_is_refused_before_decoding() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, blocks) = two_versions(tmp.path());
        let counters = ReadCounters::default();
        let err = store
            .read_block_within(blocks[0], 1, &mut Vec::new(), &mut Scratch::default(), Some(&counters))
            .unwrap_err();
        assert!(err.to_string().contains("claims a chain of 2 levels"), "{err}");
        assert_eq!(counters.decoded.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_block_decodes_in_place_into_a_slice_of_its_length() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, blocks) = two_versions(tmp.path());
        let mut scratch = Scratch::default();
        for &b in &blocks {
            let mut want = Vec::new();
            store.read_block(b, &mut want, &mut scratch, None).unwrap();
            let mut out = vec![0u8; want.len()];
            store.read_block_into(b, 2, &mut out, &mut scratch).unwrap();
            assert_eq!(out, want);
        }
        let e = store.read_block_into(blocks[0], 2, &mut [0u8; 3], &mut scratch).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Corrupt, "{e}");
        assert!(
            e.to_string().ends_with(&format!("block {} is 4096 bytes where the manifest expects 3", blocks[0])),
            "{e}"
        );
        let e = store.read_block_into(blocks[0], 1, &mut [0u8; 4096], &mut scratch).unwrap_err();
        assert!(e.to_string().contains("claims a chain of 2 levels"), "{e}");
    }
}
