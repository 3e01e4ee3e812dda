//! Content hashes: xxh3-128 of raw bytes, printed as 32 hex digits.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An xxh3-128 content hash.
///
/// Blocks are named by the hash of their raw (decoded) bytes; files and
/// tensors by the hash of their block hashes (see `FORMAT.md`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash(pub u128);

impl Hash {
    /// The hash of `bytes`.
    pub fn of(bytes: &[u8]) -> Hash {
        Hash(xxhash_rust::xxh3::xxh3_128(bytes))
    }

    /// The hash of a sequence of hashes: xxh3-128 over their little-endian
    /// 16-byte encodings, in order.
    pub fn of_hashes<'a>(hashes: impl IntoIterator<Item = &'a Hash>) -> Hash {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for x in hashes {
            h.update(&x.0.to_le_bytes());
        }
        Hash(h.digest128())
    }

    /// Little-endian bytes, as stored in binary files.
    pub fn to_le_bytes(self) -> [u8; 16] {
        self.0.to_le_bytes()
    }

    /// From little-endian bytes.
    pub fn from_le_bytes(b: [u8; 16]) -> Hash {
        Hash(u128::from_le_bytes(b))
    }

    /// The 32-digit lowercase hex form.
    pub fn to_hex(self) -> String {
        format!("{:032x}", self.0)
    }

    /// The first 12 hex digits, for display.
    pub fn short(self) -> String {
        self.to_hex()[..12].to_string()
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({:032x})", self.0)
    }
}

impl FromStr for Hash {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("`{s}` is not a 32-digit hex hash"));
        }
        u128::from_str_radix(s, 16).map(Hash).map_err(|e| format!("`{s}`: {e}"))
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
        let h = Hash::of(b"tdelta");
        assert_eq!(h.to_hex().parse::<Hash>().unwrap(), h);
        assert_eq!(Hash::from_le_bytes(h.to_le_bytes()), h);
        assert!("xyz".parse::<Hash>().is_err());
        assert!("0".repeat(31).parse::<Hash>().is_err());
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(serde_json::from_str::<Hash>(&json).unwrap(), h);
    }

    #[test]
    fn hash_of_hashes_depends_on_order() {
        let a = Hash::of(b"a");
        let b = Hash::of(b"b");
        assert_ne!(Hash::of_hashes([&a, &b]), Hash::of_hashes([&b, &a]));
    }
}
