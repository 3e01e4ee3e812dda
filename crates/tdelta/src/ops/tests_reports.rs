//! Every report serialises with the field names front-ends print (the
//! CLI's `--json`, the Python package's records): these tests pin them.

use std::fs;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use serde_json::Value;

use super::*;
use crate::{InitOptions, Store};

fn one_file(path: &Path, fill: u8) {
    let bytes = vec![fill; 64];
    let view = TensorView::new(Dtype::U8, vec![64], &bytes).unwrap();
    fs::write(path, safetensors::serialize([("w".to_string(), view)], None).unwrap()).unwrap();
}

/// The field names of the JSON object `v`, sorted.
fn fields(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap_or_else(|| panic!("not an object: {v}")).keys().cloned().collect();
    k.sort();
    k
}

/// `names`, sorted, as owned strings.
fn sorted(names: &[&str]) -> Vec<String> {
    let mut k: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    k.sort();
    k
}

fn json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap()
}

#[test]
fn reports_serialise_with_their_field_names() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::init(&dir.path().join("store"), &InitOptions::default()).unwrap();
    let (a, b) = (dir.path().join("a.safetensors"), dir.path().join("b.safetensors"));
    one_file(&a, 1);
    one_file(&b, 2);
    let p1 = pack(&mut s, &a, &PackOptions { tag: Some("first".into()), ..Default::default() }, &Silent).unwrap();
    let v = json(&p1);
    assert_eq!(
        fields(&v),
        sorted(&[
            "id",
            "raw_bytes",
            "stored_bytes",
            "new_blocks",
            "reused_blocks",
            "delta_blocks",
            "max_depth",
            "seconds",
            "lock_wait_seconds",
            "tag",
            "skipped_files",
            "lossy"
        ])
    );
    assert_eq!(
        (v["id"].as_str(), v["tag"].as_str(), &v["lossy"]),
        (Some(&*p1.id.to_hex()), Some("first"), &json(&false))
    );
    assert_eq!(v["raw_bytes"], p1.manifest.stats.raw_bytes);
    let id2 = pack(&mut s, &b, &PackOptions::default(), &Silent).unwrap().id;

    let out = dir.path().join("out.safetensors");
    let r = json(&restore(&s, id2, &out, &RestoreOptions::default(), &Silent).unwrap());
    assert_eq!(
        fields(&r),
        sorted(&[
            "id",
            "lossy",
            "out",
            "bytes",
            "files",
            "blocks",
            "decoded_blocks",
            "payload_bytes",
            "max_chain",
            "seconds"
        ])
    );
    assert_eq!((r["files"].as_u64(), r["max_chain"].as_u64()), (Some(1), Some(2)), "{r}");

    let log = log(&s, &LogQuery::default()).unwrap();
    let l = json(&log);
    assert_eq!(fields(&l), sorted(&["entries", "empty_store", "damaged"]));
    let e = &l["entries"][0];
    assert_eq!(
        fields(e),
        sorted(&[
            "id",
            "refs",
            "parent",
            "created",
            "author",
            "message",
            "raw_bytes",
            "stored_bytes",
            "meta",
            "metrics",
            "lossy"
        ])
    );
    assert_eq!((e["id"].as_str(), &e["refs"]), (Some(&*id2.to_hex()), &json(&["HEAD"])), "{e}");
    assert_eq!(l["entries"][1]["refs"], json(&["first"]));
    let dropped = json(&LogEntry::new(p1.id, LogState::Dropped));
    assert_eq!(fields(&dropped), sorted(&["id", "refs", "dropped"]));
    let damaged = json(&LogEntry::new(p1.id, LogState::Damaged("gone".into())));
    assert_eq!((fields(&damaged), &damaged["damaged"]), (sorted(&["id", "refs", "damaged"]), &json(&"gone")));

    let t = json(&tag(&s, "stable", id2, false, "").unwrap());
    assert_eq!((fields(&t), &t["old"]), (sorted(&["tag", "id", "old"]), &Value::Null));
    let u = json(&untag(&s, "stable", "").unwrap());
    assert_eq!((fields(&u), &u["deleted"]), (sorted(&["tag", "old", "deleted"]), &json(&true)));
    let rb = json(&rollback(&s, "HEAD", RollbackTarget::Steps(1), "").unwrap());
    assert_eq!((fields(&rb), &rb["ref"], &rb["new"]), (sorted(&["ref", "old", "new"]), &json(&"HEAD"), &json(&p1.id)));
    let tl = json(&tags(&s).unwrap());
    assert_eq!(fields(&tl[0]), sorted(&["name", "id"]));

    let sh = json(&show(&s, id2).unwrap());
    assert_eq!((fields(&sh), &sh["signed_by"]), (sorted(&["id", "refs", "manifest", "signed_by"]), &Value::Null));
    assert_eq!(sh["manifest"]["stats"]["raw_bytes"], p1.manifest.stats.raw_bytes);

    let d = json(&diff(&s, p1.id, id2).unwrap());
    assert_eq!(fields(&d), sorted(&["a", "b", "tensors", "files"]));
    assert_eq!(
        fields(&d["tensors"][0]),
        sorted(&[
            "name",
            "status",
            "dtype",
            "shape",
            "bytes",
            "changed_blocks",
            "changed_fraction",
            "rel_l2",
            "max_abs"
        ])
    );
    assert_eq!(d["tensors"][0]["status"], "changed");

    let vr = json(&verify(&s, &[id2], &Silent).unwrap());
    assert_eq!(fields(&vr), sorted(&["versions", "blocks_checked", "bytes_checked", "store_problems"]));
    assert_eq!(fields(&vr["versions"][0]), sorted(&["id", "problems"]));

    let st = json(&stats(&s).unwrap());
    for f in ["versions", "raw_bytes", "unique_bytes", "pack_bytes", "dedup_ratio", "compression_ratio", "total_ratio"]
    {
        assert!(st.get(f).is_some(), "stats lack {f}: {st}");
    }
    // What a gc did and what it would do share these names.
    let gc_fields = |more: &[&str]| {
        let mut f = vec!["dropped", "versions", "blocks_removed", "packs_deleted", "packs_rewritten"];
        f.extend_from_slice(more);
        sorted(&f)
    };
    let pv = json(&gc_dry_run(&s, &[]).unwrap());
    assert_eq!((fields(&pv), &pv["dry_run"]), (gc_fields(&["bytes_freed", "dry_run"]), &json(&true)));
    let h = json(&history(&s, "first").unwrap());
    assert_eq!(h[0]["op"], "tag", "{h}");
    let sh = json(&signed_history(&s, Some("first")).unwrap());
    assert_eq!((&sh[0]["op"], &sh[0]["signed_by"]), (&json(&"tag"), &Value::Null), "{sh}");
    assert_eq!(fields(&sh[0]), sorted(&["seq", "time", "who", "op", "ref", "new", "why", "prev", "signed_by"]), "{sh}");
    // HEAD was rolled back to the first version and `stable` deleted: the
    // second is free to drop.
    let d = json(&drop_version(&s, id2, "").unwrap());
    assert_eq!((fields(&d), &d["dropped"]), (sorted(&["dropped"]), &json(&id2)));
    let g = json(&gc(&mut s, "").unwrap());
    assert_eq!(fields(&g), gc_fields(&["bytes_before", "bytes_after"]));
    let init = json(&crate::InitReport::of(&s));
    assert_eq!((fields(&init), &init["block_size"]), (sorted(&["store", "block_size"]), &json(&s.config().block_size)));
    assert_eq!(init["store"], json(&s.root()));
}

