//! The checked-in test checkpoints under `testdata/` (repository root):
//! how they are built, and the tests that keep them honest.
//!
//! Everything here is deterministic. After changing a builder, regenerate
//! with `cargo test -p tdelta checkpoint::testdata::regenerate -- --ignored`;
//! `testdata_is_up_to_date` fails until the files on disk match.

use std::fs;
use std::path::{Path, PathBuf};

use half::{bf16, f16};

use super::{FileKind, Layout, open};
use crate::{DType, Error};

/// The `testdata/` directory at the repository root.
pub(super) fn testdata_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata")
}

/// A safetensors file from a JSON header text and a data region. The header
/// is padded with spaces to a multiple of 8 bytes, as the official writer
/// does.
pub(super) fn raw_file(json: &str, data: &[u8]) -> Vec<u8> {
    raw_bytes(json.as_bytes(), data)
}

/// Like [`raw_file`] with a header that need not be UTF-8.
pub(super) fn raw_bytes(json: &[u8], data: &[u8]) -> Vec<u8> {
    let mut header = json.to_vec();
    header.resize(header.len().next_multiple_of(8), b' ');
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&header);
    out.extend_from_slice(data);
    out
}

/// One tensor to write: name, dtype, shape, data.
pub(super) type Spec<'a> = (&'a str, DType, &'a [u64], Vec<u8>);

