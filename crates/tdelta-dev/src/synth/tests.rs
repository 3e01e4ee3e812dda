use super::*;
use safetensors::SafeTensors;

fn small(seed: u64) -> SeriesSpec {
    SeriesSpec::new(seed, DType::BF16, 1 << 20, 3)
}

fn parse(bytes: &[u8]) -> SafeTensors<'_> {
    SafeTensors::deserialize(bytes).expect("valid safetensors")
}

#[test]
fn bf16_rounding_matches_half() {
    let mut x = 0x1234_5678u64;
    for _ in 0..100_000 {
        x = mix64(x);
        let f = f32::from_bits(x as u32);
        if f.is_nan() {
            continue;
        }
        assert_eq!(bf16_bits(f), half::bf16::from_f32(f).to_bits(), "{f:e}");
    }
}

#[test]
fn simd_and_generic_rows_agree() {
    let mut spec = SeriesSpec::new(21, DType::BF16, 1 << 20, 4);
    spec.lora_merge_at = Some(2);
    spec.vocab_extension_at = Some(1);
    for p in plans_for(&spec, 3) {
        let cols = p.def.cols;
        let (mut a, mut b, mut g) = (vec![0f32; cols], vec![0f32; cols], vec![0f32; cols]);
        for r in [0, p.def.rows / 2, p.def.rows - 1] {
            p.row(r, &mut a, &mut g);
            p.row_generic(r, &mut b, &mut g);
            let (a, b): (Vec<u32>, Vec<u32>) =
                (a.iter().map(|x| x.to_bits()).collect(), b.iter().map(|x| x.to_bits()).collect());
            assert_eq!(a, b, "{} row {r}", p.def.name);
        }
    }
}

#[test]
fn files_parse_and_match_layout() {
    for dtype in [DType::BF16, DType::F16, DType::F32] {
        let spec = SeriesSpec::new(7, dtype, 1 << 20, 2);
        let bytes = version_bytes(&spec, 1);
        let st = parse(&bytes);
        let defs = layout(&spec, 1);
        assert_eq!(st.len(), defs.len());
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        assert!(n.is_multiple_of(8), "header padded to 8 bytes");
        let header = std::str::from_utf8(&bytes[8..8 + n]).unwrap();
        assert!(header.contains("\"__metadata__\":{\"format\":\"pt\"}"));
        let plans = plans_for(&spec, 1);
        let mut data_end = 0;
        for p in &plans {
            let t = st.tensor(&p.def.name).unwrap();
            assert_eq!(t.shape(), p.def.shape.as_slice());
            assert_eq!(t.dtype().to_string(), dtype.name());
            // Data matches an independent regeneration of the tensor.
            assert_eq!(t.data(), p.chunk(0, p.def.rows).as_slice(), "{}", p.def.name);
            data_end += t.data().len();
        }
        assert_eq!(8 + n + data_end, bytes.len(), "tensors contiguous");
    }
}

