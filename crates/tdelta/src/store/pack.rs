//! Pack files (immutable sequences of encoded blocks) and their indexes.
//!
//! A pack is written once, front to back, into a temporary file, then
//! fsynced and renamed to `packs/<id>.pack`; its index follows as
//! `packs/<id>.idx`. Both layouts are specified in `FORMAT.md`.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::Xxh3;

use super::fsutil;
use crate::Hash;
use crate::error::CorruptKind;
use crate::error::IoContext;
use crate::{Error, Result};

pub(crate) const PACK_MAGIC: &[u8; 8] = b"TDPACK\0\0";
pub(crate) const PACK_FOOTER_MAGIC: &[u8; 8] = b"TDPKEND\0";
pub(crate) const INDEX_MAGIC: &[u8; 8] = b"TDINDEX\0";
/// Version 2 added the dtype codes 21 and 22 (F8_E4M3FNUZ, F8_E5M2FNUZ)
/// and codec codes above 16; version-1 packs are still read.
pub(crate) const PACK_VERSION: u32 = 2;
pub(crate) const RECORD_MAGIC: &[u8; 4] = b"TDBK";
pub(crate) const RECORD_HEADER: usize = 64;
pub(crate) const INDEX_ENTRY: usize = 64;
const FILE_HEADER: usize = 16;
/// Largest raw block any reader accepts (a cap against lying headers).
pub(crate) const MAX_BLOCK: u32 = 64 << 20;

/// Where and how one block is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    /// Hash of the raw block bytes.
    pub hash: Hash,
    /// Number of the pack in the store's pack table.
    pub pack: u32,
    /// Offset of the payload (after the record header) in the pack.
    pub offset: u64,
    /// Payload length.
    pub stored_len: u32,
    /// Raw (decoded) length.
    pub raw_len: u32,
    /// Codec code.
    pub codec: u8,
    /// DType code.
    pub dtype: u8,
    /// Delta depth: 0 for a block coded without base.
    pub depth: u16,
    /// The base block, for delta codecs.
    pub base: Option<Hash>,
    /// xxh3-64 of the payload.
    pub checksum: u64,
}

/// What the writer needs to know about a block besides its payload.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BlockMeta {
    pub hash: Hash,
    pub raw_len: u32,
    pub codec: u8,
    pub dtype: u8,
    pub depth: u16,
    pub base: Option<Hash>,
}

/// Appends blocks to a new pack in the store's `tmp/` directory.
pub(crate) struct PackWriter {
    tmp_path: PathBuf,
    out: BufWriter<File>,
    digest: Xxh3,
    pos: u64,
    /// Bytes handed to the kernel for write-back so far.
    kicked: u64,
    entries: Vec<Entry>,
}

impl std::fmt::Debug for PackWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackWriter")
            .field("tmp_path", &self.tmp_path)
            .field("pos", &self.pos)
            .field("blocks", &self.entries.len())
            .finish()
    }
}

impl PackWriter {
    pub fn create(tmp_dir: &Path) -> Result<PackWriter> {
        let (tmp_path, file) = fsutil::temp_file(tmp_dir, "pack")?;
        let mut w = PackWriter {
            tmp_path,
            out: BufWriter::with_capacity(1 << 20, file),
            digest: Xxh3::new(),
            pos: 0,
            kicked: 0,
            entries: Vec::new(),
        };
        let mut head = [0u8; FILE_HEADER];
        head[..8].copy_from_slice(PACK_MAGIC);
        head[8..12].copy_from_slice(&PACK_VERSION.to_le_bytes());
        w.put(&head)?;
        Ok(w)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.out.write_all(bytes).at(&self.tmp_path)?;
        self.digest.update(bytes);
        self.pos += bytes.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.pos
    }

