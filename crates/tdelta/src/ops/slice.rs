//! Reading tensors, or byte ranges of them, straight into buffers the
//! caller owns (a Python array, say): only the blocks that overlap a range
//! are read, every block of every request is decoded in parallel, and each
//! lands at its place in the caller's buffer, so nothing holds a second
//! copy of the tensor.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use super::Progress;
use super::prefetch::Prefetched;
use super::read_ahead::ReadAhead;
use super::restore::{block_error, levels_bound};
use crate::Hash;
use crate::ops::blocks::Scratch;
use crate::store::Store;
use crate::store::manifest::{BlockRef, FileEntry, Manifest, TensorEntry};
use crate::{Error, Result};

/// One read of [`read_tensors_into`]: bytes `start..start + out.len()` of
/// tensor `name` (relative to the tensor's first byte) into `out`.
#[derive(Debug)]
pub struct TensorRead<'a> {
    /// The tensor's name.
    pub name: &'a str,
    /// First byte of the tensor to read.
    pub start: u64,
    /// Where the bytes go; its length is how many are read.
    pub out: &'a mut [u8],
}

/// Finds tensor `name` in manifest `m` (of version `id`): its entry and the
/// file it is in. An unknown name is an error naming the version.
pub fn find_tensor<'m>(m: &'m Manifest, id: Hash, name: &str) -> Result<(&'m str, &'m TensorEntry)> {
    m.files
        .iter()
        .find_map(|f| f.tensors().iter().find(|t| t.name == name).map(|t| (f.path.as_str(), t)))
        .ok_or_else(|| Error::NotFound { what: format!("tensor `{name}` in version {}", id.short()) })
}

