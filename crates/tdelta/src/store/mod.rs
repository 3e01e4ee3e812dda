//! The store: a directory of immutable packs and manifests, small refs
//! swapped atomically, an audit log and a writer lock.
//!
//! ```text
//! STORE/
//!   config              framed JSON: block size, creation time, hash
//!   packs/<id>.pack     encoded blocks, written once
//!   packs/<id>.idx      index of a pack, written after it
//!   versions/<id>.tdm   manifests, content-addressed
//!   refs/<name>         channels and tags (may contain `/`)
//!   HEAD                the newest version packed
//!   audit.log           hash-chained log of versions and ref moves
//!   audit.pending       the ref move under way (see `integrity`)
//!   keys/trusted/       public keys whose signatures count (see `sign`)
//!   signatures/         signatures of versions and ref moves
//!   lock                writer lock
//!   tmp/                temporary files of the current writer
//! ```
//!
//! Every object is read and written through a [`Backend`]: locally
//! ([`LocalDir`]) everything but `lock` is written to `tmp/`, fsynced and
//! renamed into place, so a reader sees a file whole or not at all. Packs
//! and manifests never change after that; refs, `HEAD` and `audit.log`
//! change by compare-and-swap under the writer lease ([`WriteTxn`]), so the
//! same layout lives on an object store. The store knows blocks and
//! versions, not what tensors mean.

pub(crate) mod fsutil;
pub(crate) mod info;
pub(crate) mod integrity;
pub(crate) mod lock;
pub(crate) mod manifest;
pub(crate) mod pack;
pub(crate) mod read;
pub(crate) mod refs;
pub(crate) mod sign;
mod txn;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::backend::{Backend, LocalDir, PutMode};
use crate::error::{CorruptKind, IoContext};
use crate::{Algo, Hash};
use crate::{Error, Result};
use manifest::Manifest;
use pack::Entry;
use refs::{AuditEntry, AuditLog};
pub use txn::WriteTxn;

/// Store format version written by this build: 2 names blocks and
/// versions with BLAKE3; format-1 stores (xxh3-128) are read, and written
/// once upgraded (`Store::upgrade`).
pub use tdelta_format::config::STORE_VERSION;
pub use tdelta_format::config::StoreConfig;
/// Fewest hex digits of a version id prefix.
const MIN_PREFIX: usize = 4;

/// Splits the `~N` and `^` suffixes off a version spec: the name and how
/// many parents to go back.
fn split_ancestry(spec: &str) -> Result<(&str, usize)> {
    let mut rest = spec;
    let mut steps = 0usize;
    loop {
        let n = if let Some(r) = rest.strip_suffix('^') {
            rest = r;
            1
        } else if let Some((r, digits)) = rest.rsplit_once('~')
            && digits.bytes().all(|b| b.is_ascii_digit())
        {
            rest = r;
            if digits.is_empty() {
                1
            } else {
                digits
                    .parse::<usize>()
                    .map_err(|_| Error::InvalidArgument(format!("`{spec}`: `~{digits}` is too large")))?
            }
        } else {
            break;
        };
        steps = steps.checked_add(n).ok_or_else(|| Error::InvalidArgument(format!("`{spec}`: too many parents")))?;
    }
    if rest.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "`{spec}` names no version; use REF, REF~N or REF^ where REF is HEAD, a tag or an id"
        )));
    }
    Ok((rest, steps))
}

/// Seconds since the Unix epoch.
pub(crate) fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Who is acting: `$USER@host`, or `TDELTA_AUTHOR` when set.
pub(crate) fn whoami() -> String {
    if let Ok(a) = std::env::var("TDELTA_AUTHOR") {
        return a;
    }
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let host = fs::read_to_string("/etc/hostname").unwrap_or_default();
    let host = host.trim();
    if host.is_empty() { user } else { format!("{user}@{host}") }
}

/// Figures about a whole store ([`Store::stats`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StoreStats {
    /// Pack files.
    pub packs: usize,
    /// Bytes of the pack files.
    pub pack_bytes: u64,
    /// Distinct blocks stored.
    pub blocks: usize,
    /// Payload bytes of those blocks.
    pub payload_bytes: u64,
    /// Raw bytes those blocks restore to.
    pub raw_block_bytes: u64,
    /// Versions (manifests).
    pub versions: usize,
}

/// The damage found reading `config` ([`Store::config_problem`]).
#[derive(Debug)]
struct ConfigDamage {
    file: PathBuf,
    kind: CorruptKind,
    reason: String,
}

