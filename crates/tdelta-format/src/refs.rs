//! Ref and `HEAD` files over bytes: `FORMAT.md`, "Refs".
//!
//! `tdelta-ref 1 <id> <xxh3-64 of what precedes the space, 16 hex>\n`

use crate::Hash;
use crate::error::{Check, FileKind, FormatError, Result};

const REF_PREFIX: &str = "tdelta-ref 1 ";
/// Ref files larger than this are corrupt by definition.
pub const MAX_REF_FILE: u64 = 256;

/// The bytes of a ref file pointing at `id`.
pub fn encode_ref(id: Hash) -> String {
    let line = format!("{REF_PREFIX}{id}");
    let sum = xxhash_rust::xxh3::xxh3_64(line.as_bytes());
    format!("{line} {sum:016x}\n")
}

/// The version a ref file points at.
pub fn decode_ref(bytes: &[u8]) -> Result<Hash> {
    let bad = |check, reason: &str| Err(FormatError::corrupt(FileKind::Ref, check, reason));
    if bytes.len() as u64 > MAX_REF_FILE {
        return Err(FormatError::invalid(
            FileKind::Ref,
            format!("ref is {} bytes, more than the {MAX_REF_FILE} allowed", bytes.len()),
        ));
    }
    let Ok(text) = std::str::from_utf8(bytes) else {
        return bad(Check::Invalid, "ref is not UTF-8");
    };
    let Some(rest) = text.strip_suffix('\n') else {
        return bad(Check::Truncated, "ref is truncated (no final newline)");
    };
    let Some((line, sum)) = rest.rsplit_once(' ') else {
        return bad(Check::Truncated, "ref has no checksum");
    };
    let Some(id) = line.strip_prefix(REF_PREFIX) else {
        return bad(Check::Magic, "not a tdelta ref (bad prefix)");
    };
    if format!("{:016x}", xxhash_rust::xxh3::xxh3_64(line.as_bytes())) != sum {
        return bad(Check::Checksum, "ref checksum mismatch");
    }
    id.parse().map_err(|e| FormatError::invalid(FileKind::Ref, format!("ref holds no version id: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ref_round_trip_and_corruption() {
        for id in [Hash::of(b"v"), crate::Algo::Blake3.hash(crate::Domain::Version, b"v")] {
            assert_eq!(decode_ref(encode_ref(id).as_bytes()).unwrap(), id);
            let mut s = encode_ref(id).into_bytes();
            s[20] = if s[20] == b'0' { b'1' } else { b'0' };
            assert_eq!(decode_ref(&s).unwrap_err().check(), Some(Check::Checksum));
            let e = decode_ref(&encode_ref(id).as_bytes()[..30]).unwrap_err();
            assert_eq!(e.check(), Some(Check::Truncated));
        }
        assert!(decode_ref(&[b'x'; 300]).unwrap_err().to_string().contains("more than the 256 allowed"));
        assert!(decode_ref(b"tdelta-ref 2 x 0\n").unwrap_err().to_string().contains("bad prefix"));
    }
}
