//! Concurrent writers and readers on one store, each with its own handle
//! as separate processes would have, on the local directory and in memory:
//! writers take turns through the backend's lease, refs move by
//! compare-and-swap, readers never see a partial version. On the local
//! directory also: a lease held by another process makes a writer wait or
//! refuse, and goes with that process when it is killed.

#[macro_use]
mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{restored, series, small_blocks};
use tdelta::backend::Backend;
use tdelta::{ErrorKind, Hash, Policy, Silent, Store};

fn pack(store: &mut Store, src: &Path) -> Hash {
    common::pack_with(store, src, Policy::default())
}

fn two_packs_at_once_both_land_in_turn(make: fn(&Path) -> Arc<dyn Backend>) {
    let dir = tempfile::tempdir().unwrap();
    let srcs = series(&dir.path().join("src"), 3, 16 << 10, 21);
    let b = make(&dir.path().join("store"));
    let mut store = Store::init_with(Arc::clone(&b), &small_blocks()).unwrap();
    pack(&mut store, &srcs[0]);
    let ids: Vec<Hash> = std::thread::scope(|s| {
        let writers: Vec<_> = srcs[1..]
            .iter()
            .map(|src| {
                let b = Arc::clone(&b);
                s.spawn(move || pack(&mut Store::open_with(b).unwrap(), src))
            })
            .collect();
        writers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let store = Store::open_with(b).unwrap();
    assert_eq!(store.versions().unwrap().len(), 3);
    let rep = tdelta::verify(&store, &store.versions().unwrap(), &Silent).unwrap();
    assert!(rep.ok(), "{rep:?}");
    for (id, src) in ids.iter().zip(&srcs[1..]) {
        assert_eq!(restored(&store, *id, dir.path()).unwrap(), std::fs::read(src).unwrap());
    }
    // Serialized: one is the other's parent, HEAD is the later one.
    let head = store.resolve("HEAD").unwrap();
    let first = if head == ids[0] { ids[1] } else { ids[0] };
    assert_eq!(store.manifest(head).unwrap().parent, Some(first), "the second pack did not see the first");
    assert_eq!(tdelta::history(&store, "HEAD").unwrap().len(), 3);
}

fn readers_never_see_a_partial_version(make: fn(&Path) -> Arc<dyn Backend>) {
    let dir = tempfile::tempdir().unwrap();
    let srcs = series(&dir.path().join("src"), 4, 16 << 10, 22);
    let b = make(&dir.path().join("store"));
    let mut store = Store::init_with(Arc::clone(&b), &small_blocks()).unwrap();
    let mut ids = vec![pack(&mut store, &srcs[0])];
    let expected: Vec<Vec<u8>> = srcs.iter().map(|s| std::fs::read(s).unwrap()).collect();
    let stop = AtomicBool::new(false);
    let reads = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for r in 0..2 {
            let (b, stop, reads, expected) = (Arc::clone(&b), &stop, &reads, &expected);
            let scratch = dir.path().join(format!("r{r}"));
            std::fs::create_dir_all(&scratch).unwrap();
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    // A fresh handle each time, as a new reader process.
                    let store = Store::open_with(Arc::clone(&b)).unwrap();
                    let head = store.resolve("HEAD").unwrap();
                    let read = (|| {
                        assert!(!tdelta::log(&store, &Default::default())?.entries.is_empty());
                        assert_eq!(store.manifest(head)?.files.len(), 1);
                        restored(&store, head, &scratch)
                    })();
                    let got = match read {
                        Ok(got) => got,
                        // HEAD moved on and the version it named was
                        // dropped (and collected) before it was read: a
                        // clean error, and the next round reads the new
                        // HEAD. Anything else is a failure.
                        Err(_) if !Store::open_with(Arc::clone(&b)).unwrap().versions().unwrap().contains(&head) => {
                            continue;
                        }
                        Err(e) => panic!("reader {r}: {e}"),
                    };
                    assert!(expected.contains(&got), "reader {r} restored bytes of no version");
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        // Writers: packs, a drop and gc (which deletes and rewrites packs
        // under the readers' feet).
        for src in &srcs[1..] {
            ids.push(pack(&mut store, src));
        }
        for id in [ids[1], ids[2]] {
            tdelta::drop_version(&store, id, "").unwrap();
            tdelta::gc(&mut store, "").unwrap();
        }
        // Each reader finishes at least one read after the writes.
        let done = reads.load(Ordering::Relaxed);
        while reads.load(Ordering::Relaxed) < done + 2 {
            std::thread::yield_now();
        }
        stop.store(true, Ordering::Relaxed);
    });
    eprintln!("reads during writes: {}", reads.load(Ordering::Relaxed));
    let rep = tdelta::verify(&store, &store.versions().unwrap(), &Silent).unwrap();
    assert!(rep.ok(), "{rep:?}");
}

/// Two writers moving the same ref over and over: every move lands (each
/// writer reads the ref under the lease and swaps it against what it
/// read), the log records every move in order, and the ref ends where the
/// log's last move put it.
fn refs_move_by_compare_and_swap(make: fn(&Path) -> Arc<dyn Backend>) {
    let dir = tempfile::tempdir().unwrap();
    let srcs = series(&dir.path().join("src"), 2, 4 << 10, 23);
    let b = make(&dir.path().join("store"));
    let mut store = Store::init_with(Arc::clone(&b), &small_blocks()).unwrap();
    let ids = [pack(&mut store, &srcs[0]), pack(&mut store, &srcs[1])];
    const MOVES: usize = 15;
    std::thread::scope(|s| {
        for w in 0..2 {
            let b = Arc::clone(&b);
            s.spawn(move || {
                let store = Store::open_with(b).unwrap();
                for i in 0..MOVES {
                    tdelta::tag(&store, "stable", ids[(w + i) % 2], true, &format!("writer {w}")).unwrap();
                }
            });
        }
    });
    let store = Store::open_with(b).unwrap();
    let h = tdelta::history(&store, "stable").unwrap();
    let now = store.resolve("stable").unwrap();
    let last = h.iter().max_by_key(|e| e.seq).unwrap();
    assert_eq!(last.new, Some(now), "the log does not end where the ref is");
    // Each entry's `old` is the previous entry's `new`: no move was lost.
    let mut moves: Vec<_> = h.iter().collect();
    moves.sort_by_key(|e| e.seq);
    for pair in moves.windows(2) {
        assert_eq!(pair[1].old, pair[0].new, "a move was lost between {} and {}", pair[0].seq, pair[1].seq);
    }
    let rep = tdelta::verify(&store, &store.versions().unwrap(), &Silent).unwrap();
    assert!(rep.ok(), "{rep:?}");
}

on_both_backends!(
    two_packs_at_once_both_land_in_turn,
    readers_never_see_a_partial_version,
    refs_move_by_compare_and_swap
);

/// Run as a child (`TDELTA_TEST_HOLD_LEASE=<store>`): takes the store's
/// lease, says so on stdout, and holds it until killed. Without the
/// variable it does nothing.
#[test]
fn hold_lease_child() {
    let Ok(store) = std::env::var("TDELTA_TEST_HOLD_LEASE") else { return };
    let _lease = tdelta::backend::LocalDir::new(store).lease(Duration::ZERO, None).unwrap();
    println!("holding");
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

static WAITING: AtomicBool = AtomicBool::new(false);

#[test]
fn a_lease_held_by_another_process_blocks_until_it_dies() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let srcs = series(&dir.path().join("src"), 1, 4 << 10, 24);
    let mut store = Store::init(&path, &small_blocks()).unwrap();
    let v0 = pack(&mut store, &srcs[0]);
    let mut holder = common::this_test("hold_lease_child")
        .env("TDELTA_TEST_HOLD_LEASE", &path)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // The test harness prints its own lines first.
    let mut out = BufReader::new(holder.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("holding") {
        line.clear();
        if out.read_line(&mut line).unwrap() == 0 {
            let _ = holder.kill();
            panic!("the child did not take the lease: {:?}", holder.wait());
        }
    }

    // Not waiting: refused at once, naming the holder.
    store.lock_wait = Duration::ZERO;
    let e = tdelta::tag(&store, "w", v0, false, "").unwrap_err();
    let named = e.to_string().contains(&format!("pid {}", holder.id()));
    if e.kind() != ErrorKind::Locked || !named {
        let _ = holder.kill();
        panic!("not refused as locked by the holder: {e}");
    }
    // Waiting: the writer waits until the holder is killed, then proceeds.
    store.lock_wait = Duration::from_secs(120);
    store.lock_notice = Some(|_| WAITING.store(true, Ordering::SeqCst));
    std::thread::scope(|s| {
        let waiter = s.spawn(|| tdelta::tag(&store, "w", v0, false, ""));
        while !WAITING.load(Ordering::SeqCst) {
            assert!(!waiter.is_finished(), "the writer did not wait for the holder: {:?}", waiter.join());
            std::thread::sleep(Duration::from_millis(5));
        }
        holder.kill().unwrap();
        holder.wait().unwrap();
        waiter.join().unwrap().unwrap();
    });
    // A lock file naming some dead process is harmless too.
    std::fs::write(path.join("lock"), "pid 999999 since 0").unwrap();
    store.lock_wait = Duration::ZERO;
    tdelta::tag(&store, "garbage-lock", v0, false, "").unwrap();
    let rep = tdelta::verify(&store, &store.versions().unwrap(), &Silent).unwrap();
    assert!(rep.ok(), "{rep:?}");
}
