//! Pack files (immutable sequences of encoded blocks) and their indexes.
//!
//! A pack is written once, front to back, as a streamed object of the
//! backend (locally: a temporary file, fsynced and renamed) named
//! `packs/<id>.pack`; its index follows as `packs/<id>.idx`. Both layouts
//! are specified in `FORMAT.md`.

use std::path::Path;

use super::{PackFile, Store, index_name, pack_name};
use crate::backend::{ObjectWriter, PutMode};
use crate::error::CorruptKind;
use crate::{Algo, Domain, Hash, Hasher};
use crate::{Error, Result};

pub(crate) const PACK_MAGIC: &[u8; 8] = b"TDPACK\0\0";
pub(crate) const PACK_FOOTER_MAGIC: &[u8; 8] = b"TDPKEND\0";
pub(crate) const INDEX_MAGIC: &[u8; 8] = b"TDINDEX\0";
/// Version 2 added the dtype codes 21 and 22 (F8_E4M3FNUZ, F8_E5M2FNUZ)
/// and codec codes above 16; version 3 (format-2 stores) holds ids of
/// either width in 32-byte fields. Older versions are still read.
pub(crate) const PACK_VERSION: u32 = 3;
/// The version written by format-1 (xxh3-128) writers.
const PACK_VERSION_XXH3: u32 = 2;
pub(crate) const RECORD_MAGIC: &[u8; 4] = b"TDBK";
pub(crate) const RECORD_HEADER: usize = 64;
pub(crate) const INDEX_ENTRY: usize = 64;
/// Record header and index entry of version 3.
pub(crate) const RECORD_HEADER_V3: usize = 104;
pub(crate) const INDEX_ENTRY_V3: usize = 96;
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

/// Appends blocks to a new pack (a streamed object of the backend).
pub(crate) struct PackWriter {
    out: Box<dyn ObjectWriter>,
    digest: Hasher,
    /// The pack version written: 2 for xxh3-128 ids, 3 for BLAKE3.
    version: u32,
    pos: u64,
    entries: Vec<Entry>,
}

impl std::fmt::Debug for PackWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackWriter").field("pos", &self.pos).field("blocks", &self.entries.len()).finish()
    }
}

