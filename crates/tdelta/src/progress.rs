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
}

/// A [`Progress`] that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Progress for Silent {}
