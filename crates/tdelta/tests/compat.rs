//! Stores written by earlier builds keep working, on the local directory
//! and in memory: `testdata/store-v1` was written by the first release of
//! the format (every file kind at version 1: config, packs, indexes,
//! manifests, refs, audit log) and holds a F32 series (a base, an exact
//! delta, an int4 lossy delta) and a BF16 pair. This build verifies it,
//! restores every version to the same bytes as then, refuses to write to
//! it until [`Store::upgrade`], and writes to it after (old versions
//! keeping their xxh3-128 ids).

#[macro_use]
mod common;

use std::path::Path;
use std::sync::Arc;

use common::{local, objects, restored};
use tdelta::backend::{Backend, Fault, Memory};
use tdelta::{Algo, Hash, PackOptions, RollbackTarget, Silent, Store};

/// Version id, ref, and the xxh3-128 of the restored file (for exact
/// versions, the source checkpoint's hash).
const VERSIONS: [(&str, &str, &str); 5] = [
    ("2d750215408b1daea45223e98c1dc8d8", "f32-base", "a226c4f72d73396c33224fc6136ef720"),
    ("450fc27ddb068e5c3e62891b484aa114", "", "3ca2c577290f7b0c213f0dc707ea8c4a"),
    ("523b088cdeafec305137bfd0539e9153", "f32-lossy", "62ea440e8452b35bbd0d4d8b609dc02d"),
    ("6fd458f806d028788e60b308fc8163a2", "", "0b8646427073be8403265742ef068e49"),
    ("6a0f623c3044f96877bb7d5fd39f18ea", "bf16", "9cd089661973838fec80f4bcecf3a560"),
];

/// The checked-in format-1 store, copied object by object onto a new
/// backend made by `make`.
fn fixture(make: fn(&Path) -> Arc<dyn Backend>, tmp: &Path) -> Arc<dyn Backend> {
    let b = make(&tmp.join("store"));
    copy_store_v1(b.as_ref());
    b
}

fn copy_store_v1(to: &dyn Backend) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/store-v1");
    common::copy_objects(&tdelta::backend::LocalDir::new(src), to);
}

fn id(hex: &str) -> Hash {
    hex.parse().unwrap()
}

fn verifies_and_restores_bit_exactly(make: fn(&Path) -> Arc<dyn Backend>) {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open_with(fixture(make, tmp.path())).unwrap();
    let info = store.info().unwrap();
    assert_eq!((info.format, info.hash, info.versions), (1, Algo::Xxh3, 5), "{info:?}");
    let rep = tdelta::verify(&store, &store.versions().unwrap(), &Silent).unwrap();
    assert!(rep.ok(), "verify on the v1 store: {rep:?}");
    for (hex, name, want) in VERSIONS {
        if !name.is_empty() {
            assert_eq!(store.resolve(name).unwrap(), id(hex), "ref {name}");
        }
        let bytes = restored(&store, id(hex), tmp.path()).unwrap();
        assert_eq!(Hash::of(&bytes).to_hex(), want, "version {hex} restored different bytes");
    }
    // The lossy version is still marked as such, the others are not.
    assert!(store.manifest(id(VERSIONS[2].0)).unwrap().lossy.is_some());
    assert!(store.manifest(id(VERSIONS[1].0)).unwrap().lossy.is_none());
}

fn refuses_writes_until_upgraded(make: fn(&Path) -> Arc<dyn Backend>) {
    let tmp = tempfile::tempdir().unwrap();
    let b = fixture(make, tmp.path());
    let mut store = Store::open_with(Arc::clone(&b)).unwrap();
    let before = objects(b.as_ref());
    let bf16 = id(VERSIONS[4].0);
    let src = tmp.path().join("v.safetensors");
    common::checkpoint(&src, 100, 1);
    let refused = [
        ("tag", tdelta::tag(&store, "x", bf16, false, "").err()),
        ("untag", tdelta::untag(&store, "bf16", "").err()),
        ("rollback", tdelta::rollback(&store, "bf16", RollbackTarget::Version(bf16), "").err()),
        ("drop", tdelta::drop_version(&store, bf16, "").err()),
        ("gc", tdelta::gc(&mut store, "").err()),
        ("pack", tdelta::pack(&mut store, &src, &PackOptions::default(), &Silent).err()),
    ];
    for (op, e) in refused {
        let e = e.unwrap_or_else(|| panic!("{op} wrote to a format-1 store"));
        assert!(e.to_string().contains("format 1"), "{op}: {e}");
    }
    assert!(objects(b.as_ref()) == before, "a refused write changed the store");
}

