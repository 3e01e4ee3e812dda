//! Pack → restore round trips through the library.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use safetensors::tensor::{Dtype as StDtype, TensorView};

use super::*;
use crate::{BlockRef, InitOptions, Store};

fn st_dtype(d: crate::DType) -> StDtype {
    use crate::DType as D;
    match d {
        D::BOOL => StDtype::BOOL,
        D::U8 => StDtype::U8,
        D::I8 => StDtype::I8,
        D::F8_E4M3 => StDtype::F8_E4M3,
        D::F8_E5M2 => StDtype::F8_E5M2,
        D::F8_E4M3FNUZ => StDtype::F8_E4M3FNUZ,
        D::F8_E5M2FNUZ => StDtype::F8_E5M2FNUZ,
        D::I16 => StDtype::I16,
        D::U16 => StDtype::U16,
        D::F16 => StDtype::F16,
        D::BF16 => StDtype::BF16,
        D::I32 => StDtype::I32,
        D::U32 => StDtype::U32,
        D::F32 => StDtype::F32,
        D::F64 => StDtype::F64,
        D::I64 => StDtype::I64,
        D::U64 => StDtype::U64,
        _ => StDtype::U8,
    }
}

/// A tensor for a test file: name, dtype, shape, bytes.
type T = (String, crate::DType, Vec<usize>, Vec<u8>);

fn write_st(path: &Path, tensors: &[T], meta: Option<HashMap<String, String>>) {
    let views: Vec<(String, TensorView)> =
        tensors.iter().map(|(n, d, s, b)| (n.clone(), TensorView::new(st_dtype(*d), s.clone(), b).unwrap())).collect();
    let bytes = safetensors::serialize(views, meta).unwrap();
    fs::write(path, bytes).unwrap();
}

fn store(dir: &Path, block_size: u32) -> Store {
    Store::init(&dir.join("store"), &InitOptions { block_size }).unwrap()
}

fn pack_file(s: &mut Store, p: &Path, policy: Policy) -> crate::Hash {
    let opts = PackOptions { policy, window: 64 << 10, ..Default::default() };
    pack(s, p, &opts, &Silent).unwrap().id
}

fn restore_to(s: &Store, id: crate::Hash, out: &Path) -> RestoreReport {
    restore(s, id, out, &RestoreOptions { force: true }, &Silent).unwrap()
}

use crate::testutil::noise;

/// BF16 weights near N(0, 0.02) as bytes, and a copy nudged by a few ULPs.
fn bf16_pair(seed: u64, n: usize, step: u64) -> (Vec<u8>, Vec<u8>) {
    let r = noise(seed, n * 2);
    let base: Vec<u16> = r
        .chunks_exact(2)
        .map(|c| {
            let u = (f32::from(c[0]) - 127.5) / 127.5 * 0.04;
            (u.to_bits() >> 16) as u16
        })
        .collect();
    let moves = noise(seed ^ step, n);
    let new: Vec<u16> = base
        .iter()
        .zip(&moves)
        .map(|(b, m)| match m % 8 {
            0 => b.wrapping_add(1),
            1 => b.wrapping_sub(1),
            2 => b.wrapping_add(2),
            _ => *b,
        })
        .collect();
    (bytemuck::cast_slice(&base).to_vec(), bytemuck::cast_slice(&new).to_vec())
}

