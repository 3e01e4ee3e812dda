//! Cold reads around the page cache, on reader threads of their own, for
//! a read whose payloads are not in the page cache ([`Backend::cached`],
//! [`Backend::read_direct`]: a local store, `O_DIRECT`).
//!
//! A payload read through the page cache is copied once more, from the
//! cache into the decoder's buffer, and on a VM whose memory the host
//! takes back once freed, each page the cache refills is faulted in on the
//! host too: a cold read of a 50 MB tensor's 43 MB of payloads took 46 ms
//! that way, and 20 ms with `O_DIRECT` reads of 1 MiB. So the payloads a
//! read will decode are merged, pack by pack, into ranges in decode order
//! (bases first), the first ones small ([`FIRST_RANGE_BYTES`], so that the
//! first block waits for little) and the next ones twice as large up to
//! [`RANGE_BYTES`]; [`READERS`] threads read the ranges in that order, at
//! most [`AHEAD_BYTES`] ahead of the decoders, into aligned buffers the
//! decoders decode from directly ([`Prefetched::take`]), which are then
//! reused (by this read and the next ones: [`POOL_MAX`]). A decoder that
//! would wait for the disk faults in the output of a later block instead
//! ([`Prefetched::prefault_while_waiting`]).
//!
//! A read that does go around the page cache leaves it as cold as it was:
//! reading the same tensor again reads the disk again. Setting
//! `TDELTA_DIRECT_READS=0` sends every read through the page cache.
//!
//! A range the page cache holds is left to the decoders' usual reads, as
//! is a payload not read ahead (a read error, or one taken more often than
//! planned): those report any error. Nothing here decides what a read
//! returns: every block's hash is checked after its decode, and any
//! failure is decoded again from the packs, checking every checksum, to
//! name the damage.
//!
//! [`Backend::cached`]: crate::backend::Backend::cached
//! [`Backend::read_direct`]: crate::backend::Backend::read_direct

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::read_ahead::GAP;
use crate::Hash;
use crate::store::Store;
use crate::store::pack::Entry;

/// Bytes read ahead and not yet taken, at most (one more range per reader
/// may pass). A 50 MB BF16 tensor read cold (medians of 10 runs of 3,
/// alternating): 4 and 8 MiB alike, 0.0368 and 0.0386 s.
const AHEAD_BYTES: u64 = 4 << 20;

/// Largest range read at once. With 3 readers, 1 MiB ranges: 0.0367 s;
/// 2 MiB: 0.0406 s (the decoders wait longer for each).
const RANGE_BYTES: u64 = 1 << 20;

/// Largest first range of a read; range `k` may hold `FIRST_RANGE_BYTES
/// << k` bytes, up to [`RANGE_BYTES`].
const FIRST_RANGE_BYTES: u64 = RANGE_BYTES >> 2;

/// Threads reading ranges, so requests in flight: the disk is kept busy
/// while a reader waits for a core to issue its next request. Three: 0.0367
/// s; two: 0.0390 s; four with 512 KiB ranges: 0.0387 s.
pub(crate) const READERS: usize = 3;

/// The longest a decoder waits for a payload before reading it itself: a
/// bound, not a timing (the readers are normally milliseconds ahead).
const WAIT: Duration = Duration::from_secs(2);

/// Alignment of `O_DIRECT` reads (offset, address and length).
const ALIGN: usize = 4096;

/// Bytes of one pooled buffer: a whole range, with room to align its start
/// and its end.
const BUF_BYTES: usize = RANGE_BYTES as usize + 3 * ALIGN;

/// Buffers kept for later reads, at most (about as many as one read holds
/// at once: ranges ahead, in flight and being decoded): ~12 MiB.
const POOL_MAX: usize = (AHEAD_BYTES / RANGE_BYTES) as usize + READERS + 5;

/// Buffers of earlier reads, faulted in already, shared by all reads.
static POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// A buffer for a read of `span` bytes (and its alignment): a pooled one
/// when that is large enough.
fn buffer(span: usize) -> Vec<u8> {
    let need = span + ALIGN;
    if need <= BUF_BYTES
        && let Some(b) = POOL.lock().unwrap_or_else(|p| p.into_inner()).pop()
    {
        return b;
    }
    vec![0u8; need.max(BUF_BYTES)]
}

