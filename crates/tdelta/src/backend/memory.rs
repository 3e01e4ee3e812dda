//! [`Memory`]: a store in memory, with fault injection for deterministic
//! crash tests.
//!
//! It behaves as an object store does: an object appears whole or not at
//! all, write-once puts refuse an existing name, conditional puts compare
//! tags. Faults model what a real backend can do to a writer, counted over
//! every write (puts, streamed objects finished, deletes, from 1):
//!
//! - [`Fault::Fail`]: the write is refused, nothing changes;
//! - [`Fault::Tear`]: the write breaks off after part of the bytes went
//!   out (a connection dropped mid-upload); as on an object store nothing
//!   becomes visible, and the caller sees an error;
//! - [`Fault::LoseResponse`]: the write lands, but its response is lost:
//!   the caller sees an error for a write that happened;
//!
//! and [`Memory::fail_lease`] refuses the Nth lease.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{Backend, ETag, Lease, ObjectMeta, ObjectWriter, PutMode};
use crate::{Error, Result};

/// A fault to inject into one write of a [`Memory`] backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The write fails; nothing changes.
    Fail,
    /// The write breaks off part way; nothing becomes visible.
    Tear,
    /// The write lands but the caller sees an error.
    LoseResponse,
}

#[derive(Debug, Clone)]
struct Object {
    bytes: Arc<Vec<u8>>,
    tag: u64,
    modified: u64,
}

#[derive(Debug, Default)]
struct State {
    objects: BTreeMap<String, Object>,
    next_tag: u64,
    writes: u64,
    faults: BTreeMap<u64, Fault>,
    leases: u64,
    lease_faults: BTreeSet<u64>,
}

#[derive(Debug, Default)]
struct LeaseSlot {
    held: Mutex<Option<u64>>,
    freed: Condvar,
}

/// A store held in memory (for tests and tools); cheap to share behind an
/// `Arc` so a test keeps a handle to inject faults.
#[derive(Debug, Default)]
pub struct Memory {
    state: Arc<Mutex<State>>,
    lease: Arc<LeaseSlot>,
}

