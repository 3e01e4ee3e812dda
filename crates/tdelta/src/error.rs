//! The one error type of the engine.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in tdelta, with the context a user needs to
/// act: the file, the tensor, the block and what was expected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system error on a named path.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A safetensors file whose header or layout is invalid.
    #[error("{}: {}{reason}", file.display(), tensor.as_ref().map(|t| format!("tensor `{t}`: ")).unwrap_or_default())]
    InvalidCheckpoint {
        /// The offending file.
        file: PathBuf,
        /// The tensor concerned, when the problem is specific to one.
        tensor: Option<String>,
        /// What is wrong, lowercase, no trailing period.
        reason: String,
    },

    /// A block payload that cannot be decoded.
    #[error("cannot decode block: {0}")]
    Codec(#[from] crate::codec::CodecError),

    /// A store file that is damaged or not what it claims to be.
    #[error("corrupt store file {}: {reason}", file.display())]
    Corrupt {
        /// The damaged file.
        file: PathBuf,
        /// Which check failed, for front-ends to branch on.
        kind: CorruptKind,
        /// What check failed, in words.
        reason: String,
        /// The part of the record of ref moves that is damaged, when the
        /// damage is there (front-ends name the repair by it).
        audit: Option<AuditDamage>,
    },

    /// A store file written by a newer (or unknown) format version.
    #[error("{}: format version {found} is not supported (this build reads versions up to {supported})", file.display())]
    UnsupportedFormat {
        /// The file.
        file: PathBuf,
        /// Version found in the file.
        found: u32,
        /// Newest version this build reads.
        supported: u32,
    },

    /// Restored bytes of a block do not hash to the block's id.
    #[error("block {block} restores to bytes hashing to {actual}")]
    HashMismatch {
        /// The block hash (what the manifest recorded).
        block: String,
        /// Hash of the restored bytes.
        actual: String,
    },

    /// A block is missing from every pack.
    #[error("block {block} is missing from the store")]
    MissingBlock {
        /// The block hash.
        block: String,
    },

    /// A failure while reading one block of a version, with where it is.
    #[error("version {version}: {file}: {what}: {source}")]
    InBlock {
        /// Version id (short).
        version: String,
        /// File path inside the version.
        file: String,
        /// The tensor and block index, or the header or blob block.
        what: String,
        /// What went wrong.
        #[source]
        source: Box<Error>,
    },

    /// No store at the given path.
    #[error("no tdelta store at {}", path.display())]
    NoStore {
        /// Where a store was expected.
        path: PathBuf,
    },

    /// `init` on a path that already holds a store.
    #[error("a tdelta store already exists at {}", path.display())]
    StoreExists {
        /// The store path.
        path: PathBuf,
    },

    /// A ref or version id that resolves to nothing.
    #[error("unknown ref or version `{name}`")]
    UnknownRef {
        /// What the user asked for.
        name: String,
    },

    /// `HEAD` asked for in a store that has no version yet.
    #[error("the store at {} has no versions yet", path.display())]
    NoVersions {
        /// The store path.
        path: PathBuf,
    },

    /// `HEAD` asked for while its file is missing from a store that holds
    /// versions (deleted outside tdelta).
    #[error("{} is missing, but the store holds {versions} versions (deleted outside tdelta?)", path.display())]
    HeadMissing {
        /// The `HEAD` file.
        path: PathBuf,
        /// Versions in the store.
        versions: usize,
    },

    /// A prefix that matches more than one version.
    #[error("version prefix `{prefix}` is ambiguous: it matches {count} versions: {candidates}")]
    AmbiguousRef {
        /// The prefix.
        prefix: String,
        /// How many versions it matches.
        count: usize,
        /// Their short ids, comma-separated.
        candidates: String,
    },

    /// A ref name that is not allowed.
    #[error("invalid ref name `{name}`: {reason}")]
    InvalidRefName {
        /// The name.
        name: String,
        /// Why it is refused.
        reason: String,
    },

    /// A new ref whose name clashes with existing refs: a name cannot be
    /// both a ref and a folder of refs (`a/b` while ref `a` exists, or
    /// `a` while refs `a/...` exist).
    #[error(
        "cannot create ref `{name}`: {} `{other}` exist{}, and a name cannot be both a ref and a folder of refs; \
         choose another name{}",
        if *folder { "refs named" } else { "ref" },
        if *folder { "" } else { "s" },
        if *folder { String::new() } else { format!(" or delete `{other}`") }
    )]
    RefClash {
        /// The name asked for.
        name: String,
        /// The ref in the way (`a`), or the folder's refs (`a/...`).
        other: String,
        /// Whether refs below the name are in the way (else a ref named
        /// like one of its folders).
        folder: bool,
    },

    /// Another process holds the store's write lock.
    #[error("store {} is locked by another writer ({holder})", path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// What the lock file says about its holder.
        holder: String,
    },

    /// A value that is not one of the valid choices (a usage error).
    #[error("unknown {what} `{value}`; valid values are: {}", valid.join(", "))]
    InvalidChoice {
        /// What was chosen (`sort key`).
        what: String,
        /// The value given.
        value: String,
        /// The values that would be accepted.
        valid: Vec<String>,
    },

    /// An option or argument that makes no sense.
    #[error("{0}")]
    InvalidArgument(String),

    /// Something asked for by name does not exist (an object of a
    /// backend, a file or tensor of a version).
    #[error("{what} does not exist")]
    NotFound {
        /// What was looked for, e.g. `object packs/ab12.pack`.
        what: String,
    },

    /// A write-once object, a tag or a store that already exists.
    #[error("{what} already exists")]
    AlreadyExists {
        /// What exists, e.g. `object versions/ab12.tdm`.
        what: String,
    },

    /// A file, tensor or parent that a version does not have.
    #[error("version {version} has no {what}{}", detail.as_ref().map(|d| format!("; {d}")).unwrap_or_default())]
    NotInVersion {
        /// The version (short id).
        version: String,
        /// What it lacks, e.g. ``file `config.json` ``.
        what: String,
        /// What it has instead, or why, when that helps.
        detail: Option<String>,
    },

    /// A failure of the engine itself (a thread that panicked, a value
    /// that does not serialise), not of the input or the store.
    #[error("internal error: {0}")]
    Internal(String),

    /// A restore that refuses its output: nothing was written there.
    #[error("{}", refusal.describe(path))]
    OutputRefused {
        /// The output path (or the entry below it that is in the way).
        path: PathBuf,
        /// Why it is refused.
        refusal: OutputRefusal,
    },

    /// A version that refs still point to, where the operation needs none
    /// to (dropping it).
    #[error("version {version} is still referenced by {}; move or delete those refs first", refs.join(", "))]
    Referenced {
        /// The version (short id).
        version: String,
        /// The refs pointing to it.
        refs: Vec<String>,
    },

    /// A store of an older format that this build reads but does not
    /// write until it is upgraded.
    #[error(
        "refusing to write: this store is format {format} ({ids} ids); it must be upgraded to be written to (existing versions keep their ids)"
    )]
    NeedsUpgrade {
        /// The store's format.
        format: u32,
        /// The hash its ids use.
        ids: String,
    },

    /// A read stopped because the caller asked it to.
    #[error("interrupted")]
    Interrupted,

    /// No remote was named and the store has no default one (none, or
    /// several and none marked default).
    #[error("no remote named and {}", if remotes.is_empty() { "the store has none".to_string() } else { format!("no default one; the store has: {}", remotes.join(", ")) })]
    NoDefaultRemote {
        /// The store's remotes.
        remotes: Vec<String>,
    },

    /// A compare-and-swap that lost: someone else changed the object since
    /// it was read.
    #[error("{what} changed since it was read: {reason}")]
    Conflict {
        /// The object or ref, e.g. `ref stable`.
        what: String,
        /// What was expected and what was found.
        reason: String,
    },
}