#[test]
fn values_are_realistic() {
    let spec = small(3);
    let bytes = version_bytes(&spec, 0);
    let st = parse(&bytes);
    for (name, t) in st.tensors() {
        let vals: Vec<f32> =
            t.data().chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect();
        assert!(vals.iter().all(|v| v.is_finite()), "{name}");
        let n = vals.len() as f64;
        let mean = vals.iter().map(|&v| v as f64).sum::<f64>() / n;
        let std = (vals.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
        if name.contains("norm") {
            assert!((mean - 1.0).abs() < 0.15 && std < 0.1, "{name}: {mean} {std}");
        } else if name.ends_with("k_proj.bias") {
            assert!(std < 0.01, "{name}: {std}");
        } else {
            assert!(mean.abs() < 0.01 && std > 0.01 && std < 0.08, "{name}: {mean} {std}");
        }
    }
}

#[test]
fn deterministic_across_thread_counts() {
    let mut spec = SeriesSpec::new(11, DType::BF16, 3 << 20, 3);
    spec.vocab_extension_at = Some(2);
    spec.lora_merge_at = Some(1);
    let run = |threads: usize| {
        rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(|| version_bytes(&spec, 2))
    };
    let one = run(1);
    assert_eq!(one, run(4));
    assert_eq!(one, version_bytes(&spec, 2));
    assert_ne!(one, version_bytes(&SeriesSpec { seed: 12, ..spec.clone() }, 2));
}

#[test]
fn sizes_near_target() {
    for (dtype, target) in [
        (DType::BF16, 1u64 << 20),
        (DType::BF16, 20 << 20),
        (DType::F16, 5 << 20),
        (DType::F32, 8 << 20),
        (DType::BF16, 2 << 30),
    ] {
        let spec = SeriesSpec::new(1, dtype, target, 2);
        let m = spec.model_shape();
        let bytes = m.params(false) as u64 * dtype.bits() / 8;
        let ratio = bytes as f64 / target as f64;
        assert!((0.9..1.1).contains(&ratio), "{dtype} {target}: {ratio} {m:?}");
        assert!(m.layers >= 1 && m.hidden.is_multiple_of(32), "{m:?}");
    }
    let spec = small(1);
    let len = version_bytes(&spec, 0).len() as f64;
    assert!((0.9..1.1).contains(&(len / (1 << 20) as f64)), "{len}");
}

/// Fraction of elements whose bits differ, over tensors whose name
/// contains `pat`.
fn changed(a: &SafeTensors<'_>, b: &SafeTensors<'_>, pat: &str) -> f64 {
    let (mut n, mut c) = (0usize, 0usize);
    for (name, t) in a.tensors() {
        if !name.contains(pat) {
            continue;
        }
        let u = b.tensor(&name).unwrap();
        let k = t.data().len().min(u.data().len());
        for (x, y) in t.data()[..k].chunks_exact(2).zip(u.data()[..k].chunks_exact(2)) {
            n += 1;
            c += usize::from(x != y);
        }
    }
    c as f64 / n.max(1) as f64
}

#[test]
fn versions_drift_like_fine_tuning() {
    let mut spec = small(5);
    spec.versions = 4;
    spec.frozen_fraction = 0.0;
    let v: Vec<Vec<u8>> = (0..4).map(|i| version_bytes(&spec, i)).collect();
    let st: Vec<SafeTensors<'_>> = v.iter().map(|b| parse(b)).collect();
    let w01 = changed(&st[0], &st[1], "proj.weight");
    let w12 = changed(&st[1], &st[2], "proj.weight");
    let w03 = changed(&st[0], &st[3], "proj.weight");
    assert!((0.5..0.8).contains(&w01), "{w01}");
    assert!((w01 - w12).abs() < 0.05, "{w01} {w12}");
    assert!(w03 > w01 + 0.05, "{w03} {w01}");
    let n01 = changed(&st[0], &st[1], "norm");
    assert!((0.01..0.15).contains(&n01), "{n01}");
    let e01 = changed(&st[0], &st[1], "embed_tokens");
    assert!((0.01..0.15).contains(&e01), "{e01}");
}

#[test]
fn frozen_tensors_never_change() {
    let mut spec = small(9);
    spec.frozen_fraction = 1.0;
    assert_eq!(version_bytes(&spec, 0), version_bytes(&spec, 2));
}

#[test]
fn vocab_extension_grows_rows_and_keeps_drifting() {
    let mut spec = small(4);
    spec.vocab_extension_at = Some(2);
    spec.frozen_fraction = 0.0;
    let m = spec.model_shape();
    let ext = extension_rows(&spec, &m);
    let b1 = version_bytes(&spec, 1);
    let b2 = version_bytes(&spec, 2);
    let b3 = version_bytes(&spec, 3);
    let (s1, s2, s3) = (parse(&b1), parse(&b2), parse(&b3));
    for name in ["model.embed_tokens.weight", "lm_head.weight"] {
        assert_eq!(s1.tensor(name).unwrap().shape(), &[m.vocab, m.hidden]);
        assert_eq!(s2.tensor(name).unwrap().shape(), &[m.vocab + ext, m.hidden]);
        let old = m.vocab * m.hidden * 2;
        assert_ne!(&s1.tensor(name).unwrap().data()[..old], &s2.tensor(name).unwrap().data()[..old]);
        // The new rows are trained too.
        assert_ne!(&s2.tensor(name).unwrap().data()[old..], &s3.tensor(name).unwrap().data()[old..]);
    }
}

#[test]
fn lora_merge_changes_only_q_and_v() {
    let mut spec = small(6);
    spec.lora_merge_at = Some(2);
    spec.frozen_fraction = 0.0;
    let b1 = version_bytes(&spec, 1);
    let b2 = version_bytes(&spec, 2);
    let (s1, s2) = (parse(&b1), parse(&b2));
    for (name, t) in s1.tensors() {
        let same = t.data() == s2.tensor(&name).unwrap().data();
        let lora = name.ends_with("q_proj.weight") || name.ends_with("v_proj.weight");
        assert_eq!(same, !lora, "{name}");
    }
    // The update is low rank: in F32, any 9 rows of the delta of q_proj
    // span at most 8 dimensions.
    spec.dtype = DType::F32;
    let b1 = version_bytes(&spec, 1);
    let b2 = version_bytes(&spec, 2);
    let (s1, s2) = (parse(&b1), parse(&b2));
    let name = "model.layers.0.self_attn.q_proj.weight";
    let (t1, t2) = (s1.tensor(name).unwrap(), s2.tensor(name).unwrap());
    let cols = t1.shape()[1];
    let f = |d: &[u8]| -> Vec<f64> {
        d.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64).collect()
    };
    let (a, b) = (f(t1.data()), f(t2.data()));
    let mut basis: Vec<Vec<f64>> = Vec::new();
    let mut last_ratio = 1.0;
    for r in 0..9 {
        let mut v: Vec<f64> = (0..cols).map(|c| b[r * cols + c] - a[r * cols + c]).collect();
        let norm0 = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        for u in &basis {
            let dot: f64 = v.iter().zip(u).map(|(x, y)| x * y).sum();
            v.iter_mut().zip(u).for_each(|(x, y)| *x -= dot * y);
        }
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        last_ratio = norm / norm0;
        if r < 8 {
            assert!(last_ratio > 0.1, "row {r} independent: {last_ratio}");
        }
        basis.push(v.iter().map(|x| x / norm).collect());
    }
    assert!(last_ratio < 1e-3, "rank 8: {last_ratio}");
}

