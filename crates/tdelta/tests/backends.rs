//! The storage seam: the same suites on the local directory and in memory,
//! and deterministic crash tests with the in-memory backend's faults.

#[macro_use]
mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{checkpoint, small_blocks};
use tdelta::backend::{Backend, Fault, Memory, PutMode};
use tdelta::{Error, Hash, PackOptions, RestoreOptions, Silent, Store};

/// The trait's promises, whatever the backend.
fn object_semantics(make: fn(&Path) -> Arc<dyn Backend>) {
    let dir = tempfile::tempdir().unwrap();
    let b = make(&dir.path().join("s"));
    let b = b.as_ref();
    let t1 = b.put("refs/a/b", b"one", PutMode::Create).unwrap();
    assert!(matches!(b.put("refs/a/b", b"two", PutMode::Create), Err(Error::AlreadyExists { .. })));
    let (bytes, tag) = b.get("refs/a/b", 16).unwrap();
    assert_eq!((bytes.as_slice(), &tag), (&b"one"[..], &t1));
    assert!(matches!(b.get("refs/a/b", 2), Err(Error::Corrupt { .. })), "over the cap is damage");

    // Compare-and-swap: the tag read wins once; a stale tag loses.
    let t2 = b.put("refs/a/b", b"two", PutMode::IfMatch(Some(t1.clone()))).unwrap();
    assert_ne!(t1, t2);
    assert!(matches!(b.put("refs/a/b", b"three", PutMode::IfMatch(Some(t1))), Err(Error::Conflict { .. })));
    assert!(matches!(b.put("refs/a/b", b"three", PutMode::IfMatch(None)), Err(Error::Conflict { .. })));
    b.put("HEAD", b"h", PutMode::IfMatch(None)).unwrap();
    assert_eq!(b.get("refs/a/b", 16).unwrap().0, b"two");

    // Ranged reads; a read past the end is damage, not a short read.
    let mut buf = [0u8; 2];
    b.read_at("refs/a/b", 1, &mut buf).unwrap();
    assert_eq!(&buf, b"wo");
    assert!(matches!(b.read_at("refs/a/b", 2, &mut buf), Err(Error::Corrupt { .. })));
    assert!(matches!(b.read_at("nothing", 0, &mut buf), Err(Error::NotFound { .. })));
    assert!(matches!(b.get("nothing", 16), Err(Error::NotFound { .. })));
    assert!(matches!(b.head("refs/a"), Err(Error::NotFound { .. })), "a folder is no object");
    assert_eq!(b.head("refs/a/b").unwrap().size, 3);

    // Streamed objects are invisible until finished; aborted ones never.
    let mut w = b.writer().unwrap();
    w.write_all(b"pack-").unwrap();
    w.write_all(b"bytes").unwrap();
    assert_eq!(w.len(), 10);
    assert!(b.list("packs/").unwrap().is_empty());
    w.finish("packs/p.pack").unwrap();
    let mut w = b.writer().unwrap();
    w.write_all(b"gone").unwrap();
    w.abort();
    let mut w = b.writer().unwrap();
    w.write_all(b"again").unwrap();
    assert!(matches!(w.finish("packs/p.pack"), Err(Error::AlreadyExists { .. })));
    assert_eq!(b.get("packs/p.pack", 100).unwrap().0, b"pack-bytes");

    // Listing: by prefix, nested names, in name order.
    b.put("refs/c", b"c", PutMode::Create).unwrap();
    b.put("refs/a/a", b"a", PutMode::Create).unwrap();
    let names: Vec<String> = b.list("refs/").unwrap().into_iter().map(|o| o.name).collect();
    assert_eq!(names, ["refs/a/a", "refs/a/b", "refs/c"]);
    let names: Vec<String> = b.list("refs/a/").unwrap().into_iter().map(|o| o.name).collect();
    assert_eq!(names, ["refs/a/a", "refs/a/b"]);
    assert_eq!(b.list("packs/").unwrap().len(), 1);

    // Deleting: twice is fine; the name is free again.
    b.delete("refs/a/a").unwrap();
    b.delete("refs/a/a").unwrap();
    b.delete("refs/a/b").unwrap();
    assert!(b.list("refs/a/").unwrap().is_empty());
    b.put("refs/a", b"a ref where a folder was", PutMode::Create).unwrap();

    // One lease at a time; the waiter hears who holds it.
    let held = b.lease(Duration::ZERO, None).unwrap();
    let heard = std::sync::Mutex::new(String::new());
    let note = |h: &str| *heard.lock().unwrap() = h.to_string();
    let e = b.lease(Duration::from_millis(60), Some(&note)).unwrap_err();
    assert!(matches!(e, Error::Locked { .. }), "{e}");
    assert!(!heard.lock().unwrap().is_empty());
    drop(held);
    b.lease(Duration::ZERO, None).unwrap();
}

