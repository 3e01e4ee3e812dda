//! Integration tests of the version-management verbs, through the binary.

mod common;

use common::{json, ok, run, stderr};
use std::fs;
use std::path::{Path, PathBuf};
use tdelta::DType;
use tdelta_dev::synth::SeriesSpec;

/// A store with `n` packed versions of a small generated series.
fn setup(dir: &Path, n: usize) -> (PathBuf, Vec<PathBuf>, Vec<String>) {
    let store = dir.join("store");
    let spec = SeriesSpec::new(11, DType::BF16, 2 << 20, n);
    let srcs = tdelta_dev::synth::write_series(&spec, &dir.join("src")).unwrap();
    ok(&store, &["init"]);
    let ids = srcs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let step = format!("step={}", i * 100);
            let loss = format!("loss={}", 2.0 - i as f64 * 0.1);
            ok(&store, &["pack", s.to_str().unwrap(), "-q", "-m", &format!("v{i}"), "--meta", &step, "--metric", &loss])
                .trim()
                .to_string()
        })
        .collect();
    (store, srcs, ids)
}

fn unpack_eq(store: &Path, r: &str, expect: &Path, dir: &Path) {
    let out = dir.join(format!("u-{}", r.replace('/', "_")));
    ok(store, &["unpack", r, "-o", out.to_str().unwrap(), "--force", "-q"]);
    assert_eq!(fs::read(&out).unwrap(), fs::read(expect).unwrap(), "unpack {r}");
}

#[test]
fn release_workflow_with_channels_and_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let (store, srcs, ids) = setup(dir.path(), 5);
    ok(&store, &["tag", "canary", &ids[3], "--why", "try v3"]);
    ok(&store, &["tag", "stable", &ids[2]]);
    // Promote canary to stable: moving an existing tag needs --force.
    let o = run(&store, &["tag", "stable", "canary"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--force"));
    ok(&store, &["tag", "stable", "canary", "--force", "--why", "promote v3"]);
    unpack_eq(&store, "stable", &srcs[3], dir.path());
    // v3 misbehaves: roll stable back.
    let r = json(&store, &["rollback", "stable", "--why", "v3 regressed"]);
    assert_eq!(r["old"], ids[3].as_str());
    assert_eq!(r["new"], ids[2].as_str());
    unpack_eq(&store, "stable", &srcs[2], dir.path());
    // Rolling forward is the same operation.
    ok(&store, &["rollback", "stable", "--to", &ids[3]]);
    unpack_eq(&store, "stable", &srcs[3], dir.path());
    let h = json(&store, &["history", "stable"]);
    let h = h.as_array().unwrap();
    assert_eq!(h.len(), 4);
    for field in ["seq", "time", "who", "op", "ref", "new", "prev"] {
        assert!(h[0].get(field).is_some(), "history entry lacks {field}: {}", h[0]);
    }
    assert_eq!(h[2]["op"], "rollback");
    assert_eq!(h[2]["why"], "v3 regressed");
    assert_eq!(h[2]["who"], "tester");
    let tags = json(&store, &["tags"]);
    assert_eq!(tags.as_array().unwrap().len(), 2);
    ok(&store, &["tag", "-d", "canary"]);
    assert_eq!(json(&store, &["tags"]).as_array().unwrap().len(), 1);
    // Unsafe names are refused.
    for bad in ["../x", "/abs", "a\tb", "a/../b", ".hidden"] {
        let o = run(&store, &["tag", bad, &ids[0]]);
        assert_eq!(o.status.code(), Some(1), "{bad:?} accepted");
        assert!(String::from_utf8_lossy(&o.stderr).contains("invalid ref name"), "{bad:?}");
    }
    // A name cannot be both a ref and a folder of refs: clear refusals,
    // nothing changed, and the name is free again once the clash is gone.
    ok(&store, &["tag", "team/a", &ids[0]]);
    let o = run(&store, &["tag", "team", &ids[1]]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("refs named `team/...` exist"), "{}", stderr(&o));
    let o = run(&store, &["tag", "team/a/b", &ids[1]]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("ref `team/a` exists"), "{}", stderr(&o));
    assert!(run(&store, &["show", "team"]).status.code() == Some(1), "a folder of refs is not a ref");
    ok(&store, &["tag", "-d", "team/a"]);
    ok(&store, &["tag", "team", &ids[1]]);
    assert_eq!(json(&store, &["show", "team"])["id"], ids[1].as_str());
    assert_eq!(run(&store, &["verify", "--all"]).status.code(), Some(0));
}

#[test]
fn log_filters_sorts_and_show_lists_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _srcs, ids) = setup(dir.path(), 3);
    let l = json(&store, &["log", "--where", "step=100"]);
    assert_eq!(l.as_array().unwrap().len(), 1);
    assert_eq!(l[0]["id"], ids[1].as_str());
    let l = json(&store, &["log", "--sort", "-loss"]);
    let order: Vec<&str> = l.as_array().unwrap().iter().map(|v| v["id"].as_str().unwrap()).collect();
    assert_eq!(order, vec![ids[2].as_str(), ids[1].as_str(), ids[0].as_str()]);
    let text = ok(&store, &["show", &ids[1]]);
    assert!(text.contains("step = 100") && text.contains("loss = 1.9") && text.contains("author   tester"), "{text}");
    let metrics = dir.path().join("m.json");
    fs::write(&metrics, r#"{"eval/acc": 0.71, "data": "abc123"}"#).unwrap();
    let src = dir.path().join("src").join("v000.safetensors");
    ok(&store, &["pack", src.to_str().unwrap(), "-q", "--metrics", metrics.to_str().unwrap()]);
    let s = json(&store, &["show"]);
    assert_eq!(s["manifest"]["metrics"]["eval/acc"], 0.71);
    assert_eq!(s["manifest"]["metrics"]["data"], "abc123");
}

