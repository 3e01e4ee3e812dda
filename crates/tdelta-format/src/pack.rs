//! Pack files and pack indexes over bytes: `FORMAT.md`, "Pack files" and
//! "Pack index". The engine streams and reads them; this module says what
//! the bytes are.
//!
//! Versions: 1 (the first), 2 (adds the dtype codes 21 and 22 and the
//! codec code 17, quant-ec), 3 (format-2 stores: 32-byte id fields holding
//! ids of either width). Format-1 stores write version 2. An index keeps
//! its version, and the codes of its entries are checked against it.

use crate::Hash;
use crate::error::{Check, FileKind, FormatError, Result, le_u32, le_u64};

/// First 8 bytes of a pack.
pub const PACK_MAGIC: &[u8; 8] = b"TDPACK\0\0";
/// First 8 bytes of a pack's footer.
pub const PACK_FOOTER_MAGIC: &[u8; 8] = b"TDPKEND\0";
/// First 8 bytes of a pack index.
pub const INDEX_MAGIC: &[u8; 8] = b"TDINDEX\0";
/// Newest pack and index version (format-2 stores write it).
pub const PACK_VERSION: u32 = 3;
/// The version format-1 (xxh3-128) stores write.
pub const PACK_VERSION_XXH3: u32 = 2;
/// First 4 bytes of a block record.
pub const RECORD_MAGIC: &[u8; 4] = b"TDBK";
/// Size of a block record's header, versions 1 and 2.
pub const RECORD_HEADER: usize = 64;
/// Size of a block record's header, version 3.
pub const RECORD_HEADER_V3: usize = 104;
/// Size of one index entry, versions 1 and 2.
pub const INDEX_ENTRY: usize = 64;
/// Size of one index entry, version 3.
pub const INDEX_ENTRY_V3: usize = 96;
/// Size of a pack's file header (magic, version, 4 reserved bytes).
pub const PACK_HEADER: usize = 16;
/// Size of a pack's footer (magic, block count).
pub const PACK_FOOTER: usize = 16;
/// Size of an index's header (magic, version, reserved, count).
pub const INDEX_HEADER: usize = 24;
/// Largest raw block any reader accepts (a cap against lying headers).
pub const MAX_BLOCK: u32 = 64 << 20;

/// Codec codes a version-1 pack may hold: raw, zstd, planes, xor-planes,
/// ulp-planes, quant.
const V1_CODECS: &[u8] = &[0, 1, 2, 3, 4, 16];
/// Version 2 (and 3) add quant-ec.
const V2_CODECS: &[u8] = &[0, 1, 2, 3, 4, 16, 17];

/// Whether a pack (or index) of `version` may hold a block with codec
/// code `codec` and dtype code `dtype`: codes introduced by a later
/// version mark the file as damaged. Unknown versions allow nothing.
pub fn allows_codes(version: u32, codec: u8, dtype: u8) -> bool {
    let (codecs, max_dtype): (&[u8], u8) = match version {
        1 => (V1_CODECS, 20),
        2 | 3 => (V2_CODECS, 22),
        _ => return false,
    };
    codecs.contains(&codec) && (1..=max_dtype).contains(&dtype)
}

/// The version a store whose ids are `algo` writes.
pub fn version_for(algo: crate::Algo) -> u32 {
    if algo == crate::Algo::Xxh3 { PACK_VERSION_XXH3 } else { PACK_VERSION }
}

/// Size of a record header in a pack of `version`.
pub fn record_header_len(version: u32) -> usize {
    if version >= 3 { RECORD_HEADER_V3 } else { RECORD_HEADER }
}

/// Size of an index entry in an index of `version`.
pub fn index_entry_len(version: u32) -> usize {
    if version >= 3 { INDEX_ENTRY_V3 } else { INDEX_ENTRY }
}

/// The 16-byte file header of a pack of `version`.
pub fn pack_header(version: u32) -> [u8; PACK_HEADER] {
    let mut head = [0u8; PACK_HEADER];
    head[..8].copy_from_slice(PACK_MAGIC);
    head[8..12].copy_from_slice(&version.to_le_bytes());
    head
}

/// The 16-byte footer of a pack of `blocks` records.
pub fn pack_footer(blocks: u64) -> [u8; PACK_FOOTER] {
    let mut foot = [0u8; PACK_FOOTER];
    foot[..8].copy_from_slice(PACK_FOOTER_MAGIC);
    foot[8..].copy_from_slice(&blocks.to_le_bytes());
    foot
}

/// Where and how one block is stored: an index entry, or the fields of a
/// record header (whose payload starts at `offset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// Hash of the raw block bytes.
    pub hash: Hash,
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

