//! The command line on a store written by the first release of the format
//! (`testdata/store-v1`): `info` says format 1, writes are refused with a
//! hint to run `tdelta upgrade`, which reports what it did, and `unpack`
//! by ref restores the old bytes. What the engine does with such a store
//! (every version restored and verified, writes refused, upgrades failed
//! part way) is tested on its API (`crates/tdelta/tests/compat.rs`).

mod common;

use std::fs;
use std::path::Path;

use common::{json, ok, run, stderr};

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

#[test]
fn version_1_store_on_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/store-v1"), &store);
    let info = json(&store, &["info"]);
    assert_eq!((info["format"].as_u64(), info["hash"].as_str()), (Some(1), Some("xxh3-128")), "{info}");
    let v = run(&store, &["verify", "--all"]);
    assert_eq!(v.status.code(), Some(0), "verify --all on the v1 store: {}", stderr(&v));
    let out = tmp.path().join("bf16.safetensors");
    ok(&store, &["unpack", "bf16", "-o", out.to_str().unwrap(), "-q"]);
    assert_eq!(tdelta::Hash::of(&fs::read(&out).unwrap()).to_hex(), "9cd089661973838fec80f4bcecf3a560");
    assert!(ok(&store, &["show", "f32-lossy"]).contains("LOSSY"));
    // A write is refused, naming the way out.
    let before = common::snapshot(&store, &["lock", "tmp"]);
    let o = run(&store, &["tag", "x", "bf16"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("format 1") && stderr(&o).contains("run `tdelta upgrade`"), "{}", stderr(&o));
    assert_eq!(common::snapshot(&store, &["lock", "tmp"]), before, "a refused write changed the store");
    assert!(ok(&store, &["upgrade"]).contains("from format 1 to 2"));
    assert!(ok(&store, &["upgrade"]).contains("already format 2"));
    let info = json(&store, &["info"]);
    assert_eq!((info["format"].as_u64(), info["hash"].as_str()), (Some(2), Some("blake3")), "{info}");
    ok(&store, &["tag", "x", "bf16", "-q"]);
}
