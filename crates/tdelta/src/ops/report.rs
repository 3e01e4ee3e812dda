//! Results of the small operations (init, tag, untag, rollback, show,
//! drop, history) as reports: each serialises to the JSON every front-end
//! prints (the CLI's `--json`, the Python package's records).

use std::path::PathBuf;

use serde::Serialize;

use crate::store::Store;
use crate::store::manifest::Manifest;
use crate::store::sign::{SignedBy, move_signers, version_signer};
use crate::{AuditEntry, Hash, Result};

/// A store as [`Store::init`] created it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InitReport {
    /// Where the store is.
    pub store: PathBuf,
    /// Its block size in bytes.
    pub block_size: u32,
}

impl InitReport {
    /// The report of a store just created.
    pub fn of(store: &Store) -> InitReport {
        InitReport { store: store.root().to_path_buf(), block_size: store.config().block_size }
    }
}

/// What [`drop_version`](super::drop_version) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DropReport {
    /// The version dropped (its blocks stay until a gc).
    pub dropped: Hash,
}

/// One audit entry as `history` shows it: the entry and who signed it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryEntry {
    /// The entry.
    #[serde(flatten)]
    pub entry: AuditEntry,
    /// The key that signed this move, if any.
    pub signed_by: Option<SignedBy>,
}

/// The moves of ref `name` (every audit entry when `None`), oldest first,
/// each with its signer. A damaged audit log is an error.
pub fn signed_history(store: &Store, name: Option<&str>) -> Result<Vec<HistoryEntry>> {
    let entries = match name {
        Some(n) => super::history(store, n)?,
        None => super::audit_entries(store)?,
    };
    let signers = move_signers(store, &entries)?;
    Ok(entries.into_iter().zip(signers).map(|(entry, signed_by)| HistoryEntry { entry, signed_by }).collect())
}

/// What [`tag`](super::tag) or [`untag`](super::untag) did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TagReport {
    /// The tag.
    pub tag: String,
    /// The version it now points to (none once deleted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<Hash>,
    /// The version it pointed to before, if it existed.
    pub old: Option<Hash>,
    /// Whether the tag was deleted.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

/// What [`rollback`](super::rollback) did: `old == new` when the ref
/// already pointed to the target (nothing moved, nothing was recorded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RollbackReport {
    /// The ref moved, e.g. `stable` or `HEAD`.
    #[serde(rename = "ref")]
    pub name: String,
    /// Where it pointed.
    pub old: Hash,
    /// Where it points now.
    pub new: Hash,
}

/// One version as [`show`] finds it: its refs, its manifest and who
/// signed it.
#[derive(Debug, Clone, Serialize)]
pub struct ShowReport {
    /// The version.
    pub id: Hash,
    /// The refs (`HEAD`, tags) pointing to it.
    pub refs: Vec<String>,
    /// Its manifest.
    pub manifest: Manifest,
    /// Who signed it (`null` when unsigned), or why its signature does not
    /// check out (`{"problem": "..."}`).
    pub signed_by: Signature,
}

/// Whether a version is signed, for a [`ShowReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Signature {
    /// Signed by this key, or not signed (`None`).
    Signed(Option<SignedBy>),
    /// A signature that does not check out, and why.
    Problem {
        /// What is wrong with it.
        problem: String,
    },
}

/// Version `id` with its refs, manifest and signer. A damaged signature
/// is reported in [`ShowReport::signed_by`], not as an error.
pub fn show(store: &Store, id: Hash) -> Result<ShowReport> {
    let manifest = store.manifest(id)?;
    let refs = super::refs_by_version(store)?.remove(&id).unwrap_or_default();
    let signed_by = match version_signer(store, id) {
        Ok(s) => Signature::Signed(s),
        Err(e) => Signature::Problem { problem: e.to_string() },
    };
    Ok(ShowReport { id, refs, manifest, signed_by })
}

/// A tag and the version it points to, as [`tags`] lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TagEntry {
    /// The tag.
    pub name: String,
    /// The version.
    pub id: Hash,
}

/// Every tag of the store, by name.
pub fn tags(store: &Store) -> Result<Vec<TagEntry>> {
    Ok(store.refs()?.into_iter().map(|(name, id)| TagEntry { name, id }).collect())
}
