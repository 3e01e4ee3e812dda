use proptest::prelude::*;

use super::*;
use crate::lossless::encode_planes;
use crate::transform::{Kind, Word};

fn round_trip(dtype: DType, new: &[u8], base: Option<&[u8]>) -> Encoded {
    let e = encode(dtype, new, base, &EncodeParams::default());
    assert!(e.payload.len() <= new.len(), "{dtype}: payload larger than raw");
    let mut out = vec![0xA5u8; new.len()];
    decode(dtype, e.codec, &e.payload, base, &mut out)
        .unwrap_or_else(|err| panic!("{dtype} {}: {err}", e.codec.name()));
    assert!(out == new, "{dtype} {}: round trip differs", e.codec.name());
    e
}

/// Every plane/delta codec on its own, whatever `encode` would pick.
fn round_trip_all_codecs(dtype: DType, new: &[u8], base: &[u8]) {
    let word = Word::of(dtype);
    if !new.len().is_multiple_of(word.size()) {
        return;
    }
    for (codec, kind) in
        [(CodecId::Planes, Kind::Plain), (CodecId::XorPlanes, Kind::Xor), (CodecId::UlpPlanes, Kind::Sub)]
    {
        let payload = encode_planes(word, kind, new, base, &EncodeParams { level: 1, effort: 1 }, Vec::new());
        let mut out = vec![0u8; new.len()];
        decode(dtype, codec, &payload, Some(base), &mut out).unwrap();
        assert!(out == new, "{dtype} {}", codec.name());
    }
    let mut out = vec![0u8; new.len()];
    let b = baseline::bitx_like(dtype, new, base);
    baseline::bitx_like_decode(dtype, &b, base, &mut out).unwrap();
    assert!(out == new, "{dtype} bitx_like");
    let z = baseline::zipnn_like(dtype, new);
    baseline::zipnn_like_decode(dtype, &z, &mut out).unwrap();
    assert!(out == new, "{dtype} zipnn_like");
}

use crate::testutil::noise;

/// BF16 weights ~ N(0, 0.02) and a fine-tune moving most by a few ULPs.
fn bf16_pair(n: usize, seed: u64) -> (Vec<u8>, Vec<u8>) {
    let r = noise(seed, n * 8);
    let mut base = Vec::with_capacity(n * 2);
    let mut new = Vec::with_capacity(n * 2);
    for c in r.chunks_exact(8) {
        // Sum of uniforms: roughly normal.
        let s: f32 = c[..4].iter().map(|&b| f32::from(b) / 255.0 - 0.5).sum::<f32>() * 0.035;
        let b = half::bf16::from_f32(s).to_bits();
        let d: i16 = match c[4] % 10 {
            0..=5 => 0,
            6 | 7 => 1,
            8 => -1,
            _ => i16::from(c[5] % 7) - 3,
        };
        let nb = (b as i16).wrapping_add(d) as u16;
        base.extend_from_slice(&b.to_le_bytes());
        new.extend_from_slice(&nb.to_le_bytes());
    }
    (new, base)
}

#[test]
fn codec_ids_round_trip() {
    for c in CodecId::ALL {
        assert_eq!(CodecId::from_u8(*c as u8).unwrap(), *c);
        assert!(!c.name().is_empty());
    }
    assert!(CodecId::from_u8(200).is_err());
    assert!(CodecId::UlpPlanes.needs_base() && CodecId::XorPlanes.needs_base());
    assert!(!CodecId::Planes.needs_base());
}

