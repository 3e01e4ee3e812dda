//! A [`Backend`] over the `object_store` crate: S3 and S3-compatible
//! services (`s3://bucket/prefix`) and a local directory (`file:///path`).
//!
//! The crate is async; this backend owns a small tokio runtime and blocks on
//! it, so the engine stays synchronous. Several threads may call it at once
//! (the transfer engine bounds how many).
//!
//! Rules (see FORMAT.md, "Remote layout"):
//! - [`PutMode::Create`] is a conditional put with `If-None-Match: *`.
//! - [`PutMode::IfMatch`] is a conditional put on the ETag (`If-Match`). A
//!   `file://` remote, whose crate backend has no conditional update, takes
//!   a lock object `locks/<name>` (create-only put, 30 s expiry) around a
//!   compare-then-write instead.
//! - Large objects go up as multipart uploads, which become visible only
//!   when complete; they are content-addressed, so an upload that races
//!   another of the same name writes the same bytes.
//! - The lease is the object `lease`, written with a create-only put and
//!   holding its holder and expiry; an expired lease may be removed by
//!   anyone.
//!
//! Credentials come from the environment the way the AWS tools read them
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
//! `AWS_REGION`, `AWS_ENDPOINT_URL`, ...). They are never stored, printed or
//! put in errors: [`ObjectStoreBackend::describe`] is the URL only.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    GetOptions, ObjectStore, ObjectStoreExt, PutMode as OsPutMode, PutOptions, PutPayload, UpdateVersion,
    WriteMultipart,
};

use super::{Backend, ETag, Lease, ObjectMeta, ObjectWriter, PutMode};
use crate::{Error, Result};

/// Objects at least this large go up as multipart uploads.
pub const MULTIPART_THRESHOLD: u64 = 16 << 20;
/// Part size of multipart uploads (and so the memory one upload holds).
pub const PART_SIZE: usize = 8 << 20;
/// Parts of one upload in flight at once.
pub const PARTS_IN_FLIGHT: usize = 4;
/// Retries of a failed request (with exponential backoff from 100 ms).
pub const RETRIES: usize = 5;
/// How long a lock object (`file://` compare-and-swap) lives.
const LOCK_EXPIRY: Duration = Duration::from_secs(30);
/// How long a lease lives before others may break it.
const LEASE_EXPIRY: Duration = Duration::from_secs(600);

/// Settings of a remote that are not part of its URL.
#[derive(Debug, Clone, Default)]
pub struct RemoteOptions {
    /// S3 endpoint of an S3-compatible service (`http://127.0.0.1:9000`);
    /// default: `AWS_ENDPOINT_URL`, else AWS itself.
    pub endpoint: Option<String>,
}

/// What the crate backend can do about compare-and-swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cas {
    /// Conditional puts on the ETag.
    Native,
    /// A lock object around compare-then-write (`file://`).
    LockObject,
}

struct Inner {
    url: String,
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    rt: tokio::runtime::Runtime,
    cas: Cas,
}

/// A store's objects in object storage.
#[derive(Clone)]
pub struct ObjectStoreBackend {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ObjectStoreBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStoreBackend").field("url", &self.inner.url).finish_non_exhaustive()
    }
}

/// True for a loopback host (`127.0.0.1`, `localhost`, `[::1]`).
fn is_loopback(endpoint: &str) -> bool {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let host = rest.split('/').next().unwrap_or("");
    let host = if let Some(h) = host.strip_prefix('[') {
        h.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    host == "localhost" || host == "::1" || host.starts_with("127.")
}

/// Drops any `user:password@` from a URL, for messages.
fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (auth, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
            let auth = auth.rsplit_once('@').map_or(auth, |(_, h)| h);
            if path.is_empty() && !rest.contains('/') {
                format!("{scheme}://{auth}")
            } else {
                format!("{scheme}://{auth}/{path}")
            }
        }
        None => url.to_string(),
    }
}

