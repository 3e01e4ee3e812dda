//! `tdelta._tdelta`: the thin PyO3 layer of the `tdelta` Python package
//! over the engine's root API.
//!
//! Reports cross as JSON text, the engine's own serialisation of each report
//! (the same JSON as the CLI's `--json`; the
//! Python side turns them into records); tensor bytes are decoded straight
//! into numpy buffers the Python side allocated. Every call that touches
//! the store runs on a worker thread with the GIL released, while the
//! calling thread reports progress and watches for Ctrl-C.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, mpsc};
use std::time::Duration;

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes};
use serde_json::{Value, json};

create_exception!(tdelta, TdeltaError, PyException, "Base class of every error tdelta raises.");
create_exception!(tdelta, NotFound, TdeltaError, "No store, version, ref, tensor or file of that name.");
create_exception!(tdelta, Conflict, TdeltaError, "The operation collides with what exists (a store, a tag).");
create_exception!(tdelta, Corrupt, TdeltaError, "The store is damaged: a check of its bytes failed.");
create_exception!(tdelta, Locked, TdeltaError, "Another writer holds the store's lock.");
create_exception!(tdelta, InvalidInput, TdeltaError, "An argument or an input file is not valid.");
create_exception!(tdelta, ReadOnly, TdeltaError, "The store was opened from a URL: it can be read, not written.");

/// Maps an engine error to the Python class of its kind
/// ([`tdelta::Error::kind`]): the one place errors cross into Python.
fn to_py(e: tdelta::Error) -> PyErr {
    use tdelta::ErrorKind as K;
    let msg = e.to_string();
    if let tdelta::Error::Io { source, .. } = &e
        && source.kind() == std::io::ErrorKind::NotFound
    {
        return NotFound::new_err(msg);
    }
    // The engine classes every error (looking through the block a failure
    // happened in); one exception class per kind.
    match e.kind() {
        K::NotFound => NotFound::new_err(msg),
        K::AlreadyExists | K::Conflict => Conflict::new_err(msg),
        K::Corrupt | K::Unsupported => Corrupt::new_err(msg),
        K::Locked => Locked::new_err(msg),
        K::InvalidInput => InvalidInput::new_err(msg),
        _ => TdeltaError::new_err(msg),
    }
}

/// The address and length of the bytes of `obj`, a C-contiguous numpy array,
/// read through `numpy.ndarray`'s own descriptors (a subclass cannot override
/// them), so that `save` never reads memory that is not an array's.
fn array_span(obj: &Bound<'_, PyAny>) -> PyResult<(usize, usize)> {
    let nd = obj.py().import("numpy")?.getattr("ndarray")?;
    if !obj.is_instance(&nd)? {
        return Err(invalid("save: every tensor must be a numpy array"));
    }
    let get = |name: &str| nd.getattr(name)?.call_method1("__get__", (obj,));
    let nbytes: usize = get("nbytes")?.extract()?;
    if nbytes == 0 {
        return Ok((0, 0));
    }
    if !get("flags")?.getattr("c_contiguous")?.extract::<bool>()? {
        return Err(invalid("save: a tensor's array is not C-contiguous"));
    }
    let addr: usize = get("__array_interface__")?.get_item("data")?.get_item(0)?.extract()?;
    Ok((addr, nbytes))
}

fn invalid(msg: impl Into<String>) -> PyErr {
    InvalidInput::new_err(msg.into())
}

/// Progress of the running call, written by the engine's threads and read
/// by the calling thread.
#[derive(Default)]
struct Watch {
    phase: Mutex<String>,
    total: AtomicU64,
    done: AtomicU64,
    cancel: AtomicBool,
}

