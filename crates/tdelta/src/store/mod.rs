//! The store: a directory of immutable packs and manifests, small refs
//! swapped atomically, an audit log and a writer lock.
//!
//! ```text
//! STORE/
//!   config              framed JSON: block size, creation time
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
//! Everything but `audit.log` and `lock` is written once to `tmp/`,
//! fsynced and renamed into place, so a reader sees a file whole or not at
//! all. Packs and manifests never change after that: the same layout maps
//! onto an object store. The store knows blocks and versions, not what
//! tensors mean.

pub(crate) mod audit_op;
pub(crate) mod fsutil;
pub(crate) mod integrity;
pub(crate) mod lock;
pub(crate) mod lossy_record;
pub(crate) mod manifest;
pub(crate) mod pack;
pub(crate) mod read;
pub(crate) mod refs;
pub(crate) mod sign;

use std::collections::HashMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Hash;
use crate::error::IoContext;
use crate::{Error, Result};
use manifest::Manifest;
use pack::Entry;
use refs::{AuditEntry, AuditLog};

const CONFIG_MAGIC: &[u8; 8] = b"TDSTORE\0";
/// Store format version written by this build.
pub const STORE_VERSION: u32 = 1;
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

/// Settings fixed when a store is created.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoreConfig {
    /// Raw block size in bytes.
    pub block_size: u32,
    /// Creation time.
    pub created: u64,
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

#[derive(Debug)]
pub(crate) struct PackFile {
    pub id: Hash,
    pub path: PathBuf,
    pub file: File,
    pub len: u64,
}

