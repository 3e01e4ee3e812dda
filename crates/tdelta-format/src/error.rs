//! What can be wrong with the bytes of a store file. The engine adds the
//! name of the object (`tdelta::Error::Corrupt { file, kind, .. }`).

use std::fmt;

/// The kind of store file a [`FormatError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FileKind {
    /// The store's `config`.
    Config,
    /// A manifest, `versions/<id>.tdm`.
    Manifest,
    /// A pack, `packs/<id>.pack`.
    Pack,
    /// A pack index, `packs/<id>.idx`.
    PackIndex,
    /// A ref or `HEAD`.
    Ref,
    /// The audit log, `audit.log`.
    AuditLog,
    /// A signature file, `signatures/…`.
    Signature,
    /// A public or secret key file.
    Key,
    /// The store's list of remotes, `remotes`.
    Remotes,
}

impl FileKind {
    /// How messages name the kind: `manifest`, `store config`, …
    pub fn name(self) -> &'static str {
        match self {
            FileKind::Config => "store config",
            FileKind::Manifest => "manifest",
            FileKind::Pack => "pack",
            FileKind::PackIndex => "index",
            FileKind::Ref => "ref",
            FileKind::AuditLog => "audit log",
            FileKind::Signature => "signature",
            FileKind::Key => "key file",
            FileKind::Remotes => "remotes file",
        }
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which check of the bytes failed (the engine's `CorruptKind` mirrors
/// it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Check {
    /// The bytes do not start with the magic of their kind.
    Magic,
    /// A format version that cannot be (zero, or codes a version may not hold).
    Version,
    /// The bytes end before their framing says they do.
    Truncated,
    /// A checksum does not match.
    Checksum,
    /// Content that does not hash to its name.
    HashMismatch,
    /// An audit entry whose seal does not match its bytes.
    Tampered,
    /// Any other value that does not parse or is out of range.
    Invalid,
}

/// Bytes that are not a valid file of their kind, or values that cannot
/// be written as one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// The bytes fail a check of the format: `reason` says which.
    #[error("{reason}")]
    Corrupt {
        /// The kind of file.
        file: FileKind,
        /// The check that failed.
        check: Check,
        /// What is wrong, lowercase.
        reason: String,
    },
    /// A format version this build does not read.
    #[error("{file} format version {found} is not supported (this build reads versions up to {supported})")]
    UnsupportedVersion {
        /// The kind of file.
        file: FileKind,
        /// Version found in the bytes.
        found: u32,
        /// Newest version this build reads.
        supported: u32,
    },
    /// Values that cannot be encoded as a file of their kind.
    #[error("cannot encode {file}: {reason}")]
    Encode {
        /// The kind of file.
        file: FileKind,
        /// Why.
        reason: String,
    },
}

impl FormatError {
    /// A failed check of a `file` of its kind.
    pub fn corrupt(file: FileKind, check: Check, reason: impl Into<String>) -> Self {
        FormatError::Corrupt { file, check, reason: reason.into() }
    }

    /// A value of a `file` that does not parse or is out of range.
    pub fn invalid(file: FileKind, reason: impl Into<String>) -> Self {
        FormatError::corrupt(file, Check::Invalid, reason)
    }

    /// The kind of file the error is about.
    pub fn file(&self) -> FileKind {
        match self {
            FormatError::Corrupt { file, .. }
            | FormatError::UnsupportedVersion { file, .. }
            | FormatError::Encode { file, .. } => *file,
        }
    }

    /// The check that failed, for [`FormatError::Corrupt`].
    pub fn check(&self) -> Option<Check> {
        match self {
            FormatError::Corrupt { check, .. } => Some(*check),
            _ => None,
        }
    }
}

/// Result of encoding or decoding a store file.
pub type Result<T, E = FormatError> = std::result::Result<T, E>;

/// Little-endian reads at offsets of a slice whose length the caller has
/// checked.
pub(crate) fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

pub(crate) fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}