impl tdelta::Progress for Watch {
    fn begin(&self, what: &str, total: u64) {
        if let Ok(mut p) = self.phase.lock() {
            *p = what.to_string();
        }
        self.done.store(0, Ordering::Relaxed);
        self.total.store(total, Ordering::Relaxed);
    }
    fn advance(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }
    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

impl Watch {
    /// Calls `cb(phase, done, total)` when something moved since `last`.
    fn report(&self, py: Python<'_>, cb: &Py<PyAny>, last: &mut (String, u64)) -> PyResult<()> {
        let phase = self.phase.lock().map(|p| p.clone()).unwrap_or_default();
        let done = self.done.load(Ordering::Relaxed);
        if phase.is_empty() || (phase == last.0 && done == last.1) {
            return Ok(());
        }
        cb.call1(py, (phase.as_str(), done, self.total.load(Ordering::Relaxed)))?;
        *last = (phase, done);
        Ok(())
    }
}

/// Runs `work` on a worker thread with the GIL released. The calling
/// thread wakes every 100 ms to pass progress to `progress` and to check
/// for signals: Ctrl-C (or an exception from the callback) asks reads to
/// stop, and is raised once the work has ended. The engine's writes are
/// atomic, so an interrupted call leaves nothing half-written.
fn run<T: Send>(
    py: Python<'_>,
    progress: Option<Py<PyAny>>,
    work: impl FnOnce(&Watch) -> tdelta::Result<T> + Send,
) -> PyResult<T> {
    let watch = Watch::default();
    let (res, stop) = py.allow_threads(|| {
        std::thread::scope(|s| {
            let (tx, rx) = mpsc::channel::<()>();
            let w = &watch;
            let h = s.spawn(move || {
                let r = work(w);
                let _ = tx.send(());
                r
            });
            let mut stop: Option<PyErr> = None;
            let mut last = (String::new(), 0);
            while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(Duration::from_millis(100)) {
                if stop.is_some() {
                    continue;
                }
                let r = Python::with_gil(|py| -> PyResult<()> {
                    py.check_signals()?;
                    match &progress {
                        Some(cb) => watch.report(py, cb, &mut last),
                        None => Ok(()),
                    }
                });
                if let Err(e) = r {
                    watch.cancel.store(true, Ordering::Relaxed);
                    stop = Some(e);
                }
            }
            let res = h.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
            (res, stop)
        })
    });
    if let Some(e) = stop {
        return Err(e);
    }
    let out = res.map_err(to_py)?;
    if let Some(cb) = &progress {
        watch.report(py, cb, &mut (String::new(), u64::MAX))?;
    }
    Ok(out)
}

fn to_json<T: serde::Serialize>(v: &T) -> PyResult<String> {
    serde_json::to_string(v).map_err(|e| TdeltaError::new_err(format!("cannot encode the result: {e}")))
}

/// An open store.
#[pyclass(frozen, module = "tdelta._tdelta")]
struct Store {
    inner: RwLock<tdelta::Store>,
    /// Manifests read by `version`, by id (a version's manifest never
    /// changes): opening a version again reads only its ref. Bounded.
    manifests: Mutex<HashMap<tdelta::Hash, Arc<tdelta::Manifest>>>,
    /// The `s3://` URL the store was opened from (read-only), if it was.
    url: Option<String>,
}

/// Opens the store at `location`: a directory, or an `s3://bucket/prefix`
/// URL through the engine's object-store backend (endpoint and
/// credentials from the environment, as the CLI's remotes).
fn open_store(location: &str) -> tdelta::Result<tdelta::Store> {
    if location.starts_with("s3://") {
        let b = tdelta::backend::object::ObjectStoreBackend::open(location, &Default::default())?;
        tdelta::Store::open_with(std::sync::Arc::new(b))
    } else {
        tdelta::Store::open(std::path::Path::new(location))
    }
}

impl Store {
    fn read(&self) -> RwLockReadGuard<'_, tdelta::Store> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    /// [`run`] with the store's read lock, taken on the worker thread: a
    /// thread waiting for the lock never holds the GIL, which the lock's
    /// holder may need to report progress.
    ///
    /// The handle knows the packs that were there when it was opened: when
    /// `work` misses a block, another process may have packed since, so
    /// the handle reloads the store once and `work` runs again.
    fn with_read<T: Send>(
        &self,
        py: Python<'_>,
        progress: Option<Py<PyAny>>,
        work: impl Fn(&tdelta::Store, &Watch) -> tdelta::Result<T> + Send + Sync,
    ) -> PyResult<T> {
        run(py, progress, |w| {
            // The read guard must be gone before `reload` takes the lock.
            let first = work(&self.read(), w);
            match first {
                Err(e) if missed_block(&e) => {
                    self.reload()?;
                    work(&self.read(), w)
                }
                r => r,
            }
        })
    }