/// Reads every request of `reads` from version `id` (whose manifest is
/// `m`) into its buffer. Only the blocks overlapping a requested range (and
/// their delta bases) are read; each is hash-checked as in a restore.
/// `progress` sees the bytes of the requested ranges; when `cancel` turns
/// true no further block is started and the call fails with an error
/// saying it was interrupted (the buffers are then partly written).
pub fn read_tensors_into(
    store: &Store,
    id: Hash,
    m: &Manifest,
    reads: &mut [TensorRead<'_>],
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<()> {
    // (file index, tensor index) of every tensor, and each file's blocks
    // grouped by tensor, computed once however many reads there are.
    let mut where_: HashMap<&str, (usize, usize)> = HashMap::new();
    for (fi, f) in m.files.iter().enumerate() {
        for (ti, t) in f.tensors().iter().enumerate() {
            where_.entry(t.name.as_str()).or_insert((fi, ti));
        }
    }
    let mut blocks_of: HashMap<usize, Vec<Vec<BlockRef>>> = HashMap::new();
    let mut jobs: Vec<(usize, BlockRef, u64, &mut [u8])> = Vec::new();
    let mut total = 0u64;
    for r in reads.iter_mut() {
        let Some(&(fi, ti)) = where_.get(r.name) else {
            return Err(Error::NotFound { what: format!("tensor `{}` in version {}", r.name, id.short()) });
        };
        let f = &m.files[fi];
        let t = &f.tensors()[ti];
        let len = r.out.len() as u64;
        let end = r.start.checked_add(len).filter(|&e| e <= t.len).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "bytes {}..{} are out of range for tensor `{}` of {} bytes",
                r.start,
                r.start.saturating_add(len),
                t.name,
                t.len
            ))
        })?;
        total += len;
        advise_huge(r.out);
        let per_tensor = blocks_of.entry(fi).or_insert_with(|| {
            let mut v = vec![Vec::new(); f.tensors().len()];
            for b in f.blocks(m.block_size) {
                if let Some(i) = b.tensor {
                    v[i].push(b);
                }
            }
            v
        });
        // Tensor-relative offsets: block b covers b.offset - t.offset ..+ b.len.
        let mut rest: &mut [u8] = r.out;
        let mut at = r.start;
        for b in &per_tensor[ti] {
            let (bs, be) = (b.offset - t.offset, b.offset - t.offset + b.len);
            if be <= at || bs >= end {
                continue;
            }
            let take = (be.min(end) - at) as usize;
            let (dst, tail) = rest.split_at_mut(take);
            jobs.push((fi, *b, at - bs, dst));
            rest = tail;
            at += take as u64;
        }
        if !rest.is_empty() {
            return Err(Error::corrupt(
                store.manifest_path(id),
                format!("the blocks of tensor `{}` do not cover its {} bytes", t.name, t.len),
            ));
        }
    }
    let bound = levels_bound(m);
    let hashes = || jobs.iter().map(|j| j.1.hash);
    // A cold read of a local store's payloads is done around the page
    // cache by reader threads of its own (`prefetch`), for a read of more
    // than a few blocks (threads are not worth it for less); other reads
    // get read-ahead hints in decode order.
    let prefetched = (jobs.len() >= PREFETCH_MIN_BLOCKS)
        .then(|| Prefetched::plan(store, hashes(), bound))
        .flatten()
        .map(|p| Arc::new(p.prefault_while_waiting(jobs.iter().map(|j| (j.3.as_ptr() as usize, j.3.len())).collect())));
    let ahead = match prefetched {
        Some(_) => None,
        None => Some(ReadAhead::plan(store, hashes(), bound)),
    };
    progress.begin("read", total);
    // The blocks are taken in order, one at a time, by every thread of the
    // pool: the disk reads ahead in that order, and no thread sits idle
    // while another still has a share of blocks to do.
    let queue = Mutex::new(jobs.into_iter().enumerate());
    let failed = AtomicBool::new(false);
    let res = std::thread::scope(|s| {
        // Done, failed or unwinding: the reader threads stop (the scope
        // waits for them).
        let _stop = prefetched.as_deref().map(Prefetched::stop_on_drop);
        if let Some(p) = &prefetched {
            for _ in 0..super::prefetch::READERS {
                s.spawn(|| p.run(store));
            }
        }
        (0..rayon::current_num_threads()).into_par_iter().try_for_each(|_| {
            // This thread's buffers of earlier reads (already faulted in),
            // taken for the read and put back after it.
            let (mut scratch, mut buf) = READ_BUFFERS.take();
            scratch.prefetched = prefetched.clone();
            let r = (|| loop {
                if failed.load(Ordering::Relaxed) {
                    return Ok(());
                }
                let Some((k, (fi, b, skip, dst))) = queue.lock().unwrap_or_else(|p| p.into_inner()).next() else {
                    return Ok(());
                };
                if let Some(a) = &ahead {
                    a.before(k);
                }
                let r = if cancel.load(Ordering::Relaxed) || progress.cancelled() {
                    Err(crate::progress::interrupted())
                } else {
                    read_one(store, id, &m.files[fi], &b, skip as usize, dst, bound, &mut scratch, &mut buf)
                };
                match r {
                    Ok(n) => progress.advance(n),
                    Err(e) => {
                        failed.store(true, Ordering::Relaxed);
                        return Err(e);
                    }
                }
            })();
            scratch.prefetched = None;
            READ_BUFFERS.set((scratch, buf));
            r
        })
    });
    progress.end();
    res
}

/// The fewest blocks a read takes reader threads of its own for.
const PREFETCH_MIN_BLOCKS: usize = 8;

thread_local! {
    /// The block buffers of the reader threads, kept between reads: a read
    /// of a few tensors otherwise allocates and faults them in again.
    static READ_BUFFERS: std::cell::Cell<(Scratch, Vec<u8>)> = std::cell::Cell::new(Default::default());
}

/// Reads block `b` of file `f` and writes its bytes from `skip` on into
/// `dst`; returns the bytes written.
#[allow(clippy::too_many_arguments)]
fn read_one(
    store: &Store,
    id: Hash,
    f: &FileEntry,
    b: &BlockRef,
    skip: usize,
    dst: &mut [u8],
    bound: u16,
    scratch: &mut Scratch,
    buf: &mut Vec<u8>,
) -> Result<u64> {
    if skip == 0 && dst.len() as u64 == b.len {
        // The whole block is wanted: decode it in place.
        prefault(dst);
        store.read_block_into(b.hash, bound, dst, scratch).map_err(|e| block_error(id, f, b, e))?;
    } else {
        // Blocks are cut at most `block_size` long: a bounded buffer.
        buf.resize(b.len as usize, 0);
        store.read_block_into(b.hash, bound, buf, scratch).map_err(|e| block_error(id, f, b, e))?;
        dst.copy_from_slice(&buf[skip..skip + dst.len()]);
    }
    Ok(dst.len() as u64)
}