impl PackWriter {
    /// Starts a new pack of `store` (the caller holds its lease), named
    /// with the store's algorithm: version 3 for BLAKE3, version 2 for
    /// xxh3-128.
    pub fn create(store: &Store) -> Result<PackWriter> {
        let algo = store.hasher();
        let version = if algo == Algo::Xxh3 { PACK_VERSION_XXH3 } else { PACK_VERSION };
        let mut w = PackWriter {
            out: store.backend.writer()?,
            digest: algo.hasher(Domain::Pack),
            version,
            pos: 0,
            entries: Vec::new(),
        };
        let mut head = [0u8; FILE_HEADER];
        head[..8].copy_from_slice(PACK_MAGIC);
        head[8..12].copy_from_slice(&version.to_le_bytes());
        w.put(&head)?;
        Ok(w)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.out.write_all(bytes)?;
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
        let base = meta.base.unwrap_or_default();
        let mut head = [0u8; RECORD_HEADER_V3];
        head[..4].copy_from_slice(RECORD_MAGIC);
        head[4] = meta.codec;
        head[5] = meta.dtype;
        head[6..8].copy_from_slice(&meta.depth.to_le_bytes());
        head[8..12].copy_from_slice(&meta.raw_len.to_le_bytes());
        head[12..16].copy_from_slice(&stored_len.to_le_bytes());
        let len = if self.version >= 3 {
            head[16..48].copy_from_slice(&meta.hash.to_field());
            head[48..80].copy_from_slice(&base.to_field());
            head[80..88].copy_from_slice(&checksum.to_le_bytes());
            head[88] = meta.hash.width() as u8;
            head[89] = base.width() as u8;
            RECORD_HEADER_V3
        } else {
            if meta.hash.width() != 16 || base.width() != 16 {
                return Err(Error::Internal(format!("block {}: a version-2 pack holds 16-byte ids only", meta.hash)));
            }
            head[16..32].copy_from_slice(&meta.hash.to_le_bytes());
            head[32..48].copy_from_slice(&base.to_le_bytes());
            head[48..56].copy_from_slice(&checksum.to_le_bytes());
            RECORD_HEADER
        };
        let hsum = xxhash_rust::xxh3::xxh3_64(&head[..len - 8]);
        head[len - 8..len].copy_from_slice(&hsum.to_le_bytes());
        self.put(&head[..len])?;
        let offset = self.pos;
        self.put(payload)?;
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

    /// Finishes the pack: footer, the pack object, then its index.
    /// Returns the pack id and its entries (pack number unset). On failure
    /// nothing is left behind: neither the temporary object nor a pack
    /// whose index could not be written (a full disk must leave the store
    /// as it was).
    pub fn finish(mut self, store: &Store) -> Result<(Hash, Vec<Entry>)> {
        let mut foot = [0u8; 16];
        foot[..8].copy_from_slice(PACK_FOOTER_MAGIC);
        foot[8..].copy_from_slice(&(self.entries.len() as u64).to_le_bytes());
        if let Err(e) = self.put(&foot) {
            self.out.abort();
            return Err(e);
        }
        let id = self.digest.finish();
        match self.out.finish(&pack_name(id)) {
            // The same bytes are there already (content-addressed).
            Ok(()) | Err(Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
        let mut entries = self.entries;
        entries.sort_by_key(|e| e.hash);
        let index = encode_index(&entries, self.version);
        match store.backend.put(&index_name(id), &index, PutMode::Create) {
            Ok(_) | Err(Error::AlreadyExists { .. }) => {}
            Err(e) => {
                // The index may have landed with its response lost: it
                // goes first, so that no index ever names a missing pack.
                let _ = store.backend.delete(&index_name(id));
                let _ = store.backend.delete(&pack_name(id));
                return Err(e);
            }
        }
        Ok((id, entries))
    }

    /// Drops an abandoned pack: nothing becomes visible.
    pub fn abandon(self) {
        self.out.abort();
    }
}

/// Bytes of one index entry in a pack of `version`.
fn index_entry_len(version: u32) -> usize {
    if version >= 3 { INDEX_ENTRY_V3 } else { INDEX_ENTRY }
}

fn encode_index(entries: &[Entry], version: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + entries.len() * index_entry_len(version) + 8);
    out.extend_from_slice(INDEX_MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for e in entries {
        let base = e.base.unwrap_or_default();
        if version >= 3 {
            out.extend_from_slice(&e.hash.to_field());
        } else {
            out.extend_from_slice(&e.hash.to_le_bytes());
        }
        out.extend_from_slice(&e.offset.to_le_bytes());
        out.extend_from_slice(&e.stored_len.to_le_bytes());
        out.extend_from_slice(&e.raw_len.to_le_bytes());
        out.push(e.codec);
        out.push(e.dtype);
        out.extend_from_slice(&e.depth.to_le_bytes());
        if version >= 3 {
            out.extend_from_slice(&[e.hash.width() as u8, base.width() as u8, 0, 0]);
            out.extend_from_slice(&base.to_field());
        } else {
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend_from_slice(&base.to_le_bytes());
        }
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

/// An id in a version-3 32-byte field, of the width stored beside it.
fn field_hash(b: &[u8], at: usize, width: u8) -> Option<Hash> {
    let mut a = [0u8; 32];
    a.copy_from_slice(&b[at..at + 32]);
    Hash::from_field(&a, width)
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
    let entry_len = index_entry_len(version);
    let record_header = if version >= 3 { RECORD_HEADER_V3 } else { RECORD_HEADER };
    let expected = count.checked_mul(entry_len as u64).and_then(|n| n.checked_add(32));
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
    for (i, rec) in bytes[24..end].chunks_exact(entry_len).enumerate() {
        // Version 3 widens the id fields to 32 bytes: offsets past the
        // hash move by 16, past the base by 32.
        let (hash, base, at) = if version >= 3 {
            let (Some(hash), Some(base)) = (field_hash(rec, 0, rec[52]), field_hash(rec, 56, rec[53])) else {
                return Err(Error::corrupt(path, format!("index entry {i} has an id width other than 16 or 32")));
            };
            (hash, base, 16)
        } else {
            (le_hash(rec, 0), le_hash(rec, 40), 0)
        };
        let e = Entry {
            hash,
            pack,
            offset: le_u64(rec, 16 + at),
            stored_len: le_u32(rec, 24 + at),
            raw_len: le_u32(rec, 28 + at),
            codec: rec[32 + at],
            dtype: rec[33 + at],
            depth: u16::from_le_bytes([rec[34 + at], rec[35 + at]]),
            base: (!base.is_zero()).then_some(base),
            checksum: le_u64(rec, 56 + 2 * at),
        };
        let end = e.offset.checked_add(u64::from(e.stored_len)).and_then(|end| end.checked_add(16));
        if end.is_some_and(|end| end > pack_len) && e.offset >= (FILE_HEADER + record_header) as u64 {
            return Err(Error::corrupt_as(
                CorruptKind::Truncated,
                path,
                format!(
                    "index entry {i} (block {}) lies past the end of its pack ({pack_len} bytes): the pack is truncated",
                    e.hash
                ),
            ));
        }
        let in_range = end.is_some_and(|end| end <= pack_len && e.offset >= (FILE_HEADER + record_header) as u64);
        let sorted = entries.last().is_none_or(|p: &Entry| p.hash < e.hash);
        if !in_range || !sorted || e.raw_len > MAX_BLOCK || (e.depth > 0) != e.base.is_some() {
            return Err(Error::corrupt(path, format!("index entry {i} (block {}) is inconsistent", e.hash)));
        }
        entries.push(e);
    }
    Ok(entries)
}

/// Reads the payload of `entry` from pack `pack` of `store` and checks its
/// checksum.
pub(crate) fn read_payload(store: &Store, pack: &PackFile, entry: &Entry, buf: &mut Vec<u8>) -> Result<()> {
    let path = &pack.path;
    buf.clear();
    buf.resize(entry.stored_len as usize, 0);
    store.backend.read_at(&pack.name, entry.offset, buf).map_err(|e| match e {
        Error::Corrupt { .. } => Error::corrupt_as(
            CorruptKind::Truncated,
            path,
            format!("pack truncated: block {} lies past its end", entry.hash),
        ),
        Error::NotFound { .. } => Error::corrupt(path, format!("pack is missing: block {} cannot be read", entry.hash)),
        e => e,
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

impl Store {
    /// The entries of loaded pack number `i`, read from its index again
    /// (the index map keeps one copy of a block that sits in several packs).
    pub(crate) fn pack_entries(&self, i: usize) -> Result<Vec<Entry>> {
        let p = &self.packs[i];
        let name = index_name(p.id);
        let (bytes, _) = self.backend.get(&name, 1 << 34)?;
        decode_index(&self.locate(&name), &bytes, i as u32, p.len)
    }

    /// Bytes of the index of pack `id` (0 when it cannot be read).
    pub(crate) fn index_size(&self, id: Hash) -> u64 {
        self.backend.head(&index_name(id)).map_or(0, |m| m.size)
    }

    /// Bytes of every object under `packs/`.
    pub(crate) fn packs_bytes(&self) -> Result<u64> {
        Ok(self.backend.list("packs/")?.iter().map(|o| o.size).sum())
    }

    /// xxh3-128 of a whole pack, read in 4 MiB pieces.
    pub(crate) fn hash_pack(&self, p: &PackFile) -> Result<Hash> {
        let mut h = p.id.algo().hasher(Domain::Pack);
        let mut buf = vec![0u8; 4 << 20];
        let mut at = 0u64;
        let len = self.backend.head(&p.name)?.size;
        while at < len {
            let n = (len - at).min(buf.len() as u64) as usize;
            self.backend.read_at(&p.name, at, &mut buf[..n])?;
            h.update(&buf[..n]);
            at += n as u64;
        }
        Ok(h.finish())
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    #[test]
    fn pack_and_index_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::init(&dir.path().join("s"), &crate::InitOptions::default()).unwrap();
        // A format-1 writer: version-2 packs, whose index older versions
        // share the layout of.
        store.config.hash = Algo::Xxh3;
        let (tmp, packs) = (dir.path().join("s/tmp"), dir.path().join("s/packs"));
        let mut w = PackWriter::create(&store).unwrap();
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
        let (id, entries) = w.finish(&store).unwrap();
        let pack_path = packs.join(format!("{id}.pack"));
        let idx_path = packs.join(format!("{id}.idx"));
        let pack_len = fs::metadata(&pack_path).unwrap().len();
        let idx = fs::read(&idx_path).unwrap();
        let decoded = decode_index(&idx_path, &idx, 0, pack_len).unwrap();
        assert_eq!(decoded, entries);
        store.load_packs().unwrap();
        let mut buf = Vec::new();
        for e in &decoded {
            read_payload(&store, &store.packs[0], e, &mut buf).unwrap();
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
        for v in 1..=PACK_VERSION_XXH3 {
            assert_eq!(decode_index(&idx_path, &with_version(v), 0, pack_len).unwrap(), entries, "version {v}");
        }
        let e = decode_index(&idx_path, &with_version(PACK_VERSION + 1), 0, pack_len).unwrap_err();
        assert!(matches!(e, Error::UnsupportedFormat { .. }), "{e}");
        assert!(e.to_string().contains("format version 4 is not supported"), "{e}");
        assert!(e.to_string().contains(&idx_path.display().to_string()), "{e}");
    }

    /// Version-3 packs (format 2) hold BLAKE3 ids and, after an upgrade or
    /// a gc, format-1 ids beside them: both round-trip with their widths.
    #[test]
    fn version_3_pack_holds_ids_of_both_widths() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::init(dir.path(), &crate::InitOptions::default()).unwrap();
        let packs = dir.path().join("packs");
        let mut w = PackWriter::create(&store).unwrap();
        let payloads: Vec<Vec<u8>> = (0..6u8).map(|i| vec![i; 200 + i as usize]).collect();
        for (i, p) in payloads.iter().enumerate() {
            // Odd blocks: a format-1 block kept by gc; every third block
            // a delta against a format-1 base.
            let hash = if i % 2 == 1 { Hash::of(p) } else { Algo::Blake3.block(p) };
            let base = (i % 3 == 0).then(|| Hash::of(b"old base"));
            let meta =
                BlockMeta { hash, raw_len: p.len() as u32, codec: 3, dtype: 1, depth: u16::from(base.is_some()), base };
            w.add(meta, p).unwrap();
        }
        let (id, entries) = w.finish(&store).unwrap();
        assert_eq!(id.width(), 32, "a format-2 pack is named with blake3");
        let pack_path = packs.join(format!("{id}.pack"));
        let pack = fs::read(&pack_path).unwrap();
        assert_eq!(&pack[8..12], &3u32.to_le_bytes());
        store.load_packs().unwrap();
        assert_eq!(store.hash_pack(&store.packs[0]).unwrap(), id);
        let idx_path = packs.join(format!("{id}.idx"));
        let idx = fs::read(&idx_path).unwrap();
        assert_eq!(idx.len(), 32 + entries.len() * INDEX_ENTRY_V3);
        let decoded = decode_index(&idx_path, &idx, 0, pack.len() as u64).unwrap();
        assert_eq!(decoded, entries);
        assert_eq!(decoded.iter().filter(|e| e.hash.width() == 16).count(), 3);
        assert!(decoded.iter().filter_map(|e| e.base).all(|b| b == Hash::of(b"old base")));
        let mut buf = Vec::new();
        for e in &decoded {
            read_payload(&store, &store.packs[0], e, &mut buf).unwrap();
            assert_eq!(e.hash.algo().block(&buf), e.hash);
        }
        // A width other than 16 or 32 is damage, named as such.
        let mut bad = idx[..idx.len() - 8].to_vec();
        bad[24 + 52] = 20;
        let sum = xxhash_rust::xxh3::xxh3_64(&bad);
        bad.extend_from_slice(&sum.to_le_bytes());
        let e = decode_index(&idx_path, &bad, 0, pack.len() as u64).unwrap_err();
        assert!(e.to_string().contains("id width other than 16 or 32"), "{e}");
        // A version-2 writer refuses a 32-byte id instead of cutting it.
        store.config.hash = Algo::Xxh3;
        let mut w = PackWriter::create(&store).unwrap();
        let meta = BlockMeta { hash: Algo::Blake3.block(b"x"), raw_len: 1, codec: 1, dtype: 1, depth: 0, base: None };
        assert!(w.add(meta, b"x").unwrap_err().to_string().contains("16-byte ids only"));
        w.abandon();
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
