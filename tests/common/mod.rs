//! Helpers shared by the integration tests: running the binary, a seeded
//! RNG, store snapshots.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

pub mod s3;

#[path = "../../crates/tdelta/tests/common/rng.rs"]
mod rng;
#[allow(unused_imports)]
pub use rng::{Rng, seed};

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tdelta"));
    c.env("TDELTA_AUTHOR", "tester").env_remove("TDELTA_STORE");
    c
}

pub fn run(store: &Path, args: &[&str]) -> Output {
    bin().arg("--store").arg(store).args(args).stdin(Stdio::null()).output().expect("run tdelta")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn ok(store: &Path, args: &[&str]) -> String {
    let o = run(store, args);
    assert!(o.status.success(), "tdelta {args:?} failed ({:?}): {}", o.status, stderr(&o));
    String::from_utf8(o.stdout).unwrap()
}

pub fn json(store: &Path, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.push("--json");
    let out = ok(store, &a);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("tdelta {args:?} --json: {e}: {out}"))
}

/// A new store with 64 KiB blocks (many blocks per small checkpoint).
pub fn init(store: &Path) {
    ok(store, &["init", "--block-size", "64K", "-q"]);
}

/// Packs `src`, returns the new version id.
pub fn pack(store: &Path, src: &Path, msg: &str) -> String {
    ok(store, &["pack", src.to_str().unwrap(), "-q", "-m", msg]).trim().to_string()
}

/// Restores `r` and returns the bytes (file versions).
pub fn unpack_bytes(store: &Path, r: &str, scratch: &Path) -> Vec<u8> {
    let out = scratch.join(format!("unpack-{}", r.replace('/', "_")));
    let o = run(store, &["unpack", r, "-o", out.to_str().unwrap(), "--force", "-q"]);
    assert!(o.status.success(), "unpack {r}: {}", stderr(&o));
    let b = fs::read(&out).unwrap();
    fs::remove_file(&out).unwrap();
    b
}

/// Version ids in `versions/` (sorted).
pub fn versions(store: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(store.join("versions"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".tdm").map(str::to_string))
        .collect();
    v.sort();
    v
}

/// The version a ref file (or `HEAD`) names, read straight from the file.
pub fn ref_target(store: &Path, name: &str) -> Option<String> {
    let p = if name == "HEAD" { store.join("HEAD") } else { store.join("refs").join(name) };
    let text = fs::read_to_string(p).ok()?;
    Some(text.split(' ').nth(2)?.to_string())
}

/// `packs/*.pack` files without their `.idx`.
pub fn orphan_packs(store: &Path) -> Vec<String> {
    let names: Vec<String> = fs::read_dir(store.join("packs"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str().map(str::to_string))
        .collect();
    names.iter().filter(|n| n.ends_with(".pack") && !names.contains(&n.replace(".pack", ".idx"))).cloned().collect()
}

/// Every file under `dir` (relative path → bytes), skipping `skip`.
pub fn snapshot(dir: &Path, skip: &[&str]) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, d: &Path, skip: &[&str], out: &mut BTreeMap<String, Vec<u8>>) {
        for e in fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if skip.contains(&rel.as_str()) {
                continue;
            }
            if p.is_dir() {
                out.insert(format!("{rel}/"), Vec::new());
                walk(root, &p, skip, out);
            } else {
                out.insert(rel, fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, skip, &mut out);
    out
}

/// Files in `dir` (names), empty if missing.
pub fn list(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = match fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

pub fn pb(p: &Path, s: &str) -> PathBuf {
    p.join(s)
}

/// A sealed audit line (FORMAT.md §11): the compact JSON of the entry,
/// then `hash` = xxh3-128 of that JSON.
pub fn sealed(entry: &tdelta::AuditEntry) -> String {
    let body = serde_json::to_string(entry).unwrap();
    let hash = tdelta::Hash::of(body.as_bytes());
    format!("{},\"hash\":\"{hash}\"}}\n", body.strip_suffix('}').unwrap())
}

/// Rewrites the store's audit log with `edit` applied to each entry and
/// every seal recomputed: the forgery an unkeyed hash chain cannot see.
pub fn reseal(store: &Path, edit: &dyn Fn(&mut Value)) {
    let text = fs::read_to_string(store.join("audit.log")).unwrap();
    let mut out = String::from("tdelta-audit 1\n");
    let mut prev = "0".repeat(32);
    for line in text.lines().skip(1) {
        let mut v: Value = serde_json::from_str(line).unwrap();
        edit(&mut v);
        let mut e: tdelta::AuditEntry = serde_json::from_value(v).unwrap();
        e.prev = prev.parse().unwrap();
        let l = sealed(&e);
        prev = serde_json::from_str::<Value>(&l).unwrap()["hash"].as_str().unwrap().to_string();
        out.push_str(&l);
    }
    fs::write(store.join("audit.log"), out).unwrap();
}
