//! `tdelta unpack` never destroys data it did not write (issue 11), reads
//! parts of a version, `tdelta cat`, and the ref syntax (issues 11, 12).

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{bin, ok, run, snapshot, stderr};
use safetensors::SafeTensors;
use tdelta::DType;
use tdelta_dev::synth::SeriesSpec;

/// `tdelta ARGS` run in directory `cwd` (the store is `./.tdelta` unless
/// `--store` is given).
fn run_in(cwd: &Path, args: &[&str]) -> Output {
    bin().current_dir(cwd).args(args).stdin(Stdio::null()).output().unwrap()
}

fn ok_in(cwd: &Path, args: &[&str]) -> String {
    let o = run_in(cwd, args);
    assert!(o.status.success(), "tdelta {args:?} in {} failed: {}", cwd.display(), stderr(&o));
    String::from_utf8(o.stdout).unwrap()
}

/// A command that must fail with exit 1 and one clear line; returns it.
fn refused(o: Output, what: &str) -> String {
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{what} should fail: {e}");
    assert!(e.starts_with("error: ") && !e.contains("panicked"), "{what}: {e}");
    e
}

/// Two versions of a sharded Hugging Face directory (2 shards, index,
/// config, tokenizer).
fn dir_series(dir: &Path, versions: usize) -> Vec<PathBuf> {
    let mut spec = SeriesSpec::new(11, DType::BF16, 1 << 20, versions);
    spec.sharded = true;
    spec.shards = 2;
    tdelta_dev::synth::write_series(&spec, dir).unwrap()
}

fn file_series(dir: &Path, versions: usize) -> Vec<PathBuf> {
    tdelta_dev::synth::write_series(&SeriesSpec::new(5, DType::F32, 1 << 20, versions), dir).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `work/` with a store in `work/.tdelta` holding one directory version,
/// plus a user file `work/notes.txt`. Returns (work, source dir).
fn work_with_store(root: &Path) -> (PathBuf, PathBuf) {
    let src = dir_series(&root.join("src"), 1).remove(0);
    let work = root.join("work");
    fs::create_dir(&work).unwrap();
    fs::write(work.join("notes.txt"), b"mine").unwrap();
    ok_in(&work, &["init", "--block-size", "64K", "-q"]);
    ok_in(&work, &["pack", s(&src), "-q"]);
    (work, src)
}

/// Every file of a source checkpoint directory is at `out` with the same
/// bytes.
fn assert_restored(src: &Path, out: &Path) {
    for (rel, bytes) in snapshot(src, &[]) {
        if rel.ends_with('/') {
            continue;
        }
        assert_eq!(fs::read(out.join(&rel)).unwrap_or_default(), bytes, "{rel} at {}", out.display());
    }
}

fn store_intact(store: &Path, before: &std::collections::BTreeMap<String, Vec<u8>>) {
    assert_eq!(&snapshot(store, &["lock"]), before, "the store changed");
    ok(store, &["verify", "--all", "-q"]);
}

#[test]
fn issue_11_force_into_cwd_holding_the_store_writes_only_the_version_files() {
    let dir = tempfile::tempdir().unwrap();
    let (work, src) = work_with_store(dir.path());
    let store = work.join(".tdelta");
    let before = snapshot(&store, &["lock"]);
    // Without --force: refused, nothing written.
    let e = refused(run_in(&work, &["unpack", "HEAD", "-o", "."]), "unpack into a non-empty .");
    assert!(e.contains("already exists") && e.contains("--force"), "{e}");
    assert_eq!(common::list(&work), [".tdelta", "notes.txt"]);
    ok_in(&work, &["unpack", "HEAD", "-o", ".", "--force", "-q"]);
    store_intact(&store, &before);
    assert_eq!(fs::read(work.join("notes.txt")).unwrap(), b"mine");
    assert_restored(&src, &work);
    let names = common::list(&work);
    assert!(names.iter().all(|n| !n.contains(tdelta::PARTIAL_TAG)), "{names:?}");
}

#[test]
fn issue_11_force_into_an_ancestor_of_the_store_keeps_everything_else() {
    let dir = tempfile::tempdir().unwrap();
    let (work, src) = work_with_store(dir.path());
    let store = work.join(".tdelta");
    let sub = work.join("sub");
    fs::create_dir(&sub).unwrap();
    fs::write(sub.join("keep.txt"), b"k").unwrap();
    let before = snapshot(&store, &["lock"]);
    let store_arg = format!("--store={}", s(&store));
    ok_in(&sub, &[&store_arg, "unpack", "HEAD", "-o", "..", "--force", "-q"]);
    store_intact(&store, &before);
    assert_eq!(fs::read(work.join("notes.txt")).unwrap(), b"mine");
    assert_eq!(fs::read(sub.join("keep.txt")).unwrap(), b"k");
    assert_restored(&src, &work);
    // The same through an absolute path to the ancestor.
    ok_in(&sub, &[&store_arg, "unpack", "HEAD", "-o", s(dir.path()), "--force", "-q"]);
    store_intact(&store, &before);
    assert_restored(&src, dir.path());
}

#[test]
fn issue_11_the_store_and_paths_inside_it_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (work, _) = work_with_store(dir.path());
    let store = work.join(".tdelta");
    let file_src = file_series(&dir.path().join("fsrc"), 1).remove(0);
    ok_in(&work, &["pack", s(&file_src), "-q", "--tag", "file"]);
    let before = snapshot(&store, &["lock"]);
    for (r, out) in [
        ("HEAD", s(&store).to_string()),
        ("HEAD", format!("{}/", s(&store))),
        ("HEAD", format!("{}/versions", s(&store))),
        ("HEAD", format!("{}/new", s(&store))),
        ("HEAD^", s(&store).to_string()),
        ("file", format!("{}/packs", s(&store))),
    ] {
        let o = run(&store, &["unpack", r, "-o", &out, "--force"]);
        let e = refused(o, &format!("unpack {r} -o {out}"));
        assert!(e.contains("store"), "{e}");
        store_intact(&store, &before);
    }
    // `--store S unpack V -o S` with the store given relatively.
    let e = refused(run_in(&work, &["unpack", "HEAD", "-o", ".tdelta", "--force"]), "-o .tdelta");
    assert!(e.contains("is the store"), "{e}");
    store_intact(&store, &before);
}

