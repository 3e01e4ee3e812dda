//! Criterion benches of the block codecs: encode and decode throughput per
//! codec and dtype on generated weights (BF16 ~ N(0, 0.02); a fine-tune
//! moves ~60% of elements by 0 ULP and most others by 1..3 ULPs).
//!
//! `cargo bench -p tdelta-codec --bench codecs [-- FILTER]`

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tdelta_codec::{self as codec, EncodeParams, baseline};
use tdelta_format::DType;

const MIB: usize = 1 << 20;

#[path = "../crates/tdelta-codec/src/testutil.rs"]
mod testutil;
use testutil::Rng;

/// A fine-tune step in ULPs.
fn ulps(r: &mut Rng) -> i64 {
    let u = r.unit();
    if u < 0.6 {
        0
    } else if u < 0.9 {
        [1, -1][(r.next() & 1) as usize]
    } else {
        (r.next() % 7) as i64 - 3
    }
}

/// (new, base) blocks of `bytes` bytes of `dtype`.
fn pair(dtype: DType, bytes: usize) -> (Vec<u8>, Vec<u8>) {
    let mut r = Rng(0x9E37_79B9_7F4A_7C15);
    let mut base = Vec::with_capacity(bytes);
    let mut new = Vec::with_capacity(bytes);
    while base.len() < bytes {
        let x = r.normal() * 0.02;
        let d = ulps(&mut r);
        match dtype {
            DType::BF16 => {
                let b = half::bf16::from_f64(x).to_bits();
                base.extend_from_slice(&b.to_le_bytes());
                new.extend_from_slice(&(b as i64 + d).to_le_bytes()[..2]);
            }
            DType::F16 => {
                let b = half::f16::from_f64(x).to_bits();
                base.extend_from_slice(&b.to_le_bytes());
                new.extend_from_slice(&(b as i64 + d).to_le_bytes()[..2]);
            }
            DType::F32 => {
                let b = (x as f32).to_bits();
                base.extend_from_slice(&b.to_le_bytes());
                new.extend_from_slice(&(b as i64 + d * 65536).to_le_bytes()[..4]);
            }
            _ => {
                // Integers: small counts.
                let b = (r.next() % 1000) as u8;
                base.push(b);
                new.push(b.wrapping_add(d as u8));
            }
        }
    }
    (new, base)
}

fn bench(c: &mut Criterion) {
    let params = EncodeParams::default();
    let mut g = c.benchmark_group("codecs");
    g.sample_size(10).warm_up_time(std::time::Duration::from_millis(300));
    g.measurement_time(std::time::Duration::from_secs(1));
    for (dtype, size) in
        [(DType::BF16, MIB), (DType::BF16, 64 * 1024), (DType::F16, MIB), (DType::F32, MIB), (DType::U8, MIB)]
    {
        let (new, base) = pair(dtype, size);
        let label = |what: &str| format!("{}-{what}", dtype.name().to_lowercase());
        let sz = if size >= MIB { format!("{}MiB", size / MIB) } else { format!("{}KiB", size / 1024) };
        g.throughput(Throughput::Bytes(size as u64));
        let mut out = vec![0u8; size];

        let plain = codec::encode(dtype, &base, None, &params);
        g.bench_function(BenchmarkId::new("encode", format!("{}/{sz}", label("plain"))), |b| {
            b.iter(|| codec::encode(dtype, &base, None, &params))
        });
        g.bench_function(BenchmarkId::new("decode", format!("{}/{sz}", label("plain"))), |b| {
            b.iter(|| codec::decode(dtype, plain.codec, &plain.payload, None, &mut out).unwrap())
        });
        let delta = codec::encode(dtype, &new, Some(&base), &params);
        g.bench_function(BenchmarkId::new("encode", format!("{}/{sz}", label("delta"))), |b| {
            b.iter(|| codec::encode(dtype, &new, Some(&base), &params))
        });
        g.bench_function(BenchmarkId::new("decode", format!("{}/{sz}", label("delta"))), |b| {
            b.iter(|| codec::decode(dtype, delta.codec, &delta.payload, Some(&base), &mut out).unwrap())
        });
        if plain.codec == codec::CodecId::Planes && dtype.bits() == 16 {
            // Two full blocks: one after the other, and interleaved.
            let other = codec::encode(dtype, &new, None, &params);
            let mut out_b = vec![0u8; size];
            g.bench_function(BenchmarkId::new("decode", format!("{}/{sz}", label("two_full"))), |b| {
                b.iter(|| {
                    codec::decode(dtype, plain.codec, &plain.payload, None, &mut out).unwrap();
                    codec::decode(dtype, other.codec, &other.payload, None, &mut out_b).unwrap()
                })
            });
            g.bench_function(BenchmarkId::new("decode", format!("{}/{sz}", label("two_full_at_once"))), |b| {
                b.iter(|| assert!(codec::decode_two_full(dtype, &plain.payload, &mut out, &other.payload, &mut out_b)))
            });
        }
        if codec::decodes_over_full(dtype, plain.codec, delta.codec) {
            // A delta read from its full block: the two levels one after
            // the other (the base through memory), and in one pass.
            let mut mid = vec![0u8; size];
            g.bench_function(BenchmarkId::new("decode", format!("{}/{sz}", label("two_levels"))), |b| {
                b.iter(|| {
                    codec::decode(dtype, plain.codec, &plain.payload, None, &mut mid).unwrap();
                    codec::decode(dtype, delta.codec, &delta.payload, Some(&mid), &mut out).unwrap()
                })
            });
            g.bench_function(BenchmarkId::new("decode", format!("{}/{sz}", label("two_levels_one_pass"))), |b| {
                b.iter(|| {
                    assert!(codec::decode_over_full(
                        dtype,
                        plain.codec,
                        &plain.payload,
                        delta.codec,
                        &delta.payload,
                        &mut out
                    ))
                })
            });
        }
        if size == MIB && dtype != DType::U8 {
            let bx = baseline::bitx_like(dtype, &new, &base);
            g.bench_function(BenchmarkId::new("encode", format!("{}/{sz}", label("bitx_like"))), |b| {
                b.iter(|| baseline::bitx_like(dtype, &new, &base))
            });
            g.bench_function(BenchmarkId::new("decode", format!("{}/{sz}", label("bitx_like"))), |b| {
                b.iter(|| baseline::bitx_like_decode(dtype, &bx, &base, &mut out).unwrap())
            });
            let zn = baseline::zipnn_like(dtype, &base);
            g.bench_function(BenchmarkId::new("encode", format!("{}/{sz}", label("zipnn_like"))), |b| {
                b.iter(|| baseline::zipnn_like(dtype, &base))
            });
            g.bench_function(BenchmarkId::new("decode", format!("{}/{sz}", label("zipnn_like"))), |b| {
                b.iter(|| baseline::zipnn_like_decode(dtype, &zn, &mut out).unwrap())
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
