//! Signed releases (FORMAT.md §16): ed25519 signatures over versions and
//! ref moves, the store's list of trusted public keys, and their check.
//!
//! A version signature signs the version id (its manifest's content
//! hash); a move signature signs every field of the audit entry that
//! records the move, its position and previous hash included. Both are
//! written before the ref moves. Signatures live beside the log, never in
//! it: old readers keep reading the log and manifests unchanged.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::refs::{AuditEntry, entry_hash, parse_sealed};
use super::{Store, fsutil, integrity::PENDING_FILE};
use crate::error::IoContext;
use crate::hash::Hash;
use crate::{Error, Result};

const SECRET_HEADER: &str = "tdelta-secret-key 1";
const PUBLIC_PREFIX: &str = "tdelta-public-key 1 ";
const SIG_FORMAT: &str = "tdelta-signature 1";
/// Key and signature files are small; anything larger is not one.
const MAX_KEY_FILE: u64 = 4 << 10;
const MAX_SIG_FILE: u64 = 64 << 10;
/// Reads of the log around the signatures before giving up on a quiet
/// moment (writers append while `verify` reads).
const READ_ATTEMPTS: usize = 20;

/// Decodes lowercase or uppercase hex into exactly `N` bytes.
fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A public key and the comment of its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
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
        let bytes = fsutil::read_capped(path, MAX_KEY_FILE)?;
        let bad =
            |why: &str| Error::InvalidArgument(format!("{}: not a tdelta public key file: {why}", path.display()));
        let text = std::str::from_utf8(&bytes).map_err(|_| bad("not UTF-8"))?;
        let mut lines = text.lines();
        let first = lines.next().unwrap_or_default();
        if first.starts_with(SECRET_HEADER) {
            return Err(bad("this is a secret key; trust its `.pub` file instead"));
        }
        let Some(key_hex) = first.strip_prefix(PUBLIC_PREFIX) else {
            return Err(bad(&format!("the first line must start with `{PUBLIC_PREFIX}`")));
        };
        let raw = unhex::<32>(key_hex.trim()).ok_or_else(|| bad("the key is not 64 hex digits"))?;
        let key = VerifyingKey::from_bytes(&raw).map_err(|_| bad("not a valid ed25519 public key"))?;
        let comment: Vec<&str> = lines.filter_map(|l| l.strip_prefix('#')).map(str::trim).collect();
        Ok(PublicKey { key, comment: comment.join(" ") })
    }

    /// The text of its public key file.
    fn encode(&self) -> String {
        let mut s = format!("{PUBLIC_PREFIX}{}\n", hex(self.key.as_bytes()));
        if !self.comment.is_empty() {
            s.push_str(&format!("# {}\n", self.comment.replace('\n', " ")));
        }
        s
    }
}

fn fingerprint(key: &VerifyingKey) -> String {
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
        getrandom::fill(&mut seed)
            .map_err(|e| Error::InvalidArgument(format!("cannot get random bytes for a key: {e}")))?;
        Ok(Signer { key: SigningKey::from_bytes(&seed) })
    }

    /// Reads a secret key file (FORMAT.md §16). Errors name the file,
    /// never its content.
    pub fn from_file(path: &Path) -> Result<Signer> {
        let bytes = fsutil::read_capped(path, MAX_KEY_FILE)?;
        let bad =
            |why: &str| Error::InvalidArgument(format!("{}: not a tdelta secret key file: {why}", path.display()));
        let text = std::str::from_utf8(&bytes).map_err(|_| bad("not UTF-8"))?;
        let mut lines = text.lines().filter(|l| !l.starts_with('#'));
        if lines.next() != Some(SECRET_HEADER) {
            return Err(bad(&format!("the first line must be `{SECRET_HEADER}`")));
        }
        let seed = lines.next().and_then(|l| unhex::<32>(l.trim())).ok_or_else(|| bad("no 64-hex-digit key line"))?;
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
                return Err(Error::InvalidArgument(format!(
                    "{} exists; refusing to replace it (choose another name)",
                    p.display()
                )));
            }
        }
        let fp = fingerprint(&self.key.verifying_key());
        let secret = format!(
            "{SECRET_HEADER}\n# ed25519 secret key {fp}: keep private; its public key is in the .pub file\n{}\n",
            hex(self.key.as_bytes())
        );
        create_new_file(path, secret.as_bytes(), 0o600)?;
        create_new_file(&pub_path, self.public_key(comment).encode().as_bytes(), 0o644)?;
        Ok(pub_path)
    }

    fn sign(&self, message: &[u8]) -> SigFile {
        SigFile {
            format: SIG_FORMAT.into(),
            key: hex(self.key.verifying_key().as_bytes()),
            sig: hex(&self.key.sign(message).to_bytes()),
            version: None,
            r#move: None,
        }
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

/// A signature file as stored (FORMAT.md §16).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SigFile {
    format: String,
    /// The signer's public key, 64 hex digits.
    key: String,
    /// The ed25519 signature, 128 hex digits.
    sig: String,
    /// The version signed (version signatures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<Hash>,
    /// The audit entry signed (move signatures), without its hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    r#move: Option<AuditEntry>,
}