#[test]
fn issue_11_trailing_slash_outputs_work() {
    let dir = tempfile::tempdir().unwrap();
    let (work, src) = work_with_store(dir.path());
    ok_in(&work, &["unpack", "HEAD", "-o", "new_dir/", "-q"]);
    assert_restored(&src, &work.join("new_dir"));
    fs::create_dir(work.join("existing")).unwrap();
    fs::write(work.join("existing/other.txt"), b"o").unwrap();
    ok_in(&work, &["unpack", "HEAD", "-o", "existing/", "--force", "-q"]);
    assert_restored(&src, &work.join("existing"));
    assert_eq!(fs::read(work.join("existing/other.txt")).unwrap(), b"o");
    // An empty existing directory needs no --force.
    fs::create_dir(work.join("empty")).unwrap();
    ok_in(&work, &["unpack", "HEAD", "-o", "empty/", "-q"]);
    assert_restored(&src, &work.join("empty"));
}

#[test]
fn issue_11_out_holding_unrelated_files_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let (work, src) = work_with_store(dir.path());
    let out = dir.path().join("out");
    fs::create_dir_all(out.join("deep")).unwrap();
    fs::write(out.join("deep/user.bin"), b"u").unwrap();
    fs::write(out.join("config.json"), b"old config").unwrap();
    let e = refused(run_in(&work, &["unpack", "HEAD", "-o", s(&out)]), "unpack into a full dir");
    assert!(e.contains("already exists"), "{e}");
    assert_eq!(fs::read(out.join("config.json")).unwrap(), b"old config");
    // A link where the version has a file: the link is replaced, never
    // what it points to.
    let victim = dir.path().join("victim.json");
    fs::write(&victim, b"keep me").unwrap();
    symlink(&victim, out.join("tokenizer.json")).unwrap();
    ok_in(&work, &["unpack", "HEAD", "-o", s(&out), "--force", "-q"]);
    assert_restored(&src, &out);
    assert_eq!(fs::read(out.join("deep/user.bin")).unwrap(), b"u");
    assert_eq!(fs::read(&victim).unwrap(), b"keep me");
    assert!(!fs::symlink_metadata(out.join("tokenizer.json")).unwrap().file_type().is_symlink());
    // A directory where the version has a file: refused before anything
    // is written.
    let out2 = dir.path().join("out2");
    fs::create_dir_all(out2.join("config.json")).unwrap();
    fs::write(out2.join("keep"), b"k").unwrap();
    let e = refused(run_in(&work, &["unpack", "HEAD", "-o", s(&out2), "--force"]), "file over a dir");
    assert!(e.contains("config.json") && e.contains("is a directory"), "{e}");
    assert_eq!(common::list(&out2), ["config.json", "keep"]);
}

