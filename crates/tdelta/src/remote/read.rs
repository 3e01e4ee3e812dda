//! Remote reads without a clone: `tdelta unpack --remote NAME REF`.
//!
//! The remote's manifest and pack indexes are read whole (they are small);
//! the blocks the requested parts need, with their delta bases, are read
//! with ranged GETs on the packs, neighbours coalesced into one request,
//! several requests in flight. What is fetched is checked against the
//! index (payload checksum) and kept in the local store as one new pack
//! with its index: whole objects, named by their content like every pack,
//! so the local store stays consistent (its versions are unchanged; the
//! blocks serve later reads, and `gc` removes them once no version needs
//! them). Blocks the local store already holds with the same payload are
//! not fetched. The restore then decodes and checks every block as a
//! local restore does.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::config::Remote;
use super::transfer::{open, parallel, read_remote_ref};
use crate::backend::object::ObjectStoreBackend;
use crate::backend::{Backend, ETag, Lease, ObjectMeta, ObjectWriter, PutMode};
use crate::ops::restore::{RestoreOptions, RestoreReport, Selection};
use crate::store::pack::{BlockMeta, Entry, PackWriter};
use crate::{Error, Hash, Progress, Result, Store};

/// Two ranges of one pack closer than this are read in one request.
const COALESCE_GAP: u64 = 4 << 10;
/// Largest single ranged request (and so the memory one request holds).
const MAX_REQUEST: u64 = 16 << 20;
/// Small reads outside the planned blocks (headers the restore planner
/// reads twice) kept in memory, in all.
const MAX_SIDE_CACHE: u64 = 64 << 20;

/// What a remote read moved.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RemoteReadReport {
    /// The version read.
    pub id: String,
    /// Blocks fetched from the remote (payloads).
    pub blocks_fetched: u64,
    /// Their stored bytes.
    pub bytes_fetched: u64,
    /// Ranged requests made for them.
    pub requests: u64,
    /// Blocks read from the local store instead.
    pub blocks_local: u64,
    /// The local pack now holding the fetched blocks, if any.
    pub cached_pack: Option<String>,
}

/// Bytes kept, and the reads (pack, offset, length) they answer.
type SideCache = (u64, HashMap<(String, u64, usize), Vec<u8>>);

/// A read-only view of a remote as a store backend, whose pack reads are
/// served from the local store where the planned blocks were cached.
#[derive(Debug)]
struct View {
    remote: ObjectStoreBackend,
    local: Arc<dyn Backend>,
    /// (remote pack, payload offset) to (local pack, payload offset).
    redirect: Mutex<HashMap<(String, u64), (String, u64)>>,
    /// Other small reads, kept (pack, offset, len) to bytes.
    side: Mutex<SideCache>,
}

impl View {
    fn read_only(&self, what: &str) -> Error {
        Error::InvalidArgument(format!("{what}: a remote read does not write to {}", self.remote.describe()))
    }
}

impl Backend for View {
    fn describe(&self) -> String {
        self.remote.describe()
    }
    fn locate(&self, name: &str) -> PathBuf {
        self.remote.locate(name)
    }
    fn get(&self, name: &str, cap: u64) -> Result<(Vec<u8>, ETag)> {
        self.remote.get(name, cap)
    }
    fn read_at(&self, name: &str, offset: u64, buf: &mut [u8]) -> Result<()> {
        let to = self.redirect.lock().unwrap_or_else(|p| p.into_inner()).get(&(name.to_string(), offset)).cloned();
        if let Some((local, at)) = to {
            return self.local.read_at(&local, at, buf);
        }
        let key = (name.to_string(), offset, buf.len());
        if let Some(b) = self.side.lock().unwrap_or_else(|p| p.into_inner()).1.get(&key) {
            buf.copy_from_slice(b);
            return Ok(());
        }
        self.remote.read_at(name, offset, buf)?;
        let mut side = self.side.lock().unwrap_or_else(|p| p.into_inner());
        if side.0 + buf.len() as u64 <= MAX_SIDE_CACHE {
            side.0 += buf.len() as u64;
            side.1.insert(key, buf.to_vec());
        }
        Ok(())
    }
    fn head(&self, name: &str) -> Result<ObjectMeta> {
        self.remote.head(name)
    }
    fn put(&self, name: &str, _: &[u8], _: PutMode) -> Result<ETag> {
        Err(self.read_only(name))
    }
    fn writer(&self) -> Result<Box<dyn ObjectWriter>> {
        Err(self.read_only("pack"))
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        // Only what a reader of versions needs: packs and manifests.
        if prefix.starts_with("packs/") || prefix.starts_with("versions/") {
            self.remote.list(prefix)
        } else {
            Ok(Vec::new())
        }
    }
    fn delete(&self, name: &str) -> Result<()> {
        Err(self.read_only(name))
    }
    fn lease(&self, _: std::time::Duration, _: Option<&dyn Fn(&str)>) -> Result<Box<dyn Lease>> {
        Err(self.read_only("lease"))
    }
}