/// An open store.
#[derive(Debug)]
pub struct Store {
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
    config_problem: Option<String>,
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
        if !(crate::block::MIN_BLOCK_SIZE..=crate::block::MAX_BLOCK_SIZE).contains(&opts.block_size) {
            return Err(Error::InvalidArgument(format!(
                "block size {} out of range; valid values are {}..={} bytes",
                opts.block_size,
                crate::block::MIN_BLOCK_SIZE,
                crate::block::MAX_BLOCK_SIZE
            )));
        }
        if path.join("config").exists() {
            return Err(Error::StoreExists { path: path.to_path_buf() });
        }
        for d in ["", "packs", "versions", "refs", "tmp"] {
            fs::create_dir_all(path.join(d)).at(path.join(d))?;
        }
        // Two concurrent inits: the second waits, then finds the store.
        let _lock = lock::acquire(&path.join("lock"), Duration::from_secs(60))?;
        if path.join("config").exists() {
            return Err(Error::StoreExists { path: path.to_path_buf() });
        }
        let tmp = path.join("tmp");
        AuditLog::new(path.join("audit.log")).create(&tmp)?;
        let config = StoreConfig { block_size: opts.block_size, created: now() };
        let body = serde_json::to_vec(&config).map_err(|e| Error::Internal(e.to_string()))?;
        // The config lands last: a store without it is not a store.
        fsutil::write_atomic(&tmp, &path.join("config"), &fsutil::frame(CONFIG_MAGIC, STORE_VERSION, 0, &body))?;
        Store::open(path)
    }

    /// Opens an existing store and loads its pack indexes.
    pub fn open(path: &Path) -> Result<Store> {
        let cfg_path = path.join("config");
        if !cfg_path.is_file() {
            return Err(Error::NoStore { path: path.to_path_buf() });
        }
        // A damaged config does not take the versions with it: each
        // manifest records the block size, so the store opens for reading.
        let (config, config_problem) = match read_config(&cfg_path) {
            Ok(c) => (c, None),
            Err(e @ Error::Corrupt { .. }) => {
                let block_size = block_size_from_manifests(path).unwrap_or(crate::block::DEFAULT_BLOCK_SIZE);
                let problem = format!("{e}; the store is read-only until it is restored (from a backup)");
                (StoreConfig { block_size, created: 0 }, Some(problem))
            }
            Err(e) => return Err(e),
        };
        let mut store = Store {
            root: path.to_path_buf(),
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

    /// (Re)loads every pack index. Packs without an index (a writer killed
    /// between the two renames) are ignored; `gc` removes them.
    pub(crate) fn load_packs(&mut self) -> Result<()> {
        let dir = self.root.join("packs");
        let mut ids: Vec<Hash> = Vec::new();
        self.damaged.clear();
        for ent in fs::read_dir(&dir).at(&dir)? {
            let ent = ent.at(&dir)?;
            let name = ent.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".idx")) else {
                continue;
            };
            match stem.parse() {
                Ok(id) => ids.push(id),
                // Not ours (`README.idx`, say): reported, not fatal.
                Err(e) => self.damaged.push(
                    Error::corrupt(ent.path(), format!("unexpected file in packs/ ({e}); move it out of the store"))
                        .to_string(),
                ),
            }
        }
        ids.sort();
        self.packs.clear();
        self.index.clear();
        for id in ids {
            let pack_path = dir.join(format!("{id}.pack"));
            let idx_path = dir.join(format!("{id}.idx"));
            // A damaged index or pack makes its blocks unavailable, not the
            // whole store: the other versions still restore. A newer
            // format, or an I/O error other than a missing file, still
            // stops the open.
            let loaded = File::open(&pack_path).at(&pack_path).and_then(|file| {
                let len = file.metadata().at(&pack_path)?.len();
                let bytes = fsutil::read_capped(&idx_path, 1 << 34)?;
                let entries = pack::decode_index(&idx_path, &bytes, self.packs.len() as u32, len)?;
                Ok((file, len, entries))
            });
            let (file, len, entries) = match loaded {
                Ok(v) => v,
                Err(e @ Error::Corrupt { .. }) => {
                    self.damaged.push(e.to_string());
                    continue;
                }
                Err(Error::Io { path, source }) if source.kind() == std::io::ErrorKind::NotFound => {
                    // Removed under us by a concurrent gc (index first,
                    // then pack), or a pack lost by hand.
                    if idx_path.exists() {
                        self.damaged.push(format!("{}: pack of this index is missing", path.display()));
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            for e in entries {
                self.index.entry(e.hash).or_insert(e);
            }
            self.packs.push(PackFile { id, path: pack_path, file, len });
        }
        Ok(())
    }

    /// Problems found loading the pack indexes (see `damaged`).
    pub(crate) fn damaged_packs(&self) -> &[String] {
        &self.damaged
    }

    /// Why `config` could not be read (the store is then read-only).
    pub(crate) fn config_problem(&self) -> Option<&str> {
        self.config_problem.as_deref()
    }

    /// The store directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Settings fixed at creation.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub(crate) fn packs_dir(&self) -> PathBuf {
        self.root.join("packs")
    }

    pub(crate) fn audit(&self) -> AuditLog {
        AuditLog::new(self.root.join("audit.log"))
    }

    /// Takes the writer lock and removes temporary files left by writers
    /// that died (only the lock holder writes to `tmp/`), then settles the
    /// refs with the audit log ([`Store::settle_refs`]).
    pub(crate) fn lock(&self) -> Result<lock::WriteLock> {
        if let Some(p) = &self.config_problem {
            return Err(Error::InvalidArgument(format!("refusing to write: {p}")));
        }
        let l = self.lock_unchecked()?;
        self.settle_refs()?;
        Ok(l)
    }

    /// Takes the writer lock and clears `tmp/`, without settling the refs
    /// (for `repair audit`, which settles them itself).
    pub(crate) fn lock_unchecked(&self) -> Result<lock::WriteLock> {
        let (l, waited) = lock::acquire_noting(&self.root.join("lock"), self.lock_wait, self.lock_notice)?;
        self.lock_waited.fetch_add(u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
        let tmp = self.tmp_dir();
        fs::create_dir_all(&tmp).at(&tmp)?;
        for ent in fs::read_dir(&tmp).at(&tmp)? {
            let p = ent.at(&tmp)?.path();
            let _ = fs::remove_file(&p);
        }
        Ok(l)
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

    pub(crate) fn manifest_path(&self, id: Hash) -> PathBuf {
        self.root.join("versions").join(format!("{id}.tdm"))
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
        decode: impl FnOnce(&Path, &[u8], Hash) -> Result<T>,
        block_size: impl FnOnce(&T) -> u32,
    ) -> Result<T> {
        let path = self.manifest_path(id);
        if !path.is_file() {
            return Err(Error::UnknownRef { name: id.to_hex() });
        }
        let bytes = fsutil::read_capped(&path, 1 << 30)?;
        let m = decode(&path, &bytes, id)?;
        let size = block_size(&m);
        if size != self.config.block_size {
            return Err(Error::corrupt(
                &path,
                format!("block size {size} differs from the store's {}", self.config.block_size),
            ));
        }
        Ok(m)
    }

    /// Writes a manifest (write-once) and returns its id, and whether it
    /// is new (false when the same version already existed).
    pub(crate) fn write_manifest(&self, m: &Manifest) -> Result<(Hash, bool)> {
        let (id, bytes) = m.encode()?;
        let path = self.manifest_path(id);
        if path.exists() {
            return Ok((id, false));
        }
        fsutil::write_atomic(&self.tmp_dir(), &path, &bytes)?;
        Ok((id, true))
    }

    /// Every version id in the store, sorted by id.
    pub fn versions(&self) -> Result<Vec<Hash>> {
        let dir = self.root.join("versions");
        let mut out = Vec::new();
        for ent in fs::read_dir(&dir).at(&dir)? {
            let ent = ent.at(&dir)?;
            let name = ent.file_name();
            if let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".tdm")).and_then(|s| s.parse().ok()) {
                out.push(id);
            }
        }
        out.sort();
        Ok(out)
    }

    fn ref_path(&self, name: &str) -> PathBuf {
        if name == "HEAD" { self.root.join("HEAD") } else { self.root.join("refs").join(name) }
    }

    /// The version a ref points to (`HEAD` or a ref name), if it exists.
    pub fn read_ref(&self, name: &str) -> Result<Option<Hash>> {
        if name != "HEAD" {
            refs::validate_ref_name(name)?;
        }
        let path = self.ref_path(name);
        if path.is_dir() {
            // A folder of refs (`name/...`), not a ref.
            return Ok(None);
        }
        refs::read_ref(&path)
    }

    /// Every ref file under `refs/`: its name and path, sorted by name.
    fn ref_files(&self) -> Result<Vec<(String, PathBuf)>> {
        let mut out = Vec::new();
        let base = self.root.join("refs");
        let mut stack = vec![base.clone()];
        while let Some(dir) = stack.pop() {
            for ent in fs::read_dir(&dir).at(&dir)? {
                let ent = ent.at(&dir)?;
                let p = ent.path();
                if ent.file_type().at(&p)?.is_dir() {
                    stack.push(p);
                } else if let Ok(rel) = p.strip_prefix(&base) {
                    out.push((rel.to_string_lossy().replace('\\', "/"), p.clone()));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Every ref (not `HEAD`) and its version, sorted by name.
    pub fn refs(&self) -> Result<Vec<(String, Hash)>> {
        let mut out = Vec::new();
        for (name, p) in self.ref_files()? {
            if let Some(id) = refs::read_ref(&p)? {
                out.push((name, id));
            }
        }
        Ok(out)
    }

    /// Points `name` at `id` (atomically) and records the move in the audit
    /// log. The caller must hold the lock.
    pub(crate) fn move_ref_locked(&self, name: &str, id: Option<Hash>, op: &str, why: &str) -> Result<Option<Hash>> {
        if name != "HEAD" {
            refs::validate_ref_name(name)?;
        }
        if id.is_some() {
            self.check_ref_room(name)?;
        }
        let path = self.ref_path(name);
        let old = refs::read_ref(&path)?;
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
        if let Err(e) = self.write_ref_file(&path, id) {
            sign::remove_move_signature(self, refs::entry_hash(&entry)?);
            let _ = self.clear_pending();
            return Err(e);
        }
        audit.append_line(&line)?;
        self.clear_pending()?;
        Ok(old)
    }

    /// Writes (or, for `None`, deletes) the file of a ref.
    fn write_ref_file(&self, path: &Path, id: Option<Hash>) -> Result<()> {
        match id {
            Some(id) => {
                if let Some(parent) = path.parent() {
                    fs::create_dir_all(parent).at(parent)?;
                }
                fsutil::write_atomic(&self.tmp_dir(), path, refs::encode_ref(id).as_bytes())?;
            }
            None => {
                fs::remove_file(path).at(path)?;
                if let Some(parent) = path.parent() {
                    fsutil::sync_dir(parent)?;
                }
                // Folders the ref leaves empty go too, so that their names
                // are free for refs again.
                let refs_root = self.root.join("refs");
                let mut dir = path.parent();
                while let Some(d) = dir.filter(|d| *d != refs_root && d.starts_with(&refs_root)) {
                    if fs::remove_dir(d).is_err() {
                        break;
                    }
                    dir = d.parent();
                }
            }
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
        let refs_root = self.root.join("refs");
        for (slash, _) in name.match_indices('/') {
            let prefix = &name[..slash];
            if refs_root.join(prefix).is_file() {
                return Err(Error::InvalidArgument(format!(
                    "cannot create ref `{name}`: ref `{prefix}` exists, and a name cannot be both a ref and a \
                     folder of refs; choose another name or delete `{prefix}`"
                )));
            }
        }
        if refs_root.join(name).is_dir() {
            return Err(Error::InvalidArgument(format!(
                "cannot create ref `{name}`: refs named `{name}/...` exist, and a name cannot be both a ref and \
                 a folder of refs; choose another name"
            )));
        }
        Ok(())
    }

    /// Appends an audit entry that moves no ref (a version dropped, a gc).
    /// The caller must hold the lock.
    pub(crate) fn record(&self, op: &str, r#ref: Option<&str>, new: Option<Hash>, why: &str) -> Result<()> {
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
        for (_, p) in self.ref_files()? {
            match refs::read_ref(&p) {
                Ok(Some(id)) if !self.manifest_path(id).is_file() => {
                    problems.push(format!("{}: points to missing version {}", p.display(), id.short()));
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
            if !self.manifest_path(parent).is_file() {
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
                Error::HeadMissing { path: self.root.join("HEAD"), versions }
            });
        }
        let hex = !name.is_empty() && name.bytes().all(|b| b.is_ascii_hexdigit());
        if hex
            && let Ok(id) = name.parse::<Hash>()
            && name.len() == id.to_hex().len()
            && self.manifest_path(id).is_file()
        {
            return Ok(id);
        }
        if refs::validate_ref_name(name).is_ok()
            && let Some(id) = refs::read_ref(&self.ref_path(name))?
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

fn read_config(path: &Path) -> Result<StoreConfig> {
    let bytes = fsutil::read_capped(path, 1 << 16)?;
    let framed = fsutil::unframe(path, &bytes, CONFIG_MAGIC, STORE_VERSION, "store config")?;
    let config: StoreConfig =
        serde_json::from_slice(framed.body).map_err(|e| Error::corrupt(path, format!("config is not valid: {e}")))?;
    if !(crate::block::MIN_BLOCK_SIZE..=crate::block::MAX_BLOCK_SIZE).contains(&config.block_size) {
        return Err(Error::corrupt(path, format!("block size {} out of range", config.block_size)));
    }
    Ok(config)
}

/// The block size the first readable manifest records (for a store whose
/// config is damaged).
fn block_size_from_manifests(root: &Path) -> Option<u32> {
    let dir = root.join("versions");
    let mut names: Vec<_> = fs::read_dir(&dir).ok()?.filter_map(|e| e.ok()).collect();
    names.sort_by_key(|e| e.file_name());
    names.into_iter().find_map(|ent| {
        let name = ent.file_name();
        let id: Hash = name.to_str()?.strip_suffix(".tdm")?.parse().ok()?;
        let bytes = fsutil::read_capped(&ent.path(), 1 << 30).ok()?;
        let m = Manifest::decode(&ent.path(), &bytes, id).ok()?;
        (crate::block::MIN_BLOCK_SIZE..=crate::block::MAX_BLOCK_SIZE).contains(&m.block_size).then_some(m.block_size)
    })
}