#[test]
fn series_round_trips_and_dedups() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = store(dir.path(), 4096);
    let n = 20_000;
    let (mut cur, _) = bf16_pair(1, n, 0);
    let frozen = noise(7, 30_000);
    let mut ids = Vec::new();
    let mut files = Vec::new();
    for v in 0..5u64 {
        let (_, next) = bf16_pair_from(&cur, v);
        cur = next;
        let p = dir.path().join(format!("v{v}.safetensors"));
        let t: Vec<T> = vec![
            ("a.weight".into(), crate::DType::BF16, vec![100, n / 100], cur.clone()),
            ("frozen".into(), crate::DType::U8, vec![30_000], frozen.clone()),
            ("scalar".into(), crate::DType::F32, vec![], 1.5f32.to_le_bytes().to_vec()),
            ("empty".into(), crate::DType::F16, vec![0, 3], vec![]),
        ];
        write_st(&p, &t, Some(HashMap::from([("step".to_string(), v.to_string())])));
        ids.push(pack_file(&mut s, &p, Policy::default()));
        files.push(p);
    }
    for (v, (id, p)) in ids.iter().zip(&files).enumerate() {
        let out = dir.path().join(format!("out{v}"));
        restore_to(&s, *id, &out);
        assert_eq!(fs::read(&out).unwrap(), fs::read(p).unwrap(), "version {v}");
        let m = s.manifest(*id).unwrap();
        if v > 0 {
            assert!(m.stats.delta_blocks > 0, "version {v} used no delta");
            assert!(m.stats.reused_blocks > 0, "frozen tensor not deduplicated");
        }
    }
    // Packing the same checkpoint again adds no block.
    let before = s.stats().unwrap();
    let again = pack(&mut s, &files[4], &PackOptions::default(), &Silent).unwrap();
    assert_eq!(again.manifest.stats.new_blocks, 0);
    assert_eq!(again.manifest.stats.stored_bytes, 0);
    let after = s.stats().unwrap();
    assert_eq!(before.blocks, after.blocks);
    assert_eq!(before.pack_bytes, after.pack_bytes);
    assert_eq!(s.read_ref("HEAD").unwrap(), Some(again.id));
    assert_eq!(again.manifest.parent, Some(ids[4]));
}

fn bf16_pair_from(cur: &[u8], step: u64) -> (Vec<u8>, Vec<u8>) {
    let moves = noise(step + 100, cur.len() / 2);
    let v: Vec<u16> = bytemuck::pod_collect_to_vec(cur);
    let new: Vec<u16> = v
        .iter()
        .zip(&moves)
        .map(|(b, m)| match m % 5 {
            0 => b.wrapping_add(1),
            1 => b.wrapping_sub(1),
            _ => *b,
        })
        .collect();
    (cur.to_vec(), bytemuck::cast_slice(&new).to_vec())
}

#[test]
fn long_chain_restores_with_bounded_depth() {
    let default = (Policy::default(), u64::from(Policy::default().max_levels()));
    for (policy, bound) in [default, (Policy::Chain(3), 4u64), (Policy::Keyframe(2), 3), (Policy::Chain(1), 2)] {
        let dir = tempfile::tempdir().unwrap();
        let mut s = store(dir.path(), 4096);
        let (mut cur, _) = bf16_pair(9, 8192, 0);
        let mut ids = Vec::new();
        let mut files: Vec<PathBuf> = Vec::new();
        for v in 0..20u64 {
            cur = bf16_pair_from(&cur, v).1;
            let p = dir.path().join(format!("v{v}.safetensors"));
            write_st(&p, &[("w".into(), crate::DType::BF16, vec![8192], cur.clone())], None);
            ids.push(pack_file(&mut s, &p, policy));
            files.push(p);
        }
        for (v, id) in ids.iter().enumerate() {
            let out = dir.path().join("out");
            let rep = restore_to(&s, *id, &out);
            assert_eq!(fs::read(&out).unwrap(), fs::read(&files[v]).unwrap(), "{policy} version {v}");
            assert!(rep.max_levels <= bound, "{policy}: version {v} decoded {} levels", rep.max_levels);
            let m = s.manifest(*id).unwrap();
            assert!(u64::from(m.stats.max_depth) < bound);
        }
        // The newest version did use deltas: the bound is not met trivially.
        let last = restore_to(&s, ids[19], &dir.path().join("out"));
        assert!(last.max_levels >= 2, "{policy}: no delta used");
    }
}