/// Pack, tag, restore, verify, drop and gc through the library API.
fn store_round_trip(make: fn(&Path) -> Arc<dyn Backend>) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let backend = make(&dir.join("s"));
    let mut store = Store::init_with(Arc::clone(&backend), &small_blocks()).unwrap();
    assert!(matches!(Store::init_with(Arc::clone(&backend), &small_blocks()), Err(Error::StoreExists { .. })));
    let mut ids = Vec::new();
    for v in 0..3u32 {
        let src = dir.join(format!("v{v}.safetensors"));
        checkpoint(&src, 3000, if v == 2 { 1 } else { v + 10 });
        let rep = tdelta::pack(&mut store, &src, &PackOptions::default(), &Silent).unwrap();
        ids.push((rep.id, std::fs::read(&src).unwrap()));
    }
    tdelta::tag(&store, "stable", ids[0].0, false, "first").unwrap();
    assert_eq!(store.resolve("stable").unwrap(), ids[0].0);
    assert_eq!(store.resolve("HEAD~2").unwrap(), ids[0].0);

    let store = Store::open_with(Arc::clone(&backend)).unwrap();
    let out = dir.join("out.safetensors");
    for (id, bytes) in &ids {
        tdelta::restore(&store, *id, &out, &RestoreOptions { force: true }, &Silent).unwrap();
        assert_eq!(&std::fs::read(&out).unwrap(), bytes, "version {id} restores bit-exactly");
    }
    let all = store.versions().unwrap();
    assert_eq!(all.len(), 3);
    let rep = tdelta::verify(&store, &all, &Silent).unwrap();
    assert!(rep.ok(), "{rep:?}");

    tdelta::drop_version(&store, ids[1].0, "not needed").unwrap();
    let mut store = Store::open_with(Arc::clone(&backend)).unwrap();
    let before = store.stats().unwrap();
    let gc = tdelta::gc(&mut store, "").unwrap();
    assert!(gc.blocks_removed > 0 && gc.bytes_after < gc.bytes_before, "{gc:?}");
    assert!(store.stats().unwrap().blocks < before.blocks);
    for (id, bytes) in [&ids[0], &ids[2]] {
        tdelta::restore(&store, *id, &out, &RestoreOptions { force: true }, &Silent).unwrap();
        assert_eq!(&std::fs::read(&out).unwrap(), bytes);
    }
    let rep = tdelta::verify(&store, &store.versions().unwrap(), &Silent).unwrap();
    assert!(rep.ok(), "{rep:?}");
    let ops: Vec<String> = tdelta::audit_entries(&store).unwrap().into_iter().map(|e| e.op.to_string()).collect();
    assert_eq!(ops, ["pack", "pack", "pack", "tag", "drop", "gc"]);
}

on_both_backends!(object_semantics, store_round_trip);

#[test]
fn a_local_store_made_through_the_seam_is_the_same_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    Store::init(&path, &small_blocks()).unwrap();
    for d in ["packs", "versions", "refs", "tmp"] {
        assert!(path.join(d).is_dir(), "{d}");
    }
    let log = std::fs::read_to_string(path.join("audit.log")).unwrap();
    assert_eq!(log, "tdelta-audit 1\n");
    let store = Store::open(&path).unwrap();
    assert!(store.backend().describe().starts_with("local "));
    assert_eq!(store.root(), path);
}