#[test]
fn issue_11_a_user_directory_named_like_the_old_staging_path_is_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let (work, src) = work_with_store(dir.path());
    for name in ["out.tdelta-partial", ".out.tdelta-partial-1-0123456789abcdef"] {
        let p = work.join(name);
        fs::create_dir(&p).unwrap();
        fs::write(p.join("precious"), b"p").unwrap();
    }
    ok_in(&work, &["unpack", "HEAD", "-o", "out", "-q"]);
    assert_restored(&src, &work.join("out"));
    ok_in(&work, &["unpack", "HEAD", "-o", "out", "--force", "-q"]);
    for name in ["out.tdelta-partial", ".out.tdelta-partial-1-0123456789abcdef"] {
        assert_eq!(fs::read(work.join(name).join("precious")).unwrap(), b"p", "{name}");
    }
}

#[test]
fn issue_11_a_dangling_symlink_at_out_needs_force_and_only_the_link_goes() {
    let dir = tempfile::tempdir().unwrap();
    let (work, _) = work_with_store(dir.path());
    let file_src = file_series(&dir.path().join("fsrc"), 1).remove(0);
    ok_in(&work, &["pack", s(&file_src), "-q", "--tag", "file"]);
    let link = work.join("link");
    let target = dir.path().join("nowhere");
    symlink(&target, &link).unwrap();
    let e = refused(run_in(&work, &["unpack", "file", "-o", "link"]), "unpack over a dangling link");
    assert!(e.contains("already exists"), "{e}");
    assert_eq!(fs::read_link(&link).unwrap(), target);
    // A directory version never replaces a non-directory.
    let e = refused(run_in(&work, &["unpack", "HEAD^", "-o", "link", "--force"]), "dir version over a link");
    assert!(e.contains("not a directory"), "{e}");
    assert_eq!(fs::read_link(&link).unwrap(), target);
    ok_in(&work, &["unpack", "file", "-o", "link", "--force", "-q"]);
    assert!(!fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert_eq!(fs::read(&link).unwrap(), fs::read(&file_src).unwrap());
    assert!(!target.exists());
}

#[test]
fn file_version_into_an_existing_directory_lands_under_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let (work, _) = work_with_store(dir.path());
    let file_src = file_series(&dir.path().join("fsrc"), 1).remove(0);
    ok_in(&work, &["pack", s(&file_src), "-q"]);
    ok_in(&work, &["unpack", "HEAD", "-o", ".", "-q"]);
    let name = file_src.file_name().unwrap();
    assert_eq!(fs::read(work.join(name)).unwrap(), fs::read(&file_src).unwrap());
    let e = refused(run_in(&work, &["unpack", "HEAD", "-o", "."]), "second restore");
    assert!(e.contains("already exists"), "{e}");
}