/// Options of [`Store::init`].
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Raw block size in bytes (default [`crate::block::DEFAULT_BLOCK_SIZE`]).
    pub block_size: u32,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions { block_size: crate::block::DEFAULT_BLOCK_SIZE }
    }
}

/// A loaded pack: its object name, its file (for messages), length and
/// format version (that of its index).
#[derive(Debug)]
pub(crate) struct PackFile {
    pub id: Hash,
    pub version: u32,
    pub name: String,
    pub path: PathBuf,
    pub len: u64,
}

/// An open store.
#[derive(Debug)]
pub struct Store {
    backend: Arc<dyn Backend>,
    /// Where the store is, for messages (the directory of a local store).
    root: PathBuf,
    config: StoreConfig,
    pub(crate) packs: Vec<PackFile>,
    pub(crate) index: HashMap<Hash, Entry>,
    /// Pack indexes (or their packs) found damaged by the last load: their
    /// blocks are unavailable, so only the versions that need them are
    /// damaged (`verify` lists both).
    pub(crate) damaged: Vec<String>,
    /// Why `config` could not be read, when the store was opened without
    /// it (block size taken from the manifests): reads only.
    config_problem: Option<ConfigDamage>,
    /// How long a writer waits for the lock.
    pub lock_wait: Duration,
    /// Called once when a writer starts waiting for the lock, with a
    /// description of the holder (`pid N ...`).
    pub lock_notice: Option<fn(&str)>,
    /// Who is acting, recorded in new versions and audit entries (default:
    /// `TDELTA_AUTHOR`, then `$USER@host`).
    pub author: Option<String>,
    /// Nanoseconds this handle spent waiting for the lock, in all.
    lock_waited: AtomicU64,
    /// Signs the versions and ref moves written through this handle.
    signer: Option<sign::Signer>,
}

impl Store {
    /// Creates a new, empty store at `path` (created if missing; must be
    /// empty of any store).
    pub fn init(path: &Path, opts: &InitOptions) -> Result<Store> {
        check_block_size(opts)?;
        if path.join("config").exists() {
            return Err(Error::StoreExists { path: path.to_path_buf() });
        }
        // A local store has its folders from the start, empty or not.
        for d in ["", "packs", "versions", "refs", "tmp"] {
            fs::create_dir_all(path.join(d)).at(path.join(d))?;
        }
        Store::init_with(Arc::new(LocalDir::new(path)), opts)
    }

    /// Creates a new, empty store on `backend` (which must hold no store).
    pub fn init_with(backend: Arc<dyn Backend>, opts: &InitOptions) -> Result<Store> {
        check_block_size(opts)?;
        let root = backend.locate("");
        if exists(backend.as_ref(), "config")? {
            return Err(Error::StoreExists { path: root });
        }
        // Two concurrent inits: the second waits, then finds the store.
        let lease = backend.lease(Duration::from_secs(60), None)?;
        if exists(backend.as_ref(), "config")? {
            return Err(Error::StoreExists { path: root });
        }
        AuditLog::new(Arc::clone(&backend)).create()?;
        let config =
            StoreConfig { block_size: opts.block_size, created: now(), hash: Algo::Blake3, format: STORE_VERSION };
        // The config lands last: a store without it is not a store.
        write_config(backend.as_ref(), &config, PutMode::Create)?;
        drop(lease);
        Store::open_with(backend)
    }

    /// Opens an existing store and loads its pack indexes.
    pub fn open(path: &Path) -> Result<Store> {
        if !path.join("config").is_file() {
            return Err(Error::NoStore { path: path.to_path_buf() });
        }
        Store::open_with(Arc::new(LocalDir::new(path)))
    }