/// The signed message of a version: domain, then its id.
fn version_message(id: Hash) -> Vec<u8> {
    format!("tdelta-signed-version 1\n{id}\n").into_bytes()
}

/// The signed message of a ref move: domain, then every field of its
/// audit entry, one per line; strings as JSON strings.
fn move_message(e: &AuditEntry) -> Vec<u8> {
    let s = |x: &str| serde_json::to_string(x).unwrap_or_default();
    let h = |x: Option<Hash>| x.map_or_else(|| "none".to_string(), Hash::to_hex);
    format!(
        "tdelta-signed-move 1\nseq {}\nprev {}\ntime {}\nwho {}\nop {}\nref {}\nold {}\nnew {}\nwhy {}\n",
        e.seq,
        e.prev,
        e.time,
        s(&e.who),
        s(&e.op),
        e.r#ref.as_deref().map_or_else(|| "none".to_string(), s),
        h(e.old),
        h(e.new),
        s(&e.why)
    )
    .into_bytes()
}

/// Who signed a version or a move, as `show` and `history` say it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SignedBy {
    /// The signer's fingerprint.
    pub fingerprint: String,
    /// Whether the store trusts that key (`keys/trusted/`).
    pub trusted: bool,
}

/// A signature file that checked out.
#[derive(Debug, Clone)]
struct Checked {
    path: PathBuf,
    key: VerifyingKey,
    file: SigFile,
}

fn sig_dir(store: &Store, kind: &str) -> PathBuf {
    store.root.join("signatures").join(kind)
}

fn trusted_dir(store: &Store) -> PathBuf {
    store.root.join("keys").join("trusted")
}

/// Reads `path` and checks its signature; `name` is the hash its file
/// name must match (the version id, or the audit entry's hash).
fn check_file(path: &Path, name: Hash) -> Result<Checked> {
    let bytes = fsutil::read_capped(path, MAX_SIG_FILE)?;
    let bad = |why: &str| Error::corrupt(path, format!("bad signature file: {why}"));
    let file: SigFile = serde_json::from_slice(&bytes).map_err(|e| bad(&format!("not valid: {e}")))?;
    if file.format != SIG_FORMAT {
        return Err(bad(&format!("format `{}`, expected `{SIG_FORMAT}`", file.format)));
    }
    let key = unhex::<32>(&file.key)
        .and_then(|k| VerifyingKey::from_bytes(&k).ok())
        .ok_or_else(|| bad("the key is not an ed25519 public key"))?;
    let sig = unhex::<64>(&file.sig).map(|s| Signature::from_bytes(&s)).ok_or_else(|| bad("malformed signature"))?;
    let message = match (&file.version, &file.r#move) {
        (Some(id), None) if *id == name => version_message(*id),
        (None, Some(e)) if entry_hash(e)? == name => move_message(e),
        (Some(_), None) | (None, Some(_)) => return Err(bad("it signs something else than its file name says")),
        _ => return Err(bad("it must sign exactly one version or one move")),
    };
    key.verify_strict(&message, &sig).map_err(|_| bad("the signature does not verify (the file was altered)"))?;
    Ok(Checked { path: path.to_path_buf(), key, file })
}

