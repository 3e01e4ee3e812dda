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

use crate::DType;

/// A block codec, as stored in pack records (one byte).
///
/// Codes are part of the on-disk format (`FORMAT.md`): never renumber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum CodecId {
    /// The raw bytes.
    Raw = 0,
    /// zstd of the raw bytes.
    Zstd = 1,
}

impl CodecId {
    /// Every codec, in code order.
    pub const ALL: &'static [CodecId] = &[CodecId::Raw, CodecId::Zstd];

    /// The codec with this code.
    pub fn from_u8(code: u8) -> Result<CodecId, CodecError> {
        CodecId::ALL
            .iter()
            .copied()
            .find(|c| *c as u8 == code)
            .ok_or(CodecError::UnknownCodec(code))
    }

    /// Short name, as in `FORMAT.md` and `tdelta stats`.
    pub fn name(self) -> &'static str {
        match self {
            CodecId::Raw => "raw",
            CodecId::Zstd => "zstd",
        }
    }

    /// True when decoding needs the base block.
    pub fn needs_base(self) -> bool {
        false
    }
}

/// Encoder settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodeParams {
    /// zstd level (1..=22).
    pub level: i32,
}

impl Default for EncodeParams {
    fn default() -> Self {
        EncodeParams { level: 3 }
    }
}

/// One encoded block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// How it was encoded.
    pub codec: CodecId,
    /// The payload.
    pub payload: Vec<u8>,
}

/// Encodes `new` (one block of `dtype` elements), as a delta against
/// `base` when one is given and that is smaller. `base`, when given, has
/// the same length as `new`.
pub fn encode(dtype: DType, new: &[u8], base: Option<&[u8]>, params: &EncodeParams) -> Encoded {
    let _ = (dtype, base);
    match zstd::bulk::compress(new, params.level) {
        Ok(z) if z.len() < new.len() => Encoded { codec: CodecId::Zstd, payload: z },
        _ => Encoded { codec: CodecId::Raw, payload: new.to_vec() },
    }
}

/// Decodes a payload into `out`, whose length is the raw block length.
/// `base` must be given when `codec.needs_base()`.
pub fn decode(
    dtype: DType,
    codec: CodecId,
    payload: &[u8],
    base: Option<&[u8]>,
    out: &mut [u8],
) -> Result<(), CodecError> {
    let _ = (dtype, base);
    match codec {
        CodecId::Raw => {
            if payload.len() != out.len() {
                return Err(CodecError::Malformed {
                    codec: "raw",
                    reason: format!("payload is {} bytes, block is {}", payload.len(), out.len()),
                });
            }
            out.copy_from_slice(payload);
            Ok(())
        }
        CodecId::Zstd => zstd_into("zstd", payload, out),
    }
}

/// Decompresses a zstd frame into exactly `out.len()` bytes.
pub(crate) fn zstd_into(codec: &'static str, payload: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
    let n = zstd::bulk::decompress_to_buffer(payload, out)
        .map_err(|e| CodecError::Malformed { codec, reason: e.to_string() })?;
    if n != out.len() {
        return Err(CodecError::Malformed {
            codec,
            reason: format!("decoded {n} bytes, block is {}", out.len()),
        });
    }
    Ok(())
}
