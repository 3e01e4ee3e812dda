//! The command line's side of concurrent writers: a writer that finds the
//! store's lock held says so on stderr, waits, and proceeds when the
//! holder dies. What concurrent writers and readers do to the store is
//! tested on the engine's API (`crates/tdelta/tests/concurrency.rs`).

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

#[test]
fn a_writer_waits_for_the_lock_saying_so_and_proceeds_when_the_holder_dies() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    init(&store);
    let src = dir.path().join("tiny.safetensors");
    fs::copy(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tiny.safetensors"), &src).unwrap();
    let v0 = pack(&store, &src, "v0");
    let lock = store.join("lock");
    // The holder is util-linux `flock`, which takes the same flock(2) lock
    // as tdelta. `-o`: the lock stays with `flock` itself, not with its
    // `sleep` child.
    let mut holder = match Command::new("flock").args(["-x", "-o"]).arg(&lock).args(["sleep", "60"]).spawn() {
        Ok(h) => h,
        Err(e) => return eprintln!("SKIPPED: cannot run flock: {e}"),
    };
    let probe = fs::OpenOptions::new().read(true).write(true).open(&lock).unwrap();
    let t = Instant::now();
    // Wait until the holder has the lock (our own try_lock fails).
    while probe.try_lock().is_ok() {
        probe.unlock().unwrap();
        assert!(t.elapsed() < Duration::from_secs(60), "flock never took the lock");
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut waiter = bin().arg("--store").arg(&store).args(["tag", "w", &v0]).stderr(Stdio::piped()).spawn().unwrap();
    // The waiter says it waits and for whom (its first line on stderr),
    // then the holder dies.
    let mut err = BufReader::new(waiter.stderr.take().unwrap());
    let mut first = String::new();
    err.read_line(&mut first).unwrap();
    let want = format!("waiting for the store lock held by pid {}", holder.id());
    assert!(first.starts_with(&want), "{first}");
    assert!(waiter.try_wait().unwrap().is_none(), "the writer did not wait");
    holder.kill().unwrap();
    holder.wait().unwrap();
    let mut rest = String::new();
    err.read_to_string(&mut rest).unwrap();
    let status = waiter.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{rest}");
    assert_eq!(ref_target(&store, "w"), Some(v0));
}
