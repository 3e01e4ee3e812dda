//! Refs, `HEAD` and the audit log agree, or `verify` says so (issue 12):
//! refs moved or deleted by hand, a deleted or damaged audit log and
//! `tdelta repair audit`, the one crash window `recover` completes, a
//! damaged config and a stray file in `packs/`.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;
use serde_json::Value;
use tdelta::DType;
use tdelta_dev::synth::SeriesSpec;

struct Fx {
    _dir: tempfile::TempDir,
    store: PathBuf,
    srcs: Vec<PathBuf>,
    ids: Vec<String>,
    scratch: PathBuf,
}

/// Three versions (HEAD at the last), `stable` at the second.
fn fixture() -> Fx {
    let dir = tempfile::tempdir().unwrap();
    let spec = SeriesSpec::new(5, DType::BF16, 256 << 10, 3);
    let srcs = tdelta_dev::synth::write_series(&spec, &dir.path().join("src")).unwrap();
    let store = dir.path().join("store");
    init(&store);
    let ids: Vec<String> = srcs.iter().enumerate().map(|(i, s)| pack(&store, s, &format!("v{i}"))).collect();
    ok(&store, &["tag", "stable", &ids[1], "-q"]);
    let scratch = dir.path().join("scratch");
    fs::create_dir_all(&scratch).unwrap();
    Fx { _dir: dir, store, srcs, ids, scratch }
}

fn out(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(o))
}

/// `verify --all`: exit code and everything printed.
fn verify_all(store: &Path) -> (Option<i32>, String) {
    let o = run(store, &["verify", "--all", "-q"]);
    (o.status.code(), out(&o))
}

/// The moves of `name` in the audit log, oldest first.
fn history(store: &Path, name: &str) -> Vec<Value> {
    json(store, &["history", name]).as_array().cloned().unwrap_or_default()
}

fn all_restore(fx: &Fx) {
    for (i, id) in fx.ids.iter().enumerate() {
        assert_eq!(unpack_bytes(&fx.store, id, &fx.scratch), fs::read(&fx.srcs[i]).unwrap(), "v{i}");
    }
}

/// A writer (a tag that moves nothing else) is refused, naming the cure.
fn writes_refused(store: &Path, id: &str, want: &str) {
    let o = run(store, &["tag", "other", id, "-q"]);
    // Damage found: exit 3, as for `verify`.
    assert_eq!(o.status.code(), Some(3), "{}", out(&o));
    let e = stderr(&o);
    assert!(e.contains(want) && e.contains("repair audit"), "{e}");
    assert!(!e.contains("panicked"), "{e}");
}

#[test]
fn ref_redirected_by_hand_is_damage_not_a_recovered_crash() {
    let fx = fixture();
    let s = &fx.store;
    let stable_moves = history(s, "stable").len();
    // A valid ref file (right checksum) naming another version.
    fs::copy(s.join("HEAD"), s.join("refs/stable")).unwrap();
    let (code, text) = verify_all(s);
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("refs/stable") && text.contains("changed outside tdelta"), "{text}");
    assert!(text.contains(&fx.ids[2][..8]) && text.contains(&fx.ids[1][..8]), "{text}");
    // The next writer does not launder the edit as a `recover`.
    writes_refused(s, &fx.ids[0], "refs/stable");
    assert_eq!(history(s, "stable").len(), stable_moves);
    assert!(!fs::read_to_string(s.join("audit.log")).unwrap().contains("\"recover\""));

    // The owner records it; the log agrees again and writes go on.
    let r = json(s, &["repair", "audit", "--why", "moved by ops"]);
    assert_eq!(r["refs_recorded"][0]["name"], "stable", "{r}");
    assert_eq!(r["refs_recorded"][0]["logged"], fx.ids[1].as_str());
    assert_eq!(r["refs_recorded"][0]["current"], fx.ids[2].as_str());
    let h = history(s, "stable");
    let last = h.last().unwrap();
    assert_eq!((last["op"].as_str(), last["new"].as_str()), (Some("repair"), Some(fx.ids[2].as_str())), "{last}");
    assert_eq!(verify_all(s).0, Some(0));
    ok(s, &["tag", "other", "HEAD", "-q"]);
    assert_eq!(verify_all(s).0, Some(0));
}

