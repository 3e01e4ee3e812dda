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
use crate::{Domain, Hash, Hasher};
use crate::{Error, Result};
use tdelta_format::pack::{self as format, IndexEntry};

/// Where and how one block is stored: its entry in the index of pack
/// number `pack` (the fields of [`IndexEntry`] read through it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    /// Number of the pack in the store's pack table.
    pub pack: u32,
    /// The entry as the pack's index stores it.
    pub index: IndexEntry,
}

impl std::ops::Deref for Entry {
    type Target = IndexEntry;

    fn deref(&self) -> &IndexEntry {
        &self.index
    }
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
        let version = format::version_for(algo);
        let mut w = PackWriter {
            out: store.backend.writer()?,
            digest: algo.hasher(Domain::Pack),
            version,
            pos: 0,
            entries: Vec::new(),
        };
        w.put(&format::pack_header(version))?;
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
            u32::try_from(payload.len()).map_err(|_| Error::Internal("block payload over 4 GiB".into()))?;
        let header_len = format::record_header_len(self.version) as u64;
        let entry = IndexEntry {
            hash: meta.hash,
            offset: self.pos + header_len,
            stored_len,
            raw_len: meta.raw_len,
            codec: meta.codec,
            dtype: meta.dtype,
            depth: meta.depth,
            base: meta.base,
            checksum,
        };
        let head = format::encode_record_header(self.version, &entry).map_err(|e| Error::Internal(e.to_string()))?;
        self.put(&head)?;
        self.put(payload)?;
        self.entries.push(Entry { pack: 0, index: entry });
        Ok(())
    }

    /// Finishes the pack: footer, the pack object, then its index.
    /// Returns the pack id and its entries (pack number unset). On failure
    /// nothing is left behind: neither the temporary object nor a pack
    /// whose index could not be written (a full disk must leave the store
    /// as it was).
    pub fn finish(mut self, store: &Store) -> Result<(Hash, Vec<Entry>)> {
        if let Err(e) = self.put(&format::pack_footer(self.entries.len() as u64)) {
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
        let index = format::encode_index(self.version, &entries.iter().map(|e| e.index).collect::<Vec<_>>())
            .map_err(|e| Error::Internal(e.to_string()));
        let index = match index {
            Ok(v) => v,
            Err(e) => {
                let _ = store.backend.delete(&pack_name(id));
                return Err(e);
            }
        };
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

/// Parses the index of pack number `pack` (`path` names it in errors);
/// `pack_len` is the length of its pack, against which every entry is
/// bounds-checked. Returns the index's version with its entries.
pub(crate) fn decode_index(path: &Path, bytes: &[u8], pack: u32, pack_len: u64) -> Result<(u32, Vec<Entry>)> {
    let index = format::decode_index(bytes, pack_len).map_err(|e| Error::format(path, e))?;
    Ok((index.version, index.entries.into_iter().map(|index| Entry { pack, index }).collect()))
}

/// Reads the payload of `entry` from pack `pack` of `store` and checks its
/// checksum.
pub(crate) fn read_payload(store: &Store, pack: &PackFile, entry: &Entry, buf: &mut Vec<u8>) -> Result<()> {
    read_payload_bytes(store, pack, entry, buf)?;
    check_payload(pack, entry, buf)
}

/// Reads the payload of `entry` from pack `pack` of `store`, its checksum
/// not checked (see [`check_payload`]).
pub(crate) fn read_payload_bytes(store: &Store, pack: &PackFile, entry: &Entry, buf: &mut Vec<u8>) -> Result<()> {
    let path = &pack.path;
    // `read_at` fills the whole buffer (or fails): only new bytes need
    // initializing, not the reused ones.
    buf.resize(entry.stored_len as usize, 0);
    store.backend.read_at(&pack.name, entry.offset, buf).map_err(|e| match e {
        Error::Corrupt { .. } => Error::corrupt_as(
            CorruptKind::Truncated,
            path,
            format!("pack truncated: block {} lies past its end", entry.hash),
        ),
        Error::NotFound { .. } => Error::corrupt(path, format!("pack is missing: block {} cannot be read", entry.hash)),
        e => e,
    })
}

/// Checks the payload `buf` of `entry` (in pack `pack`) against the
/// checksum its index records.
fn check_payload(pack: &PackFile, entry: &Entry, buf: &[u8]) -> Result<()> {
    let sum = xxhash_rust::xxh3::xxh3_64(buf);
    if sum != entry.checksum {
        return Err(Error::corrupt_as(
            CorruptKind::Checksum,
            &pack.path,
            format!("payload of block {} at offset {} fails its checksum", entry.hash, entry.offset),
        ));
    }
    Ok(())
}

impl Store {
    /// The pack files under `packs/` without their other half, sorted by
    /// id: the packs that have no index (a writer's leftover, killed
    /// between the pack and its index, or an index deleted outside
    /// tdelta), then the indexes whose pack is missing.
    pub(crate) fn unpaired_packs(&self) -> Result<(Vec<Hash>, Vec<Hash>)> {
        let names: std::collections::HashSet<String> =
            self.backend.list("packs/")?.into_iter().map(|o| o.name).collect();
        let alone = |ext: &str, other: fn(Hash) -> String| {
            let mut ids: Vec<Hash> = names
                .iter()
                .filter_map(|n| n.strip_prefix("packs/")?.strip_suffix(ext)?.parse().ok())
                .filter(|id| !names.contains(&other(*id)))
                .collect();
            ids.sort();
            ids
        };
        Ok((alone(".pack", index_name), alone(".idx", pack_name)))
    }

    /// The ids of the blocks the index of pack `id` lists (read whether or
    /// not its pack is there).
    pub(crate) fn index_hashes(&self, id: Hash) -> Result<Vec<Hash>> {
        let name = index_name(id);
        let (bytes, _) = self.backend.get(&name, 1 << 34)?;
        Ok(decode_index(&self.locate(&name), &bytes, 0, u64::MAX)?.1.into_iter().map(|e| e.hash).collect())
    }

    /// The ids of the blocks pack `id` holds, read from its record headers
    /// front to back (for a pack whose index is missing). A record that
    /// does not parse is an error naming the pack.
    pub(crate) fn record_hashes(&self, id: Hash) -> Result<Vec<Hash>> {
        let name = pack_name(id);
        let path = self.locate(&name);
        let len = self.backend.head(&name)?.size;
        let mut head = [0u8; format::PACK_HEADER];
        self.backend.read_at(&name, 0, &mut head)?;
        let [m0, m1, m2, m3, m4, m5, m6, m7, v0, v1, v2, v3, ..] = head;
        if [m0, m1, m2, m3, m4, m5, m6, m7] != *format::PACK_MAGIC {
            return Err(Error::corrupt_as(CorruptKind::Magic, &path, "not a tdelta pack (bad magic)"));
        }
        let version = u32::from_le_bytes([v0, v1, v2, v3]);
        if !(1..=format::PACK_VERSION).contains(&version) {
            return Err(Error::UnsupportedFormat { file: path, found: version, supported: format::PACK_VERSION });
        }
        let mut buf = vec![0u8; format::record_header_len(version)];
        let end = len.saturating_sub(format::PACK_FOOTER as u64);
        let (mut at, mut out) = (format::PACK_HEADER as u64, Vec::new());
        while at + buf.len() as u64 <= end {
            self.backend.read_at(&name, at, &mut buf)?;
            let e = format::decode_record_header(version, &buf, at).map_err(|e| Error::format(&path, e))?;
            out.push(e.hash);
            at = e.offset.saturating_add(u64::from(e.stored_len));
        }
        Ok(out)
    }

    /// The entries of loaded pack number `i`, read from its index again
    /// (the index map keeps one copy of a block that sits in several packs).
    pub(crate) fn pack_entries(&self, i: usize) -> Result<Vec<Entry>> {
        let p = &self.packs[i];
        let name = index_name(p.id);
        let (bytes, _) = self.backend.get(&name, 1 << 34)?;
        Ok(decode_index(&self.locate(&name), &bytes, i as u32, p.len)?.1)
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
    use crate::Algo;

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
        let (version, decoded) = decode_index(&idx_path, &idx, 0, pack_len).unwrap();
        assert_eq!(version, 2);
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
        for v in 1..=format::PACK_VERSION_XXH3 {
            assert_eq!(
                decode_index(&idx_path, &with_version(v), 0, pack_len).unwrap(),
                (v, entries.clone()),
                "version {v}"
            );
        }
        let e = decode_index(&idx_path, &with_version(format::PACK_VERSION + 1), 0, pack_len).unwrap_err();
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
        assert_eq!(idx.len(), 32 + entries.len() * format::INDEX_ENTRY_V3);
        let (version, decoded) = decode_index(&idx_path, &idx, 0, pack.len() as u64).unwrap();
        assert_eq!(version, 3);
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

    #[test]
    fn a_block_id_the_pack_cannot_hold_is_an_internal_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::init(&dir.path().join("s"), &crate::InitOptions::default()).unwrap();
        // A format-1 writer (version-2 pack, 16-byte ids) handed a BLAKE3
        // id: a bug of the caller, not bad input or damage.
        store.config.hash = Algo::Xxh3;
        let mut w = PackWriter::create(&store).unwrap();
        let meta = BlockMeta { hash: Algo::Blake3.block(b"x"), raw_len: 1, codec: 0, dtype: 0, depth: 0, base: None };
        let e = w.add(meta, b"x").unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Internal, "{e}");
        assert!(e.to_string().contains("16-byte ids"), "{e}");
        w.abandon();
    }
}
