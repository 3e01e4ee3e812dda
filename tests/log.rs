//! `tdelta log` and `stats` through the binary: metadata, --all,
//! --oneline, dotted keys in --where/--sort, damage shown and marked
//! (issues 11 and 12).

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{init, json, ok, run, stderr};
use serde_json::Value;

/// A small safetensors file whose values depend on `seed`.
fn st(dir: &Path, seed: u32) -> PathBuf {
    let vals: Vec<u8> = (0..20_000u32).flat_map(|i| ((i * (seed + 1)) as f32).to_le_bytes()).collect();
    let head = format!(r#"{{"w":{{"dtype":"F32","shape":[20000],"data_offsets":[0,{}]}}}}"#, vals.len());
    let mut b = (head.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(head.as_bytes());
    b.extend_from_slice(&vals);
    let p = dir.join(format!("v{seed}.safetensors"));
    fs::write(&p, b).unwrap();
    p
}

/// A store with `n` versions packed in a line; their ids, oldest first.
fn line(dir: &Path, n: u32) -> (PathBuf, Vec<String>) {
    let store = dir.join("store");
    init(&store);
    let ids = (0..n)
        .map(|i| {
            let src = st(dir, i);
            let eval = format!(r#"eval={{"gsm8k":{},"mmlu":{}}}"#, [0.3, 0.5, 0.4, 0.1][i as usize % 4], i);
            let step = format!("step={}", i * 100);
            ok(
                &store,
                &["pack", src.to_str().unwrap(), "-q", "-m", &format!("v{i}"), "--meta", &step, "--metric", &eval],
            )
            .trim()
            .to_string()
        })
        .collect();
    (store, ids)
}

fn ids_of(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_string()).collect()
}

#[test]
fn log_shows_metadata_in_text_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let (store, ids) = line(dir.path(), 2);
    let text = ok(&store, &["log"]);
    assert!(text.contains("  meta:    step=100"), "{text}");
    assert!(text.contains("  meta:    step=0"), "{text}");
    let v = json(&store, &["log"]);
    assert_eq!(ids_of(&v), vec![ids[1].clone(), ids[0].clone()]);
    assert_eq!(v[0]["meta"], serde_json::json!({"step": "100"}));
    assert_eq!(v[1]["meta"]["step"], "0");
}

#[test]
fn log_all_lists_versions_off_heads_line() {
    let dir = tempfile::tempdir().unwrap();
    let (store, ids) = line(dir.path(), 2);
    // HEAD back to v0, then a new version: v1 is off HEAD's line.
    ok(&store, &["rollback", "HEAD", "-q"]);
    let src = st(dir.path(), 7);
    let v2 = ok(&store, &["pack", src.to_str().unwrap(), "-q", "-m", "v2"]).trim().to_string();
    assert_eq!(ids_of(&json(&store, &["log"])), vec![v2.clone(), ids[0].clone()]);
    let all = json(&store, &["log", "--all"]);
    assert_eq!(ids_of(&all), vec![v2, ids[1].clone(), ids[0].clone()], "newest first");
}

#[test]
fn oneline_gives_one_line_per_version() {
    let dir = tempfile::tempdir().unwrap();
    let (store, ids) = line(dir.path(), 3);
    let out = ok(&store, &["log", "--oneline"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!(lines[0], format!("{} (HEAD) v2", &ids[2][..12]));
    assert_eq!(lines[2], format!("{} v0", &ids[0][..12]));
}

#[test]
fn where_and_sort_reach_nested_metrics_with_dotted_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (store, ids) = line(dir.path(), 4);
    // gsm8k: v0 0.3, v1 0.5, v2 0.4, v3 0.1.
    let v = json(&store, &["log", "--sort", "eval.gsm8k"]);
    assert_eq!(ids_of(&v), vec![ids[1].clone(), ids[2].clone(), ids[0].clone(), ids[3].clone()]);
    let v = json(&store, &["log", "--sort", "-eval.gsm8k", "-n", "1"]);
    assert_eq!(ids_of(&v), vec![ids[3].clone()]);
    let v = json(&store, &["log", "--where", "eval.gsm8k=0.40"]);
    assert_eq!(ids_of(&v), vec![ids[2].clone()]);
    let v = json(&store, &["log", "--where", "eval.mmlu=1", "--where", "step=100"]);
    assert_eq!(ids_of(&v), vec![ids[1].clone()]);
}

#[test]
fn unknown_sort_key_is_a_usage_error_listing_valid_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = line(dir.path(), 2);
    let o = run(&store, &["log", "--sort", "eval.gsm9k"]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(e.contains("unknown sort key `eval.gsm9k`") && e.contains("eval.gsm8k") && e.contains("eval.mmlu"), "{e}");
}

#[test]
fn a_filter_without_match_says_no_version_matches() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = line(dir.path(), 2);
    let o = run(&store, &["log", "--where", "step=12345"]);
    assert!(o.status.success());
    assert!(o.stdout.is_empty());
    let e = stderr(&o);
    assert!(e.contains("no version matches") && !e.contains("no versions yet"), "{e}");
    let empty = dir.path().join("empty");
    init(&empty);
    assert!(stderr(&run(&empty, &["log"])).contains("no versions yet"));
}

#[test]
fn a_damaged_manifest_is_marked_and_the_rest_still_listed() {
    let dir = tempfile::tempdir().unwrap();
    let (store, ids) = line(dir.path(), 3);
    let m = store.join("versions").join(format!("{}.tdm", ids[1]));
    let mut b = fs::read(&m).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x40;
    fs::write(&m, b).unwrap();
    let o = run(&store, &["log"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(out.contains(&format!("version {} (HEAD)", &ids[2][..12])), "{out}");
    assert!(out.contains(&format!("version {} [DAMAGED]", &ids[1][..12])), "{out}");
    assert!(stderr(&run(&store, &["log"])).contains("damaged"));
    // `-n 1` reads only the newest version: no damage met.
    let o = run(&store, &["log", "-n", "1", "--oneline"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8(o.stdout).unwrap().lines().count(), 1);
    // JSON: one document, the damaged entry marked.
    let o = run(&store, &["log", "--json"]);
    assert_eq!(o.status.code(), Some(3));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["id"], ids[2].as_str());
    assert!(v[1]["damaged"].as_str().unwrap().contains(&ids[1]), "{v}");
    // --all lists the others too.
    let o = run(&store, &["log", "--all", "--oneline"]);
    assert_eq!(o.status.code(), Some(3));
    assert_eq!(String::from_utf8(o.stdout).unwrap().lines().count(), 3);
}

#[test]
fn a_dropped_parent_is_shown_and_a_lost_one_is_damage() {
    let dir = tempfile::tempdir().unwrap();
    let (store, ids) = line(dir.path(), 3);
    ok(&store, &["drop", &ids[1], "-q"]);
    let o = run(&store, &["log"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(out.contains(&format!("version {} [dropped", &ids[1][..12])), "{out}");
    assert_eq!(json(&store, &["log"])[1]["dropped"], true);
    // A manifest deleted by hand is not a drop.
    let other = tempfile::tempdir().unwrap();
    let (store, ids) = line(other.path(), 3);
    fs::remove_file(store.join("versions").join(format!("{}.tdm", ids[1]))).unwrap();
    let o = run(&store, &["log"]);
    assert_eq!(o.status.code(), Some(3));
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(out.contains(&format!("version {} [DAMAGED]", &ids[1][..12])), "{out}");
    assert!(out.contains("missing from the store"), "{out}");
}

#[test]
fn stats_lists_versions_in_time_order() {
    let dir = tempfile::tempdir().unwrap();
    // Packed within a second or two: the order must not come from ids.
    let (store, ids) = line(dir.path(), 6);
    let v = json(&store, &["stats"]);
    let got: Vec<String> =
        v["versions"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(got, ids);
    let text = ok(&store, &["stats"]);
    let pos: Vec<usize> = ids.iter().map(|id| text.find(&id[..12]).unwrap()).collect();
    assert!(pos.windows(2).all(|w| w[0] < w[1]), "{text}");
}

#[test]
fn control_characters_in_store_text_are_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    init(&store);
    let src = st(dir.path(), 1);
    let evil = "ok\x1b[2J\rversion 000000000000 (HEAD, stable)\u{9b}31m";
    ok(
        &store,
        &["pack", src.to_str().unwrap(), "-q", "-m", evil, "--meta", "k=\x1b]0;title\x07", "--author", "x\x1b[1A"],
    );
    ok(&store, &["tag", "stable", "--why", "\x1b[31mred"]);
    for args in [&["log"][..], &["log", "--oneline"], &["show"], &["stats"], &["history", "stable"], &["tags"]] {
        let out = ok(&store, args);
        assert!(!out.chars().any(|c| c.is_control() && c != '\n'), "{args:?} printed raw control characters: {out:?}");
        assert!(!out.lines().any(|l| l.starts_with("version 000000000000")), "{args:?}: {out}");
    }
    let out = ok(&store, &["log"]);
    assert!(out.contains("ok\\u{1b}[2J\\rversion 000000000000 (HEAD, stable)\\u{9b}31m"), "{out}");
    // JSON keeps the text exact.
    assert_eq!(json(&store, &["log"])[0]["message"], evil);
}
