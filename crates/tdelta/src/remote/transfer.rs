//! The transfer engine: push, fetch, pull and clone.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use serde::Serialize;

use super::config::{self, Remote};
use super::local_side::{self, Kind, LocalObject};
use crate::backend::object::{ObjectStoreBackend, RemoteOptions};
use crate::backend::{Backend, PutMode};
use crate::store::{fsutil, refs};
use crate::{Error, Hash, InitOptions, Progress, Result, Store, StoreConfig};

/// Largest ref object read from a remote.
const MAX_REF: u64 = 4096;
/// Largest config object read from a remote.
const MAX_CONFIG: u64 = 1 << 16;
/// How many times a ref's compare-and-swap is retried after losing.
const CAS_TRIES: usize = 4;

/// How a ref moved (or did not) in a transfer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefUpdate {
    /// The ref (`HEAD`, `stable`).
    pub name: String,
    /// Where it pointed before, if anywhere.
    pub old: Option<String>,
    /// Where it points now.
    pub new: String,
    /// `created`, `updated`, `forced`, `unchanged` or `diverged` (pull:
    /// left alone).
    pub status: String,
}

/// What a transfer did: also the `--json` summary of push, fetch, pull
/// and clone, as serialised.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TransferReport {
    /// The remote's name (`origin` for a clone).
    pub remote: String,
    /// Objects sent (push) or received (fetch).
    #[serde(rename = "objects")]
    pub objects_sent: u64,
    /// Their bytes.
    #[serde(rename = "bytes")]
    pub bytes_sent: u64,
    /// Objects the other side had already.
    pub objects_skipped: u64,
    /// Their bytes.
    pub bytes_skipped: u64,
    /// Refs moved or looked at.
    pub refs: Vec<RefUpdate>,
    /// Wall time.
    pub seconds: f64,
}

/// What `push` sends and how.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// Refs to move on the remote (`HEAD` allowed); empty: every ref and
    /// `HEAD`.
    pub refs: Vec<String>,
    /// Move remote refs even to versions that do not descend from theirs.
    pub force: bool,
    /// Why, for the remote audit trail.
    pub why: String,
    /// Requests in flight at once.
    pub jobs: usize,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions { refs: Vec::new(), force: false, why: String::new(), jobs: 8 }
    }
}

/// Opens a remote's backend.
pub fn open(remote: &Remote) -> Result<ObjectStoreBackend> {
    ObjectStoreBackend::open(&remote.url, &RemoteOptions { endpoint: remote.endpoint.clone() })
}

fn ref_object(name: &str) -> String {
    if name == "HEAD" { "HEAD".to_string() } else { format!("refs/{name}") }
}

/// Reads a remote ref: its version and tag, `None` when absent.
pub(super) fn read_remote_ref(b: &ObjectStoreBackend, name: &str) -> Result<Option<(Hash, crate::backend::ETag)>> {
    let obj = ref_object(name);
    let (bytes, tag) = match b.get(&obj, MAX_REF) {
        Ok(v) => v,
        Err(Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let where_ = format!("{}/{obj}", b.describe());
    let id = decode_ref(&where_, &bytes)?;
    Ok(Some((id, tag)))
}

/// Parses a ref object (the local ref file format, see FORMAT.md).
fn decode_ref(where_: &str, bytes: &[u8]) -> Result<Hash> {
    let text = std::str::from_utf8(bytes).map_err(|_| Error::corrupt(where_, "ref is not UTF-8"))?;
    let id = text
        .split_whitespace()
        .find_map(|w| w.parse::<Hash>().ok())
        .ok_or_else(|| Error::corrupt(where_, "ref holds no version id"))?;
    if refs::encode_ref(id).as_bytes() != bytes {
        return Err(Error::corrupt(where_, "not a tdelta ref (bad format or checksum)"));
    }
    Ok(id)
}

/// Every ref of the remote and `HEAD`.
pub(super) fn remote_refs(b: &ObjectStoreBackend) -> Result<Vec<(String, Hash)>> {
    let mut out = Vec::new();
    for m in b.list("refs/")? {
        let name = m.name["refs/".len()..].to_string();
        if refs::validate_ref_name(&name).is_err() {
            continue;
        }
        if let Some((id, _)) = read_remote_ref(b, &name)? {
            out.push((name, id));
        }
    }
    if let Some((id, _)) = read_remote_ref(b, "HEAD")? {
        out.push(("HEAD".to_string(), id));
    }
    Ok(out)
}

/// True when `new` is `old` or has it among its ancestors (local
/// manifests).
fn descends(store: &Store, new: Hash, old: Hash) -> bool {
    let mut cur = Some(new);
    let mut seen = HashSet::new();
    while let Some(id) = cur {
        if id == old {
            return true;
        }
        if !seen.insert(id) {
            return false;
        }
        cur = store.manifest_summary(id).ok().and_then(|s| s.parent);
    }
    false
}

/// Runs `f` over `items` on up to `jobs` threads; the first error stops
/// the rest and is returned.
pub(super) fn parallel<T: Sync>(jobs: usize, items: &[T], f: impl Fn(&T) -> Result<()> + Sync) -> Result<()> {
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let first: Mutex<Option<Error>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, 64).min(items.len().max(1)) {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    if let Err(e) = f(item) {
                        stop.store(true, Ordering::Relaxed);
                        first.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
                    }
                }
            });
        }
    });
    match first.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Sends what the remote lacks, then moves its refs (see [`PushOptions`]).
