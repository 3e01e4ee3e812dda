//! `near:K` at its limit: a run takes the base its samples agree on, and
//! decides block by block when they differ; either way every block gets
//! the base its own analysis ([`near_base`]) picks.

use std::cell::Cell;

use safetensors::tensor::{Dtype, TensorView};

use super::base::{near_base, sample_pick};
use crate::ops::blocks::Scratch;
use crate::ops::{PackOptions, Policy, Silent, pack};
use crate::testutil::noise;
use crate::{DType, Hash, InitOptions, Store};

/// Block size of the test store: 2048 BF16 elements.
const BLOCK: usize = 4096;
/// Blocks per half of tensor `w`, and of tensor `h`.
const HALF: usize = 20;

/// BF16 bit patterns of positive weights (their order is the numeric
/// order, so adding to them moves by ULPs).
fn start(seed: u64, n: usize) -> Vec<u16> {
    noise(seed, 2 * n).chunks_exact(2).map(|b| 0x3c00 + (u16::from_le_bytes([b[0], b[1]]) & 0x3ff)).collect()
}

/// `x` with every element moved by 1..=8 ULPs (`big`), or one element in
/// ten by one ULP.
fn step(x: &[u16], seed: u64, big: bool) -> Vec<u16> {
    let r = noise(seed, x.len());
    x.iter()
        .zip(r)
        .map(|(&v, r)| match big {
            true => v.wrapping_add(u16::from(r & 7) + 1),
            false if r % 10 == 0 => v.wrapping_add(1),
            false => v,
        })
        .collect()
}

fn bytes(v: &[u16]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Versions 0..=3 of two tensors. `w`: its first half jumps once, then
/// creeps (version 3 is nearest version 1: a recent delta is the base to
/// take); in its second half only version 1 jumps, versions 2 and 3 creep
/// from version 0 (the full block is the base to take). `h`: like `w`'s
/// first half.
fn series() -> Vec<(Vec<u8>, Vec<u8>)> {
    let n = HALF * BLOCK / 2;
    let (a0, b0, h0) = (start(1, n), start(2, n), start(3, n));
    let (a1, b1, h1) = (step(&a0, 11, true), step(&b0, 12, true), step(&h0, 13, true));
    let (a2, b2, h2) = (step(&a1, 21, false), step(&b0, 22, false), step(&h1, 23, false));
    let (a3, b3, h3) = (step(&a2, 31, false), step(&b2, 32, false), step(&h2, 33, false));
    let w = |a: &[u16], b: &[u16]| bytes(&[a, b].concat());
    vec![(w(&a0, &b0), bytes(&h0)), (w(&a1, &b1), bytes(&h1)), (w(&a2, &b2), bytes(&h2)), (w(&a3, &b3), bytes(&h3))]
}

fn pack_version(store: &mut Store, dir: &std::path::Path, w: &[u8], h: &[u8]) {
    let views = vec![
        ("h".to_string(), TensorView::new(Dtype::BF16, vec![h.len() / 2], h).unwrap()),
        ("w".to_string(), TensorView::new(Dtype::BF16, vec![w.len() / 2], w).unwrap()),
    ];
    let src = dir.join("m.safetensors");
    std::fs::write(&src, safetensors::serialize(views, None).unwrap()).unwrap();
    let opts = PackOptions { policy: Policy::Near(2), ..Default::default() };
    pack(store, &src, &opts, &Silent).unwrap();
    store.load_packs().unwrap();
}

/// The blocks of tensor `name` in the version at HEAD.
fn blocks(store: &Store, name: &str) -> Vec<Hash> {
    let head = store.read_ref("HEAD").unwrap().unwrap();
    let m = store.manifest(head).unwrap();
    m.files[0].tensors().iter().find(|t| t.name == name).unwrap().blocks.clone()
}

#[test]
fn a_run_follows_its_samples_when_they_agree_and_each_block_its_own_choice_when_not() {
    let tmp = tempfile::tempdir().unwrap();
    let mut store = Store::init(&tmp.path().join("store"), &InitOptions { block_size: BLOCK as u32 }).unwrap();
    let versions = series();
    for (w, h) in &versions[..3] {
        pack_version(&mut store, tmp.path(), w, h);
    }
    let (w3, h3) = &versions[3];
    let (prev_w, prev_h) = (blocks(&store, "w"), blocks(&store, "h"));
    assert!(prev_w.iter().chain(&prev_h).all(|&b| store.entry(b).unwrap().depth == 2), "version 2 is at the limit");
    let block = |t: &[u8], i: usize| t[i * BLOCK..(i + 1) * BLOCK].to_vec();
    // Each block's own choice: the depth of its base.
    let own = |t: &[u8], prevs: &[Hash]| -> Vec<u16> {
        let (mut s, mut b) = (Scratch::default(), Vec::new());
        (0..prevs.len())
            .map(|i| near_base(&store, DType::BF16, &block(t, i), prevs[i], 2, &mut s, &mut b).unwrap().1 - 1)
            .collect()
    };
    let (own_w, own_h) = (own(w3, &prev_w), own(h3, &prev_h));
    assert_eq!(own_w, [vec![1; HALF], vec![0; HALF]].concat(), "the halves of w drift unlike each other");
    assert_eq!(own_h, vec![1; HALF]);

    // `h`: one sample in 8 blocks (three), which agree.
    let reads = Cell::new(0);
    let read = |t: &[u8], first: usize| {
        let reads = &reads;
        let t = t.to_vec();
        move |i: usize, buf: &mut Vec<u8>| {
            reads.set(reads.get() + 1);
            *buf = block(&t, first + i);
            Ok(())
        }
    };
    assert_eq!(sample_pick(&store, DType::BF16, &prev_h, 2, read(h3, 0)), Some(1));
    assert_eq!(reads.get(), 3);
    // `w`'s halves alone agree with themselves; the whole of `w` does not.
    assert_eq!(sample_pick(&store, DType::BF16, &prev_w[..HALF], 2, read(w3, 0)), Some(1));
    assert_eq!(sample_pick(&store, DType::BF16, &prev_w[HALF..], 2, read(w3, HALF)), Some(0));
    assert_eq!(sample_pick(&store, DType::BF16, &prev_w, 2, read(w3, 0)), None);
    // Blocks under the limit are no sample: nothing to pick.
    let v1: Vec<Hash> = prev_h.iter().map(|&b| store.entry(b).unwrap().base.unwrap()).collect();
    assert_eq!(sample_pick(&store, DType::BF16, &v1, 2, read(h3, 0)), None);

    // Packed: every block on the base of its own choice.
    pack_version(&mut store, tmp.path(), w3, h3);
    let depths =
        |name: &str| -> Vec<u16> { blocks(&store, name).iter().map(|&b| store.entry(b).unwrap().depth).collect() };
    let plus_one = |v: Vec<u16>| v.into_iter().map(|d| d + 1).collect::<Vec<_>>();
    assert_eq!(depths("w"), plus_one(own_w));
    assert_eq!(depths("h"), plus_one(own_h));
}
