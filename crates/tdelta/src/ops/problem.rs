//! What [`verify`](super::verify) finds wrong: a typed problem (what
//! failed, which object, block or tensor, a message) that front-ends print
//! as text ([`Display`](std::fmt::Display), the words `verify` always
//! printed) or serialise as JSON (`{"what": "block", "file": ..., ...}`).

use std::fmt;

use serde::Serialize;

use crate::CorruptKind;
use crate::Hash;

/// One thing [`verify`](super::verify) found wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "what", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Problem {
    /// The store's config cannot be read (the store is then read-only).
    Config {
        /// What is wrong.
        message: String,
    },
    /// A pack or its index: unreadable, or bytes that do not hash to the
    /// pack's name.
    Pack {
        /// The pack, when known.
        pack: Option<Hash>,
        /// What is wrong.
        message: String,
    },
    /// The audit log: an entry edited, removed or cut short, or the log
    /// unreadable.
    AuditLog {
        /// What is wrong.
        message: String,
    },
    /// A ref or `HEAD`: unreadable, pointing to a missing version, or not
    /// where the audit log's last move of it says.
    Ref {
        /// What is wrong.
        message: String,
    },
    /// A version's manifest cannot be read.
    Manifest {
        /// What is wrong.
        message: String,
    },
    /// A version lists a file path that restore refuses to write.
    Path {
        /// What is wrong.
        message: String,
    },
    /// A block of a version does not decode or does not hash to its id.
    Block {
        /// The file of the version.
        file: String,
        /// Which part of the file the block belongs to.
        part: BlockPart,
        /// The tensor, for a tensor's block.
        tensor: Option<String>,
        /// The block's index within its tensor, header or blob.
        index: usize,
        /// Which check failed, when the store's bytes are at fault.
        check: Option<CorruptKind>,
        /// What is wrong.
        message: String,
    },
    /// More damaged blocks than a version's list holds.
    MoreBlocks {
        /// How many were left out.
        count: usize,
    },
}

/// Which part of a file a block is in ([`Problem::Block`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockPart {
    /// The safetensors header.
    Header,
    /// A tensor's bytes.
    Tensor,
    /// A file stored as bytes (not safetensors).
    Blob,
}

impl Problem {
    /// The message, without where the problem is.
    pub fn message(&self) -> String {
        match self {
            Problem::Config { message }
            | Problem::Pack { message, .. }
            | Problem::AuditLog { message }
            | Problem::Ref { message }
            | Problem::Manifest { message }
            | Problem::Path { message }
            | Problem::Block { message, .. } => message.clone(),
            Problem::MoreBlocks { count } => format!("{count} more damaged blocks"),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Block { file, part, tensor, index, message, .. } => {
                write!(f, "{file}: ")?;
                match (part, tensor) {
                    (BlockPart::Tensor, Some(t)) => write!(f, "tensor `{t}` block {index}")?,
                    (BlockPart::Header, _) => write!(f, "header block {index}")?,
                    _ => write!(f, "block {index}")?,
                }
                write!(f, ": {message}")
            }
            Problem::MoreBlocks { count } => write!(f, "... and {count} more damaged blocks"),
            other => f.write_str(&other.message()),
        }
    }
}