impl ObjectStoreBackend {
    /// Opens the remote at `url`: `s3://bucket[/prefix]` or `file:///path`
    /// (the directory is created if missing).
    pub fn open(url: &str, opts: &RemoteOptions) -> Result<ObjectStoreBackend> {
        let bad = |why: String| Error::InvalidArgument(format!("remote url `{}`: {why}", redact(url)));
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(bad("not a url; use s3://bucket/prefix or file:///path".into()));
        };
        let (store, prefix, cas): (Arc<dyn ObjectStore>, String, Cas) = match scheme {
            "s3" => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() || bucket.contains('@') {
                    return Err(bad("no bucket name; use s3://bucket/prefix".into()));
                }
                let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
                let endpoint = opts.endpoint.clone().or_else(|| std::env::var("AWS_ENDPOINT_URL").ok());
                if let Some(ep) = endpoint.filter(|e| !e.is_empty()) {
                    if ep.starts_with("http://") {
                        if !is_loopback(&ep) {
                            return Err(bad(format!(
                                "endpoint `{}` is plain http; use https (http is allowed on loopback only)",
                                redact(&ep)
                            )));
                        }
                        b = b.with_allow_http(true);
                    }
                    b = b.with_endpoint(ep);
                }
                if std::env::var_os("AWS_REGION").is_none() && std::env::var_os("AWS_DEFAULT_REGION").is_none() {
                    b = b.with_region("us-east-1");
                }
                // A few quick retries: a transient error heals, a server
                // that is gone is an error within seconds, not minutes.
                b = b.with_retry(object_store::RetryConfig {
                    max_retries: RETRIES,
                    retry_timeout: Duration::from_secs(60),
                    ..object_store::RetryConfig::default()
                });
                let s = b.build().map_err(|e| bad(e.to_string()))?;
                (Arc::new(s), prefix.trim_matches('/').to_string(), Cas::Native)
            }
            "file" => {
                if !rest.starts_with('/') {
                    return Err(bad("use an absolute path: file:///path".into()));
                }
                std::fs::create_dir_all(rest).map_err(|e| Error::io(rest, e))?;
                let s = LocalFileSystem::new_with_prefix(rest).map_err(|e| bad(e.to_string()))?;
                (Arc::new(s), String::new(), Cas::LockObject)
            }
            other => {
                return Err(bad(format!("unsupported scheme `{other}`; valid values are: s3, file")));
            }
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| Error::io("tokio runtime", e))?;
        let url = redact(url).trim_end_matches('/').to_string();
        Ok(ObjectStoreBackend { inner: Arc::new(Inner { url, store, prefix: Path::from(prefix), rt, cas }) })
    }

    fn path(&self, name: &str) -> Path {
        let mut p = self.inner.prefix.clone();
        for part in name.split('/').filter(|s| !s.is_empty()) {
            p = p.join(part);
        }
        p
    }

    fn what(&self, name: &str) -> String {
        format!("object {name} in {}", self.inner.url)
    }

    fn map_err(&self, name: &str, e: object_store::Error) -> Error {
        match e {
            object_store::Error::NotFound { .. } => Error::NotFound { what: self.what(name) },
            object_store::Error::AlreadyExists { .. } => Error::AlreadyExists { what: self.what(name) },
            object_store::Error::Precondition { .. } => {
                Error::Conflict { what: self.what(name), reason: "its etag changed".into() }
            }
            other => Error::io(format!("{}/{name}", self.inner.url), std::io::Error::other(other.to_string())),
        }
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.inner.rt.block_on(f)
    }

    /// Uploads a local file as the write-once object `name`, as a multipart
    /// upload when it is large; `advance` is told of each piece sent.
    /// An object already there is [`Error::AlreadyExists`].
    pub fn put_file(&self, name: &str, file: &FsPath, advance: &dyn Fn(u64)) -> Result<()> {
        let mut f = File::open(file).map_err(|e| Error::io(file, e))?;
        let len = f.metadata().map_err(|e| Error::io(file, e))?.len();
        // Read front to back, as `upload` asks for its pieces.
        self.upload(name, len, &mut |_, buf| f.read_exact(buf).map_err(|e| Error::io(file, e)), advance)
    }

    /// Downloads the object `name` into `out` (streamed: bounded memory),
    /// telling `advance` of each piece; returns its size.
    pub fn get_to_file(&self, name: &str, out: &mut File, advance: &dyn Fn(u64)) -> Result<u64> {
        self.get_with(name, &mut |chunk| {
            out.write_all(chunk).map_err(|e| Error::io(format!("download of {name}"), e))?;
            advance(chunk.len() as u64);
            Ok(())
        })
    }

    /// Uploads the object `name` of another backend (the local store's) as
    /// the write-once object `name`, `size` bytes long, as a multipart
    /// upload when it is large (read in parts: bounded memory); `advance`
    /// is told of each piece sent. An object already there is
    /// [`Error::AlreadyExists`].
    pub fn put_from(&self, src: &dyn Backend, name: &str, size: u64, advance: &dyn Fn(u64)) -> Result<()> {
        self.upload(name, size, &mut |at, buf| src.read_at(name, at, buf), advance)
    }

    /// Uploads `size` bytes as the write-once object `name`: one put when
    /// small, else a multipart upload (bounded memory). `read(at, buf)`
    /// fills `buf` with the bytes at `at`, asked for front to back;
    /// `advance` is told of each piece sent. An object already there is
    /// [`Error::AlreadyExists`].
    fn upload(
        &self,
        name: &str,
        size: u64,
        read: &mut dyn FnMut(u64, &mut [u8]) -> Result<()>,
        advance: &dyn Fn(u64),
    ) -> Result<()> {
        if size < MULTIPART_THRESHOLD {
            let mut buf = vec![0u8; size as usize];
            read(0, &mut buf)?;
            self.put(name, &buf, PutMode::Create)?;
            advance(size);
            return Ok(());
        }
        // A multipart upload cannot be create-only: look first. The name is
        // the content's hash, so a racing upload writes the same bytes.
        match self.head(name) {
            Ok(_) => return Err(Error::AlreadyExists { what: self.what(name) }),
            Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        let path = self.path(name);
        self.block_on(async {
            let upload = self.inner.store.put_multipart(&path).await.map_err(|e| self.map_err(name, e))?;
            let mut w = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
            let mut buf = vec![0u8; PART_SIZE];
            let mut at = 0u64;
            while at < size {
                let n = (size - at).min(PART_SIZE as u64) as usize;
                if let Err(e) = read(at, &mut buf[..n]) {
                    w.abort().await.ok();
                    return Err(e);
                }
                if let Err(e) = w.wait_for_capacity(PARTS_IN_FLIGHT).await {
                    w.abort().await.ok();
                    return Err(self.map_err(name, e));
                }
                w.write(&buf[..n]);
                at += n as u64;
                advance(n as u64);
            }
            w.finish().await.map(|_| ()).map_err(|e| self.map_err(name, e))
        })
    }

    /// Streams the object `name` to `sink` piece by piece (bounded
    /// memory); returns its size. A download that ends short is corrupt.
    pub fn get_with(&self, name: &str, sink: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<u64> {
        let path = self.path(name);
        self.block_on(async {
            let res = self.inner.store.get(&path).await.map_err(|e| self.map_err(name, e))?;
            let size = res.meta.size;
            let mut stream = res.into_stream();
            let mut got = 0u64;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| self.map_err(name, e))?;
                sink(&chunk)?;
                got += chunk.len() as u64;
            }
            if got != size {
                return Err(Error::corrupt(
                    format!("{}/{name}", self.inner.url),
                    format!("download ended at {got} of {size} bytes"),
                ));
            }
            Ok(size)
        })
    }

    /// Reads several byte ranges of one object (neighbours coalesced by the
    /// crate).
    pub fn get_ranges(&self, name: &str, ranges: &[Range<u64>]) -> Result<Vec<bytes::Bytes>> {
        let path = self.path(name);
        self.block_on(self.inner.store.get_ranges(&path, ranges)).map_err(|e| self.map_err(name, e))
    }

    /// Takes the lock object `locks/<name>` (create-only), breaking one
    /// older than its expiry; gives up after `wait`.
    fn lock_object(&self, name: &str, ttl: Duration, wait: Duration) -> Result<String> {
        let lock = format!("locks/{name}");
        let start = Instant::now();
        loop {
            let body = serde_json::json!({
                "holder": crate::store::whoami(),
                "pid": std::process::id(),
                "expires": crate::store::now() + ttl.as_secs(),
            })
            .to_string();
            match self.put(&lock, body.as_bytes(), PutMode::Create) {
                Ok(_) => return Ok(lock),
                Err(Error::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
            if let Ok((bytes, _)) = self.get(&lock, 4096) {
                let expires = serde_json::from_slice::<serde_json::Value>(&bytes)
                    .ok()
                    .and_then(|v| v.get("expires").and_then(|e| e.as_u64()))
                    .unwrap_or(0);
                if expires < crate::store::now() {
                    self.delete(&lock)?;
                    continue;
                }
                if start.elapsed() >= wait {
                    return Err(Error::Locked {
                        path: PathBuf::from(format!("{}/{lock}", self.inner.url)),
                        holder: String::from_utf8_lossy(&bytes).into_owned(),
                    });
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Compare-and-swap through a lock object, for crate backends without
    /// conditional updates.
    fn put_locked(&self, name: &str, bytes: &[u8], expected: Option<&ETag>) -> Result<ETag> {
        let lock = self.lock_object(name, LOCK_EXPIRY, LOCK_EXPIRY * 2)?;
        let result = (|| {
            let current = match self.head_tag(name) {
                Ok(t) => Some(t),
                Err(Error::NotFound { .. }) => None,
                Err(e) => return Err(e),
            };
            if current.as_ref() != expected {
                return Err(Error::Conflict { what: self.what(name), reason: "its etag changed".into() });
            }
            self.put(name, bytes, PutMode::Overwrite)
        })();
        let _ = self.delete(&lock);
        result
    }

    fn head_tag(&self, name: &str) -> Result<ETag> {
        let path = self.path(name);
        let meta = self.block_on(self.inner.store.head(&path)).map_err(|e| self.map_err(name, e))?;
        Ok(ETag(meta.e_tag.unwrap_or_default()))
    }
}

impl Backend for ObjectStoreBackend {
    fn describe(&self) -> String {
        self.inner.url.clone()
    }

    fn locate(&self, name: &str) -> std::path::PathBuf {
        std::path::PathBuf::from(format!("{}/{name}", self.inner.url.trim_end_matches('/')))
    }

    fn get(&self, name: &str, cap: u64) -> Result<(Vec<u8>, ETag)> {
        let path = self.path(name);
        self.block_on(async {
            let res = self.inner.store.get(&path).await.map_err(|e| self.map_err(name, e))?;
            if res.meta.size > cap {
                return Err(Error::corrupt(
                    format!("{}/{name}", self.inner.url),
                    format!("{} bytes, more than the {cap} such an object may have", res.meta.size),
                ));
            }
            let tag = ETag(res.meta.e_tag.clone().unwrap_or_default());
            let bytes = res.bytes().await.map_err(|e| self.map_err(name, e))?;
            Ok((bytes.to_vec(), tag))
        })
    }

    fn read_at(&self, name: &str, offset: u64, buf: &mut [u8]) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let path = self.path(name);
        let end = offset.checked_add(buf.len() as u64).ok_or_else(|| {
            Error::corrupt(self.locate(name), format!("{} bytes at offset {offset} lie past its end", buf.len()))
        })?;
        let opts = GetOptions { range: Some((offset..end).into()), ..GetOptions::default() };
        let bytes = self.block_on(async {
            let res = self.inner.store.get_opts(&path, opts).await?;
            res.bytes().await
        });
        let bytes = bytes.map_err(|e| match e {
            object_store::Error::NotFound { .. } => Error::NotFound { what: self.what(name) },
            other => Error::corrupt(
                format!("{}/{name}", self.inner.url),
                format!("cannot read {} bytes at {offset}: {other}", buf.len()),
            ),
        })?;
        if bytes.len() != buf.len() {
            return Err(Error::corrupt(
                format!("{}/{name}", self.inner.url),
                format!("short object: {} of {} bytes at {offset}", bytes.len(), buf.len()),
            ));
        }
        buf.copy_from_slice(&bytes);
        Ok(())
    }

    fn head(&self, name: &str) -> Result<ObjectMeta> {
        let path = self.path(name);
        let m = self.block_on(self.inner.store.head(&path)).map_err(|e| self.map_err(name, e))?;
        Ok(ObjectMeta {
            name: name.to_string(),
            size: m.size,
            modified: u64::try_from(m.last_modified.timestamp()).ok(),
        })
    }

    fn put(&self, name: &str, bytes: &[u8], mode: PutMode) -> Result<ETag> {
        let was_cas = matches!(mode, PutMode::IfMatch(_));
        let os_mode = match mode {
            PutMode::Create => OsPutMode::Create,
            PutMode::Overwrite => OsPutMode::Overwrite,
            PutMode::IfMatch(expected) => match (self.inner.cas, expected) {
                (Cas::LockObject, expected) => return self.put_locked(name, bytes, expected.as_ref()),
                (Cas::Native, None) => OsPutMode::Create,
                (Cas::Native, Some(tag)) => OsPutMode::Update(UpdateVersion { e_tag: Some(tag.0), version: None }),
            },
        };
        let path = self.path(name);
        let opts = PutOptions { mode: os_mode, ..PutOptions::default() };
        let payload = PutPayload::from(bytes.to_vec());
        let res = self.block_on(self.inner.store.put_opts(&path, payload, opts));
        match res {
            Ok(r) => match r.e_tag {
                Some(t) => Ok(ETag(t)),
                None => self.head_tag(name),
            },
            // A create-if-absent through IfMatch(None) that lost is a
            // conflict, not "exists".
            Err(object_store::Error::AlreadyExists { .. }) if was_cas => {
                Err(Error::Conflict { what: self.what(name), reason: "its etag changed".into() })
            }
            Err(object_store::Error::NotFound { .. }) if was_cas => {
                Err(Error::Conflict { what: self.what(name), reason: "it was removed".into() })
            }
            Err(e) => Err(self.map_err(name, e)),
        }
    }

    fn writer(&self) -> Result<Box<dyn ObjectWriter>> {
        let dir = std::env::temp_dir();
        let path = dir.join(format!("tdelta-upload-{}-{}", std::process::id(), unique()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        Ok(Box::new(Upload { backend: self.clone(), path, file, len: 0 }))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let dir = prefix.rsplit_once('/').map_or("", |(d, _)| d);
        let base = self.path(dir);
        let root_parts = self.inner.prefix.parts().count();
        let metas: Vec<_> = self.block_on(async {
            let mut out = Vec::new();
            let mut s = self.inner.store.list(Some(&base));
            while let Some(m) = s.next().await {
                out.push(m);
            }
            out
        });
        let mut out = Vec::new();
        for m in metas {
            let m = m.map_err(|e| self.map_err(prefix, e))?;
            let name: Vec<String> = m.location.parts().skip(root_parts).map(|p| p.as_ref().to_string()).collect();
            let name = name.join("/");
            if name.starts_with(prefix) {
                out.push(ObjectMeta { name, size: m.size, modified: u64::try_from(m.last_modified.timestamp()).ok() });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn delete(&self, name: &str) -> Result<()> {
        let path = self.path(name);
        match self.block_on(self.inner.store.delete(&path)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.map_err(name, e)),
        }
    }

    fn lease(&self, wait: Duration, notice: Option<&dyn Fn(&str)>) -> Result<Box<dyn Lease>> {
        let start = Instant::now();
        let mut noticed = false;
        loop {
            match self.lock_object("lease", LEASE_EXPIRY, Duration::ZERO) {
                Ok(name) => return Ok(Box::new(ObjectLease { backend: self.clone(), name })),
                Err(Error::Locked { holder, path }) => {
                    if start.elapsed() >= wait {
                        return Err(Error::Locked { path, holder });
                    }
                    if !noticed && let Some(n) = notice {
                        n(&holder);
                        noticed = true;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    t ^ N.fetch_add(1, Ordering::Relaxed).rotate_left(48)
}

/// A streamed write: spooled to a temporary file, uploaded on finish.
struct Upload {
    backend: ObjectStoreBackend,
    path: PathBuf,
    file: File,
    len: u64,
}

impl ObjectWriter for Upload {
    fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        self.file.write_all(bytes).map_err(|e| Error::io(&self.path, e))?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn finish(mut self: Box<Self>, name: &str) -> Result<()> {
        self.file.flush().map_err(|e| Error::io(&self.path, e))?;
        self.file.seek(SeekFrom::Start(0)).map_err(|e| Error::io(&self.path, e))?;
        let r = self.backend.put_file(name, &self.path, &|_| {});
        let _ = std::fs::remove_file(&self.path);
        r
    }

    fn abort(self: Box<Self>) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The lease object; deleted when dropped.
struct ObjectLease {
    backend: ObjectStoreBackend,
    name: String,
}

impl std::fmt::Debug for ObjectLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectLease").field("name", &self.name).finish()
    }
}

impl Lease for ObjectLease {
    fn holder(&self) -> String {
        format!("pid {} on {}", std::process::id(), crate::store::whoami())
    }
}

impl Drop for ObjectLease {
    fn drop(&mut self) {
        let _ = self.backend.delete(&self.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_backend() -> (tempfile::TempDir, ObjectStoreBackend) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().join("remote").display());
        let b = ObjectStoreBackend::open(&url, &RemoteOptions::default()).unwrap();
        (dir, b)
    }

    #[test]
    fn create_only_put_refuses_an_existing_object() {
        let (_d, b) = file_backend();
        b.put("packs/a.pack", b"one", PutMode::Create).unwrap();
        let e = b.put("packs/a.pack", b"two", PutMode::Create).unwrap_err();
        assert!(matches!(e, Error::AlreadyExists { .. }), "{e}");
        assert_eq!(b.get("packs/a.pack", 100).unwrap().0, b"one");
    }

    #[test]
    fn compare_and_swap_on_file_remote() {
        let (_d, b) = file_backend();
        let t1 = b.put("refs/stable", b"v1", PutMode::IfMatch(None)).unwrap();
        let e = b.put("refs/stable", b"x", PutMode::IfMatch(None)).unwrap_err();
        assert!(matches!(e, Error::Conflict { .. }), "{e}");
        let t2 = b.put("refs/stable", b"v2", PutMode::IfMatch(Some(t1.clone()))).unwrap();
        let e = b.put("refs/stable", b"v3", PutMode::IfMatch(Some(t1))).unwrap_err();
        assert!(matches!(e, Error::Conflict { .. }), "{e}");
        assert_eq!(b.get("refs/stable", 100).unwrap(), (b"v2".to_vec(), t2));
        assert!(b.list("locks/").unwrap().is_empty(), "lock objects are removed");
    }

    #[test]
    fn ranged_reads_and_short_objects() {
        let (_d, b) = file_backend();
        b.put("packs/p.pack", b"0123456789", PutMode::Create).unwrap();
        let mut buf = [0u8; 4];
        b.read_at("packs/p.pack", 3, &mut buf).unwrap();
        assert_eq!(&buf, b"3456");
        let mut big = [0u8; 4];
        let e = b.read_at("packs/p.pack", 8, &mut big).unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
        // An offset whose end overflows lies past the end too: damage
        // (of the index that gave it), not a bad argument.
        let e = b.read_at("packs/p.pack", u64::MAX - 1, &mut big).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Corrupt, "{e}");
        let e = b.get("packs/p.pack", 4).unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
        let e = b.head("packs/none").unwrap_err();
        assert!(matches!(e, Error::NotFound { .. }), "{e}");
    }

    #[test]
    fn list_by_prefix_in_name_order() {
        let (_d, b) = file_backend();
        for n in ["packs/b.idx", "packs/a.pack", "versions/c.tdm", "refs/team/x"] {
            b.put(n, n.as_bytes(), PutMode::Create).unwrap();
        }
        let names: Vec<String> = b.list("packs/").unwrap().into_iter().map(|m| m.name).collect();
        assert_eq!(names, ["packs/a.pack", "packs/b.idx"]);
        let names: Vec<String> = b.list("refs/").unwrap().into_iter().map(|m| m.name).collect();
        assert_eq!(names, ["refs/team/x"]);
        b.delete("packs/a.pack").unwrap();
        b.delete("packs/a.pack").unwrap();
        assert_eq!(b.list("packs/").unwrap().len(), 1);
    }

    #[test]
    fn streamed_writer_is_invisible_until_finish() {
        let (_d, b) = file_backend();
        let mut w = b.writer().unwrap();
        w.write_all(&vec![7u8; 1000]).unwrap();
        assert!(b.list("packs/").unwrap().is_empty());
        w.finish("packs/w.pack").unwrap();
        assert_eq!(b.head("packs/w.pack").unwrap().size, 1000);
        let mut w = b.writer().unwrap();
        w.write_all(b"x").unwrap();
        w.abort();
        assert_eq!(b.list("packs/").unwrap().len(), 1);
    }

    #[test]
    fn lease_is_exclusive_and_released_on_drop() {
        let (_d, b) = file_backend();
        let l = b.lease(Duration::ZERO, None).unwrap();
        assert!(l.holder().contains("pid"));
        let e = b.lease(Duration::ZERO, None).unwrap_err();
        assert!(matches!(e, Error::Locked { .. }), "{e}");
        drop(l);
        b.lease(Duration::ZERO, None).unwrap();
    }

    #[test]
    fn bad_urls_are_refused_with_the_valid_schemes() {
        let e = ObjectStoreBackend::open("ftp://x/y", &RemoteOptions::default()).unwrap_err();
        assert!(e.to_string().contains("valid values are: s3, file"), "{e}");
        let opts = RemoteOptions { endpoint: Some("http://example.invalid:9000".into()) };
        let e = ObjectStoreBackend::open("s3://bucket/p", &opts).unwrap_err();
        assert!(e.to_string().contains("loopback"), "{e}");
        let e = ObjectStoreBackend::open("s3://key:secret@bucket/p", &RemoteOptions::default()).unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
    }

    #[test]
    fn loopback_hosts() {
        assert!(is_loopback("http://127.0.0.1:9000"));
        assert!(is_loopback("http://localhost:1/x"));
        assert!(is_loopback("http://[::1]:80"));
        assert!(!is_loopback("http://10.0.0.1:80"));
    }
}