    /// Appends one encoded block.
    pub fn add(&mut self, meta: BlockMeta, payload: &[u8]) -> Result<()> {
        let checksum = xxhash_rust::xxh3::xxh3_64(payload);
        let stored_len =
            u32::try_from(payload.len()).map_err(|_| Error::InvalidArgument("block payload over 4 GiB".into()))?;
        let mut head = [0u8; RECORD_HEADER];
        head[..4].copy_from_slice(RECORD_MAGIC);
        head[4] = meta.codec;
        head[5] = meta.dtype;
        head[6..8].copy_from_slice(&meta.depth.to_le_bytes());
        head[8..12].copy_from_slice(&meta.raw_len.to_le_bytes());
        head[12..16].copy_from_slice(&stored_len.to_le_bytes());
        head[16..32].copy_from_slice(&meta.hash.to_le_bytes());
        head[32..48].copy_from_slice(&meta.base.unwrap_or_default().to_le_bytes());
        head[48..56].copy_from_slice(&checksum.to_le_bytes());
        let hsum = xxhash_rust::xxh3::xxh3_64(&head[..56]);
        head[56..64].copy_from_slice(&hsum.to_le_bytes());
        self.put(&head)?;
        let offset = self.pos;
        self.put(payload)?;
        // Let the disk work while the next blocks are encoded: the final
        // fsync then has little left to wait for.
        let in_kernel = self.pos - self.out.buffer().len() as u64;
        if in_kernel - self.kicked >= 8 << 20 {
            fsutil::start_writeback(self.out.get_ref(), self.kicked, in_kernel - self.kicked);
            self.kicked = in_kernel;
        }
        self.entries.push(Entry {
            hash: meta.hash,
            pack: 0,
            offset,
            stored_len,
            raw_len: meta.raw_len,
            codec: meta.codec,
            dtype: meta.dtype,
            depth: meta.depth,
            base: meta.base,
            checksum,
        });
        Ok(())
    }

    /// Finishes the pack: footer, fsync, rename into `packs_dir`, then the
    /// index. Returns the pack id and its entries (pack number unset).
    /// On failure nothing is left behind: neither the temporary file nor a
    /// pack whose index could not be written (a full disk must leave the
    /// store as it was).
    pub fn finish(mut self, tmp_dir: &Path, packs_dir: &Path) -> Result<(Hash, Vec<Entry>)> {
        let tmp_path = self.tmp_path.clone();
        let mut foot = [0u8; 16];
        foot[..8].copy_from_slice(PACK_FOOTER_MAGIC);
        foot[8..].copy_from_slice(&(self.entries.len() as u64).to_le_bytes());
        if let Err(e) = self.put(&foot) {
            let _ = fs::remove_file(&tmp_path);
            return Err(e);
        }
        let id = Hash(self.digest.digest128());
        let pack_path = packs_dir.join(format!("{id}.pack"));
        let landed = match self.out.into_inner() {
            Ok(file) => fsutil::commit_file(file, &tmp_path, &pack_path),
            Err(e) => Err(Error::io(&tmp_path, e.into_error())),
        };
        if let Err(e) = landed {
            let _ = fs::remove_file(&tmp_path);
            return Err(e);
        }
        let mut entries = self.entries;
        entries.sort_by_key(|e| e.hash);
        let index = encode_index(&entries);
        if let Err(e) = fsutil::write_atomic(tmp_dir, &packs_dir.join(format!("{id}.idx")), &index) {
            let _ = fs::remove_file(&pack_path);
            let _ = fsutil::sync_dir(packs_dir);
            return Err(e);
        }
        Ok((id, entries))
    }

    /// Removes the temporary file of an abandoned pack.
    pub fn abandon(self) {
        let _ = fs::remove_file(&self.tmp_path);
    }
}

