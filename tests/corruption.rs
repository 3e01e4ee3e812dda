//! The command line on damage: a damaged store makes `verify` and
//! `unpack` exit 3 naming what is wrong; hostile checkpoints are refused
//! (exit 1) with a clear message naming the file, never a panic or a huge
//! allocation. Damage to every kind of store object is tested on the
//! engine's API (`crates/tdelta/tests/corruption.rs`).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use tdelta::DType;
use tdelta_dev::synth::SeriesSpec;

/// The command line on a damaged store: `verify --all --json` exits 3 and
/// lists the damaged version with its problems, `unpack` of it exits 3
/// naming the pack, the other version still unpacks.
#[test]
fn damage_exits_3_and_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let spec = SeriesSpec::new(3, DType::BF16, 384 << 10, 2);
    let srcs = tdelta_dev::synth::write_series(&spec, &dir.path().join("src")).unwrap();
    let store = dir.path().join("store");
    init(&store);
    let v0 = pack(&store, &srcs[0], "v0");
    let before = list(&store.join("packs"));
    let v1 = pack(&store, &srcs[1], "v1");
    let pack1 = list(&store.join("packs")).into_iter().find(|p| p.ends_with(".pack") && !before.contains(p)).unwrap();
    let path = store.join("packs").join(&pack1);
    let mut bytes = fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    fs::write(&path, bytes).unwrap();

    let o = run(&store, &["verify", "--all", "--json", "-q"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let rep: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let damaged: Vec<&str> = rep["versions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| !v["problems"].as_array().unwrap().is_empty())
        .map(|v| v["id"].as_str().unwrap())
        .collect();
    assert_eq!(damaged, [v1.as_str()], "{rep}");
    let out = dir.path().join("out");
    let o = run(&store, &["unpack", &v1, "-o", path_str(&out), "--force", "-q"]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{e}");
    assert!(e.contains(pack1.trim_end_matches(".pack")) && !e.contains("panicked"), "{e}");
    let scratch = dir.path().join("scratch");
    fs::create_dir_all(&scratch).unwrap();
    assert_eq!(unpack_bytes(&store, &v0, &scratch), fs::read(&srcs[0]).unwrap());
}

#[test]
fn hostile_checkpoints_are_refused_with_clear_messages() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata");
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    init(&store);
    let mut cases: Vec<(PathBuf, &str)> = vec![
        (root.join("malformed-extra/header-100gb.safetensors"), "header length 100000000000 bytes exceeds"),
        (root.join("malformed-extra/offsets-beyond-2-64.safetensors"), "data_offsets"),
        (root.join("malformed-extra/dtype-size-overflow.safetensors"), "overflows"),
        (root.join("malformed-extra/shape-product-overflow.safetensors"), "overflows"),
        (root.join("malformed-extra/duplicate-tensor-names.safetensors"), "duplicate tensor name"),
        (root.join("malformed-extra/index-dotdot-in-middle"), "leaves the checkpoint directory"),
        (root.join("malformed-extra/index-absolute-path"), "is absolute"),
        (root.join("malformed/index-path-outside-dir"), "leaves the checkpoint directory"),
        (root.join("malformed/header-10gb.safetensors"), "exceeds the limit"),
        (root.join("malformed/duplicate-tensor.safetensors"), "duplicate"),
        (root.join("malformed/shape-overflow.safetensors"), "overflow"),
    ];
    // Symlinks out of the tree, made here (git does not keep them well).
    let outside = dir.path().join("outside.safetensors");
    fs::copy(root.join("tiny.safetensors"), &outside).unwrap();
    let ck = dir.path().join("ckpt-symlink-file");
    fs::create_dir_all(&ck).unwrap();
    fs::copy(root.join("tiny.safetensors"), ck.join("model.safetensors")).unwrap();
    std::os::unix::fs::symlink(&outside, ck.join("extra.safetensors")).unwrap();
    cases.push((ck, "symlink points outside the checkpoint directory"));
    let ck2 = dir.path().join("ckpt-symlink-shard");
    fs::create_dir_all(&ck2).unwrap();
    for e in fs::read_dir(root.join("sharded")).unwrap() {
        let p = e.unwrap().path();
        fs::copy(&p, ck2.join(p.file_name().unwrap())).unwrap();
    }
    let shard = ck2.join("model-00002-of-00002.safetensors");
    fs::rename(&shard, dir.path().join("moved-shard.safetensors")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("moved-shard.safetensors"), &shard).unwrap();
    cases.push((ck2, "outside the checkpoint directory"));

    let before = snapshot(&store, &["lock"]);
    for (src, want) in &cases {
        let o = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "ulimit -v 2097152; exec '{}' --store '{}' pack '{}' -q",
                env!("CARGO_BIN_EXE_tdelta"),
                store.display(),
                src.display()
            ))
            .output()
            .unwrap();
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{}: {e}", src.display());
        assert!(!e.contains("panicked") && !e.contains("memory allocation"), "{}: {e}", src.display());
        assert!(e.contains(want), "{}: expected `{want}` in: {e}", src.display());
        let fname = src.file_name().unwrap().to_str().unwrap();
        assert!(e.contains(fname), "{}: error does not name the file: {e}", src.display());
    }
    assert_eq!(before, snapshot(&store, &["lock"]), "a refused pack changed the store");
    eprintln!("hostile checkpoints tried: {}", cases.len());
}