/// Asks for transparent huge pages over the whole 2 MiB pages of an
/// output of 4 MiB or more (`MADV_HUGEPAGE`, Linux; where the system
/// leaves huge pages to `madvise`, its default), before its blocks fault it
/// in: a 50 MB tensor then takes ~25 faults instead of 12,800, and its
/// `get_tensor` ~4% less CPU (0.0646 -> 0.0618 s, medians of 8 processes
/// of 15 calls, alternating). numpy advises its large arrays the same way.
/// Advice only: no byte changes, and a kernel without it ignores it.
fn advise_huge(out: &mut [u8]) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = (out.as_ptr() as usize).next_multiple_of(HUGE);
        let end = (out.as_ptr() as usize + out.len()) / HUGE * HUGE;
        if out.len() >= 2 * HUGE && end > start {
            // SAFETY: advice on whole pages inside `out`, which the caller
            // lends us exclusively; it changes no byte of them.
            let _ = unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = out;
}

/// Faults in the whole pages of `dst` (`MADV_POPULATE_WRITE`, Linux 5.14
/// on; elsewhere nothing) before a block is decoded into it: a fresh array
/// (a Python read's) otherwise takes one page fault per 4 KiB on the
/// decoder's first writes, and one call for the block's 256 pages costs
/// less than their 256 faults (`get_tensor` of a 50 MB BF16 tensor: 11%
/// less CPU). The contents are left as they are.
fn prefault(dst: &mut [u8]) {
    prefault_pages(dst.as_mut_ptr() as usize, dst.len());
}

/// [`prefault`] of the `len` bytes at address `at`, which must be memory
/// the caller may write (it is not written, only faulted in).
pub(super) fn prefault_pages(at: usize, len: usize) {
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        let start = at.next_multiple_of(PAGE);
        let end = (at + len) / PAGE * PAGE;
        if end > start {
            // SAFETY: advice on whole pages of memory the caller may write;
            // it writes nothing to them. A kernel without it refuses the
            // advice (ignored).
            let _ = unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_POPULATE_WRITE) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (at, len);
}

