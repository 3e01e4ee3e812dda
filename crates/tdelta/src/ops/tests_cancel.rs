//! Operations stopped through [`Progress::cancelled`] (Ctrl-C in the
//! Python package): they stop between atomic steps and leave the store,
//! and a restore's target, as before.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::*;
use crate::testutil::noise;
use crate::{InitOptions, Store};

/// Asks to stop once `after` bytes were reported done.
struct CancelAfter {
    after: u64,
    done: AtomicU64,
    asked: AtomicBool,
}

impl CancelAfter {
    fn new(after: u64) -> Self {
        CancelAfter { after, done: AtomicU64::new(0), asked: AtomicBool::new(false) }
    }
}

impl Progress for CancelAfter {
    fn advance(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }
    fn cancelled(&self) -> bool {
        let stop = self.done.load(Ordering::Relaxed) >= self.after;
        if stop {
            self.asked.store(true, Ordering::Relaxed);
        }
        stop
    }
}

/// Every file under `root` with its bytes (the lock file aside).
fn files(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.file_name().is_some_and(|n| n != "lock") {
                out.push((p.clone(), fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn store_with_source(dir: &Path) -> (Store, PathBuf) {
    let store = Store::init(&dir.join("store"), &InitOptions { block_size: 64 << 10 }).unwrap();
    let src = dir.join("src.bin");
    fs::write(&src, noise(11, 1 << 20)).unwrap();
    (store, src)
}

#[test]
fn a_pack_cancelled_between_windows_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, src) = store_with_source(dir.path());
    let first = pack(&mut store, &src, &PackOptions::default(), &Silent).unwrap().id;
    fs::write(&src, noise(12, 1 << 20)).unwrap();
    let before = files(store.root());
    let opts = PackOptions { window: 128 << 10, ..Default::default() };
    // After the first window, and before any window at all.
    for after in [1, 0] {
        let p = CancelAfter::new(after);
        let e = pack(&mut store, &src, &opts, &p).unwrap_err();
        assert_eq!(e.to_string(), "interrupted");
        assert!(p.asked.load(Ordering::Relaxed));
        assert!(files(store.root()) == before, "a cancelled pack changed the store");
        assert_eq!(store.read_ref("HEAD").unwrap(), Some(first));
    }
    let second = pack(&mut store, &src, &opts, &Silent).unwrap().id;
    assert_eq!(store.read_ref("HEAD").unwrap(), Some(second));
}

#[test]
fn a_pack_cancelled_after_its_last_window_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, src) = store_with_source(dir.path());
    let before = files(store.root());
    // Cancelled once every byte is encoded: checked before the manifest.
    let p = CancelAfter::new(1 << 20);
    let e = pack(&mut store, &src, &PackOptions::default(), &p).unwrap_err();
    assert_eq!(e.to_string(), "interrupted");
    assert!(files(store.root()) == before, "a cancelled pack changed the store");
    assert!(store.versions().unwrap().is_empty());
}

#[test]
fn a_cancelled_restore_leaves_nothing_at_its_target() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, src) = store_with_source(dir.path());
    let id = pack(&mut store, &src, &PackOptions::default(), &Silent).unwrap().id;
    let out = dir.path().join("out");
    fs::create_dir(&out).unwrap();
    let target = out.join("src.bin");
    let e = restore(&store, id, &target, &RestoreOptions::default(), &CancelAfter::new(0)).unwrap_err();
    assert_eq!(e.to_string(), "interrupted");
    assert_eq!(fs::read_dir(&out).unwrap().count(), 0, "a cancelled restore left files");
    restore(&store, id, &target, &RestoreOptions::default(), &Silent).unwrap();
    assert_eq!(fs::read(&target).unwrap(), fs::read(&src).unwrap());
}
