//! tdelta: a tensor-aware delta storage engine for model checkpoints.
#![deny(missing_docs)]

pub mod bench;
pub mod block;
pub mod checkpoint;
pub mod codec;
mod dtype;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod hash;
pub mod lossy;
mod ops;
mod store;
pub mod synth;
#[cfg(test)]
mod testutil;

pub use dtype::{DType, UnknownDType};
pub use error::{Error, Result};
pub use hash::Hash;
pub use ops::{
    BaseChoice, PARTIAL_SUFFIX, PackOptions, PackReport, Policy, Progress, RestoreOptions, RestoreReport, Silent, pack,
    read_tensor, restore,
};
pub use ops::{DiffReport, FileDiff, TensorDiff, TensorStatus, diff};
pub use ops::{
    GcReport, RollbackTarget, StoreFigures, VerifyReport, VersionCheck, VersionFigures, drop_version, gc, history,
    prune, refs_by_version, rollback, stats, tag, untag, verify,
};
pub use store::integrity::{AuditRepair, RefRecorded, repair_audit};
pub use store::manifest::{BlockRef, FileContent, FileEntry, LayoutKind, Manifest, TensorEntry, VersionStats};
pub use store::refs::{AuditEntry, AuditReport, validate_ref_name};
pub use store::sign::{
    PublicKey, SignatureReport, SignedBy, Signer, Unsigned, move_signers, trust_key, trusted_keys, verify_signatures,
    version_signer,
};
pub use store::{InitOptions, Store, StoreConfig, StoreStats};