impl Error {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    /// A checkpoint error about a file as a whole.
    pub fn checkpoint(file: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::InvalidCheckpoint { file: file.into(), tensor: None, reason: reason.into() }
    }

    /// A checkpoint error about one tensor.
    pub fn tensor(file: impl Into<PathBuf>, tensor: &str, reason: impl Into<String>) -> Self {
        Error::InvalidCheckpoint { file: file.into(), tensor: Some(tensor.to_string()), reason: reason.into() }
    }

    /// A corrupt-store error of kind [`CorruptKind::Invalid`] (a value
    /// that does not parse or is out of range).
    pub fn corrupt(file: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::corrupt_as(CorruptKind::Invalid, file, reason)
    }

    /// A corrupt-store error naming which check failed.
    pub fn corrupt_as(kind: CorruptKind, file: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Corrupt { file: file.into(), kind, reason: reason.into(), audit: None }
    }

    /// Damage to the record of ref moves (the audit log, a pending move,
    /// a ref that differs from the log), naming which part.
    pub(crate) fn corrupt_audit(
        damage: AuditDamage,
        kind: CorruptKind,
        file: impl Into<PathBuf>,
        reason: impl Into<String>,
    ) -> Self {
        Error::Corrupt { file: file.into(), kind, reason: reason.into(), audit: Some(damage) }
    }

    /// Which part of the record of ref moves is damaged, for an error
    /// about it.
    pub fn audit_damage(&self) -> Option<AuditDamage> {
        match self {
            Error::InBlock { source, .. } => source.audit_damage(),
            Error::Corrupt { audit, .. } => *audit,
            _ => None,
        }
    }