fn sig_path(store: &Store, kind: &str, name: Hash) -> PathBuf {
    sig_dir(store, kind).join(format!("{name}.sig"))
}

/// Every `<32 hex>.sig` in a signature folder (none when it is missing).
fn list_sigs(dir: &Path) -> Result<Vec<(Hash, PathBuf)>> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io(dir, e)),
    };
    for ent in entries {
        let ent = ent.at(dir)?;
        let name = ent.file_name();
        if let Some(h) = name.to_str().and_then(|n| n.strip_suffix(".sig")).and_then(|s| s.parse().ok()) {
            out.push((h, ent.path()));
        }
    }
    out.sort();
    Ok(out)
}

fn write_sig(store: &Store, kind: &str, name: Hash, file: &SigFile) -> Result<()> {
    let dir = sig_dir(store, kind);
    fs::create_dir_all(&dir).at(&dir)?;
    let bytes =
        serde_json::to_vec(file).map_err(|e| Error::InvalidArgument(format!("cannot encode signature: {e}")))?;
    fsutil::write_atomic(&store.tmp_dir(), &dir.join(format!("{name}.sig")), &bytes)
}

/// Signs version `id` unless it already has a signature (a version keeps
/// its first one). Caller holds the lock.
pub(crate) fn sign_version(store: &Store, signer: &Signer, id: Hash) -> Result<()> {
    if sig_path(store, "versions", id).exists() {
        return Ok(());
    }
    let mut file = signer.sign(&version_message(id));
    file.version = Some(id);
    write_sig(store, "versions", id, &file)
}

/// Signs the move that `entry` (sealed: `seq` and `prev` filled) will
/// record. Caller holds the lock; the ref has not moved yet.
pub(crate) fn sign_move(store: &Store, signer: &Signer, entry: &AuditEntry) -> Result<()> {
    let mut file = signer.sign(&move_message(entry));
    file.r#move = Some(entry.clone());
    write_sig(store, "moves", entry_hash(entry)?, &file)
}

/// Removes the signature of a move that did not happen (its writer
/// failed or was killed before the ref moved).
pub(crate) fn remove_move_signature(store: &Store, entry: Hash) {
    let path = sig_path(store, "moves", entry);
    if fs::remove_file(&path).is_ok()
        && let Some(dir) = path.parent()
    {
        let _ = fsutil::sync_dir(dir);
    }
}

/// Adds the public key in `path` to the store's trusted keys. Returns
/// the key; trusting a key twice changes nothing.
pub fn trust_key(store: &Store, path: &Path) -> Result<PublicKey> {
    let key = PublicKey::from_file(path)?;
    let _lock = store.lock()?;
    let dir = trusted_dir(store);
    fs::create_dir_all(&dir).at(&dir)?;
    let dest = dir.join(format!("{}.pub", key.fingerprint()));
    match PublicKey::from_file(&dest) {
        Ok(k) if k.key == key.key => return Ok(k),
        Ok(_) => {
            return Err(Error::InvalidArgument(format!(
                "{}: another key with the same fingerprint is trusted; refusing to replace it",
                dest.display()
            )));
        }
        Err(_) if dest.symlink_metadata().is_ok() => {
            return Err(Error::corrupt(&dest, "unreadable trusted key file; move it out of the store first"));
        }
        Err(_) => {}
    }
    fsutil::write_atomic(&store.tmp_dir(), &dest, key.encode().as_bytes())?;
    Ok(key)
}

/// The store's trusted keys, and one message per file in `keys/trusted/`
/// that is not a valid public key.
pub fn trusted_keys(store: &Store) -> Result<(Vec<PublicKey>, Vec<String>)> {
    let dir = trusted_dir(store);
    let (mut keys, mut bad) = (Vec::new(), Vec::new());
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((keys, bad)),
        Err(e) => return Err(Error::io(&dir, e)),
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths.into_iter().filter(|p| p.extension().is_some_and(|e| e == "pub")) {
        match PublicKey::from_file(&p) {
            Ok(k) => keys.push(k),
            Err(e) => bad.push(e.to_string()),
        }
    }
    Ok((keys, bad))
}

