//! Packing a safetensors file built in memory (`tdelta::pack_memory`, what
//! the Python package's `Store.save` uses): the version equals the one
//! packing the same bytes from a file gives.

mod common;

use common::Rng;
use safetensors::Dtype;
use safetensors::tensor::TensorView;
use tdelta::checkpoint::MemoryFile;
use tdelta::{InitOptions, PackOptions, RestoreOptions, Silent, Store};

/// Tensors of a checkpoint at `step`: BF16 weights drifting a little per
/// step, an F32 bias, an empty tensor and an I64 counter.
fn tensors(step: u64) -> Vec<(String, Dtype, Vec<usize>, Vec<u8>)> {
    let mut r = Rng(7);
    let w: Vec<u8> = (0..300_000u64)
        .flat_map(|i| {
            let x = (r.next_u64() >> 48) as u16 & 0x3fff | 0x3c00;
            let x = if i % 97 == 0 { x.wrapping_add(step as u16) } else { x };
            x.to_le_bytes()
        })
        .collect();
    let b: Vec<u8> = (0..1000u32).flat_map(|i| (i as f32 * 0.5 + step as f32).to_le_bytes()).collect();
    vec![
        ("model.w".into(), Dtype::BF16, vec![600, 500], w),
        ("model.b".into(), Dtype::F32, vec![1000], b),
        ("empty".into(), Dtype::F16, vec![0, 4], Vec::new()),
        ("step".into(), Dtype::I64, vec![], (step as i64).to_le_bytes().to_vec()),
    ]
}

/// The safetensors file of `tensors` with `metadata`.
fn file_bytes(ts: &[(String, Dtype, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let views: Vec<(String, TensorView<'_>)> =
        ts.iter().map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
    let meta = [("format".to_string(), "pt".to_string())].into_iter().collect();
    safetensors::serialize(views, Some(meta)).unwrap()
}

#[test]
fn a_memory_file_packs_to_the_version_of_the_same_file() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = InitOptions { block_size: tdelta::block::MIN_BLOCK_SIZE };
    let mut from_files = Store::init(&tmp.path().join("a"), &opts).unwrap();
    let mut from_memory = Store::init(&tmp.path().join("b"), &opts).unwrap();
    let src = tmp.path().join("model.safetensors");
    for step in 1..=2 {
        let ts = tensors(step);
        let bytes = file_bytes(&ts);
        std::fs::write(&src, &bytes).unwrap();
        let popts = PackOptions { message: format!("step {step}"), ..Default::default() };
        let a = tdelta::pack(&mut from_files, &src, &popts, &Silent).unwrap();

        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let given = ts.iter().map(|(name, _, _, b)| (name.clone(), &b[..])).collect();
        let m = MemoryFile::new("model.safetensors", bytes[..8 + n].to_vec(), given).unwrap();
        let b = tdelta::pack_memory(&mut from_memory, &m, &popts, &Silent).unwrap();

        // Same files, blocks, tensors, deltas and storage figures.
        assert_eq!(a.manifest.files, b.manifest.files, "step {step}");
        assert_eq!(a.manifest.stats, b.manifest.stats, "step {step}");
        assert_eq!(a.manifest.max_levels, b.manifest.max_levels);
        if step == 2 {
            assert!(b.manifest.base.is_some(), "the second version is a delta of the first");
        }
        let out = tmp.path().join(format!("out{step}.safetensors"));
        tdelta::restore(&from_memory, b.id, &out, &RestoreOptions::default(), &Silent).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), bytes, "step {step}");
    }
    let r = tdelta::verify(&from_memory, &from_memory.versions().unwrap(), &Silent).unwrap();
    assert!(r.ok(), "{r:?}");
}

#[test]
fn a_bad_memory_file_is_refused_before_the_store_is_touched() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::init(&tmp.path().join("s"), &InitOptions::default()).unwrap();
    let ts = tensors(1);
    let bytes = file_bytes(&ts);
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    // `empty` given under another name: the sizes add up, the names do not.
    let given = ts.iter().map(|(name, _, _, b)| (name.replace("empty", "other"), &b[..])).collect();
    let e = MemoryFile::new("model.safetensors", bytes[..8 + n].to_vec(), given).unwrap_err();
    assert!(e.to_string().contains("tensor `empty` is in the header but not given"), "{e}");
    assert_eq!(store.versions().unwrap().len(), 0);
}
