//! The codecs' vocabulary: codec codes, what can go wrong, and the shape
//! of a decoder.

use tdelta_format::DType;

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

/// A codec setting out of range or unknown (a lossy width, group size or
/// error bound): the message says which and lists the valid values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidSetting(pub String);

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
    /// Float byte planes (sign rotated to the low bit, so the top plane is
    /// the exponent), each stored raw, constant or zstd. No base.
    Planes = 2,
    /// `new ^ base`, float-rotated, split into byte planes like `Planes`.
    XorPlanes = 3,
    /// Zigzag of the wrapping difference `ord(new) - ord(base)` in ULPs
    /// (order-preserving integer map of floats), split into byte planes.
    UlpPlanes = 4,
    /// Lossy: a quantized delta against the base (`crate::lossy`). The
    /// block's hash is that of the reconstruction, which decodes exactly.
    Quant = 16,
    /// Lossy: an entropy-coded quantized delta against the base
    /// (`crate::lossy::ec`), one step per block. Hashed like `Quant`.
    QuantEc = 17,
}

impl CodecId {
    /// Every codec, in code order.
    pub const ALL: &'static [CodecId] = &[
        CodecId::Raw,
        CodecId::Zstd,
        CodecId::Planes,
        CodecId::XorPlanes,
        CodecId::UlpPlanes,
        CodecId::Quant,
        CodecId::QuantEc,
    ];

    /// The codec with this code.
    pub fn from_u8(code: u8) -> Result<CodecId, CodecError> {
        CodecId::ALL.iter().copied().find(|c| *c as u8 == code).ok_or(CodecError::UnknownCodec(code))
    }

    /// Short name, as in `FORMAT.md` and `tdelta stats`.
    pub fn name(self) -> &'static str {
        match self {
            CodecId::Raw => "raw",
            CodecId::Zstd => "zstd",
            CodecId::Planes => "planes",
            CodecId::XorPlanes => "xor-planes",
            CodecId::UlpPlanes => "ulp-planes",
            CodecId::Quant => "quant",
            CodecId::QuantEc => "quant-ec",
        }
    }

    /// True when decoding needs the base block.
    pub fn needs_base(self) -> bool {
        matches!(self, CodecId::XorPlanes | CodecId::UlpPlanes | CodecId::Quant | CodecId::QuantEc)
    }
}

/// Decodes one payload into `out` (the raw block length), given the base
/// block (empty when the codec needs none; checked by `crate::decode`).
pub(crate) type DecodeFn = fn(DType, &[u8], &[u8], &mut [u8]) -> Result<(), CodecError>;

/// A registered decoder.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Decoder {
    /// The codec it decodes.
    pub id: CodecId,
    /// How.
    pub decode: DecodeFn,
}