/// A version or a ref move that `verify --require-signed` rejects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unsigned {
    /// `version` or `move`.
    pub kind: String,
    /// The version (versions; for moves, where the ref went).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<Hash>,
    /// The audit entry's position (moves).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The refs pointing at the version, or the ref moved.
    pub refs: Vec<String>,
    /// Who signed it, if anyone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<SignedBy>,
    /// What is wrong.
    pub problem: String,
}

impl fmt::Display for Unsigned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.kind[..], self.seq, self.id) {
            ("move", Some(seq), _) => write!(f, "move {seq} of `{}`: {}", self.refs.join(", "), self.problem),
            (_, _, Some(id)) => write!(f, "version {} ({}): {}", id.short(), self.refs.join(", "), self.problem),
            _ => write!(f, "{}", self.problem),
        }
    }
}

/// What [`verify_signatures`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SignatureReport {
    /// Signature files that verified.
    pub valid: usize,
    /// Trusted keys.
    pub trusted_keys: Vec<String>,
    /// Damage whatever the flags: signature files that do not verify or
    /// do not match their name, unreadable trusted keys.
    pub damaged: Vec<String>,
    /// Versions a ref points to, and ref moves in the audit log, that are
    /// unsigned, signed by an untrusted key, changed after they were
    /// signed, or signed moves missing from the log (damage under
    /// `--require-signed`).
    pub unsigned: Vec<Unsigned>,
    /// Signatures of nothing present: a move under way or that did not
    /// happen, a version dropped (information only).
    pub orphans: Vec<String>,
}

/// Move signatures that verified, by entry hash.
struct MoveSigs {
    by_hash: BTreeMap<Hash, Checked>,
}

impl MoveSigs {
    fn load(store: &Store, damaged: &mut Vec<String>) -> Result<MoveSigs> {
        let mut by_hash = BTreeMap::new();
        for (h, p) in list_sigs(&sig_dir(store, "moves"))? {
            match check_file(&p, h) {
                Ok(c) => {
                    by_hash.insert(h, c);
                }
                Err(e) => damaged.push(e.to_string()),
            }
        }
        Ok(MoveSigs { by_hash })
    }

    /// The signature of `e`: by its hash, or for a `recover` entry, the
    /// signature of the interrupted move it completes (same position,
    /// previous hash, ref, old, new and author).
    fn find(&self, e: &AuditEntry) -> Result<Option<(Hash, &Checked)>> {
        let h = entry_hash(e)?;
        if let Some(c) = self.by_hash.get(&h) {
            return Ok(Some((h, c)));
        }
        if e.op != "recover" {
            return Ok(None);
        }
        Ok(self.by_hash.iter().map(|(h, c)| (*h, c)).find(|(_, c)| {
            c.file.r#move.as_ref().is_some_and(|m| {
                (m.seq, m.prev, &m.r#ref, m.old, m.new, &m.who) == (e.seq, e.prev, &e.r#ref, e.old, e.new, &e.who)
            })
        }))
    }
}

fn signed_by(key: &VerifyingKey, trusted: &[PublicKey]) -> SignedBy {
    SignedBy { fingerprint: fingerprint(key), trusted: trusted.iter().any(|t| t.key == *key) }
}

/// Who signed version `id`: `Ok(None)` when unsigned, an error when its
/// signature file is damaged.
pub fn version_signer(store: &Store, id: Hash) -> Result<Option<SignedBy>> {
    let path = sig_path(store, "versions", id);
    if !path.exists() {
        return Ok(None);
    }
    let (trusted, _) = trusted_keys(store)?;
    Ok(Some(signed_by(&check_file(&path, id)?.key, &trusted)))
}

