//! Torn and corrupted store files, malformed store files and hostile
//! checkpoints: every one gets a clear error naming the file, never a
//! panic, a hang or a huge allocation; `verify --all` lists every damaged
//! version (exit 3) and undamaged versions still restore.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use tdelta::DType;
use tdelta_dev::synth::SeriesSpec;

struct Fixture {
    _dir: tempfile::TempDir,
    pristine: PathBuf,
    srcs: Vec<PathBuf>,
    ids: Vec<String>,
    scratch: PathBuf,
}

/// Three versions, each packed by its own `pack` (one pack file each):
/// v0 full, v1 and v2 deltas (`root` policy: both against v0's blocks).
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let spec = SeriesSpec::new(3, DType::BF16, 384 << 10, 3);
    let srcs = tdelta_dev::synth::write_series(&spec, &dir.path().join("src")).unwrap();
    let pristine = dir.path().join("pristine");
    init(&pristine);
    let ids: Vec<String> = srcs
        .iter()
        .map(|s| ok(&pristine, &["pack", path_str(s), "-q", "--policy", "root"]).trim().to_string())
        .collect();
    ok(&pristine, &["tag", "stable", &ids[1], "-q"]);
    let scratch = dir.path().join("scratch");
    fs::create_dir_all(&scratch).unwrap();
    Fixture { _dir: dir, pristine, srcs, ids, scratch }
}

fn copy_dir(from: &Path, to: &Path) {
    let _ = fs::remove_dir_all(to);
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let t = to.join(p.file_name().unwrap());
        if p.is_dir() { copy_dir(&p, &t) } else { fs::copy(&p, &t).map(|_| ()).unwrap() }
    }
}

#[derive(Clone, Copy, Debug)]
enum Damage {
    Truncate,
    BitFlip,
    Append,
    Delete,
}

fn damage(path: &Path, how: Damage, at: Option<usize>) {
    if matches!(how, Damage::Delete) {
        return fs::remove_file(path).unwrap();
    }
    let mut b = fs::read(path).unwrap();
    match how {
        Damage::Truncate => b.truncate(at.unwrap_or(b.len() / 2)),
        Damage::BitFlip => {
            let i = at.unwrap_or(b.len() / 2);
            b[i] ^= 0x10;
        }
        Damage::Append => b.extend_from_slice(b"\x00garbage\xff\n{\"seq\":99}"),
        Damage::Delete => unreachable!("handled above"),
    }
    fs::write(path, b).unwrap();
}

/// The pack written by `pack` number `n` (packs sorted by mtime).
fn pack_of(store: &Path, n: usize) -> String {
    let mut packs: Vec<(std::time::SystemTime, String)> = list(&store.join("packs"))
        .into_iter()
        .filter(|p| p.ends_with(".pack"))
        .map(|p| (fs::metadata(store.join("packs").join(&p)).unwrap().modified().unwrap(), p))
        .collect();
    packs.sort();
    packs[n].1.trim_end_matches(".pack").to_string()
}

/// Offset of the middle of the first payload listed in an index.
fn first_payload_middle(idx: &[u8]) -> usize {
    // Pack version 3 (format 2) widens the entry's id field from 16 to 32
    // bytes (FORMAT.md §6).
    let id = if u32::from_le_bytes(idx[8..12].try_into().unwrap()) >= 3 { 32 } else { 16 };
    let off = u64::from_le_bytes(idx[24 + id..24 + id + 8].try_into().unwrap()) as usize;
    let len = u32::from_le_bytes(idx[24 + id + 8..24 + id + 12].try_into().unwrap()) as usize;
    off + len / 2
}

/// (file, damage, byte, versions expected damaged, store refuses to open)
type Case = (String, Damage, Option<usize>, Vec<usize>, bool);

struct Outcome {
    verify_code: Option<i32>,
    verify_out: String,
    damaged: Vec<String>,
}