/// Gives a buffer back to the pool when this was its last holder (and it
/// is of the pooled size, and the pool is not full).
fn recycle(buf: Arc<Vec<u8>>) {
    if let Some(b) = Arc::into_inner(buf)
        && b.len() == BUF_BYTES
    {
        let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < POOL_MAX {
            pool.push(b);
        }
    }
}

/// Whether cold reads may go around the page cache, given the value of
/// `TDELTA_DIRECT_READS`: yes unless it is `0`, `off`, `no` or `false`
/// (then every read goes through the page cache, and leaves what it read
/// there for the next one).
fn direct_reads_wanted(setting: Option<&str>) -> bool {
    !setting.is_some_and(|v| ["0", "off", "no", "false"].contains(&v.trim().to_ascii_lowercase().as_str()))
}

/// One range of one pack, read at once.
#[derive(Debug, PartialEq, Eq)]
struct Range {
    pack: u32,
    offset: u64,
    len: u64,
    /// Payload takes planned in it.
    uses: u32,
}

/// A range read: its buffer, where the range's first byte is in it, and
/// the takes left.
#[derive(Debug)]
struct Held {
    buf: Arc<Vec<u8>>,
    at: usize,
    left: u32,
}

#[derive(Debug)]
struct State {
    /// Ranges read and not yet fully taken.
    ready: HashMap<usize, Held>,
    /// Per range: its read ended (read, left to the page cache, or failed).
    ended: Vec<bool>,
    /// Bytes in `ready`.
    held: u64,
    /// The read is over (or failed): readers stop, decoders stop waiting.
    stopped: bool,
}

/// A payload read ahead, decoded from where the reader put it; its buffer
/// goes back to the pool when the last payload of its range is dropped.
#[derive(Debug)]
pub(crate) struct Taken {
    buf: Option<Arc<Vec<u8>>>,
    from: usize,
    len: usize,
}

impl std::ops::Deref for Taken {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.buf {
            Some(b) => &b[self.from..self.from + self.len],
            None => &[],
        }
    }
}

impl Drop for Taken {
    fn drop(&mut self) {
        if let Some(b) = self.buf.take() {
            recycle(b);
        }
    }
}

/// Stops a read's readers when dropped ([`Prefetched::stop_on_drop`]).
pub(crate) struct StopOnDrop<'a>(&'a Prefetched);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// The payloads of one read, read ahead by [`Prefetched::run`] and taken
/// by the decoders with [`Prefetched::take`].
#[derive(Debug)]
pub(crate) struct Prefetched {
    ranges: Vec<Range>,
    /// Range of each payload and its offset in it, by (pack, offset).
    slot_of: HashMap<(u32, u64), (usize, u64)>,
    /// The next range to read.
    next: AtomicUsize,
    state: Mutex<State>,
    changed: Condvar,
    /// Output ranges (address, length) of the read's blocks, faulted in by
    /// decoders that would otherwise wait for the disk.
    outputs: Vec<(usize, usize)>,
    /// The next of `outputs` to fault in.
    next_output: AtomicUsize,
    /// Ranges the page cache holds are left to the decoders' usual reads.
    leave_cached: bool,
}

impl Prefetched {
    /// Plans the read of blocks `hashes` (in decode order) and of their
    /// chains of at most `bound` levels. `None`, before any planning, when
    /// the first payload read is in the page cache (a warm read: the usual
    /// reads serve it best) or the store cannot tell or read around it
    /// (not a local store, or a file system without `O_DIRECT`).
    pub(crate) fn plan(store: &Store, hashes: impl Iterator<Item = Hash>, bound: u16) -> Option<Self> {
        static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        if !*ON.get_or_init(|| direct_reads_wanted(std::env::var("TDELTA_DIRECT_READS").ok().as_deref())) {
            return None;
        }
        let mut hashes = hashes.peekable();
        // The first payload read: the first block's full block.
        let chain = store.chain_within(*hashes.peek()?, bound).ok()?;
        let root = chain.last()?;
        let pack = store.packs.get(root.pack as usize)?;
        if store.backend().cached(&pack.name, root.offset, u64::from(root.stored_len)) != Some(false) {
            return None;
        }
        Some(Self::plan_in(store, hashes, bound, (FIRST_RANGE_BYTES, RANGE_BYTES), true))
    }