#[test]
fn ref_deleted_by_hand_is_damage() {
    let fx = fixture();
    let s = &fx.store;
    fs::remove_file(s.join("refs/stable")).unwrap();
    let (code, text) = verify_all(s);
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("refs/stable: is missing") && text.contains("deleted outside tdelta"), "{text}");
    writes_refused(s, &fx.ids[0], "refs/stable");
    ok(s, &["repair", "audit", "-q"]);
    let h = history(s, "stable");
    assert_eq!(h.last().unwrap()["op"], "repair");
    assert!(h.last().unwrap()["new"].is_null(), "{h:?}");
    assert_eq!(verify_all(s).0, Some(0));
    all_restore(&fx);
}

#[test]
fn head_deleted_by_hand_is_damage_and_log_does_not_say_empty() {
    let fx = fixture();
    let s = &fx.store;
    fs::remove_file(s.join("HEAD")).unwrap();
    let (code, text) = verify_all(s);
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("HEAD: is missing") && text.contains(&fx.ids[2][..8]), "{text}");
    // Plain `verify` (HEAD's version) reports it too, instead of failing.
    let o = run(s, &["verify", "-q"]);
    assert_eq!(o.status.code(), Some(3), "{}", out(&o));
    assert!(out(&o).contains("HEAD: is missing"), "{}", out(&o));
    let o = run(s, &["log"]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{e}");
    assert!(!e.contains("no versions yet") && e.contains("holds 3 versions"), "{e}");
    writes_refused(s, &fx.ids[0], "HEAD");
    ok(s, &["repair", "audit", "-q"]);
    assert_eq!(verify_all(s).0, Some(0));
    all_restore(&fx);
    // Packing goes on and sets HEAD again.
    let id = pack(s, &fx.srcs[0], "again");
    assert_eq!(ref_target(s, "HEAD").as_deref(), Some(id.as_str()));
    assert_eq!(verify_all(s).0, Some(0));
}

#[test]
fn deleted_audit_log_is_reported_and_repair_starts_a_new_one() {
    let fx = fixture();
    let s = &fx.store;
    fs::remove_file(s.join("audit.log")).unwrap();
    let (code, text) = verify_all(s);
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("STORE") && text.contains("audit.log") && text.contains("missing"), "{text}");
    // Every version is still checked and listed.
    assert_eq!(text.matches("ok       ").count(), 3, "{text}");
    writes_refused(s, &fx.ids[0], "audit log is missing");
    let r = json(s, &["repair", "audit"]);
    assert_eq!(r["log_problem"], "audit.log is missing", "{r}");
    assert!(r["set_aside"].is_null());
    let log = fs::read_to_string(s.join("audit.log")).unwrap();
    assert!(log.starts_with("tdelta-audit 1\n"), "{log}");
    // The repair entry records every ref's current value.
    let first = history(s, "HEAD");
    assert_eq!(first[0]["op"], "repair");
    assert!(log.contains(&format!("HEAD={}", fx.ids[2])) && log.contains(&format!("stable={}", fx.ids[1])), "{log}");
    assert_eq!(verify_all(s).0, Some(0));
    ok(s, &["tag", "other", "HEAD", "-q"]);
    assert_eq!(verify_all(s).0, Some(0));
}

