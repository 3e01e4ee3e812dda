//! The storage seam: where a store's objects live.
//!
//! A store is a set of named objects (`packs/<id>.pack`, `versions/<id>.tdm`,
//! `refs/stable`, `HEAD`, ...; the names are those of `FORMAT.md`). Most
//! objects are immutable and content-addressed: they are written once with
//! [`PutMode::Create`] and never change. The few mutable ones (refs, `HEAD`,
//! the audit log) change only by compare-and-swap ([`PutMode::IfMatch`]), so
//! two writers never lose each other's update. A [`Backend`] offers exactly
//! that, the shape of an object store:
//!
//! - ranged reads ([`Backend::read_at`]) and whole reads of small objects;
//! - create-only and conditional puts, and streamed puts of large objects
//!   ([`Backend::writer`]);
//! - list by prefix, delete;
//! - a writer lease ([`Backend::lease`]) in place of `flock`.
//!
//! Implementations: `local::LocalDir` (a directory: today's files, byte
//! for byte, the default) and `memory::Memory` (in memory, with fault
//! injection for deterministic crash tests). Remotes add one over the
//! `object_store` crate.

pub mod object;

use std::fmt::Debug;
use std::path::PathBuf;
use std::time::Duration;

use crate::Result;

pub mod local;
pub mod memory;

pub use local::LocalDir;
pub use memory::{Fault, Memory};

/// An opaque version tag of an object's content, for compare-and-swap.
/// Local: a hash of the content; object stores: their `ETag`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ETag(pub String);

/// How a put treats an object that already exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutMode {
    /// Write-once: fails with [`crate::Error::AlreadyExists`] when the object
    /// exists. Callers of content-addressed objects treat that as success.
    Create,
    /// Compare-and-swap: succeeds only if the object's current tag is the
    /// given one (`None`: the object must not exist); otherwise fails with
    /// [`crate::Error::Conflict`].
    IfMatch(Option<ETag>),
    /// Replace unconditionally (only for objects no one else writes, such
    /// as the store's own scratch objects).
    Overwrite,
}

/// What a listing or a head request knows about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The object's name, relative to the store (`packs/ab...cd.pack`).
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Seconds since the Unix epoch of its last write, when known.
    pub modified: Option<u64>,
}

/// An object being written in pieces (a pack): nothing is visible under its
/// name until [`ObjectWriter::finish`] returns.
pub trait ObjectWriter: Send {
    /// Appends bytes.
    fn write_all(&mut self, bytes: &[u8]) -> Result<()>;
    /// Bytes written so far.
    fn len(&self) -> u64;
    /// True when nothing was written yet.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Makes the object durable and visible under `name` (write-once: an
    /// existing object of that name is [`crate::Error::AlreadyExists`]).
    fn finish(self: Box<Self>, name: &str) -> Result<()>;
    /// Drops what was written; nothing becomes visible.
    fn abort(self: Box<Self>);
}

/// A writer's exclusive lease on a store. Dropping it releases it.
pub trait Lease: Send + Sync + Debug {
    /// Who holds it, for messages (`pid 123 on host`).
    fn holder(&self) -> String;
}

/// Where a store's objects live. All methods are safe to call from several
/// threads; names use `/` whatever the platform.
pub trait Backend: Send + Sync + Debug {
    /// A short description for messages and `tdelta info`: `local
    /// /path/to/store`, `memory`, `s3://bucket/prefix`.
    fn describe(&self) -> String;

    /// How messages name object `name`: its file for a local store
    /// (`/path/to/store/packs/ab.pack`), else a path-like `backend:name`.
    fn locate(&self, name: &str) -> PathBuf;

    /// Reads a whole object with its tag; refuses one larger than `cap`
    /// bytes as corrupt. Missing: [`crate::Error::NotFound`].
    fn get(&self, name: &str, cap: u64) -> Result<(Vec<u8>, ETag)>;

    /// Reads `buf.len()` bytes at `offset` of an object. A short object is
    /// corrupt, not a short read.
    fn read_at(&self, name: &str, offset: u64, buf: &mut [u8]) -> Result<()>;

    /// Hints that the byte ranges `(offset, len)` of object `name` will be
    /// read soon, so that they can be fetched ahead of the reads (a local
    /// file asks the kernel to read them in the background). Only a hint:
    /// the default does nothing and failures are ignored.
    fn will_need(&self, name: &str, ranges: &[(u64, u64)]) {
        let _ = (name, ranges);
    }

    /// Whether the `len` bytes at `offset` of an object are in a cache
    /// the backend reads through (a local file: the page cache); `None`
    /// when it cannot tell, or reads through none.
    fn cached(&self, name: &str, offset: u64, len: u64) -> Option<bool> {
        let _ = (name, offset, len);
        None
    }

    /// Reads bytes at `offset` of an object straight into `buf`, around
    /// any cache (a local file: `O_DIRECT`). `offset`, `buf`'s address and
    /// its length must be multiples of 4096; returns the bytes read (fewer
    /// at the object's end), `None` when it cannot be done (the caller
    /// reads the usual way, which reports any error).
    fn read_direct(&self, name: &str, offset: u64, buf: &mut [u8]) -> Option<usize> {
        let _ = (name, offset, buf);
        None
    }

    /// Size and time of one object. Missing: [`crate::Error::NotFound`].
    fn head(&self, name: &str) -> Result<ObjectMeta>;

    /// Writes a whole object, durably, as `mode` says; returns its new tag.
    fn put(&self, name: &str, bytes: &[u8], mode: PutMode) -> Result<ETag>;

    /// Starts a streamed write-once object (large objects such as packs).
    fn writer(&self) -> Result<Box<dyn ObjectWriter>>;

    /// Every object whose name starts with `prefix` (`packs/`), in name
    /// order.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>>;

    /// Deletes an object; a missing one is fine.
    fn delete(&self, name: &str) -> Result<()>;

    /// Takes the store's writer lease, waiting up to `wait` (calling
    /// `notice` once with the holder's description when it has to wait).
    fn lease(&self, wait: Duration, notice: Option<&dyn Fn(&str)>) -> Result<Box<dyn Lease>>;
}