    /// Opens the store on `backend` and loads its pack indexes.
    pub fn open_with(backend: Arc<dyn Backend>) -> Result<Store> {
        let root = backend.locate("");
        if !exists(backend.as_ref(), "config")? {
            return Err(Error::NoStore { path: root });
        }
        // A damaged config does not take the versions with it: each
        // manifest records the block size, so the store opens for reading.
        let (config, config_problem) = match read_config(backend.as_ref()) {
            Ok(c) => (c, None),
            Err(Error::Corrupt { file, kind, reason, .. }) => {
                let block_size =
                    block_size_from_manifests(backend.as_ref()).unwrap_or(crate::block::DEFAULT_BLOCK_SIZE);
                // Ids of either width are still checked by their width.
                let config = StoreConfig { block_size, created: 0, hash: Algo::Blake3, format: STORE_VERSION };
                (config, Some(ConfigDamage { file, kind, reason }))
            }
            Err(e) => return Err(e),
        };
        let mut store = Store {
            backend,
            root,
            config,
            packs: Vec::new(),
            index: HashMap::new(),
            damaged: Vec::new(),
            config_problem,
            lock_wait: Duration::from_secs(60),
            lock_notice: None,
            author: None,
            lock_waited: AtomicU64::new(0),
            signer: None,
        };
        store.load_packs()?;
        Ok(store)
    }

    /// The backend holding the store's objects.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }
}

fn check_block_size(opts: &InitOptions) -> Result<()> {
    if !(crate::block::MIN_BLOCK_SIZE..=crate::block::MAX_BLOCK_SIZE).contains(&opts.block_size) {
        return Err(Error::InvalidArgument(format!(
            "block size {} out of range; valid values are {}..={} bytes",
            opts.block_size,
            crate::block::MIN_BLOCK_SIZE,
            crate::block::MAX_BLOCK_SIZE
        )));
    }
    Ok(())
}