/// The header of the record of `e` in a pack of `version`, ending with
/// its own xxh3-64. A version below 3 holds 16-byte ids only.
pub fn encode_record_header(version: u32, e: &IndexEntry) -> Result<Vec<u8>> {
    let base = e.base.unwrap_or_default();
    let len = record_header_len(version);
    let mut head = vec![0u8; len];
    head[..4].copy_from_slice(RECORD_MAGIC);
    head[4] = e.codec;
    head[5] = e.dtype;
    head[6..8].copy_from_slice(&e.depth.to_le_bytes());
    head[8..12].copy_from_slice(&e.raw_len.to_le_bytes());
    head[12..16].copy_from_slice(&e.stored_len.to_le_bytes());
    if version >= 3 {
        head[16..48].copy_from_slice(&e.hash.to_field());
        head[48..80].copy_from_slice(&base.to_field());
        head[80..88].copy_from_slice(&e.checksum.to_le_bytes());
        head[88] = e.hash.width() as u8;
        head[89] = base.width() as u8;
    } else {
        if e.hash.width() != 16 || base.width() != 16 {
            return Err(FormatError::Encode {
                file: FileKind::Pack,
                reason: format!("block {}: a version-{version} pack holds 16-byte ids only", e.hash),
            });
        }
        head[16..32].copy_from_slice(&e.hash.to_le_bytes());
        head[32..48].copy_from_slice(&base.to_le_bytes());
        head[48..56].copy_from_slice(&e.checksum.to_le_bytes());
    }
    let hsum = xxhash_rust::xxh3::xxh3_64(&head[..len - 8]);
    head[len - 8..].copy_from_slice(&hsum.to_le_bytes());
    Ok(head)
}

/// Parses and checks a record header of a pack of `version` (`head` holds
/// at least [`record_header_len`] bytes); `offset` in the result is
/// `at + record_header_len`, `at` being where the record starts.
pub fn decode_record_header(version: u32, head: &[u8], at: u64) -> Result<IndexEntry> {
    let bad = |check, reason: String| Err(FormatError::corrupt(FileKind::Pack, check, reason));
    let len = record_header_len(version);
    let Some(head) = head.get(..len) else {
        return bad(Check::Truncated, format!("block record at offset {at} is truncated"));
    };
    if &head[..4] != RECORD_MAGIC {
        return bad(Check::Magic, format!("no block record at offset {at} (bad magic)"));
    }
    if le_u64(head, len - 8) != xxhash_rust::xxh3::xxh3_64(&head[..len - 8]) {
        return bad(Check::Checksum, format!("block record header at offset {at} fails its checksum"));
    }
    let (hash, base, checksum) = if version >= 3 {
        let (Some(h), Some(b)) = (field_hash(head, 16, head[88]), field_hash(head, 48, head[89])) else {
            return bad(Check::Invalid, format!("block record at offset {at} has an id width other than 16 or 32"));
        };
        (h, b, le_u64(head, 80))
    } else {
        (le_hash(head, 16), le_hash(head, 32), le_u64(head, 48))
    };
    Ok(IndexEntry {
        hash,
        offset: at + len as u64,
        stored_len: le_u32(head, 12),
        raw_len: le_u32(head, 8),
        codec: head[4],
        dtype: head[5],
        depth: u16::from_le_bytes([head[6], head[7]]),
        base: (!base.is_zero()).then_some(base),
        checksum,
    })
}

/// A decoded pack index: its format version, kept with its entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackIndex {
    /// Format version of the index (and its pack).
    pub version: u32,
    /// The entries, sorted by hash, each hash once.
    pub entries: Vec<IndexEntry>,
}