/// A restore killed while it writes leaves OUT as it was (absent here),
/// and the next restore removes its staging directory.
#[test]
fn issue_11_killed_restore_leftovers_are_cleaned_by_the_next_restore() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("big.safetensors");
    // Incompressible bytes, so that the restore runs long enough to be
    // caught writing.
    let mut rng = common::Rng(3);
    let data: Vec<u8> = (0..(48 << 20) / 8).flat_map(|_| rng.next_u64().to_le_bytes()).collect();
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::U8, vec![data.len()], &data).unwrap();
    fs::write(&src, safetensors::serialize([("w", view)], None).unwrap()).unwrap();
    let store = dir.path().join("store");
    common::init(&store);
    common::pack(&store, &src, "big");
    let parent = dir.path().join("outs");
    fs::create_dir(&parent).unwrap();
    let out = parent.join("out.safetensors");
    let staging = |p: &Path| common::list(p).into_iter().filter(|n| n.contains(tdelta::PARTIAL_TAG)).count();
    let mut caught = false;
    for _ in 0..20 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tdelta"))
            .args(["--store", s(&store), "unpack", "HEAD", "-o", s(&out), "-q"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut seen = false;
        while child.try_wait().unwrap().is_none() {
            // Caught writing: the staging directory holds the file.
            let writing = common::list(&parent)
                .iter()
                .any(|n| n.contains(tdelta::PARTIAL_TAG) && parent.join(n).join("file").exists());
            if writing {
                seen = true;
                break;
            }
        }
        if seen {
            child.kill().unwrap();
        }
        let status = child.wait().unwrap();
        if seen && !status.success() {
            caught = true;
            break;
        }
        // It finished first: start again from nothing.
        let _ = fs::remove_file(&out);
    }
    assert!(caught, "no restore could be killed while writing");
    assert!(!out.exists(), "a killed restore left a partial output");
    assert_eq!(staging(&parent), 1, "{:?}", common::list(&parent));
    ok(&store, &["unpack", "HEAD", "-o", s(&out), "-q"]);
    assert_eq!(common::list(&parent), ["out.safetensors"]);
    assert_eq!(fs::read(&out).unwrap(), fs::read(&src).unwrap());
}

#[test]
fn unpack_tensors_writes_a_valid_file_with_only_those_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let src = file_series(&dir.path().join("src"), 1).remove(0);
    let store = dir.path().join("store");
    common::init(&store);
    common::pack(&store, &src, "v");
    let orig_bytes = fs::read(&src).unwrap();
    let orig = SafeTensors::deserialize(&orig_bytes).unwrap();
    let all: Vec<String> = orig.names().into_iter().map(str::to_string).collect();
    let pick: Vec<&String> = all.iter().filter(|n| n.contains("layers.0.") || n.ends_with("norm.weight")).collect();
    assert!(!pick.is_empty() && pick.len() < all.len(), "{all:?}");
    let out = dir.path().join("part.safetensors");
    let full: serde_json::Value =
        serde_json::from_str(&ok(&store, &["unpack", "HEAD", "-o", s(&dir.path().join("full.safetensors")), "--json"]))
            .unwrap();
    let rep: serde_json::Value = serde_json::from_str(&ok(
        &store,
        &["unpack", "HEAD", "-o", s(&out), "--tensors", "*layers.0.*", "*norm.weight", "--json"],
    ))
    .unwrap();
    assert!(rep["payload_bytes"].as_u64().unwrap() < full["payload_bytes"].as_u64().unwrap() / 2, "{rep} {full}");
    let bytes = fs::read(&out).unwrap();
    let part = SafeTensors::deserialize(&bytes).unwrap();
    let mut got: Vec<String> = part.names().into_iter().map(str::to_string).collect();
    got.sort();
    let mut want: Vec<String> = pick.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(got, want);
    for n in &want {
        let (a, b) = (part.tensor(n).unwrap(), orig.tensor(n).unwrap());
        assert_eq!((a.dtype(), a.shape(), a.data()), (b.dtype(), b.shape(), b.data()), "{n}");
    }
    let (_, meta_part) = SafeTensors::read_metadata(&bytes).unwrap();
    let (_, meta_orig) = SafeTensors::read_metadata(&orig_bytes).unwrap();
    assert!(meta_orig.metadata().is_some());
    assert_eq!(meta_part.metadata(), meta_orig.metadata());
    let e = refused(run(&store, &["unpack", "HEAD", "-o", s(&dir.path().join("x")), "--tensors", "nope*"]), "nope");
    assert!(e.contains("no tensor") && e.contains("nope*"), "{e}");
}