#[test]
fn special_float_values_round_trip() {
    let f32s = [
        0.0f32,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::from_bits(0x7FC0_1234),
        f32::from_bits(0xFF80_0001),
        f32::MIN_POSITIVE / 3.0,
        -f32::MIN_POSITIVE / 7.0,
        f32::MAX,
        f32::MIN,
        1.0,
        -1.0,
    ];
    for dtype in DType::ALL {
        let size = dtype.align();
        // Build blocks from the bit patterns of the special values,
        // truncated/extended to the element size, in every pairing.
        let mut vals: Vec<u8> = Vec::new();
        for v in f32s {
            let b = v.to_bits();
            let w: u64 = match size {
                8 => f64::from(v).to_bits(),
                4 => u64::from(b),
                2 => u64::from(b >> 16),
                _ => u64::from(b >> 24),
            };
            vals.extend_from_slice(&w.to_le_bytes()[..size]);
        }
        let m = vals.len() / size;
        let mut new = Vec::new();
        let mut base = Vec::new();
        for i in 0..m {
            for j in 0..m {
                new.extend_from_slice(&vals[i * size..(i + 1) * size]);
                base.extend_from_slice(&vals[j * size..(j + 1) * size]);
            }
        }
        round_trip(dtype, &new, None);
        round_trip(dtype, &new, Some(&base));
        round_trip_all_codecs(dtype, &new, &base);
        // Sign flips only.
        let flipped: Vec<u8> = base
            .chunks(size)
            .flat_map(|c| {
                let mut c = c.to_vec();
                *c.last_mut().unwrap() ^= 0x80;
                c
            })
            .collect();
        round_trip(dtype, &flipped, Some(&base));
        round_trip_all_codecs(dtype, &flipped, &base);
    }
}

#[test]
fn every_16_bit_pattern_against_neighbours() {
    let new: Vec<u8> = (0..=u16::MAX).flat_map(|v| v.to_le_bytes()).collect();
    for shift in [1u16, 3, 0x8000, 0x7FFF, 0xFFFF] {
        let base: Vec<u8> = (0..=u16::MAX).flat_map(|v| v.wrapping_add(shift).to_le_bytes()).collect();
        for dtype in [DType::BF16, DType::F16, DType::I16, DType::U16] {
            round_trip(dtype, &new, Some(&base));
            round_trip_all_codecs(dtype, &new, &base);
        }
    }
}

#[test]
fn every_8_bit_pattern() {
    let new: Vec<u8> = (0..=255u8).collect();
    let base: Vec<u8> = (0..=255u8).rev().collect();
    for dtype in DType::ALL.into_iter().filter(|d| d.align() == 1) {
        round_trip(dtype, &new, Some(&base));
        round_trip_all_codecs(dtype, &new, &base);
    }
}

#[test]
fn realistic_bf16_compresses() {
    let (new, base) = bf16_pair(1 << 18, 7);
    let plain = round_trip(DType::BF16, &base, None);
    assert_eq!(plain.codec, CodecId::Planes);
    assert!(plain.payload.len() < base.len() * 7 / 10, "{}", plain.payload.len());
    let delta = round_trip(DType::BF16, &new, Some(&base));
    assert!(delta.codec.needs_base(), "{:?}", delta.codec);
    let bitx = baseline::bitx_like(DType::BF16, &new, &base);
    assert!(delta.payload.len() < bitx.len(), "{} vs bitx {}", delta.payload.len(), bitx.len());
}

#[test]
fn lengths_not_whole_elements_and_empty() {
    for dtype in DType::ALL {
        for len in [0usize, 1, 3, 5, 7, 9, 1001] {
            let new = noise(len as u64, len);
            let base = noise(len as u64 + 1, len);
            round_trip(dtype, &new, None);
            round_trip(dtype, &new, Some(&base));
        }
    }
}

#[test]
fn garbage_and_truncated_payloads_are_errors() {
    let (new, base) = bf16_pair(4096, 3);
    for dtype in [DType::BF16, DType::F32, DType::U8, DType::F4] {
        for b in [None, Some(&base[..])] {
            let e = encode(dtype, &new, b, &EncodeParams::default());
            let mut out = vec![0u8; new.len()];
            for cut in [0, 1, 5, e.payload.len() / 2, e.payload.len() - 1] {
                assert!(decode(dtype, e.codec, &e.payload[..cut], b, &mut out).is_err(), "cut {cut}");
            }
            // Wrong output length.
            let mut short = vec![0u8; new.len() - 2];
            assert!(decode(dtype, e.codec, &e.payload, b, &mut short).is_err());
        }
    }
    // Delta codecs without, or with a wrong, base.
    let e = encode(DType::BF16, &new, Some(&base), &EncodeParams::default());
    let mut out = vec![0u8; new.len()];
    assert!(decode(DType::BF16, e.codec, &e.payload, None, &mut out).is_err());
    assert!(decode(DType::BF16, e.codec, &e.payload, Some(&base[2..]), &mut out).is_err());
}