fn verify(store: &Path) -> Outcome {
    let o = run(store, &["verify", "--all", "--json", "-q"]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(!stderr(&o).contains("panicked"), "verify panicked: {}", stderr(&o));
    let damaged = serde_json::from_str::<serde_json::Value>(&out)
        .ok()
        .and_then(|v| {
            v["versions"].as_array().map(|a| {
                a.iter()
                    .filter(|x| !x["problems"].as_array().unwrap().is_empty())
                    .map(|x| x["id"].as_str().unwrap().to_string())
                    .collect()
            })
        })
        .unwrap_or_default();
    Outcome { verify_code: o.status.code(), verify_out: format!("{out}{}", stderr(&o)), damaged }
}

#[test]
fn corrupted_store_files_are_detected_and_named() {
    let fx = fixture();
    let p = &fx.pristine;
    let work = fx.scratch.join("store");
    let pack1 = pack_of(p, 1); // written by the pack of v1
    let idx1 = fs::read(p.join(format!("packs/{pack1}.idx"))).unwrap();
    let mut detected: Vec<String> = Vec::new();
    let all = [Damage::Truncate, Damage::BitFlip, Damage::Append];

    // (file, damage, byte, versions expected damaged, store refuses to open)
    let mut cases: Vec<Case> = Vec::new();
    for d in all {
        let at = if matches!(d, Damage::BitFlip) { Some(first_payload_middle(&idx1)) } else { None };
        cases.push((format!("packs/{pack1}.pack"), d, at, vec![1], false));
        cases.push((format!("packs/{pack1}.idx"), d, None, vec![1], false));
        cases.push((format!("versions/{}.tdm", fx.ids[2]), d, None, vec![2], false));
        cases.push(("refs/stable".into(), d, None, vec![], false));
        cases.push(("HEAD".into(), d, None, vec![], false));
        cases.push(("audit.log".into(), d, Some(40), vec![], false));
        // Reported (issue 12); every version restores with the block size
        // its manifest records.
        cases.push(("config".into(), d, None, vec![], false));
    }
    // A pack lost (or removed under a reader by a concurrent gc).
    cases.push((format!("packs/{pack1}.pack"), Damage::Delete, None, vec![1], false));
    for (file, how, at, bad, refuses) in cases {
        copy_dir(p, &work);
        damage(&work.join(&file), how, at);
        let label = format!("{how:?} {file}");
        let v = verify(&work);
        if file.ends_with(".pack") && matches!(how, Damage::Append) {
            // Bytes after the footer: readers locate blocks through the
            // index only, so every version still restores, but verify sees
            // that the pack no longer hashes to its name.
            assert_eq!(v.verify_code, Some(3), "{label}: {}", v.verify_out);
            assert!(v.verify_out.contains(&pack1) && v.verify_out.contains("appended"), "{label}: {}", v.verify_out);
            for (i, id) in fx.ids.iter().enumerate() {
                assert_eq!(unpack_bytes(&work, id, &fx.scratch), fs::read(&fx.srcs[i]).unwrap(), "{label}");
            }
            detected.push(label);
            continue;
        }
        let name = work.join(&file);
        let name = name.to_str().unwrap();
        if refuses {
            assert_eq!(v.verify_code, Some(1), "{label}: {}", v.verify_out);
            assert!(v.verify_out.contains(name), "{label}: error does not name the file: {}", v.verify_out);
            detected.push(label);
            continue;
        }
        assert_eq!(v.verify_code, Some(3), "{label}: verify should exit 3: {}", v.verify_out);
        let want: Vec<String> = bad.iter().map(|i| fx.ids[*i].clone()).collect();
        let mut got = v.damaged.clone();
        got.sort();
        let mut want_sorted = want.clone();
        want_sorted.sort();
        assert_eq!(got, want_sorted, "{label}: damaged versions listed: {}", v.verify_out);
        let file_named = v.verify_out.contains(name)
            || v.verify_out.contains(&format!("{file}:"))
            || (file.ends_with(".pack") && v.verify_out.contains(&pack1))
            || (file.ends_with(".tdm") && v.verify_out.contains(&fx.ids[2]));
        assert!(file_named, "{label}: verify does not name the file: {}", v.verify_out);
        // Reading the damaged thing fails, naming the file.
        let probe: Option<&str> = match file.as_str() {
            "refs/stable" => Some("stable"),
            "HEAD" => Some("HEAD"),
            f if f.ends_with(".tdm") => Some(&fx.ids[2]),
            f if f.contains("packs/") => Some(&fx.ids[1]),
            _ => None,
        };
        if let Some(r) = probe {
            let o = run(&work, &["unpack", r, "-o", fx.scratch.join("x").to_str().unwrap(), "--force", "-q"]);
            let e = stderr(&o);
            assert_eq!(o.status.code(), Some(3), "{label}: unpack {r}: damage exits 3: {e}");
            assert!(!e.contains("panicked"), "{label}: {e}");
            let named = e.contains(name) || (file.contains("packs/") && (e.contains(&pack1) || e.contains("missing")));
            assert!(named, "{label}: unpack error does not say what is wrong where: {e}");
        }
        // Undamaged versions still restore bit-exactly.
        for (i, id) in fx.ids.iter().enumerate() {
            if !bad.contains(&i) {
                assert_eq!(unpack_bytes(&work, id, &fx.scratch), fs::read(&fx.srcs[i]).unwrap(), "{label}: v{i}");
            }
        }
        detected.push(label);
    }
    eprintln!("corruptions detected: {} {detected:?}", detected.len());
    assert_eq!(detected.len(), 22, "every damage case is detected");
}

#[test]
fn malformed_store_files_get_clear_errors() {
    let fx = fixture();
    let work = fx.scratch.join("store");
    let mut tried = 0;
    let pack0 = pack_of(&fx.pristine, 0);
    let huge_count = {
        let mut b = fs::read(fx.pristine.join(format!("packs/{pack0}.idx"))).unwrap();
        b[16..24].copy_from_slice(&(1u64 << 58).to_le_bytes());
        b
    };
    let manifest = fs::read(fx.pristine.join(format!("versions/{}.tdm", fx.ids[0]))).unwrap();
    let huge_manifest = {
        // A manifest whose frame claims a body of 2^62 bytes.
        let mut b = manifest.clone();
        b[16..24].copy_from_slice(&(1u64 << 62).to_le_bytes());
        b
    };
    let newer_config = {
        let mut b = fs::read(fx.pristine.join("config")).unwrap();
        b[8..12].copy_from_slice(&9u32.to_le_bytes());
        b
    };
    let huge_body_len = {
        let mut b = fs::read(fx.pristine.join("config")).unwrap();
        b[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        b
    };
    let cases: Vec<(String, Vec<u8>, &str)> = vec![
        (format!("versions/{}.tdm", fx.ids[0]), b"\x89garbage, not a manifest at all \x00\x01".repeat(3), "bad magic"),
        (format!("versions/{}.tdm", fx.ids[0]), huge_manifest, "header says 4611686018427387904 body bytes"),
        (format!("versions/{}.tdm", fx.ids[0]), vec![0u8; 5 << 20], "bad magic"),
        (format!("packs/{pack0}.idx"), huge_count, "claims 288230376151711744 entries"),
        ("config".into(), huge_body_len, "length mismatch"),
        ("config".into(), newer_config, "format version 9 is not supported"),
        ("HEAD".into(), vec![b'x'; 10_000], "more than the 256 allowed"),
        ("refs/stable".into(), b"tdelta-ref 1 zz 0000000000000000\n".to_vec(), "checksum"),
        ("audit.log".into(), b"not an audit log\n".to_vec(), "header"),
    ];
    for (file, bytes, want) in cases {
        copy_dir(&fx.pristine, &work);
        fs::write(work.join(&file), &bytes).unwrap();
        tried += 1;
        // Bounded memory: the whole run under a 2 GiB address-space cap.
        let o = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "ulimit -v 2097152; exec '{}' --store '{}' verify --all -q",
                env!("CARGO_BIN_EXE_tdelta"),
                work.display()
            ))
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
        assert!(matches!(o.status.code(), Some(1) | Some(3)), "{file}: exit {:?}: {text}", o.status.code());
        assert!(!text.contains("panicked") && !text.contains("memory allocation"), "{file}: {text}");
        assert!(text.contains(want), "{file}: expected `{want}` in: {text}");
        assert!(
            text.contains(&file) || text.contains(file.split('/').next_back().unwrap()),
            "{file}: not named: {text}"
        );
    }
    eprintln!("malformed store files tried: {tried}");
}

