//! Pack input: sources that change while they are packed (issue 12), the
//! one path rule of pack, verify and unpack (issue 12), Hugging Face cache
//! snapshots, include/exclude and default skips, empty directories and file
//! modes (issue 11).

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use common::{Rng, init, json, ok, path_str, run, stderr};

fn store_snapshot(store: &Path) -> BTreeMap<String, Vec<u8>> {
    common::snapshot(store, &["lock"])
}

/// Two versions of the same bytes that differ at every position.
fn patterns(len: usize, seed: u64) -> (Vec<u8>, Vec<u8>) {
    let mut rng = Rng(seed);
    let a: Vec<u8> = (0..len).map(|i| if i % 4096 < 2048 { rng.next_u64() as u8 } else { (i / 7) as u8 }).collect();
    let b: Vec<u8> = a.iter().map(|x| x ^ 0x5a).collect();
    (a, b)
}

/// A fresh store and a source file `src.bin` holding `bytes`, with a
/// snapshot of the store as it was before anything was packed.
fn fresh_source(bytes: &[u8]) -> (tempfile::TempDir, PathBuf, PathBuf, BTreeMap<String, Vec<u8>>) {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    init(&store);
    let src = tmp.path().join("src.bin");
    fs::write(&src, bytes).unwrap();
    let before = store_snapshot(&store);
    (tmp, store, src, before)
}