/// Encodes the index of a pack of `version`; `entries` must be sorted by
/// hash. A version below 3 holds 16-byte ids only.
pub fn encode_index(version: u32, entries: &[IndexEntry]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(INDEX_HEADER + entries.len() * index_entry_len(version) + 8);
    out.extend_from_slice(INDEX_MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for e in entries {
        let base = e.base.unwrap_or_default();
        if version >= 3 {
            out.extend_from_slice(&e.hash.to_field());
        } else if e.hash.width() != 16 || base.width() != 16 {
            return Err(FormatError::Encode {
                file: FileKind::PackIndex,
                reason: format!("block {}: a version-{version} index holds 16-byte ids only", e.hash),
            });
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
    Ok(out)
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

/// Parses and checks an index. `pack_len` is the length of its pack,
/// against which every entry is bounds-checked; codec and dtype codes are
/// checked against the index's version.
pub fn decode_index(bytes: &[u8], pack_len: u64) -> Result<PackIndex> {
    let bad = |check, reason: String| Err(FormatError::corrupt(FileKind::PackIndex, check, reason));
    if bytes.len() < INDEX_HEADER + 8 {
        return bad(Check::Truncated, format!("truncated index: {} bytes", bytes.len()));
    }
    if &bytes[..8] != INDEX_MAGIC {
        return bad(Check::Magic, "not a tdelta index (bad magic)".into());
    }
    let version = le_u32(bytes, 8);
    if version == 0 || version > PACK_VERSION {
        return Err(FormatError::UnsupportedVersion {
            file: FileKind::PackIndex,
            found: version,
            supported: PACK_VERSION,
        });
    }
    let count = le_u64(bytes, 16);
    let entry_len = index_entry_len(version);
    let expected = count.checked_mul(entry_len as u64).and_then(|n| n.checked_add(INDEX_HEADER as u64 + 8));
    if expected != Some(bytes.len() as u64) {
        return bad(Check::Truncated, format!("index claims {count} entries but is {} bytes long", bytes.len()));
    }
    let end = bytes.len() - 8;
    let stored = le_u64(bytes, end);
    let actual = xxhash_rust::xxh3::xxh3_64(&bytes[..end]);
    if stored != actual {
        return bad(Check::Checksum, format!("index checksum mismatch (stored {stored:016x}, computed {actual:016x})"));
    }
    let first = (PACK_HEADER + record_header_len(version)) as u64;
    let mut entries: Vec<IndexEntry> = Vec::with_capacity(count as usize);
    for (i, rec) in bytes[INDEX_HEADER..end].chunks_exact(entry_len).enumerate() {
        // Version 3 widens the id fields to 32 bytes: offsets past the
        // hash move by 16, past the base by 32.
        let (hash, base, at) = if version >= 3 {
            let (Some(hash), Some(base)) = (field_hash(rec, 0, rec[52]), field_hash(rec, 56, rec[53])) else {
                return bad(Check::Invalid, format!("index entry {i} has an id width other than 16 or 32"));
            };
            (hash, base, 16)
        } else {
            (le_hash(rec, 0), le_hash(rec, 40), 0)
        };
        let e = IndexEntry {
            hash,
            offset: le_u64(rec, 16 + at),
            stored_len: le_u32(rec, 24 + at),
            raw_len: le_u32(rec, 28 + at),
            codec: rec[32 + at],
            dtype: rec[33 + at],
            depth: u16::from_le_bytes([rec[34 + at], rec[35 + at]]),
            base: (!base.is_zero()).then_some(base),
            checksum: le_u64(rec, 56 + 2 * at),
        };
        let stop = e.offset.checked_add(u64::from(e.stored_len)).and_then(|s| s.checked_add(PACK_FOOTER as u64));
        if stop.is_some_and(|s| s > pack_len) && e.offset >= first {
            return bad(
                Check::Truncated,
                format!(
                    "index entry {i} (block {}) lies past the end of its pack ({pack_len} bytes): the pack is truncated",
                    e.hash
                ),
            );
        }
        if !allows_codes(version, e.codec, e.dtype) {
            return bad(
                Check::Version,
                format!(
                    "index entry {i} (block {}) has codec code {} and dtype code {}, which a version-{version} \
                     index may not hold",
                    e.hash, e.codec, e.dtype
                ),
            );
        }
        let in_range = stop.is_some_and(|s| s <= pack_len && e.offset >= first);
        let sorted = entries.last().is_none_or(|p| p.hash < e.hash);
        if !in_range || !sorted || e.raw_len > MAX_BLOCK || (e.depth > 0) != e.base.is_some() {
            return bad(Check::Invalid, format!("index entry {i} (block {}) is inconsistent", e.hash));
        }
        entries.push(e);
    }
    Ok(PackIndex { version, entries })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Algo;

    fn entries(algo: Algo) -> Vec<IndexEntry> {
        let first = (PACK_HEADER + record_header_len(version_for(algo))) as u64;
        let mut v: Vec<IndexEntry> = (0..5u32)
            .map(|i| IndexEntry {
                hash: algo.block(&i.to_le_bytes()),
                offset: first + u64::from(i) * 300,
                stored_len: 100,
                raw_len: 400,
                codec: 1,
                dtype: 13,
                depth: (i % 2) as u16,
                base: (i % 2 == 1).then(|| algo.block(b"base")),
                checksum: u64::from(i),
            })
            .collect();
        v.sort_by_key(|e| e.hash);
        v
    }

    fn with_version(idx: &[u8], v: u32) -> Vec<u8> {
        let mut b = idx[..idx.len() - 8].to_vec();
        b[8..12].copy_from_slice(&v.to_le_bytes());
        let sum = xxhash_rust::xxh3::xxh3_64(&b);
        b.extend_from_slice(&sum.to_le_bytes());
        b
    }

    #[test]
    fn index_round_trip_and_damage() {
        let es = entries(Algo::Xxh3);
        let idx = encode_index(2, &es).unwrap();
        let pack_len = 2000;
        assert_eq!(decode_index(&idx, pack_len).unwrap(), PackIndex { version: 2, entries: es.clone() });

        let mut bad = idx.clone();
        bad[40] ^= 0xff;
        let e = decode_index(&bad, pack_len).unwrap_err();
        assert_eq!((e.file(), e.check()), (FileKind::PackIndex, Some(Check::Checksum)));
        let e = decode_index(&idx[..idx.len() - 3], pack_len).unwrap_err();
        assert!(e.to_string().contains("claims 5 entries"), "{e}");
        let e = decode_index(&idx, 100).unwrap_err();
        assert!(e.to_string().contains("past the end of its pack (100 bytes): the pack is truncated"), "{e}");

        // Versions 1 and 2 share the layout; each keeps its version.
        for v in 1..=2 {
            let got = decode_index(&with_version(&idx, v), pack_len).unwrap();
            assert_eq!((got.version, got.entries), (v, es.clone()), "version {v}");
        }
        let e = decode_index(&with_version(&idx, PACK_VERSION + 1), pack_len).unwrap_err();
        assert_eq!(
            e,
            FormatError::UnsupportedVersion { file: FileKind::PackIndex, found: PACK_VERSION + 1, supported: 3 }
        );
    }

    #[test]
    fn version_3_holds_ids_of_both_widths() {
        let mut es = entries(Algo::Blake3);
        es[0].hash = Hash::of(b"a format-1 block kept by gc");
        es[1].base = es[1].base.map(|_| Hash::of(b"old base"));
        es.sort_by_key(|e| e.hash);
        let idx = encode_index(3, &es).unwrap();
        assert_eq!(idx.len(), INDEX_HEADER + es.len() * INDEX_ENTRY_V3 + 8);
        assert_eq!(decode_index(&idx, 4000).unwrap(), PackIndex { version: 3, entries: es.clone() });
        let e = encode_index(2, &es).unwrap_err();
        assert!(e.to_string().contains("16-byte ids only"), "{e}");

        let mut bad = idx[..idx.len() - 8].to_vec();
        bad[INDEX_HEADER + 52] = 20;
        let sum = xxhash_rust::xxh3::xxh3_64(&bad);
        bad.extend_from_slice(&sum.to_le_bytes());
        let e = decode_index(&bad, 4000).unwrap_err();
        assert!(e.to_string().contains("id width other than 16 or 32"), "{e}");
    }

    /// Issue 13: a version-1 index may not name codes that version 2
    /// introduced (quant-ec, F8_E4M3FNUZ, F8_E5M2FNUZ); versions 2 and 3
    /// may.
    #[test]
    fn a_version_1_index_refuses_later_codes() {
        for (codec, dtype) in [(17u8, 13u8), (1, 21), (1, 22)] {
            let mut es = entries(Algo::Xxh3);
            es[2].codec = codec;
            es[2].dtype = dtype;
            let v2 = encode_index(2, &es).unwrap();
            assert_eq!(decode_index(&v2, 2000).unwrap().entries, es);
            let e = decode_index(&encode_index(1, &es).unwrap(), 2000).unwrap_err();
            assert_eq!((e.file(), e.check()), (FileKind::PackIndex, Some(Check::Version)));
            let want = format!(
                "index entry 2 (block {}) has codec code {codec} and dtype code {dtype}, which a version-1 index",
                es[2].hash
            );
            assert!(e.to_string().contains(&want), "{e}");
        }
        // Codes no version knows are refused by every version.
        for (codec, dtype) in [(5u8, 13u8), (18, 13), (1, 0), (1, 23)] {
            for v in 1..=PACK_VERSION {
                let mut es = entries(if v == 3 { Algo::Blake3 } else { Algo::Xxh3 });
                es[0].codec = codec;
                es[0].dtype = dtype;
                assert!(decode_index(&encode_index(v, &es).unwrap(), 4000).is_err(), "{codec} {dtype} v{v}");
            }
        }
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
            let e = decode_index(&bytes, pack_len).unwrap_err();
            assert!(e.to_string().contains("inconsistent"), "{e}");
        }
    }

    #[test]
    fn record_headers_round_trip_in_every_version() {
        for (v, algo) in [(2, Algo::Xxh3), (3, Algo::Blake3)] {
            let e = IndexEntry { offset: 7 + record_header_len(v) as u64, ..entries(algo)[1] };
            let head = encode_record_header(v, &e).unwrap();
            assert_eq!(head.len(), record_header_len(v));
            assert_eq!(decode_record_header(v, &head, 7).unwrap(), e);
            let mut flipped = head.clone();
            flipped[9] ^= 1;
            let err = decode_record_header(v, &flipped, 7).unwrap_err();
            assert_eq!(err.check(), Some(Check::Checksum));
        }
        let e = IndexEntry { hash: Algo::Blake3.block(b"x"), ..entries(Algo::Xxh3)[0] };
        assert!(encode_record_header(2, &e).unwrap_err().to_string().contains("16-byte ids only"));
    }
}