    /// Refuses `what` (a write) on a store opened from a URL.
    fn writable(&self, what: &str) -> PyResult<()> {
        match &self.url {
            Some(url) => Err(ReadOnly::new_err(format!(
                "cannot {what}: the store at {url} is opened read-only; \
                 write to a local store and `tdelta push` it"
            ))),
            None => Ok(()),
        }
    }

    /// [`run`] with the store's write lock, taken on the worker thread.
    fn with_write<T: Send>(
        &self,
        py: Python<'_>,
        progress: Option<Py<PyAny>>,
        work: impl FnOnce(&mut tdelta::Store, &Watch) -> tdelta::Result<T> + Send,
    ) -> PyResult<T> {
        run(py, progress, |w| {
            let mut store = self.inner.write().unwrap_or_else(|p| p.into_inner());
            work(&mut store, w)
        })
    }

    /// Reopens the store under the same settings (on a worker thread).
    fn reload(&self) -> tdelta::Result<()> {
        let (root, author, wait) = {
            let s = self.read();
            (s.root().to_path_buf(), s.author.clone(), s.lock_wait)
        };
        let mut fresh = match &self.url {
            Some(url) => open_store(url)?,
            None => tdelta::Store::open(&root)?,
        };
        fresh.author = author;
        fresh.lock_wait = wait;
        *self.inner.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }
}

/// Whether `e` is a block missing from the store's index (alone or in the
/// context of a version's block).
fn missed_block(e: &tdelta::Error) -> bool {
    match e {
        tdelta::Error::MissingBlock { .. } => true,
        tdelta::Error::InBlock { source, .. } => missed_block(source),
        _ => false,
    }
}

/// Applies the handle's settings: who acts, and how long a writer waits
/// for the lock (`lock_wait` seconds, else `TDELTA_LOCK_WAIT` as the CLI
/// reads it, else the engine's default).
fn configure(mut s: tdelta::Store, author: Option<String>, lock_wait: Option<f64>) -> PyResult<tdelta::Store> {
    if author.is_some() {
        s.author = author;
    }
    let env = std::env::var("TDELTA_LOCK_WAIT").ok().and_then(|v| v.parse::<f64>().ok());
    if let Some(secs) = lock_wait.or(env) {
        s.lock_wait = Duration::try_from_secs_f64(secs)
            .map_err(|_| invalid(format!("lock_wait {secs} is not a number of seconds >= 0")))?;
    }
    Ok(s)
}

/// The options `pack` and `save` share: the dict the Python package's
/// `_write_options` builds (every key present, `None` where unset).
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
struct WriteOptions {
    message: Option<String>,
    meta: Option<BTreeMap<String, String>>,
    metrics: Option<String>,
    tag: Option<String>,
    force_tag: bool,
    base: Option<String>,
    policy: Option<String>,
    lossy: Option<String>,
    max_error: Option<f64>,
    keep_exact: Option<Vec<String>>,
}

impl WriteOptions {
    /// The pack options these mean, and the delta base named (resolved
    /// later, under the store's lock).
    fn pack_options(self) -> PyResult<(tdelta::PackOptions, Option<String>)> {
        let mut opts = tdelta::PackOptions {
            message: self.message.unwrap_or_default(),
            meta: self.meta.unwrap_or_default(),
            tag: self.tag,
            force_tag: self.force_tag,
            ..Default::default()
        };
        if let Some(m) = self.metrics {
            opts.metrics = serde_json::from_str(&m).map_err(|e| invalid(format!("metrics are not valid JSON: {e}")))?;
        }
        if let Some(p) = self.policy {
            opts.policy = p.parse().map_err(|e: tdelta::Error| to_py(e))?;
        }
        match (self.lossy, self.max_error, self.keep_exact) {
            (Some(bits), max_error, keep) => {
                let l = tdelta::lossy::LossyOptions {
                    bits: bits.parse().map_err(|e: tdelta::codec::InvalidSetting| to_py(e.into()))?,
                    max_error,
                    keep_exact: keep.unwrap_or_default(),
                    ..Default::default()
                };
                l.validate().map_err(|e| to_py(e.into()))?;
                opts.lossy = Some(l);
            }
            (None, Some(_), _) | (None, _, Some(_)) => {
                return Err(invalid("max_error and keep_exact need lossy (one of: int8, int4, int2)"));
            }
            (None, None, None) => {}
        }
        Ok((opts, self.base))
    }
}

/// The delta base `base` names: `None` for `HEAD`, `"none"`, or a ref.
fn base_choice(store: &tdelta::Store, base: Option<&str>) -> tdelta::Result<tdelta::BaseChoice> {
    Ok(match base {
        None => tdelta::BaseChoice::Head,
        Some("none") => tdelta::BaseChoice::None,
        Some(r) => tdelta::BaseChoice::Version(store.resolve(r)?),
    })
}

/// A raw pointer to bytes of an array the calling thread keeps alive while
/// a worker reads them.
#[derive(Clone, Copy)]
struct InPtr(*const u8, usize);
// SAFETY: only read by the worker thread of `run`, which ends before the
// call that holds the arrays returns.
unsafe impl Send for InPtr {}
// SAFETY: as for `Send`.
unsafe impl Sync for InPtr {}

#[pymethods]
impl Store {
    /// Opens the store at `path`: a directory, or an `s3://bucket/prefix`
    /// URL (read-only).
    #[new]
    #[pyo3(signature = (path, author=None, lock_wait=None))]
    fn new(py: Python<'_>, path: PathBuf, author: Option<String>, lock_wait: Option<f64>) -> PyResult<Self> {
        let location = path.to_str().ok_or_else(|| invalid("the store path is not valid utf-8"))?.to_string();
        let url = match location.split_once("://") {
            None => None,
            Some(("s3", _)) => Some(location.clone()),
            Some((scheme, _)) => {
                return Err(invalid(format!(
                    "unsupported store url scheme `{scheme}`; valid values are: s3, file (or a plain path)"
                )));
            }
        };
        let s = run(py, None, |_| open_store(&location))?;
        Ok(Store { inner: RwLock::new(configure(s, author, lock_wait)?), manifests: Default::default(), url })
    }