fn upgraded_store_accepts_new_versions(make: fn(&Path) -> Arc<dyn Backend>) {
    let tmp = tempfile::tempdir().unwrap();
    let mut store = Store::open_with(fixture(make, tmp.path())).unwrap();
    let up = store.upgrade().unwrap();
    assert_eq!((up.from, up.to), (1, 2));
    assert!(store.upgrade().unwrap().unchanged(), "a second upgrade changes nothing");
    let info = store.info().unwrap();
    assert_eq!((info.format, info.hash, info.versions), (2, Algo::Blake3, 5), "{info:?}");
    // Restore the BF16 version, change one byte of its data, pack it back:
    // a delta against a version-1 block, written by this build.
    let mut bytes = restored(&store, id(VERSIONS[4].0), tmp.path()).unwrap();
    let n = bytes.len();
    bytes[n - 2] ^= 0x01;
    let src = tmp.path().join("bf16.safetensors");
    std::fs::write(&src, &bytes).unwrap();
    let new = tdelta::pack(&mut store, &src, &PackOptions::default(), &Silent).unwrap().id;
    assert_eq!(new.to_hex().len(), 64, "a new version gets a blake3 id: {new}");
    // Ids of both widths resolve: the new one by prefix, the old by name.
    assert_eq!(store.resolve(&new.to_hex()[..12]).unwrap(), new);
    tdelta::tag(&store, "new", new, false, "").unwrap();
    let rep = tdelta::verify(&store, &store.versions().unwrap(), &Silent).unwrap();
    assert!(rep.ok(), "verify after a new pack: {rep:?}");
    assert_eq!(restored(&store, new, tmp.path()).unwrap(), bytes);
    // gc keeps every old version whole.
    tdelta::gc(&mut store, "").unwrap();
    for (hex, _, want) in VERSIONS {
        let bytes = restored(&store, id(hex), tmp.path()).unwrap();
        assert_eq!(Hash::of(&bytes).to_hex(), want, "version {hex} after gc");
    }
}

on_both_backends!(
    verifies_and_restores_bit_exactly,
    refuses_writes_until_upgraded,
    upgraded_store_accepts_new_versions
);

/// An upgrade killed before its one write (the config's rename) leaves
/// its temporary file behind and the store at format 1, whole; the next
/// upgrade clears the file and completes.
#[test]
fn interrupted_upgrade_leaves_a_whole_format_1_store() {
    let tmp = tempfile::tempdir().unwrap();
    let done = tmp.path().join("done");
    let mut upgraded = Store::open_with(fixture(local, &done)).unwrap();
    upgraded.upgrade().unwrap();
    let b = fixture(local, tmp.path());
    let root = tmp.path().join("store");
    // What a killed upgrade leaves: the new config written to tmp/, not
    // renamed over `config`.
    std::fs::create_dir_all(root.join("tmp")).unwrap();
    std::fs::copy(done.join("store/config"), root.join("tmp/config.upgrade-killed")).unwrap();
    let mut store = Store::open_with(Arc::clone(&b)).unwrap();
    assert_eq!(store.info().unwrap().format, 1);
    let rep = tdelta::verify(&store, &store.versions().unwrap(), &Silent).unwrap();
    assert!(rep.ok(), "verify after an interrupted upgrade: {rep:?}");
    assert!(tdelta::tag(&store, "x", id(VERSIONS[4].0), false, "").is_err(), "still format 1: writes refused");
    assert_eq!(store.upgrade().unwrap().from, 1);
    assert_eq!(std::fs::read_dir(root.join("tmp")).unwrap().count(), 0, "temporary files left");
    let store = Store::open(&root).unwrap();
    assert_eq!((store.info().unwrap().format, store.hasher()), (2, Algo::Blake3));
}

/// The upgrade's one write, failed or landed with its response lost: the
/// store is whole at format 1 or 2, and an upgrade after completes.
#[test]
fn an_upgrade_whose_write_fails_or_is_lost_leaves_a_whole_store() {
    let tmp = tempfile::tempdir().unwrap();
    for fault in [Fault::Fail, Fault::Tear, Fault::LoseResponse] {
        let mem = Arc::new(Memory::new());
        let b: Arc<dyn Backend> = mem.clone();
        copy_store_v1(b.as_ref());
        let mut store = Store::open_with(Arc::clone(&b)).unwrap();
        mem.inject(mem.writes() + 1, fault);
        let e = store.upgrade().unwrap_err();
        assert!(e.to_string().contains("injected fault"), "{fault:?}: {e}");
        let mut store = Store::open_with(Arc::new(mem.snapshot())).unwrap();
        let format = store.info().unwrap().format;
        assert_eq!(format, if fault == Fault::LoseResponse { 2 } else { 1 }, "{fault:?}");
        let rep = tdelta::verify(&store, &store.versions().unwrap(), &Silent).unwrap();
        assert!(rep.ok(), "{fault:?}: {rep:?}");
        assert_eq!(store.upgrade().unwrap().to, 2);
        for (hex, _, want) in VERSIONS {
            assert_eq!(Hash::of(&restored(&store, id(hex), tmp.path()).unwrap()).to_hex(), want, "{fault:?}");
        }
    }
}