/// Resolves `spec` on the remote: a ref, `HEAD`, a version id or an id
/// prefix of at least 4 hex digits.
fn resolve(b: &ObjectStoreBackend, spec: &str) -> Result<Hash> {
    if (crate::store::refs::validate_ref_name(spec).is_ok() || spec == "HEAD")
        && let Some((id, _)) = read_remote_ref(b, spec)?
    {
        return Ok(id);
    }
    if spec.len() >= 4 && spec.chars().all(|c| c.is_ascii_hexdigit()) {
        let spec = spec.to_ascii_lowercase();
        let found: Vec<Hash> = b
            .list("versions/")?
            .iter()
            .filter_map(|m| m.name.strip_prefix("versions/")?.strip_suffix(".tdm")?.parse::<Hash>().ok())
            .filter(|h| h.to_string().starts_with(&spec))
            .collect();
        if let [one] = found.as_slice() {
            return Ok(*one);
        }
        if found.len() > 1 {
            let mut short: Vec<String> = found.iter().map(|h| h.short()).collect();
            short.sort();
            return Err(Error::AmbiguousRef { prefix: spec, count: found.len(), candidates: short.join(", ") });
        }
    }
    Err(Error::UnknownRef { name: format!("{spec} (on {})", b.describe()) })
}

/// Coalesces sorted payload ranges into requests: neighbours closer than
/// [`COALESCE_GAP`] share one, none longer than [`MAX_REQUEST`] (unless a
/// single payload is).
fn coalesce(ranges: &[Range<u64>]) -> Vec<Range<u64>> {
    let mut out: Vec<Range<u64>> = Vec::new();
    for r in ranges {
        match out.last_mut() {
            Some(last)
                if r.start >= last.end && r.start - last.end <= COALESCE_GAP && r.end - last.start <= MAX_REQUEST =>
            {
                last.end = r.end;
            }
            _ => out.push(r.clone()),
        }
    }
    out
}

