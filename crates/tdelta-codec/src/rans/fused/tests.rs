//! Fused decodes against the usual path (whole planes, then a merge):
//! the same result and the same bytes for every 16-bit kind, on random,
//! realistic and adversarial blocks, intact, mutated and truncated.

use tdelta_format::DType;

use super::FUSED;
use crate::lossless::{EncodeParams, encode_planes};
use crate::rans::SIMD;
use crate::testutil::{Rng, noise};
use crate::transform::{Kind, Word};
use crate::{CodecId, decode};

/// The three 16-bit plane codecs.
const CODECS: [(CodecId, Kind); 3] =
    [(CodecId::Planes, Kind::Plain), (CodecId::XorPlanes, Kind::Xor), (CodecId::UlpPlanes, Kind::Sub)];

/// Decodes `payload` fused, unfused with the SIMD coder, and with the
/// scalar coder: the same result (error text included) from all three,
/// and the same bytes when it decodes. Returns the result and the bytes.
fn decode_three_ways(dtype: DType, codec: CodecId, payload: &[u8], base: &[u8], len: usize) -> (bool, Vec<u8>) {
    let mut outs = Vec::new();
    let mut results = Vec::new();
    for (fused, simd) in [(true, true), (false, true), (false, false)] {
        FUSED.with(|f| f.set(fused));
        SIMD.with(|s| s.set(simd));
        let mut out = vec![0xA5u8; len];
        results.push(decode(dtype, codec, payload, Some(base), &mut out).map_err(|e| e.to_string()));
        outs.push(out);
    }
    FUSED.with(|f| f.set(true));
    SIMD.with(|s| s.set(true));
    let what = format!("{dtype} {} {len} bytes", codec.name());
    assert_eq!(results[0], results[1], "{what}: fused vs unfused");
    assert_eq!(results[1], results[2], "{what}: unfused vs scalar");
    if results[0].is_ok() {
        assert!(outs[0] == outs[1], "{what}: fused output differs");
        assert!(outs[1] == outs[2], "{what}: scalar output differs");
    }
    (results[0].is_ok(), outs.swap_remove(0))
}

/// (new, base) blocks of `words` 16-bit words of one flavour: BF16-like
/// weights and a fine-tune of them, noise, a delta only in the first few
/// words (a high plane whose words end early), equal blocks, every
/// exponent at once, and NaN/inf/-0 patterns.
fn blocks(flavour: u8, words: usize, seed: u64) -> (Vec<u8>, Vec<u8>) {
    let mut r = Rng(seed | 1);
    let mut base = Vec::with_capacity(2 * words);
    let mut new = Vec::with_capacity(2 * words);
    for i in 0..words {
        let (b, n): (u16, u16) = match flavour {
            0 => {
                let b = half::bf16::from_f64(r.normal() * 0.02).to_bits();
                let d = [0i16, 0, 0, 1, -1, 2][(r.next() % 6) as usize];
                (b, b.wrapping_add_signed(d))
            }
            1 => (r.next() as u16, r.next() as u16),
            2 => {
                let b = half::bf16::from_f64(r.normal()).to_bits();
                (b, if i < 40 { b ^ (r.next() as u16) } else { b })
            }
            3 => {
                let b = r.next() as u16;
                (b, b)
            }
            4 => ((i as u16).wrapping_mul(0x0101), (i as u16).wrapping_mul(0x0080) ^ 0x8000),
            _ => {
                let special = [0x7F80u16, 0xFF80, 0x7FC1, 0x8000, 0x0000, 0x0001, 0xFFFF, 0x7F7F];
                (special[i % 8], special[(r.next() % 8) as usize])
            }
        };
        base.extend_from_slice(&b.to_le_bytes());
        new.extend_from_slice(&n.to_le_bytes());
    }
    (new, base)
}

