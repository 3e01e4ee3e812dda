//! Tests of the checkpoint reader: agreement with the official
//! `safetensors` crate, every malformed-input case, directory rules.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use proptest::prelude::*;

use super::testdata::{Spec, build, malformed, raw_file};
use super::*;
use crate::{DType, Error, Result};

/// The official crate's name for a dtype (every tdelta dtype exists there).
fn official_dtype(d: DType) -> safetensors::Dtype {
    serde_json::from_value(serde_json::Value::String(d.name().to_owned()))
        .unwrap_or_else(|e| panic!("safetensors has no dtype {d}: {e}"))
}

/// Asserts `result` is `InvalidCheckpoint` about `file` (and `tensor`), with
/// `phrase` in the message; returns the message.
#[track_caller]
fn assert_invalid<T: std::fmt::Debug>(result: Result<T>, file: &Path, tensor: Option<&str>, phrase: &str) -> String {
    let err = result.expect_err("input must be refused");
    let message = err.to_string();
    let Error::InvalidCheckpoint { file: got_file, tensor: got_tensor, .. } = &err else {
        panic!("expected InvalidCheckpoint, got {err:?}");
    };
    assert_eq!(got_file, file, "{message}");
    assert_eq!(got_tensor.as_deref(), tensor, "{message}");
    assert!(message.contains(phrase), "`{phrase}` not in: {message}");
    assert!(message.starts_with(&file.display().to_string()), "{message}");
    if let Some(t) = tensor {
        assert!(message.contains(&format!("tensor `{t}`")), "{message}");
    }
    message
}

fn parse(bytes: &[u8]) -> Result<Header> {
    parse_header(Path::new("x.safetensors"), bytes, bytes.len() as u64)
}

/// Checks our header against the official reader's view of the same bytes.
fn assert_agrees_with_official(bytes: &[u8], h: &Header) {
    let (n, meta) = safetensors::SafeTensors::read_metadata(bytes).expect("official reader");
    assert_eq!(h.data_start, 8 + n as u64);
    assert_eq!(h.raw, bytes[..8 + n]);
    let official = meta.tensors();
    assert_eq!(official.len(), h.tensors.len());
    for t in &h.tensors {
        let o = official.get(&t.name).expect("tensor known to the official reader");
        assert_eq!(official_dtype(t.dtype), o.dtype, "{}", t.name);
        let shape: Vec<u64> = o.shape.iter().map(|&d| d as u64).collect();
        assert_eq!(t.shape, shape, "{}", t.name);
        assert_eq!(t.start, h.data_start + o.data_offsets.0 as u64, "{}", t.name);
        assert_eq!(t.len, (o.data_offsets.1 - o.data_offsets.0) as u64, "{}", t.name);
    }
    let metadata: Option<BTreeMap<String, String>> = meta.metadata().as_ref().map(|m| m.clone().into_iter().collect());
    assert_eq!(h.metadata, metadata);
}

/// The contract's invariant: sorted by start, tiling the data region.
fn assert_tiles(h: &Header, file_len: u64) {
    let mut at = h.data_start;
    for t in &h.tensors {
        assert_eq!(t.start, at, "{}", t.name);
        let elements: u64 = t.shape.iter().product();
        assert_eq!(t.dtype.byte_len(elements), Some(t.len), "{}", t.name);
        at += t.len;
    }
    assert_eq!(at, file_len);
    assert_eq!(h.raw.len() as u64, h.data_start);
}

type Tensors = BTreeMap<String, (DType, Vec<usize>, Vec<u8>)>;

fn arb_tensor() -> impl Strategy<Value = (DType, Vec<usize>, Vec<u8>)> {
    (prop::sample::select(DType::ALL.to_vec()), prop::collection::vec(0usize..5, 0..4)).prop_flat_map(
        |(dtype, mut shape)| {
            let elements = |s: &[usize]| s.iter().product::<usize>() as u64;
            if dtype.byte_len(elements(&shape)).is_none() {
                // Sub-byte dtypes must fill whole bytes.
                shape.push(4);
            }
            let len = dtype.byte_len(elements(&shape)).unwrap_or(0) as usize;
            (Just(dtype), Just(shape), prop::collection::vec(any::<u8>(), len))
        },
    )
}

fn arb_tensors() -> impl Strategy<Value = Tensors> {
    prop::collection::btree_map("\\PC{1,10}", arb_tensor(), 0..6)
        .prop_filter("reserved name", |m| !m.contains_key("__metadata__"))
}