impl Memory {
    /// An empty backend without faults.
    pub fn new() -> Memory {
        Memory::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Injects `fault` into the `n`-th write from now on counted (see
    /// [`Memory::writes`]; the first write is 1).
    pub fn inject(&self, n: u64, fault: Fault) {
        self.state().faults.insert(n, fault);
    }

    /// Refuses the `n`-th lease (the first is 1).
    pub fn fail_lease(&self, n: u64) {
        self.state().lease_faults.insert(n);
    }

    /// Removes every fault not yet fired.
    pub fn clear_faults(&self) {
        let mut s = self.state();
        s.faults.clear();
        s.lease_faults.clear();
    }

    /// Writes done (or attempted) so far.
    pub fn writes(&self) -> u64 {
        self.state().writes
    }

    /// Names of every object, in order (for tests).
    pub fn names(&self) -> Vec<String> {
        self.state().objects.keys().cloned().collect()
    }

    /// A copy of the whole content, faults and counters left behind: what
    /// another process would find after this one died.
    pub fn snapshot(&self) -> Memory {
        let objects = self.state().objects.clone();
        let m = Memory::new();
        m.state().objects = objects;
        m
    }

    fn injected(name: &str, n: u64, what: &str) -> Error {
        Error::io(format!("memory:{name}"), std::io::Error::other(format!("injected fault: write {n} {what}")))
    }

    /// Counts one write of `name`; applies `change` unless a fault stops
    /// it, under one lock so the write is atomic.
    fn write<T>(&self, name: &str, change: impl FnOnce(&mut State) -> Result<T>) -> Result<T> {
        let mut s = self.state();
        s.writes += 1;
        let n = s.writes;
        match s.faults.remove(&n) {
            Some(Fault::Fail) => Err(Self::injected(name, n, "failed")),
            Some(Fault::Tear) => Err(Self::injected(name, n, "broke off part way")),
            Some(Fault::LoseResponse) => {
                change(&mut s)?;
                Err(Self::injected(name, n, "landed but its response was lost"))
            }
            None => change(&mut s),
        }
    }
}

fn tag(t: u64) -> ETag {
    ETag(format!("m{t}"))
}

fn missing(name: &str) -> Error {
    Error::NotFound { what: format!("object {name}") }
}

/// Inserts `bytes` as `name`, as `mode` allows.
fn store_object(s: &mut State, name: &str, bytes: Vec<u8>, mode: &PutMode) -> Result<ETag> {
    let current = s.objects.get(name).map(|o| tag(o.tag));
    match mode {
        PutMode::Create if current.is_some() => return Err(Error::AlreadyExists { what: format!("object {name}") }),
        PutMode::IfMatch(expected) if &current != expected => {
            let show = |t: &Option<ETag>| t.as_ref().map_or_else(|| "no object".into(), |t| format!("tag {}", t.0));
            return Err(Error::Conflict {
                what: format!("object {name}"),
                reason: format!("expected {}, found {}", show(expected), show(&current)),
            });
        }
        _ => {}
    }
    s.next_tag += 1;
    let t = s.next_tag;
    s.objects.insert(name.to_string(), Object { bytes: Arc::new(bytes), tag: t, modified: crate::store::now() });
    Ok(tag(t))
}

impl Backend for Memory {
    fn describe(&self) -> String {
        "memory".into()
    }

    fn locate(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("memory:{name}"))
    }

    fn get(&self, name: &str, cap: u64) -> Result<(Vec<u8>, ETag)> {
        let s = self.state();
        let o = s.objects.get(name).ok_or_else(|| missing(name))?;
        if o.bytes.len() as u64 > cap {
            return Err(Error::corrupt(
                self.locate(name),
                format!("file is {} bytes, more than the {cap} allowed", o.bytes.len()),
            ));
        }
        Ok((o.bytes.as_ref().clone(), tag(o.tag)))
    }

    fn read_at(&self, name: &str, offset: u64, buf: &mut [u8]) -> Result<()> {
        let bytes = {
            let s = self.state();
            Arc::clone(&s.objects.get(name).ok_or_else(|| missing(name))?.bytes)
        };
        let end = offset.checked_add(buf.len() as u64).filter(|&e| e <= bytes.len() as u64);
        let Some(end) = end else {
            return Err(Error::corrupt(
                self.locate(name),
                format!("{} bytes at offset {offset} lie past its end", buf.len()),
            ));
        };
        buf.copy_from_slice(&bytes[offset as usize..end as usize]);
        Ok(())
    }

    fn head(&self, name: &str) -> Result<ObjectMeta> {
        let s = self.state();
        let o = s.objects.get(name).ok_or_else(|| missing(name))?;
        Ok(ObjectMeta { name: name.to_string(), size: o.bytes.len() as u64, modified: Some(o.modified) })
    }

    fn put(&self, name: &str, bytes: &[u8], mode: PutMode) -> Result<ETag> {
        self.write(name, |s| store_object(s, name, bytes.to_vec(), &mode))
    }

    fn writer(&self) -> Result<Box<dyn ObjectWriter>> {
        Ok(Box::new(MemWriter {
            backend: Memory { state: Arc::clone(&self.state), lease: Arc::clone(&self.lease) },
            bytes: Vec::new(),
        }))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let s = self.state();
        Ok(s.objects
            .range(prefix.to_string()..)
            .take_while(|(n, _)| n.starts_with(prefix))
            .map(|(n, o)| ObjectMeta { name: n.clone(), size: o.bytes.len() as u64, modified: Some(o.modified) })
            .collect())
    }

    fn delete(&self, name: &str) -> Result<()> {
        self.write(name, |s| {
            s.objects.remove(name);
            Ok(())
        })
    }

    fn lease(&self, wait: Duration, notice: Option<&dyn Fn(&str)>) -> Result<Box<dyn Lease>> {
        let n = {
            let mut s = self.state();
            s.leases += 1;
            let n = s.leases;
            if s.lease_faults.remove(&n) {
                return Err(Error::io(
                    "memory:lock",
                    std::io::Error::other(format!("injected fault: lease {n} failed")),
                ));
            }
            n
        };
        let start = Instant::now();
        let mut held = self.lease.held.lock().unwrap_or_else(|p| p.into_inner());
        let mut noted = false;
        while let Some(other) = *held {
            let holder = format!("memory lease {other}");
            if !noted && let Some(f) = notice {
                f(&holder);
                noted = true;
            }
            let left = wait.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(Error::Locked { path: PathBuf::from("memory:lock"), holder });
            }
            held = self.lease.freed.wait_timeout(held, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        *held = Some(n);
        Ok(Box::new(MemLease { slot: Arc::clone(&self.lease), n }))
    }
}

#[derive(Debug)]
struct MemLease {
    slot: Arc<LeaseSlot>,
    n: u64,
}

impl Lease for MemLease {
    fn holder(&self) -> String {
        format!("memory lease {}", self.n)
    }
}

impl Drop for MemLease {
    fn drop(&mut self) {
        *self.slot.held.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.slot.freed.notify_all();
    }
}

/// A streamed object: buffered, visible only once finished (one write).
struct MemWriter {
    backend: Memory,
    bytes: Vec<u8>,
}

impl ObjectWriter for MemWriter {
    fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        self.bytes.extend_from_slice(bytes);
        Ok(())
    }

    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn finish(self: Box<Self>, name: &str) -> Result<()> {
        let MemWriter { backend, bytes } = *self;
        backend.write(name, |s| store_object(s, name, bytes, &PutMode::Create)).map(|_| ())
    }

    fn abort(self: Box<Self>) {}
}
