//! The write transaction: the writer lease as a type.
//!
//! Writing manifests, moving refs and `HEAD`, appending audit entries and
//! deleting objects are methods of [`WriteTxn`] only, so code that does
//! them holds the store's lease by construction: "the caller must hold
//! the lock" is checked by the compiler, not by a comment. The guard does
//! not borrow the store (a writer reloads its pack table while holding
//! it); each method takes the store and refuses one of another backend.

use std::sync::Arc;

use crate::Hash;
use crate::backend::{Backend, Lease, PutMode};
use crate::store::manifest::Manifest;
use crate::store::{Store, exists, index_name, pack_name, version_name};
use crate::{Error, Result};

/// A writer's hold on a store (see [`Store::begin_write`]). Dropping it
/// releases the lease.
#[derive(Debug)]
pub struct WriteTxn {
    backend: Arc<dyn Backend>,
    _lease: Box<dyn Lease>,
}

impl WriteTxn {
    pub(super) fn new(store: &Store, lease: Box<dyn Lease>) -> WriteTxn {
        WriteTxn { backend: Arc::clone(&store.backend), _lease: lease }
    }

    /// `store`, if this guard holds its lease.
    fn on<'s>(&self, store: &'s Store) -> Result<&'s Store> {
        if Arc::ptr_eq(&self.backend, &store.backend) {
            Ok(store)
        } else {
            Err(Error::Internal(format!(
                "a write to {} under the lease of {}",
                store.backend.describe(),
                self.backend.describe()
            )))
        }
    }

    /// Points ref `name` (or `HEAD`) at `id`, or deletes it (`None`), and
    /// records the move in the audit log; returns where it pointed.
    pub(crate) fn move_ref(
        &self,
        store: &Store,
        name: &str,
        id: Option<Hash>,
        op: &str,
        why: &str,
    ) -> Result<Option<Hash>> {
        self.on(store)?.move_ref_locked(name, id, op, why)
    }

    /// Appends an audit entry that moves no ref (a version dropped, a gc).
    pub(crate) fn record(
        &self,
        store: &Store,
        op: &str,
        r#ref: Option<&str>,
        new: Option<Hash>,
        why: &str,
    ) -> Result<()> {
        self.on(store)?.record(op, r#ref, new, why)
    }

    /// Writes a manifest (write-once) and returns its id, and whether it
    /// is new (false when the same version already existed).
    pub(crate) fn write_manifest(&self, store: &Store, m: &Manifest) -> Result<(Hash, bool)> {
        let (id, bytes) = m.encode(store.hasher()).map_err(|e| Error::Internal(e.to_string()))?;
        let name = version_name(id);
        let store = self.on(store)?;
        if exists(store.backend.as_ref(), &name)? {
            return Ok((id, false));
        }
        match store.backend.put(&name, &bytes, PutMode::Create) {
            Ok(_) => Ok((id, true)),
            Err(Error::AlreadyExists { .. }) => Ok((id, false)),
            Err(e) => {
                // It may have landed with its response lost; it did not
                // exist before and nothing points to it yet: take it back,
                // so the caller may discard the packs it needs.
                let _ = store.backend.delete(&name);
                Err(e)
            }
        }
    }

    /// Deletes the manifest of version `id` (the caller recorded why).
    pub(crate) fn delete_manifest(&self, store: &Store, id: Hash) -> Result<()> {
        self.on(store)?.backend.delete(&version_name(id))
    }

    /// Deletes a pack: its index first, so that no index ever names a
    /// missing pack.
    pub(crate) fn delete_pack(&self, store: &Store, id: Hash) -> Result<()> {
        let store = self.on(store)?;
        store.backend.delete(&index_name(id))?;
        store.backend.delete(&pack_name(id))
    }

    /// Removes packs written by an operation that failed before its
    /// version was recorded (best effort: `gc` removes what is left).
    pub(crate) fn discard_packs(&self, store: &Store, ids: &[Hash]) {
        for id in ids {
            let _ = self.delete_pack(store, *id);
        }
    }

    /// Deletes the packs whose index never landed (a writer killed in
    /// between); returns how many.
    pub(crate) fn delete_unindexed_packs(&self, store: &Store) -> Result<usize> {
        let store = self.on(store)?;
        let objects = store.backend.list("packs/")?;
        let names: std::collections::HashSet<&str> = objects.iter().map(|o| o.name.as_str()).collect();
        let mut n = 0;
        for o in &objects {
            if let Some(stem) = o.name.strip_suffix(".pack")
                && !stem["packs/".len().min(stem.len())..].contains('/')
                && !names.contains(format!("{stem}.idx").as_str())
            {
                store.backend.delete(&o.name)?;
                n += 1;
            }
        }
        Ok(n)
    }
}