#[test]
fn vocab_extension_and_sharded_directory_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = store(dir.path(), 4096);
    let (a, b) = bf16_pair(3, 64 * 100, 1);
    let mut ids = Vec::new();
    let mut srcs = Vec::new();
    for (v, (emb, rows)) in
        [(a.clone(), 100usize), ([b.clone(), noise(5, 64 * 2 * 7)].concat(), 107)].into_iter().enumerate()
    {
        let d = dir.path().join(format!("ck{v}"));
        fs::create_dir_all(d.join("sub")).unwrap();
        write_st(
            &d.join("model-00001-of-00002.safetensors"),
            &[("embed".into(), crate::DType::BF16, vec![rows, 64], emb)],
            None,
        );
        write_st(
            &d.join("model-00002-of-00002.safetensors"),
            &[("head".into(), crate::DType::F32, vec![10], noise(4, 40))],
            None,
        );
        fs::write(
            d.join("model.safetensors.index.json"),
            r#"{"metadata":{},"weight_map":{"embed":"model-00001-of-00002.safetensors","head":"model-00002-of-00002.safetensors"}}"#,
        )
        .unwrap();
        fs::write(d.join("config.json"), format!("{{\"v\": {v}}}")).unwrap();
        fs::write(d.join("sub/tokenizer.json"), "{}").unwrap();
        ids.push(pack_file(&mut s, &d, Policy::default()));
        srcs.push(d);
    }
    let m1 = s.manifest(ids[1]).unwrap();
    assert!(m1.stats.delta_blocks > 0, "the extended embedding used no delta");
    for (id, src) in ids.iter().zip(&srcs) {
        let out = dir.path().join("restored");
        restore_to(&s, *id, &out);
        for f in [
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "config.json",
            "sub/tokenizer.json",
            "model.safetensors.index.json",
        ] {
            assert_eq!(fs::read(out.join(f)).unwrap(), fs::read(src.join(f)).unwrap(), "{f}");
        }
    }
    let (file, t, bytes) = read_tensor(&s, ids[1], "embed").unwrap();
    assert_eq!(file, "model-00001-of-00002.safetensors");
    assert_eq!(t.shape, vec![107, 64]);
    assert_eq!(bytes, [b, noise(5, 64 * 2 * 7)].concat());
}

/// `--tensors` reads the header's blocks and the chosen tensors' blocks
/// (with their delta bases) and nothing else.
#[test]
fn partial_restore_reads_only_the_chosen_tensors_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = store(dir.path(), 4096);
    let p = dir.path().join("m.safetensors");
    let n = 64 * 64;
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..4).map(|i| bf16_pair(40 + i, n, 1)).collect();
    let meta = Some(HashMap::from([("format".to_string(), "pt".to_string())]));
    let version = |new: bool| -> Vec<T> {
        pairs
            .iter()
            .enumerate()
            .map(|(i, (a, b))| {
                (format!("layer{i}.w"), crate::DType::BF16, vec![64, 64], if new { b } else { a }.clone())
            })
            .collect()
    };
    write_st(&p, &version(false), meta.clone());
    pack_file(&mut s, &p, Policy::default());
    write_st(&p, &version(true), meta);
    let id = pack_file(&mut s, &p, Policy::default());
    let m = s.manifest(id).unwrap();
    assert!(m.stats.delta_blocks > 0);
    let sel = Selection { tensors: vec!["layer1.*".into()], ..Default::default() };
    let out = dir.path().join("part.safetensors");
    let rep = restore_parts(&s, id, &out, &RestoreOptions::default(), &sel, &Silent).unwrap();
    let f = &m.files[0];
    let wanted: Vec<BlockRef> = f
        .blocks(m.block_size)
        .into_iter()
        .filter(|b| b.tensor.is_none_or(|t| f.tensors()[t].name == "layer1.w"))
        .collect();
    let chain_bytes = |b: &BlockRef| s.chain(b.hash).unwrap().iter().map(|e| u64::from(e.stored_len)).sum::<u64>();
    assert_eq!(rep.payload_bytes, wanted.iter().map(chain_bytes).sum::<u64>());
    assert_eq!(rep.blocks, wanted.iter().filter(|b| b.tensor.is_some()).count() as u64);
    let full = restore_to(&s, id, &dir.path().join("full.safetensors"));
    assert!(rep.payload_bytes * 3 < full.payload_bytes, "{} vs {}", rep.payload_bytes, full.payload_bytes);
    let bytes = fs::read(&out).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.names(), ["layer1.w"]);
    assert_eq!(st.tensor("layer1.w").unwrap().data(), pairs[1].1.as_slice());
}

