//! Pack output pinned to constants (format-2 ids, BLAKE3; the figures are
//! those recorded with xxh3-128 ids before the split): the ids of a fixed synthetic series
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
    let (id, _) = m.encode(crate::Algo::Blake3).unwrap();
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
    "51ccb161a7292eac621183297caa49bf05da9728b7614eecd99c515fa32f87b4 packs=[79db28ae8e1c96fe43d9a7040c18a78982ab62e4a5364101476bfebdcd33aca8] new=17 reused=0 delta=0 stored=41138 depth=0 levels=Some(1) lossy=false base=false",
    "81bb2bd512a52334ff89f0795e0a6398f77f219ca711c1169cc818adc2789403 packs=[b916edbab103ae7e5ea0c6f3d730d9ff7676196b0b579af29f16df5bb6dd30b9] new=16 reused=1 delta=16 stored=14529 depth=1 levels=Some(2) lossy=false base=true",
    "8b2f2b38316ec9bd608a9fe4deb25e4d25b5b205dbaa751c72bebaba0497e342 packs=[8cb03544cdf9a095cf510ae5abc1a8c192d5d944407eb9ee7362ef69775bf18d] new=16 reused=1 delta=16 stored=14632 depth=2 levels=Some(3) lossy=false base=true",
    "174dbb8262a15bc75aa02351c104c8ea101c1232b58800a8667af240cb6309f1 packs=[a56e943c51cbab9b4dfb6a314d5d4161f00560e633a1be284834cfa81d534be9] new=16 reused=2 delta=15 stored=19339 depth=1 levels=Some(2) lossy=false base=true",
    "1cdd68745581f893921c588cc5674728309a09c11a338a2a8ab8cde414dfc778 packs=[76e2e2927e59965198f9305d071b58e44ef6b2c467a8c4b10c71b1bc6f2e7660] new=16 reused=2 delta=16 stored=8148 depth=2 levels=Some(3) lossy=true base=true",
    "318bbbd4b0622bd1553e5c5c68f95681068ad20098f42d7800bc891e1deb3a45 packs=[97a507397c6f06d9dc4254a15d66762daf8ff9671ea38663d40d8fbc8b001f7a] new=16 reused=2 delta=16 stored=21468 depth=2 levels=Some(3) lossy=false base=true",
    "e68ae4b065c50bdc034e0f16530d6978cc9bbfeab36ddd00aa8d17f807bcdc8a packs=[d07e9d5aeb76acf2bfd1fcfc4d6b1158fda7e1eb4e0da580e259171c72ccbd9b] new=16 reused=2 delta=15 stored=16071 depth=2 levels=Some(3) lossy=false base=true",
    "36896d3ad4d467a8f770a0f60e04c2e39850b7dc90d996994e83c6581e67f897 packs=[ece2fc2197d1fab65fedeabeedad4ab328d51ddf8ede2798f6c8f13e383a306a] new=17 reused=2 delta=16 stored=22181 depth=1 levels=Some(2) lossy=false base=true",
    "d57e37723260a5ebce90be66a637c3a700900bed7f70382a1115fa49ff435ff5 packs=[24ed7bc0cec1034f4e78bcf304d9b9f31a8e82c5bf3d397dd56237a666456de2] new=17 reused=2 delta=17 stored=15295 depth=2 levels=Some(3) lossy=false base=true",
    "b5da73df282245dfdfbd04c814e82b4858e51eca1fbdd6a652cd59dac27eea47 packs=[a6825793b8dcaf6053fcefbd3b8165ad7c99ab3c10794286ade6f5856b9505d9] new=17 reused=2 delta=1 stored=45060 depth=2 levels=Some(3) lossy=false base=true",
    "01fcfc4b582394923d2b5ebb9aef7b8aed4d9540247e0f81f46e5e9a6ac8663c packs=[21c6eefc68df4e42ecc2e4ff09f337e270ef30220dd031092b0d57ca6e122ae1] new=18 reused=1 delta=16 stored=16796 depth=1 levels=Some(2) lossy=false base=true",
    "2539d10790494ff2840e017a516e55f853b5c847ffd3d0b2cd17cf27d1454362 packs=[0caba3dc7c95d457548165ecb6b95e7ec359e57759fd937eafa3db4bb4d8774c] new=18 reused=2 delta=0 stored=47071 depth=0 levels=Some(3) lossy=false base=true",
    "725bb32622caa26228b0f267867160376e20138f4332089e1543f0cf8bdf5d6a packs=[92360991602644db6a50f3ee53929dbb6196efe9967d4b3a080d6bae4804b393] new=18 reused=2 delta=0 stored=47727 depth=0 levels=Some(2) lossy=false base=false",
];
