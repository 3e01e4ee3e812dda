//! Operations on a store: pack a checkpoint, restore a version.

mod blocks;
mod diff;
pub(crate) mod log;
mod manage;
mod pack;
mod policy;
mod prefetch;
mod problem;
mod read_ahead;
mod report;
pub(crate) mod restore;
mod slice;

pub use crate::progress::{Progress, Silent};
pub use diff::{DiffReport, FileDiff, FileStatus, TensorDiff, TensorStatus, diff};
pub use log::{LogEntry, LogQuery, LogReport, LogState, log};
pub use manage::{
    GcPreview, GcReport, RollbackTarget, StoreFigures, VerifyReport, VersionCheck, VersionFigures, audit_entries,
    drop_dry_run, drop_version, gc, gc_dry_run, history, prune, prune_candidates, refs_by_version, rollback, stats,
    tag, untag, verify,
};
pub use pack::{BaseChoice, PackOptions, PackReport, pack, pack_memory};
pub use policy::Policy;
pub use problem::{BlockPart, Problem};
pub use report::{
    DropReport, HistoryEntry, InitReport, RollbackReport, ShowReport, Signature, TagEntry, TagReport, show,
    signed_history, tags,
};
pub use restore::{
    PARTIAL_TAG, RestoreOptions, RestoreReport, Selection, read_tensor, restore, restore_parts, write_file,
    write_tensor,
};
pub use slice::{TensorRead, find_tensor, read_header, read_tensors_into};

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_cancel;
#[cfg(test)]
mod tests_errors;
#[cfg(test)]
mod tests_golden;
#[cfg(test)]
mod tests_reports;
#[cfg(test)]
mod tests_source;