#[test]
fn unpack_tensors_and_files_of_a_sharded_directory() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir_series(&dir.path().join("src"), 1).remove(0);
    let store = dir.path().join("store");
    common::init(&store);
    common::pack(&store, &src, "v");
    let out = dir.path().join("part");
    ok(&store, &["unpack", "HEAD", "-o", s(&out), "--tensors", "*embed*", "-q"]);
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("model.safetensors.index.json")).unwrap()).unwrap();
    let map = index["weight_map"].as_object().unwrap();
    assert!(!map.is_empty() && map.keys().all(|k| k.contains("embed")), "{map:?}");
    let mut total = 0;
    for (name, file) in map {
        let bytes = fs::read(out.join(file.as_str().unwrap())).unwrap();
        let part = SafeTensors::deserialize(&bytes).unwrap();
        let orig_bytes = fs::read(src.join(file.as_str().unwrap())).unwrap();
        let orig = SafeTensors::deserialize(&orig_bytes).unwrap();
        assert_eq!(part.tensor(name).unwrap().data(), orig.tensor(name).unwrap().data());
        assert!(part.names().iter().all(|n| n.contains("embed")));
        total += part.tensor(name).unwrap().data().len() as u64;
    }
    assert_eq!(index["metadata"]["total_size"], total);
    assert_eq!(fs::read(out.join("config.json")).unwrap(), fs::read(src.join("config.json")).unwrap());

    let only = dir.path().join("only");
    ok(&store, &["unpack", "HEAD", "-o", s(&only), "--files", "config.json", "*-00002-of-*", "-q"]);
    let mut names = common::list(&only);
    names.sort();
    assert_eq!(names, ["config.json", "model-00002-of-00002.safetensors"]);
    for n in &names {
        assert_eq!(fs::read(only.join(n)).unwrap(), fs::read(src.join(n)).unwrap(), "{n}");
    }
    let e = refused(run(&store, &["unpack", "HEAD", "-o", s(&dir.path().join("y")), "--files", "*.bin"]), "no file");
    assert!(e.contains("no file") && e.contains("config.json"), "{e}");
}

#[test]
fn cat_writes_files_tensors_and_npy() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir_series(&dir.path().join("src"), 1).remove(0);
    let store = dir.path().join("store");
    common::init(&store);
    common::pack(&store, &src, "v");
    ok(&store, &["tag", "best", "HEAD"]);
    let cat = |args: &[&str]| -> Vec<u8> {
        let o = run(&store, args);
        assert!(o.status.success(), "cat {args:?}: {}", stderr(&o));
        o.stdout
    };
    assert_eq!(cat(&["cat", "best:config.json"]), fs::read(src.join("config.json")).unwrap());
    let shard = "model-00001-of-00002.safetensors";
    let shard_bytes = fs::read(src.join(shard)).unwrap();
    assert_eq!(cat(&["cat", &format!("HEAD:{shard}")]), shard_bytes);
    let st = SafeTensors::deserialize(&shard_bytes).unwrap();
    let mut names = st.names();
    names.sort();
    let name = names[0].to_string();
    let t = st.tensor(&name).unwrap();
    assert_eq!(cat(&["cat", "best", "--tensor", &name]), t.data());
    let npy = cat(&["cat", "best", "--tensor", &name, "--npy"]);
    assert_eq!(&npy[..8], b"\x93NUMPY\x01\x00");
    let hlen = u16::from_le_bytes([npy[8], npy[9]]) as usize;
    assert_eq!((10 + hlen) % 64, 0);
    let header = std::str::from_utf8(&npy[10..10 + hlen]).unwrap();
    let dims: Vec<String> = t.shape().iter().map(|d| d.to_string()).collect();
    let shape = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    assert!(header.contains("'descr': '<u2'") && header.contains(&shape), "{header}");
    assert_eq!(&npy[10 + hlen..], t.data());
    let e = refused(run(&store, &["cat", "HEAD:nope.json"]), "missing file");
    assert!(e.contains("no file `nope.json`") && e.contains("config.json"), "{e}");
    let e = refused(run(&store, &["cat", "HEAD"]), "directory without a path");
    assert!(e.contains("REF:PATH"), "{e}");
    let e = refused(run(&store, &["cat", "HEAD", "--tensor", "nope"]), "missing tensor");
    assert!(e.contains("no tensor `nope`"), "{e}");
}