    #[staticmethod]
    #[pyo3(signature = (path, block_size=None, author=None, lock_wait=None))]
    fn init(
        py: Python<'_>,
        path: PathBuf,
        block_size: Option<u32>,
        author: Option<String>,
        lock_wait: Option<f64>,
    ) -> PyResult<Self> {
        let mut opts = tdelta::InitOptions::default();
        if let Some(b) = block_size {
            opts.block_size = b;
        }
        if path.to_str().is_some_and(|p| p.contains("://")) {
            return Err(invalid("Store.init makes a local store: give a directory, not a url"));
        }
        let s = run(py, None, |_| tdelta::Store::init(&path, &opts))?;
        Ok(Store { inner: RwLock::new(configure(s, author, lock_wait)?), manifests: Default::default(), url: None })
    }

    #[getter]
    fn path(&self, py: Python<'_>) -> PyResult<String> {
        if let Some(url) = &self.url {
            return Ok(url.clone());
        }
        self.with_read(py, None, |s, _| Ok(s.root().to_string_lossy().into_owned()))
    }

    /// Reopens the store, to see packs that other processes wrote since.
    fn refresh(&self, py: Python<'_>) -> PyResult<()> {
        self.manifests.lock().unwrap_or_else(|p| p.into_inner()).clear();
        run(py, None, |_| self.reload())
    }

    fn resolve(&self, py: Python<'_>, reference: &str) -> PyResult<String> {
        self.with_read(py, None, |s, _| s.resolve(reference)).map(|h| h.to_hex())
    }