    /// An error of the format crate about the bytes of `file`, with its
    /// name: damage as [`Error::Corrupt`], a newer version as
    /// [`Error::UnsupportedFormat`].
    pub(crate) fn format(file: impl Into<PathBuf>, e: tdelta_format::FormatError) -> Self {
        use tdelta_format::{Check, FormatError as F};
        match e {
            F::Corrupt { check, reason, .. } => {
                let kind = match check {
                    Check::Magic => CorruptKind::Magic,
                    Check::Version => CorruptKind::Version,
                    Check::Truncated => CorruptKind::Truncated,
                    Check::Checksum => CorruptKind::Checksum,
                    Check::HashMismatch => CorruptKind::HashMismatch,
                    Check::Tampered => CorruptKind::Tampered,
                    _ => CorruptKind::Invalid,
                };
                Error::Corrupt { file: file.into(), kind, reason, audit: None }
            }
            F::UnsupportedVersion { found, supported, .. } => {
                Error::UnsupportedFormat { file: file.into(), found, supported }
            }
            other => Error::Internal(other.to_string()),
        }
    }

    /// The class of this error, for front-ends that map errors to their
    /// own types (exit codes, Python exceptions). A block error
    /// ([`Error::InBlock`]) has the class of its cause.
    pub fn kind(&self) -> ErrorKind {
        use Error as E;
        match self {
            E::InBlock { source, .. } => source.kind(),
            E::NotFound { .. }
            | E::NotInVersion { .. }
            | E::UnknownRef { .. }
            | E::NoStore { .. }
            | E::NoVersions { .. }
            | E::NoDefaultRemote { .. } => ErrorKind::NotFound,
            E::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => ErrorKind::NotFound,
            E::Io { .. } => ErrorKind::Io,
            E::AlreadyExists { .. } | E::StoreExists { .. } | E::RefClash { .. } => ErrorKind::AlreadyExists,
            E::OutputRefused { refusal, .. } if refusal.is_existing() => ErrorKind::AlreadyExists,
            E::Conflict { .. } | E::Referenced { .. } => ErrorKind::Conflict,
            E::NeedsUpgrade { .. } => ErrorKind::Unsupported,
            E::Interrupted => ErrorKind::Interrupted,
            E::Locked { .. } => ErrorKind::Locked,
            E::Corrupt { .. }
            | E::Codec(_)
            | E::HashMismatch { .. }
            | E::MissingBlock { .. }
            | E::HeadMissing { .. } => ErrorKind::Corrupt,
            E::UnsupportedFormat { .. } => ErrorKind::Unsupported,
            E::Internal(_) => ErrorKind::Internal,
            E::InvalidCheckpoint { .. }
            | E::AmbiguousRef { .. }
            | E::InvalidRefName { .. }
            | E::InvalidChoice { .. }
            | E::OutputRefused { .. }
            | E::InvalidArgument(_) => ErrorKind::InvalidInput,
        }
    }

    /// Which check failed, when this error is damage found in the store
    /// ([`ErrorKind::Corrupt`]).
    pub fn corrupt_kind(&self) -> Option<CorruptKind> {
        match self {
            Error::InBlock { source, .. } => source.corrupt_kind(),
            Error::Corrupt { kind, .. } => Some(*kind),
            Error::Codec(_) => Some(CorruptKind::Undecodable),
            Error::HashMismatch { .. } => Some(CorruptKind::HashMismatch),
            Error::MissingBlock { .. } | Error::HeadMissing { .. } => Some(CorruptKind::Missing),
            _ => None,
        }
    }
}

/// The class of an [`Error`]: what a front-end branches on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// No store, version, ref, file, tensor or object of that name.
    NotFound,
    /// A store, tag or write-once object that already exists.
    AlreadyExists,
    /// Someone else changed an object since it was read.
    Conflict,
    /// Another writer holds the store's lock.
    Locked,
    /// Damage found in the store: a check of its bytes failed.
    Corrupt,
    /// A store file of a format version this build does not read.
    Unsupported,
    /// An argument or an input file that is not valid.
    InvalidInput,
    /// An operating-system error.
    Io,
    /// A failure of the engine itself.
    Internal,
    /// The caller asked the operation to stop.
    Interrupted,
}

impl ErrorKind {
    /// The lowercase name, as in JSON (`not_found`).
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::AlreadyExists => "already_exists",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Locked => "locked",
            ErrorKind::Corrupt => "corrupt",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::Io => "io",
            ErrorKind::Internal => "internal",
            ErrorKind::Interrupted => "interrupted",
        }
    }
}

