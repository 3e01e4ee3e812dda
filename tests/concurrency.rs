//! Concurrent writers and readers on one store, and the lock left by a
//! killed writer.

mod common;

use std::fs;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use tdelta::DType;
use tdelta_dev::synth::SeriesSpec;

fn series(dir: &std::path::Path, n: usize) -> Vec<std::path::PathBuf> {
    let spec = SeriesSpec::new(21, DType::BF16, 512 << 10, n);
    tdelta_dev::synth::write_series(&spec, &dir.join("src")).unwrap()
}

#[test]
fn two_packs_at_once_both_land_in_turn() {
    let dir = tempfile::tempdir().unwrap();
    let srcs = series(dir.path(), 3);
    let store = dir.path().join("store");
    init(&store);
    pack(&store, &srcs[0], "v0");
    let spawn = |s: &std::path::Path| {
        bin()
            .arg("--store")
            .arg(&store)
            .args(["pack", path_str(s), "-q"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(&srcs[1]), spawn(&srcs[2]));
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success(), "{}", stderr(&a));
    assert!(b.status.success(), "{}", stderr(&b));
    let ia = String::from_utf8(a.stdout).unwrap().trim().to_string();
    let ib = String::from_utf8(b.stdout).unwrap().trim().to_string();
    assert_eq!(versions(&store).len(), 3);
    ok(&store, &["verify", "--all", "-q"]);
    let scratch = dir.path().join("scratch");
    fs::create_dir_all(&scratch).unwrap();
    assert_eq!(unpack_bytes(&store, &ia, &scratch), fs::read(&srcs[1]).unwrap());
    assert_eq!(unpack_bytes(&store, &ib, &scratch), fs::read(&srcs[2]).unwrap());
    // Serialized: one is the other's parent, HEAD is the later one.
    let head = ref_target(&store, "HEAD").unwrap();
    let first = if head == ia { &ib } else { &ia };
    let shown = json(&store, &["show", &head]);
    assert_eq!(shown["manifest"]["parent"], first.as_str(), "the second pack did not see the first");
    assert_eq!(json(&store, &["history", "HEAD"]).as_array().unwrap().len(), 3);
}

#[test]
fn readers_never_see_a_partial_version() {
    let dir = tempfile::tempdir().unwrap();
    let srcs = series(dir.path(), 4);
    let store = dir.path().join("store");
    init(&store);
    pack(&store, &srcs[0], "v0");
    let expected: Vec<Vec<u8>> = srcs.iter().map(|s| fs::read(s).unwrap()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let mut readers = Vec::new();
    for r in 0..2 {
        let (store, stop, reads, expected) = (store.clone(), stop.clone(), reads.clone(), expected.clone());
        let scratch = dir.path().join(format!("r{r}"));
        fs::create_dir_all(&scratch).unwrap();
        readers.push(std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                match i % 3 {
                    0 => {
                        let v = json(&store, &["log"]);
                        assert!(!v.as_array().unwrap().is_empty());
                    }
                    1 => {
                        let v = json(&store, &["show", "HEAD"]);
                        assert!(v["manifest"]["files"].as_array().is_some_and(|f| f.len() == 1));
                    }
                    _ => {
                        let b = unpack_bytes(&store, "HEAD", &scratch);
                        assert!(expected.contains(&b), "reader {r} restored bytes of no version");
                    }
                }
                reads.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // Writers: packs, a drop and gc (which deletes and rewrites packs
    // under the readers' feet).
    let mut ids = vec![versions(&store)[0].clone()];
    for s in &srcs[1..] {
        ids.push(pack(&store, s, "v"));
    }
    ok(&store, &["drop", &ids[1], "-q"]);
    ok(&store, &["gc", "-q"]);
    ok(&store, &["drop", &ids[2], "-q"]);
    ok(&store, &["gc", "-q"]);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().expect("a reader failed");
    }
    let n = reads.load(Ordering::Relaxed);
    eprintln!("reads during writes: {n}");
    assert!(n > 0);
    ok(&store, &["verify", "--all", "-q"]);
}

#[test]
fn a_killed_writer_leaves_no_stale_lock() {
    let dir = tempfile::tempdir().unwrap();
    let srcs = series(dir.path(), 2);
    let store = dir.path().join("store");
    init(&store);
    let v0 = pack(&store, &srcs[0], "v0");
    let lock = store.join("lock");

    // 1. While some process holds the OS lock, a writer waits; when that
    //    process is killed, the writer proceeds at once. The holder is
    //    util-linux `flock`, which takes the same flock(2) lock as tdelta,
    //    so the check does not depend on how long a pack takes.
    // `-o`: the lock stays with `flock` itself, not with its `sleep` child.
    match Command::new("flock").args(["-x", "-o"]).arg(&lock).args(["sleep", "20"]).spawn() {
        Err(e) => eprintln!("skipping the held-lock half: cannot run flock: {e}"),
        Ok(mut holder) => {
            let probe = fs::OpenOptions::new().read(true).write(true).open(&lock).unwrap();
            let t = Instant::now();
            // Wait until the holder has the lock (our own try_lock fails).
            while probe.try_lock().is_ok() {
                probe.unlock().unwrap();
                assert!(t.elapsed() < Duration::from_secs(20), "flock never took the lock");
                std::thread::sleep(Duration::from_millis(5));
            }
            let mut waiter =
                bin().arg("--store").arg(&store).args(["tag", "w", &v0, "-q"]).stderr(Stdio::piped()).spawn().unwrap();
            std::thread::sleep(Duration::from_millis(400));
            let still_waiting = waiter.try_wait().unwrap().is_none();
            holder.kill().unwrap();
            holder.wait().unwrap();
            assert!(still_waiting, "a second writer did not wait for the lock holder");
            let t = Instant::now();
            let w = waiter.wait_with_output().unwrap();
            assert!(w.status.success(), "{}", stderr(&w));
            assert!(t.elapsed() < Duration::from_secs(10), "the lock outlived its killed holder");
        }
    }

    // 2. A real writer killed while it holds the lock leaves nothing that
    //    blocks the next writer (the lock file may still name it).
    let mut child = bin()
        .arg("--store")
        .arg(&store)
        .args(["pack", path_str(&srcs[1]), "-q"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mine = format!("pid {} ", child.id());
    let t = Instant::now();
    while !fs::read_to_string(&lock).unwrap_or_default().starts_with(&mine) && child.try_wait().unwrap().is_none() {
        assert!(t.elapsed() < Duration::from_secs(20), "the writer never took the lock");
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().ok();
    child.wait().unwrap();
    let t = Instant::now();
    ok(&store, &["tag", "after-kill", &v0, "-q"]);
    assert!(t.elapsed() < Duration::from_secs(5), "stale lock after a killed writer");
    ok(&store, &["verify", "--all", "-q"]);
    // A lock file with garbage from some dead process is harmless too.
    fs::write(&lock, "pid 999999 since 0").unwrap();
    ok(&store, &["tag", "garbage-lock", &v0, "-q"]);
}