#[test]
fn restore_refuses_existing_output_and_leaves_no_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = store(dir.path(), 4096);
    let p = dir.path().join("a.safetensors");
    write_st(&p, &[("x".into(), crate::DType::U8, vec![10], vec![1; 10])], None);
    let id = pack_file(&mut s, &p, Policy::default());
    let err = restore(&s, id, &p, &RestoreOptions::default(), &Silent).unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    // A corrupted pack payload is caught and named; no output appears.
    let pack = fs::read_dir(s.root().join("packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "pack"))
        .unwrap();
    let mut bytes = fs::read(&pack).unwrap();
    let n = bytes.len();
    bytes[n - 20] ^= 0xff;
    fs::write(&pack, bytes).unwrap();
    let out = dir.path().join("out.safetensors");
    let err = restore(&s, id, &out, &RestoreOptions::default(), &Silent).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&id.short()) && msg.contains("a.safetensors") && msg.contains("tensor `x` block 0"), "{msg}");
    assert!(!out.exists());
    let left: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.iter().all(|n| !n.to_string_lossy().contains(PARTIAL_TAG)), "{left:?}");
}

fn arb_dtype() -> impl Strategy<Value = crate::DType> {
    use crate::DType as D;
    prop::sample::select(vec![
        D::BOOL,
        D::U8,
        D::I8,
        D::F8_E4M3,
        D::F8_E5M2,
        D::F8_E4M3FNUZ,
        D::F8_E5M2FNUZ,
        D::I16,
        D::U16,
        D::F16,
        D::BF16,
        D::I32,
        D::U32,
        D::F32,
        D::F64,
        D::I64,
        D::U64,
    ])
}

/// Values with the float specials planted: NaN payloads, -0.0, inf,
/// subnormals, as raw bit patterns of each element width.
fn specials(width: usize) -> Vec<Vec<u8>> {
    match width {
        2 => [0x7fc1u16, 0xffff, 0x8000, 0x7f80, 0x0001, 0xfc01].iter().map(|v| v.to_le_bytes().to_vec()).collect(),
        4 => [0x7fc0_0001u32, 0x8000_0000, 0x7f80_0000, 0x0000_0001, 0xffbf_ffff]
            .iter()
            .map(|v| v.to_le_bytes().to_vec())
            .collect(),
        8 => [0x7ff0_0000_0000_0001u64, 0x8000_0000_0000_0000, 1].iter().map(|v| v.to_le_bytes().to_vec()).collect(),
        _ => vec![vec![0x80; width.max(1)], vec![0x7f; width.max(1)]],
    }
}

fn arb_tensor() -> impl Strategy<Value = (crate::DType, Vec<usize>, u64, u8)> {
    (arb_dtype(), prop::collection::vec(0usize..40, 0..3), any::<u64>(), any::<u8>())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_checkpoints_round_trip(
        tensors in prop::collection::vec(arb_tensor(), 1..6),
        meta in prop::collection::hash_map("[a-z]{1,6}", "[ -~]{0,12}", 0..3),
        versions in 1usize..4,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut s = store(dir.path(), 4096);
        let meta = if meta.is_empty() { None } else { Some(meta) };
        for v in 0..versions {
            let ts: Vec<T> = tensors.iter().enumerate().map(|(i, (d, shape, seed, mutate))| {
                let n: usize = shape.iter().product();
                let w = d.bits().div_ceil(8) as usize;
                let mut b = noise(*seed, n * w);
                for (k, sp) in specials(w).into_iter().enumerate() {
                    let at = (k * 7 * w) % (n * w).max(1);
                    if at + w <= b.len() { b[at..at + w].copy_from_slice(&sp); }
                }
                // Later versions change some bytes, keep others.
                if v > 0 {
                    for (j, x) in b.iter_mut().enumerate() {
                        if (j + v) % (usize::from(*mutate) % 5 + 2) == 0 { *x = x.wrapping_add(v as u8); }
                    }
                }
                (format!("t{i}"), *d, shape.clone(), b)
            }).collect();
            let p = dir.path().join(format!("v{v}.safetensors"));
            write_st(&p, &ts, meta.clone());
            let id = pack_file(&mut s, &p, Policy::Chain(2));
            let out = dir.path().join("out");
            restore_to(&s, id, &out);
            prop_assert_eq!(fs::read(&out).unwrap(), fs::read(&p).unwrap());
        }
    }
}

