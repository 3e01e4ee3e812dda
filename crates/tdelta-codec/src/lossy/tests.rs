//! Tests of the lossy codec.

use proptest::prelude::*;

use super::*;

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn bf16_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| bf16_bits(*x).to_le_bytes()).collect()
}

fn roundtrip(dtype: DType, new: &[u8], base: &[u8], bits: Bits, group: u32) -> Quantized {
    let q = encode(dtype, new, base, bits, group, 3).expect("quantizable");
    let mut out = vec![0u8; new.len()];
    decode(dtype, &q.payload, base, &mut out).unwrap();
    assert!(out == q.recon, "decode(encode) differs from the reconstruction");
    assert_eq!(q.error, measure(dtype, new, &out, Some(base)));
    q
}

#[test]
fn glob_matches_stars() {
    assert!(glob("*norm*", "model.layers.0.input_layernorm.weight"));
    assert!(glob("*.bias", "a.q_proj.bias"));
    assert!(!glob("*.bias", "a.q_proj.bias.x"));
    assert!(glob("lm_head.weight", "lm_head.weight"));
    assert!(!glob("lm_head", "lm_head.weight"));
    assert!(glob("*", ""));
    assert!(glob("a*b*c", "axxbyyc"));
    assert!(!glob("a*b*c", "axxbyy"));
}

#[test]
fn bits_parse_and_print() {
    for b in [Bits::Int2, Bits::Int4, Bits::Int8] {
        assert_eq!(b.to_string().parse::<Bits>().unwrap(), b);
    }
    assert!("int3".parse::<Bits>().is_err());
}

#[test]
fn unsupported_and_non_finite_blocks_are_refused() {
    let base = f32_bytes(&[1.0, 2.0]);
    assert!(encode(DType::I32, &base, &base, Bits::Int8, 64, 3).is_none());
    assert!(encode(DType::F32, &f32_bytes(&[1.0, f32::NAN]), &base, Bits::Int8, 64, 3).is_none());
    assert!(encode(DType::F32, &base, &f32_bytes(&[f32::INFINITY, 1.0]), Bits::Int8, 64, 3).is_none());
}

#[test]
fn unchanged_elements_keep_their_exact_bits() {
    // -0.0 and subnormals in the base survive when their delta is zero.
    let base = f32_bytes(&[-0.0, 1e-40, 1.0, 2.0]);
    let new = f32_bytes(&[-0.0, 1e-40, 1.5, 2.0]);
    let q = roundtrip(DType::F32, &new, &base, Bits::Int4, 4);
    assert_eq!(&q.recon[..8], &base[..8]);
}

#[test]
fn malformed_payloads_are_errors() {
    let base = f32_bytes(&[1.0; 100]);
    let new = f32_bytes(&(0..100).map(|i| 1.0 + i as f32 * 1e-3).collect::<Vec<_>>());
    let q = encode(DType::F32, &new, &base, Bits::Int4, 16, 3).unwrap();
    let mut out = vec![0u8; new.len()];
    for cut in 0..q.payload.len() {
        assert!(decode(DType::F32, &q.payload[..cut], &base, &mut out).is_err(), "cut {cut}");
    }
    let mut long = q.payload.clone();
    long.push(0);
    assert!(decode(DType::F32, &long, &base, &mut out).is_err());
    let mut bad = q.payload.clone();
    bad[0] = 3;
    assert!(decode(DType::F32, &bad, &base, &mut out).is_err());
    assert!(decode(DType::I32, &q.payload, &base, &mut out).is_err());
}

#[test]
fn wider_codes_give_smaller_errors() {
    let base: Vec<f32> = (0..4096).map(|i| ((i * 7919) % 1000) as f32 * 1e-4 - 0.05).collect();
    let new: Vec<f32> = base.iter().enumerate().map(|(i, b)| b + ((i * 104_729) % 201) as f32 * 1e-6 - 1e-4).collect();
    let (nb, bb) = (f32_bytes(&new), f32_bytes(&base));
    let e: Vec<f64> = [Bits::Int2, Bits::Int4, Bits::Int8]
        .iter()
        .map(|&b| roundtrip(DType::F32, &nb, &bb, b, 64).error.delta_rel_l2())
        .collect();
    assert!(e[0] > e[1] && e[1] > e[2], "{e:?}");
    assert!(e[2] < 0.01, "{e:?}");
}

