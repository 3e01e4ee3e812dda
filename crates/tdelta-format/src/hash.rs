//! Content ids: xxh3-128 (format 1, 32 hex digits) or domain-separated
//! BLAKE3-256 (format 2, 64 hex digits). See `FORMAT.md`, "Ids".
//!
//! The width of an id names its algorithm, so a store that holds ids of
//! both formats (one upgraded from format 1) never confuses them, and a
//! reader checks any id with the algorithm its width names.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A content id: 16 bytes (xxh3-128) or 32 bytes (BLAKE3).
///
/// Blocks are named by the hash of their raw (decoded) bytes; files and
/// tensors by the hash of their block hashes; versions by the hash of their
/// manifest (see `FORMAT.md`). Ids order by width, then by their hex form.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hash {
    width: u8,
    /// The id in hex order (for xxh3-128: the big-endian value); unused
    /// bytes are zero.
    bytes: [u8; 32],
}

impl Default for Hash {
    /// The zero format-1 id (used as "none" in binary records).
    fn default() -> Self {
        Hash { width: 16, bytes: [0; 32] }
    }
}

/// A hash algorithm of a store (its config's `hash`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Algo {
    /// xxh3-128, format 1: fast, not collision resistant.
    #[default]
    #[serde(rename = "xxh3-128")]
    Xxh3,
    /// BLAKE3-256 keyed per domain, format 2.
    #[serde(rename = "blake3")]
    Blake3,
}

/// What is hashed: BLAKE3 ids of different domains never coincide (each
/// domain is a BLAKE3 `derive_key` context). xxh3-128 has no domains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    /// Raw block bytes.
    Block,
    /// A sequence of ids (a file's or tensor's block ids).
    List,
    /// A manifest's JSON (a version id).
    Version,
    /// A pack file.
    Pack,
    /// An audit log entry.
    Audit,
}

impl Domain {
    /// The BLAKE3 `derive_key` context of the domain.
    pub fn context(self) -> &'static str {
        match self {
            Domain::Block => "tdelta 2 block",
            Domain::List => "tdelta 2 list",
            Domain::Version => "tdelta 2 version",
            Domain::Pack => "tdelta 2 pack",
            Domain::Audit => "tdelta 2 audit",
        }
    }
}

impl Algo {
    /// The name in configs and reports: `xxh3-128` or `blake3`.
    pub fn name(self) -> &'static str {
        match self {
            Algo::Xxh3 => "xxh3-128",
            Algo::Blake3 => "blake3",
        }
    }

    /// Bytes of the ids it makes.
    pub fn width(self) -> usize {
        match self {
            Algo::Xxh3 => 16,
            Algo::Blake3 => 32,
        }
    }

    /// The algorithm that made `id` (by its width).
    pub fn of_id(id: &Hash) -> Algo {
        if id.width == 32 { Algo::Blake3 } else { Algo::Xxh3 }
    }

    /// The id of `bytes` in `domain`.
    pub fn hash(self, domain: Domain, bytes: &[u8]) -> Hash {
        let mut h = self.hasher(domain);
        h.update(bytes);
        h.finish()
    }

    /// The id of a block's raw bytes.
    pub fn block(self, bytes: &[u8]) -> Hash {
        self.hash(Domain::Block, bytes)
    }

    /// The id of a sequence of ids: the hash of their binary forms in
    /// order (16 little-endian bytes for xxh3-128, the 32 digest bytes for
    /// BLAKE3).
    pub fn list<'a>(self, hashes: impl IntoIterator<Item = &'a Hash>) -> Hash {
        let mut h = self.hasher(Domain::List);
        for x in hashes {
            h.update(&x.to_field()[..x.width()]);
        }
        h.finish()
    }

    /// A streaming hasher for `domain`.
    pub fn hasher(self, domain: Domain) -> Hasher {
        match self {
            Algo::Xxh3 => Hasher::Xxh3(Box::new(xxhash_rust::xxh3::Xxh3::new())),
            Algo::Blake3 => Hasher::Blake3(Box::new(blake3::Hasher::new_derive_key(domain.context()))),
        }
    }
}

impl fmt::Display for Algo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Algo {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "xxh3-128" => Ok(Algo::Xxh3),
            "blake3" => Ok(Algo::Blake3),
            _ => Err(format!("unknown hash `{s}`; valid values are: blake3, xxh3-128")),
        }
    }
}