#[test]
fn lying_stream_headers_are_errors() {
    let mut out = vec![0u8; 1 << 16];
    // Two streams claiming huge raw lengths, stored as constants.
    let mut p = vec![2u8];
    for _ in 0..2 {
        p.push(2);
        p.extend_from_slice(&u32::MAX.to_le_bytes());
        p.extend_from_slice(&1u32.to_le_bytes());
    }
    p.extend_from_slice(&[0, 0]);
    assert!(decode(DType::BF16, CodecId::Planes, &p, None, &mut out).is_err());
    // A zstd frame that decodes to more than the plane.
    let z = zstd::bulk::compress(&vec![7u8; 1 << 20], 1).unwrap();
    let mut p = vec![2u8];
    for len in [z.len(), 1] {
        p.push(if len == 1 { 2 } else { 1 });
        p.extend_from_slice(&(1u32 << 15).to_le_bytes());
        p.extend_from_slice(&(len as u32).to_le_bytes());
    }
    p.extend_from_slice(&z);
    p.push(0);
    assert!(decode(DType::BF16, CodecId::Planes, &p, None, &mut out).is_err());
}

fn any_dtype() -> impl Strategy<Value = DType> {
    proptest::sample::select(DType::ALL.to_vec())
}

proptest! {
    #[test]
    fn arbitrary_bytes_round_trip(dtype in any_dtype(), new in proptest::collection::vec(any::<u8>(), 0..3000), seed in any::<u64>()) {
        let base = noise(seed, new.len());
        round_trip(dtype, &new, None);
        round_trip(dtype, &new, Some(&base));
        round_trip_all_codecs(dtype, &new, &base);
    }

    #[test]
    fn near_base_round_trip(dtype in any_dtype(), base in proptest::collection::vec(any::<u8>(), 0..3000), seed in any::<u64>()) {
        // A few bytes of the base changed, low bits mostly.
        let r = noise(seed, base.len());
        let new: Vec<u8> = base.iter().zip(&r).map(|(&b, &x)| if x < 40 { b ^ (x & 7) } else if x == 255 { b ^ 0x80 } else { b }).collect();
        round_trip(dtype, &new, Some(&base));
        round_trip_all_codecs(dtype, &new, &base);
    }

    #[test]
    fn garbage_never_panics(codec in 0u8..8, dtype in any_dtype(), len in 0usize..5000, payload in proptest::collection::vec(any::<u8>(), 0..400), seed in any::<u64>()) {
        let base = noise(seed, len);
        let mut out = vec![0u8; len];
        if let Ok(c) = CodecId::from_u8(codec) {
            let _ = decode(dtype, c, &payload, Some(&base), &mut out);
            let _ = decode(dtype, c, &payload, None, &mut out);
        }
        let _ = baseline::bitx_like_decode(dtype, &payload, &base, &mut out);
        let _ = baseline::zipnn_like_decode(dtype, &payload, &mut out);
    }

    #[test]
    fn mutated_payloads_never_panic(seed in any::<u64>(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
        let (new, base) = bf16_pair(2048, seed);
        for b in [None, Some(&base[..])] {
            let e = encode(DType::BF16, &new, b, &EncodeParams::default());
            let mut p = e.payload.clone();
            for (i, x) in &flips {
                let i = i % p.len();
                p[i] ^= x | 1;
            }
            let mut out = vec![0u8; new.len()];
            let _ = decode(DType::BF16, e.codec, &p, Some(&base), &mut out);
        }
    }
}

/// The SIMD rANS decoder (when the CPU has it) and the scalar one decode
/// every stream the same, including truncated and mutated ones.
#[test]
fn simd_and_scalar_rans_agree() {
    let (new, base) = bf16_pair(50_000, 11);
    for params in [EncodeParams::default(), EncodeParams { level: 3, effort: 1 }] {
        for b in [None, Some(&base[..])] {
            let src = if b.is_some() { &new } else { &base };
            let e = encode(DType::BF16, src, b, &params);
            let mut payloads = vec![e.payload.clone()];
            for k in [7usize, 100, 1000, 5000] {
                let mut p = e.payload.clone();
                let i = (k * 7919) % p.len();
                p[i] ^= 0x5A;
                payloads.push(p);
                payloads.push(e.payload[..e.payload.len().saturating_sub(k)].to_vec());
            }
            for (n, p) in payloads.iter().enumerate() {
                let mut got = [vec![0u8; src.len()], vec![0u8; src.len()]];
                let mut res = Vec::new();
                for (simd, out) in [true, false].into_iter().zip(got.iter_mut()) {
                    rans::SIMD.with(|s| s.set(simd));
                    res.push(decode(DType::BF16, e.codec, p, b, out).is_ok());
                }
                rans::SIMD.with(|s| s.set(true));
                assert_eq!(res[0], res[1], "payload {n}");
                // What an error leaves in `out` is unspecified.
                assert!(!res[0] || got[0] == got[1], "payload {n}: outputs differ");
                if n == 0 {
                    assert!(res[0] && got[0] == *src);
                }
            }
        }
    }
}

/// A stream and its contexts for the rANS encoder tests: `kind` picks
/// flat, skewed, near-constant, many-rare-symbol, constant and mostly-zero
/// data, with no contexts, one context, a few, or more than `MAX_CTX`.
fn rans_case(seed: u64, len: usize, kind: u8) -> (Vec<u8>, Option<Vec<u8>>) {
    let r = noise(seed, 2 * len);
    let (a, b) = r.split_at(len);
    let skew = |x: u8, y: u8| (u16::from(x) << 8 | u16::from(y)).leading_zeros() as u8 * 3 + (y & 1);
    match kind {
        // Flat.
        0 => (a.to_vec(), None),
        // Skewed, no contexts.
        1 => (a.iter().zip(b).map(|(&x, &y)| skew(x, y)).collect(), None),
        // Skewed, how much depending on one of 40 contexts.
        2 => {
            let c: Vec<u8> = b.iter().map(|&y| y % 40 + 100).collect();
            let d = a.iter().zip(&c).map(|(&x, &k)| if x % 40 < k - 100 { x } else { x & 3 }).collect();
            (d, Some(c))
        }
        // One context.
        3 => (a.iter().zip(b).map(|(&x, &y)| skew(x, y)).collect(), Some(vec![9; len])),
        // One symbol nearly always (f near SCALE), the others rare (f 1).
        4 => {
            let c: Vec<u8> = b.iter().map(|&y| y >> 6).collect();
            (a.iter().zip(b).map(|(&x, &y)| if x == 0 && y & 3 == 0 { y } else { 7 }).collect(), Some(c))
        }
        // Every symbol present, one dominant.
        5 => (a.iter().zip(b).map(|(&x, &y)| if y < 200 { 0 } else { x }).collect(), None),
        // Constant (f == SCALE).
        6 => (vec![0x5A; len], None),
        // A constant per context, in three contexts.
        7 => {
            let c: Vec<u8> = b.iter().map(|&y| y % 3).collect();
            (c.iter().map(|&k| k * 50).collect(), Some(c))
        }
        // A delta's high plane: zero but for about one in 200, in 12
        // contexts (whole groups of zeros, and groups with a few others).
        _ => {
            let c: Vec<u8> = b.iter().map(|&y| y % 12 + 110).collect();
            (a.iter().zip(b).map(|(&x, &y)| if x == 0 && y < 128 { y | 1 } else { 0 }).collect(), Some(c))
        }
    }
}

/// Fits a model of `model_of` and encodes `data` with it, with the current
/// encoder (SIMD on and off) and the reference (the encoder as it was):
/// both must give the same bytes, and the result decode to `data` when the
/// model is of `data`.
fn rans_check(data: &[u8], ctx: Option<&[u8]>, model_of: &[u8]) {
    let m = rans::model(model_of, ctx);
    let mut want = Vec::new();
    let ok = m.encode_reference(data, ctx, usize::MAX, &mut want);
    for simd in [true, false] {
        rans::SIMD.with(|s| s.set(simd));
        let mut got = vec![1, 2, 3];
        assert_eq!(m.encode(data, ctx, usize::MAX, &mut got), ok);
        assert_eq!(&got[..3], &[1, 2, 3]);
        assert!(got[3..] == want[..], "simd {simd}, {} bytes: encoders differ", data.len());
        if data.as_ptr() == model_of.as_ptr() {
            let mut out = vec![0u8; data.len()];
            rans::decode("test", &got[3..], ctx, &mut out).unwrap();
            assert!(out == data, "simd {simd}: round trip differs");
        }
    }
    rans::SIMD.with(|s| s.set(true));
}

/// The rANS encoder (its AVX-512 path when the CPU has it, and its scalar
/// path) writes exactly the bytes the reference encoder writes.
#[test]
fn rans_encoder_matches_reference() {
    let sizes = [1usize, 2, 31, 32, 33, 63, 64, 65, 100, 1000, 4097, 20_000, 70_001, 262_147];
    let mut seed = 0u64;
    for &len in &sizes {
        for kind in 0..9 {
            for _ in 0..if len < 5000 { 4 } else { 1 } {
                seed += 1;
                let (d, c) = rans_case(seed, len, kind);
                rans_check(&d, c.as_deref(), &d);
            }
        }
    }
}

/// Symbols a table does not have (not something a fitted model is asked
/// to code) still give the same bytes on every path.
#[test]
fn rans_encoder_matches_reference_off_model() {
    for (seed, len) in [(1u64, 33usize), (2, 1000), (3, 70_001)] {
        let (d, c) = rans_case(seed, len, 2);
        let (fit, _) = rans_case(seed, len, 4);
        rans_check(&d, c.as_deref(), &fit);
    }
}

proptest! {
    #[test]
    fn rans_encoder_matches_reference_arbitrary(
        data in proptest::collection::vec(any::<u8>(), 1..3000),
        ctx_seed in any::<u64>(),
        nctx in 0u8..40,
        shift in 0u32..8,
    ) {
        // Symbols skewed by `shift`, contexts from `nctx` values (0: none).
        let data: Vec<u8> = data.iter().map(|&b| b >> shift).collect();
        let ctx: Option<Vec<u8>> = (nctx > 0).then(|| noise(ctx_seed, data.len()).iter().map(|&b| b % nctx).collect());
        rans_check(&data, ctx.as_deref(), &data);
    }
}

proptest! {
    /// The one-pass models of two planes are the models of each plane.
    #[test]
    fn a_model_pair_is_the_two_models(
        a in proptest::collection::vec(any::<u8>(), 0..3000),
        seed in any::<u8>(),
        skew in 0u8..4,
    ) {
        // The second plane: mostly one symbol (a delta's high plane) or not.
        let b: Vec<u8> = a.iter().map(|&x| if x % 4 < skew { 0 } else { x ^ seed }).collect();
        // Few contexts, some with more than a table's minimum.
        let big: Vec<u8> = a.iter().cycle().take(a.len() * 9).copied().collect();
        let bb: Vec<u8> = b.iter().cycle().take(b.len() * 9).copied().collect();
        for (a, b) in [(&a, &b), (&big, &bb)] {
            let ctx: Vec<u8> = a.iter().zip(b.iter()).map(|(&x, &y)| (x ^ y) % 5 + 120).collect();
            let [ma, mb] = rans::model_pair(a, b, &ctx);
            for (m, d) in [(ma, a), (mb, b)] {
                let one = rans::model(d, Some(&ctx));
                let (mut x, mut y) = (Vec::new(), Vec::new());
                prop_assert_eq!(m.encode(d, Some(&ctx), usize::MAX, &mut x), one.encode(d, Some(&ctx), usize::MAX, &mut y));
                prop_assert_eq!(x, y);
                prop_assert_eq!((m.est, m.top, m.top_share), (one.est, one.top, one.top_share));
            }
        }
    }
}

/// The AVX2 merge (when the CPU has it) and the portable one invert every
/// split alike: every word size and kind, odd lengths of words.
#[cfg(target_arch = "x86_64")]
#[test]
fn avx2_and_portable_merge_agree() {
    for (word, len) in
        [(Word::Float(2), 2 * 1037), (Word::Float(4), 4 * 301), (Word::Int(8), 8 * 77), (Word::Bytes, 999)]
    {
        let new = crate::testutil::noise(len as u64, len);
        let base = crate::testutil::noise(len as u64 + 1, len);
        for kind in [Kind::Plain, Kind::Xor, Kind::Sub] {
            let mut planes = vec![0u8; len];
            transform::split(word, kind, &new, &base, &mut planes);
            let mut got = [vec![0u8; len], vec![0u8; len]];
            for (avx2, out) in [true, false].into_iter().zip(got.iter_mut()) {
                transform::AVX2.with(|c| c.set(avx2));
                transform::merge(word, kind, &planes, &base, out);
            }
            transform::AVX2.with(|c| c.set(true));
            assert!(got[0] == new, "{word:?} {kind:?}: avx2 merge");
            assert!(got[1] == new, "{word:?} {kind:?}: portable merge");
        }
    }
}

/// Two streams decoded together give what two decodes give, the SIMD
/// pair path against the scalar decoder: every length around the group
/// size, both with and without contexts, and with either stream mutated
/// or truncated (the same error; the same bytes when both decode).
#[test]
fn a_pair_of_rans_streams_decodes_as_two_decodes() {
    for (seed, len) in [(1u64, 1usize), (2, 31), (3, 32), (4, 33), (5, 100), (6, 4097), (7, 70_001)] {
        let (a, c) = rans_case(seed, len, 2);
        let (b, _) = rans_case(seed + 100, len, 1);
        for ctx in [c.as_deref(), None] {
            let enc = |d: &[u8]| {
                let mut v = Vec::new();
                assert!(rans::model(d, ctx).encode(d, ctx, usize::MAX, &mut v));
                v
            };
            let (ea, eb) = (enc(&a), enc(&b));
            let mut cases = vec![(ea.clone(), eb.clone())];
            for k in [5usize, 40, 300] {
                let mut m = ea.clone();
                let i = (k * 7919) % m.len();
                m[i] ^= 0x5A;
                cases.push((m, eb.clone()));
                cases.push((ea.clone(), eb[..eb.len().saturating_sub(k)].to_vec()));
            }
            for (n, (pa, pb)) in cases.iter().enumerate() {
                let (mut pair, mut one) = ([vec![7u8; len], vec![7u8; len]], [vec![7u8; len], vec![7u8; len]]);
                let [x, y] = &mut pair;
                let got = rans::decode_pair("test", [pa, pb], ctx, [x, y]).map_err(|e| e.to_string());
                rans::SIMD.with(|s| s.set(false));
                let [x, y] = &mut one;
                let want = rans::decode("test", pa, ctx, x)
                    .and_then(|()| rans::decode("test", pb, ctx, y))
                    .map_err(|e| e.to_string());
                rans::SIMD.with(|s| s.set(true));
                assert_eq!(got, want, "len {len} case {n}");
                assert!(got.is_err() || pair == one, "len {len} case {n}: outputs differ");
                if n == 0 {
                    assert!(got.is_ok() && pair[0] == a && pair[1] == b, "len {len}: round trip");
                }
            }
        }
    }
}

#[test]
fn encoding_into_a_used_buffer_gives_the_same_payload() {
    let (base, new) = bf16_pair(1 << 15, 7);
    let params = EncodeParams::default();
    let noise_block = noise(9, 4096);
    // A delta, a block on its own (planes), bytes (zstd) and noise (raw).
    let cases = [
        (DType::BF16, &new[..], Some(&base[..])),
        (DType::BF16, &new[..], None),
        (DType::U8, &new[..], None),
        (DType::U8, &noise_block[..], None),
    ];
    for (dtype, block, base) in cases {
        let want = encode(dtype, block, base, &params);
        let used = vec![0xAB; 3 * block.len()];
        let got = encode_into(dtype, block, base, &params, used);
        assert_eq!(got, want, "{dtype:?} base {}", base.is_some());
    }
    assert_eq!(encode(DType::U8, &noise_block, None, &params).codec, CodecId::Raw);
}