/// Who signed each of `entries` (audit entries, e.g. from
/// [`crate::history`]); `None` for unsigned ones and ones whose signature
/// file is damaged (`verify` reports those).
pub fn move_signers(store: &Store, entries: &[AuditEntry]) -> Result<Vec<Option<SignedBy>>> {
    let (trusted, _) = trusted_keys(store)?;
    let sigs = MoveSigs::load(store, &mut Vec::new())?;
    entries.iter().map(|e| Ok(sigs.find(e)?.map(|(_, c)| signed_by(&c.key, &trusted)))).collect()
}

/// Checks every signature file, and lists every version a ref or `HEAD`
/// points to and every ref move in the audit log that is not signed by a
/// trusted key (FORMAT.md §16).
pub fn verify_signatures(store: &Store) -> Result<SignatureReport> {
    let mut rep = SignatureReport::default();
    let (trusted, bad_keys) = trusted_keys(store)?;
    rep.damaged.extend(bad_keys);
    rep.trusted_keys = trusted.iter().map(PublicKey::fingerprint).collect();

    // The log, then the signatures, then the pending record, then the log
    // again, until it did not grow meanwhile: a move's signature lands
    // before its entry, and its pending record stays until after it, so
    // a concurrent writer's move is seen signed, or pending.
    let read_log = || store.audit_log().map(|r| r.entries).unwrap_or_default();
    let (entries, moves, pending) = {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let entries = read_log();
            let mut damaged = Vec::new();
            let moves = MoveSigs::load(store, &mut damaged)?;
            let pending = fsutil::read_capped(&store.root.join(PENDING_FILE), MAX_SIG_FILE)
                .ok()
                .and_then(|b| parse_sealed(b.strip_suffix(b"\n")?).ok())
                .map(|(_, h)| h);
            if read_log().len() == entries.len() || attempt == READ_ATTEMPTS {
                rep.damaged.extend(damaged);
                break (entries, moves, pending);
            }
        }
    };
    let mut used: Vec<Hash> = Vec::new();
    for e in entries.iter().filter(|e| e.r#ref.is_some()) {
        let refs = e.r#ref.iter().cloned().collect();
        let unsigned = |signed_by, problem: String| Unsigned {
            kind: "move".into(),
            id: e.new,
            seq: Some(e.seq),
            refs,
            signed_by,
            problem,
        };
        match moves.find(e)? {
            Some((h, c)) => {
                used.push(h);
                let by = signed_by(&c.key, &trusted);
                if !by.trusted {
                    let p = format!("{} of {} signed by untrusted key {}", e.op, short(e.new), by.fingerprint);
                    rep.unsigned.push(unsigned(Some(by), p));
                }
            }
            None => {
                let was = moves.by_hash.iter().find(|(h, c)| {
                    Some(**h) != pending && c.file.r#move.as_ref().is_some_and(|m| (m.seq, m.prev) == (e.seq, e.prev))
                });
                let p = match was {
                    Some((h, c)) => {
                        used.push(*h);
                        format!(
                            "entry {} was changed after {} signed it (the log was rewritten and re-sealed)",
                            e.seq,
                            fingerprint(&c.key)
                        )
                    }
                    None => format!("{} of {} is not signed", e.op, short(e.new)),
                };
                rep.unsigned.push(unsigned(None, p));
            }
        }
    }
    for (h, c) in &moves.by_hash {
        if used.contains(h) {
            continue;
        }
        let Some(m) = &c.file.r#move else { continue };
        let what = format!("{} of `{}` to {}", m.op, m.r#ref.as_deref().unwrap_or("?"), short(m.new));
        if Some(*h) == pending {
            rep.orphans.push(format!("{}: signs the {what} under way (or interrupted)", c.path.display()));
        } else {
            rep.unsigned.push(Unsigned {
                kind: "move".into(),
                id: m.new,
                seq: Some(m.seq),
                refs: m.r#ref.iter().cloned().collect(),
                signed_by: Some(signed_by(&c.key, &trusted)),
                problem: format!(
                    "the signed {what} (entry {}) is not in the audit log (entries removed or the log rewritten?)",
                    m.seq
                ),
            });
        }
    }

    let mut pointed: BTreeMap<Hash, Vec<String>> = BTreeMap::new();
    if let Ok(Some(h)) = store.read_ref("HEAD") {
        pointed.entry(h).or_default().push("HEAD".into());
    }
    for (name, id) in store.refs().unwrap_or_default() {
        pointed.entry(id).or_default().push(name);
    }
    let mut versions: HashMap<Hash, Checked> = HashMap::new();
    for (id, p) in list_sigs(&sig_dir(store, "versions"))? {
        match check_file(&p, id) {
            Ok(c) if !store.manifest_path(id).is_file() => {
                rep.orphans.push(format!("{}: signs version {}, which is not in the store", p.display(), id.short()));
                rep.valid += 1;
                let _ = c;
            }
            Ok(c) => {
                versions.insert(id, c);
            }
            Err(e) => rep.damaged.push(e.to_string()),
        }
    }
    rep.valid += versions.len() + moves.by_hash.len();
    for (id, refs) in pointed {
        let (signed, problem) = match versions.get(&id) {
            None if sig_path(store, "versions", id).exists() => continue, // damaged: reported above
            None => (None, "not signed".to_string()),
            Some(c) => {
                let by = signed_by(&c.key, &trusted);
                if by.trusted {
                    continue;
                }
                let p = format!("signed by untrusted key {}", by.fingerprint);
                (Some(by), p)
            }
        };
        rep.unsigned.push(Unsigned {
            kind: "version".into(),
            id: Some(id),
            seq: None,
            refs,
            signed_by: signed,
            problem,
        });
    }
    Ok(rep)
}