#[test]
fn damaged_audit_log_is_set_aside_and_its_valid_prefix_kept() {
    let fx = fixture();
    let s = &fx.store;
    let original = fs::read_to_string(s.join("audit.log")).unwrap();
    // Entry 2 edited without resealing: entries 2.. no longer check out.
    let damaged = original.replacen("\"v1\"", "\"v one\"", 1);
    assert_ne!(damaged, original);
    fs::write(s.join("audit.log"), &damaged).unwrap();
    let (code, text) = verify_all(s);
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("entry 2 was edited"), "{text}");
    writes_refused(s, &fx.ids[0], "audit log is damaged");

    let r = json(s, &["repair", "audit"]);
    assert_eq!(r["kept_entries"], 1, "{r}");
    let aside = PathBuf::from(r["set_aside"].as_str().unwrap());
    assert!(aside.file_name().unwrap().to_str().unwrap().starts_with("audit.log.damaged-"), "{r}");
    assert_eq!(fs::read_to_string(&aside).unwrap(), damaged, "the damaged file is kept as it was");
    // HEAD (logged at v0 by the kept entry) and stable (not logged) are
    // recorded where they are.
    let mut names: Vec<&str> =
        r["refs_recorded"].as_array().unwrap().iter().map(|x| x["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["HEAD", "stable"], "{r}");
    let h = history(s, "HEAD");
    assert_eq!(h[0]["seq"], 1);
    assert_eq!(h[0]["op"], "pack");
    assert_eq!(h.last().unwrap()["new"], fx.ids[2].as_str());
    assert_eq!(verify_all(s).0, Some(0));
    // Nothing more to repair; writes go on.
    let again = json(s, &["repair", "audit"]);
    assert_eq!(again["entries_appended"], 0, "{again}");
    ok(s, &["rollback", "stable", "--to", &fx.ids[0], "-q"]);
    assert_eq!(verify_all(s).0, Some(0));
    all_restore(&fx);
}

/// The last line of the audit log: (seq, hash).
fn log_tail(store: &Path) -> (u64, String) {
    let log = fs::read_to_string(store.join("audit.log")).unwrap();
    let last: Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    (last["seq"].as_u64().unwrap(), last["hash"].as_str().unwrap().to_string())
}

/// The state a writer killed between a ref's rename and its audit append
/// leaves (FORMAT.md §12): the pending record, then the moved ref (if
/// `ref_file_of_to`, a ref file naming `to`, is given; else it was killed
/// before the rename).
fn die_after_moving(store: &Path, name: &str, from: &str, to: &str, ref_file_of_to: Option<&Path>) {
    let (seq, prev) = log_tail(store);
    let e = tdelta::AuditEntry {
        seq: seq + 1,
        time: 1_700_000_000,
        who: "alice@build".into(),
        op: "rollback".into(),
        r#ref: Some(name.into()),
        old: Some(from.parse().unwrap()),
        new: Some(to.parse().unwrap()),
        why: "bad eval".into(),
        prev: prev.parse().unwrap(),
    };
    fs::write(store.join("audit.pending"), common::sealed(&e)).unwrap();
    if let Some(src) = ref_file_of_to {
        let dest = if name == "HEAD" { store.join("HEAD") } else { store.join("refs").join(name) };
        fs::copy(src, dest).unwrap();
    }
}

#[test]
fn next_writer_completes_the_move_a_killed_writer_recorded_as_pending() {
    let fx = fixture();
    let s = &fx.store;
    let before = history(s, "HEAD").len();
    // As if `rollback HEAD --to stable` died after the ref's rename.
    die_after_moving(s, "HEAD", &fx.ids[2], &fx.ids[1], Some(&s.join("refs/stable")));
    // A move under way is no damage.
    let (code, text) = verify_all(s);
    assert_eq!(code, Some(0), "{text}");
    ok(s, &["tag", "other", &fx.ids[0], "-q"]);
    let h = history(s, "HEAD");
    assert_eq!(h.len(), before + 1, "{h:?}");
    let last = h.last().unwrap();
    assert_eq!(last["op"], "recover", "{last}");
    assert_eq!(last["old"], fx.ids[2].as_str());
    assert_eq!(last["new"], fx.ids[1].as_str());
    assert_eq!(last["who"], "alice@build", "the move is the killed writer's: {last}");
    let why = last["why"].as_str().unwrap();
    assert!(why.contains("completes the rollback of HEAD") && why.contains("bad eval"), "{why}");
    assert!(!s.join("audit.pending").exists());
    // Nothing more to record the next time; the chain is intact.
    ok(s, &["tag", "other", &fx.ids[1], "--force", "-q"]);
    assert_eq!(history(s, "HEAD").len(), before + 1);
    assert_eq!(verify_all(s).0, Some(0));
}

#[test]
fn pending_record_without_the_move_is_discarded() {
    let fx = fixture();
    let s = &fx.store;
    let before = fs::read_to_string(s.join("audit.log")).unwrap();
    // Killed after the pending record landed, before the ref moved.
    die_after_moving(s, "stable", &fx.ids[1], &fx.ids[0], None);
    assert_eq!(verify_all(s).0, Some(0));
    ok(s, &["tag", "other", &fx.ids[0], "-q"]);
    let after = fs::read_to_string(s.join("audit.log")).unwrap();
    assert!(!after.contains("\"recover\""), "{after}");
    assert_eq!(after.lines().count(), before.lines().count() + 1, "only the tag was logged");
    assert!(!s.join("audit.pending").exists());
}

#[test]
fn pending_record_does_not_excuse_another_edit() {
    let fx = fixture();
    let s = &fx.store;
    ok(s, &["tag", "first", &fx.ids[0], "-q"]);
    // The record says HEAD -> v1, but HEAD was set to v0 by hand.
    die_after_moving(s, "HEAD", &fx.ids[2], &fx.ids[1], Some(&s.join("refs/stable")));
    fs::copy(s.join("refs/first"), s.join("HEAD")).unwrap();
    let (code, text) = verify_all(s);
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("HEAD: points to") && text.contains("changed outside tdelta"), "{text}");
    writes_refused(s, &fx.ids[0], "HEAD");
}