/// Runs `pack src` while `disturb` works on the source, until pack exits.
/// `disturb` gets the flag set when pack has exited and pack's pid.
fn pack_while(store: &Path, src: &Path, disturb: impl FnOnce(&AtomicBool, u32) + Send) -> std::process::Output {
    let done = AtomicBool::new(false);
    thread::scope(|s| {
        let child = common::bin()
            .arg("--store")
            .arg(store)
            .args(["pack", path_str(src), "-q"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pack");
        let pid = child.id();
        let done = &done;
        let worker = s.spawn(move || disturb(done, pid));
        let out = child.wait_with_output().expect("wait for pack");
        done.store(true, Ordering::SeqCst);
        worker.join().expect("disturber");
        out
    })
}

/// Waits until process `pid` holds `file` open or mapped, or has exited
/// (`done`), for at most ten seconds. Returns whether it saw the file.
fn wait_until_open(pid: u32, file: &Path, done: &AtomicBool) -> bool {
    let file = fs::canonicalize(file).unwrap();
    let fds = format!("/proc/{pid}/fd");
    for _ in 0..10_000 {
        if done.load(Ordering::SeqCst) {
            return false;
        }
        let mapped = fs::read_to_string(format!("/proc/{pid}/maps")).is_ok_and(|m| m.contains(path_str(&file)));
        let open = mapped
            || fs::read_dir(&fds)
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| fs::read_link(e.path()).is_ok_and(|t| t == file));
        if open {
            return true;
        }
        thread::sleep(Duration::from_millis(1));
    }
    false
}

/// Either the pack failed saying why and left the store as it was, or the
/// version verifies and restores to bytes where each one is of one of the
/// states the file went through. Returns whether the pack succeeded.
fn check_outcome(
    store: &Path,
    tmp: &Path,
    before: &BTreeMap<String, Vec<u8>>,
    out: &std::process::Output,
    allowed: impl Fn(&[u8]) -> Result<(), String>,
) -> bool {
    // Never killed by a signal (SIGBUS on a truncated map).
    let code = out.status.code().unwrap_or_else(|| panic!("pack died of a signal: {:?}", out.status));
    if code != 0 {
        let e = stderr(out);
        assert_eq!(code, 1, "{e}");
        assert!(e.contains("the file changed while it was being stored") && e.contains("nothing was written"), "{e}");
        assert!(e.contains("src.bin"), "{e}");
        assert!(store_snapshot(store) == *before, "a refused pack changed the store");
        return false;
    }
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    ok(store, &["verify", &id, "-q"]);
    let restored = tmp.join("restored.bin");
    ok(store, &["unpack", &id, "-o", path_str(&restored), "--force", "-q"]);
    let bytes = fs::read(&restored).unwrap();
    if let Err(e) = allowed(&bytes) {
        panic!("version {id} restores to bytes pack cannot have read: {e}");
    }
    true
}

/// Regression test for issue 12: a source rewritten in place while `pack`
/// runs must never give a version that does not restore.
#[test]
fn a_source_rewritten_during_pack_never_gives_a_broken_version() {
    let len = 24 << 20;
    let (a, b) = patterns(len, 12);
    for trial in 0..3u64 {
        let (tmp, store, src, before) = fresh_source(&a);
        let out = pack_while(&store, &src, |done, _| {
            thread::sleep(Duration::from_millis(20 * trial));
            let f = fs::OpenOptions::new().write(true).open(&src).unwrap();
            // Rewrite the file in place, 1 MiB at a time, alternating
            // between the two patterns, until pack is over.
            let mut round = 0usize;
            while !done.load(Ordering::SeqCst) {
                let pat = if round.is_multiple_of(2) { &b } else { &a };
                for (i, chunk) in pat.chunks(1 << 20).enumerate() {
                    f.write_all_at(chunk, (i << 20) as u64).unwrap();
                    if done.load(Ordering::SeqCst) {
                        break;
                    }
                }
                round += 1;
            }
        });
        check_outcome(&store, tmp.path(), &before, &out, |got| {
            if got.len() != len {
                return Err(format!("{} bytes", got.len()));
            }
            match (0..len).find(|&i| got[i] != a[i] && got[i] != b[i]) {
                Some(i) => Err(format!("byte {i} is {:#x}, neither {:#x} nor {:#x}", got[i], a[i], b[i])),
                None => Ok(()),
            }
        });
    }
}

/// Regression test for issue 12: a source truncated while `pack` runs is a
/// clear error (it used to kill pack with SIGBUS), the store unchanged.
/// The cut is made once pack holds the file open, so it lands while pack
/// reads; a pack that still got everything before the cut may succeed, with
/// the whole file.
#[test]
fn a_source_truncated_during_pack_is_a_clear_error() {
    let len = 24 << 20;
    let (a, _) = patterns(len, 13);
    let mut refused = 0;
    for _trial in 0..8 {
        let (tmp, store, src, before) = fresh_source(&a);
        let out = pack_while(&store, &src, |done, pid| {
            if !wait_until_open(pid, &src, done) {
                return;
            }
            let f = fs::OpenOptions::new().write(true).open(&src).unwrap();
            f.set_len(len as u64 / 3).unwrap();
            // Keep it short while pack runs: grow and cut again.
            while !done.load(Ordering::SeqCst) {
                f.set_len(len as u64 / 2).unwrap();
                f.set_len(len as u64 / 3).unwrap();
            }
        });
        let succeeded = check_outcome(&store, tmp.path(), &before, &out, |got| {
            // Pack read it all before the cut.
            if got == a {
                return Ok(());
            }
            Err(format!("{} bytes, not the whole file", got.len()))
        });
        refused += usize::from(!succeeded);
        if refused > 0 {
            break;
        }
    }
    assert!(refused > 0, "the truncation never hit a running pack in 8 trials");
}

/// Writes a manifest file for `m` the way the store does (uncompressed
/// body, which readers accept) and returns its version id.
fn write_manifest(store: &Path, m: &tdelta::Manifest) -> String {
    let json = serde_json::to_vec(m).unwrap();
    let id = tdelta::Hash::of(&json).to_string();
    let mut out = Vec::new();
    out.extend_from_slice(b"TDMANIF\0");
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    let sum = xxhash_rust::xxh3::xxh3_64(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    fs::write(store.join("versions").join(format!("{id}.tdm")), out).unwrap();
    id
}

/// Issue 12: `verify` applies the path rule `unpack` does. Crafted
/// manifests naming escapes, absolute paths, `./x`, empty names, NUL,
/// backslashes or a file/directory clash are damage (exit 3, the path
/// named), and `unpack` refuses them without writing anything.
#[test]
fn verify_and_unpack_refuse_the_same_unsafe_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    init(&store);
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("a.txt"), b"hello").unwrap();
    let id = common::pack(&store, &src, "good");
    let good = tdelta::Store::open(&store).unwrap().manifest(id.parse().unwrap()).unwrap();
    let entry = good.files[0].clone();
    let cases: [(&[&str], &str); 8] = [
        (&["../../escape.txt"], "unsafe path `../../escape.txt`"),
        (&["/abs.txt"], "unsafe path `/abs.txt`"),
        (&["./x"], "unsafe path `./x`"),
        (&[""], "unsafe path ``"),
        (&["nul\0.txt"], "unsafe path `nul\\0.txt`"),
        (&["back\\slash.txt"], "unsafe path `back\\\\slash.txt`"),
        (&["a//b"], "unsafe path `a//b`"),
        (&["a", "a/b"], "`a` both as a file and as a directory"),
    ];
    for (paths, want) in cases {
        let mut m = good.clone();
        m.files = paths.iter().map(|p| tdelta::FileEntry { path: p.to_string(), ..entry.clone() }).collect();
        let bad = write_manifest(&store, &m);
        let o = run(&store, &["verify", &bad]);
        let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
        assert_eq!(o.status.code(), Some(3), "{paths:?}: {text}");
        assert!(text.contains(want), "{paths:?}: {text}");
        let out = tmp.path().join("out");
        let o = run(&store, &["unpack", &bad, "-o", path_str(&out), "-q"]);
        assert!(!o.status.success(), "{paths:?} restored");
        assert!(!out.exists() && !tmp.path().join("escape.txt").exists(), "{paths:?} wrote files");
        fs::remove_file(store.join("versions").join(format!("{bad}.tdm"))).unwrap();
    }
    // An empty directory named unsafely is damage too.
    let mut m = good.clone();
    m.empty_dirs = vec!["../up".into()];
    let bad = write_manifest(&store, &m);
    let o = run(&store, &["verify", &bad]);
    assert_eq!(o.status.code(), Some(3));
    assert!(format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o)).contains("unsafe directory `../up`"));
    fs::remove_file(store.join("versions").join(format!("{bad}.tdm"))).unwrap();
    ok(&store, &["verify", "--all", "-q"]);
}

