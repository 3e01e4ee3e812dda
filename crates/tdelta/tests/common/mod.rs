//! Helpers shared by the engine's suites: checkpoints made here, the two
//! backends, copies of a store, damage done through the backend, and this
//! test binary re-run as a child process (for SIGKILL and memory caps).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use tdelta::backend::{Backend, LocalDir, Memory, PutMode};
use tdelta::{Hash, InitOptions, PackOptions, Policy, RestoreOptions, Silent, Store};

pub mod rng;
#[allow(unused_imports)]
pub use rng::{Rng, seed};

/// The smallest block size: many blocks per small checkpoint.
pub fn small_blocks() -> InitOptions {
    InitOptions { block_size: tdelta::block::MIN_BLOCK_SIZE }
}

/// A backend over the directory `p` (created empty by the store's init).
pub fn local(p: &Path) -> Arc<dyn Backend> {
    Arc::new(LocalDir::new(p))
}

/// A backend in memory (`p` unused).
pub fn memory(_: &Path) -> Arc<dyn Backend> {
    Arc::new(Memory::new())
}

/// xorshift values in [0, 1) as f32 little-endian bytes.
fn values(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..n)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            ((x % 1000) as f32 / 1000.0).to_le_bytes()
        })
        .collect()
}

/// Writes a safetensors file of F32 tensors (name, little-endian bytes).
pub fn write_safetensors(path: &Path, tensors: &[(&str, Vec<u8>)]) {
    let mut header = String::from("{");
    let mut off = 0;
    for (i, (name, data)) in tensors.iter().enumerate() {
        let sep = if i == 0 { "" } else { "," };
        let n = data.len() / 4;
        header.push_str(&format!(
            r#"{sep}"{name}":{{"dtype":"F32","shape":[{n}],"data_offsets":[{off},{}]}}"#,
            off + data.len()
        ));
        off += data.len();
    }
    header.push('}');
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    for (_, data) in tensors {
        bytes.extend_from_slice(data);
    }
    std::fs::write(path, bytes).unwrap();
}

/// A small safetensors file with one f32 tensor `w` of `n` values from `seed`.
pub fn checkpoint(path: &Path, n: usize, seed: u32) {
    write_safetensors(path, &[("w", values(n, seed))]);
}

/// `count` checkpoints in `dir`, like a training run: two tensors of `n`
/// values each, every version changing about one value in 16 of the last
/// one (so that versions are stored as deltas).
pub fn series(dir: &Path, count: usize, n: usize, seed: u32) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    let mut a = values(n, seed);
    let mut b = values(n, seed ^ 0x5a5a);
    let mut rng = Rng(u64::from(seed));
    (0..count)
        .map(|v| {
            if v > 0 {
                for t in [&mut a, &mut b] {
                    for _ in 0..n / 16 {
                        let i = rng.below(n as u64) as usize * 4;
                        t[i] ^= 1 + rng.below(255) as u8;
                    }
                }
            }
            let p = dir.join(format!("v{v}.safetensors"));
            write_safetensors(&p, &[("layer.a", a.clone()), ("layer.b", b.clone())]);
            p
        })
        .collect()
}

/// Packs `src` with `policy`, returns the new version's id.
pub fn pack_with(store: &mut Store, src: &Path, policy: Policy) -> Hash {
    let opts = PackOptions { policy, ..PackOptions::default() };
    tdelta::pack(store, src, &opts, &Silent).unwrap_or_else(|e| panic!("pack {}: {e}", src.display())).id
}

/// The bytes version `id` restores to (through a file in `scratch`).
pub fn restored(store: &Store, id: Hash, scratch: &Path) -> tdelta::Result<Vec<u8>> {
    let out = scratch.join(format!("restore-{id}"));
    tdelta::restore(store, id, &out, &RestoreOptions { force: true }, &Silent)?;
    let b = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    Ok(b)
}

/// Every object name of the store (the lease and temporary files left out).
pub fn object_names(b: &dyn Backend) -> Vec<String> {
    let mut v: Vec<String> =
        b.list("").unwrap().into_iter().map(|o| o.name).filter(|n| n != "lock" && !n.starts_with("tmp/")).collect();
    v.sort();
    v
}

