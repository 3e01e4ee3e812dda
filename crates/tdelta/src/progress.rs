//! How long operations report progress: the library never prints.

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
    /// Whether the caller asks the operation to stop (Ctrl-C in a
    /// binding, say). Long operations poll it between atomic steps and
    /// then fail with an error saying they were interrupted, leaving the
    /// store as before: a pack writes no manifest and moves no ref, a
    /// restore leaves nothing at its target.
    fn cancelled(&self) -> bool {
        false
    }
}

/// The error of an operation stopped by [`Progress::cancelled`].
pub(crate) fn interrupted() -> crate::Error {
    crate::Error::Interrupted
}

/// A [`Progress`] that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Progress for Silent {}
