//! Exit statuses, JSON errors, typed metrics, --author, the audit trail,
//! dry runs and the lock, through the binary (issues 11 and 12).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::{bin, init, json, ok, run, snapshot, stderr};
use serde_json::Value;

/// A small safetensors file whose values depend on `seed`.
fn st(dir: &Path, seed: u32) -> PathBuf {
    let vals: Vec<u8> = (0..40_000u32).flat_map(|i| ((i * (seed + 1)) as f32).to_le_bytes()).collect();
    let head = format!(r#"{{"w":{{"dtype":"F32","shape":[40000],"data_offsets":[0,{}]}}}}"#, vals.len());
    let mut b = (head.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(head.as_bytes());
    b.extend_from_slice(&vals);
    let p = dir.join(format!("v{seed}.safetensors"));
    fs::write(&p, b).unwrap();
    p
}

fn pack(store: &Path, src: &Path, extra: &[&str]) -> String {
    let mut a = vec!["pack", src.to_str().unwrap(), "-q"];
    a.extend_from_slice(extra);
    ok(store, &a).trim().to_string()
}

#[test]
fn usage_errors_exit_2_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    init(&store);
    let src = st(dir.path(), 1);
    let s = src.to_str().unwrap();
    let before = snapshot(&store, &[]);
    for (args, says) in [
        (&["pack", s, "--policy", "chain:x"][..], "invalid policy"),
        (&["pack", s, "--meta", "k"], "KEY=VALUE"),
        (&["pack", s, "--metric", "loss"], "KEY=VALUE"),
        (&["pack", s, "--metric", "loss=low"], "valid values are"),
        (&["pack", s, "--metric", "loss=null"], "valid values are"),
        (&["pack", s, "--metric", "loss={oops"], "valid values are"),
        (&["gc", "--keep-last", "3"], "--prune"),
        (&["rollback", "HEAD", "--to", "HEAD", "--steps", "1"], "not both"),
        (&["verify", "HEAD", "--all"], "not both"),
        (&["bench", "--generate", "--block-size", "1K"], "valid sizes are"),
    ] {
        let o = run(&store, args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
        // With --json the error is a JSON object on stdout too.
        let mut a = args.to_vec();
        a.push("--json");
        let o = run(&store, &a);
        assert_eq!(o.status.code(), Some(2));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        assert_eq!(v["kind"], "usage");
        assert!(v["error"].as_str().unwrap().contains(says), "{v}");
    }
    assert_eq!(snapshot(&store, &[]), before, "a refused command changed the store");
    let other = dir.path().join("other");
    let o = run(&other, &["init", "--block-size", "1K"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("valid sizes are"));
    assert!(!other.exists());
}

#[test]
fn runtime_errors_exit_1_and_damage_3_also_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    init(&store);
    pack(&store, &st(dir.path(), 1), &[]);
    let o = run(&store, &["unpack", "nosuchtag", "-o", "x", "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["kind"], "runtime");
    assert!(v["error"].as_str().unwrap().contains("nosuchtag"));
    // An edited audit log: history is damage, named by entry.
    let log = store.join("audit.log");
    let text = fs::read_to_string(&log).unwrap();
    fs::write(&log, text.replacen("\"op\":\"pack\"", "\"op\":\"pock\"", 1)).unwrap();
    let o = run(&store, &["history", "HEAD", "--json"]);
    assert_eq!(o.status.code(), Some(3));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["kind"], "damage");
    assert!(v["error"].as_str().unwrap().contains("entry 1"), "{v}");
}

#[test]
fn metrics_take_numbers_booleans_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    init(&store);
    pack(
        &store,
        &st(dir.path(), 1),
        &["--metric", "loss=1.5", "--metric", "ok=true", "--metric", r#"eval={"a":1}"#, "--metric", "xs=[1,2]"],
    );
    pack(&store, &st(dir.path(), 2), &["--metric", r#"name="run 7""#]);
    let v = json(&store, &["log"]);
    assert_eq!(v[1]["metrics"], serde_json::json!({"loss": 1.5, "ok": true, "eval": {"a": 1}, "xs": [1, 2]}));
    assert_eq!(v[0]["metrics"]["name"], "run 7");
}

#[test]
fn author_is_recorded_by_every_writing_command() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    init(&store);
    let a = pack(&store, &st(dir.path(), 1), &["--author", "alice"]);
    let b = pack(&store, &st(dir.path(), 2), &[]);
    ok(&store, &["tag", "stable", &a, "--author", "bob", "-q"]);
    ok(&store, &["rollback", "HEAD", "--author", "carol", "-q"]);
    ok(&store, &["tag", "old", &b, "-q"]);
    ok(&store, &["tag", "-d", "old", "--author", "dave", "-q"]);
    ok(&store, &["drop", &b, "--author", "erin", "-q"]);
    ok(&store, &["gc", "--author", "frank", "-q"]);
    let v = json(&store, &["log", "--all"]);
    assert_eq!(v[0]["author"], "alice");
    let h = json(&store, &["history", "--all"]);
    let who: Vec<(&str, &str)> =
        h.as_array().unwrap().iter().map(|e| (e["op"].as_str().unwrap(), e["who"].as_str().unwrap())).collect();
    assert_eq!(
        who,
        vec![
            ("pack", "alice"),
            ("pack", "tester"),
            ("tag", "bob"),
            ("rollback", "carol"),
            ("tag", "tester"),
            ("untag", "dave"),
            ("drop", "erin"),
            ("gc", "frank"),
        ]
    );
}

#[test]
fn history_all_shows_every_entry_and_a_noop_rollback_records_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    init(&store);
    let a = pack(&store, &st(dir.path(), 1), &[]);
    let b = pack(&store, &st(dir.path(), 2), &[]);
    ok(&store, &["tag", "stable", &a, "-q"]);
    let log_before = fs::read(store.join("audit.log")).unwrap();
    let o = run(&store, &["rollback", "stable", "--to", &a]);
    assert!(o.status.success());
    assert!(stderr(&o).contains("nothing changed"), "{}", stderr(&o));
    assert_eq!(fs::read(store.join("audit.log")).unwrap(), log_before, "a no-op rollback was recorded");
    ok(&store, &["rollback", "HEAD", "-q"]);
    ok(&store, &["drop", &b, "-q"]);
    ok(&store, &["gc", "-q"]);
    let text = ok(&store, &["history", "--all"]);
    let ops: Vec<&str> = text.lines().map(|l| l.split_whitespace().nth(4).unwrap()).collect();
    assert_eq!(ops, vec!["pack", "pack", "tag", "rollback", "drop", "gc"], "{text}");
    assert_eq!(json(&store, &["history", "stable"]).as_array().unwrap().len(), 1);
}

#[test]
fn dry_runs_change_nothing_and_predict_the_bytes_freed() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    init(&store);
    let ids: Vec<String> = (0..4).map(|i| pack(&store, &st(dir.path(), i), &["--policy", "full"])).collect();
    let before = snapshot(&store, &[]);
    let d = json(&store, &["drop", &ids[1], "--dry-run"]);
    assert_eq!(d["dropped"], serde_json::json!([ids[1]]));
    let g = json(&store, &["gc", "--prune", "--keep-last", "2", "--dry-run"]);
    assert_eq!(g["dropped"], serde_json::json!([ids[0], ids[1]]));
    let text = ok(&store, &["gc", "--prune", "--dry-run"]);
    assert!(text.contains("would drop") && text.contains("would keep 1 versions"), "{text}");
    assert_eq!(snapshot(&store, &[]), before, "a dry run changed the store");
    // The prediction is what the real run frees.
    let size = |p: &Path| -> u64 { snapshot(p, &[]).values().map(|v| v.len() as u64).sum() };
    let (s0, log0) = (size(&store), fs::metadata(store.join("audit.log")).unwrap().len());
    let r = json(&store, &["gc", "--prune", "--keep-last", "2"]);
    assert_eq!(r["dropped"], g["dropped"]);
    let (s1, log1) = (size(&store), fs::metadata(store.join("audit.log")).unwrap().len());
    assert_eq!(s0 - log0 - (s1 - log1), g["bytes_freed"].as_u64().unwrap());
    assert_eq!(r["blocks_removed"], g["blocks_removed"]);
}

#[test]
fn a_waiting_writer_says_who_holds_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    init(&store);
    let src = st(dir.path(), 1);
    pack(&store, &src, &[]);
    // This test process holds the lock (as another writer would) and
    // never writes its pid into the file.
    let held = fs::OpenOptions::new().read(true).write(true).open(store.join("lock")).unwrap();
    held.lock().unwrap();
    let me = format!("pid {}", std::process::id());
    let o = bin()
        .env("TDELTA_LOCK_WAIT", "0.3")
        .arg("--store")
        .arg(&store)
        .args(["tag", "x"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains(&format!("waiting for the store lock held by {me}")), "{e}");
    assert!(e.contains(&format!("locked by another writer ({me})")), "{e}");
    // A pack that waits, then runs: it says so and reports the wait apart.
    let mut child = bin()
        .arg("--store")
        .arg(&store)
        .args(["pack", src.to_str().unwrap(), "--json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lock = store.join("lock");
    // Wait until it announces the wait (the lock file stays empty).
    let mut err = child.stderr.take().unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\n") {
        use std::io::Read;
        if err.read(&mut byte).unwrap() == 0 {
            break;
        }
        line.push(byte[0]);
    }
    assert!(String::from_utf8_lossy(&line).contains(&format!("held by {me}")), "{}", String::from_utf8_lossy(&line));
    assert_eq!(fs::read_to_string(&lock).unwrap(), "");
    held.unlock().unwrap();
    let mut out = String::new();
    use std::io::Read;
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert!(child.wait().unwrap().success());
    let v: Value = serde_json::from_str(&out).unwrap();
    assert!(v["lock_wait_seconds"].as_f64().unwrap() > 0.0, "{v}");
}

#[test]
fn demo_honours_store_and_bench_refuses_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("demo-store");
    let o = run(&store, &["demo", "--versions", "2", "--size", "256K", "-q"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json(&store, &["log"]).as_array().unwrap().len(), 2);
    // An existing store is never reused.
    let o = run(&store, &["demo", "--versions", "1", "--size", "256K", "-q"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(json(&store, &["log"]).as_array().unwrap().len(), 2);
    let o = run(&store, &["bench", "--generate", "--versions", "1", "--size", "256K"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--store does not apply"), "{}", stderr(&o));
}