/// A valid safetensors file with the tensors in the order given (offsets
/// contiguous) and the metadata entries in the order given. Built by hand
/// rather than with `safetensors::serialize` so that the bytes do not
/// depend on `HashMap` iteration order.
pub(super) fn build(tensors: &[Spec<'_>], metadata: &[(&str, &str)]) -> Vec<u8> {
    let mut entries = Vec::new();
    if !metadata.is_empty() {
        let pairs: Vec<String> = metadata.iter().map(|(k, v)| format!("{}:{}", json_str(k), json_str(v))).collect();
        entries.push(format!("\"__metadata__\":{{{}}}", pairs.join(",")));
    }
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in tensors {
        let begin = data.len();
        data.extend_from_slice(bytes);
        entries.push(format!(
            "{}:{{\"dtype\":\"{dtype}\",\"shape\":{shape:?},\"data_offsets\":[{begin},{}]}}",
            json_str(name),
            data.len()
        ));
    }
    raw_file(&format!("{{{}}}", entries.join(",")), &data)
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

fn f32s(values: impl IntoIterator<Item = f32>) -> Vec<u8> {
    values.into_iter().flat_map(f32::to_le_bytes).collect()
}

fn bf16s(values: impl IntoIterator<Item = f32>) -> Vec<u8> {
    values.into_iter().flat_map(|v| bf16::from_f32(v).to_le_bytes()).collect()
}

fn f16s(values: impl IntoIterator<Item = f32>) -> Vec<u8> {
    values.into_iter().flat_map(|v| f16::from_f32(v).to_le_bytes()).collect()
}

/// A deterministic sequence of small weights. Only exactly rounded
/// operations, so the bytes are the same on every platform.
fn wave(n: usize, phase: u32) -> impl Iterator<Item = f32> {
    (0..n as u32).map(move |i| ((i * 37 + phase * 11) % 101) as f32 / 1000.0 - 0.05)
}

/// `testdata/tiny.safetensors`: many dtypes, a rank-0 and an empty tensor,
/// special float values, metadata.
pub(super) fn tiny() -> Vec<u8> {
    let mut specials = f32s([0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, 1.0e-40]);
    // A NaN with a payload, which must survive bit-exactly.
    specials.extend_from_slice(&0x7fc0_1234u32.to_le_bytes());
    let tensors: Vec<Spec<'_>> = vec![
        ("model.embed_tokens.weight", DType::BF16, &[8, 4], bf16s(wave(32, 0))),
        ("model.layers.0.mlp.weight", DType::F32, &[4, 4], f32s(wave(16, 2))),
        ("model.layers.0.mlp.bias", DType::F16, &[4], f16s(wave(4, 4))),
        ("model.layers.0.specials", DType::F32, &[6], specials),
        ("model.norm.f64", DType::F64, &[2], [1.5f64, -2.25].iter().flat_map(|v| v.to_le_bytes()).collect()),
        ("model.scale", DType::F32, &[], f32s([0.125])),
        ("model.empty", DType::F32, &[0, 4], Vec::new()),
        ("model.position_ids", DType::I64, &[1, 3], [0i64, 1, 2].iter().flat_map(|v| v.to_le_bytes()).collect()),
        ("model.counts", DType::U32, &[2], [7u32, u32::MAX].iter().flat_map(|v| v.to_le_bytes()).collect()),
        ("model.offsets", DType::I32, &[2], [-1i32, 1].iter().flat_map(|v| v.to_le_bytes()).collect()),
        ("model.u16", DType::U16, &[2, 2], [1u16, 2, 3, 65535].iter().flat_map(|v| v.to_le_bytes()).collect()),
        ("model.i16", DType::I16, &[2], [-300i16, 300].iter().flat_map(|v| v.to_le_bytes()).collect()),
        ("model.u64", DType::U64, &[1], u64::MAX.to_le_bytes().to_vec()),
        ("model.mask", DType::BOOL, &[5], vec![1, 0, 1, 1, 0]),
        ("model.q8.e4m3", DType::F8_E4M3, &[4], vec![0x38, 0xb8, 0x7f, 0x00]),
        ("model.q8.e5m2", DType::F8_E5M2, &[4], vec![0x3c, 0xbc, 0x7c, 0x80]),
        ("model.q8.scale", DType::F8_E8M0, &[2], vec![0x7f, 0x80]),
        // FNUZ: 0x80 is NaN, not -0.
        ("model.q8.e4m3fnuz", DType::F8_E4M3FNUZ, &[4], vec![0x40, 0xc0, 0x80, 0x00]),
        ("model.q8.e5m2fnuz", DType::F8_E5M2FNUZ, &[3], vec![0x40, 0xc0, 0x80]),
        ("model.u8", DType::U8, &[3], vec![0, 128, 255]),
        ("model.i8", DType::I8, &[3], vec![0x80, 0x00, 0x7f]),
        ("model.fp4", DType::F4, &[2, 4], vec![0x12, 0x34, 0x56, 0x78]),
        ("model.c64", DType::C64, &[1], f32s([1.0, -1.0])),
        ("model.fp6.e3m2", DType::F6_E3M2, &[4], vec![0x01, 0x02, 0x03]),
        ("model.fp6", DType::F6_E2M3, &[4], vec![0xab, 0xcd, 0xef]),
    ];
    build(&tensors, &[("format", "pt"), ("step", "100")])
}

/// The two shards of `testdata/sharded/`.
pub(super) fn shards() -> [Vec<u8>; 2] {
    let one: Vec<Spec<'_>> = vec![
        ("model.embed_tokens.weight", DType::BF16, &[8, 4], bf16s(wave(32, 1))),
        ("model.layers.0.weight", DType::BF16, &[4, 4], bf16s(wave(16, 3))),
    ];
    let two: Vec<Spec<'_>> = vec![
        ("model.layers.1.weight", DType::BF16, &[4, 4], bf16s(wave(16, 5))),
        ("model.norm.weight", DType::F32, &[4], f32s([1.0, 1.0, 0.5, 2.0])),
        ("lm_head.weight", DType::BF16, &[8, 4], bf16s(wave(32, 7))),
    ];
    [build(&one, &[("format", "pt")]), build(&two, &[("format", "pt")])]
}

const SHARD_1: &str = "model-00001-of-00002.safetensors";
const SHARD_2: &str = "model-00002-of-00002.safetensors";
const INDEX: &str = "model.safetensors.index.json";

/// A Hugging Face style index for the given `(tensor, shard)` pairs.
fn index_json(total_size: u64, weight_map: &[(&str, &str)]) -> Vec<u8> {
    let entries: Vec<String> =
        weight_map.iter().map(|(t, s)| format!("    {}: {}", json_str(t), json_str(s))).collect();
    format!(
        "{{\n  \"metadata\": {{\n    \"total_size\": {total_size}\n  }},\n  \"weight_map\": {{\n{}\n  }}\n}}\n",
        entries.join(",\n")
    )
    .into_bytes()
}