    /// [`Prefetched::plan`] whatever the page cache holds, with ranges
    /// growing from `first` bytes to `most`: each pack's payloads merged
    /// into ranges in the order they are first needed, bases first. A
    /// block that cannot be found is left to the read itself to report.
    /// `leave_cached`: the readers leave ranges the page cache holds to
    /// the decoders' usual reads (else they read every range).
    fn plan_in(
        store: &Store,
        hashes: impl Iterator<Item = Hash>,
        bound: u16,
        (first, most): (u64, u64),
        leave_cached: bool,
    ) -> Self {
        // Payloads in order of first use, with their number of takes.
        let mut order: Vec<(u32, u64, u64)> = Vec::new();
        let mut takes: HashMap<(u32, u64), u32> = HashMap::new();
        let mut this_block = HashSet::new();
        for h in hashes {
            let Ok(chain) = store.chain_within(h, bound) else { continue };
            this_block.clear();
            for e in chain.into_iter().rev() {
                if !this_block.insert((e.pack, e.offset)) {
                    continue;
                }
                let t = takes.entry((e.pack, e.offset)).or_insert(0);
                if *t == 0 {
                    order.push((e.pack, e.offset, u64::from(e.stored_len)));
                }
                *t += 1;
            }
        }
        // Per pack, the open range grows while the next payload follows it
        // closely and fits; ranges are numbered as they are opened, so in
        // order of first use.
        let mut ranges: Vec<Range> = Vec::new();
        let mut open: BTreeMap<u32, usize> = BTreeMap::new();
        let mut slot_of = HashMap::with_capacity(order.len());
        for (pack, offset, len) in order {
            let uses = takes[&(pack, offset)];
            // Range `k` holds up to `first << k` bytes, up to `most`.
            let limit = |k: usize| first.checked_shl(k.min(32) as u32).unwrap_or(u64::MAX).min(most);
            let joined = open.get(&pack).copied().filter(|&k| {
                let r = &ranges[k];
                offset >= r.offset && offset <= r.offset + r.len + GAP && offset + len - r.offset <= limit(k)
            });
            let r = match joined {
                Some(r) => {
                    let range = &mut ranges[r];
                    range.len = range.len.max(offset + len - range.offset);
                    range.uses += uses;
                    r
                }
                None => {
                    ranges.push(Range { pack, offset, len, uses });
                    open.insert(pack, ranges.len() - 1);
                    ranges.len() - 1
                }
            };
            slot_of.insert((pack, offset), (r, offset - ranges[r].offset));
        }
        let state = State { ready: HashMap::new(), ended: vec![false; ranges.len()], held: 0, stopped: false };
        Prefetched {
            ranges,
            slot_of,
            next: AtomicUsize::new(0),
            state: Mutex::new(state),
            changed: Condvar::new(),
            outputs: Vec::new(),
            next_output: AtomicUsize::new(0),
            leave_cached,
        }
    }

    /// Has decoders that would wait for a payload fault in the next of
    /// `outputs` first (the address and length of each block's output, in
    /// decode order: memory the read may write, and does not free before
    /// it ends). The kernel then zeroes the fresh pages of the output
    /// while the disk reads, not later: ~3% off a cold 50 MB read.
    pub(crate) fn prefault_while_waiting(mut self, outputs: Vec<(usize, usize)>) -> Self {
        self.outputs = outputs;
        self
    }

