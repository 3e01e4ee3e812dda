//! Read-ahead of the pack ranges a read will decode, in the order the
//! decoders take its blocks and a bounded distance ahead of them.
//!
//! A cold read of one tensor decodes ~50 blocks, each from payloads in two
//! or more packs (the block and its delta bases). Hinting every range at
//! once, pack by pack, makes the disk deliver the whole first pack before
//! the second: the first block waits for almost all of the I/O. Hinting
//! window by window, in decode order, lets the first block start after
//! the first few windows and keeps the disk a few windows ahead of the
//! decoders, so reading overlaps decoding from the start. The first
//! windows are small and the next ones twice as large, up to the full
//! size: the disk serves what is in flight together, so the first block
//! waits for the first windows only, and those are a block or two.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::Hash;
use crate::store::Store;

/// Largest gap between two payloads read ahead as one range: reading a
/// few more bytes costs less than another request.
pub(super) const GAP: u64 = 64 << 10;

/// Payload bytes per window: a window is hinted in one go.
const WINDOW_BYTES: u64 = 2 << 20;

/// Payload bytes of the first window; window `k` holds up to `FIRST << k`
/// bytes, up to [`WINDOW_BYTES`]. With 2 MiB windows from the start a cold
/// 50 MB read waits ~5 ms for its first block; starting at a quarter of
/// a block cuts ~2 ms of that (medians over 30 runs, 2 cores).
const FIRST_WINDOW_BYTES: u64 = WINDOW_BYTES >> 3;

/// Windows hinted ahead of the one holding the block being decoded. The
/// disk serves the ranges in flight together, not one after the other:
/// more in flight delays the first block (8 windows ahead cost a cold
/// 50 MB read ~12 ms over 2), fewer starve the decoders.
const AHEAD: usize = 2;

/// One window: per pack, its merged byte ranges.
type Window = Vec<(u32, Vec<(u64, u64)>)>;

/// The read-ahead plan of one read: the payloads of its blocks, cut into
/// windows of consecutive blocks in decode order.
#[derive(Debug)]
pub(crate) struct ReadAhead<'s> {
    store: &'s Store,
    windows: Vec<Window>,
    /// Index of each block's window.
    window_of: Vec<usize>,
    /// The first window not yet hinted.
    next: AtomicUsize,
}

impl<'s> ReadAhead<'s> {
    /// Plans the read-ahead of blocks `hashes` (in decode order) and their
    /// chains of at most `bound` levels. A payload shared by several
    /// blocks is hinted once, in the window of the first; a block that
    /// cannot be found is left to the read itself to report.
    pub(crate) fn plan(store: &'s Store, hashes: impl Iterator<Item = Hash>, bound: u16) -> Self {
        Self::plan_in(store, hashes, bound, FIRST_WINDOW_BYTES, WINDOW_BYTES)
    }

    /// [`ReadAhead::plan`] with windows growing from `first` bytes to
    /// `window_bytes`.
    fn plan_in(
        store: &'s Store,
        hashes: impl Iterator<Item = Hash>,
        bound: u16,
        first: u64,
        window_bytes: u64,
    ) -> Self {
        let mut windows: Vec<Window> = Vec::new();
        let mut window_of = Vec::new();
        let mut seen = HashSet::new();
        let mut cur: BTreeMap<u32, Vec<(u64, u64)>> = BTreeMap::new();
        let mut bytes = 0u64;
        for h in hashes {
            if let Ok(chain) = store.chain_within(h, bound) {
                // Bases first: they are decoded first.
                for e in chain.into_iter().rev() {
                    if seen.insert(e.hash) {
                        cur.entry(e.pack).or_default().push((e.offset, u64::from(e.stored_len)));
                        bytes += u64::from(e.stored_len);
                    }
                }
            }
            window_of.push(windows.len());
            let growth = u32::try_from(windows.len()).ok().and_then(|k| 1u64.checked_shl(k)).unwrap_or(u64::MAX);
            if bytes >= first.saturating_mul(growth).min(window_bytes) {
                windows.push(merge(std::mem::take(&mut cur)));
                bytes = 0;
            }
        }
        if !cur.is_empty() {
            windows.push(merge(cur));
        }
        ReadAhead { store, windows, window_of, next: AtomicUsize::new(0) }
    }

    /// Called before block `k` (its index in the planned order) is read:
    /// hints every window not yet hinted up to `AHEAD` past block `k`'s,
    /// nearest first. Each window is hinted by exactly one caller.
    pub(crate) fn before(&self, k: usize) {
        let Some(&w) = self.window_of.get(k) else { return };
        let want = (w + AHEAD + 1).min(self.windows.len());
        loop {
            let n = self.next.load(Ordering::Acquire);
            if n >= want {
                return;
            }
            if self.next.compare_exchange(n, n + 1, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                for (pack, ranges) in &self.windows[n] {
                    if let Some(p) = self.store.packs.get(*pack as usize) {
                        self.store.backend().will_need(&p.name, ranges);
                    }
                }
            }
        }
    }
}