proptest! {
    #[test]
    fn decode_of_encode_is_the_reconstruction(
        base in prop::collection::vec(-2.0f32..2.0, 1..300),
        scale in 1e-6f32..1e-1,
        seed in any::<u64>(),
        bits in prop::sample::select(vec![Bits::Int2, Bits::Int4, Bits::Int8]),
        group in 1u32..200,
        bf16 in any::<bool>(),
    ) {
        let mut x = seed | 1;
        let new: Vec<f32> = base.iter().map(|b| {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            let u = (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            // A quarter of the elements do not change.
            if x & 3 == 0 { *b } else { b + u * scale }
        }).collect();
        let (dtype, nb, bb) = if bf16 {
            (DType::BF16, bf16_bytes(&new), bf16_bytes(&base))
        } else {
            (DType::F32, f32_bytes(&new), f32_bytes(&base))
        };
        let q = roundtrip(dtype, &nb, &bb, bits, group);
        prop_assert!(q.error.err_sq.is_finite());
        // Elements whose delta is zero come back exactly.
        let es = if bf16 { 2 } else { 4 };
        for i in 0..base.len() {
            if nb[i * es..(i + 1) * es] == bb[i * es..(i + 1) * es] {
                prop_assert_eq!(&q.recon[i * es..(i + 1) * es], &nb[i * es..(i + 1) * es]);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Codec 17, `quant-ec`.

fn f16_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| half::f16::from_f32(*x).to_bits().to_le_bytes()).collect()
}

/// Deterministic near-Gaussian draws (sum of four uniforms).
fn gauss(seed: u64, n: usize) -> Vec<f32> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            let mut s = 0f32;
            for _ in 0..4 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                s += (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            }
            s * 1.732
        })
        .collect()
}

fn ec_roundtrip(dtype: DType, new: &[u8], base: &[u8], bits: Bits, group: u32, target: f64) -> Quantized {
    let q = ec::encode(dtype, new, base, bits, group, target, false).expect("quantizable");
    let mut out = vec![0u8; new.len()];
    ec::decode(dtype, &q.payload, base, &mut out).unwrap();
    assert!(out == q.recon, "decode(encode) differs from the reconstruction");
    assert_eq!(q.error, measure(dtype, new, &out, Some(base)));
    q
}

/// A weight-like pair: base ~ N(0, 0.02), delta ~ N(0, 1e-4) with a
/// per-row scale.
fn pair(seed: u64, n: usize) -> (Vec<f32>, Vec<f32>) {
    let base: Vec<f32> = gauss(seed, n).iter().map(|x| x * 0.02).collect();
    let d = gauss(seed ^ 0x5555, n);
    let new = base.iter().zip(&d).enumerate().map(|(i, (b, x))| b + x * 1e-4 * (1.0 + (i / 512 % 3) as f32)).collect();
    (new, base)
}

#[test]
fn ec_meets_its_target_with_the_coarsest_step() {
    let (new, base) = pair(1, 1 << 16);
    let (nb, bb) = (f32_bytes(&new), f32_bytes(&base));
    for (bits, target) in
        [(Bits::Int8, 0.01), (Bits::Int8, 0.008), (Bits::Int4, 0.1), (Bits::Int8, 0.1), (Bits::Int2, 0.45)]
    {
        let q = ec_roundtrip(DType::F32, &nb, &bb, bits, 64, target);
        let e = q.error.delta_rel_l2();
        assert!(e <= target, "{bits} {target}: {e}");
        // Coarsest: most of the error budget is used.
        assert!(e >= 0.9 * target, "{bits} {target}: {e}");
        let strict = ec::encode(DType::F32, &nb, &bb, bits, 64, target, true).unwrap();
        assert!(strict.error.err_sq <= target * target * strict.error.delta_sq);
    }
}

