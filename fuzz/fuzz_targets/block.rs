//! Fuzz target: block payload decoding (`tdelta_codec::decode`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tdelta_codec::{CodecId, decode};
use tdelta_format::DType;

// The first bytes choose codec, dtype and the raw length (capped at
// 1 MiB); the rest is split into base and payload.
fuzz_target!(|data: &[u8]| {
    let [codec, dtype, l0, l1, l2, rest @ ..] = data else { return };
    let Ok(codec) = CodecId::from_u8(*codec) else { return };
    let Some(dtype) = DType::from_code(*dtype) else { return };
    let raw_len = (usize::from(*l0) | usize::from(*l1) << 8 | usize::from(*l2) << 16) & 0xF_FFFF;
    let mut out = vec![0u8; raw_len];
    let base = rest.get(..raw_len).filter(|_| codec.needs_base());
    let payload = if base.is_some() { &rest[raw_len..] } else { rest };
    let _ = decode(dtype, codec, payload, base, &mut out);
});
