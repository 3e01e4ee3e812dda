//! Version manifests: immutable, content-addressed descriptions of one
//! checkpoint version. Layout in `FORMAT.md`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Check, FileKind, FormatError, Result};
use crate::frame;
use crate::lossy_record::LossyRecord;
use crate::{DType, Hash};

/// First 8 bytes of a manifest file.
pub const MANIFEST_MAGIC: &[u8; 8] = b"TDMANIF\0";
/// Manifest format version written by this build.
pub const MANIFEST_VERSION: u32 = 1;
/// Frame flag: the body is zstd-compressed JSON after its raw length.
pub const FLAG_ZSTD: u32 = 1;
/// Largest decompressed manifest accepted (a cap against lying files).
pub const MAX_MANIFEST: usize = 512 << 20;

/// One version of a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    /// Version id of the previous version on the same line (the `HEAD` at
    /// pack time), if any.
    pub parent: Option<Hash>,
    /// The version whose blocks served as delta bases, if any.
    pub base: Option<Hash>,
    /// Creation time, seconds since the Unix epoch.
    pub created: u64,
    /// Who packed it.
    pub author: String,
    /// Free text.
    pub message: String,
    /// Free key/value metadata.
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    /// Metrics (e.g. eval scores), any JSON values.
    #[serde(default)]
    pub metrics: BTreeMap<String, serde_json::Value>,
    /// Whether the source was one file or a directory.
    pub layout: LayoutKind,
    /// Raw block size in bytes.
    pub block_size: u32,
    /// The delta policy used, as text (e.g. `chain:8`).
    pub policy: String,
    /// Most decodes one block read of this version needs (its deepest
    /// delta chain plus the full block), reused blocks included; readers
    /// refuse a deeper chain as damage. Absent in older manifests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_levels: Option<u16>,
    /// Present when some tensors were stored lossily.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lossy: Option<LossyRecord>,
    /// The files, sorted by path.
    pub files: Vec<FileEntry>,
    /// Directories of a directory version that hold nothing, sorted
    /// (absent from older manifests: none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub empty_dirs: Vec<String>,
    /// Storage figures measured at pack time.
    pub stats: VersionStats,
}

/// The fields of a [`Manifest`] that listings need, without the file and
/// tensor lists: read by [`Manifest::decode_summary`] in memory bounded by
/// the manifest's size on disk.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ManifestSummary {
    /// See [`Manifest::parent`].
    pub parent: Option<Hash>,
    /// See [`Manifest::base`].
    pub base: Option<Hash>,
    /// See [`Manifest::created`].
    pub created: u64,
    /// See [`Manifest::author`].
    pub author: String,
    /// See [`Manifest::message`].
    pub message: String,
    /// See [`Manifest::meta`].
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    /// See [`Manifest::metrics`].
    #[serde(default)]
    pub metrics: BTreeMap<String, serde_json::Value>,
    /// See [`Manifest::block_size`].
    pub block_size: u32,
    /// See [`Manifest::policy`].
    pub policy: String,
    /// Whether some tensors were stored lossily (the per-tensor record is
    /// skipped).
    #[serde(default, rename = "lossy", deserialize_with = "present")]
    pub is_lossy: bool,
    /// See [`Manifest::stats`].
    pub stats: VersionStats,
}

/// True for any value: skips it without building it.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<bool, D::Error> {
    let v: Option<serde::de::IgnoredAny> = Deserialize::deserialize(d)?;
    Ok(v.is_some())
}

/// Feeds every byte read through it to the content hash.
struct HashingReader<R> {
    inner: R,
    hasher: crate::Hasher,
    len: u64,
}

impl<R: std::io::Read> std::io::Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

/// File or directory checkpoint.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LayoutKind {
    /// A single file.
    File,
    /// A directory.
    Directory,
}

