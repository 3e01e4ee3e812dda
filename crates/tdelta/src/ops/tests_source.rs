//! Pack and sources that change under it (issue 12), deterministically:
//! the change is made from the progress callback, between two windows.

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::*;
use crate::testutil::noise;
use crate::{InitOptions, Store};

/// Runs `change` on the source once, after the first window is packed.
struct ChangeAfterFirstWindow {
    path: PathBuf,
    change: Mutex<Option<fn(&Path)>>,
}

impl Progress for ChangeAfterFirstWindow {
    fn advance(&self, _: u64) {
        if let Some(change) = self.change.lock().unwrap().take() {
            change(&self.path);
        }
    }
}

/// Every file under the store, with its bytes (the lock file aside).
fn store_files(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
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

fn pack_with_change(change: fn(&Path), want: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::init(&dir.path().join("store"), &InitOptions { block_size: 64 << 10 }).unwrap();
    let src = dir.path().join("src.bin");
    fs::write(&src, noise(7, 1 << 20)).unwrap();
    // An older modification time, so that a change within the same clock
    // tick as the write above still moves it.
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    fs::File::options().write(true).open(&src).unwrap().set_modified(old).unwrap();
    let before = store_files(store.root());
    let progress = ChangeAfterFirstWindow { path: src.clone(), change: Mutex::new(Some(change)) };
    let opts = PackOptions { window: 128 << 10, ..Default::default() };
    let e = pack(&mut store, &src, &opts, &progress).expect_err("the source changed").to_string();
    assert!(e.contains("src.bin") && e.contains(want) && e.contains("nothing was written"), "{e}");
    assert!(store_files(store.root()) == before, "a refused pack changed the store");
    assert!(store.versions().unwrap().is_empty());
    // Unchanged from now on, the same source packs and restores.
    let id = pack(&mut store, &src, &opts, &Silent).unwrap().id;
    let out = dir.path().join("out.bin");
    restore(&store, id, &out, &RestoreOptions::default(), &Silent).unwrap();
    assert_eq!(fs::read(&out).unwrap(), fs::read(&src).unwrap());
}

#[test]
fn a_source_rewritten_in_place_mid_pack_is_refused() {
    // Same size, bytes already read and bytes still to read both change.
    pack_with_change(
        |p| {
            let f = fs::OpenOptions::new().write(true).open(p).unwrap();
            f.write_all_at(&[0u8; 4096], 0).unwrap();
            f.write_all_at(&[0u8; 4096], 900 << 10).unwrap();
        },
        "the file changed while it was being stored (it was written to)",
    );
}

#[test]
fn a_source_truncated_mid_pack_is_refused() {
    pack_with_change(
        |p| fs::OpenOptions::new().write(true).open(p).unwrap().set_len(300 << 10).unwrap(),
        "the file changed while it was being stored (it became shorter)",
    );
}

#[test]
fn a_source_grown_mid_pack_is_refused() {
    pack_with_change(
        |p| fs::OpenOptions::new().append(true).open(p).unwrap().write_all_at(b"more", 1 << 20).unwrap(),
        "the file changed while it was being stored (its size went from 1048576 to 1048580 bytes)",
    );
}