/// A pack and a tag, twice; the ids whose operation returned success,
/// with the bytes they must restore to.
fn pack_tag_sequence(store: &mut Store, dir: &Path) -> Vec<(Hash, Vec<u8>)> {
    let mut landed = Vec::new();
    for v in 0..2u32 {
        let src = dir.join(format!("v{v}.safetensors"));
        checkpoint(&src, 2000, v + 1);
        if let Ok(rep) = tdelta::pack(store, &src, &PackOptions::default(), &Silent) {
            landed.push((rep.id, std::fs::read(&src).unwrap()));
            let _ = tdelta::tag(store, &format!("v{v}"), rep.id, true, "");
        }
    }
    landed
}

/// What another process finds after the writer met `fault` at write `n`
/// of the sequence: the store opens, verifies clean, every version whose
/// id was returned restores bit-exactly, refs point at whole versions,
/// and the next writer can write.
fn crash_at(n: u64, fault: Fault) {
    let dir = tempfile::tempdir().unwrap();
    let mem = Arc::new(Memory::new());
    let mut store = Store::init_with(mem.clone(), &small_blocks()).unwrap();
    mem.inject(mem.writes() + n, fault);
    let landed = pack_tag_sequence(&mut store, dir.path());
    drop(store);

    let after: Arc<dyn Backend> = Arc::new(mem.snapshot());
    let mut store = Store::open_with(Arc::clone(&after)).unwrap();
    let what = format!("{fault:?} at write {n}");
    // The next writer settles what the dead one left (a pending move).
    let src = dir.path().join("next.safetensors");
    checkpoint(&src, 2000, 99);
    let next = tdelta::pack(&mut store, &src, &PackOptions::default(), &Silent)
        .unwrap_or_else(|e| panic!("{what}: the next writer fails: {e}"));
    let versions = store.versions().unwrap();
    let rep = tdelta::verify(&store, &versions, &Silent).unwrap();
    assert!(rep.ok(), "{what}: {rep:?}");
    let out = dir.path().join("out.safetensors");
    for (id, bytes) in landed.iter().chain([&(next.id, std::fs::read(&src).unwrap())]) {
        tdelta::restore(&store, *id, &out, &RestoreOptions { force: true }, &Silent)
            .unwrap_or_else(|e| panic!("{what}: {id}: {e}"));
        assert_eq!(&std::fs::read(&out).unwrap(), bytes, "{what}: {id}");
    }
    for (name, id) in store.refs().unwrap().into_iter().chain([("HEAD".into(), store.resolve("HEAD").unwrap())]) {
        store.manifest(id).unwrap_or_else(|e| panic!("{what}: ref {name}: {e}"));
    }
}

#[test]
fn every_fault_at_every_write_of_pack_and_tag_leaves_a_sound_store() {
    let dir = tempfile::tempdir().unwrap();
    let mem = Arc::new(Memory::new());
    let mut store = Store::init_with(mem.clone(), &small_blocks()).unwrap();
    let start = mem.writes();
    assert_eq!(pack_tag_sequence(&mut store, dir.path()).len(), 2);
    let writes = mem.writes() - start;
    assert!(writes >= 10, "a pack and a tag write several objects: {writes}");
    for n in 1..=writes {
        for fault in [Fault::Fail, Fault::Tear, Fault::LoseResponse] {
            crash_at(n, fault);
        }
    }
}

#[test]
fn a_refused_lease_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mem = Arc::new(Memory::new());
    let mut store = Store::init_with(mem.clone(), &small_blocks()).unwrap();
    let before = mem.names();
    mem.fail_lease(2);
    let src = dir.path().join("v.safetensors");
    checkpoint(&src, 100, 3);
    let e = tdelta::pack(&mut store, &src, &PackOptions::default(), &Silent).unwrap_err();
    assert!(e.to_string().contains("injected fault: lease 2"), "{e}");
    assert_eq!(mem.names(), before);
    tdelta::pack(&mut store, &src, &PackOptions::default(), &Silent).unwrap();
}
