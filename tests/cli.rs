//! Integration tests: the real `tdelta` binary in temporary directories.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{ok, run};
use tdelta::DType;
use tdelta_dev::synth::SeriesSpec;

/// Runs a command that must fail cleanly: exit code 1, one `error:` line,
/// no panic. Returns the message.
fn fails(store: &Path, args: &[&str]) -> String {
    let o = run(store, args);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(1), "tdelta {args:?} should fail; stderr: {err}");
    assert!(!err.contains("panicked"), "tdelta {args:?} panicked: {err}");
    assert!(err.starts_with("error: "), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    err
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every file of the store and its bytes (the lock file excepted).
fn snapshot(store: &Path) -> BTreeMap<String, Vec<u8>> {
    common::snapshot(store, &["lock"])
}

fn small_series(dir: &Path, versions: usize) -> Vec<PathBuf> {
    let mut spec = SeriesSpec::new(7, DType::BF16, 3 << 20, versions);
    spec.vocab_extension_at = Some(3);
    tdelta_dev::synth::write_series(&spec, dir).unwrap()
}

#[test]
fn help_lists_the_commands() {
    let o = Command::new(env!("CARGO_BIN_EXE_tdelta")).arg("--help").output().unwrap();
    let s = String::from_utf8(o.stdout).unwrap();
    for c in ["init", "pack", "unpack", "log", "show", "demo"] {
        assert!(s.contains(c), "--help lacks {c}: {s}");
    }
}

#[test]
fn series_of_five_round_trips_bit_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let sources = small_series(&dir.path().join("src"), 5);
    ok(&store, &["init"]);
    let mut ids = Vec::new();
    for (i, src) in sources.iter().enumerate() {
        let msg = format!("step {i}");
        let out = ok(&store, &["pack", src.to_str().unwrap(), "-m", &msg, "-q", "--metric", "loss=1.5"]);
        let id = out.trim().to_string();
        assert_eq!(id.len(), 64, "pack prints the 64-digit blake3 version id: {out}");
        ids.push(id);
    }
    for (id, src) in ids.iter().zip(&sources) {
        let out = dir.path().join(format!("out-{}", &id[..8]));
        ok(&store, &["unpack", &id[..10], "-o", out.to_str().unwrap(), "-q"]);
        assert_eq!(fs::read(&out).unwrap(), fs::read(src).unwrap(), "version {id}");
    }
    let log: serde_json::Value = serde_json::from_str(&ok(&store, &["log", "--json"])).unwrap();
    let log = log.as_array().unwrap();
    assert_eq!(log.len(), 5);
    assert_eq!(log[0]["id"], ids[4].as_str());
    assert_eq!(log[0]["message"], "step 4");
    assert_eq!(log[4]["id"], ids[0].as_str());
    let text = ok(&store, &["log"]);
    assert!(text.contains("step 3") && text.contains("HEAD"), "{text}");
    let show: serde_json::Value = serde_json::from_str(&ok(&store, &["show", "HEAD", "--json"])).unwrap();
    assert_eq!(show["id"], ids[4].as_str());
    assert_eq!(show["manifest"]["metrics"]["loss"], 1.5);
    assert!(show["manifest"]["stats"]["delta_blocks"].as_u64().unwrap() > 0);
    let text = ok(&store, &["show", &ids[1][..8], "--tensors"]);
    assert!(text.contains("bf16") || text.contains("BF16"), "{text}");
}

#[test]
fn packing_the_same_checkpoint_twice_adds_no_block_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let src = &small_series(&dir.path().join("src"), 1)[0];
    ok(&store, &["init"]);
    ok(&store, &["pack", src.to_str().unwrap(), "-q"]);
    let packs = |s: &Path| -> u64 {
        fs::read_dir(s.join("packs")).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum()
    };
    let before = packs(&store);
    let out: serde_json::Value = serde_json::from_str(&ok(&store, &["pack", src.to_str().unwrap(), "--json"])).unwrap();
    assert_eq!(out["stored_bytes"], 0);
    assert_eq!(out["new_blocks"], 0);
    assert_eq!(packs(&store), before);
}

/// `tdelta log | head -1`: the reader goes away after one line; tdelta
/// stops quietly (no panic, no error message).
#[test]
fn a_closed_output_pipe_stops_quietly() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    ok(&store, &["init"]);
    let tiny = repo().join("testdata/tiny.safetensors");
    for i in 0..30 {
        ok(&store, &["pack", tiny.to_str().unwrap(), "-q", "-m", &format!("version {i}\n{}", "x".repeat(4000))]);
    }
    let mut child = common::bin()
        .arg("--store")
        .arg(&store)
        .arg("log")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    // The pipe's read end is closed here, with most of the log unwritten.
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(first.starts_with("version "), "{first}");
    assert!(err.is_empty(), "stderr after the reader left: {err}");
}