/// Each pack's ranges sorted and merged across gaps up to [`GAP`].
fn merge(by_pack: BTreeMap<u32, Vec<(u64, u64)>>) -> Window {
    by_pack
        .into_iter()
        .map(|(pack, mut ranges)| {
            ranges.sort_unstable();
            let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
            for (off, len) in ranges {
                match merged.last_mut() {
                    Some((s, l)) if off <= (*s + *l).saturating_add(GAP) => {
                        *l = (*l).max(off + len - *s);
                    }
                    _ => merged.push((off, len)),
                }
            }
            (pack, merged)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::blocks::tests::two_versions_of;

    #[test]
    fn windows_follow_decode_order_bases_with_their_blocks() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, blocks) = two_versions_of(tmp.path(), 16384);
        assert_eq!(blocks.len(), 16);
        let ra = ReadAhead::plan_in(&store, blocks.iter().copied(), 8, 6000, 6000);
        // Small windows: a few blocks (each with its base) per window, in
        // order, every window non-empty.
        assert!(ra.windows.len() >= 4, "{} windows", ra.windows.len());
        assert!(ra.window_of.windows(2).all(|w| w[0] <= w[1] && w[1] <= w[0] + 1), "{:?}", ra.window_of);
        assert!(ra.windows.iter().all(|w| !w.is_empty()));
        // Each block's payload and its base's are in the block's window.
        for (k, &h) in blocks.iter().enumerate() {
            let chain = store.chain_within(h, 8).unwrap();
            assert_eq!(chain.len(), 2, "block {k} is a delta");
            for e in chain {
                let w = &ra.windows[ra.window_of[k]];
                let (_, r) = w.iter().find(|(p, _)| *p == e.pack).expect("its pack is in the window");
                assert!(r.iter().any(|&(o, l)| o <= e.offset && e.offset + u64::from(e.stored_len) <= o + l));
            }
        }
        // Hints go a bounded distance ahead, each window once.
        ra.before(0);
        assert_eq!(ra.next.load(Ordering::Relaxed), (AHEAD + 1).min(ra.windows.len()));
        ra.before(blocks.len() - 1);
        ra.before(3);
        assert_eq!(ra.next.load(Ordering::Relaxed), ra.windows.len());
        ra.before(99);
    }

    #[test]
    fn windows_start_with_one_block_and_grow_to_the_full_size() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, blocks) = two_versions_of(tmp.path(), 65536);
        assert_eq!(blocks.len(), 64);
        let chain_bytes =
            |h: Hash| -> u64 { store.chain_within(h, 8).unwrap().iter().map(|e| u64::from(e.stored_len)).sum() };
        let per_block: Vec<u64> = blocks.iter().map(|&h| chain_bytes(h)).collect();
        let (first, full) = (per_block[0], 8 * per_block[0]);
        let ra = ReadAhead::plan_in(&store, blocks.iter().copied(), 8, first, full);
        let mut count = vec![0usize; ra.windows.len()];
        for &w in &ra.window_of {
            count[w] += 1;
        }
        // Window k closes on the block that brings it to `first << k`
        // bytes, at most `full`.
        let mut start = 0;
        for (k, &n) in count.iter().enumerate().take(count.len() - 1) {
            let limit = (first << k.min(8)).min(full);
            let bytes: u64 = per_block[start..start + n].iter().sum();
            assert!(bytes >= limit && bytes - per_block[start + n - 1] < limit, "window {k}: {count:?}");
            start += n;
        }
        assert_eq!(count[0], 1, "{count:?}");
        assert!(count[3] > count[1] && count[1] > count[0], "{count:?}");
        // Once at the full size, windows stop growing.
        let last_full = count.len() - 2;
        assert!(count[last_full] <= 9, "{count:?}");
    }

    #[test]
    fn ranges_merge_across_small_gaps_only() {
        let far = 1000 + 3 * GAP;
        let by_pack = BTreeMap::from([(3, vec![(100, 10), (0, 50), (50 + GAP, 5), (far, 1)])]);
        let w = merge(by_pack);
        assert_eq!(w, vec![(3, vec![(0, 55 + GAP), (far, 1)])]);
        // A range inside another adds nothing.
        assert_eq!(merge(BTreeMap::from([(0, vec![(0, 100), (10, 5)])])), vec![(0, vec![(0, 100)])]);
    }
}