fn sharded_index() -> Vec<u8> {
    index_json(
        // Tensor bytes only, as Hugging Face counts it.
        64 + 32 + 32 + 16 + 64,
        &[
            ("lm_head.weight", SHARD_2),
            ("model.embed_tokens.weight", SHARD_1),
            ("model.layers.0.weight", SHARD_1),
            ("model.layers.1.weight", SHARD_2),
            ("model.norm.weight", SHARD_2),
        ],
    )
}

const CONFIG: &str = "{\n  \"architectures\": [\"TinyForCausalLM\"],\n  \"hidden_size\": 4,\n  \"num_hidden_layers\": 2,\n  \"vocab_size\": 8,\n  \"torch_dtype\": \"bfloat16\"\n}\n";
const TOKENIZER: &str = "{\n  \"version\": \"1.0\",\n  \"model\": {\"type\": \"WordLevel\", \"vocab\": {\"<unk>\": 0, \"a\": 1, \"b\": 2}, \"unk_token\": \"<unk>\"}\n}\n";

/// A valid header with tensor `a` (F32 [1] at [0, 4]) and `b` whose entry
/// is `b`, over `data_len` bytes of data.
fn two_tensors(b: &str, data_len: usize) -> Vec<u8> {
    let json = format!("{{\"a\":{{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}},\"b\":{b}}}");
    raw_file(&json, &vec![0x3f; data_len])
}