#[test]
fn diff_statuses_are_typed_and_named_as_in_json() {
    for s in [
        TensorStatus::Changed,
        TensorStatus::Reshaped,
        TensorStatus::DtypeChanged,
        TensorStatus::Added,
        TensorStatus::Removed,
        TensorStatus::Unchanged,
    ] {
        assert_eq!(json(&s), s.name());
    }
    for s in [FileStatus::Added, FileStatus::Removed, FileStatus::Changed, FileStatus::HeaderChanged] {
        assert_eq!(json(&s), s.name());
    }
    assert_eq!(FileStatus::HeaderChanged.name(), "header changed");
}

#[test]
fn verify_names_the_damaged_block_with_a_typed_problem() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::init(&dir.path().join("store"), &InitOptions::default()).unwrap();
    let a = dir.path().join("a.safetensors");
    one_file(&a, 7);
    let rep = pack(&mut s, &a, &PackOptions::default(), &Silent).unwrap();
    assert!(verify(&s, &[rep.id], &Silent).unwrap().ok());
    // Damage the one payload of the tensor: the pack's last bytes before
    // its end hold no framing the reader needs to find the record.
    let pack_path = s.root().join("packs").join(format!("{}.pack", rep.packs[0].to_hex()));
    let mut bytes = fs::read(&pack_path).unwrap();
    let at = bytes.len() - 20;
    bytes[at] ^= 0xff;
    fs::write(&pack_path, bytes).unwrap();
    let s = Store::open(s.root()).unwrap();
    let v = verify(&s, &[rep.id], &Silent).unwrap();
    assert!(!v.ok());
    assert!(
        v.store_problems.iter().any(|p| matches!(p, Problem::Pack { pack: Some(id), .. } if *id == rep.packs[0])),
        "{:?}",
        v.store_problems
    );
    let blocks: Vec<&Problem> = v.versions[0].problems.iter().filter(|p| matches!(p, Problem::Block { .. })).collect();
    assert!(!blocks.is_empty(), "{:?}", v.versions[0].problems);
    for p in &blocks {
        let Problem::Block { file, part, check, .. } = p else { unreachable!() };
        assert_eq!(file, "a.safetensors");
        assert!(matches!(part, BlockPart::Tensor | BlockPart::Header), "{p:?}");
        assert!(check.is_some(), "{p:?}");
        assert!(p.to_string().starts_with("a.safetensors: "), "{p}");
        let j = json(p);
        assert_eq!(fields(&j), sorted(&["what", "file", "part", "tensor", "index", "check", "message"]));
        assert_eq!(j["what"], "block");
    }
    let more = Problem::MoreBlocks { count: 3 };
    assert_eq!(more.to_string(), "... and 3 more damaged blocks");
    assert_eq!(json(&more), serde_json::json!({"what": "more_blocks", "count": 3}));
    let tensor = Problem::Block {
        file: "m.safetensors".into(),
        part: BlockPart::Tensor,
        tensor: Some("w".into()),
        index: 2,
        check: Some(crate::CorruptKind::Checksum),
        message: "bad".into(),
    };
    assert_eq!(tensor.to_string(), "m.safetensors: tensor `w` block 2: bad");
    assert_eq!(json(&tensor)["check"], "checksum");
}
