//! Pack output pinned to constants: the ids of a fixed synthetic series
//! (manifests with the creation time and parent zeroed, packs, stats) were recorded
//! before the pack pipeline was split into planner, base selector,
//! encoder and sink (issue 13), and must not change with its shape.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use safetensors::tensor::{Dtype as StDtype, TensorView};

use super::*;
use crate::lossy::{Bits, LossyOptions};
use crate::testutil::noise;
use crate::{Hash, InitOptions, Store};

/// BF16 values near N(0, 0.04) from `seed`.
fn bf16(seed: u64, n: usize) -> Vec<u16> {
    noise(seed, n * 2)
        .chunks_exact(2)
        .map(|c| {
            let u = (f32::from(c[0]) - 127.5) / 127.5 * 0.04 + f32::from(c[1]) * 1e-5;
            (u.to_bits() >> 16) as u16
        })
        .collect()
}

/// Nudges a few in eight elements by one or two ULPs.
fn drift(v: &mut [u16], seed: u64) {
    let moves = noise(seed, v.len());
    for (x, m) in v.iter_mut().zip(moves) {
        match m % 8 {
            0 => *x = x.wrapping_add(1),
            1 => *x = x.wrapping_sub(1),
            2 => *x = x.wrapping_add(2),
            _ => {}
        }
    }
}