/// One file of a version.
///
/// Read through `RawFileEntry`: serde's `flatten` with an internally
/// tagged enum would first buffer each file's whole content as a generic
/// tree (about 1.4 KB per tensor, 2.3 GB for 1.6 M tensors), where a plain
/// struct streams.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(try_from = "RawFileEntry")]
pub struct FileEntry {
    /// Path relative to the checkpoint root, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Hash of the file: of its block hashes in file order (`FORMAT.md`).
    pub hash: Hash,
    /// Unix permission bits (`0o777` at most) at pack time; absent from
    /// older manifests, and then restore leaves the default mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    /// Safetensors structure or plain blob.
    #[serde(flatten)]
    pub content: FileContent,
}

/// The JSON of a [`FileEntry`], every field of either kind optional.
#[derive(Deserialize)]
struct RawFileEntry {
    path: String,
    size: u64,
    hash: Hash,
    #[serde(default)]
    mode: Option<u32>,
    kind: String,
    header_len: Option<u64>,
    header_blocks: Option<Vec<Hash>>,
    tensors: Option<Vec<TensorEntry>>,
    blocks: Option<Vec<Hash>>,
}

impl TryFrom<RawFileEntry> for FileEntry {
    type Error = String;

    fn try_from(r: RawFileEntry) -> std::result::Result<FileEntry, String> {
        let missing = |what: &str| format!("file `{}` ({}) has no `{what}`", r.path, r.kind);
        let content = match r.kind.as_str() {
            "safetensors" => FileContent::Safetensors {
                header_len: r.header_len.ok_or_else(|| missing("header_len"))?,
                header_blocks: r.header_blocks.ok_or_else(|| missing("header_blocks"))?,
                tensors: r.tensors.ok_or_else(|| missing("tensors"))?,
            },
            "blob" => FileContent::Blob { blocks: r.blocks.ok_or_else(|| missing("blocks"))? },
            other => {
                return Err(format!(
                    "file `{}` has unknown kind `{other}`; valid kinds are: safetensors, blob",
                    r.path
                ));
            }
        };
        Ok(FileEntry { path: r.path, size: r.size, hash: r.hash, mode: r.mode, content })
    }
}

/// How a file is cut into blocks.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum FileContent {
    /// A safetensors file: the verbatim header as blocks, then the tensors.
    Safetensors {
        /// Byte length of the header region (8 + JSON length).
        header_len: u64,
        /// Blocks of the header region.
        header_blocks: Vec<Hash>,
        /// Tensors sorted by offset.
        tensors: Vec<TensorEntry>,
    },
    /// Opaque bytes.
    Blob {
        /// Blocks of the file.
        blocks: Vec<Hash>,
    },
}

/// One tensor of a version.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TensorEntry {
    /// Name.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Shape.
    pub shape: Vec<u64>,
    /// Absolute byte offset in the file.
    pub offset: u64,
    /// Byte length.
    pub len: u64,
    /// Hash of the tensor's block hashes.
    pub hash: Hash,
    /// Blocks, in order.
    pub blocks: Vec<Hash>,
}

/// Storage figures of one version.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct VersionStats {
    /// Bytes of the checkpoint.
    pub raw_bytes: u64,
    /// Payload bytes this version added to the store.
    pub stored_bytes: u64,
    /// Blocks this version added.
    pub new_blocks: u64,
    /// Blocks already in the store (dedup hits, in the store or within this
    /// version).
    pub reused_blocks: u64,
    /// Blocks stored as a delta against a base block.
    pub delta_blocks: u64,
    /// Deepest delta chain among the blocks added.
    pub max_depth: u16,
}

impl FileEntry {
    /// Every block of the file in file order, with its byte offset, length
    /// and dtype (U8 for header and blob bytes).
    pub fn blocks(&self, block_size: u32) -> Vec<BlockRef> {
        let mut out = Vec::new();
        let mut push_run = |blocks: &[Hash], start: u64, len: u64, dtype: DType, tensor: Option<usize>| {
            for (i, ((off, l), h)) in crate::block::ranges(len, block_size, dtype.align()).zip(blocks).enumerate() {
                out.push(BlockRef { hash: *h, offset: start + off, len: l, dtype, tensor, index: i });
            }
        };
        match &self.content {
            FileContent::Safetensors { header_len, header_blocks, tensors } => {
                push_run(header_blocks, 0, *header_len, DType::U8, None);
                for (t, te) in tensors.iter().enumerate() {
                    push_run(&te.blocks, te.offset, te.len, te.dtype, Some(t));
                }
            }
            FileContent::Blob { blocks } => push_run(blocks, 0, self.size, DType::U8, None),
        }
        out
    }