#[test]
fn a_version_whose_blocks_claim_a_deeper_chain_than_recorded_is_refused_as_damage() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = store(dir.path(), 64 << 10);
    // Five versions, each a few ULPs away from the one before: each is
    // stored as a delta on its predecessor.
    let mut w: Vec<f32> = noise(9, 1 << 18).chunks(4).map(|c| f32::from(c[0]) / 255.0 - 0.5).collect();
    let mut ids = Vec::new();
    for v in 0..5 {
        for x in w.iter_mut().step_by(97) {
            *x = f32::from_bits(x.to_bits() + 1);
        }
        let p = dir.path().join(format!("v{v}.safetensors"));
        write_st(&p, &[("w".into(), crate::DType::F32, vec![w.len()], bytemuck::cast_slice(&w).to_vec())], None);
        ids.push(pack_file(&mut s, &p, Policy::Chain(8)));
    }
    let mut m = s.manifest(ids[4]).unwrap();
    assert_eq!(m.max_levels, Some(5));
    // A manifest that allows fewer levels than its blocks' chains claim.
    m.max_levels = Some(2);
    let (forged, _) = s.begin_write().unwrap().write_manifest(&s, &m).unwrap();
    let out = dir.path().join("out.safetensors");
    let err = restore(&s, forged, &out, &RestoreOptions { force: true }, &Silent).unwrap_err();
    let crate::Error::InBlock { source, .. } = &err else { panic!("not a block error: {err}") };
    let text = source.to_string();
    assert!(matches!(**source, crate::Error::Corrupt { .. }), "{text}");
    assert!(text.contains("levels where at most 2 are allowed"), "{text}");
    // The true manifest restores.
    restore(&s, ids[4], &out, &RestoreOptions { force: true }, &Silent).unwrap();
}

#[test]
fn readers_apply_each_versions_recorded_depth_not_only_the_global_cap() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = store(dir.path(), 64 << 10);
    let mut w: Vec<f32> = noise(11, 1 << 18).chunks(4).map(|c| f32::from(c[0]) / 255.0 - 0.5).collect();
    let mut ids = Vec::new();
    for v in 0..4 {
        for x in w.iter_mut().step_by(89) {
            *x = f32::from_bits(x.to_bits() + 1);
        }
        let p = dir.path().join(format!("v{v}.safetensors"));
        write_st(&p, &[("w".into(), crate::DType::F32, vec![w.len()], bytemuck::cast_slice(&w).to_vec())], None);
        ids.push(pack_file(&mut s, &p, Policy::Chain(8)));
    }
    let mut m = s.manifest(ids[3]).unwrap();
    assert_eq!(m.max_levels, Some(4));
    // The same blocks, in a manifest that allows fewer decodes.
    m.max_levels = Some(2);
    m.message = "forged".into();
    let (forged, _) = s.begin_write().unwrap().write_manifest(&s, &m).unwrap();
    let claims = |e: &crate::Error| e.to_string().contains("levels where at most 2 are allowed");
    // verify: damage in the forged version only.
    let rep = verify(&s, &[forged], &Silent).unwrap();
    let problems = &rep.versions.iter().find(|v| v.id == forged).unwrap().problems;
    assert!(problems.iter().any(|p| p.to_string().contains("levels where at most 2 are allowed")), "{problems:?}");
    let rep = verify(&s, &[ids[3]], &Silent).unwrap();
    assert!(rep.versions.iter().all(|v| v.problems.is_empty()), "{:?}", rep.versions);
    // diff, cat of a tensor and of a file, and a tensor read.
    let e = diff(&s, ids[0], forged).unwrap_err();
    assert!(claims(&e), "{e}");
    diff(&s, ids[0], ids[3]).unwrap();
    let e = write_tensor(&s, forged, "w", &mut Vec::new()).unwrap_err();
    assert!(format!("{e} {:?}", e).contains("at most 2"), "{e}");
    let path = m.files[0].path.clone();
    let e = write_file(&s, forged, &path, &mut Vec::new()).unwrap_err();
    assert!(format!("{e} {:?}", e).contains("at most 2"), "{e}");
    let e = read_tensor(&s, forged, "w").unwrap_err();
    assert!(format!("{e} {:?}", e).contains("at most 2"), "{e}");
    assert_eq!(read_tensor(&s, ids[3], "w").unwrap().2, bytemuck::cast_slice::<f32, u8>(&w));
}