/// A hash being computed ([`Algo::hasher`]).
pub enum Hasher {
    /// xxh3-128.
    Xxh3(Box<xxhash_rust::xxh3::Xxh3>),
    /// BLAKE3 in `derive_key` mode.
    Blake3(Box<blake3::Hasher>),
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Hasher::Xxh3(_) => "Hasher(xxh3-128)",
            Hasher::Blake3(_) => "Hasher(blake3)",
        })
    }
}

impl Hasher {
    /// Adds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Xxh3(h) => h.update(bytes),
            Hasher::Blake3(h) => {
                h.update(bytes);
            }
        }
    }

    /// The id of everything added.
    pub fn finish(&self) -> Hash {
        match self {
            Hasher::Xxh3(h) => Hash::from_u128(h.digest128()),
            Hasher::Blake3(h) => Hash::from_bytes(h.finalize().as_bytes()).unwrap_or_default(),
        }
    }
}

impl Hash {
    /// The format-1 (xxh3-128) block id of `bytes`.
    pub fn of(bytes: &[u8]) -> Hash {
        Algo::Xxh3.block(bytes)
    }

    /// The format-1 (xxh3-128) id of a sequence of ids.
    pub fn of_hashes<'a>(hashes: impl IntoIterator<Item = &'a Hash>) -> Hash {
        Algo::Xxh3.list(hashes)
    }

    /// A format-1 id from its value.
    pub fn from_u128(v: u128) -> Hash {
        let mut bytes = [0u8; 32];
        bytes[..16].copy_from_slice(&v.to_be_bytes());
        Hash { width: 16, bytes }
    }

    /// An id from its bytes in hex order: 16 (xxh3-128) or 32 (BLAKE3).
    pub fn from_bytes(b: &[u8]) -> Option<Hash> {
        if b.len() != 16 && b.len() != 32 {
            return None;
        }
        let mut bytes = [0u8; 32];
        bytes[..b.len()].copy_from_slice(b);
        Some(Hash { width: b.len() as u8, bytes })
    }

    /// The id's bytes in hex order.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.width)]
    }

    /// Bytes of the id: 16 or 32.
    pub fn width(&self) -> usize {
        usize::from(self.width)
    }

    /// The algorithm that made it.
    pub fn algo(&self) -> Algo {
        Algo::of_id(self)
    }

    /// The 32-byte binary field of format-2 records: a format-1 id's 16
    /// little-endian bytes then 16 zero bytes, or a BLAKE3 id's digest.
    pub fn to_field(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        if self.width == 16 {
            out[..16].copy_from_slice(&self.to_le_bytes());
        } else {
            out = self.bytes;
        }
        out
    }

    /// An id from a 32-byte field ([`Hash::to_field`]) and its width (16
    /// or 32; `None` for another width).
    pub fn from_field(field: &[u8; 32], width: u8) -> Option<Hash> {
        match width {
            16 => {
                let mut le = [0u8; 16];
                le.copy_from_slice(&field[..16]);
                Some(Hash::from_le_bytes(le))
            }
            32 => Some(Hash { width: 32, bytes: *field }),
            _ => None,
        }
    }

    /// Little-endian bytes of a format-1 id, as stored in binary files
    /// (for a BLAKE3 id: its first 16 digest bytes).
    pub fn to_le_bytes(self) -> [u8; 16] {
        let mut out = [0u8; 16];
        if self.width == 16 {
            for (o, b) in out.iter_mut().zip(self.bytes[..16].iter().rev()) {
                *o = *b;
            }
        } else {
            out.copy_from_slice(&self.bytes[..16]);
        }
        out
    }

    /// A format-1 id from its little-endian bytes.
    pub fn from_le_bytes(b: [u8; 16]) -> Hash {
        Hash::from_u128(u128::from_le_bytes(b))
    }

    /// The lowercase hex form: 32 or 64 digits.
    pub fn to_hex(self) -> String {
        self.to_string()
    }

    /// The first 12 hex digits, for display.
    pub fn short(self) -> String {
        self.to_hex()[..12].to_string()
    }

    /// True for the all-zero id of either width.
    pub fn is_zero(&self) -> bool {
        self.bytes.iter().all(|b| *b == 0)
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.as_bytes() {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({self})")
    }
}

impl FromStr for Hash {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if (s.len() != 32 && s.len() != 64) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("`{s}` is not a 32- or 64-digit hex id"));
        }
        let mut bytes = [0u8; 32];
        for (i, pair) in s.as_bytes().chunks_exact(2).enumerate() {
            let digit = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
            bytes[i] = digit(pair[0]) << 4 | digit(pair[1]);
        }
        Ok(Hash { width: (s.len() / 2) as u8, bytes })
    }
}

