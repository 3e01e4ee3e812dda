//! The command line after a killed writer: a `tdelta pack` SIGKILLed while
//! it holds the lock leaves a store that `verify --all` passes (exit 0) and
//! the next `pack` writes to. The kill-anywhere suite (100 kills of pack,
//! gc, tag and rollback) and the full-disk case run on the engine's API
//! (`crates/tdelta/tests/crash.rs`).

mod common;

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use tdelta::DType;
use tdelta_dev::synth::SeriesSpec;

#[test]
fn a_pack_killed_holding_the_lock_leaves_a_store_the_next_command_uses() {
    let dir = tempfile::tempdir().unwrap();
    let spec = SeriesSpec::new(3, DType::BF16, 512 << 10, 3);
    let srcs = tdelta_dev::synth::write_series(&spec, &dir.path().join("src")).unwrap();
    let store = dir.path().join("store");
    init(&store);
    let v0 = pack(&store, &srcs[0], "v0");
    let lock = store.join("lock");
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
        assert!(t.elapsed() < Duration::from_secs(60), "the writer never took the lock");
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().ok();
    let status = child.wait().unwrap();
    eprintln!("pack {}", if status.signal() == Some(9) { "killed" } else { "finished first" });
    let v = run(&store, &["verify", "--all", "-q"]);
    assert_eq!(v.status.code(), Some(0), "{}", stderr(&v));
    let v2 = pack(&store, &srcs[2], "v2");
    let scratch = dir.path().join("scratch");
    fs::create_dir_all(&scratch).unwrap();
    assert_eq!(unpack_bytes(&store, &v0, &scratch), fs::read(&srcs[0]).unwrap());
    assert_eq!(unpack_bytes(&store, &v2, &scratch), fs::read(&srcs[2]).unwrap());
    assert!(list(&store.join("tmp")).is_empty(), "the next writer left temp files");
}