fn arb_metadata() -> impl Strategy<Value = Option<HashMap<String, String>>> {
    prop::option::of(prop::collection::hash_map("\\PC{0,8}", "\\PC{0,8}", 0..4))
}

fn official_serialize(tensors: &Tensors, metadata: Option<HashMap<String, String>>) -> Vec<u8> {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(name, (dtype, shape, data))| {
            let view =
                safetensors::tensor::TensorView::new(official_dtype(*dtype), shape.clone(), data).expect("valid view");
            (name.clone(), view)
        })
        .collect();
    safetensors::serialize(views, metadata).expect("serialize")
}

/// `safetensors` 0.8 writes `{}"__metadata__":{}` (invalid JSON, which it
/// cannot read back either) for no tensors and an empty metadata map: it
/// announces a JSON map of length 0 and serde_json closes it at once.
fn official_writer_bug(tensors: &Tensors, metadata: &Option<HashMap<String, String>>) -> bool {
    tensors.is_empty() && metadata.as_ref().is_some_and(HashMap::is_empty)
}

fn temp_file(bytes: &[u8]) -> tempfile::NamedTempFile {
    let mut t = tempfile::Builder::new().suffix(".safetensors").tempfile().expect("temp file");
    t.write_all(bytes).expect("write");
    t.flush().expect("flush");
    t
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Files written by the official crate parse to the same tensors,
    /// offsets and metadata, with the header kept verbatim.
    #[test]
    fn official_files_parse_identically(tensors in arb_tensors(), metadata in arb_metadata()) {
        prop_assume!(!official_writer_bug(&tensors, &metadata));
        let bytes = official_serialize(&tensors, metadata.clone());
        let h = parse(&bytes).expect("official file accepted");
        assert_tiles(&h, bytes.len() as u64);
        assert_agrees_with_official(&bytes, &h);
        prop_assert_eq!(h.tensors.len(), tensors.len());
        for t in &h.tensors {
            let (dtype, shape, data) = &tensors[&t.name];
            prop_assert_eq!(t.dtype, *dtype);
            let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
            prop_assert_eq!(&t.shape, &shape);
            prop_assert_eq!(&bytes[t.start as usize..(t.start + t.len) as usize], &data[..]);
        }
        let metadata: Option<BTreeMap<String, String>> = metadata.map(|m| m.into_iter().collect());
        prop_assert_eq!(h.metadata, metadata);
    }

    /// Damaged files never panic; what is accepted is valid and the
    /// official reader accepts it too; what only we refuse is a duplicate.
    #[test]
    fn damaged_files_never_panic(
        tensors in arb_tensors(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..4),
    ) {
        let mut bytes = official_serialize(&tensors, None);
        for (at, value, kind) in edits {
            match kind {
                0 if !bytes.is_empty() => bytes.truncate(at.index(bytes.len())),
                1 => bytes.insert(at.index(bytes.len() + 1), value),
                _ if !bytes.is_empty() => {
                    let i = at.index(bytes.len());
                    bytes[i] = value;
                }
                _ => {}
            }
        }
        match parse(&bytes) {
            Ok(h) => {
                assert_tiles(&h, bytes.len() as u64);
                assert_agrees_with_official(&bytes, &h);
            }
            Err(e) => {
                prop_assert!(matches!(e, Error::InvalidCheckpoint { .. }), "{e:?}");
                if safetensors::SafeTensors::read_metadata(&bytes).is_ok() {
                    prop_assert!(e.to_string().contains("duplicate"), "only we refuse: {e}");
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 32,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Reading the header from a file gives what parsing the bytes gives,
    /// and `open` sees one safetensors file.
    #[test]
    fn files_on_disk_read_like_bytes(tensors in arb_tensors(), metadata in arb_metadata()) {
        prop_assume!(!official_writer_bug(&tensors, &metadata));
        let bytes = official_serialize(&tensors, metadata);
        let t = temp_file(&bytes);
        let f = fs::File::open(t.path()).expect("open");
        let from_file = read_header(t.path(), &f, bytes.len() as u64).expect("read_header");
        let from_bytes = parse_header(t.path(), &bytes, bytes.len() as u64).expect("parse_header");
        prop_assert_eq!(&from_file, &from_bytes);
        let c = open(t.path()).expect("open");
        prop_assert_eq!(c.layout, Layout::File);
        prop_assert_eq!(c.files.len(), 1);
        prop_assert_eq!(&c.files[0].kind, &FileKind::Safetensors(from_bytes));
    }
}

#[test]
fn every_malformed_case_is_refused_from_memory() {
    let file = Path::new("x.safetensors");
    for case in malformed() {
        let [("", bytes)] = case.files.as_slice() else {
            continue;
        };
        let result = parse_header(file, bytes, bytes.len() as u64);
        assert_invalid(result, file, case.tensor, case.phrase);
    }
}

#[test]
fn huge_header_claims_are_refused_before_allocating() {
    let file = Path::new("big.safetensors");
    for claim in [10_000_000_000u64, MAX_HEADER_LEN + 1, u64::MAX] {
        let mut bytes = claim.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"{}");
        // Even when the file is claimed to be large enough.
        let result = parse_header(file, &bytes, u64::MAX);
        assert_invalid(result, file, None, "exceeds the limit of 100000000 bytes");
    }
    // Through a real file: the length is checked against the file before
    // the buffer is allocated.
    let mut bytes = (MAX_HEADER_LEN - 8).to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    let t = temp_file(&bytes);
    let f = fs::File::open(t.path()).expect("open");
    let result = read_header(t.path(), &f, bytes.len() as u64);
    assert_invalid(result, t.path(), None, "runs past the end of the file");
}

#[test]
fn a_file_shorter_than_its_stat_is_reported() {
    let bytes = build(&[("a", DType::U8, &[4], vec![1, 2, 3, 4])], &[]);
    let t = temp_file(&bytes[..12]);
    let f = fs::File::open(t.path()).expect("open");
    let result = read_header(t.path(), &f, bytes.len() as u64);
    assert_invalid(result, t.path(), None, "file is shorter than expected");
}

#[test]
fn scalar_empty_and_no_tensors_are_valid() {
    let specs: Vec<Spec<'_>> = vec![
        ("e1", DType::F32, &[0], vec![]),
        ("s", DType::BF16, &[], vec![1, 2]),
        ("e2", DType::I64, &[3, 0, 2], vec![]),
        ("e3", DType::F4, &[0], vec![]),
    ];
    let bytes = build(&specs, &[]);
    let h = parse(&bytes).expect("valid");
    assert_tiles(&h, bytes.len() as u64);
    assert_agrees_with_official(&bytes, &h);
    let names: Vec<&str> = h.tensors.iter().map(|t| t.name.as_str()).collect();
    // Sorted by start, then length, then name.
    assert_eq!(names, ["e1", "s", "e2", "e3"]);
    assert!(h.metadata.is_none());

    for json in ["{}", "{\"__metadata__\":null}", "{\"__metadata__\":{}}"] {
        let bytes = raw_file(json, &[]);
        let h = parse(&bytes).expect(json);
        assert!(h.tensors.is_empty());
        assert_agrees_with_official(&bytes, &h);
    }
    // Empty header text is not JSON.
    assert_invalid(parse(&0u64.to_le_bytes()), Path::new("x.safetensors"), None, "invalid json header");
}

#[test]
fn header_bytes_are_kept_verbatim() {
    // Odd spacing, key order, padding and unknown fields are all kept.
    let json = " { \"b\" : {\"data_offsets\":[0,1],\"dtype\":\"U8\",\"shape\":[1],\"extra\":[1]},\n\"__metadata__\":{\"z\":\"1\",\"a\":\"\\u00e9\"} }\t";
    let bytes = raw_file(json, &[9]);
    let h = parse(&bytes).expect("valid");
    assert_eq!(&h.raw[..], &bytes[..bytes.len() - 1]);
    assert_eq!(h.data_start as usize, bytes.len() - 1);
    let meta = h.metadata.expect("metadata");
    assert_eq!(meta.get("a").map(String::as_str), Some("\u{e9}"));
}

#[test]
fn bad_entries_name_the_tensor() {
    let file = Path::new("x.safetensors");
    let cases = [
        ("{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", "missing field `data_offsets`"),
        ("{\"w\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", "`shape` dimension"),
        ("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", "invalid header entry"),
        ("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,18446744073709551616]}}", "`data_offsets` value"),
        ("{\"w\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", "invalid header entry"),
        ("{\"w\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", "duplicate field"),
        ("{\"w\":7}", "invalid header entry"),
    ];
    for (json, phrase) in cases {
        let bytes = raw_file(json, &[0; 4]);
        assert_invalid(parse(&bytes), file, Some("w"), phrase);
    }
    // The first tensor beginning past 0 leaves a gap at the start.
    let bytes = raw_file("{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}", &[0; 2]);
    assert_invalid(parse(&bytes), file, Some("w"), "gap of 1 bytes at the start");
    // An empty tensor inside another one overlaps it.
    let bytes = raw_file(
        "{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},\"b\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[1,1]}}",
        &[0; 2],
    );
    assert_invalid(parse(&bytes), file, Some("b"), "overlap tensor `a`");
    // Errors after the tensor entries do not blame a tensor.
    let bytes = raw_file("{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}} x", &[0]);
    assert_invalid(parse(&bytes), file, None, "invalid json header: trailing characters");
    let bytes = raw_file("{\"__metadata__\":{},\"__metadata__\":{}}", &[]);
    assert_invalid(parse(&bytes), file, None, "duplicate `__metadata__` key");
    let bytes = raw_file("{\"__metadata__\":[\"a\"]}", &[]);
    assert_invalid(parse(&bytes), file, None, "`__metadata__`");
}

#[test]
fn deep_json_nesting_is_an_error_not_a_stack_overflow() {
    let json = format!("{{\"w\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
    let bytes = raw_file(&json, &[]);
    assert_invalid(parse(&bytes), Path::new("x.safetensors"), Some("w"), "invalid header entry");
    let json = format!("{{\"__metadata__\":{}{}}}", "{\"a\":".repeat(100_000), "}".repeat(100_000));
    let bytes = raw_file(&json, &[]);
    assert_invalid(parse(&bytes), Path::new("x.safetensors"), None, "invalid json header");
}

// ---- opening files and directories ----

fn write(dir: &Path, rel: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(rel);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("mkdir");
    }
    fs::write(&path, bytes).expect("write");
    path
}

fn shard(names: &[&str]) -> Vec<u8> {
    let specs: Vec<Spec<'_>> = names.iter().map(|n| (*n, DType::F32, &[1u64][..], vec![0u8; 4])).collect();
    build(&specs, &[])
}

fn index(map: &[(&str, &str)]) -> Vec<u8> {
    let map: BTreeMap<&str, &str> = map.iter().copied().collect();
    serde_json::to_vec(&serde_json::json!({"metadata": {"total_size": 8}, "weight_map": map})).expect("json")
}

#[test]
fn a_single_file_is_parsed_or_a_blob() {
    let dir = tempfile::tempdir().expect("tempdir");
    let st = write(dir.path(), "m.safetensors", &shard(&["a"]));
    let c = open(&st).expect("open");
    assert_eq!(c.root, st);
    assert_eq!(c.files[0].rel_path, "m.safetensors");
    assert!(matches!(c.files[0].kind, FileKind::Safetensors(_)));
    // Any other file is a blob, even one that is not safetensors inside.
    for (name, bytes) in [("m.bin", &b"\xff\x00junk"[..]), ("empty", b""), ("m.safetensors.bak", b"x")] {
        let p = write(dir.path(), name, bytes);
        let c = open(&p).expect("blob");
        assert_eq!(c.layout, Layout::File);
        assert_eq!(c.files[0].kind, FileKind::Blob);
        assert_eq!(c.files[0].len, bytes.len() as u64);
    }
    // A bad .safetensors file is refused with its path.
    let bad = write(dir.path(), "bad.safetensors", b"1234");
    assert_invalid(open(&bad), &bad, None, "file is too short: 4 bytes");
    let missing = dir.path().join("missing.safetensors");
    assert!(matches!(open(&missing), Err(Error::Io { .. })));
}

#[test]
fn a_sharded_directory_is_checked_against_its_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    write(d, "a/model-1.safetensors", &shard(&["x", "y"]));
    write(d, "a/model-2.safetensors", &shard(&["z"]));
    write(
        d,
        "a/model.safetensors.index.json",
        &index(&[("x", "model-1.safetensors"), ("y", "model-1.safetensors"), ("z", "model-2.safetensors")]),
    );
    write(d, "config.json", b"{}");
    write(d, ".tdelta/objects/junk", b"not part of the checkpoint");
    write(d, "sub/.tdelta", b"a file named .tdelta below the top is kept");
    let c = open(d).expect("open");
    assert_eq!(c.layout, Layout::Directory);
    let names: Vec<&str> = c.files.iter().map(|f| f.rel_path.as_str()).collect();
    assert_eq!(
        names,
        [
            "a/model-1.safetensors",
            "a/model-2.safetensors",
            "a/model.safetensors.index.json",
            "config.json",
            "sub/.tdelta"
        ]
    );

    let idx = d.join("a/model.safetensors.index.json");
    // (weight_map, tensor named by the error, phrase of the error)
    type BadMap<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>, &'a str);
    let bad_maps: [BadMap<'_>; 9] = [
        (&[("x", "model-3.safetensors")], None, "names shard `model-3.safetensors` (for tensor `x`), which is missing"),
        (&[("z", "model-1.safetensors")], Some("z"), "which has no such tensor"),
        (&[("x", "../a/model-1.safetensors")], None, "leaves the checkpoint directory"),
        (&[("x", "sub/../model-1.safetensors")], None, "leaves the checkpoint directory"),
        (&[("x", "/etc/passwd")], None, "is absolute"),
        (&[("x", "..\\model-1.safetensors")], None, "contains `\\`"),
        (&[("x", "")], None, "is empty"),
        (&[("x", "./model-1.safetensors")], None, "not a plain relative path"),
        (&[("x", "model.safetensors.index.json")], None, "not a .safetensors file"),
    ];
    for (map, tensor, phrase) in bad_maps {
        write(d, "a/model.safetensors.index.json", &index(map));
        assert_invalid(open(d), &idx, tensor, phrase);
    }
    for (text, phrase) in [
        (&b"{"[..], "invalid shard index json"),
        (b"{\"metadata\":{}}", "missing field `weight_map`"),
        (b"{\"weight_map\":{\"x\":1}}", "invalid shard index json"),
        (b"{\"weight_map\":{\"x\":\"model-1.safetensors\",\"x\":\"model-1.safetensors\"}}", "duplicate tensor `x`"),
    ] {
        write(d, "a/model.safetensors.index.json", text);
        assert_invalid(open(d), &idx, None, phrase);
    }
    // A bad shard is reported as itself.
    write(d, "a/model.safetensors.index.json", &index(&[("x", "model-1.safetensors")]));
    let shard2 = write(d, "a/model-2.safetensors", b"\x02\0\0\0\0\0\0\0[}");
    assert_invalid(open(d), &shard2, None, "invalid json header");
}

#[test]
fn an_empty_directory_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::create_dir(dir.path().join("empty_sub")).expect("mkdir");
    assert_invalid(open(dir.path()), dir.path(), None, "directory contains no files");
}