/// Issue 12: a name restore could not write back is refused at pack, named,
/// with the way around it; nothing is written.
#[test]
fn pack_refuses_a_backslash_name_and_excluding_it_works() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    init(&store);
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("a.txt"), b"hello").unwrap();
    fs::write(src.join("back\\slash.txt"), b"odd").unwrap();
    let before = store_snapshot(&store);
    let o = run(&store, &["pack", path_str(&src), "-q"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("cannot store the path `back\\slash.txt`") && e.contains("--exclude"), "{e}");
    assert!(store_snapshot(&store) == before);
    let id = ok(&store, &["pack", path_str(&src), "-q", "--exclude", "back*"]).trim().to_string();
    let out = tmp.path().join("out");
    ok(&store, &["unpack", &id, "-o", path_str(&out), "-q"]);
    assert_eq!(common::list(&out), ["a.txt"]);
}

/// Issue 11: a snapshot of the Hugging Face cache, every file a relative
/// symlink into `../../blobs/`, packs; restore gives regular files.
#[test]
fn a_hugging_face_cache_snapshot_packs_and_restores_regular_files() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    init(&store);
    let repo = tmp.path().join("hub/models--org--name");
    let snap = repo.join("snapshots/0123abcd");
    fs::create_dir_all(repo.join("blobs")).unwrap();
    fs::create_dir_all(repo.join("refs")).unwrap();
    fs::create_dir_all(snap.join("sub")).unwrap();
    fs::write(repo.join("refs/main"), b"0123abcd").unwrap();
    let mut rng = Rng(11);
    let weights: Vec<u8> = (0..300_000).map(|_| rng.next_u64() as u8).collect();
    fs::write(repo.join("blobs/aaa"), b"{\"model_type\": \"x\"}").unwrap();
    fs::write(repo.join("blobs/bbb"), &weights).unwrap();
    fs::write(repo.join("blobs/ccc"), b"tokenizer").unwrap();
    symlink("../../blobs/aaa", snap.join("config.json")).unwrap();
    symlink("../../blobs/bbb", snap.join("weights.bin")).unwrap();
    symlink("../../../blobs/ccc", snap.join("sub/tokenizer.json")).unwrap();
    let id = common::pack(&store, &snap, "hf");
    let out = tmp.path().join("out");
    ok(&store, &["unpack", &id, "-o", path_str(&out), "-q"]);
    for (rel, want) in [
        ("config.json", b"{\"model_type\": \"x\"}".to_vec()),
        ("weights.bin", weights.clone()),
        ("sub/tokenizer.json", b"tokenizer".to_vec()),
    ] {
        let p = out.join(rel);
        assert!(fs::symlink_metadata(&p).unwrap().file_type().is_file(), "{rel} is not a regular file");
        assert_eq!(fs::read(&p).unwrap(), want, "{rel}");
    }
    // Other escapes are still refused with the clear message: into the
    // repository but not its blobs, and out of the cache altogether.
    for target in ["../../refs/main", "../../../../outside.txt"] {
        fs::write(tmp.path().join("outside.txt"), b"x").unwrap();
        let link = snap.join("escape.txt");
        symlink(target, &link).unwrap();
        let o = run(&store, &["pack", path_str(&snap), "-q"]);
        assert_eq!(o.status.code(), Some(1), "{target}");
        assert!(stderr(&o).contains("symlink points outside the checkpoint directory"), "{target}: {}", stderr(&o));
        fs::remove_file(&link).unwrap();
    }
    // A snapshot-like tree outside a `models--` repository gets no pass.
    let plain = tmp.path().join("plain/snapshots/rev");
    fs::create_dir_all(&plain).unwrap();
    symlink(repo.join("blobs/aaa"), plain.join("config.json")).unwrap();
    let o = run(&store, &["pack", path_str(&plain), "-q"]);
    assert!(stderr(&o).contains("symlink points outside the checkpoint directory"), "{}", stderr(&o));
}