#[test]
fn diff_reports_what_changed_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut spec = SeriesSpec::new(5, DType::BF16, 2 << 20, 3);
    spec.lora_merge_at = Some(1);
    spec.vocab_extension_at = Some(2);
    let srcs = tdelta_dev::synth::write_series(&spec, &dir.path().join("src")).unwrap();
    ok(&store, &["init"]);
    let ids: Vec<String> =
        srcs.iter().map(|s| ok(&store, &["pack", s.to_str().unwrap(), "-q"]).trim().to_string()).collect();
    // The LoRA merge changes q_proj and v_proj only.
    let d = json(&store, &["diff", &ids[0], &ids[1]]);
    for field in ["a", "b", "tensors", "files"] {
        assert!(d.get(field).is_some(), "diff lacks {field}");
    }
    let changed: Vec<&str> = d["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["status"] != "unchanged")
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(!changed.is_empty());
    for n in &changed {
        assert!(n.contains("q_proj") || n.contains("v_proj"), "unexpected change in {n}");
    }
    for t in d["tensors"].as_array().unwrap().iter().filter(|t| t["status"] == "changed") {
        let rel = t["rel_l2"].as_f64().unwrap();
        assert!(rel > 0.0 && rel < 0.5, "{t}");
        assert!(t["max_abs"].as_f64().unwrap() > 0.0);
    }
    // The vocabulary extension reshapes the embedding.
    let d = json(&store, &["diff", &ids[1], &ids[2]]);
    let emb = d["tensors"].as_array().unwrap().iter().find(|t| t["name"] == "model.embed_tokens.weight").unwrap();
    assert_eq!(emb["status"], "reshaped");
    let text = ok(&store, &["diff", &ids[1], &ids[2]]);
    assert!(text.contains("reshaped"), "{text}");
}

#[test]
fn gc_after_drop_frees_bytes_and_keeps_every_kept_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    // Unrelated checkpoints (different seeds): dropping one frees its blocks.
    let a = SeriesSpec::new(1, DType::BF16, 2 << 20, 1);
    let b = SeriesSpec::new(2, DType::BF16, 2 << 20, 2);
    let sa = tdelta_dev::synth::write_series(&a, &dir.path().join("a")).unwrap();
    let sb = tdelta_dev::synth::write_series(&b, &dir.path().join("b")).unwrap();
    ok(&store, &["init"]);
    let ia = ok(&store, &["pack", sa[0].to_str().unwrap(), "-q", "--base", "none"]).trim().to_string();
    let ib0 = ok(&store, &["pack", sb[0].to_str().unwrap(), "-q", "--base", "none"]).trim().to_string();
    let ib1 = ok(&store, &["pack", sb[1].to_str().unwrap(), "-q"]).trim().to_string();
    // HEAD is ib1; dropping a referenced version is refused.
    let o = run(&store, &["drop", &ib1]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("still referenced by HEAD"));
    ok(&store, &["drop", &ia, "--why", "bad run"]);
    // ib0 is dropped too, but ib1's deltas need its blocks: they stay.
    ok(&store, &["drop", &ib0]);
    let g = json(&store, &["gc"]);
    for field in ["versions", "blocks_removed", "packs_deleted", "packs_rewritten", "bytes_before", "bytes_after"] {
        assert!(g.get(field).is_some(), "gc lacks {field}");
    }
    assert_eq!(g["versions"], 1);
    // The dropped, unrelated checkpoint was about a third of the store.
    let (before, after) = (g["bytes_before"].as_u64().unwrap(), g["bytes_after"].as_u64().unwrap());
    assert!((after as f64) < before as f64 * 0.75, "{g}");
    unpack_eq(&store, &ib1, &sb[1], dir.path());
    let v = json(&store, &["verify", "--all"]);
    assert_eq!(v["versions"].as_array().unwrap().len(), 1);
    // A second gc finds nothing to do.
    let g2 = json(&store, &["gc"]);
    assert_eq!(g2["blocks_removed"], 0);
    assert_eq!(g2["bytes_before"], g2["bytes_after"]);
    let st = json(&store, &["stats"]);
    for field in
        ["versions", "raw_bytes", "unique_bytes", "pack_bytes", "dedup_ratio", "compression_ratio", "total_ratio"]
    {
        assert!(st.get(field).is_some(), "stats lacks {field}");
    }
}

