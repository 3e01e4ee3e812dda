//! Key files (FORMAT.md §16): a secret ed25519 seed in a text file of
//! mode 0600, its public key file, and fingerprints.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::error::IoContext;
use crate::store::fsutil;
use crate::{Error, Result};

pub(crate) use tdelta_format::signature::MAX_KEY_FILE;
use tdelta_format::signature::{decode_public_key, decode_secret_key, encode_public_key, encode_secret_key, hex};

/// A public key and the comment of its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub(super) key: VerifyingKey,
    /// Free text from the key file (`# ...` lines), e.g. who owns it.
    pub comment: String,
}

impl PublicKey {
    /// The key's fingerprint: the first 16 hex digits of the SHA-256 of
    /// its 32 bytes. Shown to people; trust compares whole keys.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.key)
    }

    /// Reads a public key file (FORMAT.md §16).
    pub fn from_file(path: &Path) -> Result<PublicKey> {
        PublicKey::parse(path, &fsutil::read_capped(path, MAX_KEY_FILE)?)
    }

    /// Parses the bytes of a public key file read from `path`.
    pub(crate) fn parse(path: &Path, bytes: &[u8]) -> Result<PublicKey> {
        let bad = |why: String| Error::InvalidArgument(format!("{}: {why}", path.display()));
        let (raw, comment) = decode_public_key(bytes).map_err(|e| bad(e.to_string()))?;
        let key = VerifyingKey::from_bytes(&raw)
            .map_err(|_| bad("not a tdelta public key file: not a valid ed25519 public key".into()))?;
        Ok(PublicKey { key, comment })
    }

    /// The text of its public key file.
    pub(super) fn encode(&self) -> String {
        encode_public_key(self.key.as_bytes(), &self.comment)
    }
}

pub(super) fn fingerprint(key: &VerifyingKey) -> String {
    hex(&Sha256::digest(key.as_bytes())[..8])
}

/// A secret signing key. Never printed: its `Debug` shows the fingerprint.
pub struct Signer {
    key: SigningKey,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signer({})", fingerprint(&self.key.verifying_key()))
    }
}

impl Signer {
    /// A new key from the operating system's random source.
    pub fn generate() -> Result<Signer> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| Error::Internal(format!("cannot get random bytes for a key: {e}")))?;
        Ok(Signer { key: SigningKey::from_bytes(&seed) })
    }

    /// Reads a secret key file (FORMAT.md §16). Errors name the file,
    /// never its content.
    pub fn from_file(path: &Path) -> Result<Signer> {
        Signer::parse(path, &fsutil::read_capped(path, MAX_KEY_FILE)?)
    }

    /// Parses the bytes of a secret key file read from `path`.
    pub(crate) fn parse(path: &Path, bytes: &[u8]) -> Result<Signer> {
        let seed = decode_secret_key(bytes).map_err(|e| Error::InvalidArgument(format!("{}: {e}", path.display())))?;
        Ok(Signer { key: SigningKey::from_bytes(&seed) })
    }

    /// Its public key.
    pub fn public_key(&self, comment: &str) -> PublicKey {
        PublicKey { key: self.key.verifying_key(), comment: comment.to_string() }
    }

    /// Writes the secret key to `path` (mode 0600 on Unix) and the public
    /// key to `path.pub`; refuses to replace either. Returns the `.pub` path.
    pub fn write_new(&self, path: &Path, comment: &str) -> Result<PathBuf> {
        let mut pub_path = path.as_os_str().to_owned();
        pub_path.push(".pub");
        let pub_path = PathBuf::from(pub_path);
        for p in [path, pub_path.as_path()] {
            if p.symlink_metadata().is_ok() {
                return Err(Error::AlreadyExists { what: format!("key file {}", p.display()) });
            }
        }
        let fp = fingerprint(&self.key.verifying_key());
        let secret = encode_secret_key(
            self.key.as_bytes(),
            &format!("ed25519 secret key {fp}: keep private; its public key is in the .pub file"),
        );
        create_new_file(path, secret.as_bytes(), 0o600)?;
        create_new_file(&pub_path, self.public_key(comment).encode().as_bytes(), 0o644)?;
        Ok(pub_path)
    }

    /// The signer's public key and the signature of `message`, in hex.
    pub(super) fn sign(&self, message: &[u8]) -> (String, String) {
        (hex(self.key.verifying_key().as_bytes()), hex(&self.key.sign(message).to_bytes()))
    }
}

/// Writes a file that must not exist yet: a temp file beside it (with
/// `mode`), fsync, then a hard link to the name, which fails rather than
/// replace anything.
fn create_new_file(dest: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = dest.file_name().map_or_else(|| "key".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let written = (|| {
        let mut f = opts.open(&tmp).at(&tmp)?;
        f.write_all(bytes).at(&tmp)?;
        f.sync_all().at(&tmp)?;
        fs::hard_link(&tmp, dest).at(dest)?;
        fsutil::sync_dir(&dir)
    })();
    let _ = fs::remove_file(&tmp);
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_round_trip_and_refuse_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let s = Signer::generate().unwrap();
        let pub_path = s.write_new(&path, "ops team").unwrap();
        let back = Signer::from_file(&path).unwrap();
        assert_eq!(back.key.to_bytes(), s.key.to_bytes());
        let p = PublicKey::from_file(&pub_path).unwrap();
        assert_eq!((p.key, p.comment.as_str()), (s.key.verifying_key(), "ops team"));
        let e = s.write_new(&path, "").unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::AlreadyExists, "an existing key file is kept: {e}");
        assert!(e.to_string().contains("already exists"), "{e}");
        assert!(PublicKey::from_file(&path).unwrap_err().to_string().contains("secret key"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert!(!format!("{s:?}").contains(&hex(s.key.as_bytes())));
    }
}