#[test]
fn spice_inserts_specials() {
    let mut spec = small(8);
    spec.spice = true;
    for dtype in [DType::BF16, DType::F16, DType::F32] {
        spec.dtype = dtype;
        let bytes = version_bytes(&spec, 1);
        let st = parse(&bytes);
        let (mut nan, mut negzero, mut inf, mut sub) = (0, 0, 0, 0);
        for (_, t) in st.tensors() {
            let eb = t.dtype().bitsize() / 8;
            for c in t.data().chunks_exact(eb) {
                let v = match eb {
                    2 if dtype == DType::BF16 => half::bf16::from_le_bytes([c[0], c[1]]).to_f32(),
                    2 => half::f16::from_le_bytes([c[0], c[1]]).to_f32(),
                    _ => f32::from_le_bytes([c[0], c[1], c[2], c[3]]),
                };
                nan += usize::from(v.is_nan());
                negzero += usize::from(v == 0.0 && v.is_sign_negative());
                inf += usize::from(v.is_infinite());
                sub += usize::from(v.is_subnormal() || (dtype == DType::F16 && v != 0.0 && v.abs() < 6.1e-5));
            }
        }
        assert!(nan > 0 && negzero > 0 && inf > 0 && sub > 0, "{dtype}: {nan} {negzero} {inf} {sub}");
    }
    // Default series has none.
    let st_bytes = version_bytes(&small(8), 1);
    let st = parse(&st_bytes);
    for (name, t) in st.tensors() {
        for c in t.data().chunks_exact(2) {
            let v = half::bf16::from_le_bytes([c[0], c[1]]);
            assert!(v.is_finite() && !(v.to_f32() == 0.0 && v.is_sign_negative()), "{name}");
        }
    }
}