#[test]
fn tag_is_set_and_not_moved_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let srcs = small_series(&dir.path().join("src"), 2);
    ok(&store, &["init"]);
    let a = ok(&store, &["pack", srcs[0].to_str().unwrap(), "--tag", "best", "-q"]);
    let e = fails(&store, &["pack", srcs[1].to_str().unwrap(), "--tag", "best"]);
    assert!(e.contains("tag `best`") && e.contains("already exists") && e.contains("pass --force to move it"), "{e}");
    let out = dir.path().join("best.safetensors");
    ok(&store, &["unpack", "best", "-o", out.to_str().unwrap(), "-q"]);
    assert_eq!(fs::read(&out).unwrap(), fs::read(&srcs[0]).unwrap());
    let show: serde_json::Value = serde_json::from_str(&ok(&store, &["show", "best", "--json"])).unwrap();
    assert_eq!(show["id"], a.trim());
}

#[test]
fn every_malformed_checkpoint_is_refused_and_the_store_is_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    ok(&store, &["init"]);
    let good = &small_series(&dir.path().join("src"), 1)[0];
    ok(&store, &["pack", good.to_str().unwrap(), "-q"]);
    let before = snapshot(&store);

    // Cases built here, beside the corpus in testdata/malformed.
    let bad = dir.path().join("bad");
    fs::create_dir_all(&bad).unwrap();
    let mut cases: Vec<PathBuf> = Vec::new();
    let mut add = |name: &str, bytes: Vec<u8>| {
        let p = bad.join(name);
        fs::write(&p, bytes).unwrap();
        cases.push(p);
    };
    add("ten-gb-header.safetensors", 10_000_000_000u64.to_le_bytes().to_vec());
    add("truncated-prefix.safetensors", vec![1, 2, 3]);
    let valid = fs::read(good).unwrap();
    add("truncated-data.safetensors", valid[..valid.len() - 100].to_vec());
    let json = br#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}"#;
    add("invalid-json.safetensors", [(json.len() as u64).to_le_bytes().to_vec(), json.to_vec(), vec![0; 8]].concat());
    let json = br#"{"a":{"dtype":"Q7","shape":[2],"data_offsets":[0,8]}}"#;
    add("unknown-dtype.safetensors", [(json.len() as u64).to_le_bytes().to_vec(), json.to_vec(), vec![0; 8]].concat());
    let json = br#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
    add("overlap.safetensors", [(json.len() as u64).to_le_bytes().to_vec(), json.to_vec(), vec![0; 12]].concat());
    let shard_dir = bad.join("missing-shard");
    fs::create_dir_all(&shard_dir).unwrap();
    fs::write(
        shard_dir.join("model.safetensors.index.json"),
        r#"{"metadata":{},"weight_map":{"w":"model-00001-of-00002.safetensors"}}"#,
    )
    .unwrap();
    cases.push(shard_dir);
    let corpus = repo().join("testdata/malformed");
    if let Ok(rd) = fs::read_dir(&corpus) {
        cases.extend(rd.map(|e| e.unwrap().path()).filter(|p| !p.ends_with("README.md")));
    }
    assert!(cases.len() >= 8);
    for c in &cases {
        let e = fails(&store, &["pack", c.to_str().unwrap()]);
        let name = c.file_name().unwrap().to_str().unwrap();
        assert!(e.contains(name), "error does not name the file: {e}");
        if name == "missing-shard" {
            assert!(e.contains("shard `model-0000"), "missing shard not named: {e}");
        }
    }
    assert_eq!(snapshot(&store).keys().collect::<Vec<_>>(), before.keys().collect::<Vec<_>>());
    assert!(snapshot(&store) == before, "a refused pack changed the store");
}

#[test]
fn unknown_refs_missing_and_corrupt_stores_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let e = fails(&store, &["log"]);
    assert!(e.contains("no tdelta store") && e.contains("tdelta init"), "{e}");
    ok(&store, &["init"]);
    let e = fails(&store, &["init"]);
    assert!(e.contains("already exists"), "{e}");
    let e = fails(&store, &["unpack", "nope", "-o", "x"]);
    assert!(e.contains("unknown ref or version `nope`"), "{e}");
    let e = fails(&store, &["show"]);
    assert!(e.contains("no versions yet") && e.contains("tdelta pack"), "{e}");
    let src = &small_series(&dir.path().join("src"), 1)[0];
    let id = ok(&store, &["pack", src.to_str().unwrap(), "-q"]).trim().to_string();
    // A damaged manifest is detected and named.
    let m = store.join("versions").join(format!("{id}.tdm"));
    let mut b = fs::read(&m).unwrap();
    let n = b.len();
    b[n / 2] ^= 1;
    fs::write(&m, b).unwrap();
    // Damage found by any command exits 3, typed in its JSON error.
    let o = run(&store, &["show", &id, "--json"]);
    assert_eq!(o.status.code(), Some(3), "{}", String::from_utf8_lossy(&o.stderr));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("corrupt") && e.contains(".tdm"), "{e}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((v["kind"].as_str(), v["type"].as_str()), (Some("damage"), Some("corrupt")), "{v}");
    assert_eq!(v["check"], "checksum", "{v}");
    // A damaged config: the store opens for reading only (issue 12).
    fs::write(store.join("config"), b"garbage").unwrap();
    // Writes are refused as damage (exit 3), naming the config.
    let o = run(&store, &["pack", src.to_str().unwrap(), "-q", "--json"]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{e}");
    assert!(e.contains("config") && e.contains("refusing to write"), "{e}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((v["kind"].as_str(), v["type"].as_str()), (Some("damage"), Some("corrupt")), "{v}");
}