fn le16(v: &[u16]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The checkpoint of step `step`: a safetensors file (BF16, F32, I32, a
/// tensor that gains rows) and a JSON blob, in `dir`.
fn write_step(dir: &Path, step: u64) {
    let mut a = bf16(1, 64 * 256);
    let mut g = bf16(2, (8 + 4 * step as usize) * 128);
    for s in 1..=step {
        drift(&mut a, 100 + s);
        drift(&mut g, 200 + s);
    }
    let b: Vec<u8> =
        (0..32 * 128).flat_map(|i| ((i as f32 * 0.001).sin() * (1.0 + step as f32 * 1e-3)).to_le_bytes()).collect();
    let c: Vec<u8> = (0..1000i32).flat_map(|i| (i * 7 + (step as i32 % 3)).to_le_bytes()).collect();
    let (a, g) = (le16(&a), le16(&g));
    let rows = 8 + 4 * step as usize;
    let views = vec![
        ("a.weight".to_string(), TensorView::new(StDtype::BF16, vec![64, 256], &a).unwrap()),
        ("b.weight".to_string(), TensorView::new(StDtype::F32, vec![32, 128], &b).unwrap()),
        ("c.idx".to_string(), TensorView::new(StDtype::I32, vec![1000], &c).unwrap()),
        ("d.grow".to_string(), TensorView::new(StDtype::BF16, vec![rows, 128], &g).unwrap()),
    ];
    let meta: HashMap<String, String> = [("step".to_string(), step.to_string())].into();
    fs::write(dir.join("model.safetensors"), safetensors::serialize(views, Some(meta)).unwrap()).unwrap();
    fs::write(dir.join("config.json"), format!("{{\"step\": {step}, \"pad\": \"{}\"}}", "x".repeat(5000))).unwrap();
}

/// What one pack wrote, in a form independent of the clock.
fn fingerprint(r: &PackReport) -> String {
    let mut m = r.manifest.clone();
    // The parent's and base's ids carry their own creation times.
    m.created = 0;
    let has_base = m.base.is_some();
    m.parent = None;
    m.base = None;
    let (id, _) = m.encode().unwrap();
    let s = &m.stats;
    let packs: Vec<String> = r.packs.iter().map(Hash::to_string).collect();
    format!(
        "{id} packs=[{}] new={} reused={} delta={} stored={} depth={} levels={:?} lossy={} base={has_base}",
        packs.join(","),
        s.new_blocks,
        s.reused_blocks,
        s.delta_blocks,
        s.stored_bytes,
        s.max_depth,
        m.max_levels,
        m.lossy.is_some()
    )
}

/// Packs the series under every policy, the lossy path and a pack with no
/// base; returns one fingerprint per version.
fn pack_series() -> Vec<String> {
    let tmp = tempfile::tempdir().unwrap();
    let mut store = Store::init(&tmp.path().join("store"), &InitOptions { block_size: 4096 }).unwrap();
    let src = tmp.path().join("ckpt");
    fs::create_dir(&src).unwrap();
    let lossy = LossyOptions { bits: Bits::Int4, keep_exact: vec!["d.*".into()], ..Default::default() };
    let plan: Vec<(&str, BaseChoice, Option<LossyOptions>)> = vec![
        ("near:2", BaseChoice::Head, None),
        ("near:2", BaseChoice::Head, None),
        ("near:2", BaseChoice::Head, None),
        ("near:2", BaseChoice::Head, None),
        ("near:2", BaseChoice::Head, Some(lossy)),
        ("chain:2", BaseChoice::Head, None),
        ("chain:2", BaseChoice::Head, None),
        ("chain:2", BaseChoice::Head, None),
        ("keyframe:2", BaseChoice::Head, None),
        ("keyframe:2", BaseChoice::Head, None),
        ("root", BaseChoice::Head, None),
        ("full", BaseChoice::Head, None),
        ("near:3", BaseChoice::None, None),
    ];
    let mut out = Vec::new();
    for (step, (policy, base, lossy)) in plan.into_iter().enumerate() {
        write_step(&src, step as u64);
        let opts = PackOptions {
            author: Some("golden".into()),
            message: format!("step {step}"),
            policy: policy.parse().unwrap(),
            base,
            lossy,
            window: 16 << 10,
            ..Default::default()
        };
        let r = pack(&mut store, &src, &opts, &Silent).unwrap();
        out.push(fingerprint(&r));
    }
    out
}

#[test]
fn pack_ids_of_a_fixed_series_are_pinned() {
    let got = pack_series();
    assert_eq!(got, EXPECTED);
}

const EXPECTED: [&str; 13] = [
    "4a3ce67165408c9b7bf803233432f97a packs=[b59c88998cc0a472e8e18771c34de5c3] new=17 reused=0 delta=0 stored=41138 depth=0 levels=Some(1) lossy=false base=false",
    "c41b1e1eb0d83cbfbfdc8c2cd5b8a6ba packs=[8286b6408da10fde84327ed4a558beeb] new=16 reused=1 delta=16 stored=14529 depth=1 levels=Some(2) lossy=false base=true",
    "d7a34b23abf87f7a0d33e5639a608343 packs=[7436a543f64d7f2075e6305f77a6e09d] new=16 reused=1 delta=16 stored=14632 depth=2 levels=Some(3) lossy=false base=true",
    "7ce993a89a39b057e2b79a5d0274952e packs=[c9c70a28558cdd890b781aea28693bb5] new=16 reused=2 delta=15 stored=19339 depth=1 levels=Some(2) lossy=false base=true",
    "73a99690c7ee9cb9cf587eaa7eebb979 packs=[a7a9b3169109bcf709de2eef307b2962] new=16 reused=2 delta=16 stored=8148 depth=2 levels=Some(3) lossy=true base=true",
    "107419cb7f7ae77754e2dc80809c8cc1 packs=[ff044261504564553b41d7820f559eb9] new=16 reused=2 delta=16 stored=21468 depth=2 levels=Some(3) lossy=false base=true",
    "82ce68cdfbb2c1e3fc5a1966a5dd6744 packs=[10c63bf8e02385321270432b217b8e19] new=16 reused=2 delta=15 stored=16071 depth=2 levels=Some(3) lossy=false base=true",
    "8f39f3fd37a6b80714177ba5658de3a5 packs=[a09211a66583deb416a0655a0b849ddc] new=17 reused=2 delta=16 stored=22181 depth=1 levels=Some(2) lossy=false base=true",
    "9e32f28b18b6ed241f7b8f8996f4cdcc packs=[e01a93dc70c2a89adbbeaf39bc4c5c3e] new=17 reused=2 delta=17 stored=15295 depth=2 levels=Some(3) lossy=false base=true",
    "ed126d265ea4514904e2b13f08877f55 packs=[be547d283fac17428777febea3bc1d5a] new=17 reused=2 delta=1 stored=45060 depth=2 levels=Some(3) lossy=false base=true",
    "302446cdd756599faba32408f3b8e5fa packs=[1ace33fb33d4061c10802921466b6f7d] new=18 reused=1 delta=16 stored=16796 depth=1 levels=Some(2) lossy=false base=true",
    "bc008f9ad32a32567c4ea10f455b006c packs=[feb401759bb6e732c7224f789a09b176] new=18 reused=2 delta=0 stored=47071 depth=0 levels=Some(3) lossy=false base=true",
    "8d59373f4239f3432bfc0703b26b7f79 packs=[de5a11ff92a30cdb1c3454a645f58b73] new=18 reused=2 delta=0 stored=47727 depth=0 levels=Some(2) lossy=false base=false",
];
