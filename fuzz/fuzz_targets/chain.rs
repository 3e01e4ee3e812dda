//! Fuzz target: a delta and its full block decoded in one pass
//! (`tdelta_codec::decode_over_full`), against the two decoded one after
//! the other, and the two payloads decoded as full blocks at once
//! (`tdelta_codec::decode_two_full`), against each alone: never a panic,
//! and the same bytes whenever the fused decode decodes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tdelta_codec::{CodecId, decode, decode_over_full, decode_two_full};
use tdelta_format::DType;

// The first bytes choose the dtype, the delta codec, the raw length (up
// to 64 KiB) and where the rest splits into the full block's payload and
// the delta's.
fuzz_target!(|data: &[u8]| {
    let [dtype, codec, l0, l1, s0, s1, rest @ ..] = data else { return };
    let Some(dtype) = DType::from_code(*dtype) else { return };
    let codec = if codec % 2 == 0 { CodecId::XorPlanes } else { CodecId::UlpPlanes };
    let raw_len = usize::from(*l0) | usize::from(*l1) << 8;
    let split = (usize::from(*s0) | usize::from(*s1) << 8).min(rest.len());
    let (root, delta) = rest.split_at(split);
    let mut out = vec![0u8; raw_len];
    if decode_over_full(dtype, CodecId::Planes, root, codec, delta, &mut out) {
        let mut base = vec![0u8; raw_len];
        decode(dtype, CodecId::Planes, root, None, &mut base).expect("one pass decoded the full block");
        let mut want = vec![0u8; raw_len];
        decode(dtype, codec, delta, Some(&base), &mut want).expect("one pass decoded the delta");
        assert!(out == want, "one pass and level by level differ");
    }
    let (mut a, mut b) = (vec![0u8; raw_len], vec![0u8; raw_len]);
    if decode_two_full(dtype, root, &mut a, delta, &mut b) {
        let mut want = vec![0u8; raw_len];
        decode(dtype, CodecId::Planes, root, None, &mut want).expect("at once decoded the first");
        assert!(a == want, "at once and alone differ (first)");
        decode(dtype, CodecId::Planes, delta, None, &mut want).expect("at once decoded the second");
        assert!(b == want, "at once and alone differ (second)");
    }
});