    /// Faults in the next output not yet faulted in; false when none is
    /// left.
    fn prefault_next(&self) -> bool {
        let i = self.next_output.fetch_add(1, Ordering::Relaxed);
        match self.outputs.get(i) {
            Some(&(at, len)) => {
                super::slice::prefault_pages(at, len);
                true
            }
            None => false,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One reader: takes the next range, reads it around the page cache
    /// into a buffer, keeps it for the decoders, until all are read or
    /// [`Prefetched::stop`] is called; keeps at most [`AHEAD_BYTES`] not
    /// yet taken. A range the page cache holds, or that cannot be read
    /// that way, is left to the decoders' usual reads. Run by [`READERS`]
    /// threads.
    pub(crate) fn run(&self, store: &Store) {
        loop {
            {
                let mut st = self.lock();
                while st.held >= AHEAD_BYTES && !st.stopped {
                    st = self.changed.wait(st).unwrap_or_else(|p| p.into_inner());
                }
                if st.stopped {
                    return;
                }
            }
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            let Some(range) = self.ranges.get(i) else { return };
            let read = self.read(store, range);
            let mut st = self.lock();
            if let Some((buf, at)) = read {
                st.held += range.len;
                st.ready.insert(i, Held { buf: Arc::new(buf), at, left: range.uses });
            }
            st.ended[i] = true;
            drop(st);
            self.changed.notify_all();
        }
    }

    /// Reads `range` around the page cache: its buffer and where the
    /// range starts in it; `None` when it is left to the page cache or
    /// cannot be read that way (whole).
    fn read(&self, store: &Store, range: &Range) -> Option<(Vec<u8>, usize)> {
        let pack = store.packs.get(range.pack as usize)?;
        let backend = store.backend();
        if self.leave_cached && backend.cached(&pack.name, range.offset, range.len) != Some(false) {
            return None;
        }
        // Aligned: the offset down, the end up, the buffer's start.
        let start = range.offset / ALIGN as u64 * ALIGN as u64;
        let span = usize::try_from((range.offset + range.len - start).next_multiple_of(ALIGN as u64)).ok()?;
        let mut buf = buffer(span);
        let skip = buf.as_ptr().align_offset(ALIGN);
        let got = backend.read_direct(&pack.name, start, &mut buf[skip..skip + span])?;
        let at = skip + (range.offset - start) as usize;
        (got >= (range.offset - start + range.len) as usize).then_some((buf, at))
    }

    /// The payload of `e`, waiting for the readers when its range is not
    /// read yet (faulting in outputs meanwhile); `None` when the payload
    /// was not planned, its range was left to the page cache, could not be
    /// read or was already taken by all its planned users, or the read is
    /// over (the caller then reads it itself).
    pub(crate) fn take(&self, e: &Entry) -> Option<Taken> {
        let &(r, at) = self.slot_of.get(&(e.pack, e.offset))?;
        let len = e.stored_len as usize;
        if at + len as u64 > self.ranges[r].len {
            return None;
        }
        let deadline = Instant::now() + WAIT;
        let mut st = self.lock();
        loop {
            if let Some(h) = st.ready.get_mut(&r) {
                let taken = Taken { buf: Some(Arc::clone(&h.buf)), from: h.at + at as usize, len };
                h.left -= 1;
                if h.left == 0 {
                    let h = st.ready.remove(&r).expect("the range just found");
                    st.held -= self.ranges[r].len;
                    drop(st);
                    recycle(h.buf);
                    self.changed.notify_all();
                }
                return Some(taken);
            }
            let now = Instant::now();
            if st.ended[r] || st.stopped || now >= deadline {
                return None;
            }
            drop(st);
            if self.prefault_next() {
                st = self.lock();
                continue;
            }
            st = self.lock();
            if st.ready.contains_key(&r) || st.ended[r] || st.stopped {
                continue;
            }
            st = self.changed.wait_timeout(st, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    /// A guard that calls [`Prefetched::stop`] when dropped, also when a
    /// decoder panics: the readers never wait for takes that will not
    /// come.
    pub(crate) fn stop_on_drop(&self) -> StopOnDrop<'_> {
        StopOnDrop(self)
    }

    /// Ends the read: readers stop, decoders no longer wait, and the
    /// ranges not taken go back to the pool.
    pub(crate) fn stop(&self) {
        let held: Vec<Held> = {
            let mut st = self.lock();
            st.stopped = true;
            st.held = 0;
            st.ready.drain().map(|(_, h)| h).collect()
        };
        for h in held {
            recycle(h.buf);
        }
        self.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::blocks::Scratch;
    use crate::ops::blocks::tests::{bf16_versions, damage_payload, two_versions_of};

    /// The entries of the chains of `blocks`, root first, each chain once.
    fn chains(store: &Store, blocks: &[Hash]) -> Vec<Vec<Entry>> {
        blocks.iter().map(|&b| store.chain(b).unwrap().into_iter().rev().copied().collect()).collect()
    }

    /// Whether this file system reads the store's first pack around the
    /// page cache (`O_DIRECT`); not every one does (tmpfs).
    fn direct_reads(store: &Store) -> bool {
        let mut buf = vec![0u8; 2 * ALIGN];
        let skip = buf.as_ptr().align_offset(ALIGN);
        store.backend().read_direct(&store.packs[0].name, 0, &mut buf[skip..skip + ALIGN]).is_some()
    }

    #[test]
    fn direct_reads_are_on_unless_turned_off() {
        for on in [None, Some(""), Some("1"), Some("on"), Some("yes")] {
            assert!(direct_reads_wanted(on), "{on:?}");
        }
        for off in ["0", "off", "OFF", "no", "false", " 0 "] {
            assert!(!direct_reads_wanted(Some(off)), "{off:?}");
        }
    }

    #[test]
    fn ranges_follow_first_use_grow_to_the_full_size_and_hold_each_payload_once() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, blocks) = two_versions_of(tmp.path(), 256 * 1024);
        let (first, most) = (8 << 10, 64 << 10);
        let p = Prefetched::plan_in(&store, blocks.iter().copied(), 8, (first, most), false);
        let all = chains(&store, &blocks);
        let payloads: HashSet<(u32, u64)> = all.iter().flatten().map(|e| (e.pack, e.offset)).collect();
        assert_eq!(p.slot_of.len(), payloads.len(), "every payload is planned once");
        let mut seen = vec![false; p.ranges.len()];
        let mut last = 0;
        for chain in &all {
            for e in chain {
                let (r, at) = p.slot_of[&(e.pack, e.offset)];
                let range = &p.ranges[r];
                assert_eq!((range.pack, range.offset + at), (e.pack, e.offset));
                assert!(at + u64::from(e.stored_len) <= range.len, "the payload lies inside its range");
                // Ranges are numbered in the order their first payload is
                // needed.
                if !seen[r] {
                    assert!(r >= last, "range {r} first needed after range {last}");
                    seen[r] = true;
                    last = r;
                }
            }
        }
        assert!(seen.iter().all(|&s| s), "no range without a payload");
        for (k, range) in p.ranges.iter().enumerate() {
            let limit = (first << k.min(32)).min(most);
            let largest = all.iter().flatten().map(|e| u64::from(e.stored_len)).max().unwrap();
            assert!(range.len <= limit.max(largest), "range {k} of {} bytes", range.len);
        }
        assert!(p.ranges[0].len <= first && p.ranges.iter().any(|r| r.len > first), "{:?}", &p.ranges[..4]);
        let takes: u32 = p.ranges.iter().map(|r| r.uses).sum();
        assert_eq!(takes as usize, all.iter().map(|c| c.len()).sum::<usize>(), "one take per level of each chain");
    }

    #[test]
    fn payloads_read_around_the_page_cache_are_the_payloads_and_decode_to_the_blocks() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, blocks) = bf16_versions(tmp.path());
        let direct = direct_reads(&store);
        // Small ranges, so that the readers run ahead and hold back.
        let p = Arc::new(Prefetched::plan_in(&store, blocks.iter().copied(), 8, (4096, 16 << 10), false));
        let mut scratch = Scratch::default();
        let (mut want, mut taken) = (Vec::new(), 0);
        std::thread::scope(|s| {
            for _ in 0..READERS {
                s.spawn(|| p.run(&store));
            }
            for chain in chains(&store, &blocks) {
                for e in &chain {
                    store.read_payload(e, &mut want, true).unwrap();
                    let t = p.take(e);
                    assert_eq!(t.is_some(), direct, "block {}", e.hash);
                    if let Some(t) = t {
                        assert!(*t == want[..], "the payload of block {} as read from its pack", e.hash);
                        taken += 1;
                    }
                }
            }
            // Every planned take was made: nothing more to take.
            let e = store.chain(blocks[0]).unwrap()[0];
            assert!(p.take(e).is_none());
            p.stop();
        });
        if !direct {
            eprintln!("this file system does not read around the page cache: only the fallback was tested");
            return;
        }
        assert!(taken > 0);
        // And through the decoders: the same blocks, their hashes checked.
        let p = Arc::new(Prefetched::plan_in(&store, blocks.iter().copied(), 8, (4096, 16 << 10), false));
        scratch.prefetched = Some(Arc::clone(&p));
        std::thread::scope(|s| {
            for _ in 0..READERS {
                s.spawn(|| p.run(&store));
            }
            for &b in &blocks {
                let mut plain = Vec::new();
                store.read_block(b, &mut plain, &mut Scratch::default(), None).unwrap();
                let mut out = vec![0u8; plain.len()];
                store.read_block_into(b, 2, &mut out, &mut scratch).unwrap();
                assert!(out == plain, "block {b}");
            }
            p.stop();
        });
        assert!(POOL.lock().unwrap().len() <= POOL_MAX);
    }

    #[test]
    fn a_damaged_payload_read_around_the_page_cache_is_named_as_without() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, blocks) = bf16_versions(tmp.path());
        let e = store.chain(blocks[5]).unwrap()[1].to_owned();
        let (_path, _good) = damage_payload(&store, &e, 0x10);
        let p = Arc::new(Prefetched::plan_in(&store, blocks.iter().copied(), 8, (4096, 16 << 10), false));
        let mut scratch = Scratch::default();
        scratch.prefetched = Some(Arc::clone(&p));
        let err = std::thread::scope(|s| {
            for _ in 0..READERS {
                s.spawn(|| p.run(&store));
            }
            let mut out = Vec::new();
            let mut first_err = None;
            for &b in &blocks {
                out.resize(e.raw_len as usize, 0);
                if let Err(err) = store.read_block_into(b, 2, &mut out, &mut scratch) {
                    first_err.get_or_insert(err);
                }
            }
            p.stop();
            first_err.expect("the damaged block fails")
        });
        assert_eq!(err.corrupt_kind(), Some(crate::CorruptKind::Checksum), "{err}");
        assert!(err.to_string().contains(&format!("payload of block {} at offset", e.hash)), "{err}");
    }

    #[test]
    fn a_decoder_does_not_wait_for_a_read_that_will_not_come() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, blocks) = bf16_versions(tmp.path());
        let e = store.chain(blocks[0]).unwrap()[0].to_owned();
        // No reader runs: once the read is over, a take gives up at once.
        let p = Prefetched::plan_in(&store, blocks.iter().copied(), 8, (4096, 16 << 10), false);
        p.stop();
        let t0 = Instant::now();
        assert!(p.take(&e).is_none());
        assert!(t0.elapsed() < WAIT, "gave up without waiting out its bound");
        // A payload the plan does not hold is not waited for.
        let p = Prefetched::plan_in(&store, blocks[1..].iter().copied(), 8, (4096, 16 << 10), false);
        assert!(!p.slot_of.contains_key(&(e.pack, e.offset)));
        assert!(p.take(&e).is_none());
        // Waiting decoders fault in the outputs they are given, and only
        // those.
        let mut out = vec![0u8; 3 * 4096];
        let p = p.prefault_while_waiting(vec![(out.as_mut_ptr() as usize + 4096, 4096)]);
        assert!(p.prefault_next() && !p.prefault_next());
        assert!(out.iter().all(|&b| b == 0), "faulting in writes no byte");
    }

    /// Drops the page cache's copy of the store's packs (written and
    /// synced already); whether the first pack reads as not cached after.
    #[cfg(target_os = "linux")]
    fn evict_packs(store: &Store) -> bool {
        use std::os::fd::AsRawFd;
        for p in &store.packs {
            let f = std::fs::File::open(&p.path).unwrap();
            f.sync_all().unwrap();
            // SAFETY: advice on an open descriptor; no memory of ours.
            unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        }
        store.backend().cached(&store.packs[0].name, 0, store.packs[0].len) == Some(false)
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn only_a_read_whose_start_is_not_cached_goes_around_the_page_cache_and_it_reads_the_same_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, _) = bf16_versions(tmp.path());
        let head = store.read_ref("HEAD").unwrap().unwrap();
        let m = store.manifest(head).unwrap();
        let t = &m.files[0].tensors()[0];
        let blocks = t.blocks.clone();
        let read = |out: &mut Vec<u8>| {
            out.clear();
            out.resize(t.len as usize, 0xAA);
            let mut reads = [crate::ops::TensorRead { name: &t.name, start: 0, out }];
            let never = std::sync::atomic::AtomicBool::new(false);
            crate::ops::read_tensors_into(&store, head, &m, &mut reads, &crate::ops::Silent, &never).unwrap();
        };
        let mut warm = Vec::new();
        read(&mut warm);
        // Just read: in the page cache, so read through it.
        assert!(Prefetched::plan(&store, blocks.iter().copied(), 8).is_none());
        if !evict_packs(&store) {
            eprintln!("the page cache keeps these packs (or cannot tell): only the warm read was tested");
            return;
        }
        assert_eq!(Prefetched::plan(&store, blocks.iter().copied(), 8).is_some(), direct_reads(&store));
        evict_packs(&store);
        let mut cold = Vec::new();
        read(&mut cold);
        assert!(cold == warm, "a cold read gives the bytes of a warm one");
    }
}
