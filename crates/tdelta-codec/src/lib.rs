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

/// Whether [`decode_over_full`] can decode a block of `codec` one delta
/// from a full block of `root_codec`, both of `dtype`, on this CPU: 16-bit
/// floats in byte planes (`planes`, then `xor-planes` or `ulp-planes`),
/// with the AVX-512 decoder. A caller checks it before reading the two
/// payloads.
pub fn decodes_over_full(dtype: DType, root_codec: CodecId, codec: CodecId) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let word = transform::Word::of(dtype);
        word.size() == 2
            && root_codec == CodecId::Planes
            && matches!(codec, CodecId::XorPlanes | CodecId::UlpPlanes)
            && rans::fused::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (dtype, root_codec, codec);
        false
    }
}

/// Decodes a block stored as a delta (`codec`, `payload`) against a full
/// block (`root_codec`, `root_payload`) of the same length straight into
/// `out`, both levels in one pass: the full block's words are decoded
/// group by group and used at once as the delta's base, never stored.
/// The same bytes as [`decode`] of the full block, then of the delta
/// against it. Returns false when not done ([`decodes_over_full`] says
/// no, or a payload does not decode): `out` is then unspecified, and
/// decoding the levels one by one reports what is wrong.
pub fn decode_over_full(
    dtype: DType,
    root_codec: CodecId,
    root_payload: &[u8],
    codec: CodecId,
    payload: &[u8],
    out: &mut [u8],
) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        decodes_over_full(dtype, root_codec, codec)
            && lossless::decode_over_full16(dtype, (root_codec, root_payload), (codec, payload), out)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (dtype, root_codec, root_payload, codec, payload, out);
        false
    }
}

/// Decodes two full blocks (`planes` payloads `a` and `b`, 16-bit floats)
/// of the same length at once, their entropy-coded streams interleaved so
/// that one's latency overlaps the other's; the same bytes as [`decode`]
/// of each. Returns false when not done (other codecs or lengths, a CPU
/// without the AVX-512 decoder, or a payload that does not decode): the
/// outputs are then unspecified, and decoding each alone reports what is
/// wrong.
pub fn decode_two_full(dtype: DType, a: &[u8], out_a: &mut [u8], b: &[u8], out_b: &mut [u8]) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        transform::Word::of(dtype).size() == 2 && lossless::decode_two_full16(dtype, (a, out_a), (b, out_b))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (dtype, a, out_a, b, out_b);
        false
    }
}
