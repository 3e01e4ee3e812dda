//! Stores written by earlier builds keep working: `testdata/store-v1` was
//! written by the first release of the format (every file kind at version
//! 1: config, packs, indexes, manifests, refs, audit log) and holds a F32
//! series (a base, an exact delta, an int4 lossy delta) and a BF16 pair.
//! This build must verify it, restore every version to the same bytes as
//! then, refuse to write to it until `tdelta upgrade`, and write to it
//! after (old versions keeping their xxh3-128 ids).

mod common;

use std::fs;
use std::path::Path;

use common::{ok, run, stderr};

/// Version id, ref, and the xxh3-128 of the restored file (for exact
/// versions, the source checkpoint's hash).
const VERSIONS: [(&str, &str, &str); 5] = [
    ("2d750215408b1daea45223e98c1dc8d8", "f32-base", "a226c4f72d73396c33224fc6136ef720"),
    ("450fc27ddb068e5c3e62891b484aa114", "", "3ca2c577290f7b0c213f0dc707ea8c4a"),
    ("523b088cdeafec305137bfd0539e9153", "f32-lossy", "62ea440e8452b35bbd0d4d8b609dc02d"),
    ("6fd458f806d028788e60b308fc8163a2", "", "0b8646427073be8403265742ef068e49"),
    ("6a0f623c3044f96877bb7d5fd39f18ea", "bf16", "9cd089661973838fec80f4bcecf3a560"),
];

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            fs::copy(e.path(), &dst).unwrap();
        }
    }
}

fn fixture(tmp: &Path) -> std::path::PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/store-v1");
    let store = tmp.join("store");
    copy_dir(&src, &store);
    store
}

fn xxh3_hex(bytes: &[u8]) -> String {
    tdelta::Hash::of(bytes).to_hex()
}

#[test]
fn version_1_store_verifies_and_restores_bit_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let store = fixture(tmp.path());
    let v = run(&store, &["verify", "--all"]);
    assert_eq!(v.status.code(), Some(0), "verify --all on the v1 store: {}", stderr(&v));
    for (id, r, want) in VERSIONS {
        for name in [id, r] {
            if name.is_empty() {
                continue;
            }
            let out = tmp.path().join(format!("out-{name}"));
            ok(&store, &["unpack", name, "-o", out.to_str().unwrap(), "-q"]);
            assert_eq!(xxh3_hex(&fs::read(&out).unwrap()), want, "version {name} restored different bytes");
            fs::remove_file(&out).unwrap();
        }
    }
    // The lossy version is still marked as such.
    let show = ok(&store, &["show", "f32-lossy"]);
    assert!(show.contains("LOSSY"), "show f32-lossy: {show}");
}

#[test]
fn version_1_store_refuses_writes_until_upgraded() {
    let tmp = tempfile::tempdir().unwrap();
    let store = fixture(tmp.path());
    let info = common::json(&store, &["info"]);
    assert_eq!(info["format"], 1, "{info}");
    assert_eq!(info["hash"], "xxh3-128", "{info}");
    // Every write is refused, naming the way out, and changes nothing.
    let before = common::snapshot(&store, &["lock", "tmp"]);
    for args in [&["tag", "x", "bf16"][..], &["gc", "-q"], &["drop", "f32-base"]] {
        let out = run(&store, args);
        assert_ne!(out.status.code(), Some(0), "{args:?} wrote to a format-1 store");
        let err = stderr(&out);
        assert!(err.contains("format 1") && err.contains("run `tdelta upgrade`"), "{args:?}: {err}");
    }
    assert_eq!(common::snapshot(&store, &["lock", "tmp"]), before, "a refused write changed the store");
}

/// An upgrade killed before its one write (the config's rename) leaves
/// its temporary file behind and the store at format 1, whole; the next
/// upgrade clears the file and completes.
#[test]
fn interrupted_upgrade_leaves_a_whole_format_1_store() {
    let tmp = tempfile::tempdir().unwrap();
    let store = fixture(tmp.path());
    // What a killed upgrade leaves: the new config written to tmp/, not
    // renamed over `config`.
    fs::create_dir_all(store.join("tmp")).unwrap();
    let done = tmp.path().join("done");
    copy_dir(&store, &done);
    ok(&done, &["upgrade"]);
    fs::copy(done.join("config"), store.join("tmp").join("config.upgrade-killed")).unwrap();
    assert_eq!(common::json(&store, &["info"])["format"], 1);
    let v = run(&store, &["verify", "--all"]);
    assert_eq!(v.status.code(), Some(0), "verify after an interrupted upgrade: {}", stderr(&v));
    assert!(!run(&store, &["tag", "x", "bf16"]).status.success(), "still format 1: writes refused");
    let out = ok(&store, &["upgrade"]);
    assert!(out.contains("from format 1 to 2"), "{out}");
    assert_eq!(common::list(&store.join("tmp")), Vec::<String>::new(), "temporary files left");
    let info = common::json(&store, &["info"]);
    assert_eq!((info["format"].as_u64(), info["hash"].as_str()), (Some(2), Some("blake3")), "{info}");
    // A second upgrade changes nothing.
    assert!(ok(&store, &["upgrade"]).contains("already format 2"));
}

#[test]
fn upgraded_version_1_store_accepts_new_versions() {
    let tmp = tempfile::tempdir().unwrap();
    let store = fixture(tmp.path());
    ok(&store, &["upgrade"]);
    let info = common::json(&store, &["info"]);
    assert_eq!((info["format"].as_u64(), info["hash"].as_str()), (Some(2), Some("blake3")), "{info}");
    assert_eq!(info["versions"], 5, "{info}");
    // Restore the BF16 version, change one byte of its data, pack it back:
    // a delta against a version-1 block, written by this build.
    let src = tmp.path().join("bf16.safetensors");
    ok(&store, &["unpack", "bf16", "-o", src.to_str().unwrap(), "-q"]);
    let mut bytes = fs::read(&src).unwrap();
    let n = bytes.len();
    bytes[n - 2] ^= 0x01;
    fs::write(&src, &bytes).unwrap();
    let id = ok(&store, &["pack", src.to_str().unwrap(), "-q", "-m", "on a v1 store"]).trim().to_string();
    assert_eq!(id.len(), 64, "a new version gets a blake3 id: {id}");
    // Ids of both widths resolve: the new one by prefix, the old by name.
    ok(&store, &["show", &id[..12]]);
    ok(&store, &["tag", "new", &id]);
    let v = run(&store, &["verify", "--all"]);
    assert_eq!(v.status.code(), Some(0), "verify --all after a new pack: {}", stderr(&v));
    let out = tmp.path().join("back.safetensors");
    ok(&store, &["unpack", &id, "-o", out.to_str().unwrap(), "-q"]);
    assert_eq!(fs::read(&out).unwrap(), bytes);
    // gc keeps every old version whole.
    ok(&store, &["gc", "-q"]);
    for (id, _, want) in VERSIONS {
        let out = tmp.path().join(format!("gc-{id}"));
        ok(&store, &["unpack", id, "-o", out.to_str().unwrap(), "-q"]);
        assert_eq!(xxh3_hex(&fs::read(&out).unwrap()), want, "version {id} after gc");
    }
}
