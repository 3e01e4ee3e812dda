//! The published baselines, re-implemented so benchmarks can run them side
//! by side with tdelta's codecs on the same blocks. Not used by the store.
//!
//! Both use one layout: for each byte plane, `u8 flag` (0 raw, 1 zstd),
//! `u32` little-endian stored length, then the stored bytes.
//!
//! - [`bitx_like`]: XOR of `new` and `base` bit patterns (ZipLLM/BitX),
//!   floats split into an exponent plane and sign+mantissa planes (the
//!   word rotated left by one bit), each plane zstd level 3.
//! - [`zipnn_like`]: the same split without a base (ZipNN), each plane
//!   zstd level 3, kept raw when zstd does not shrink it.

use super::streams::{malformed, zstd_append, zstd_decompress};
use super::transform::{self, Kind, Word};
use crate::CodecError;
use crate::lossless::with_scratch;
use tdelta_format::DType;

/// zstd level the baselines use.
pub const LEVEL: i32 = 3;

fn encode(dtype: DType, kind: Kind, new: &[u8], base: &[u8], keep_raw: bool) -> Vec<u8> {
    let mut word = Word::of(dtype);
    if !new.len().is_multiple_of(word.size()) {
        word = Word::Bytes;
    }
    let s = word.size();
    let n = new.len() / s;
    with_scratch(new.len(), |planes| {
        transform::split(word, kind, new, base, planes);
        let mut out = Vec::with_capacity(new.len() / 2 + 64);
        for p in 0..s {
            let plane = &planes[p * n..(p + 1) * n];
            let head = out.len();
            out.extend_from_slice(&[1, 0, 0, 0, 0]);
            if !zstd_append(plane, LEVEL, &mut out) {
                if keep_raw {
                    out[head] = 0;
                    out.extend_from_slice(plane);
                } else {
                    // Always zstd, even when it grows the plane.
                    let z = zstd::bulk::compress(plane, LEVEL).expect("zstd compress to a Vec");
                    out.extend_from_slice(&z);
                }
            }
            let len = (out.len() - head - 5) as u32;
            out[head + 1..head + 5].copy_from_slice(&len.to_le_bytes());
        }
        out
    })
}

fn decode(dtype: DType, kind: Kind, payload: &[u8], base: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
    const NAME: &str = "baseline";
    let mut word = Word::of(dtype);
    if !out.len().is_multiple_of(word.size()) {
        word = Word::Bytes;
    }
    if kind != Kind::Plain && base.len() != out.len() {
        return Err(CodecError::Base { codec: NAME, reason: "base of the wrong length".into() });
    }
    let s = word.size();
    let n = out.len() / s;
    with_scratch(out.len(), |planes| {
        let mut rest = payload;
        for p in 0..s {
            let Some((head, r)) = rest.split_at_checked(5) else {
                return Err(malformed(NAME, "truncated plane header".into()));
            };
            let len = u32::from_le_bytes(head[1..5].try_into().expect("4 bytes")) as usize;
            let Some((data, r)) = r.split_at_checked(len) else {
                return Err(malformed(NAME, "truncated plane".into()));
            };
            let dst = &mut planes[p * n..(p + 1) * n];
            match head[0] {
                0 if data.len() == n => dst.copy_from_slice(data),
                1 => zstd_decompress(NAME, data, dst)?,
                f => return Err(malformed(NAME, format!("bad plane flag {f} or length"))),
            }
            rest = r;
        }
        if !rest.is_empty() {
            return Err(malformed(NAME, "trailing bytes".into()));
        }
        transform::merge(word, kind, planes, base, out);
        Ok(())
    })
}

/// BitX-style delta: XOR with the base, byte planes, zstd-3 each.
/// `base` has the same length as `new`.
pub fn bitx_like(dtype: DType, new: &[u8], base: &[u8]) -> Vec<u8> {
    assert_eq!(new.len(), base.len(), "bitx_like: base of another length");
    encode(dtype, Kind::Xor, new, base, false)
}

/// Decodes a [`bitx_like`] payload into `out` (the raw block length).
pub fn bitx_like_decode(dtype: DType, payload: &[u8], base: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
    decode(dtype, Kind::Xor, payload, base, out)
}

/// ZipNN-style non-delta: byte planes (exponent apart), zstd-3 each, a
/// plane kept raw when zstd does not shrink it.
pub fn zipnn_like(dtype: DType, new: &[u8]) -> Vec<u8> {
    encode(dtype, Kind::Plain, new, &[], true)
}

/// Decodes a [`zipnn_like`] payload into `out` (the raw block length).
pub fn zipnn_like_decode(dtype: DType, payload: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
    decode(dtype, Kind::Plain, payload, &[], out)
}