    /// The hashes of every block in file order.
    pub fn block_hashes(&self) -> Vec<Hash> {
        match &self.content {
            FileContent::Safetensors { header_blocks, tensors, .. } => {
                header_blocks.iter().chain(tensors.iter().flat_map(|t| t.blocks.iter())).copied().collect()
            }
            FileContent::Blob { blocks } => blocks.clone(),
        }
    }

    /// The tensors of the file (empty for blobs).
    pub fn tensors(&self) -> &[TensorEntry] {
        match &self.content {
            FileContent::Safetensors { tensors, .. } => tensors,
            FileContent::Blob { .. } => &[],
        }
    }
}

/// One block of a file, located.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRef {
    /// Block hash.
    pub hash: Hash,
    /// Byte offset in the file.
    pub offset: u64,
    /// Byte length.
    pub len: u64,
    /// Element type (U8 for header and blob bytes).
    pub dtype: DType,
    /// Index of the tensor in the file's tensor list, if any.
    pub tensor: Option<usize>,
    /// Index of the block within its tensor or run.
    pub index: usize,
}

fn invalid(reason: impl Into<String>) -> FormatError {
    FormatError::invalid(FileKind::Manifest, reason)
}

/// Unframes a manifest file and parses its JSON as `T` while hashing
/// every byte (the hash must be the file's name, `id`): memory stays that
/// of the compressed file plus what `T` keeps.
fn stream<T: serde::de::DeserializeOwned>(bytes: &[u8], id: Hash) -> Result<T> {
    use std::io::Read;
    let framed = frame::unframe(FileKind::Manifest, bytes, MANIFEST_MAGIC, MANIFEST_VERSION)?;
    let body = framed.body;
    if framed.flags & !FLAG_ZSTD != 0 {
        return Err(invalid(format!("manifest has unknown flags {:#x}", framed.flags)));
    }
    let (raw_len, reader): (u64, Box<dyn Read + '_>) = if framed.flags & FLAG_ZSTD != 0 {
        let Some((len, z)) = body.split_first_chunk::<8>() else {
            return Err(FormatError::corrupt(FileKind::Manifest, Check::Truncated, "manifest body too short"));
        };
        let raw_len = u64::from_le_bytes(*len);
        if raw_len > MAX_MANIFEST as u64 {
            return Err(invalid(format!("manifest claims {raw_len} bytes, over the {MAX_MANIFEST} cap")));
        }
        let dec = zstd::stream::read::Decoder::with_buffer(z)
            .map_err(|e| invalid(format!("manifest does not decompress: {e}")))?;
        (raw_len, Box::new(dec.take(raw_len + 1)))
    } else {
        (body.len() as u64, Box::new(body))
    };
    // The id's width names the algorithm that made it.
    let mut r = HashingReader { inner: reader, hasher: id.algo().hasher(crate::Domain::Version), len: 0 };
    let parsed: std::result::Result<T, _> =
        serde_json::from_reader(std::io::BufReader::with_capacity(64 << 10, &mut r));
    // Hash what the parser left too (it stops at the first error).
    std::io::copy(&mut r, &mut std::io::sink()).map_err(|e| invalid(format!("manifest does not decompress: {e}")))?;
    if r.len != raw_len {
        return Err(FormatError::corrupt(
            FileKind::Manifest,
            Check::Truncated,
            "manifest decompresses to the wrong length",
        ));
    }
    let actual = r.hasher.finish();
    if actual != id {
        return Err(FormatError::corrupt(
            FileKind::Manifest,
            Check::HashMismatch,
            format!("manifest content hashes to {actual}, not to its name {id}"),
        ));
    }
    parsed.map_err(|e| invalid(format!("manifest is not valid: {e}")))
}

