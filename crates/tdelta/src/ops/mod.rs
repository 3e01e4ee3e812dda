//! Operations on a store: pack a checkpoint, restore a version.

mod diff;
pub(crate) mod log;
mod manage;
mod pack;
mod policy;
mod restore;

pub use diff::{DiffReport, FileDiff, TensorDiff, TensorStatus, diff};
pub use log::{LogEntry, LogQuery, LogReport, LogState, log};
pub use manage::{
    GcPreview, GcReport, RollbackTarget, StoreFigures, VerifyReport, VersionCheck, VersionFigures, audit_entries,
    drop_dry_run, drop_version, gc, gc_dry_run, history, prune, prune_candidates, refs_by_version, rollback, stats,
    tag, untag, verify,
};
pub use pack::{BaseChoice, PackOptions, PackReport, pack};
pub use policy::Policy;
pub use restore::{
    PARTIAL_TAG, RestoreOptions, RestoreReport, Selection, read_tensor, restore, restore_parts, write_file,
    write_tensor,
};

/// Receives progress of long operations. The library never prints: the
/// CLI shows a bar, tools may log. Calls come from several threads.
pub trait Progress: Sync {
    /// A phase starts; `total` is in bytes.
    fn begin(&self, what: &str, total: u64) {
        let _ = (what, total);
    }
    /// `n` more bytes are done.
    fn advance(&self, n: u64) {
        let _ = n;
    }
    /// The phase ended.
    fn end(&self) {}
}

/// A [`Progress`] that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Progress for Silent {}
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_errors;
#[cfg(test)]
mod tests_source;