#[test]
fn resealed_rewrite_passes_unless_a_ref_disagrees_as_documented() {
    let fx = fixture();
    let s = &fx.store;
    // Rewrite the log with entry 2's message changed and every seal
    // recomputed: an unkeyed chain cannot tell (README, FORMAT.md §11).
    let reseal = |edit: &dyn Fn(&mut Value)| common::reseal(s, edit);
    reseal(&|v| {
        if v["seq"] == 2 {
            v["why"] = "rewritten".into();
        }
    });
    assert_eq!(verify_all(s).0, Some(0), "a resealed rewrite is not detectable");
    // One that changes where the log leaves a ref is: the ref disagrees.
    let v0 = fx.ids[0].clone();
    reseal(&move |v| {
        if v["ref"] == "stable" {
            v["new"] = v0.clone().into();
        }
    });
    let (code, text) = verify_all(s);
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("refs/stable"), "{text}");
}

#[test]
fn damaged_config_is_reported_and_versions_still_restore() {
    let fx = fixture();
    let s = &fx.store;
    let mut b = fs::read(s.join("config")).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x10;
    fs::write(s.join("config"), &b).unwrap();
    let (code, text) = verify_all(s);
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains(s.join("config").to_str().unwrap()), "{text}");
    assert_eq!(text.matches("ok       ").count(), 3, "{text}");
    all_restore(&fx);
    // Writes are refused clearly (the block size is not known for sure).
    let o = run(s, &["pack", path_str(&fx.srcs[0]), "-q"]);
    // Damage found: exit 3.
    assert_eq!(o.status.code(), Some(3));
    assert!(stderr(&o).contains("refusing to write") && stderr(&o).contains("config"), "{}", stderr(&o));
}

/// The `.idx` files under `packs/`.
fn indexes(store: &Path) -> Vec<String> {
    let names = fs::read_dir(store.join("packs")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap());
    names.filter(|n| n.ends_with(".idx")).collect()
}

#[test]
fn deleted_pack_index_is_named_with_the_version_it_damages() {
    let fx = fixture();
    let s = &fx.store;
    // One more version, in a pack of its own.
    let before = indexes(s);
    let spec = SeriesSpec::new(1, DType::BF16, 256 << 10, 99);
    let src = tdelta_dev::synth::write_series(&spec, &fx.scratch.join("other")).unwrap();
    let id = pack(s, &src[0], "other");
    let new: Vec<String> = indexes(s).into_iter().filter(|n| !before.contains(n)).collect();
    assert_eq!(new.len(), 1, "{new:?}");
    fs::remove_file(s.join("packs").join(&new[0])).unwrap();
    let (code, text) = verify_all(s);
    assert_eq!(code, Some(3), "{text}");
    let line = text.lines().find(|l| l.contains(&format!("packs/{}", new[0]))).unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("index is missing") && line.contains(&id[..12]), "{line}");
    all_restore(&fx);
}

#[test]
fn stray_file_in_packs_is_reported_and_versions_still_restore() {
    let fx = fixture();
    let s = &fx.store;
    fs::write(s.join("packs/README.idx"), "notes\n").unwrap();
    let (code, text) = verify_all(s);
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("README.idx") && text.contains("unexpected file"), "{text}");
    assert_eq!(text.matches("ok       ").count(), 3, "{text}");
    all_restore(&fx);
    ok(s, &["tag", "other", "HEAD", "-q"]);
    assert!(s.join("packs/README.idx").exists(), "not ours: left in place");
}

#[test]
fn verify_while_refs_move_reports_no_damage() {
    let fx = fixture();
    let (s, ids) = (fx.store.clone(), fx.ids.clone());
    // Readers take no lock: a move between its ref and its audit entry,
    // seen by a concurrent verify, is not damage.
    let writer = std::thread::spawn(move || {
        for i in 0..30 {
            ok(&s, &["tag", "moving", &ids[i % 3], "--force", "-q"]);
            if i % 10 == 9 {
                ok(&s, &["tag", "-d", "moving", "-q"]);
            }
        }
    });
    let mut checks = 0;
    while !writer.is_finished() || checks == 0 {
        let (code, text) = verify_all(&fx.store);
        assert_eq!(code, Some(0), "concurrent verify {checks}: {text}");
        checks += 1;
    }
    writer.join().unwrap();
    eprintln!("{checks} verifies ran during the moves");
}