    #[pyo3(signature = (source, options, include=None, exclude=None, progress=None))]
    fn pack(
        &self,
        py: Python<'_>,
        source: PathBuf,
        options: WriteOptions,
        include: Option<Vec<String>>,
        exclude: Option<Vec<String>>,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<String> {
        self.writable("pack")?;
        let (mut opts, base) = options.pack_options()?;
        opts.include = include.unwrap_or_default();
        opts.exclude = exclude.unwrap_or_default();
        let rep = self.with_write(py, progress, |store, w| {
            opts.base = base_choice(store, base.as_deref())?;
            tdelta::pack(store, &source, &opts, w)
        })?;
        to_json(&rep)
    }

    /// Packs safetensors file `filename` built in memory: `header` is its
    /// header region, `ptrs[i]`/`lens[i]` the address and length of tensor
    /// `names[i]`'s bytes in an array of `keep` (which this call holds, so
    /// they outlive it). No file is written.
    #[pyo3(signature = (filename, header, names, ptrs, lens, keep, options, progress=None))]
    #[allow(clippy::too_many_arguments)]
    fn save(
        &self,
        py: Python<'_>,
        filename: &str,
        header: Vec<u8>,
        names: Vec<String>,
        ptrs: Vec<usize>,
        lens: Vec<usize>,
        keep: Vec<Py<PyAny>>,
        options: WriteOptions,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<String> {
        if names.len() != ptrs.len() || names.len() != lens.len() || names.len() != keep.len() {
            return Err(invalid("names, ptrs, lens and keep must have the same length"));
        }
        self.writable("save")?;
        let (mut opts, base) = options.pack_options()?;
        // The addresses come from Python: take each from its array, through
        // numpy's own descriptors, and refuse any that does not match.
        let mut parts = Vec::with_capacity(keep.len());
        for ((obj, &p), &n) in keep.iter().zip(&ptrs).zip(&lens) {
            let (addr, len) = array_span(obj.bind(py))?;
            if len != n || (len > 0 && addr != p) {
                return Err(invalid("save: a tensor's address or length does not match its array"));
            }
            parts.push(InPtr(addr as *const u8, len));
        }
        let rep = self.with_write(py, progress, |store, w| {
            let tensors = names
                .iter()
                .zip(&parts)
                .map(|(n, p)| {
                    // SAFETY: `p` is the data of a C-contiguous array of at
                    // least `p.1` bytes, one of `keep`, which this call holds
                    // until the worker thread has ended.
                    let bytes: &[u8] = if p.1 == 0 { &[] } else { unsafe { std::slice::from_raw_parts(p.0, p.1) } };
                    (n.clone(), bytes)
                })
                .collect();
            let file = tdelta::checkpoint::MemoryFile::new(filename, header.clone(), tensors)?;
            opts.base = base_choice(store, base.as_deref())?;
            tdelta::pack_memory(store, &file, &opts, w)
        })?;
        drop(keep);
        to_json(&rep)
    }

    #[pyo3(signature = (reference, out, force=false, tensors=None, files=None, progress=None))]
    #[allow(clippy::too_many_arguments)]
    fn restore(
        &self,
        py: Python<'_>,
        reference: &str,
        out: PathBuf,
        force: bool,
        tensors: Option<Vec<String>>,
        files: Option<Vec<String>>,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<String> {
        let rep = self.with_read(py, progress, |store, w| {
            let id = store.resolve(reference)?;
            let sel = tdelta::Selection {
                files: files.clone().unwrap_or_default(),
                tensors: tensors.clone().unwrap_or_default(),
            };
            tdelta::restore_parts(store, id, &out, &tdelta::RestoreOptions { force }, &sel, w)
        })?;
        to_json(&rep)
    }

    #[pyo3(signature = (reference="HEAD", all=false, filters=None, sort=None, max=None))]
    fn log(
        &self,
        py: Python<'_>,
        reference: &str,
        all: bool,
        filters: Option<Vec<(String, String)>>,
        sort: Option<String>,
        max: Option<usize>,
    ) -> PyResult<String> {
        let q = tdelta::LogQuery { start: reference.to_string(), all, filters: filters.unwrap_or_default(), sort, max };
        let rep = self.with_read(py, None, |store, _| tdelta::log(store, &q))?;
        to_json(&rep.entries)
    }

    fn show(&self, py: Python<'_>, reference: &str) -> PyResult<String> {
        to_json(&self.with_read(py, None, |store, _| tdelta::show(store, store.resolve(reference)?))?)
    }

    #[pyo3(signature = (name, reference="HEAD", force=false, reason=""))]
    fn tag(&self, py: Python<'_>, name: &str, reference: &str, force: bool, reason: &str) -> PyResult<String> {
        self.writable("tag")?;
        to_json(
            &self.with_read(py, None, |store, _| tdelta::tag(store, name, store.resolve(reference)?, force, reason))?,
        )
    }

    #[pyo3(signature = (name, reason=""))]
    fn untag(&self, py: Python<'_>, name: &str, reason: &str) -> PyResult<String> {
        self.writable("untag")?;
        to_json(&self.with_read(py, None, |store, _| tdelta::untag(store, name, reason))?)
    }

    fn tags(&self, py: Python<'_>) -> PyResult<String> {
        to_json(&self.with_read(py, None, |store, _| tdelta::tags(store))?)
    }

    #[pyo3(signature = (name, to=None, steps=None, reason=""))]
    fn rollback(
        &self,
        py: Python<'_>,
        name: &str,
        to: Option<String>,
        steps: Option<usize>,
        reason: &str,
    ) -> PyResult<String> {
        self.writable("rollback")?;
        let rep = self.with_read(py, None, |store, _| {
            let target = match (to.as_deref(), steps) {
                (Some(_), Some(_)) => {
                    return Err(tdelta::Error::InvalidArgument("give either `to` or `steps`, not both".into()));
                }
                (Some(r), None) => tdelta::RollbackTarget::Version(store.resolve(r)?),
                (None, n) => tdelta::RollbackTarget::Steps(n.unwrap_or(1)),
            };
            tdelta::rollback(store, name, target, reason)
        })?;
        to_json(&rep)
    }

    fn diff(&self, py: Python<'_>, a: &str, b: &str) -> PyResult<String> {
        let rep = self.with_read(py, None, |store, _| tdelta::diff(store, store.resolve(a)?, store.resolve(b)?))?;
        to_json(&rep)
    }

    #[pyo3(signature = (references=None, progress=None))]
    fn verify(&self, py: Python<'_>, references: Option<Vec<String>>, progress: Option<Py<PyAny>>) -> PyResult<String> {
        let rep = self.with_read(py, progress, |store, w| {
            let ids = match &references {
                Some(r) => r.iter().map(|r| store.resolve(r)).collect::<tdelta::Result<Vec<_>>>()?,
                None => store.versions()?,
            };
            tdelta::verify(store, &ids, w)
        })?;
        let mut rep = rep;
        if self.url.is_some() {
            // A pushed store keeps its audit trail under `audit/`, not in
            // the local `audit.log`: that one's absence is no damage.
            rep.store_problems.retain(|p| !matches!(p, tdelta::Problem::AuditLog { .. }));
        }
        let mut v = serde_json::to_value(&rep).map_err(|e| TdeltaError::new_err(e.to_string()))?;
        v["ok"] = json!(rep.ok());
        to_json(&v)
    }

    fn stats(&self, py: Python<'_>) -> PyResult<String> {
        to_json(&self.with_read(py, None, |store, _| tdelta::stats(store))?)
    }

    /// One version, for tensor reads: its ref is resolved each time, its
    /// manifest read (and parsed, a millisecond for a thousand blocks) the
    /// first time only.
    fn version(slf: Py<Self>, py: Python<'_>, reference: &str) -> PyResult<Version> {
        /// Manifests kept; past that the cache starts again.
        const KEEP: usize = 64;
        let this = slf.get();
        let (id, manifest) = this.with_read(py, None, |store, _| {
            let id = store.resolve(reference)?;
            let known = this.manifests.lock().unwrap_or_else(|p| p.into_inner()).get(&id).cloned();
            let manifest = match known {
                Some(m) => m,
                None => {
                    let m = Arc::new(store.manifest(id)?);
                    let mut c = this.manifests.lock().unwrap_or_else(|p| p.into_inner());
                    if c.len() >= KEEP {
                        c.clear();
                    }
                    c.insert(id, m.clone());
                    m
                }
            };
            Ok((id, manifest))
        })?;
        Ok(Version { store: slf, id, manifest })
    }
}

/// A raw pointer into a `bytearray` that the calling thread keeps alive
/// while a worker writes to it.
#[derive(Clone, Copy)]
struct OutPtr(*mut u8, usize);
// SAFETY: the pointer is only dereferenced by the worker thread of `run`,
// which ends before `read` returns the arrays it points into; until then no
// Python code can reach them.
unsafe impl Send for OutPtr {}
// SAFETY: as for `Send`: shared only with that one worker thread.
unsafe impl Sync for OutPtr {}

/// One version of a store, ready for tensor reads.
#[pyclass(frozen, module = "tdelta._tdelta")]
struct Version {
    store: Py<Store>,
    id: tdelta::Hash,
    manifest: Arc<tdelta::Manifest>,
}

#[pymethods]
impl Version {
    #[getter]
    fn id(&self) -> String {
        self.id.to_hex()
    }

    /// `[[file, [[name, dtype, shape, byte_len], ...]], ...]` as JSON, in
    /// file order then tensor order.
    fn index(&self) -> PyResult<String> {
        let files: Vec<Value> = self
            .manifest
            .files
            .iter()
            .filter(|f| matches!(f.content, tdelta::FileContent::Safetensors { .. }))
            .map(|f| {
                let ts: Vec<Value> =
                    f.tensors().iter().map(|t| json!([t.name, t.dtype.name(), t.shape, t.len])).collect();
                json!([f.path, ts])
            })
            .collect();
        to_json(&files)
    }

    /// The header region of safetensors file `path` (8-byte length, JSON).
    fn header<'py>(&self, py: Python<'py>, path: &str) -> PyResult<Bound<'py, PyBytes>> {
        let h = self
            .store
            .get()
            .with_read(py, None, |store, _| tdelta::read_header(store, self.id, &self.manifest, path))?;
        Ok(PyBytes::new(py, &h))
    }

    /// Reads bytes `starts[i] .. starts[i] + lens[i]` of tensor `names[i]`
    /// into a new `bytearray` each (its buffer is written once, by the
    /// decoder; `numpy.frombuffer` then wraps it without a copy).
    #[pyo3(signature = (names, starts, lens, progress=None))]
    fn read<'py>(
        &self,
        py: Python<'py>,
        names: Vec<String>,
        starts: Vec<u64>,
        lens: Vec<usize>,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Vec<Bound<'py, PyByteArray>>> {
        if names.len() != starts.len() || names.len() != lens.len() {
            return Err(invalid("names, starts and lens must have the same length"));
        }
        for ((name, &start), &len) in names.iter().zip(&starts).zip(&lens) {
            let (_, t) = tdelta::find_tensor(&self.manifest, self.id, name).map_err(to_py)?;
            if start.checked_add(len as u64).is_none_or(|e| e > t.len) {
                return Err(invalid(format!(
                    "bytes {start}..+{len} are out of range for tensor `{name}` of {} bytes",
                    t.len
                )));
            }
        }
        let mut arrays = Vec::with_capacity(names.len());
        let mut ptrs = Vec::with_capacity(names.len());
        for &len in &lens {
            // Resizing an empty bytearray allocates without zero-filling.
            let a = PyByteArray::new(py, &[]);
            a.resize(len)?;
            ptrs.push(OutPtr(a.data(), len));
            arrays.push(a);
        }
        self.store.get().with_read(py, progress, |store, w| {
            let mut reads: Vec<tdelta::TensorRead<'_>> = names
                .iter()
                .zip(&starts)
                .zip(&ptrs)
                .map(|((name, &start), p)| {
                    // SAFETY: each pointer is the buffer of a distinct
                    // bytearray of `p.1` bytes made above, alive in
                    // `arrays`, reachable by no Python code until we return.
                    let out = unsafe { std::slice::from_raw_parts_mut(p.0, p.1) };
                    tdelta::TensorRead { name, start, out }
                })
                .collect();
            tdelta::read_tensors_into(store, self.id, &self.manifest, &mut reads, w, &w.cancel)
        })?;
        Ok(arrays)
    }
}

#[pymodule]
fn _tdelta(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<Store>()?;
    m.add_class::<Version>()?;
    m.add("TdeltaError", py.get_type::<TdeltaError>())?;
    m.add("NotFound", py.get_type::<NotFound>())?;
    m.add("Conflict", py.get_type::<Conflict>())?;
    m.add("Corrupt", py.get_type::<Corrupt>())?;
    m.add("Locked", py.get_type::<Locked>())?;
    m.add("InvalidInput", py.get_type::<InvalidInput>())?;
    m.add("ReadOnly", py.get_type::<ReadOnly>())?;
    Ok(())
}
