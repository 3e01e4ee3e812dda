//! Signature files and key files over bytes: `FORMAT.md`, "Signatures".
//! Checking an ed25519 signature is the engine's; this module says what
//! the bytes hold and which message was signed.

use serde::{Deserialize, Serialize};

use crate::Hash;
use crate::audit::{AuditEntry, entry_hash};
use crate::error::{FileKind, FormatError, Result};

/// The `format` member of every signature file.
pub const SIG_FORMAT: &str = "tdelta-signature 1";
/// Signature files are small; anything larger is not one.
pub const MAX_SIG_FILE: u64 = 64 << 10;
/// First line of a secret key file.
pub const SECRET_HEADER: &str = "tdelta-secret-key 1";
/// Start of the first line of a public key file.
pub const PUBLIC_PREFIX: &str = "tdelta-public-key 1 ";
/// Key files are small; anything larger is not one.
pub const MAX_KEY_FILE: u64 = 4 << 10;

/// A signature file as stored: JSON with the signer's key, the signature
/// and exactly one thing signed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignatureFile {
    /// Always [`SIG_FORMAT`].
    pub format: String,
    /// The signer's public key, 64 hex digits.
    pub key: String,
    /// The ed25519 signature, 128 hex digits.
    pub sig: String,
    /// The version signed (version signatures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<Hash>,
    /// The audit entry signed (move signatures), without its hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#move: Option<AuditEntry>,
}

fn bad(why: impl std::fmt::Display) -> FormatError {
    FormatError::invalid(FileKind::Signature, format!("bad signature file: {why}"))
}

impl SignatureFile {
    /// The JSON bytes of the file.
    pub fn encode(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self).map_err(|e| FormatError::Encode { file: FileKind::Signature, reason: e.to_string() })
    }

    /// Parses a signature file and checks its shape: the format, the
    /// lengths of key and signature, one thing signed.
    pub fn decode(bytes: &[u8]) -> Result<SignatureFile> {
        if bytes.len() as u64 > MAX_SIG_FILE {
            return Err(bad(format!("{} bytes, more than the {MAX_SIG_FILE} allowed", bytes.len())));
        }
        let file: SignatureFile = serde_json::from_slice(bytes).map_err(|e| bad(format!("not valid: {e}")))?;
        if file.format != SIG_FORMAT {
            return Err(bad(format!("format `{}`, expected `{SIG_FORMAT}`", file.format)));
        }
        if file.key_bytes().is_none() {
            return Err(bad("the key is not an ed25519 public key"));
        }
        if file.sig_bytes().is_none() {
            return Err(bad("malformed signature"));
        }
        if file.version.is_some() == file.r#move.is_some() {
            return Err(bad("it must sign exactly one version or one move"));
        }
        Ok(file)
    }

    /// The key's 32 bytes (`None` unless it is 64 hex digits).
    pub fn key_bytes(&self) -> Option<[u8; 32]> {
        unhex(&self.key)
    }

    /// The signature's 64 bytes (`None` unless it is 128 hex digits).
    pub fn sig_bytes(&self) -> Option<[u8; 64]> {
        unhex(&self.sig)
    }

    /// The name the file must have: the version id, or the seal of the
    /// move's audit entry.
    pub fn name(&self) -> Result<Hash> {
        match (&self.version, &self.r#move) {
            (Some(id), None) => Ok(*id),
            (None, Some(e)) => entry_hash(e),
            _ => Err(bad("it must sign exactly one version or one move")),
        }
    }

    /// The message the signature signs.
    pub fn message(&self) -> Result<Vec<u8>> {
        match (&self.version, &self.r#move) {
            (Some(id), None) => Ok(version_message(*id)),
            (None, Some(e)) => Ok(move_message(e)),
            _ => Err(bad("it must sign exactly one version or one move")),
        }
    }
}

/// The signed message of a version: domain, then its id.
pub fn version_message(id: Hash) -> Vec<u8> {
    format!("tdelta-signed-version 1\n{id}\n").into_bytes()
}

/// The signed message of a ref move: domain, then every field of its
/// audit entry, one per line; strings as JSON strings.
pub fn move_message(e: &AuditEntry) -> Vec<u8> {
    let s = |x: &str| serde_json::to_string(x).unwrap_or_default();
    let h = |x: Option<Hash>| x.map_or_else(|| "none".to_string(), Hash::to_hex);
    format!(
        "tdelta-signed-move 1\nseq {}\nprev {}\ntime {}\nwho {}\nop {}\nref {}\nold {}\nnew {}\nwhy {}\n",
        e.seq,
        e.prev,
        e.time,
        s(&e.who),
        s(e.op.as_str()),
        e.r#ref.as_deref().map_or_else(|| "none".to_string(), s),
        h(e.old),
        h(e.new),
        s(&e.why)
    )
    .into_bytes()
}