/// The header region (8-byte length and JSON) of safetensors file `path`
/// of version `id`, read from its header blocks only.
pub fn read_header(store: &Store, id: Hash, m: &Manifest, path: &str) -> Result<Vec<u8>> {
    let f = m.file(path).ok_or_else(|| Error::NotFound { what: format!("file `{path}` in version {}", id.short()) })?;
    let crate::store::manifest::FileContent::Safetensors { header_len, .. } = &f.content else {
        return Err(Error::InvalidArgument(format!("`{path}` of version {} is not a safetensors file", id.short())));
    };
    let bound = levels_bound(m);
    let (mut out, mut buf, mut scratch) = (Vec::new(), Vec::new(), Scratch::default());
    for b in f.blocks(m.block_size).iter().filter(|b| b.tensor.is_none() && b.offset < *header_len) {
        store.read_block_within(b.hash, bound, &mut buf, &mut scratch, None).map_err(|e| block_error(id, f, b, e))?;
        out.extend_from_slice(&buf);
    }
    if out.len() as u64 != *header_len {
        let e = format!("header of `{path}` restores to {} bytes where {header_len} were recorded", out.len());
        return Err(Error::corrupt(store.manifest_path(id), e));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_page_advice_leaves_the_bytes_as_they_are() {
        let mut v: Vec<u8> = (0..(9usize << 20) + 5).map(|i| (i % 251) as u8).collect();
        advise_huge(&mut v[3..]);
        advise_huge(&mut v[7..12]);
        assert!(v.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
        // Fresh pages under the advice read as zeros and keep what is written.
        let mut z = vec![0u8; 8 << 20];
        advise_huge(&mut z);
        assert!(z.iter().all(|&b| b == 0));
        z[5 << 20] = 9;
        assert_eq!(z.iter().map(|&b| u64::from(b)).sum::<u64>(), 9);
    }

    #[test]
    fn prefault_leaves_the_bytes_as_they_are() {
        // Filled pages, and a fresh zeroed allocation (not yet faulted in).
        let mut v: Vec<u8> = (0..3 * 4096 + 123).map(|i| (i * 7 % 251) as u8).collect();
        let want = v.clone();
        prefault(&mut v[5..]);
        assert_eq!(v, want);
        let mut z = vec![0u8; 1 << 20];
        prefault(&mut z);
        assert!(z.iter().all(|&b| b == 0));
        prefault(&mut []);
    }
    use crate::ops::{PackOptions, Silent, pack, read_tensor};
    use crate::store::InitOptions;

    /// A store of one safetensors file with tensors spanning many blocks.
    fn fixture() -> (tempfile::TempDir, Store, Hash) {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("m.safetensors");
        let a: Vec<u8> = (0..40_000u32).flat_map(|i| (i as f32).to_le_bytes()).collect();
        let b: Vec<u8> = (0..3u16).flat_map(|i| i.to_le_bytes()).collect();
        let views = [
            ("a", safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![200, 200], &a).unwrap()),
            ("b", safetensors::tensor::TensorView::new(safetensors::Dtype::BF16, vec![3], &b).unwrap()),
        ];
        safetensors::serialize_to_file(views, None, &src).unwrap();
        let mut store = Store::init(&dir.path().join("s"), &InitOptions { block_size: 4096 }).unwrap();
        let id = pack(&mut store, &src, &PackOptions::default(), &Silent).unwrap().id;
        (dir, store, id)
    }

    #[test]
    fn ranges_equal_the_tensor_bytes_at_any_offset() {
        let (_d, store, id) = fixture();
        let m = store.manifest(id).unwrap();
        let (_, _, whole) = read_tensor(&store, id, "a").unwrap();
        // Ranges inside one block, across block edges, the whole tensor.
        for (start, len) in [(0, 160_000), (0, 1), (4095, 2), (4096, 4096), (10_001, 50_000), (159_999, 1), (7, 0)] {
            let mut out = vec![0u8; len];
            let mut reads = [TensorRead { name: "a", start: start as u64, out: &mut out }];
            read_tensors_into(&store, id, &m, &mut reads, &Silent, &AtomicBool::new(false)).unwrap();
            assert_eq!(out, whole[start..start + len], "{start}+{len}");
        }
    }

    #[test]
    fn several_tensors_at_once() {
        let (_d, store, id) = fixture();
        let m = store.manifest(id).unwrap();
        let (mut a, mut b) = (vec![0u8; 160_000], vec![0u8; 6]);
        let mut reads =
            [TensorRead { name: "b", start: 0, out: &mut b }, TensorRead { name: "a", start: 0, out: &mut a }];
        read_tensors_into(&store, id, &m, &mut reads, &Silent, &AtomicBool::new(false)).unwrap();
        assert_eq!(a, read_tensor(&store, id, "a").unwrap().2);
        assert_eq!(b, [0, 0, 1, 0, 2, 0]);
        assert_eq!(find_tensor(&m, id, "b").unwrap().1.shape, [3]);
    }

    #[test]
    fn the_header_is_the_files_first_bytes() {
        let (d, store, id) = fixture();
        let m = store.manifest(id).unwrap();
        let file = std::fs::read(d.path().join("m.safetensors")).unwrap();
        let h = read_header(&store, id, &m, "m.safetensors").unwrap();
        assert_eq!(h, file[..h.len()]);
        let n = u64::from_le_bytes(h[..8].try_into().unwrap());
        assert_eq!(h.len() as u64, 8 + n);
        assert!(matches!(read_header(&store, id, &m, "nope"), Err(Error::NotFound { .. })));
    }

    #[test]
    fn bad_requests_are_errors_naming_the_tensor() {
        let (_d, store, id) = fixture();
        let m = store.manifest(id).unwrap();
        let mut out = vec![0u8; 8];
        let mut reads = [TensorRead { name: "zz", start: 0, out: &mut out }];
        let e = read_tensors_into(&store, id, &m, &mut reads, &Silent, &AtomicBool::new(false)).unwrap_err();
        assert!(matches!(e, Error::NotFound { .. }), "{e}");
        assert_eq!(e.to_string(), format!("tensor `zz` in version {} does not exist", id.short()));
        let mut reads = [TensorRead { name: "b", start: 2, out: &mut out }];
        let e = read_tensors_into(&store, id, &m, &mut reads, &Silent, &AtomicBool::new(false)).unwrap_err();
        assert!(e.to_string().contains("out of range for tensor `b`"), "{e}");
        assert!(matches!(find_tensor(&m, id, "zz"), Err(Error::NotFound { .. })));
    }

    /// Object name and ranges of one read-ahead hint.
    type Hint = (String, Vec<(u64, u64)>);

    /// The real local backend, recording the read-ahead hints it gets.
    #[derive(Debug)]
    struct Hints {
        inner: crate::backend::LocalDir,
        seen: std::sync::Mutex<Vec<Hint>>,
    }

    impl crate::backend::Backend for Hints {
        fn describe(&self) -> String {
            self.inner.describe()
        }
        fn locate(&self, name: &str) -> std::path::PathBuf {
            self.inner.locate(name)
        }
        fn get(&self, name: &str, cap: u64) -> Result<(Vec<u8>, crate::backend::ETag)> {
            self.inner.get(name, cap)
        }
        fn read_at(&self, name: &str, offset: u64, buf: &mut [u8]) -> Result<()> {
            self.inner.read_at(name, offset, buf)
        }
        fn will_need(&self, name: &str, ranges: &[(u64, u64)]) {
            self.seen.lock().unwrap().push((name.to_string(), ranges.to_vec()));
            self.inner.will_need(name, ranges);
        }
        fn head(&self, name: &str) -> Result<crate::backend::ObjectMeta> {
            self.inner.head(name)
        }
        fn put(&self, name: &str, bytes: &[u8], mode: crate::backend::PutMode) -> Result<crate::backend::ETag> {
            self.inner.put(name, bytes, mode)
        }
        fn writer(&self) -> Result<Box<dyn crate::backend::ObjectWriter>> {
            self.inner.writer()
        }
        fn list(&self, prefix: &str) -> Result<Vec<crate::backend::ObjectMeta>> {
            self.inner.list(prefix)
        }
        fn delete(&self, name: &str) -> Result<()> {
            self.inner.delete(name)
        }
        fn lease(
            &self,
            wait: std::time::Duration,
            notice: Option<&dyn Fn(&str)>,
        ) -> Result<Box<dyn crate::backend::Lease>> {
            self.inner.lease(wait, notice)
        }
    }

    #[test]
    fn a_read_hints_every_payload_of_its_blocks_chains_merged_per_pack() {
        let (d, _, id) = fixture();
        let backend = std::sync::Arc::new(Hints {
            inner: crate::backend::LocalDir::new(d.path().join("s")),
            seen: Default::default(),
        });
        let store = Store::open_with(backend.clone()).unwrap();
        let m = store.manifest(id).unwrap();
        let mut out = vec![0u8; 50_000];
        let mut reads = [TensorRead { name: "a", start: 10_001, out: &mut out }];
        read_tensors_into(&store, id, &m, &mut reads, &Silent, &AtomicBool::new(false)).unwrap();
        let seen = backend.seen.lock().unwrap().clone();
        assert!(!seen.is_empty());
        // Each call's ranges sorted and disjoint.
        for (_, r) in &seen {
            assert!(r.windows(2).all(|w| w[0].0 + w[0].1 < w[1].0), "{r:?}");
        }
        // Every block overlapping bytes 10_001..60_001 of `a` is covered.
        let ti = m.files[0].tensors().iter().position(|t| t.name == "a").unwrap();
        let t = m.files[0].tensors()[ti].clone();
        let wanted = m.files[0]
            .blocks(m.block_size)
            .into_iter()
            .filter(|b| b.tensor == Some(ti) && b.offset - t.offset < 60_001 && b.offset - t.offset + b.len > 10_001);
        let mut n = 0;
        for b in wanted {
            let e = store.entry(b.hash).unwrap();
            let name = &store.packs[e.pack as usize].name;
            let covered = seen
                .iter()
                .filter(|(p, _)| p == name)
                .any(|(_, r)| r.iter().any(|&(o, l)| o <= e.offset && e.offset + u64::from(e.stored_len) <= o + l));
            assert!(covered, "block {} is hinted", b.hash);
            n += 1;
        }
        assert!(n >= 12, "{n} blocks");
    }

    #[test]
    fn a_cancelled_read_stops_with_an_error() {
        let (_d, store, id) = fixture();
        let m = store.manifest(id).unwrap();
        let mut out = vec![0u8; 160_000];
        let mut reads = [TensorRead { name: "a", start: 0, out: &mut out }];
        let e = read_tensors_into(&store, id, &m, &mut reads, &Silent, &AtomicBool::new(true)).unwrap_err();
        assert!(e.to_string().contains("interrupted"), "{e}");
    }
}
