//! Results of the small operations (tag, untag, rollback, show) as
//! reports: each serialises to the JSON every front-end prints (the CLI's
//! `--json`, the Python package's records).

use serde::Serialize;

use crate::store::Store;
use crate::store::manifest::Manifest;
use crate::store::sign::{SignedBy, version_signer};
use crate::{Hash, Result};

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