/// Every object (name → bytes): what a test compares before and after.
pub fn objects(b: &dyn Backend) -> Vec<(String, Vec<u8>)> {
    object_names(b).into_iter().map(|n| (n.clone(), b.get(&n, u64::MAX).unwrap().0)).collect()
}

/// Copies every object of `from` into the empty backend `to`.
pub fn copy_objects(from: &dyn Backend, to: &dyn Backend) {
    for (name, bytes) in objects(from) {
        to.put(&name, &bytes, PutMode::Create).unwrap();
    }
}

/// Replaces object `name` with `bytes` (through the backend, as damage
/// from outside the tool would).
pub fn overwrite(b: &dyn Backend, name: &str, bytes: &[u8]) {
    b.delete(name).unwrap();
    b.put(name, bytes, PutMode::Create).unwrap();
}

/// What is done to an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Damage {
    /// Cut to half its length.
    Truncate,
    /// One bit flipped at the given byte (default: the middle).
    BitFlip(Option<usize>),
    /// Garbage appended.
    Append,
    /// Removed.
    Delete,
}

pub fn damage(b: &dyn Backend, name: &str, how: Damage) {
    if how == Damage::Delete {
        return b.delete(name).unwrap();
    }
    let mut bytes = b.get(name, u64::MAX).unwrap().0;
    match how {
        Damage::Truncate => bytes.truncate(bytes.len() / 2),
        Damage::BitFlip(at) => {
            let i = at.unwrap_or(bytes.len() / 2);
            bytes[i] ^= 0x10;
        }
        Damage::Append => bytes.extend_from_slice(b"\x00garbage\xff\n{\"seq\":99}"),
        Damage::Delete => unreachable!("handled above"),
    }
    overwrite(b, name, &bytes);
}

/// This test binary, to run the single test `test` (exactly) in a child
/// process; the caller adds the environment that tells it what to do.
pub fn this_test(test: &str) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([test, "--exact", "--nocapture", "--test-threads=1", "-q"]);
    c
}

/// Runs `body` in a child process (this test binary, running only the
/// test `test`) whose address space is capped at 2 GiB, so that an
/// unbounded allocation fails the test instead of passing on an
/// overcommitting machine; in that child (`TDELTA_TEST_CAPPED` set), sets
/// the cap and runs `body` itself.
pub fn with_memory_cap(test: &str, body: impl FnOnce()) {
    if std::env::var_os("TDELTA_TEST_CAPPED").is_some() {
        let cap = libc::rlimit { rlim_cur: 2 << 30, rlim_max: 2 << 30 };
        // SAFETY: setrlimit reads the struct passed by reference only.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &cap) }, 0, "setrlimit");
        return body();
    }
    let out = this_test(test).env("TDELTA_TEST_CAPPED", "1").output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{test} under a 2 GiB memory cap: {:?}\n{text}", out.status);
    assert!(text.contains("1 passed"), "{test} did not run in the child: {text}");
}

/// Runs each named suite (a `fn(fn(&Path) -> Arc<dyn Backend>)` of the
/// including file) as a test on the local directory (`local::NAME`) and in
/// memory (`memory::NAME`); those after `capped:` under
/// [`with_memory_cap`].
#[allow(unused_macros)]
macro_rules! on_both_backends {
    ($($test:ident),* $(; capped: $($capped:ident),*)?) => {
        on_both_backends!(@ local, $($test),* $(; $($capped),*)?);
        on_both_backends!(@ memory, $($test),* $(; $($capped),*)?);
    };
    (@ $b:ident, $($test:ident),* $(; $($capped:ident),*)?) => {
        mod $b {
            $(
                #[test]
                fn $test() {
                    super::$test(crate::common::$b);
                }
            )*
            $($(
                #[test]
                fn $capped() {
                    let me = concat!(stringify!($b), "::", stringify!($capped));
                    crate::common::with_memory_cap(me, || super::$capped(crate::common::$b));
                }
            )*)?
        }
    };
}