/// Every 16-bit codec and word kind, lengths around the group size and
/// large ones, every flavour, both encoder efforts: fused decodes give the
/// usual path's bytes, and the block back where the dtype is the one
/// encoded. The payloads of float words are also decoded as integer words
/// (another transform and contexts, a rANS plane the encoder never makes
/// for them): the paths must still agree.
#[test]
fn fused_decodes_give_the_usual_bytes() {
    let lengths = [0usize, 1, 2, 31, 32, 33, 63, 64, 65, 95, 1000, 4097, 70_001];
    let mut seed = 0u64;
    for &words in &lengths {
        for flavour in 0..6 {
            seed += 1;
            let (new, base) = blocks(flavour, words, seed);
            for effort in [0u8, 1] {
                let params = EncodeParams { level: 1, effort };
                for (codec, kind) in CODECS {
                    for (dtype, word) in [(DType::BF16, Word::Float(2)), (DType::I16, Word::Int(2))] {
                        let payload = encode_planes(word, kind, &new, &base, &params, Vec::new());
                        let (ok, out) = decode_three_ways(dtype, codec, &payload, &base, new.len());
                        assert!(ok && out == new, "{dtype} {} {words} words flavour {flavour}", codec.name());
                        if word.is_float() {
                            for other in [DType::I16, DType::F16] {
                                decode_three_ways(other, codec, &payload, &base, new.len());
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Flipped bytes and truncations anywhere in a payload (headers, tables,
/// states, words, raw planes) give the usual path's error, or its bytes,
/// never a panic.
#[test]
fn damaged_payloads_fail_as_on_the_usual_path() {
    for (words, flavour) in [(33usize, 0u8), (1000, 0), (4097, 2), (20_000, 0), (20_000, 5)] {
        let (new, base) = blocks(flavour, words, words as u64);
        for (codec, kind) in CODECS {
            let payload =
                encode_planes(Word::Float(2), kind, &new, &base, &EncodeParams { level: 1, effort: 1 }, Vec::new());
            let mut errors = 0;
            let mut r = Rng(payload.len() as u64);
            for k in 0..60 {
                let mut p = payload.clone();
                let i = (r.next() % p.len() as u64) as usize;
                if k % 3 == 0 {
                    p.truncate(i);
                } else {
                    p[i] ^= 1 << (k % 8);
                }
                let (ok, _) = decode_three_ways(DType::BF16, codec, &p, &base, new.len());
                errors += usize::from(!ok);
            }
            // Some damage must be caught (truncations always are).
            assert!(errors >= 20, "{} {words}: {errors} errors", codec.name());
        }
    }
}

/// A payload whose planes' streams end before their symbols (the words
/// of a nearly constant plane run out) or are cut inside the last group:
/// random tails of payloads of every length around the group size.
#[test]
fn short_and_odd_length_blocks_agree() {
    for words in 0..=100usize {
        let (new, base) = blocks((words % 6) as u8, words, 7 + words as u64);
        for (codec, kind) in CODECS {
            let payload =
                encode_planes(Word::Float(2), kind, &new, &base, &EncodeParams { level: 1, effort: 1 }, Vec::new());
            let (ok, out) = decode_three_ways(DType::BF16, codec, &payload, &base, new.len());
            assert!(ok && out == new, "{} {words} words", codec.name());
            let cut = &payload[..payload.len() - 1 - (noise(words as u64, 1)[0] as usize % payload.len())];
            assert!(!decode_three_ways(DType::BF16, codec, cut, &base, new.len()).0 || cut.is_empty());
        }
    }
}

/// Copies of payloads `a` and `b`, damage `k` done to one of them (`a`
/// for even `k`): cut at a random byte every third time, else one bit
/// flipped there.
fn damage_one_of(a: &[u8], b: &[u8], k: usize, r: &mut Rng) -> (Vec<u8>, Vec<u8>) {
    let (mut a, mut b) = (a.to_vec(), b.to_vec());
    let p = if k.is_multiple_of(2) { &mut a } else { &mut b };
    let i = (r.next() % p.len() as u64) as usize;
    if k.is_multiple_of(3) {
        p.truncate(i);
    } else {
        p[i] ^= 1 << (k % 8);
    }
    (a, b)
}

/// A delta and its full block decoded in one pass (`decode_over_full`)
/// against the two decoded one after the other: the same bytes for every
/// length, flavour and delta codec, and the same verdict on damaged
/// payloads (either level's), never a panic.
#[test]
fn a_delta_over_its_full_block_decodes_in_one_pass_as_level_by_level() {
    use crate::{decode_over_full, decodes_over_full};
    let one_by_one = |dtype, root: &[u8], codec, delta: &[u8], len| -> Option<Vec<u8>> {
        let mut base = vec![0u8; len];
        decode(dtype, CodecId::Planes, root, None, &mut base).ok()?;
        let mut out = vec![0u8; len];
        decode(dtype, codec, delta, Some(&base), &mut out).ok()?;
        Some(out)
    };
    let mut seed = 100u64;
    let mut fused = 0;
    for &words in &[0usize, 1, 31, 32, 33, 64, 95, 1000, 4097, 70_001] {
        for flavour in 0..6 {
            seed += 1;
            let (new, base) = blocks(flavour, words, seed);
            for effort in [0u8, 1] {
                let params = EncodeParams { level: 1, effort };
                let root = encode_planes(Word::Float(2), Kind::Plain, &base, &[], &params, Vec::new());
                for (codec, kind) in CODECS[1..].iter().copied() {
                    let delta = encode_planes(Word::Float(2), kind, &new, &base, &params, Vec::new());
                    for dtype in [DType::BF16, DType::F16] {
                        let want = one_by_one(dtype, &root, codec, &delta, new.len());
                        if dtype == DType::BF16 {
                            assert!(want.as_deref() == Some(&new[..]), "{words} words flavour {flavour}");
                        }
                        let mut out = vec![0x5Au8; new.len()];
                        let done = decode_over_full(dtype, CodecId::Planes, &root, codec, &delta, &mut out);
                        assert_eq!(
                            done,
                            decodes_over_full(dtype, CodecId::Planes, codec),
                            "{dtype} {} {words} flavour {flavour} effort {effort}",
                            codec.name()
                        );
                        if done {
                            fused += 1;
                            assert!(Some(&out) == want.as_ref(), "{dtype} {} {words} flavour {flavour}", codec.name());
                        }
                    }
                }
            }
        }
    }
    if decodes_over_full(DType::BF16, CodecId::Planes, CodecId::UlpPlanes) {
        assert!(fused > 0);
    }
    // Damage in either payload: one pass fails where one by one fails,
    // and gives its bytes where it does not.
    for (words, flavour) in [(33usize, 0u8), (4097, 2), (20_000, 0), (20_000, 5)] {
        let (new, base) = blocks(flavour, words, 7 * words as u64);
        let params = EncodeParams { level: 1, effort: 1 };
        let root = encode_planes(Word::Float(2), Kind::Plain, &base, &[], &params, Vec::new());
        let delta = encode_planes(Word::Float(2), Kind::Sub, &new, &base, &params, Vec::new());
        let mut r = Rng(words as u64);
        for k in 0..80 {
            let (a, b) = damage_one_of(&root, &delta, k, &mut r);
            let want = one_by_one(DType::BF16, &a, CodecId::UlpPlanes, &b, new.len());
            let mut out = vec![0u8; new.len()];
            if decode_over_full(DType::BF16, CodecId::Planes, &a, CodecId::UlpPlanes, &b, &mut out) {
                assert!(
                    Some(&out) == want.as_ref(),
                    "{words} words, damage {k}: one pass decoded what one by one does not"
                );
            } else if decodes_over_full(DType::BF16, CodecId::Planes, CodecId::UlpPlanes) {
                assert!(want.is_none(), "{words} words, damage {k}: one pass failed where one by one decodes");
            }
        }
    }
}

/// The fuzz seeds of the `chain` target are a full block and a delta that
/// decode (so mutation starts from valid tables): both ways, the same.
#[test]
fn the_chain_fuzz_seeds_decode_both_ways() {
    use crate::{decode_over_full, decodes_over_full};
    for (name, codec) in [("planes-ulp-bf16-rans", CodecId::UlpPlanes), ("planes-xor-bf16-rans", CodecId::XorPlanes)] {
        let path = format!("{}/../../fuzz/corpus/chain/{name}", env!("CARGO_MANIFEST_DIR"));
        let seed = std::fs::read(&path).unwrap();
        let (len, split) =
            (usize::from(seed[2]) | usize::from(seed[3]) << 8, usize::from(seed[4]) | usize::from(seed[5]) << 8);
        let (root, delta) = seed[6..].split_at(split);
        let mut base = vec![0u8; len];
        decode(DType::BF16, CodecId::Planes, root, None, &mut base).unwrap();
        let mut want = vec![0u8; len];
        decode(DType::BF16, codec, delta, Some(&base), &mut want).unwrap();
        let mut out = vec![0u8; len];
        let done = decode_over_full(DType::BF16, CodecId::Planes, root, codec, delta, &mut out);
        assert_eq!(done, decodes_over_full(DType::BF16, CodecId::Planes, codec), "{name}");
        assert!(!done || out == want, "{name}");
    }
}

/// Two full blocks decoded at once (`decode_two_full`) against each
/// decoded alone: the same bytes for every length and flavour, false (no
/// panic) when either payload is damaged so that it does not decode.
#[test]
fn two_full_blocks_decode_at_once_as_one_by_one() {
    use crate::decode_two_full;
    let alone = |dtype, p: &[u8], len| -> Option<Vec<u8>> {
        let mut out = vec![0u8; len];
        decode(dtype, CodecId::Planes, p, None, &mut out).ok().map(|_| out)
    };
    let fused = crate::rans::fused::available();
    let mut seed = 300u64;
    for &words in &[0usize, 1, 31, 32, 33, 95, 1000, 4097, 70_001] {
        for flavour in 0..6 {
            seed += 1;
            let (a, b) = blocks(flavour, words, seed);
            let params = EncodeParams { level: 1, effort: (seed % 2) as u8 };
            let pa = encode_planes(Word::Float(2), Kind::Plain, &a, &[], &params, Vec::new());
            let pb = encode_planes(Word::Float(2), Kind::Plain, &b, &[], &params, Vec::new());
            for dtype in [DType::BF16, DType::F16] {
                let (mut oa, mut ob) = (vec![1u8; a.len()], vec![2u8; b.len()]);
                let done = decode_two_full(dtype, &pa, &mut oa, &pb, &mut ob);
                assert_eq!(done, fused, "{dtype} {words} words flavour {flavour}");
                if done {
                    assert!(Some(&oa) == alone(dtype, &pa, a.len()).as_ref(), "{dtype} {words} flavour {flavour}: a");
                    assert!(Some(&ob) == alone(dtype, &pb, b.len()).as_ref(), "{dtype} {words} flavour {flavour}: b");
                }
            }
        }
    }
    // Damage in either payload: at once fails where one alone fails, and
    // gives their bytes where both decode.
    for (words, flavour) in [(33usize, 0u8), (4097, 2), (20_000, 0), (20_000, 5)] {
        let (a, b) = blocks(flavour, words, 11 * words as u64);
        let params = EncodeParams { level: 1, effort: 1 };
        let pa = encode_planes(Word::Float(2), Kind::Plain, &a, &[], &params, Vec::new());
        let pb = encode_planes(Word::Float(2), Kind::Plain, &b, &[], &params, Vec::new());
        let mut r = Rng(words as u64 + 5);
        for k in 0..80 {
            let (x, y) = damage_one_of(&pa, &pb, k, &mut r);
            let want = (alone(DType::BF16, &x, a.len()), alone(DType::BF16, &y, b.len()));
            let (mut oa, mut ob) = (vec![0u8; a.len()], vec![0u8; b.len()]);
            if decode_two_full(DType::BF16, &x, &mut oa, &y, &mut ob) {
                assert!(want == (Some(oa), Some(ob)), "{words} words, damage {k}: at once decoded what alone does not");
            } else if fused {
                assert!(
                    want.0.is_none() || want.1.is_none(),
                    "{words} words, damage {k}: at once failed where alone decodes"
                );
            }
        }
    }
}