#[test]
fn hostile_checkpoints_are_refused_with_clear_messages() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata");
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    init(&store);
    let mut cases: Vec<(PathBuf, &str)> = vec![
        (root.join("malformed-extra/header-100gb.safetensors"), "header length 100000000000 bytes exceeds"),
        (root.join("malformed-extra/offsets-beyond-2-64.safetensors"), "data_offsets"),
        (root.join("malformed-extra/dtype-size-overflow.safetensors"), "overflows"),
        (root.join("malformed-extra/shape-product-overflow.safetensors"), "overflows"),
        (root.join("malformed-extra/duplicate-tensor-names.safetensors"), "duplicate tensor name"),
        (root.join("malformed-extra/index-dotdot-in-middle"), "leaves the checkpoint directory"),
        (root.join("malformed-extra/index-absolute-path"), "is absolute"),
        (root.join("malformed/index-path-outside-dir"), "leaves the checkpoint directory"),
        (root.join("malformed/header-10gb.safetensors"), "exceeds the limit"),
        (root.join("malformed/duplicate-tensor.safetensors"), "duplicate"),
        (root.join("malformed/shape-overflow.safetensors"), "overflow"),
    ];
    // Symlinks out of the tree, made here (git does not keep them well).
    let outside = dir.path().join("outside.safetensors");
    fs::copy(root.join("tiny.safetensors"), &outside).unwrap();
    let ck = dir.path().join("ckpt-symlink-file");
    fs::create_dir_all(&ck).unwrap();
    fs::copy(root.join("tiny.safetensors"), ck.join("model.safetensors")).unwrap();
    std::os::unix::fs::symlink(&outside, ck.join("extra.safetensors")).unwrap();
    cases.push((ck, "symlink points outside the checkpoint directory"));
    let ck2 = dir.path().join("ckpt-symlink-shard");
    fs::create_dir_all(&ck2).unwrap();
    for e in fs::read_dir(root.join("sharded")).unwrap() {
        let p = e.unwrap().path();
        fs::copy(&p, ck2.join(p.file_name().unwrap())).unwrap();
    }
    let shard = ck2.join("model-00002-of-00002.safetensors");
    fs::rename(&shard, dir.path().join("moved-shard.safetensors")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("moved-shard.safetensors"), &shard).unwrap();
    cases.push((ck2, "outside the checkpoint directory"));

    let before = snapshot(&store, &["lock"]);
    for (src, want) in &cases {
        let o = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "ulimit -v 2097152; exec '{}' --store '{}' pack '{}' -q",
                env!("CARGO_BIN_EXE_tdelta"),
                store.display(),
                src.display()
            ))
            .output()
            .unwrap();
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{}: {e}", src.display());
        assert!(!e.contains("panicked") && !e.contains("memory allocation"), "{}: {e}", src.display());
        assert!(e.contains(want), "{}: expected `{want}` in: {e}", src.display());
        let fname = src.file_name().unwrap().to_str().unwrap();
        assert!(e.contains(fname), "{}: error does not name the file: {e}", src.display());
    }
    assert_eq!(before, snapshot(&store, &["lock"]), "a refused pack changed the store");
    eprintln!("hostile checkpoints tried: {}", cases.len());
}