/// True when `name` exists on `backend`.
fn exists(backend: &dyn Backend, name: &str) -> Result<bool> {
    match backend.head(name) {
        Ok(_) => Ok(true),
        Err(Error::NotFound { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

impl Store {
    /// (Re)loads every pack index. Packs without an index (a writer killed
    /// between the two renames) are ignored; `gc` removes them.
    pub(crate) fn load_packs(&mut self) -> Result<()> {
        let mut ids: Vec<Hash> = Vec::new();
        self.damaged.clear();
        for obj in self.backend.list("packs/")? {
            let Some(stem) = obj.name.strip_prefix("packs/").and_then(|n| n.strip_suffix(".idx")) else {
                continue;
            };
            if stem.contains('/') {
                continue;
            }
            match stem.parse() {
                Ok(id) => ids.push(id),
                // Not ours (`README.idx`, say): reported, not fatal.
                Err(e) => self.damaged.push(
                    Error::corrupt(
                        self.locate(&obj.name),
                        format!("unexpected file in packs/ ({e}); move it out of the store"),
                    )
                    .to_string(),
                ),
            }
        }
        ids.sort();
        self.packs.clear();
        self.index.clear();
        let mut copies = Vec::new();
        for id in ids {
            let (pack_name, idx_name) = (pack_name(id), index_name(id));
            let (pack_path, idx_path) = (self.locate(&pack_name), self.locate(&idx_name));
            // A damaged index or pack makes its blocks unavailable, not the
            // whole store: the other versions still restore. A newer
            // format, or an I/O error other than a missing object, still
            // stops the open.
            let loaded = self.backend.head(&pack_name).and_then(|meta| {
                let (bytes, _) = self.backend.get(&idx_name, 1 << 34)?;
                let (version, entries) = pack::decode_index(&idx_path, &bytes, self.packs.len() as u32, meta.size)?;
                Ok((meta.size, version, entries))
            });
            let (len, version, entries) = match loaded {
                Ok(v) => v,
                Err(e @ Error::Corrupt { .. }) => {
                    self.damaged.push(e.to_string());
                    continue;
                }
                Err(Error::NotFound { .. }) => {
                    // Removed under us by a concurrent gc (index first,
                    // then pack), or a pack lost by hand: `verify` names
                    // it with the versions that need it.
                    continue;
                }
                Err(e) => return Err(e),
            };
            for e in entries {
                match self.index.entry(e.hash) {
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(e);
                    }
                    std::collections::hash_map::Entry::Occupied(_) => copies.push(e),
                }
            }
            self.packs.push(PackFile { id, version, name: pack_name, path: pack_path, len });
        }
        // A block stored twice (written again after an interrupted `gc`
        // left a copy whose bases are gone): the copy whose chain is whole
        // serves.
        for e in copies {
            if self.has_whole_block(e.hash) {
                continue;
            }
            let old = self.index.insert(e.hash, e);
            if !self.has_whole_block(e.hash)
                && let Some(old) = old
            {
                self.index.insert(old.hash, old);
            }
        }
        Ok(())
    }

    /// Problems found loading the pack indexes (see `damaged`).
    pub(crate) fn damaged_packs(&self) -> &[String] {
        &self.damaged
    }

    /// Why `config` could not be read (the store is then read-only).
    pub(crate) fn config_problem(&self) -> Option<String> {
        self.config_problem.as_ref().map(|d| {
            format!(
                "corrupt store file {}: {}; the store is read-only until it is restored (from a backup)",
                d.file.display(),
                d.reason
            )
        })
    }

    /// Refuses to `what` (`write`, `upgrade`) a store whose config could
    /// not be read: damage, naming the config.
    pub(crate) fn refuse_if_config_damaged(&self, what: &str) -> Result<()> {
        match &self.config_problem {
            Some(d) => Err(Error::corrupt_as(
                d.kind,
                &d.file,
                format!(
                    "{}; refusing to {what}: the store is read-only until its config is restored (from a backup)",
                    d.reason
                ),
            )),
            None => Ok(()),
        }
    }

    /// Where the store is: its directory (local stores), else a
    /// path-like name of the backend, for messages.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// How messages name object `name` (its file, for a local store).
    pub(crate) fn locate(&self, name: &str) -> PathBuf {
        self.backend.locate(name)
    }

    /// Settings fixed at creation (or upgrade).
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// The algorithm that names new blocks and versions. Existing ids are
    /// checked with the algorithm their width names ([`Hash::algo`]).
    pub fn hasher(&self) -> Algo {
        self.config.hash
    }

    pub(crate) fn audit(&self) -> AuditLog {
        AuditLog::new(Arc::clone(&self.backend))
    }

    /// Takes the writer lease (see [`WriteTxn`]), then settles the refs
    /// with the audit log ([`Store::settle_refs`]).
    pub(crate) fn begin_write(&self) -> Result<WriteTxn> {
        self.refuse_if_config_damaged("write")?;
        if self.config.format < STORE_VERSION {
            return Err(Error::NeedsUpgrade { format: self.config.format, ids: self.config.hash.to_string() });
        }
        let txn = self.begin_write_unsettled()?;
        self.settle_refs()?;
        Ok(txn)
    }

    /// Takes the writer lease without settling the refs (for `repair
    /// audit`, which settles them itself).
    pub(crate) fn begin_write_unsettled(&self) -> Result<WriteTxn> {
        Ok(WriteTxn::new(self, self.take_lease()?))
    }

    /// Takes the backend's writer lease, counting the time waited.
    fn take_lease(&self) -> Result<Box<dyn crate::backend::Lease>> {
        let start = Instant::now();
        let noted = std::cell::Cell::new(false);
        let notice = |holder: &str| {
            noted.set(true);
            if let Some(f) = self.lock_notice {
                f(holder);
            }
        };
        let lease = self.backend.lease(self.lock_wait, Some(&notice))?;
        if noted.get() {
            let waited = start.elapsed();
            self.lock_waited.fetch_add(u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
        }
        Ok(lease)
    }

    /// Time this handle spent waiting for other writers' lock, in all (so
    /// that reported speeds can leave it out).
    pub fn lock_waited(&self) -> Duration {
        Duration::from_nanos(self.lock_waited.load(Ordering::Relaxed))
    }

    /// Who is acting: [`Store::author`], else `TDELTA_AUTHOR`, else
    /// `$USER@host`.
    pub(crate) fn who(&self) -> String {
        self.author.clone().unwrap_or_else(whoami)
    }

    /// The file of version `id`'s manifest, for messages.
    pub(crate) fn manifest_path(&self, id: Hash) -> PathBuf {
        self.locate(&version_name(id))
    }

    /// True when the store holds version `id` (its manifest exists).
    pub(crate) fn has_version(&self, id: Hash) -> bool {
        exists(self.backend.as_ref(), &version_name(id)).unwrap_or(false)
    }

    /// Bytes of version `id`'s manifest (0 when it cannot be read).
    pub(crate) fn manifest_size(&self, id: Hash) -> u64 {
        self.backend.head(&version_name(id)).map_or(0, |m| m.size)
    }

    /// Reads and checks the manifest of version `id`.
    pub fn manifest(&self, id: Hash) -> Result<Manifest> {
        self.read_manifest(id, Manifest::decode, |m| m.block_size)
    }

    /// Reads and checks the summary of version `id` (its manifest without
    /// the file and tensor lists), for listings: memory stays bounded by
    /// the manifest's size on disk, not by how many tensors it lists.
    pub fn manifest_summary(&self, id: Hash) -> Result<manifest::ManifestSummary> {
        self.read_manifest(id, Manifest::decode_summary, |m| m.block_size)
    }

    /// Reads the manifest file of `id`, decodes it with `decode` and checks
    /// its block size against the store's.
    fn read_manifest<T>(
        &self,
        id: Hash,
        decode: impl FnOnce(&[u8], Hash) -> std::result::Result<T, tdelta_format::FormatError>,
        block_size: impl FnOnce(&T) -> u32,
    ) -> Result<T> {
        let path = self.manifest_path(id);
        let bytes = match self.backend.get(&version_name(id), 1 << 30) {
            Ok((b, _)) => b,
            Err(Error::NotFound { .. }) => return Err(Error::UnknownRef { name: id.to_hex() }),
            Err(e) => return Err(e),
        };
        let m = decode(&bytes, id).map_err(|e| Error::format(&path, e))?;
        let size = block_size(&m);
        if size != self.config.block_size {
            return Err(Error::corrupt(
                &path,
                format!("block size {size} differs from the store's {}", self.config.block_size),
            ));
        }
        Ok(m)
    }

    /// Every version id in the store, sorted by id.
    pub fn versions(&self) -> Result<Vec<Hash>> {
        let mut out: Vec<Hash> = self
            .backend
            .list("versions/")?
            .iter()
            .filter_map(|o| o.name.strip_prefix("versions/")?.strip_suffix(".tdm")?.parse().ok())
            .collect();
        out.sort();
        Ok(out)
    }

    /// Reads the ref object `name` (`HEAD`, `refs/...`): its version and
    /// tag, `None` when it does not exist.
    pub(crate) fn read_ref_object(&self, name: &str) -> Result<Option<(Hash, crate::backend::ETag)>> {
        match self.backend.get(name, refs::MAX_REF_FILE) {
            Ok((bytes, tag)) => Ok(Some((refs::parse_ref(&self.locate(name), &bytes)?, tag))),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The version a ref points to (`HEAD` or a ref name), if it exists.
    pub fn read_ref(&self, name: &str) -> Result<Option<Hash>> {
        if name != "HEAD" {
            refs::validate_ref_name(name)?;
        }
        // A folder of refs (`name/...`) is no object: `None`.
        Ok(self.read_ref_object(&ref_name(name))?.map(|(id, _)| id))
    }

    /// Every ref object under `refs/`: its ref name and object name,
    /// sorted by name.
    fn ref_files(&self) -> Result<Vec<(String, String)>> {
        let mut out: Vec<(String, String)> = self
            .backend
            .list("refs/")?
            .into_iter()
            .filter_map(|o| Some((o.name.strip_prefix("refs/")?.to_string(), o.name.clone())))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Every ref (not `HEAD`) and its version, sorted by name.
    pub fn refs(&self) -> Result<Vec<(String, Hash)>> {
        let mut out = Vec::new();
        for (name, obj) in self.ref_files()? {
            if let Some((id, _)) = self.read_ref_object(&obj)? {
                out.push((name, id));
            }
        }
        Ok(out)
    }

    /// Points `name` at `id` (atomically) and records the move in the audit
    /// log. Only [`WriteTxn`] calls it: the lease is held.
    fn move_ref_locked(&self, name: &str, id: Option<Hash>, op: &str, why: &str) -> Result<Option<Hash>> {
        if name != "HEAD" {
            refs::validate_ref_name(name)?;
        }
        if id.is_some() {
            self.check_ref_room(name)?;
        }
        let obj = ref_name(name);
        let current = self.read_ref_object(&obj)?;
        let old = current.as_ref().map(|(id, _)| *id);
        let audit = self.audit();
        let (entry, line) = audit.prepare(AuditEntry {
            seq: 0,
            time: now(),
            who: self.who(),
            op: op.into(),
            r#ref: Some(name.to_string()),
            old,
            new: id,
            why: why.to_string(),
            prev: Hash::default(),
        })?;
        if let (Some(s), Some(id)) = (self.signer(), id) {
            sign::sign_version(self, s, id)?;
        }
        // The entry is on disk before the ref moves: a writer killed
        // before the append leaves it for the next writer to complete.
        self.write_pending(&line)?;
        // So is its signature: nobody sees a signed move unsigned.
        if let Some(s) = self.signer()
            && let Err(e) = sign::sign_move(self, s, &entry)
        {
            let _ = self.clear_pending();
            return Err(e);
        }
        if let Err(e) = self.write_ref_file(&obj, current.map(|(_, t)| t), id) {
            // A write whose response was lost may have landed: look.
            match self.read_ref_object(&obj).map(|now| now.map(|(v, _)| v)) {
                Ok(now) if now == old => {
                    sign::remove_move_signature(self, refs::entry_hash(&entry)?);
                    let _ = self.clear_pending();
                    return Err(e);
                }
                Ok(now) if now == id => {}
                // Unknown: the pending record lets the next writer settle it.
                _ => return Err(e),
            }
        }
        audit.append_line(&line)?;
        self.clear_pending()?;
        Ok(old)
    }

    /// Writes (or, for `None`, deletes) the object of a ref, by
    /// compare-and-swap on the tag it was read with.
    fn write_ref_file(&self, obj: &str, seen: Option<crate::backend::ETag>, id: Option<Hash>) -> Result<()> {
        match id {
            Some(id) => {
                self.backend.put(obj, refs::encode_ref(id).as_bytes(), PutMode::IfMatch(seen))?;
            }
            // The backend removes the folders a ref leaves empty, so that
            // their names are free for refs again.
            None if seen.is_none() => {
                return Err(Error::io(self.locate(obj), std::io::ErrorKind::NotFound.into()));
            }
            None => self.backend.delete(obj)?,
        }
        Ok(())
    }

    /// Refuses a ref name that clashes with existing refs: `a/b` while a
    /// ref `a` exists, or `a` while refs `a/...` exist (a name cannot be
    /// both a ref and a folder of refs).
    fn check_ref_room(&self, name: &str) -> Result<()> {
        if name == "HEAD" {
            return Ok(());
        }
        for (slash, _) in name.match_indices('/') {
            let prefix = &name[..slash];
            if exists(self.backend.as_ref(), &ref_name(prefix))? {
                return Err(Error::RefClash { name: name.to_string(), other: prefix.to_string(), folder: false });
            }
        }
        if !self.backend.list(&format!("refs/{name}/"))?.is_empty() {
            return Err(Error::RefClash { name: name.to_string(), other: format!("{name}/..."), folder: true });
        }
        Ok(())
    }

    /// Appends an audit entry that moves no ref (a version dropped, a gc).
    /// Only [`WriteTxn`] calls it: the lease is held.
    fn record(&self, op: &str, r#ref: Option<&str>, new: Option<Hash>, why: &str) -> Result<()> {
        self.audit().append(AuditEntry {
            seq: 0,
            time: now(),
            who: self.who(),
            op: op.into(),
            r#ref: r#ref.map(str::to_string),
            old: None,
            new,
            why: why.to_string(),
            prev: Hash::default(),
        })?;
        Ok(())
    }

    /// Reads every ref file; returns one message per ref that cannot be
    /// read or points to a missing version.
    pub(crate) fn refs_checked(&self) -> Result<Vec<String>> {
        let mut problems = Vec::new();
        for (_, obj) in self.ref_files()? {
            match self.read_ref_object(&obj) {
                Ok(Some((id, _))) if !self.has_version(id) => {
                    problems.push(format!("{}: points to missing version {}", self.locate(&obj).display(), id.short()));
                }
                Ok(_) => {}
                Err(e) => problems.push(e.to_string()),
            }
        }
        Ok(problems)
    }

    /// Resolves a version: `HEAD`, a ref name, a full version id or a
    /// unique prefix of at least 4 hex digits, followed by any number of
    /// `~N` (N-th parent; `~` alone is `~1`) and `^` (parent), as in
    /// `HEAD~2`, `stable^`. A full id always means that version.
    pub fn resolve(&self, spec: &str) -> Result<Hash> {
        let (name, steps) = split_ancestry(spec)?;
        let mut id = self.resolve_name(name)?;
        for n in 0..steps {
            let m = self.manifest(id)?;
            let Some(parent) = m.parent else {
                return Err(Error::NotInVersion {
                    version: id.short(),
                    what: "parent".into(),
                    detail: Some(format!("`{spec}` goes back {steps} from `{name}`, which has {n} ancestors")),
                });
            };
            if !self.has_version(parent) {
                return Err(Error::NotInVersion {
                    version: id.short(),
                    what: "parent in the store".into(),
                    detail: Some(format!("its parent {} was dropped (`{spec}`)", parent.short())),
                });
            }
            id = parent;
        }
        Ok(id)
    }

    /// [`Store::resolve`] without the ancestry suffixes.
    fn resolve_name(&self, name: &str) -> Result<Hash> {
        let unknown = || Error::UnknownRef { name: name.to_string() };
        if name == "HEAD" {
            if let Some(id) = self.read_ref("HEAD")? {
                return Ok(id);
            }
            let versions = self.versions()?.len();
            return Err(if versions == 0 {
                Error::NoVersions { path: self.root.clone() }
            } else {
                Error::HeadMissing { path: self.locate("HEAD"), versions }
            });
        }
        let hex = !name.is_empty() && name.bytes().all(|b| b.is_ascii_hexdigit());
        if hex
            && let Ok(id) = name.parse::<Hash>()
            && name.len() == id.to_hex().len()
            && self.has_version(id)
        {
            return Ok(id);
        }
        if refs::validate_ref_name(name).is_ok()
            && let Some((id, _)) = self.read_ref_object(&ref_name(name))?
        {
            return Ok(id);
        }
        if !hex {
            return Err(unknown());
        }
        if name.len() < MIN_PREFIX {
            return Err(Error::InvalidArgument(format!(
                "unknown ref `{name}`; a version id prefix needs at least {MIN_PREFIX} hex digits"
            )));
        }
        let lower = name.to_ascii_lowercase();
        let hits: Vec<Hash> = self.versions()?.into_iter().filter(|v| v.to_hex().starts_with(&lower)).collect();
        match hits.len() {
            0 => Err(unknown()),
            1 => Ok(hits[0]),
            count => Err(Error::AmbiguousRef {
                prefix: name.to_string(),
                count,
                candidates: hits.iter().map(|h| h.short()).collect::<Vec<_>>().join(", "),
            }),
        }
    }

    /// Figures about the store as a whole.
    pub fn stats(&self) -> Result<StoreStats> {
        Ok(StoreStats {
            packs: self.packs.len(),
            pack_bytes: self.packs.iter().map(|p| p.len).sum(),
            blocks: self.index.len(),
            payload_bytes: self.index.values().map(|e| u64::from(e.stored_len)).sum(),
            raw_block_bytes: self.index.values().map(|e| u64::from(e.raw_len)).sum(),
            versions: self.versions()?.len(),
        })
    }

    /// The checked audit log.
    pub fn audit_log(&self) -> Result<refs::AuditReport> {
        self.audit().read()
    }
}

/// The object of a pack.
pub(crate) fn pack_name(id: Hash) -> String {
    format!("packs/{id}.pack")
}

/// The object of a pack's index.
pub(crate) fn index_name(id: Hash) -> String {
    format!("packs/{id}.idx")
}

/// The object of a version's manifest.
pub(crate) fn version_name(id: Hash) -> String {
    format!("versions/{id}.tdm")
}

/// The object of a ref (`HEAD` or a ref name).
pub(crate) fn ref_name(name: &str) -> String {
    if name == "HEAD" { "HEAD".into() } else { format!("refs/{name}") }
}

pub(crate) fn read_config(backend: &dyn Backend) -> Result<StoreConfig> {
    let (bytes, _) = backend.get("config", tdelta_format::config::MAX_CONFIG)?;
    StoreConfig::decode(&bytes).map_err(|e| Error::format(backend.locate("config"), e))
}

/// Writes `config` whole through the backend (locally: temp file, fsync,
/// rename), framed with its format as the frame version.
pub(crate) fn write_config(backend: &dyn Backend, config: &StoreConfig, mode: PutMode) -> Result<()> {
    let bytes = config.encode().map_err(|e| Error::Internal(e.to_string()))?;
    backend.put("config", &bytes, mode)?;
    Ok(())
}

/// The block size the first readable manifest records (for a store whose
/// config is damaged).
fn block_size_from_manifests(backend: &dyn Backend) -> Option<u32> {
    backend.list("versions/").ok()?.into_iter().find_map(|obj| {
        let id: Hash = obj.name.strip_prefix("versions/")?.strip_suffix(".tdm")?.parse().ok()?;
        let (bytes, _) = backend.get(&obj.name, 1 << 30).ok()?;
        let m = Manifest::decode(&bytes, id).ok()?;
        (crate::block::MIN_BLOCK_SIZE..=crate::block::MAX_BLOCK_SIZE).contains(&m.block_size).then_some(m.block_size)
    })
}
