//! The default policy (`near:3`) on a generated series that drifts like a
//! real run, through the library.

use std::fs;
use std::path::Path;

use tdelta::{DType, Hash, InitOptions, PackOptions, Policy, RestoreOptions, Silent, Store, pack, restore};
use tdelta_dev::synth::{self, SeriesSpec};

/// A 20-version drifting series of about 1 MB per version.
fn drifting(dtype: DType) -> SeriesSpec {
    SeriesSpec { drift: true, ..SeriesSpec::new(7, dtype, 1 << 20, 20) }
}

/// Packs every version of `spec` with `policy` into a fresh store under
/// `dir`; returns the store, the version ids and the source files.
fn pack_series(dir: &Path, spec: &SeriesSpec, policy: Policy) -> (Store, Vec<Hash>, Vec<std::path::PathBuf>) {
    let mut s = Store::init(&dir.join(format!("store-{policy}")), &InitOptions { block_size: 64 << 10 }).unwrap();
    let files = synth::write_series(spec, &dir.join("src")).unwrap();
    let opts = PackOptions { policy, window: 1 << 20, ..Default::default() };
    let ids = files.iter().map(|f| pack(&mut s, f, &opts, &Silent).unwrap().id).collect();
    (s, ids, files)
}

fn stored(s: &Store, ids: &[Hash]) -> u64 {
    ids[1..].iter().map(|id| s.manifest(*id).unwrap().stats.stored_bytes).sum()
}

#[test]
fn default_policy_never_needs_more_than_four_decodes_on_a_drifting_series() {
    for dtype in [DType::BF16, DType::F32] {
        let dir = tempfile::tempdir().unwrap();
        let spec = drifting(dtype);
        let (s, ids, files) = pack_series(dir.path(), &spec, Policy::default());
        let mut deepest = 0;
        for (v, id) in ids.iter().enumerate() {
            let out = dir.path().join("out.safetensors");
            let rep = restore(&s, *id, &out, &RestoreOptions { force: true }, &Silent).unwrap();
            assert_eq!(fs::read(&out).unwrap(), fs::read(&files[v]).unwrap(), "{dtype} version {v}");
            assert!(rep.max_levels <= 4, "{dtype}: version {v} decoded {} levels", rep.max_levels);
            let m = s.manifest(*id).unwrap();
            assert_eq!(m.policy, "near:3");
            assert_eq!(u64::from(m.max_levels.unwrap()), rep.max_levels, "{dtype} version {v}");
            deepest = deepest.max(rep.max_levels);
        }
        // The bound is reached, not met trivially by storing near the root.
        assert_eq!(deepest, 4, "{dtype}");
    }
}

#[test]
fn default_policy_stores_a_drifting_series_in_less_than_root_and_chain_3() {
    let dir = tempfile::tempdir().unwrap();
    let spec = SeriesSpec { versions: 10, ..drifting(DType::BF16) };
    let (s, ids, _) = pack_series(dir.path(), &spec, Policy::default());
    let near = stored(&s, &ids);
    for other in [Policy::ROOT, Policy::Chain(3)] {
        let (s, ids, _) = pack_series(dir.path(), &spec, other);
        let theirs = stored(&s, &ids);
        assert!(near < theirs, "near:3 stored {near} bytes, {other} {theirs}");
    }
}