pub fn push(store: &Store, remote: &Remote, opts: &PushOptions, progress: &dyn Progress) -> Result<TransferReport> {
    let start = Instant::now();
    let b = open(remote)?;
    let mut report = TransferReport { remote: remote.name.clone(), ..TransferReport::default() };

    // The refs to move, resolved before anything is sent.
    let names: Vec<String> = if opts.refs.is_empty() {
        let mut v: Vec<String> = store.refs()?.into_iter().map(|(n, _)| n).collect();
        if store.read_ref("HEAD")?.is_some() {
            v.push("HEAD".into());
        }
        v
    } else {
        opts.refs.clone()
    };
    let mut moves = Vec::new();
    for n in &names {
        let id = store.read_ref(n)?.ok_or_else(|| Error::UnknownRef { name: n.clone() })?;
        moves.push((n.clone(), id));
    }

    // The store's config first: it marks the prefix as a store.
    match b.head("config") {
        Ok(_) => {}
        Err(Error::NotFound { .. }) => {
            let (cfg, _) = store.backend().get("config", MAX_CONFIG)?;
            match b.put("config", &cfg, PutMode::Create) {
                Ok(_) | Err(Error::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Err(e) => return Err(e),
    }

    // What the refs need (their versions and their lines), less what the
    // remote holds.
    let tips: Vec<Hash> = moves.iter().map(|(_, id)| *id).collect();
    let versions = local_side::lines(store, &tips)?;
    let needed = local_side::needed_objects(store, &versions)?;
    let mut there: HashMap<String, u64> = HashMap::new();
    for prefix in ["packs/", "versions/", "signatures/versions/"] {
        for m in b.list(prefix)? {
            there.insert(m.name, m.size);
        }
    }
    let mut todo: Vec<LocalObject> = Vec::new();
    for o in needed.iter().cloned() {
        match there.get(&o.name) {
            Some(&size) if size == o.size => {
                report.objects_skipped += 1;
                report.bytes_skipped += o.size;
            }
            Some(&size) => {
                return Err(Error::corrupt(
                    format!("{}/{}", b.describe(), o.name),
                    format!("remote object has {size} bytes, the local one {}", o.size),
                ));
            }
            None => todo.push(o),
        }
    }
    let sent_objects = AtomicU64::new(0);
    let sent_bytes = AtomicU64::new(0);
    let raced = AtomicU64::new(0);
    let raced_bytes = AtomicU64::new(0);
    let src = store.backend().as_ref();
    progress.begin("push", todo.iter().map(|o| o.size).sum());
    // Packs, then indexes, then manifests, then signatures: each phase
    // whole before the next.
    let send = |todo: &[LocalObject]| -> Result<()> {
        for phase in 0..4 {
            let items: Vec<&LocalObject> =
                todo.iter().filter(|o| Kind::of(&o.name).is_some_and(|k| k.phase() == phase)).collect();
            parallel(opts.jobs, &items, |o| {
                match b.put_from(src, &o.name, o.size, &|n| progress.advance(n)) {
                    Ok(()) => {
                        sent_objects.fetch_add(1, Ordering::Relaxed);
                        sent_bytes.fetch_add(o.size, Ordering::Relaxed);
                    }
                    // Someone pushed the same content-addressed object.
                    Err(Error::AlreadyExists { .. }) => {
                        raced.fetch_add(1, Ordering::Relaxed);
                        raced_bytes.fetch_add(o.size, Ordering::Relaxed);
                    }
                    Err(e) => return Err(e),
                }
                Ok(())
            })?;
        }
        Ok(())
    };
    send(&todo)?;
    // Before any ref moves, everything the refs need is there: a remote gc
    // may have removed an old unreachable object this push found and
    // skipped (FORMAT.md, "Remote layout"); such objects go up again.
    let mut now_there: HashSet<String> = HashSet::new();
    for prefix in ["packs/", "versions/", "signatures/versions/"] {
        now_there.extend(b.list(prefix)?.into_iter().map(|m| m.name));
    }
    let lost: Vec<LocalObject> = needed.into_iter().filter(|o| !now_there.contains(&o.name)).collect();
    if !lost.is_empty() {
        send(&lost)?;
    }
    progress.end();
    report.objects_sent = sent_objects.into_inner();
    report.bytes_sent = sent_bytes.into_inner();
    report.objects_skipped += raced.into_inner();
    report.bytes_skipped += raced_bytes.into_inner();

    // Refs last, each by compare-and-swap.
    let mut tracked = Vec::new();
    let mut refused = Vec::new();
    for (name, id) in moves {
        match move_remote_ref(store, &b, &name, id, opts) {
            Ok(u) => {
                tracked.push((name.clone(), id));
                report.refs.push(u);
            }
            Err(e @ Error::Conflict { .. }) => refused.push(e),
            Err(e) => return Err(e),
        }
    }
    if !tracked.is_empty() {
        let _txn = store.begin_write()?;
        config::set_tracking(store, &remote.name, &tracked, false)?;
    }
    report.seconds = start.elapsed().as_secs_f64();
    if let Some(e) = refused.into_iter().next() {
        return Err(e);
    }
    Ok(report)
}

/// Moves one remote ref to `id` by compare-and-swap, refusing a move to a
/// version that does not descend from the remote's unless forced.
fn move_remote_ref(
    store: &Store,
    b: &ObjectStoreBackend,
    name: &str,
    id: Hash,
    opts: &PushOptions,
) -> Result<RefUpdate> {
    let obj = ref_object(name);
    // The version and everything it needs are there before the ref moves.
    let manifest = format!("versions/{id}.tdm");
    b.head(&manifest).map_err(|e| match e {
        Error::NotFound { .. } => Error::corrupt(
            format!("{}/{manifest}", b.describe()),
            format!("version {} of `{name}` is not on the remote; the push did not finish", id.short()),
        ),
        e => e,
    })?;
    for _ in 0..CAS_TRIES {
        let current = read_remote_ref(b, name)?;
        let old = current.as_ref().map(|(h, _)| *h);
        if old == Some(id) {
            return Ok(RefUpdate {
                name: name.into(),
                old: Some(id.to_string()),
                new: id.to_string(),
                status: "unchanged".into(),
            });
        }
        let forced = match old {
            Some(o) if !descends(store, id, o) => {
                if !opts.force {
                    return Err(Error::Conflict {
                        what: format!("remote `{name}`"),
                        reason: format!("it moved to {} since you fetched", o.short()),
                    });
                }
                true
            }
            _ => false,
        };
        let bytes = refs::encode_ref(id);
        let expected = current.map(|(_, t)| t);
        match b.put(&obj, bytes.as_bytes(), PutMode::IfMatch(expected)) {
            Ok(_) => {}
            Err(e) => {
                // The put may have landed with its response lost: look
                // before calling it a conflict.
                match read_remote_ref(b, name) {
                    Ok(Some((now, _))) if now == id => {}
                    _ if matches!(e, Error::Conflict { .. }) => continue,
                    _ => return Err(e),
                }
            }
        }
        let status = if forced {
            "forced"
        } else if old.is_some() {
            "updated"
        } else {
            "created"
        };
        record(b, store, name, old, id, status, &opts.why)?;
        return Ok(RefUpdate {
            name: name.into(),
            old: old.map(|h| h.to_string()),
            new: id.to_string(),
            status: status.into(),
        });
    }
    Err(Error::Conflict {
        what: format!("remote `{name}`"),
        reason: "it kept moving under concurrent pushes; try again".into(),
    })
}

/// Appends a ref move to the remote audit trail: one create-only object.
fn record(
    b: &ObjectStoreBackend,
    store: &Store,
    name: &str,
    old: Option<Hash>,
    new: Hash,
    status: &str,
    why: &str,
) -> Result<()> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let entry = serde_json::json!({
        "time": now.as_secs(),
        "who": store.who(),
        "op": "push",
        "ref": name,
        "old": old.map(|h| h.to_string()),
        "new": new.to_string(),
        "status": status,
        "why": why,
    });
    let body = serde_json::to_vec(&entry).map_err(|e| Error::Internal(e.to_string()))?;
    let mut n = 0u32;
    loop {
        let obj = format!("audit/{:020}-{:09}-{}-{n}.json", now.as_secs(), now.subsec_nanos(), std::process::id());
        match b.put(&obj, &body, PutMode::Create) {
            Ok(_) => return Ok(()),
            Err(Error::AlreadyExists { .. }) if n < 16 => n += 1,
            Err(e) => return Err(e),
        }
    }
}

/// The remote audit trail, oldest first (each entry as recorded).
pub fn audit_trail(remote: &Remote) -> Result<Vec<serde_json::Value>> {
    let b = open(remote)?;
    let mut out = Vec::new();
    for m in b.list("audit/")? {
        let (bytes, _) = b.get(&m.name, 1 << 16)?;
        let v = serde_json::from_slice(&bytes)
            .map_err(|e| Error::corrupt(format!("{}/{}", b.describe(), m.name), e.to_string()))?;
        out.push(v);
    }
    Ok(out)
}

/// Downloads what the local store lacks and records the remote's refs
/// (the local refs do not move: see [`pull`]). The caller must not hold
/// the lock.
pub fn fetch(store: &Store, remote: &Remote, jobs: usize, progress: &dyn Progress) -> Result<TransferReport> {
    let start = Instant::now();
    let b = open(remote)?;
    let _txn = store.begin_write()?;
    let mut report = fetch_locked(store, &b, jobs, progress)?;
    report.remote = remote.name.clone();
    let refs = remote_refs(&b)?;
    config::set_tracking(store, &remote.name, &refs, true)?;
    for (name, id) in refs {
        report.refs.push(RefUpdate { name, old: None, new: id.to_string(), status: "fetched".into() });
    }
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

fn fetch_locked(store: &Store, b: &ObjectStoreBackend, jobs: usize, progress: &dyn Progress) -> Result<TransferReport> {
    let mut report = TransferReport::default();
    let mut remote_objects = BTreeMap::new();
    for prefix in ["packs/", "versions/", "signatures/versions/"] {
        for m in b.list(prefix)? {
            remote_objects.insert(m.name.clone(), m.size);
        }
    }
    let local = store.backend();
    let mut todo = Vec::new();
    for (name, &size) in &remote_objects {
        let Some(kind) = Kind::of(name) else { continue };
        // A pack whose index is not there yet is a push under way; a
        // signature goes with its version.
        let partner = match kind {
            Kind::Pack(id) => Some(crate::store::index_name(id)),
            Kind::Index(id) => Some(crate::store::pack_name(id)),
            Kind::Signature(id) => Some(crate::store::version_name(id)),
            Kind::Version(_) => None,
        };
        if partner.is_some_and(|p| !remote_objects.contains_key(&p)) {
            continue;
        }
        match local.head(name) {
            Ok(_) => {
                report.objects_skipped += 1;
                report.bytes_skipped += size;
            }
            Err(Error::NotFound { .. }) => todo.push((name.clone(), size, kind)),
            Err(e) => return Err(e),
        }
    }
    let got_objects = AtomicU64::new(0);
    let got_bytes = AtomicU64::new(0);
    progress.begin("fetch", todo.iter().map(|t| t.1).sum());
    for phase in 0..4 {
        let items: Vec<_> = todo.iter().filter(|t| t.2.phase() == phase).collect();
        parallel(jobs, &items, |(name, size, kind)| {
            let pack_len = match kind {
                Kind::Index(id) => remote_objects.get(&crate::store::pack_name(*id)).copied().unwrap_or(0),
                _ => 0,
            };
            match download(store, b, name, *size, *kind, pack_len, progress) {
                Ok(()) => {
                    got_objects.fetch_add(1, Ordering::Relaxed);
                    got_bytes.fetch_add(*size, Ordering::Relaxed);
                    Ok(())
                }
                // Landed meanwhile (a clone of the same object): the same bytes.
                Err(Error::AlreadyExists { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        })?;
    }
    progress.end();
    report.objects_sent = got_objects.into_inner();
    report.bytes_sent = got_bytes.into_inner();
    Ok(report)
}

/// Largest index, manifest or signature a fetch holds in memory to check.
const MAX_SMALL_OBJECT: u64 = 1 << 30;

/// Downloads one remote object into the local store through its backend's
/// atomic streamed put, checked before it lands: a pack must hash to its
/// name, an index must parse against its pack, a manifest must hash to its
/// id, a signature must verify. Nothing lands otherwise.
fn download(
    store: &Store,
    b: &ObjectStoreBackend,
    name: &str,
    size: u64,
    kind: Kind,
    pack_len: u64,
    progress: &dyn Progress,
) -> Result<()> {
    let where_ = std::path::PathBuf::from(format!("{}/{name}", b.describe()));
    if !matches!(kind, Kind::Pack(_)) && size > MAX_SMALL_OBJECT {
        return Err(Error::corrupt(&where_, format!("{size} bytes, more than such an object may have")));
    }
    let mut w = store.backend().writer()?;
    let mut hasher = match kind {
        Kind::Pack(id) => Some(id.algo().hasher(crate::Domain::Pack)),
        _ => None,
    };
    let mut small = Vec::new();
    let got = b.get_with(name, &mut |chunk| {
        if let Some(h) = hasher.as_mut() {
            h.update(chunk);
        } else {
            if small.len() as u64 + chunk.len() as u64 > size.min(MAX_SMALL_OBJECT) {
                return Err(Error::corrupt(&where_, "object grew while it was read"));
            }
            small.extend_from_slice(chunk);
        }
        progress.advance(chunk.len() as u64);
        w.write_all(chunk)
    });
    let checked = got.and_then(|_| match kind {
        Kind::Pack(id) => {
            let actual = hasher.take().map(|h| h.finish());
            if actual != Some(id) {
                return Err(Error::corrupt_as(
                    crate::error::CorruptKind::HashMismatch,
                    &where_,
                    "the remote pack does not hash to its name",
                ));
            }
            Ok(())
        }
        Kind::Index(_) => crate::store::pack::decode_index(&where_, &small, 0, pack_len).map(|_| ()),
        Kind::Version(id) => crate::store::manifest::Manifest::decode_summary(&small, id)
            .map(|_| ())
            .map_err(|e| crate::Error::format(&where_, e)),
        Kind::Signature(id) => crate::store::sign::check_bytes(&where_, &small, id).map(|_| ()),
    });
    match checked {
        Ok(()) => w.finish(name),
        Err(e) => {
            w.abort();
            Err(e)
        }
    }
}

/// Fetches, then moves local refs to the remote's: `only` (a ref or
/// `HEAD`), else every remote ref and `HEAD`. A local ref with versions
/// the remote lacks is left alone (named: an error unless `force`).
pub fn pull(
    root: &Path,
    remote: &Remote,
    only: Option<&str>,
    force: bool,
    jobs: usize,
    progress: &dyn Progress,
) -> Result<TransferReport> {
    let store = Store::open(root)?;
    let mut report = fetch(&store, remote, jobs, progress)?;
    let fetched = std::mem::take(&mut report.refs);
    // Reopen: the fetched packs are now in the store.
    let store = Store::open(root)?;
    let txn = store.begin_write()?;
    let mut wanted: Vec<(String, Hash)> = Vec::new();
    for u in fetched {
        let id = u.new.parse::<Hash>().map_err(|e| Error::Internal(format!("fetched ref `{}`: {e}", u.name)))?;
        if only.is_none_or(|o| o == u.name) {
            wanted.push((u.name, id));
        }
    }
    if let Some(o) = only
        && wanted.is_empty()
    {
        return Err(Error::UnknownRef { name: format!("{o} (on remote `{}`)", remote.name) });
    }
    for (name, id) in wanted {
        let local = store.read_ref(&name)?;
        let status = match local {
            Some(l) if l == id => "unchanged",
            Some(l) if !descends(&store, id, l) && !force => {
                if only.is_some() {
                    return Err(Error::Conflict {
                        what: format!("local `{name}`"),
                        reason: format!(
                            "it points to {}, which remote `{}` lacks (the remote's is {})",
                            l.short(),
                            remote.name,
                            id.short()
                        ),
                    });
                }
                "diverged"
            }
            Some(l) if !descends(&store, id, l) => "forced",
            Some(_) => "updated",
            None => "created",
        };
        if matches!(status, "updated" | "created" | "forced") {
            txn.move_ref(&store, &name, Some(id), "pull", &format!("pull from {}", remote.name))?;
        }
        report.refs.push(RefUpdate {
            name,
            old: local.map(|h| h.to_string()),
            new: id.to_string(),
            status: status.into(),
        });
    }
    Ok(report)
}

/// Creates a store at `dir` from the remote at `url` (remote `origin`,
/// the default) and checks out every remote ref and `HEAD`.
pub fn clone(
    url: &str,
    endpoint: Option<&str>,
    dir: &Path,
    jobs: usize,
    progress: &dyn Progress,
) -> Result<TransferReport> {
    let start = Instant::now();
    let b = ObjectStoreBackend::open(url, &RemoteOptions { endpoint: endpoint.map(str::to_string) })?;
    let (bytes, _) = match b.get("config", MAX_CONFIG) {
        Ok(v) => v,
        Err(Error::NotFound { .. }) => {
            return Err(Error::NoStore { path: b.describe().into() });
        }
        Err(e) => return Err(e),
    };
    let where_ = std::path::PathBuf::from(format!("{}/config", b.describe()));
    let framed =
        fsutil::unframe(&where_, &bytes, b"TDSTORE\0", crate::store::STORE_VERSION, tdelta_format::FileKind::Config)?;
    let cfg: StoreConfig = serde_json::from_slice(framed.body)
        .map_err(|e| Error::corrupt(&where_, format!("config is not valid: {e}")))?;
    let store = Store::init(dir, &InitOptions { block_size: cfg.block_size })?;
    let remote = config::add(&store, "origin", url, endpoint, true)?;
    drop(store);
    let mut report = pull(dir, &remote, None, false, jobs, progress)?;
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ref_objects_round_trip_and_reject_garbage() {
        let id = Hash::of(b"v");
        let bytes = refs::encode_ref(id);
        assert_eq!(decode_ref("r", bytes.as_bytes()).unwrap(), id);
        let mut bad = bytes.clone().into_bytes();
        let n = bad.len() - 3;
        bad[n] ^= 1;
        assert!(decode_ref("r", &bad).is_err());
        assert!(decode_ref("r", b"hello\n").is_err());
    }

    #[test]
    fn transfer_reports_serialise_with_the_summary_field_names() {
        let r = TransferReport {
            remote: "origin".into(),
            objects_sent: 3,
            bytes_sent: 300,
            objects_skipped: 1,
            bytes_skipped: 100,
            refs: vec![RefUpdate { name: "HEAD".into(), old: None, new: "ab".into(), status: "created".into() }],
            seconds: 0.5,
        };
        let v = serde_json::to_value(&r).unwrap();
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["bytes", "bytes_skipped", "objects", "objects_skipped", "refs", "remote", "seconds"]);
        assert_eq!(v["objects"], 3);
        assert_eq!(v["bytes"], 300);
        assert_eq!(v["refs"][0]["status"], "created");
    }

    #[test]
    fn parallel_returns_the_first_error_and_runs_everything_otherwise() {
        let n = AtomicU64::new(0);
        let items: Vec<u64> = (0..100).collect();
        parallel(4, &items, |i| {
            n.fetch_add(*i, Ordering::Relaxed);
            Ok(())
        })
        .unwrap();
        assert_eq!(n.into_inner(), 4950);
        let e = parallel(4, &items, |i| if *i == 7 { Err(Error::InvalidArgument("seven".into())) } else { Ok(()) });
        assert_eq!(e.unwrap_err().to_string(), "seven");
    }
}