fn encode_index(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + entries.len() * INDEX_ENTRY + 8);
    out.extend_from_slice(INDEX_MAGIC);
    out.extend_from_slice(&PACK_VERSION.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for e in entries {
        out.extend_from_slice(&e.hash.to_le_bytes());
        out.extend_from_slice(&e.offset.to_le_bytes());
        out.extend_from_slice(&e.stored_len.to_le_bytes());
        out.extend_from_slice(&e.raw_len.to_le_bytes());
        out.push(e.codec);
        out.push(e.dtype);
        out.extend_from_slice(&e.depth.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&e.base.unwrap_or_default().to_le_bytes());
        out.extend_from_slice(&e.checksum.to_le_bytes());
    }
    let sum = xxhash_rust::xxh3::xxh3_64(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn le_hash(b: &[u8], at: usize) -> Hash {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[at..at + 16]);
    Hash::from_le_bytes(a)
}

/// Parses an index file. `pack_len` is the length of its pack, against
/// which every entry is bounds-checked.
pub(crate) fn decode_index(path: &Path, bytes: &[u8], pack: u32, pack_len: u64) -> Result<Vec<Entry>> {
    if bytes.len() < 32 {
        return Err(Error::corrupt_as(CorruptKind::Truncated, path, format!("truncated index: {} bytes", bytes.len())));
    }
    if &bytes[..8] != INDEX_MAGIC {
        return Err(Error::corrupt_as(CorruptKind::Magic, path, "not a tdelta index (bad magic)"));
    }
    let version = le_u32(bytes, 8);
    if version == 0 || version > PACK_VERSION {
        return Err(Error::UnsupportedFormat { file: path.to_path_buf(), found: version, supported: PACK_VERSION });
    }
    let count = le_u64(bytes, 16);
    let expected = count.checked_mul(INDEX_ENTRY as u64).and_then(|n| n.checked_add(32));
    if expected != Some(bytes.len() as u64) {
        return Err(Error::corrupt_as(
            CorruptKind::Truncated,
            path,
            format!("index claims {count} entries but is {} bytes long", bytes.len()),
        ));
    }
    let end = bytes.len() - 8;
    let stored = le_u64(bytes, end);
    let actual = xxhash_rust::xxh3::xxh3_64(&bytes[..end]);
    if stored != actual {
        return Err(Error::corrupt_as(
            CorruptKind::Checksum,
            path,
            format!("index checksum mismatch (stored {stored:016x}, computed {actual:016x})"),
        ));
    }
    let mut entries = Vec::with_capacity(count as usize);
    for (i, rec) in bytes[24..end].chunks_exact(INDEX_ENTRY).enumerate() {
        let base = le_hash(rec, 40);
        let e = Entry {
            hash: le_hash(rec, 0),
            pack,
            offset: le_u64(rec, 16),
            stored_len: le_u32(rec, 24),
            raw_len: le_u32(rec, 28),
            codec: rec[32],
            dtype: rec[33],
            depth: u16::from_le_bytes([rec[34], rec[35]]),
            base: (base != Hash::default()).then_some(base),
            checksum: le_u64(rec, 56),
        };
        let end = e.offset.checked_add(u64::from(e.stored_len)).and_then(|end| end.checked_add(16));
        if end.is_some_and(|end| end > pack_len) && e.offset >= (FILE_HEADER + RECORD_HEADER) as u64 {
            return Err(Error::corrupt_as(
                CorruptKind::Truncated,
                path,
                format!(
                    "index entry {i} (block {}) lies past the end of its pack ({pack_len} bytes): the pack is truncated",
                    e.hash
                ),
            ));
        }
        let in_range = end.is_some_and(|end| end <= pack_len && e.offset >= (FILE_HEADER + RECORD_HEADER) as u64);
        let sorted = entries.last().is_none_or(|p: &Entry| p.hash < e.hash);
        if !in_range || !sorted || e.raw_len > MAX_BLOCK || (e.depth > 0) != e.base.is_some() {
            return Err(Error::corrupt(path, format!("index entry {i} (block {}) is inconsistent", e.hash)));
        }
        entries.push(e);
    }
    Ok(entries)
}

/// Reads the payload of `entry` from the open pack file and checks its
/// checksum.
pub(crate) fn read_payload(file: &File, path: &Path, entry: &Entry, buf: &mut Vec<u8>) -> Result<()> {
    buf.clear();
    buf.resize(entry.stored_len as usize, 0);
    file.read_exact_at(buf, entry.offset).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Error::corrupt_as(
                CorruptKind::Truncated,
                path,
                format!("pack truncated: block {} lies past its end", entry.hash),
            )
        } else {
            Error::io(path, e)
        }
    })?;
    let sum = xxhash_rust::xxh3::xxh3_64(buf);
    if sum != entry.checksum {
        return Err(Error::corrupt_as(
            CorruptKind::Checksum,
            path,
            format!("payload of block {} at offset {} fails its checksum", entry.hash, entry.offset),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_and_index_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let (tmp, packs) = (dir.path().join("tmp"), dir.path().join("packs"));
        fs::create_dir_all(&tmp).unwrap();
        fs::create_dir_all(&packs).unwrap();
        let mut w = PackWriter::create(&tmp).unwrap();
        let payloads: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 100 + i as usize]).collect();
        for (i, p) in payloads.iter().enumerate() {
            let meta = BlockMeta {
                hash: Hash::of(p),
                raw_len: p.len() as u32,
                codec: 1,
                dtype: 2,
                depth: (i % 2) as u16,
                base: (i % 2 == 1).then(|| Hash::of(b"base")),
            };
            w.add(meta, p).unwrap();
        }
        let (id, entries) = w.finish(&tmp, &packs).unwrap();
        let pack_path = packs.join(format!("{id}.pack"));
        let idx_path = packs.join(format!("{id}.idx"));
        let pack_len = fs::metadata(&pack_path).unwrap().len();
        let idx = fs::read(&idx_path).unwrap();
        let decoded = decode_index(&idx_path, &idx, 0, pack_len).unwrap();
        assert_eq!(decoded, entries);
        let f = File::open(&pack_path).unwrap();
        let mut buf = Vec::new();
        for e in &decoded {
            read_payload(&f, &pack_path, e, &mut buf).unwrap();
            assert_eq!(Hash::of(&buf), e.hash);
        }
        assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0, "temp files left");

        let mut bad = idx.clone();
        bad[40] ^= 0xff;
        let e = decode_index(&idx_path, &bad, 0, pack_len).unwrap_err();
        assert!(e.to_string().contains("checksum mismatch"), "{e}");
        let e = decode_index(&idx_path, &idx[..idx.len() - 3], 0, pack_len).unwrap_err();
        assert!(e.to_string().contains("claims 5 entries"), "{e}");
        let e = decode_index(&idx_path, &idx, 0, 100).unwrap_err();
        assert!(e.to_string().contains("past the end of its pack (100 bytes): the pack is truncated"), "{e}");

        // Every older version is read; a newer one is refused by name.
        let with_version = |v: u32| {
            let mut b = idx[..idx.len() - 8].to_vec();
            b[8..12].copy_from_slice(&v.to_le_bytes());
            let sum = xxhash_rust::xxh3::xxh3_64(&b);
            b.extend_from_slice(&sum.to_le_bytes());
            b
        };
        for v in 1..=PACK_VERSION {
            assert_eq!(decode_index(&idx_path, &with_version(v), 0, pack_len).unwrap(), entries, "version {v}");
        }
        let e = decode_index(&idx_path, &with_version(PACK_VERSION + 1), 0, pack_len).unwrap_err();
        assert!(matches!(e, Error::UnsupportedFormat { .. }), "{e}");
        assert!(e.to_string().contains("format version 3 is not supported"), "{e}");
        assert!(e.to_string().contains(&idx_path.display().to_string()), "{e}");
    }

    /// Found by fuzzing: an entry whose offset is near `u64::MAX` made the
    /// bounds check overflow (a panic in debug, a wrong pass in release).
    #[test]
    fn index_entry_near_u64_max_is_refused() {
        let hex = "5444494e444558000100000000000000010000000000000001000000000000000000000000000000\
                   f7ffffffffffffff0000000000000000000200000000000000000000000000000000000000000000\
                   000000000000000094cbb4201a79c5c2";
        let hex: String = hex.split_whitespace().collect();
        let bytes: Vec<u8> =
            (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
        for pack_len in [u64::MAX, u64::MAX / 2, 1 << 20] {
            let e = decode_index(Path::new("x.idx"), &bytes, 0, pack_len).unwrap_err();
            assert!(e.to_string().contains("inconsistent"), "{e}");
        }
    }
}
