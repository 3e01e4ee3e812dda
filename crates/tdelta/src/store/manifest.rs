//! Version manifests: immutable, content-addressed descriptions of one
//! checkpoint version. Layout in `FORMAT.md`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::fsutil;
use crate::hash::Hash;
use crate::{DType, Error, Result};

pub(crate) const MANIFEST_MAGIC: &[u8; 8] = b"TDMANIF\0";
/// Manifest format version written by this build.
pub const MANIFEST_VERSION: u32 = 1;
const FLAG_ZSTD: u32 = 1;
/// Largest decompressed manifest accepted (a cap against lying files).
const MAX_MANIFEST: usize = 512 << 20;

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
    pub lossy: Option<serde_json::Value>,
    /// The files, sorted by path.
    pub files: Vec<FileEntry>,
    /// Storage figures measured at pack time.
    pub stats: VersionStats,
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
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileEntry {
    /// Path relative to the checkpoint root, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Hash of the file: of its block hashes in file order (`FORMAT.md`).
    pub hash: Hash,
    /// Safetensors structure or plain blob.
    #[serde(flatten)]
    pub content: FileContent,
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

impl Manifest {
    /// Serializes; returns the version id and the framed file bytes.
    pub(crate) fn encode(&self) -> Result<(Hash, Vec<u8>)> {
        let json =
            serde_json::to_vec(self).map_err(|e| Error::InvalidArgument(format!("cannot serialize manifest: {e}")))?;
        let id = Hash::of(&json);
        let mut body = Vec::with_capacity(8 + json.len() / 2);
        body.extend_from_slice(&(json.len() as u64).to_le_bytes());
        let z = zstd::bulk::compress(&json, 3)
            .map_err(|e| Error::InvalidArgument(format!("cannot compress manifest: {e}")))?;
        body.extend_from_slice(&z);
        Ok((id, fsutil::frame(MANIFEST_MAGIC, MANIFEST_VERSION, FLAG_ZSTD, &body)))
    }

    /// Parses and checks a manifest file whose name says it is version `id`.
    pub(crate) fn decode(path: &Path, bytes: &[u8], id: Hash) -> Result<Manifest> {
        let framed = fsutil::unframe(path, bytes, MANIFEST_MAGIC, MANIFEST_VERSION, "manifest")?;
        let body = framed.body;
        if framed.flags & !FLAG_ZSTD != 0 {
            return Err(Error::corrupt(path, format!("manifest has unknown flags {:#x}", framed.flags)));
        }
        let json = if framed.flags & FLAG_ZSTD != 0 {
            let Some(len) = body.get(..8) else {
                return Err(Error::corrupt(path, "manifest body too short"));
            };
            let mut l = [0u8; 8];
            l.copy_from_slice(len);
            let raw_len = u64::from_le_bytes(l);
            if raw_len > MAX_MANIFEST as u64 {
                return Err(Error::corrupt(
                    path,
                    format!("manifest claims {raw_len} bytes, over the {MAX_MANIFEST} cap"),
                ));
            }
            let out = zstd::bulk::decompress(&body[8..], raw_len as usize)
                .map_err(|e| Error::corrupt(path, format!("manifest does not decompress: {e}")))?;
            if out.len() as u64 != raw_len {
                return Err(Error::corrupt(path, "manifest decompresses to the wrong length"));
            }
            out
        } else {
            body.to_vec()
        };
        let actual = Hash::of(&json);
        if actual != id {
            return Err(Error::corrupt(path, format!("manifest content hashes to {actual}, not to its name {id}")));
        }
        Manifest::from_json(path, &json)
    }

    /// Parses and validates the JSON body of a manifest.
    pub(crate) fn from_json(path: &Path, json: &[u8]) -> Result<Manifest> {
        let m: Manifest =
            serde_json::from_slice(json).map_err(|e| Error::corrupt(path, format!("manifest is not valid: {e}")))?;
        m.validate(path)?;
        Ok(m)
    }

    /// Checks the internal consistency that restore relies on: block counts
    /// match lengths, tensors tile their file, sizes add up.
    fn validate(&self, path: &Path) -> Result<()> {
        let bad = |what: String| Err(Error::corrupt(path, what));
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
                        if Hash::of_hashes(&t.blocks) != t.hash {
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
            if Hash::of_hashes(&f.block_hashes()) != f.hash {
                return bad(format!("{}: file hash does not match its blocks", f.path));
            }
        }
        Ok(())
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