impl Serialize for Hash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Hash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_rejects_bad_text() {
        for h in [Hash::of(b"tdelta"), Algo::Blake3.block(b"tdelta")] {
            assert_eq!(h.to_hex().parse::<Hash>().unwrap(), h);
            assert_eq!(Hash::from_bytes(h.as_bytes()).unwrap(), h);
            let json = serde_json::to_string(&h).unwrap();
            assert_eq!(serde_json::from_str::<Hash>(&json).unwrap(), h);
        }
        let h = Hash::of(b"tdelta");
        assert_eq!(Hash::from_le_bytes(h.to_le_bytes()), h);
        assert!("xyz".parse::<Hash>().is_err());
        assert!("0".repeat(31).parse::<Hash>().is_err());
        assert!("0".repeat(48).parse::<Hash>().is_err());
        assert!(format!("{}g", "0".repeat(63)).parse::<Hash>().is_err());
    }

    #[test]
    fn format_1_ids_keep_their_value_text_and_order() {
        // The format-1 text is the u128 value in hex, as before format 2.
        let v = xxhash_rust::xxh3::xxh3_128(b"tdelta");
        assert_eq!(Hash::of(b"tdelta").to_hex(), format!("{v:032x}"));
        assert_eq!(Hash::of(b"tdelta").to_le_bytes(), v.to_le_bytes());
        let mut ids: Vec<u128> = (0..50u32).map(|i| xxhash_rust::xxh3::xxh3_128(&i.to_le_bytes())).collect();
        let mut hashes: Vec<Hash> = ids.iter().map(|v| Hash::from_u128(*v)).collect();
        ids.sort();
        hashes.sort();
        assert_eq!(hashes, ids.iter().map(|v| Hash::from_u128(*v)).collect::<Vec<_>>());
    }

    #[test]
    fn blake3_ids_are_256_bit_and_domain_separated() {
        let bytes = b"the same bytes";
        let block = Algo::Blake3.block(bytes);
        assert_eq!(block.width(), 32);
        assert_eq!(block.to_hex().len(), 64);
        assert_eq!(block.algo(), Algo::Blake3);
        assert_eq!(Hash::of(bytes).algo(), Algo::Xxh3);
        let version = Algo::Blake3.hash(Domain::Version, bytes);
        assert_ne!(block, version, "a block id must never equal a version id of the same bytes");
        for d in [Domain::List, Domain::Pack, Domain::Audit] {
            assert_ne!(Algo::Blake3.hash(d, bytes), block);
            assert_ne!(Algo::Blake3.hash(d, bytes), version);
        }
        // The documented construction: BLAKE3 derive_key with the context.
        assert_eq!(block.as_bytes(), blake3::derive_key("tdelta 2 block", bytes));
        // A streamed hash equals the one-shot hash.
        let mut h = Algo::Blake3.hasher(Domain::Block);
        h.update(b"the same ");
        h.update(b"bytes");
        assert_eq!(h.finish(), block);
        assert_eq!(Hash::from_field(&block.to_field(), 32).unwrap(), block);
        let old = Hash::of(bytes);
        assert_eq!(Hash::from_field(&old.to_field(), 16).unwrap(), old);
        assert!(Hash::from_field(&old.to_field(), 20).is_none());
        // Different widths never compare equal, even with equal prefixes.
        assert_ne!(Hash::from_bytes(&block.as_bytes()[..16]).unwrap(), block);
    }

    #[test]
    fn hash_of_hashes_depends_on_order() {
        for algo in [Algo::Xxh3, Algo::Blake3] {
            let a = algo.block(b"a");
            let b = algo.block(b"b");
            assert_ne!(algo.list([&a, &b]), algo.list([&b, &a]));
        }
        let (a, b) = (Hash::of(b"a"), Hash::of(b"b"));
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(&a.to_le_bytes());
        h.update(&b.to_le_bytes());
        assert_eq!(Hash::of_hashes([&a, &b]), Hash::from_u128(h.digest128()));
    }

    #[test]
    fn algo_names_parse_and_list_valid_values() {
        assert_eq!("blake3".parse::<Algo>().unwrap(), Algo::Blake3);
        assert_eq!("xxh3-128".parse::<Algo>().unwrap(), Algo::Xxh3);
        let e = "sha1".parse::<Algo>().unwrap_err();
        assert!(e.contains("valid values are: blake3, xxh3-128"), "{e}");
    }
}