#[test]
fn ref_syntax_parents_and_id_prefixes() {
    let dir = tempfile::tempdir().unwrap();
    let srcs = file_series(&dir.path().join("src"), 3);
    let store = dir.path().join("store");
    common::init(&store);
    let ids: Vec<String> = srcs.iter().map(|p| common::pack(&store, p, "v")).collect();
    let id_of = |r: &str| common::json(&store, &["show", r])["id"].as_str().unwrap().to_string();
    assert_eq!(id_of("HEAD~1"), ids[1]);
    assert_eq!(id_of("HEAD^"), ids[1]);
    assert_eq!(id_of("HEAD~2"), ids[0]);
    assert_eq!(id_of("HEAD^^"), ids[0]);
    assert_eq!(id_of("HEAD~0"), ids[2]);
    assert_eq!(id_of(&format!("{}~", &ids[1][..6])), ids[0]);
    ok(&store, &["tag", "stable", "HEAD~1"]);
    assert_eq!(id_of("stable^"), ids[0]);
    let e = refused(run(&store, &["show", "HEAD~3"]), "past the first version");
    assert!(e.contains("has no parent"), "{e}");
    let e = refused(run(&store, &["show", &ids[0][..3]]), "3-digit prefix");
    assert!(e.contains("at least 4 hex digits"), "{e}");
    let e = refused(run(&store, &["show", "ffff0000"]), "no such prefix");
    assert!(e.contains("unknown ref or version `ffff0000`"), "{e}");
    // Two versions sharing a prefix (made by copying a manifest under a
    // name sharing the first digits; resolving only reads names).
    let p = &ids[0][..4];
    let twin = format!("{p}{}", "0".repeat(28));
    let twin = if twin == ids[0] { format!("{p}{}", "1".repeat(28)) } else { twin };
    fs::copy(store.join(format!("versions/{}.tdm", ids[0])), store.join(format!("versions/{twin}.tdm"))).unwrap();
    let e = refused(run(&store, &["show", p]), "ambiguous prefix");
    assert!(e.contains("ambiguous") && e.contains(&ids[0][..12]) && e.contains(&twin[..12]), "{e}");
    // `unpack` takes the same syntax.
    let out = dir.path().join("o.safetensors");
    ok(&store, &["unpack", "HEAD~2", "-o", s(&out), "-q"]);
    assert_eq!(fs::read(&out).unwrap(), fs::read(&srcs[0]).unwrap());
}

#[test]
fn issue_12_tags_named_like_version_ids_are_refused_and_ids_mean_versions() {
    let dir = tempfile::tempdir().unwrap();
    let srcs = file_series(&dir.path().join("src"), 2);
    let store = dir.path().join("store");
    common::init(&store);
    let a = common::pack(&store, &srcs[0], "a");
    for name in [&a[..4], &a[..], "2024", "deadbeef"] {
        let e = refused(run(&store, &["tag", name, "HEAD"]), &format!("tag {name}"));
        assert!(e.contains("version id"), "{e}");
    }
    let e = refused(run(&store, &["pack", s(&srcs[1]), "--tag", "cafe", "-q"]), "pack --tag cafe");
    assert!(e.contains("version id"), "{e}");
    assert_eq!(common::versions(&store).len(), 1, "the refused pack stored a version");
    ok(&store, &["tag", "v2024", "HEAD"]);
    let b = common::pack(&store, &srcs[1], "b");
    // A tag named like a full id, as an older tdelta let one be made:
    // the full id still means the version.
    ok(&store, &["tag", "tmp", &b]);
    fs::copy(store.join("refs/tmp"), store.join(format!("refs/{a}"))).unwrap();
    let out = dir.path().join("a.safetensors");
    ok(&store, &["unpack", &a, "-o", s(&out), "-q"]);
    assert_eq!(fs::read(&out).unwrap(), fs::read(&srcs[0]).unwrap());
    assert_eq!(common::json(&store, &["show", &a])["id"], a.as_str());
}