fn short(h: Option<Hash>) -> String {
    h.map_or_else(|| "nothing".into(), Hash::short)
}

impl Store {
    /// Signs every version and ref move this store handle writes from now
    /// on (`None`: stop signing).
    pub fn set_signer(&mut self, signer: Option<Signer>) {
        self.signer = signer;
    }

    pub(crate) fn signer(&self) -> Option<&Signer> {
        self.signer.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> AuditEntry {
        AuditEntry {
            seq: 3,
            time: 9,
            who: "a\nwho b".into(),
            op: "tag".into(),
            r#ref: Some("stable".into()),
            old: None,
            new: Some(Hash::of(b"v")),
            why: "x".into(),
            prev: Hash::of(b"p"),
        }
    }

    #[test]
    fn move_messages_bind_every_field() {
        let base = move_message(&entry());
        let edits: [fn(&mut AuditEntry); 9] = [
            |e| e.seq += 1,
            |e| e.time += 1,
            |e| e.who.push('x'),
            |e| e.op = "rollback".into(),
            |e| e.r#ref = None,
            |e| e.old = Some(Hash::of(b"o")),
            |e| e.new = None,
            |e| e.why.push('y'),
            |e| e.prev = Hash::default(),
        ];
        for edit in edits {
            let mut e = entry();
            edit(&mut e);
            assert_ne!(move_message(&e), base);
        }
        assert!(base.starts_with(b"tdelta-signed-move 1\n"));
        assert!(!version_message(Hash::of(b"v")).starts_with(b"tdelta-signed-move"));
    }

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
        assert!(s.write_new(&path, "").unwrap_err().to_string().contains("refusing to replace"));
        assert!(PublicKey::from_file(&path).unwrap_err().to_string().contains("secret key"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert!(!format!("{s:?}").contains(&hex(s.key.as_bytes())));
    }

    /// A store whose handle signs with a trusted key, `stable` at `a`.
    fn signing_store() -> (tempfile::TempDir, Store, Hash, Hash) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::init(&dir.path().join("s"), &crate::InitOptions::default()).unwrap();
        let s = Signer::generate().unwrap();
        let pub_path = s.write_new(&dir.path().join("k"), "").unwrap();
        trust_key(&store, &pub_path).unwrap();
        store.set_signer(Some(s));
        let (a, b) = (Hash::of(b"a"), Hash::of(b"b"));
        let _l = store.lock().unwrap();
        store.move_ref_locked("stable", Some(a), "tag", "").unwrap();
        drop(_l);
        (dir, store, a, b)
    }

    /// What a signing writer killed after signing a move of `stable` to
    /// `b` leaves, with the ref renamed or not.
    fn kill_after_signing(store: &Store, a: Hash, b: Hash, ref_moved: bool) -> Hash {
        let e = AuditEntry {
            seq: 0,
            time: 7,
            who: "w".into(),
            op: "tag".into(),
            r#ref: Some("stable".into()),
            old: Some(a),
            new: Some(b),
            why: String::new(),
            prev: Hash::default(),
        };
        let (entry, line) = store.audit().prepare(e).unwrap();
        store.write_pending(&line).unwrap();
        sign_move(store, store.signer().unwrap(), &entry).unwrap();
        if ref_moved {
            store.write_ref_file(&store.root.join("refs/stable"), Some(b)).unwrap();
        }
        entry_hash(&entry).unwrap()
    }

    fn unsigned_moves(store: &Store) -> Vec<String> {
        verify_signatures(store).unwrap().unsigned.iter().filter(|u| u.kind == "move").map(|u| u.to_string()).collect()
    }

    #[test]
    fn a_move_signed_but_never_made_is_an_orphan_then_removed_by_the_next_writer() {
        let (_d, store, a, b) = signing_store();
        let h = kill_after_signing(&store, a, b, false);
        let rep = verify_signatures(&store).unwrap();
        assert!(rep.unsigned.is_empty() && rep.damaged.is_empty(), "{rep:?}");
        // `a` and `b` are no versions of the store: their signatures are
        // orphans too.
        let moves: Vec<&String> = rep.orphans.iter().filter(|o| o.contains("moves")).collect();
        assert_eq!(moves.len(), 1, "{rep:?}");
        assert!(moves[0].contains("under way"), "{rep:?}");
        drop(store.lock().unwrap());
        assert!(!sig_path(&store, "moves", h).exists());
        let rep = verify_signatures(&store).unwrap();
        assert!(rep.unsigned.is_empty() && !rep.orphans.iter().any(|o| o.contains("moves")), "{rep:?}");
    }

    #[test]
    fn a_signed_move_completed_as_recover_counts_as_signed() {
        let (_d, store, a, b) = signing_store();
        kill_after_signing(&store, a, b, true);
        drop(store.lock().unwrap());
        let log = store.audit().read().unwrap().entries;
        assert_eq!(log.last().unwrap().op, "recover");
        assert!(unsigned_moves(&store).is_empty(), "{:?}", unsigned_moves(&store));
        let by = move_signers(&store, &log).unwrap();
        assert!(by.iter().all(|s| s.as_ref().is_some_and(|s| s.trusted)), "{by:?}");
    }

    #[test]
    fn a_failed_ref_write_takes_its_signature_back() {
        let (_d, store, _a, _b) = signing_store();
        let _l = store.lock().unwrap();
        let before = list_sigs(&sig_dir(&store, "moves")).unwrap();
        // Deleting a ref that does not exist fails after the signing.
        assert!(store.move_ref_locked("nothing", None, "untag", "").is_err());
        assert_eq!(list_sigs(&sig_dir(&store, "moves")).unwrap(), before);
        assert!(!store.root.join(PENDING_FILE).exists());
    }

    #[test]
    fn signature_files_detect_edits() {
        let dir = tempfile::tempdir().unwrap();
        let s = Signer::generate().unwrap();
        let e = entry();
        let h = entry_hash(&e).unwrap();
        let mut file = s.sign(&move_message(&e));
        file.r#move = Some(e.clone());
        let p = dir.path().join("m.sig");
        fs::write(&p, serde_json::to_vec(&file).unwrap()).unwrap();
        check_file(&p, h).unwrap();
        assert!(check_file(&p, Hash::of(b"other")).is_err());
        let mut edited = file.clone();
        edited.r#move.as_mut().unwrap().why = "changed".into();
        fs::write(&p, serde_json::to_vec(&edited).unwrap()).unwrap();
        let h2 = entry_hash(edited.r#move.as_ref().unwrap()).unwrap();
        assert!(check_file(&p, h2).unwrap_err().to_string().contains("does not verify"));
    }
}