#[test]
fn ec_is_smaller_than_quant_at_the_same_error() {
    let (new, base) = pair(2, 1 << 16);
    let (nb, bb) = (f32_bytes(&new), f32_bytes(&base));
    // (int8's own codes cannot go much below the error of absmax int8
    // codes: compare at that error with int8 codes.)
    for bits in [Bits::Int4, Bits::Int2] {
        let old = roundtrip(DType::F32, &nb, &bb, bits, 64);
        let target = old.error.delta_rel_l2();
        let q = ec_roundtrip(DType::F32, &nb, &bb, Bits::Int8, 64, target);
        assert!(q.error.delta_rel_l2() <= target);
        assert!(q.payload.len() < old.payload.len(), "{bits}: {} vs {}", q.payload.len(), old.payload.len());
    }
}

#[test]
fn ec_unchanged_blocks_and_elements_stay_exact() {
    let base = f32_bytes(&[-0.0, 1e-40, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let new = f32_bytes(&[-0.0, 1e-40, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let q = ec_roundtrip(DType::F32, &new, &base, Bits::Int4, 4, 0.01);
    assert_eq!(&q.recon[..8], &base[..8]);
    // No change at all: every group of class 0, recon = base.
    let q = ec_roundtrip(DType::F32, &base, &base, Bits::Int8, 2, 0.01);
    assert_eq!(q.recon, base);
    assert_eq!(q.error.err_sq, 0.0);
}

#[test]
fn ec_refuses_what_it_cannot_quantize() {
    let base = f32_bytes(&[1.0, 2.0]);
    assert!(ec::encode(DType::I32, &base, &base, Bits::Int8, 64, 0.01, false).is_none());
    assert!(ec::encode(DType::F32, &f32_bytes(&[1.0, f32::NAN]), &base, Bits::Int8, 64, 0.01, false).is_none());
    assert!(ec::encode(DType::F32, &base, &f32_bytes(&[f32::INFINITY, 1.0]), Bits::Int8, 64, 0.01, false).is_none());
    assert!(ec::encode(DType::F32, &base, &base, Bits::Int8, 0, 0.01, false).is_none());
    assert!(ec::encode(DType::F32, &base, &base, Bits::Int8, 64, 0.0, false).is_none());
    // Ternary codes cannot reach 0.1%: strict refuses, non-strict gives
    // its best.
    let (new, b) = pair(3, 4096);
    let (nb, bb) = (f32_bytes(&new), f32_bytes(&b));
    assert!(ec::encode(DType::F32, &nb, &bb, Bits::Int2, 64, 0.001, true).is_none());
    assert!(ec::encode(DType::F32, &nb, &bb, Bits::Int2, 64, 0.001, false).is_some());
}

#[test]
fn ec_malformed_payloads_are_errors() {
    let (new, base) = pair(4, 3000);
    let (nb, bb) = (f32_bytes(&new), f32_bytes(&base));
    let q = ec::encode(DType::F32, &nb, &bb, Bits::Int4, 16, 0.1, false).unwrap();
    let mut out = vec![0u8; nb.len()];
    ec::decode(DType::F32, &q.payload, &bb, &mut out).unwrap();
    for cut in 0..q.payload.len() {
        assert!(ec::decode(DType::F32, &q.payload[..cut], &bb, &mut out).is_err(), "cut {cut}");
    }
    let mut long = q.payload.clone();
    long.push(0);
    assert!(ec::decode(DType::F32, &long, &bb, &mut out).is_err());
    for (at, v) in [(0, 3u8), (1, 1), (2, 0), (3, 1)] {
        let mut bad = q.payload.clone();
        bad[at] = v;
        assert!(ec::decode(DType::F32, &bad, &bb, &mut out).is_err(), "byte {at} = {v}");
    }
    // Non-finite or non-positive steps.
    for step in [f32::NAN, f32::INFINITY, 0.0, -1.0] {
        let mut bad = q.payload.clone();
        bad[4..8].copy_from_slice(&step.to_bits().to_le_bytes());
        assert!(ec::decode(DType::F32, &bad, &bb, &mut out).is_err(), "{step}");
    }
    // A step that overflows with the group exponent.
    let mut big = vec![8u8, 0, 1, 0];
    big.extend_from_slice(&f32::MAX.to_bits().to_le_bytes());
    big.extend_from_slice(&[0, 1, 0, 0, 0, 0xF1, 0, 1, 0, 0, 0, 2]);
    let mut o4 = [0u8; 4];
    assert!(ec::decode(DType::F32, &big, &[0; 4], &mut o4).is_err());
    // A code out of range for the width (int2: zigzag codes up to 2).
    let mut c3 = vec![2u8, 0, 1, 0];
    c3.extend_from_slice(&1f32.to_bits().to_le_bytes());
    c3.extend_from_slice(&[0, 1, 0, 0, 0, 0x01, 0, 1, 0, 0, 0, 3]);
    assert!(ec::decode(DType::F32, &c3, &[0; 4], &mut o4).is_err());
    *c3.last_mut().unwrap() = 2;
    ec::decode(DType::F32, &c3, &[0; 4], &mut o4).unwrap();
    assert_eq!(f32::from_le_bytes(o4), 1.0);
    assert!(ec::decode(DType::I32, &q.payload, &bb, &mut out).is_err());
    assert!(ec::decode(DType::F32, &q.payload, &bb[4..], &mut out[4..]).is_err());
}

proptest! {
    #[test]
    fn ec_decode_of_encode_is_the_reconstruction(
        base in prop::collection::vec(-2.0f32..2.0, 1..400),
        scale in 1e-6f32..1e-1,
        seed in any::<u64>(),
        bits in prop::sample::select(vec![Bits::Int2, Bits::Int4, Bits::Int8]),
        group in 1u32..200,
        dtype in prop::sample::select(vec![DType::F32, DType::BF16, DType::F16]),
        target in 0.001f64..0.6,
    ) {
        let mut x = seed | 1;
        let new: Vec<f32> = base.iter().map(|b| {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            let u = (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            // A quarter of the elements do not change.
            if x & 3 == 0 { *b } else { b + u * scale }
        }).collect();
        let conv = |v: &[f32]| match dtype {
            DType::F32 => f32_bytes(v),
            DType::BF16 => bf16_bytes(v),
            _ => f16_bytes(v),
        };
        let (nb, bb) = (conv(&new), conv(&base));
        let q = ec_roundtrip(dtype, &nb, &bb, bits, group, target);
        prop_assert!(q.error.err_sq.is_finite());
        let es = (dtype.bits() / 8) as usize;
        for i in 0..base.len() {
            if nb[i * es..(i + 1) * es] == bb[i * es..(i + 1) * es] {
                prop_assert_eq!(&q.recon[i * es..(i + 1) * es], &nb[i * es..(i + 1) * es]);
            }
        }
        // Strict: within the target, or refused.
        if let Some(s) = ec::encode(dtype, &nb, &bb, bits, group, target, true) {
            prop_assert!(s.error.err_sq <= target * target * s.error.delta_sq, "{} > {target}", s.error.delta_rel_l2());
        }
    }

    #[test]
    fn ec_garbage_is_refused_without_panicking(
        payload in prop::collection::vec(any::<u8>(), 0..300),
        n in 0usize..100,
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        from_valid in any::<bool>(),
    ) {
        let base = vec![0x3Fu8; 4 * n];
        let mut out = vec![0u8; 4 * n];
        let mut p = payload.clone();
        if from_valid && n > 0 {
            let (new, b) = pair(n as u64, n);
            let q = ec::encode(DType::F32, &f32_bytes(&new), &f32_bytes(&b), Bits::Int4, 8, 0.05, false).unwrap();
            p = q.payload;
            for (i, v) in &flips {
                let k = i.index(p.len());
                p[k] ^= v;
            }
            let _ = ec::decode(DType::F32, &p, &f32_bytes(&b), &mut out);
        } else {
            let _ = ec::decode(DType::F32, &p, &base, &mut out);
            let _ = ec::decode(DType::BF16, &p, &base, &mut out);
        }
    }
}

#[test]
fn ec_step_multipliers_are_the_nearest_f32_to_quarter_octaves() {
    for e in 0..16 {
        let exact = 2f64.powf(e as f64 / 4.0);
        let m = f64::from(ec::multiplier(e));
        let ulp = f64::from(f32::EPSILON) * m;
        assert!((m - exact).abs() <= ulp / 2.0, "{e}: {m} vs {exact}");
    }
}