impl Manifest {
    /// Serializes; returns the version id (named with `algo`) and the
    /// framed file bytes.
    pub fn encode(&self, algo: crate::Algo) -> Result<(Hash, Vec<u8>)> {
        let fail = |reason: String| FormatError::Encode { file: FileKind::Manifest, reason };
        let json = serde_json::to_vec(self).map_err(|e| fail(e.to_string()))?;
        let id = algo.hash(crate::Domain::Version, &json);
        let mut body = Vec::with_capacity(8 + json.len() / 2);
        body.extend_from_slice(&(json.len() as u64).to_le_bytes());
        let z = zstd::bulk::compress(&json, 3).map_err(|e| fail(format!("cannot compress: {e}")))?;
        body.extend_from_slice(&z);
        Ok((id, frame::frame(MANIFEST_MAGIC, MANIFEST_VERSION, FLAG_ZSTD, &body)))
    }

    /// Parses and checks a manifest file whose name says it is version `id`.
    /// The JSON is streamed from the decompressor, never held whole.
    pub fn decode(bytes: &[u8], id: Hash) -> Result<Manifest> {
        let m: Manifest = stream(bytes, id)?;
        m.validate()?;
        Ok(m)
    }

    /// Reads the summary of a manifest file (everything but the files):
    /// the file and tensor lists are parsed and skipped, never built, and
    /// the content hash is still checked over every byte.
    pub fn decode_summary(bytes: &[u8], id: Hash) -> Result<ManifestSummary> {
        let m: ManifestSummary = stream(bytes, id)?;
        if !(crate::block::MIN_BLOCK_SIZE..=crate::block::MAX_BLOCK_SIZE).contains(&m.block_size) {
            return Err(invalid(format!("block size {} out of range", m.block_size)));
        }
        Ok(m)
    }

    /// Parses and validates the JSON body of a manifest.
    pub fn from_json(json: &[u8]) -> Result<Manifest> {
        let m: Manifest = serde_json::from_slice(json).map_err(|e| invalid(format!("manifest is not valid: {e}")))?;
        m.validate()?;
        Ok(m)
    }