#[cfg(unix)]
#[test]
fn symlinks_inside_are_followed_and_escapes_refused() {
    use std::os::unix::fs::symlink;
    let outside = tempfile::tempdir().expect("tempdir");
    let secret = write(outside.path(), "secret.safetensors", &shard(&["s"]));
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    write(d, "real/model.safetensors", &shard(&["a"]));
    symlink("real/model.safetensors", d.join("link.safetensors")).expect("symlink");
    let c = open(d).expect("inside link is followed");
    assert_eq!(c.files.len(), 2);
    assert!(c.files.iter().all(|f| matches!(f.kind, FileKind::Safetensors(_))));

    let escape = d.join("escape.safetensors");
    symlink(&secret, &escape).expect("symlink");
    assert_invalid(open(d), &escape, None, "symlink points outside the checkpoint directory");
    fs::remove_file(&escape).expect("rm");

    let relative = d.join("real/up");
    symlink("../../", &relative).expect("symlink");
    let message = open(d).expect_err("dir link").to_string();
    assert!(message.contains("symlink"), "{message}");
    fs::remove_file(&relative).expect("rm");

    let inner_dir = d.join("dirlink");
    symlink("real", &inner_dir).expect("symlink");
    assert_invalid(open(d), &inner_dir, None, "symlink to a directory is not supported");
    fs::remove_file(&inner_dir).expect("rm");

    let dangling = d.join("dangling");
    symlink("nowhere", &dangling).expect("symlink");
    assert_invalid(open(d), &dangling, None, "cannot resolve symlink");
    fs::remove_file(&dangling).expect("rm");

    open(d).expect("clean again");
}

#[cfg(unix)]
#[test]
fn fifos_are_refused_without_blocking() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "ok.json", b"{}");
    let fifo = dir.path().join("pipe.safetensors");
    let c_path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).expect("cstring");
    // SAFETY: a valid NUL-terminated path.
    let rc = unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) };
    assert_eq!(rc, 0, "mkfifo");
    assert_invalid(open(&fifo), &fifo, None, "not a regular file");
    assert_invalid(open(dir.path()), &fifo, None, "not a regular file");
    // Even if the walk is raced, opening a fifo does not block.
    let err = super::dir::open_regular(&fifo).expect_err("fifo");
    assert!(err.to_string().contains("not a regular file"), "{err}");
}

#[cfg(unix)]
#[test]
fn non_utf8_names_are_refused() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let name = std::ffi::OsStr::from_bytes(b"bad\xff.json");
    let path = dir.path().join(name);
    if fs::write(&path, b"x").is_err() {
        // Some file systems refuse such names outright.
        return;
    }
    assert_invalid(open(dir.path()), &path, None, "file name is not valid utf-8");
}
