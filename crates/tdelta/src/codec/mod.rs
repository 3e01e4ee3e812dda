//! Block codecs: lossless transforms and entropy coding of one block.
//!
//! Nothing here knows about files, tensors or the store: a codec turns the
//! bytes of one block (optionally with the bytes of its base block) into a
//! payload and back. The payload layouts are specified in `FORMAT.md`.

/// Why a payload could not be decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// Unknown codec code.
    #[error("unknown codec code {0}")]
    UnknownCodec(u8),
    /// The payload is malformed.
    #[error("{codec}: {reason}")]
    Malformed {
        /// Codec name.
        codec: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A delta payload was given no base, or one of the wrong size.
    #[error("{codec}: {reason}")]
    Base {
        /// Codec name.
        codec: &'static str,
        /// What is wrong.
        reason: String,
    },
}