/// Decodes lowercase or uppercase hex into exactly `N` bytes.
pub fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let s = s.as_bytes();
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16);
        out[i] = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
    }
    Some(out)
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn key_error(what: &str, why: impl std::fmt::Display) -> FormatError {
    FormatError::invalid(FileKind::Key, format!("not a tdelta {what} key file: {why}"))
}

/// The text of a public key file: the key, then the comment as a `# …`
/// line when there is one.
pub fn encode_public_key(key: &[u8; 32], comment: &str) -> String {
    let mut s = format!("{PUBLIC_PREFIX}{}\n", hex(key));
    if !comment.is_empty() {
        s.push_str(&format!("# {}\n", comment.replace('\n', " ")));
    }
    s
}

/// A public key file: the key's 32 bytes (not yet checked to be a point
/// of the curve) and the comment (`# …` lines, joined by spaces).
pub fn decode_public_key(bytes: &[u8]) -> Result<([u8; 32], String)> {
    let bad = |why: &str| Err(key_error("public", why));
    if bytes.len() as u64 > MAX_KEY_FILE {
        return bad(&format!("{} bytes, more than the {MAX_KEY_FILE} allowed", bytes.len()));
    }
    let Ok(text) = std::str::from_utf8(bytes) else {
        return bad("not UTF-8");
    };
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default();
    if first.starts_with(SECRET_HEADER) {
        return bad("this is a secret key; trust its `.pub` file instead");
    }
    let Some(key_hex) = first.strip_prefix(PUBLIC_PREFIX) else {
        return bad(&format!("the first line must start with `{PUBLIC_PREFIX}`"));
    };
    let Some(raw) = unhex::<32>(key_hex.trim()) else {
        return bad("the key is not 64 hex digits");
    };
    let comment: Vec<&str> = lines.filter_map(|l| l.strip_prefix('#')).map(str::trim).collect();
    Ok((raw, comment.join(" ")))
}

/// The text of a secret key file holding the ed25519 `seed`, with a
/// `# comment` line when `comment` is not empty.
pub fn encode_secret_key(seed: &[u8; 32], comment: &str) -> String {
    let comment = if comment.is_empty() { String::new() } else { format!("# {}\n", comment.replace('\n', " ")) };
    format!("{SECRET_HEADER}\n{comment}{}\n", hex(seed))
}

/// The 32-byte ed25519 seed of a secret key file (`#` lines are
/// comments). Errors never quote the content.
pub fn decode_secret_key(bytes: &[u8]) -> Result<[u8; 32]> {
    let bad = |why: &str| Err(key_error("secret", why));
    if bytes.len() as u64 > MAX_KEY_FILE {
        return bad(&format!("{} bytes, more than the {MAX_KEY_FILE} allowed", bytes.len()));
    }
    let Ok(text) = std::str::from_utf8(bytes) else {
        return bad("not UTF-8");
    };
    let mut lines = text.lines().filter(|l| !l.starts_with('#'));
    if lines.next() != Some(SECRET_HEADER) {
        return bad(&format!("the first line must be `{SECRET_HEADER}`"));
    }
    match lines.next().and_then(|l| unhex::<32>(l.trim())) {
        Some(seed) => Ok(seed),
        None => bad("no 64-hex-digit key line"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> SignatureFile {
        SignatureFile {
            format: SIG_FORMAT.into(),
            key: hex(&[7; 32]),
            sig: hex(&[9; 64]),
            version: Some(Hash::of(b"v")),
            r#move: None,
        }
    }

    #[test]
    fn signature_files_round_trip_and_their_shape_is_checked() {
        let f = file();
        assert_eq!(SignatureFile::decode(&f.encode().unwrap()).unwrap(), f);
        assert_eq!(f.name().unwrap(), Hash::of(b"v"));
        assert_eq!(f.message().unwrap(), format!("tdelta-signed-version 1\n{}\n", Hash::of(b"v")).into_bytes());
        for (g, why) in [
            (SignatureFile { format: "x".into(), ..file() }, "format `x`"),
            (SignatureFile { key: "ab".into(), ..file() }, "not an ed25519 public key"),
            (SignatureFile { sig: "ab".into(), ..file() }, "malformed signature"),
            (SignatureFile { version: None, ..file() }, "exactly one version or one move"),
        ] {
            let e = SignatureFile::decode(&g.encode().unwrap()).unwrap_err();
            assert_eq!(e.file(), FileKind::Signature);
            assert!(e.to_string().contains(why), "{e}");
        }
    }

    #[test]
    fn key_files_round_trip() {
        let text = encode_public_key(&[3; 32], "alice\nat work");
        assert_eq!(decode_public_key(text.as_bytes()).unwrap(), ([3; 32], "alice at work".to_string()));
        let secret = encode_secret_key(&[5; 32], "keep private");
        assert_eq!(decode_secret_key(format!("# mine\n{secret}").as_bytes()).unwrap(), [5; 32]);
        let e = decode_public_key(secret.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("this is a secret key"), "{e}");
        let e = decode_secret_key(text.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("not a tdelta secret key file"), "{e}");
    }
}
