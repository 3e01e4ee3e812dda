//! tdelta: a tensor-aware delta storage engine for model checkpoints.
#![deny(missing_docs)]

pub mod backend;
pub mod checkpoint;
mod error;
mod ops;
mod portable;
mod progress;
pub mod remote;
mod store;
#[cfg(test)]
#[path = "../../tdelta-codec/src/testutil.rs"]
mod testutil;

pub use error::{AuditDamage, CorruptKind, Error, ErrorKind, IoContext, OutputRefusal, Result};
pub use ops::{
    BaseChoice, PARTIAL_TAG, PackOptions, PackReport, Policy, Progress, RestoreOptions, RestoreReport, Selection,
    Silent, pack, read_tensor, restore, restore_parts, write_file, write_tensor,
};
pub use ops::{BlockPart, Problem, RollbackReport, ShowReport, Signature, TagEntry, TagReport, show, tags};
pub use ops::{DiffReport, FileDiff, FileStatus, TensorDiff, TensorStatus, diff};
pub use ops::{DropReport, HistoryEntry, InitReport, signed_history};
pub use ops::{
    GcPreview, GcReport, RollbackTarget, StoreFigures, VerifyReport, VersionCheck, VersionFigures, audit_entries,
    drop_dry_run, drop_version, gc, gc_dry_run, history, prune, prune_candidates, refs_by_version, rollback, stats,
    tag, untag, verify,
};
pub use ops::{LogEntry, LogQuery, LogReport, LogState, log};
pub use ops::{TensorRead, find_tensor, pack_memory, read_header, read_tensors_into};
pub use store::info::{StoreInfo, UpgradeReport};
pub use store::integrity::{AuditRepair, RefRecorded, repair_audit};
pub use store::manifest::{
    BlockRef, FileContent, FileEntry, LayoutKind, Manifest, ManifestSummary, TensorEntry, VersionStats,
};
pub use store::refs::{AuditEntry, AuditReport, validate_ref_name};
pub use store::sign::{
    PublicKey, SignatureReport, SignedBy, Signer, Unsigned, move_signers, trust_key, trusted_keys, verify_signatures,
    version_signer,
};
pub use store::{InitOptions, Store, StoreConfig, StoreStats};
pub use tdelta_codec as codec;
pub use tdelta_codec::lossy;
pub use tdelta_format::audit::AuditOp;
pub use tdelta_format::block;
pub use tdelta_format::lossy_record::{LossyBlocks, LossyRecord, LossyTensor};
use tdelta_format::relpath;
pub use tdelta_format::{Algo, DType, Domain, Hash, Hasher, UnknownDType};
