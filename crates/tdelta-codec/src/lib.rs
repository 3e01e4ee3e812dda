//! Block codecs: lossless transforms and entropy coding of one block.
//!
//! Nothing here knows about files, tensors or the store: a codec turns the
//! bytes of one block (optionally with the bytes of its base block) into a
//! payload and back. The payload layouts are specified in `FORMAT.md`.
#![deny(missing_docs)]

pub mod baseline;
mod id;
mod lossless;
pub mod lossy;
pub(crate) mod rans;
mod registry;
mod streams;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod testutil;
mod transform;

pub use id::{CodecError, CodecId, InvalidSetting};
pub use lossless::{EncodeParams, Encoded, encode, encode_into};
use tdelta_format::DType;

/// Decodes a payload into `out`, whose length is the raw block length.
/// `base` must be given when `codec.needs_base()`. On an error the bytes
/// left in `out` are unspecified.
pub fn decode(
    dtype: DType,
    codec: CodecId,
    payload: &[u8],
    base: Option<&[u8]>,
    out: &mut [u8],
) -> Result<(), CodecError> {
    let base = if codec.needs_base() {
        match base {
            Some(b) if b.len() == out.len() => b,
            Some(b) => {
                return Err(CodecError::Base {
                    codec: codec.name(),
                    reason: format!("base block is {} bytes, block is {}", b.len(), out.len()),
                });
            }
            None => return Err(CodecError::Base { codec: codec.name(), reason: "no base block given".into() }),
        }
    } else {
        &[][..]
    };
    (registry::decoder(codec)?.decode)(dtype, payload, base, out)
}