fn tree(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = common::snapshot(dir, &[]).into_keys().collect();
    v.sort();
    v
}

/// Issue 11: `--include`/`--exclude`, the default skips (`.git/`,
/// `.cache/huggingface/`), and the count of skipped files.
#[test]
fn include_exclude_and_default_skips() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    init(&store);
    let src = tmp.path().join("src");
    for d in [".git/objects", ".cache/huggingface/download", "optimizer", "sub"] {
        fs::create_dir_all(src.join(d)).unwrap();
    }
    for (f, body) in [
        ("config.json", "{}"),
        ("weights.bin", "w"),
        ("notes.tmp", "t"),
        ("sub/extra.json", "{}"),
        ("optimizer/state.pt", "o"),
        (".git/HEAD", "ref"),
        (".git/objects/ab", "obj"),
        (".cache/huggingface/download/weights.bin.metadata", "m"),
        (".gitattributes", "*.bin lfs"),
    ] {
        fs::write(src.join(f), body).unwrap();
    }
    let unpacked = |id: &str, name: &str| {
        let out = tmp.path().join(name);
        ok(&store, &["unpack", id, "-o", path_str(&out), "-q"]);
        tree(&out)
    };
    // Default skips only.
    let r = json(&store, &["pack", path_str(&src)]);
    assert_eq!(r["skipped_files"], 3, "{r}");
    let want = [
        ".gitattributes",
        "config.json",
        "notes.tmp",
        "optimizer/",
        "optimizer/state.pt",
        "sub/",
        "sub/extra.json",
        "weights.bin",
    ];
    assert_eq!(unpacked(r["id"].as_str().unwrap(), "all"), want);
    // Excludes: a directory with a trailing slash, a pattern at any depth.
    let o = run(&store, &["pack", path_str(&src), "--exclude", "optimizer/", "--exclude", "*.tmp"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("skipped 5 files"), "{}", stderr(&o));
    let id = String::from_utf8(o.stdout).unwrap().trim().to_string();
    assert_eq!(unpacked(&id, "ex"), [".gitattributes", "config.json", "sub/", "sub/extra.json", "weights.bin"]);
    // Includes, with an exclude winning over them.
    let r = json(&store, &["pack", path_str(&src), "--include", "*.json", "--exclude", "sub/"]);
    assert_eq!(r["skipped_files"], 8, "{r}");
    assert_eq!(unpacked(r["id"].as_str().unwrap(), "in"), ["config.json"]);
    // Nothing left is an error that says why; a bad pattern is named.
    let o = run(&store, &["pack", path_str(&src), "--include", "*.nothing"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no files to store: all 9 were left out"), "{}", stderr(&o));
    let o = run(&store, &["pack", path_str(&src), "--exclude", "a["]);
    assert!(stderr(&o).contains("invalid exclude pattern `a[`"), "{}", stderr(&o));
}

/// Issue 11: a store inside the checkpoint directory (under any name) is
/// never packed into it.
#[test]
fn the_store_inside_the_checkpoint_is_left_out() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("ckpt");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("weights.bin"), vec![3u8; 100_000]).unwrap();
    let store = src.join("versions-store");
    init(&store);
    let first = common::pack(&store, &src, "one");
    fs::write(src.join("weights.bin"), vec![4u8; 100_000]).unwrap();
    let r = json(&store, &["pack", path_str(&src)]);
    assert!(r["skipped_files"].as_u64().unwrap() > 0, "{r}");
    for id in [first.as_str(), r["id"].as_str().unwrap()] {
        let out = tmp.path().join(format!("out-{id}"));
        ok(&store, &["unpack", id, "-o", path_str(&out), "-q"]);
        assert_eq!(tree(&out), ["weights.bin"]);
    }
}