#[test]
fn sharded_series_is_valid_hf_layout() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = SeriesSpec::new(2, DType::BF16, 2 << 20, 3);
    spec.sharded = true;
    spec.shards = 3;
    spec.vocab_extension_at = Some(2);
    let paths = write_series(&spec, dir.path()).unwrap();
    assert_eq!(paths.len(), 3);
    let single = version_bytes(&spec, 1);
    let single = parse(&single);
    let read = |p: &Path, f: &str| fs::read(p.join(f)).unwrap();
    for (v, p) in paths.iter().enumerate() {
        assert_eq!(p.file_name().unwrap().to_str().unwrap(), format!("v{v:03}"));
        let index: serde_json::Value = serde_json::from_slice(&read(p, "model.safetensors.index.json")).unwrap();
        let map = index["weight_map"].as_object().unwrap();
        assert_eq!(map.len(), layout(&spec, v).len());
        let mut total = 0u64;
        let mut seen = 0;
        for k in 1..=3 {
            let f = format!("model-{k:05}-of-00003.safetensors");
            let bytes = read(p, &f);
            let st = parse(&bytes);
            assert!(!st.is_empty());
            for (name, t) in st.tensors() {
                assert_eq!(map[&name], f.as_str());
                total += t.data().len() as u64;
                seen += 1;
                if v == 1 {
                    assert_eq!(t.data(), single.tensor(&name).unwrap().data());
                }
            }
        }
        assert_eq!(seen, map.len());
        assert_eq!(index["metadata"]["total_size"].as_u64(), Some(total));
        let config: serde_json::Value = serde_json::from_slice(&read(p, "config.json")).unwrap();
        let tok = read(p, "tokenizer.json");
        assert!(tok.len() > 2000 && tok.len() < 64 << 10, "{}", tok.len());
        serde_json::from_slice::<serde_json::Value>(&tok).unwrap();
        let vocab = config["vocab_size"].as_u64().unwrap() as usize;
        let m = spec.model_shape();
        assert_eq!(vocab > m.vocab, v >= 2);
    }
    // Non-tensor files change only at the vocab extension.
    let cfg = |v: usize| read(&paths[v], "config.json");
    assert_eq!(cfg(0), cfg(1));
    assert_ne!(cfg(1), cfg(2));
    assert_eq!(read(&paths[0], "tokenizer.json"), read(&paths[1], "tokenizer.json"));
}

#[test]
fn single_file_write_matches_memory() {
    let dir = tempfile::tempdir().unwrap();
    let spec = small(10);
    let p = dir.path().join("x.safetensors");
    let n = write_version(&spec, 1, &p).unwrap();
    let bytes = fs::read(&p).unwrap();
    assert_eq!(n, bytes.len() as u64);
    assert_eq!(bytes, version_bytes(&spec, 1));
}

#[test]
fn rejects_non_float_dtype() {
    let dir = tempfile::tempdir().unwrap();
    let spec = SeriesSpec::new(0, DType::I32, 1 << 20, 1);
    assert!(write_series(&spec, dir.path()).is_err());
}

/// The f32 values of every tensor of a single-file F32 version.
fn f32_values(bytes: &[u8]) -> Vec<f32> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    bytes[8 + n..].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

fn dist(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum::<f64>().sqrt()
}

#[test]
fn drifting_series_moves_away_from_the_base_in_shrinking_steps() {
    let spec = SeriesSpec { drift: true, frozen_fraction: 0.0, ..SeriesSpec::new(5, DType::F32, 1 << 20, 8) };
    let v: Vec<Vec<f32>> = (0..spec.versions).map(|i| f32_values(&version_bytes(&spec, i))).collect();
    let (mut last_step, mut last_reach) = (f64::INFINITY, 0.0);
    for i in 1..spec.versions {
        let (step, reach) = (dist(&v[i], &v[i - 1]), dist(&v[i], &v[0]));
        assert!(step < last_step, "version {i}: step {step} after {last_step}");
        assert!(reach > last_reach, "version {i}: distance from the base {reach} after {last_reach}");
        if i >= 2 {
            // Closer to the previous version than to the base, more so
            // with every version.
            assert!(step < reach, "version {i}");
            assert!(step / reach < last_step / last_reach, "version {i}");
        }
        (last_step, last_reach) = (step, reach);
    }
    // Without drift the steps keep their size.
    let flat = SeriesSpec { drift: false, ..spec.clone() };
    let w: Vec<Vec<f32>> = (0..4).map(|i| f32_values(&version_bytes(&flat, i))).collect();
    let (a, b) = (dist(&w[1], &w[0]), dist(&w[3], &w[2]));
    assert!((a / b - 1.0).abs() < 0.05, "{a} vs {b}");
}
