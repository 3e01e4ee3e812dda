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
