//! Remote reads without a clone (`unpack --remote`), remote verify and
//! remote gc, through the binary, against a real S3-compatible server
//! (moto, `TDELTA_TEST_S3`, see tests/remote.rs) and a `file://` remote.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::s3::{KEY_ID, SECRET, cmd, create_bucket, json_in, ok_in, run_in, s3};
use common::{Rng, stderr};

fn bucket(endpoint: &str, test: &str) -> String {
    create_bucket(endpoint, &format!("tdelta-{test}-{}", std::process::id()))
}

/// A safetensors file of `n` U8 tensors `t0`.. of `len` random
/// (incompressible) bytes each: a tensor's stored blocks are its bytes.
fn random_checkpoint(path: &Path, n: usize, len: usize, seed: u64) {
    let mut rng = Rng(seed);
    let mut header = String::from("{");
    for i in 0..n {
        if i > 0 {
            header.push(',');
        }
        header.push_str(&format!(
            "\"t{i}\":{{\"dtype\":\"U8\",\"shape\":[{len}],\"data_offsets\":[{},{}]}}",
            i * len,
            (i + 1) * len
        ));
    }
    header.push('}');
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    for _ in 0..n * len / 8 {
        out.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    fs::write(path, out).unwrap();
}

/// A TCP proxy on loopback in front of `upstream` that counts the bytes it
/// carries both ways.
struct Proxy {
    endpoint: String,
    bytes: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    fn start(upstream: &str) -> Proxy {
        let up = upstream.trim_start_matches("http://").trim_end_matches('/').to_string();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let endpoint = format!("http://{}", l.local_addr().unwrap());
        let bytes = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (b, s) = (Arc::clone(&bytes), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let Ok(server) = TcpStream::connect(&up) else { continue };
                        let pairs = [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)];
                        for (mut from, mut to) in pairs {
                            let b = Arc::clone(&b);
                            // Ends when either side closes.
                            std::thread::spawn(move || {
                                let mut buf = vec![0u8; 64 << 10];
                                while let Ok(n) = from.read(&mut buf) {
                                    if n == 0 || to.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                    b.fetch_add(n as u64, Ordering::Relaxed);
                                }
                                let _ = to.shutdown(std::net::Shutdown::Write);
                            });
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(_) => break,
                }
            }
        });
        Proxy { endpoint, bytes, stop }
    }

    fn take(&self) -> u64 {
        self.bytes.swap(0, Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A store with one version of 8 tensors of 1 MiB, pushed to `url`, and
/// a second, empty store with the remote added (no clone).
fn pushed(dir: &Path, url: &str, endpoint: Option<&str>) -> (PathBuf, PathBuf, PathBuf) {
    let src = dir.join("model.safetensors");
    random_checkpoint(&src, 8, 1 << 20, 0x15);
    let store = dir.join("store");
    ok_in(None, &store, &["init", "--block-size", "64K", "-q"]);
    let id = ok_in(None, &store, &["pack", src.to_str().unwrap(), "-q"]).trim().to_string();
    ok_in(None, &store, &["tag", "stable", &id]);
    // Random bytes do not compress: stored blocks are the tensors' bytes.
    let packs: u64 = fs::read_dir(store.join("packs")).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
    assert!(packs >= 8 << 20, "stored {packs} bytes");
    let mut add = vec!["remote", "add", "origin", url];
    if let Some(e) = endpoint {
        add.extend(["--endpoint", e]);
    }
    ok_in(endpoint, &store, &add);
    ok_in(endpoint, &store, &["push", "-q"]);
    let reader = dir.join("reader");
    ok_in(None, &reader, &["init", "--block-size", "64K", "-q"]);
    ok_in(endpoint, &reader, &add);
    (store, reader, src)
}

/// Restores from the remote directly, whole and one tensor, bit-exact with
/// a local restore; the second read of the tensor comes from the local
/// cache, and the reader's store stays consistent.
fn reads_from_remote(url: &str, endpoint: Option<&str>, proxy: Option<&Proxy>) {
    let dir = tempfile::tempdir().unwrap();
    let (store, reader, src) = pushed(dir.path(), url, endpoint);
    let ep = proxy.map(|p| p.endpoint.as_str()).or(endpoint);
    // Every later request goes through the proxy.
    if let Some(p) = proxy {
        ok_in(None, &reader, &["remote", "remove", "origin"]);
        ok_in(None, &reader, &["remote", "add", "origin", url, "--endpoint", &p.endpoint]);
        p.take();
    }

    // One tensor of eight: at most 1.1x its stored blocks on the wire.
    let one = dir.path().join("t3.safetensors");
    let r = json_in(
        ep,
        &reader,
        &["unpack", "--remote", "origin", "stable", "-o", one.to_str().unwrap(), "--tensors", "t3"],
    );
    let want = dir.path().join("t3-local.safetensors");
    ok_in(None, &store, &["unpack", "stable", "-o", want.to_str().unwrap(), "--tensors", "t3", "-q"]);
    assert_eq!(fs::read(&one).unwrap(), fs::read(&want).unwrap(), "one tensor from the remote, bit-exact");
    let fetched = r["remote"]["bytes_fetched"].as_u64().unwrap();
    assert!(fetched >= 1 << 20 && fetched as f64 <= 1.1 * f64::from(1 << 20), "{r}");
    if let Some(p) = proxy {
        let wire = p.take();
        assert!(wire as f64 <= 1.1 * f64::from(1 << 20), "{wire} bytes on the wire for a tensor of 1 MiB: {r}");
    }
    // Again: the blocks are in the local store now.
    let again = dir.path().join("t3-again.safetensors");
    let r2 = json_in(
        ep,
        &reader,
        &["unpack", "--remote", "origin", "stable", "-o", again.to_str().unwrap(), "--tensors", "t3"],
    );
    assert_eq!(r2["remote"]["blocks_fetched"], 0, "{r2}");
    assert_eq!(fs::read(&again).unwrap(), fs::read(&want).unwrap());
    if let Some(p) = proxy {
        let wire = p.take();
        assert!(wire < 256 << 10, "a cached read moves only the manifest and indexes: {wire} bytes");
    }

    // The whole version, by id prefix, bit-exact; only the rest is fetched.
    let id = common::versions(&store).remove(0);
    let whole = dir.path().join("whole.safetensors");
    let r3 = json_in(ep, &reader, &["unpack", "--remote", "origin", &id[..12], "-o", whole.to_str().unwrap()]);
    assert_eq!(fs::read(&whole).unwrap(), fs::read(&src).unwrap(), "{r3}");
    assert!(r3["remote"]["blocks_local"].as_u64().unwrap() >= 16, "{r3}");
    // The reader's store holds whole packs only and verifies.
    ok_in(None, &reader, &["verify", "--all", "-q"]);
    assert!(common::orphan_packs(&reader).is_empty());
    // Unknown refs are named.
    let o =
        run_in(ep, &reader, &["unpack", "--remote", "origin", "nope", "-o", dir.path().join("x").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("nope"), "{}", stderr(&o));
}

#[test]
fn file_remote_unpack_reads_only_what_it_needs() {
    let dir = tempfile::tempdir().unwrap();
    reads_from_remote(&format!("file://{}", dir.path().join("remote").display()), None, None);
}

#[test]
fn s3_unpack_one_tensor_moves_at_most_1_1x_its_blocks_on_the_wire() {
    let Some(ep) = s3() else { return };
    let url = bucket(&ep, "reads");
    let proxy = Proxy::start(&ep);
    reads_from_remote(&url, Some(&ep), Some(&proxy));
}

fn remote_backend(url: &str, endpoint: Option<&str>) -> tdelta::backend::object::ObjectStoreBackend {
    // SAFETY: these tests set the same values in every thread.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", KEY_ID);
        std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET);
        std::env::set_var("AWS_REGION", "us-east-1");
    }
    let opts = tdelta::backend::object::RemoteOptions { endpoint: endpoint.map(str::to_string) };
    tdelta::backend::object::ObjectStoreBackend::open(url, &opts).unwrap()
}

fn names(b: &dyn tdelta::backend::Backend) -> Vec<String> {
    let mut v = Vec::new();
    for p in ["packs/", "versions/"] {
        v.extend(b.list(p).unwrap().into_iter().map(|m| m.name));
    }
    v
}

/// Issue 15: `verify --remote` passes a whole remote and names a damaged
/// object (exit 3); `gc --remote` keeps what the refs need and young
/// objects, removes old unreachable ones, and a push running beside it
/// stays restorable.
fn verify_and_gc(url: &str, endpoint: Option<&str>) {
    use tdelta::backend::{Backend, PutMode};
    let dir = tempfile::tempdir().unwrap();
    let (store, _, src) = pushed(dir.path(), url, endpoint);
    let b = remote_backend(url, endpoint);
    let v = json_in(endpoint, &store, &["verify", "--remote", "origin"]);
    assert_eq!(v["problems"].as_array().unwrap().len(), 0, "{v}");
    assert_eq!(v["refs"].as_array().unwrap().len(), 2, "stable and HEAD: {v}");
    let kept = names(&b);

    // A version only a since-deleted remote ref needed.
    let src2 = dir.path().join("other.safetensors");
    random_checkpoint(&src2, 2, 256 << 10, 0x16);
    let v2 = ok_in(None, &store, &["pack", src2.to_str().unwrap(), "-q"]).trim().to_string();
    ok_in(None, &store, &["tag", "scratch", &v2]);
    ok_in(endpoint, &store, &["push", "origin", "scratch", "-q"]);
    b.delete("refs/scratch").unwrap();
    let extra: Vec<String> = names(&b).into_iter().filter(|n| !kept.contains(n)).collect();
    assert_eq!(extra.len(), 3, "its pack, index and manifest: {extra:?}");

    // Young: kept.
    let g = json_in(endpoint, &store, &["gc", "--remote", "origin", "--grace", "1h"]);
    assert_eq!(g["removed"].as_array().unwrap().len(), 0, "{g}");
    assert_eq!(g["young_kept"], 3, "{g}");
    // Dry run: named, nothing removed.
    let g = json_in(endpoint, &store, &["gc", "--remote", "origin", "--grace", "0s", "--dry-run"]);
    let mut would: Vec<String> = g["removed"].as_array().unwrap().iter().map(|n| n.as_str().unwrap().into()).collect();
    would.sort();
    let mut want = extra.clone();
    want.sort();
    assert_eq!(would, want, "{g}");
    assert_eq!(names(&b).len(), kept.len() + 3);
    // Old enough: removed, and only those.
    let g = json_in(endpoint, &store, &["gc", "--remote", "origin", "--grace", "0s"]);
    assert_eq!(g["removed"].as_array().unwrap().len(), 3, "{g}");
    assert_eq!(names(&b), kept);
    ok_in(endpoint, &store, &["verify", "--remote", "origin", "-q"]);
    let o = run_in(endpoint, &store, &["gc", "--remote", "origin", "--grace", "soon"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("s, m, h or d"), "{}", stderr(&o));

    // A push beside repeated gc runs (default grace): restorable after.
    let src3 = dir.path().join("third.safetensors");
    random_checkpoint(&src3, 4, 1 << 20, 0x17);
    let v3 = ok_in(None, &store, &["pack", src3.to_str().unwrap(), "-q"]).trim().to_string();
    ok_in(None, &store, &["tag", "next", &v3]);
    let mut push = cmd(endpoint)
        .arg("--store")
        .arg(&store)
        .args(["push", "origin", "next", "-q", "--jobs", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..50 {
        ok_in(endpoint, &store, &["gc", "--remote", "origin", "-q"]);
        if push.try_wait().unwrap().is_some() {
            break;
        }
    }
    let out = push.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    ok_in(endpoint, &store, &["gc", "--remote", "origin", "-q"]);
    ok_in(endpoint, &store, &["verify", "--remote", "origin", "-q"]);
    let team = dir.path().join("team");
    let mut c = vec!["clone", url, team.to_str().unwrap(), "-q"];
    if let Some(e) = endpoint {
        c.extend(["--endpoint", e]);
    }
    ok_in(endpoint, &team, &c);
    for (r, f) in [("next", &src3), ("stable", &src)] {
        let out = dir.path().join(format!("{r}.out"));
        ok_in(None, &team, &["unpack", r, "-o", out.to_str().unwrap(), "-q"]);
        assert_eq!(fs::read(&out).unwrap(), fs::read(f).unwrap(), "{r}");
    }

    // Damage: a flipped byte in a pack is named, exit status 3.
    let pack = b.list("packs/").unwrap().into_iter().find(|m| m.name.ends_with(".pack")).unwrap();
    let (mut bytes, _) = b.get(&pack.name, 1 << 30).unwrap();
    let n = bytes.len() / 2;
    bytes[n] ^= 0x10;
    b.put(&pack.name, &bytes, PutMode::Overwrite).unwrap();
    let o = run_in(endpoint, &store, &["verify", "--remote", "origin"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("DAMAGED") && text.contains(&pack.name), "{text}");
    // A ref whose version lost its manifest is damage too.
    b.delete(&format!("versions/{v3}.tdm")).unwrap();
    let v = run_in(endpoint, &store, &["verify", "--remote", "origin", "--json"]);
    assert_eq!(v.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
    let next = v["refs"].as_array().unwrap().iter().find(|r| r["name"] == "next").unwrap();
    assert!(!next["problems"].as_array().unwrap().is_empty(), "{v}");
    // gc refuses to work on a damaged remote.
    let o = run_in(endpoint, &store, &["gc", "--remote", "origin", "--grace", "0s"]);
    assert_ne!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn file_remote_verify_and_gc() {
    let dir = tempfile::tempdir().unwrap();
    verify_and_gc(&format!("file://{}", dir.path().join("remote").display()), None);
}

#[test]
fn s3_remote_verify_and_gc_beside_a_push() {
    let Some(ep) = s3() else { return };
    let url = bucket(&ep, "gc");
    verify_and_gc(&url, Some(&ep));
}