#[test]
fn verify_names_damage_and_catches_a_hand_edited_history() {
    let dir = tempfile::tempdir().unwrap();
    let (store, srcs, ids) = setup(dir.path(), 2);
    ok(&store, &["tag", "stable", &ids[0]]);
    let v = json(&store, &["verify", "--all"]);
    assert!(v["store_problems"].as_array().unwrap().is_empty(), "{v}");
    assert!(v["versions"].as_array().unwrap().iter().all(|x| x["problems"].as_array().unwrap().is_empty()));
    // Edit the history by hand: stable "was always" the newest version.
    let log = store.join("audit.log");
    let text = fs::read_to_string(&log).unwrap();
    let edited = text.replacen(
        &format!("\"op\":\"tag\",\"ref\":\"stable\",\"new\":\"{}\"", ids[0]),
        &format!("\"op\":\"tag\",\"ref\":\"stable\",\"new\":\"{}\"", ids[1]),
        1,
    );
    assert_ne!(edited, text, "the edit did not apply");
    fs::write(&log, edited).unwrap();
    let o = run(&store, &["verify", "--all"]);
    assert_eq!(o.status.code(), Some(3));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("audit.log") && out.contains("edited"), "{out}");
    fs::write(&log, text).unwrap();
    // Damage one pack payload: verify names the damaged version(s) and
    // block; the store's other data still restores.
    let pack = fs::read_dir(store.join("packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pack"))
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    let mut b = fs::read(&pack).unwrap();
    let n = b.len();
    b[n - 40] ^= 0x55;
    fs::write(&pack, b).unwrap();
    let o = run(&store, &["verify", "--all"]);
    assert_eq!(o.status.code(), Some(3));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("DAMAGED") && out.contains("block"), "{out}");
    assert!(out.contains("checksum") || out.contains("hash"), "{out}");
    let _ = srcs;
}

#[test]
fn gc_prune_drops_only_unreferenced_versions_beyond_keep_last() {
    let dir = tempfile::tempdir().unwrap();
    let (store, srcs, ids) = setup(dir.path(), 5);
    ok(&store, &["tag", "stable", &ids[1]]);
    // --keep-last needs --prune.
    assert_eq!(run(&store, &["gc", "--keep-last", "2"]).status.code(), Some(2));
    let g = json(&store, &["gc", "--prune", "--keep-last", "2"]);
    let mut dropped: Vec<&str> = g["dropped"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    dropped.sort();
    let mut expect = vec![ids[0].as_str(), ids[2].as_str()];
    expect.sort();
    // Kept: stable (v1), HEAD (v4) and the 2 newest of HEAD's line (v4, v3).
    assert_eq!(dropped, expect);
    assert_eq!(g["versions"], 3);
    for i in [1, 3, 4] {
        unpack_eq(&store, &ids[i], &srcs[i], dir.path());
    }
    assert_eq!(run(&store, &["show", &ids[0]]).status.code(), Some(1));
    let v = json(&store, &["verify", "--all"]);
    assert_eq!(v["versions"].as_array().unwrap().len(), 3);
    // The drops are in the audit trail.
    let log = std::fs::read_to_string(store.join("audit.log")).unwrap();
    assert_eq!(log.matches("\"op\":\"drop\"").count(), 2);
}