/// One malformed case: its name under `testdata/malformed/`, the tensor
/// the error must name (if any), a phrase the error must contain, and the
/// files (`(rel_path, bytes)`; one file named like the case, or the files
/// of a directory case).
pub(super) struct Bad {
    /// File or directory name under `testdata/malformed/`.
    pub name: &'static str,
    /// The tensor the error names.
    pub tensor: Option<&'static str>,
    /// A phrase of the error message.
    pub phrase: &'static str,
    /// `(path relative to the case, bytes)`; a single entry with an empty
    /// path for a single-file case.
    pub files: Vec<(&'static str, Vec<u8>)>,
}

fn bad_file(name: &'static str, tensor: Option<&'static str>, phrase: &'static str, bytes: Vec<u8>) -> Bad {
    Bad { name, tensor, phrase, files: vec![("", bytes)] }
}

/// Every malformed case.
pub(super) fn malformed() -> Vec<Bad> {
    let tiny = tiny();
    let [one, two] = shards();
    let mut out = vec![
        bad_file("empty.safetensors", None, "file is too short: 0 bytes", Vec::new()),
        bad_file("truncated-length.safetensors", None, "file is too short: 5 bytes", tiny[..5].to_vec()),
        bad_file(
            "truncated.safetensors",
            Some("model.fp6"),
            "past the end of the data region",
            tiny[..tiny.len() - 3].to_vec(),
        ),
        bad_file("header-len-past-end.safetensors", None, "runs past the end of the file", {
            let mut b = tiny[..64].to_vec();
            b[..8].copy_from_slice(&4096u64.to_le_bytes());
            b
        }),
        bad_file("header-10gb.safetensors", None, "exceeds the limit", {
            let mut b = 10_000_000_000u64.to_le_bytes().to_vec();
            b.extend_from_slice(b"{}      ");
            b
        }),
        bad_file(
            "invalid-json.safetensors",
            None,
            "invalid json header",
            raw_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},}", &[0; 4]),
        ),
        bad_file("header-not-object.safetensors", None, "expected a json object", raw_file("[]", &[])),
        bad_file(
            "non-utf8.safetensors",
            None,
            "not valid utf-8 (invalid byte at header offset 3)",
            raw_bytes(b"{\"a\xff\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", &[7]),
        ),
        bad_file(
            "overlapping-offsets.safetensors",
            Some("b"),
            "overlap tensor `a`",
            two_tensors("{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[2,10]}", 10),
        ),
        bad_file(
            "gap-between-tensors.safetensors",
            Some("b"),
            "gap of 4 bytes",
            two_tensors("{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}", 12),
        ),
        bad_file(
            "offsets-out-of-range.safetensors",
            Some("b"),
            "past the end of the data region",
            two_tensors("{\"dtype\":\"F32\",\"shape\":[250],\"data_offsets\":[4,1004]}", 8),
        ),
        bad_file(
            "offsets-reversed.safetensors",
            Some("b"),
            "is greater than end",
            two_tensors("{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,4]}", 8),
        ),
        bad_file(
            "unknown-dtype.safetensors",
            Some("b"),
            "unknown dtype `F12`",
            two_tensors("{\"dtype\":\"F12\",\"shape\":[1],\"data_offsets\":[4,8]}", 8),
        ),
        bad_file(
            "wrong-size-for-shape.safetensors",
            Some("b"),
            "size mismatch",
            two_tensors("{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[4,12]}", 12),
        ),
        bad_file(
            "shape-overflow.safetensors",
            Some("b"),
            "overflows",
            two_tensors("{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,0],\"data_offsets\":[4,4]}", 4),
        ),
        bad_file(
            "sub-byte-partial.safetensors",
            Some("b"),
            "do not fill whole bytes",
            two_tensors("{\"dtype\":\"F4\",\"shape\":[3],\"data_offsets\":[4,6]}", 6),
        ),
        bad_file(
            "negative-dimension.safetensors",
            Some("b"),
            "invalid header entry",
            two_tensors("{\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[4,5]}", 5),
        ),
        bad_file("trailing-bytes.safetensors", None, "3 trailing bytes", {
            let mut b = tiny.clone();
            b.extend_from_slice(&[1, 2, 3]);
            b
        }),
        bad_file(
            "duplicate-tensor.safetensors",
            Some("a"),
            "duplicate tensor name",
            two_tensors(
                "{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}",
                8,
            ),
        ),
        bad_file(
            "metadata-not-string.safetensors",
            None,
            "`__metadata__` maps strings to strings",
            raw_file("{\"__metadata__\":{\"step\":100}}", &[]),
        ),
        bad_file(
            "metadata-duplicate-key.safetensors",
            None,
            "duplicate key `k`",
            raw_file("{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", &[]),
        ),
    ];
    let all = [
        ("lm_head.weight", SHARD_2),
        ("model.embed_tokens.weight", SHARD_1),
        ("model.layers.0.weight", SHARD_1),
        ("model.layers.1.weight", SHARD_2),
        ("model.norm.weight", SHARD_2),
    ];
    out.push(Bad {
        name: "missing-shard",
        tensor: None,
        phrase: "names shard `model-00002-of-00002.safetensors` (for tensor `lm_head.weight`), which is missing",
        files: vec![(INDEX, index_json(208, &all)), (SHARD_1, one.clone())],
    });
    out.push(Bad {
        name: "index-path-outside-dir",
        tensor: None,
        phrase: "leaves the checkpoint directory",
        files: vec![
            (INDEX, index_json(64, &[("model.embed_tokens.weight", "../sharded/model-00001-of-00002.safetensors")])),
            (SHARD_1, one.clone()),
        ],
    });
    out.push(Bad {
        name: "index-tensor-not-in-shard",
        tensor: Some("model.norm.weight"),
        phrase: "which has no such tensor",
        files: vec![
            (
                INDEX,
                index_json(
                    208,
                    &[
                        ("lm_head.weight", SHARD_2),
                        ("model.embed_tokens.weight", SHARD_1),
                        ("model.layers.0.weight", SHARD_1),
                        ("model.layers.1.weight", SHARD_2),
                        ("model.norm.weight", SHARD_1),
                    ],
                ),
            ),
            (SHARD_1, one),
            (SHARD_2, two),
        ],
    });
    out
}

/// Every file under `testdata/` that the generator owns, as
/// `(path relative to testdata/, bytes)`.
fn all_files() -> Vec<(String, Vec<u8>)> {
    let [one, two] = shards();
    let mut files = vec![
        ("tiny.safetensors".to_owned(), tiny()),
        (format!("sharded/{INDEX}"), sharded_index()),
        (format!("sharded/{SHARD_1}"), one),
        (format!("sharded/{SHARD_2}"), two),
        ("sharded/config.json".to_owned(), CONFIG.as_bytes().to_vec()),
        ("sharded/tokenizer.json".to_owned(), TOKENIZER.as_bytes().to_vec()),
    ];
    for bad in malformed() {
        for (rel, bytes) in bad.files {
            let path = if rel.is_empty() {
                format!("malformed/{}", bad.name)
            } else {
                format!("malformed/{}/{rel}", bad.name)
            };
            files.push((path, bytes));
        }
    }
    files
}