/// Which check of a store file failed ([`Error::Corrupt`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CorruptKind {
    /// The file does not start with the magic bytes of its kind.
    Magic,
    /// A format version that cannot be (zero, or not the one expected).
    Version,
    /// The file ends before its framing says it does.
    Truncated,
    /// A checksum over the file or an entry does not match.
    Checksum,
    /// Content that does not hash to its name (a manifest, a pack, a block).
    HashMismatch,
    /// An object the store needs is missing (a block, a version, HEAD).
    Missing,
    /// A block payload that does not decode.
    Undecodable,
    /// An audit entry that was edited, reordered or removed.
    Tampered,
    /// Any other value that does not parse or is out of range.
    Invalid,
}

impl CorruptKind {
    /// The lowercase name, as in JSON (`hash_mismatch`).
    pub fn name(self) -> &'static str {
        match self {
            CorruptKind::Magic => "magic",
            CorruptKind::Version => "version",
            CorruptKind::Truncated => "truncated",
            CorruptKind::Checksum => "checksum",
            CorruptKind::HashMismatch => "hash_mismatch",
            CorruptKind::Missing => "missing",
            CorruptKind::Undecodable => "undecodable",
            CorruptKind::Tampered => "tampered",
            CorruptKind::Invalid => "invalid",
        }
    }
}

/// Which part of the record of ref moves is damaged ([`Error::Corrupt`]):
/// each is settled by repairing the audit log, which writers need intact
/// (they refuse to write until then).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuditDamage {
    /// The audit log is missing.
    LogMissing,
    /// The audit log does not parse, or an entry was edited, reordered or
    /// removed.
    LogDamaged,
    /// The record of a ref move in progress (`audit.pending`) is damaged.
    PendingMove,
    /// A ref or `HEAD` is not where the log's last move of it says.
    RefDiffers,
}

/// Why a restore refuses its output ([`Error::OutputRefused`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OutputRefusal {
    /// The output exists: a file (file version) or a directory that is not
    /// empty (directory version), and replacing was not asked for.
    Exists {
        /// Whether the output is a directory the version's files would be
        /// written into.
        directory: bool,
    },
    /// A file appeared at the output while restoring (it is left alone).
    Appeared,
    /// A directory where a file version's file goes.
    IsDirectory,
    /// Something other than a directory where a directory version goes.
    NotDirectory,
    /// A directory where the version has a file.
    DirectoryInTheWay,
    /// Something other than a directory where the version has one.
    FileInTheWay,
    /// A symlink where the version has a directory (never written through).
    Symlink,
    /// Neither a file nor a directory (a socket, a device).
    Special,
    /// The output is the store or inside it.
    InStore {
        /// The store's directory.
        store: PathBuf,
    },
    /// The output is the root of a file system.
    Root,
}

impl OutputRefusal {
    /// Whether the refusal protects something that exists and that the
    /// caller could ask to replace.
    pub fn is_existing(&self) -> bool {
        matches!(self, OutputRefusal::Exists { .. } | OutputRefusal::Appeared)
    }

    /// The message about output `path`.
    fn describe(&self, path: &std::path::Path) -> String {
        let p = path.display();
        match self {
            OutputRefusal::Exists { .. } => format!("{p} already exists; choose another output"),
            OutputRefusal::Appeared => format!("{p} appeared while restoring; choose another output"),
            OutputRefusal::IsDirectory => format!("{p} is a directory; choose another output"),
            OutputRefusal::NotDirectory => format!(
                "{p} exists and is not a directory; a directory version restores to a directory: remove it or \
                 choose another output"
            ),
            OutputRefusal::DirectoryInTheWay => {
                format!("{p} is a directory where the version has a file; remove it or choose another output")
            }
            OutputRefusal::FileInTheWay => {
                format!("{p} is not a directory where the version has one; remove it or choose another output")
            }
            OutputRefusal::Symlink => {
                format!("{p} is a symlink where the version has a directory; tdelta does not write through links")
            }
            OutputRefusal::Special => {
                format!("{p} is not a regular file or directory; remove it or choose another output")
            }
            OutputRefusal::InStore { store } => {
                let what = if path == store { "is the store" } else { "is inside the store" };
                format!("refusing to restore to {p}: it {what} ({}); choose an output outside it", store.display())
            }
            OutputRefusal::Root => format!("refusing to restore to {p}; choose a directory below it"),
        }
    }
}

/// Extension to attach a path to `std::io::Result`.
pub trait IoContext<T> {
    /// Maps the error to [`Error::Io`] on `path`.
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}

impl From<crate::codec::InvalidSetting> for Error {
    fn from(e: crate::codec::InvalidSetting) -> Error {
        Error::InvalidArgument(e.0)
    }
}