/// Issue 11: empty directories and file modes (the executable bit and the
/// rest of the permission bits) round-trip through pack and unpack.
#[test]
fn empty_directories_and_file_modes_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    init(&store);
    let src = tmp.path().join("src");
    for d in ["logs", "a/b/c", "scripts"] {
        fs::create_dir_all(src.join(d)).unwrap();
    }
    let files = [("run.sh", 0o755), ("scripts/tool", 0o750), ("data.bin", 0o644), ("secret.txt", 0o600)];
    for (f, mode) in files {
        fs::write(src.join(f), f.as_bytes()).unwrap();
        fs::set_permissions(src.join(f), fs::Permissions::from_mode(mode)).unwrap();
    }
    let id = common::pack(&store, &src, "tree");
    let out = tmp.path().join("out");
    ok(&store, &["unpack", &id, "-o", path_str(&out), "-q"]);
    assert_eq!(tree(&out), tree(&src));
    for d in ["logs", "a/b/c"] {
        assert!(out.join(d).is_dir(), "{d}");
        assert_eq!(fs::read_dir(out.join(d)).unwrap().count(), 0, "{d}");
    }
    for (f, mode) in files {
        let got = fs::metadata(out.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(got, mode, "{f}: {got:o}");
    }
    // Excluded directories are not recorded as empty ones.
    let r = json(&store, &["pack", path_str(&src), "--exclude", "logs"]);
    let out2 = tmp.path().join("out2");
    ok(&store, &["unpack", r["id"].as_str().unwrap(), "-o", path_str(&out2), "-q"]);
    assert!(!out2.join("logs").exists() && out2.join("a/b/c").is_dir());
}

/// A `--force` restore into an existing directory creates the version's
/// empty directories there, but never through a symlink that stands where
/// one of them goes (it would create directories outside OUT).
#[test]
fn force_restore_does_not_create_empty_directories_through_a_symlink() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    init(&store);
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("logs/run1")).unwrap();
    fs::write(src.join("config.json"), b"{}").unwrap();
    let id = common::pack(&store, &src, "tree");
    let out = tmp.path().join("out");
    let outside = tmp.path().join("outside");
    fs::create_dir_all(&out).unwrap();
    fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, out.join("logs")).unwrap();
    let o = run(&store, &["unpack", &id, "-o", path_str(&out), "--force", "-q"]);
    assert!(!o.status.success(), "restore through a symlink succeeded");
    assert!(stderr(&o).contains("symlink"), "{}", stderr(&o));
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0, "a directory was created outside OUT");
    assert!(!out.join("config.json").exists(), "files were written before the refusal");
    // Without the link, the same restore creates the empty directory.
    fs::remove_file(out.join("logs")).unwrap();
    ok(&store, &["unpack", &id, "-o", path_str(&out), "--force", "-q"]);
    assert!(out.join("logs/run1").is_dir() && out.join("config.json").is_file());
}
