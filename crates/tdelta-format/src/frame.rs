//! The framed envelope of the store's small binary files (config,
//! manifests): `FORMAT.md`, "Framed files".
//!
//! magic (8) | version u32 | flags u32 | body length u64 | body | xxh3-64
//! of everything before it.

use crate::error::{Check, FileKind, FormatError, Result, le_u32, le_u64};

/// Size of the header: magic (8), version (4), flags (4), body length (8).
pub const FRAME_HEADER: usize = 24;

/// Wraps `body` in the framed envelope.
pub fn frame(magic: &[u8; 8], version: u32, flags: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FRAME_HEADER + body.len() + 8);
    out.extend_from_slice(magic);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(body);
    let sum = xxhash_rust::xxh3::xxh3_64(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

/// A checked framed file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framed<'a> {
    /// The format version (1 ..= the `max_version` asked for).
    pub version: u32,
    /// The flags.
    pub flags: u32,
    /// The body.
    pub body: &'a [u8],
}

/// Checks and unwraps a framed file of kind `file`; versions above
/// `max_version` are refused as unsupported, version 0 as damage.
pub fn unframe<'a>(file: FileKind, bytes: &'a [u8], magic: &[u8; 8], max_version: u32) -> Result<Framed<'a>> {
    let bad = |check, reason: String| Err(FormatError::corrupt(file, check, reason));
    if bytes.len() < FRAME_HEADER + 8 {
        return bad(Check::Truncated, format!("truncated {file}: {} bytes", bytes.len()));
    }
    if &bytes[..8] != magic {
        return bad(Check::Magic, format!("not a tdelta {file} (bad magic)"));
    }
    let version = le_u32(bytes, 8);
    if version == 0 {
        return bad(Check::Version, format!("{file} has format version 0"));
    }
    if version > max_version {
        return Err(FormatError::UnsupportedVersion { file, found: version, supported: max_version });
    }
    let flags = le_u32(bytes, 12);
    let len = le_u64(bytes, 16);
    let expected = (FRAME_HEADER as u64).checked_add(len).and_then(|n| n.checked_add(8));
    if expected != Some(bytes.len() as u64) {
        return bad(
            Check::Truncated,
            format!("{file} length mismatch: header says {len} body bytes, file has {}", bytes.len()),
        );
    }
    let end = FRAME_HEADER + len as usize;
    let stored = le_u64(bytes, end);
    let actual = xxhash_rust::xxh3::xxh3_64(&bytes[..end]);
    if stored != actual {
        return bad(
            Check::Checksum,
            format!("{file} checksum mismatch (stored {stored:016x}, computed {actual:016x})"),
        );
    }
    Ok(Framed { version, flags, body: &bytes[FRAME_HEADER..end] })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trip_and_detects_damage() {
        let k = FileKind::Config;
        let f = frame(b"TDTEST\0\0", 1, 7, b"hello");
        let u = unframe(k, &f, b"TDTEST\0\0", 1).unwrap();
        assert_eq!((u.version, u.flags, u.body), (1, 7, &b"hello"[..]));

        let mut flipped = f.clone();
        flipped[26] ^= 1;
        let e = unframe(k, &flipped, b"TDTEST\0\0", 1).unwrap_err();
        assert_eq!(e.check(), Some(Check::Checksum));
        assert!(e.to_string().contains("store config checksum mismatch"), "{e}");

        let e = unframe(k, &f[..f.len() - 1], b"TDTEST\0\0", 1).unwrap_err();
        assert!(e.to_string().contains("length mismatch"), "{e}");
        assert_eq!(e.check(), Some(Check::Truncated));

        let e = unframe(k, &f, b"TDOTHER\0", 1).unwrap_err();
        assert!(e.to_string().contains("bad magic"), "{e}");

        let newer = frame(b"TDTEST\0\0", 2, 0, b"x");
        let e = unframe(k, &newer, b"TDTEST\0\0", 1).unwrap_err();
        assert_eq!(e, FormatError::UnsupportedVersion { file: k, found: 2, supported: 1 });
        assert!(e.to_string().contains("format version 2 is not supported"), "{e}");
    }
}