    /// Checks the internal consistency that restore relies on: block counts
    /// match lengths, tensors tile their file, sizes add up.
    fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(invalid(what));
        if !(crate::block::MIN_BLOCK_SIZE..=crate::block::MAX_BLOCK_SIZE).contains(&self.block_size) {
            return bad(format!("block size {} out of range", self.block_size));
        }
        let bs = self.block_size;
        if self.files.windows(2).any(|w| w[0].path >= w[1].path) {
            return bad("file paths are not sorted and unique".into());
        }
        if self.layout == LayoutKind::File && self.files.len() != 1 {
            return bad(format!("a file version lists {} files", self.files.len()));
        }
        for f in &self.files {
            match &f.content {
                FileContent::Safetensors { header_len, header_blocks, tensors } => {
                    if crate::block::count(*header_len, bs, 1) != header_blocks.len() as u64 {
                        return bad(format!("{}: header block count does not match its length", f.path));
                    }
                    let mut at = *header_len;
                    for t in tensors {
                        let expect = t
                            .dtype
                            .byte_len(t.shape.iter().try_fold(1u64, |a, d| a.checked_mul(*d)).unwrap_or(u64::MAX));
                        if t.offset != at || expect != Some(t.len) {
                            return bad(format!(
                                "{}: tensor `{}` has an inconsistent offset or length",
                                f.path, t.name
                            ));
                        }
                        if t.hash.algo().list(&t.blocks) != t.hash {
                            return bad(format!("{}: tensor `{}` hash does not match its blocks", f.path, t.name));
                        }
                        if crate::block::count(t.len, bs, t.dtype.align()) != t.blocks.len() as u64 {
                            return bad(format!(
                                "{}: tensor `{}` block count does not match its length",
                                f.path, t.name
                            ));
                        }
                        at = match at.checked_add(t.len) {
                            Some(v) => v,
                            None => return bad(format!("{}: tensor offsets overflow", f.path)),
                        };
                    }
                    if at != f.size {
                        return bad(format!("{}: tensors end at {at} but the file is {} bytes", f.path, f.size));
                    }
                }
                FileContent::Blob { blocks } => {
                    if crate::block::count(f.size, bs, 1) != blocks.len() as u64 {
                        return bad(format!("{}: block count does not match the file size", f.path));
                    }
                }
            }
            if f.hash.algo().list(&f.block_hashes()) != f.hash {
                return bad(format!("{}: file hash does not match its blocks", f.path));
            }
        }
        Ok(())
    }

    /// Checks the paths a directory version names against the one path
    /// rule (`FORMAT.md`, "Paths"): restore would refuse them. A file
    /// version's single name is never used as a path.
    pub fn check_paths(&self) -> std::result::Result<(), String> {
        if self.layout == LayoutKind::File {
            return Ok(());
        }
        crate::relpath::check_tree(
            self.files.iter().map(|f| f.path.as_str()),
            self.empty_dirs.iter().map(String::as_str),
        )
    }

    /// The file at `path`, if any.
    pub fn file(&self, path: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.path == path)
    }

    /// Total raw size of all files.
    pub fn size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        let tensors: Vec<TensorEntry> = (0..50)
            .map(|i| TensorEntry {
                name: format!("t{i}"),
                dtype: DType::F32,
                shape: vec![0],
                offset: 24,
                len: 0,
                hash: Hash::of_hashes(&[]),
                blocks: Vec::new(),
            })
            .collect();
        let header_blocks = vec![Hash::of(b"h")];
        let hash = Hash::of_hashes(&header_blocks);
        Manifest {
            parent: Some(Hash::of(b"p")),
            base: None,
            created: 7,
            author: "a".into(),
            message: "m".into(),
            meta: BTreeMap::from([("k".to_string(), "v".to_string())]),
            metrics: BTreeMap::from([("eval".to_string(), serde_json::json!({"x": 1}))]),
            layout: LayoutKind::File,
            block_size: 1 << 16,
            policy: "chain:8".into(),
            lossy: None,
            max_levels: Some(3),
            empty_dirs: vec!["logs".into()],
            files: vec![FileEntry {
                path: "model.safetensors".into(),
                size: 24,
                hash,
                mode: Some(0o755),
                content: FileContent::Safetensors { header_len: 24, header_blocks, tensors },
            }],
            stats: VersionStats { raw_bytes: 24, ..VersionStats::default() },
        }
    }

    #[test]
    fn summary_reads_the_fields_and_checks_the_hash() {
        let m = sample();
        let (id, bytes) = m.encode(crate::Algo::Xxh3).unwrap();
        assert_eq!(Manifest::decode(&bytes, id).unwrap(), m);
        let s = Manifest::decode_summary(&bytes, id).unwrap();
        assert_eq!(
            (s.parent, s.created, &s.author, &s.meta, &s.metrics),
            (m.parent, 7, &m.author, &m.meta, &m.metrics)
        );
        assert!(!s.is_lossy);
        assert_eq!(s.stats, m.stats);
        let e = Manifest::decode_summary(&bytes, Hash::of(b"other")).unwrap_err().to_string();
        assert!(e.contains("hashes to"), "{e}");
    }

    #[test]
    fn file_entries_read_without_buffering_keep_their_json() {
        let m = sample();
        let json = serde_json::to_vec(&m).unwrap();
        let back = Manifest::from_json(&json).unwrap();
        assert_eq!(serde_json::to_vec(&back).unwrap(), json, "the JSON (and so the id) must not change");
        let bad = String::from_utf8(json).unwrap().replace("\"kind\":\"safetensors\"", "\"kind\":\"tar\"");
        let e = Manifest::from_json(bad.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("unknown kind `tar`") && e.contains("safetensors, blob"), "{e}");
    }
}