/// Rewrites the generated files under `testdata/`.
#[test]
#[ignore = "writes to the source tree; run by hand after changing the builders"]
fn regenerate() {
    let root = testdata_dir();
    for (rel, bytes) in all_files() {
        let path = root.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("create testdata dir");
        }
        fs::write(&path, bytes).expect("write testdata file");
    }
}

#[test]
fn testdata_is_up_to_date() {
    let root = testdata_dir();
    let mut total = 0;
    for (rel, bytes) in all_files() {
        let on_disk = fs::read(root.join(&rel)).unwrap_or_else(|e| {
            panic!("testdata/{rel}: {e}; run `cargo test -p tdelta checkpoint::testdata::regenerate -- --ignored`")
        });
        assert!(on_disk == bytes, "testdata/{rel} is stale; regenerate it");
        total += bytes.len();
    }
    assert!(total < 64 * 1024, "testdata grew to {total} bytes");
}

#[test]
fn valid_testdata_opens() {
    let root = testdata_dir();
    let tiny_path = root.join("tiny.safetensors");
    let c = open(&tiny_path).expect("tiny.safetensors opens");
    assert_eq!(c.layout, Layout::File);
    let FileKind::Safetensors(h) = &c.files[0].kind else {
        panic!("tiny.safetensors is not parsed as safetensors");
    };
    let dtypes: std::collections::BTreeSet<DType> = h.tensors.iter().map(|t| t.dtype).collect();
    assert_eq!(dtypes.len(), DType::ALL.len(), "{dtypes:?}");
    assert!(h.tensors.iter().any(|t| t.shape.is_empty()));
    assert!(h.tensors.iter().any(|t| t.len == 0));
    let meta = h.metadata.as_ref().expect("metadata");
    assert_eq!(meta.get("format").map(String::as_str), Some("pt"));
    // The official reader agrees.
    let bytes = fs::read(&tiny_path).expect("read");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("official reader");
    assert_eq!(st.len(), h.tensors.len());

    let c = open(&root.join("sharded")).expect("sharded/ opens");
    assert_eq!(c.layout, Layout::Directory);
    let names: Vec<&str> = c.files.iter().map(|f| f.rel_path.as_str()).collect();
    assert_eq!(names, ["config.json", SHARD_1, SHARD_2, INDEX, "tokenizer.json"]);
    let kinds: Vec<bool> = c.files.iter().map(|f| matches!(f.kind, FileKind::Safetensors(_))).collect();
    assert_eq!(kinds, [false, true, true, false, false]);
}

#[test]
fn every_malformed_testdata_entry_is_refused() {
    let dir = testdata_dir().join("malformed");
    let cases = malformed();
    let mut seen = 0;
    for entry in fs::read_dir(&dir).expect("testdata/malformed") {
        let entry = entry.expect("dir entry");
        let name = entry.file_name().into_string().expect("utf-8 name");
        let path = entry.path();
        let result = open(&path);
        let Err(Error::InvalidCheckpoint { file, tensor, reason }) = result else {
            panic!("testdata/malformed/{name}: expected InvalidCheckpoint, got {result:?}");
        };
        let Some(case) = cases.iter().find(|c| c.name == name) else {
            // A file someone added by hand: being refused is enough.
            continue;
        };
        seen += 1;
        let message =
            Error::InvalidCheckpoint { file: file.clone(), tensor: tensor.clone(), reason: reason.clone() }.to_string();
        assert!(file.starts_with(&path), "{name}: error names {file:?}: {message}");
        assert_eq!(tensor.as_deref(), case.tensor, "{name}: {message}");
        assert!(message.contains(case.phrase), "{name}: `{}` not in: {message}", case.phrase);
        if let Some(t) = case.tensor {
            assert!(message.contains(&format!("tensor `{t}`")), "{name}: {message}");
        }
    }
    assert_eq!(seen, cases.len(), "some malformed cases are missing on disk");
}