/// Restores the parts of remote version `spec` that `sel` selects to
/// `out`, fetching only the blocks they need (see the module doc). The
/// local store `local` keeps what was fetched.
pub fn unpack(
    local: &Store,
    remote: &Remote,
    spec: &str,
    out: &Path,
    opts: &RestoreOptions,
    sel: &Selection,
    progress: &dyn Progress,
) -> Result<(RestoreReport, RemoteReadReport)> {
    let b = open(remote)?;
    let id = resolve(&b, spec)?;
    // Refuse before anything moves, as a local restore would.
    let abs = if out.is_absolute() {
        out.to_path_buf()
    } else {
        std::env::current_dir().map_err(|e| Error::io(".", e))?.join(out)
    };
    let root = std::fs::canonicalize(local.root()).unwrap_or_else(|_| local.root().to_path_buf());
    if abs.starts_with(local.root()) || abs.starts_with(&root) {
        return Err(Error::OutputRefused {
            path: out.to_path_buf(),
            refusal: crate::OutputRefusal::InStore { store: local.root().to_path_buf() },
        });
    }
    let view = Arc::new(View {
        remote: b.clone(),
        local: Arc::clone(local.backend()),
        redirect: Mutex::new(HashMap::new()),
        side: Mutex::new((0, HashMap::new())),
    });
    let rstore = Store::open_with(Arc::clone(&view) as Arc<dyn Backend>)?;
    let mut report = RemoteReadReport { id: id.to_string(), ..RemoteReadReport::default() };

    // Every planned block and its delta bases, by remote pack.
    let mut want: Vec<Entry> = Vec::new();
    let mut seen = HashSet::new();
    for h in crate::ops::restore::needed_blocks(&rstore, id, sel)? {
        for e in rstore.chain(h)? {
            if seen.insert(e.hash) {
                want.push(*e);
            }
        }
    }
    let same = |a: &Entry, b: &Entry| {
        (a.checksum, a.stored_len, a.raw_len, a.codec, a.depth, a.base)
            == (b.checksum, b.stored_len, b.raw_len, b.codec, b.depth, b.base)
    };
    let mut fetch: BTreeMap<u32, Vec<Entry>> = BTreeMap::new();
    {
        let mut redirect = view.redirect.lock().unwrap_or_else(|p| p.into_inner());
        for e in &want {
            match local.index.get(&e.hash) {
                Some(l) if same(l, e) => {
                    let rp = rstore.packs[e.pack as usize].name.clone();
                    redirect.insert((rp, e.offset), (local.packs[l.pack as usize].name.clone(), l.offset));
                    report.blocks_local += 1;
                }
                _ => fetch.entry(e.pack).or_default().push(*e),
            }
        }
    }

    if !fetch.is_empty() {
        let _txn = local.begin_write()?;
        let writer = Mutex::new(Some(PackWriter::create(local)?));
        let mut jobs: Vec<(String, Range<u64>, Vec<Entry>)> = Vec::new();
        for (pack, mut entries) in fetch {
            entries.sort_by_key(|e| e.offset);
            let name = rstore.packs[pack as usize].name.clone();
            let ranges: Vec<Range<u64>> =
                entries.iter().map(|e| e.offset..e.offset + u64::from(e.stored_len)).collect();
            for r in coalesce(&ranges) {
                let inside: Vec<Entry> =
                    entries.iter().filter(|e| e.offset >= r.start && e.offset < r.end).copied().collect();
                jobs.push((name.clone(), r, inside));
            }
        }
        let bytes = AtomicU64::new(0);
        progress.begin("fetch blocks", jobs.iter().map(|j| j.1.end - j.1.start).sum());
        let fetched = parallel(8, &jobs, |(name, r, inside)| {
            let mut buf = vec![0u8; (r.end - r.start) as usize];
            b.read_at(name, r.start, &mut buf)?;
            bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
            progress.advance(buf.len() as u64);
            let mut w = writer.lock().unwrap_or_else(|p| p.into_inner());
            let Some(w) = w.as_mut() else { return Ok(()) };
            for e in inside {
                let at = (e.offset - r.start) as usize;
                let payload = &buf[at..at + e.stored_len as usize];
                if xxhash_rust::xxh3::xxh3_64(payload) != e.checksum {
                    return Err(Error::corrupt(
                        rstore.pack_path(e),
                        format!("payload of block {} at offset {} fails its checksum", e.hash, e.offset),
                    ));
                }
                let meta = BlockMeta {
                    hash: e.hash,
                    raw_len: e.raw_len,
                    codec: e.codec,
                    dtype: e.dtype,
                    depth: e.depth,
                    base: e.base,
                };
                w.add(meta, payload)?;
            }
            Ok(())
        });
        progress.end();
        let w = writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(w) = w else { return Err(Error::Internal("pack writer gone".into())) };
        if let Err(e) = fetched {
            w.abandon();
            return Err(e);
        }
        let (pack_id, entries) = w.finish(local)?;
        let pack = crate::store::pack_name(pack_id);
        let mut redirect = view.redirect.lock().unwrap_or_else(|p| p.into_inner());
        let local_at: HashMap<Hash, u64> = entries.iter().map(|e| (e.hash, e.offset)).collect();
        for e in &want {
            if let Some(&at) = local_at.get(&e.hash) {
                redirect.insert((rstore.packs[e.pack as usize].name.clone(), e.offset), (pack.clone(), at));
            }
        }
        report.blocks_fetched = entries.len() as u64;
        report.bytes_fetched = bytes.into_inner();
        report.requests = jobs.len() as u64;
        report.cached_pack = Some(pack);
    }
    let rep = crate::ops::restore::restore_parts(&rstore, id, out, opts, sel, progress)?;
    Ok((rep, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbours_share_a_request_and_far_ranges_do_not() {
        let r = coalesce(&[0..100, 204..300, 300..400, 10_000..10_100]);
        assert_eq!(r, vec![0..400, 10_000..10_100]);
        let big = MAX_REQUEST;
        let r = coalesce(&[0..big - 10, big..big + 10]);
        assert_eq!(r.len(), 2, "no request grows past the cap");
        assert_eq!(coalesce(&[]), Vec::<Range<u64>>::new());
    }
}
