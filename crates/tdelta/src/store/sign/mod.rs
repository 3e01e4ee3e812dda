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
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, VerifyingKey};
use serde::Serialize;

use super::refs::{AuditEntry, entry_hash, parse_sealed};
use super::{Store, exists, integrity::PENDING_FILE};
use crate::Hash;
use crate::backend::PutMode;
use crate::{Error, Result};

mod keys;
#[cfg(test)]
mod tests;

use keys::fingerprint;
pub use keys::{PublicKey, Signer};

use tdelta_format::signature::{MAX_SIG_FILE, SIG_FORMAT, SignatureFile as SigFile, move_message, version_message};
/// Reads of the log around the signatures before giving up on a quiet
/// moment (writers append while `verify` reads).
const READ_ATTEMPTS: usize = 20;

/// A signature of `message` by `signer`, signing nothing yet.
fn new_sig(signer: &Signer, message: &[u8]) -> SigFile {
    let (key, sig) = signer.sign(message);
    SigFile { format: SIG_FORMAT.into(), key, sig, version: None, r#move: None }
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
pub(crate) struct Checked {
    path: PathBuf,
    key: VerifyingKey,
    file: SigFile,
}

/// The prefix of the signature objects of a kind (`versions`, `moves`).
fn sig_dir(kind: &str) -> String {
    format!("signatures/{kind}/")
}

const TRUSTED_DIR: &str = "keys/trusted/";

/// Reads the signature object `obj` and checks it; `name` is the hash its
/// name must match (the version id, or the audit entry's hash).
fn check_object(store: &Store, obj: &str, name: Hash) -> Result<Checked> {
    let (bytes, _) = store.backend.get(obj, MAX_SIG_FILE)?;
    check_bytes(&store.locate(obj), &bytes, name)
}

/// [`check_object`] of the bytes read from `path`.
pub(crate) fn check_bytes(path: &Path, bytes: &[u8], name: Hash) -> Result<Checked> {
    let file = SigFile::decode(bytes).map_err(|e| Error::format(path, e))?;
    let bad = |why: &str| Error::corrupt(path, format!("bad signature file: {why}"));
    let key = file
        .key_bytes()
        .and_then(|k| VerifyingKey::from_bytes(&k).ok())
        .ok_or_else(|| bad("the key is not an ed25519 public key"))?;
    let sig = file.sig_bytes().map(|s| Signature::from_bytes(&s)).ok_or_else(|| bad("malformed signature"))?;
    if file.name().map_err(|e| Error::format(path, e))? != name {
        return Err(bad("it signs something else than its file name says"));
    }
    let message = file.message().map_err(|e| Error::format(path, e))?;
    key.verify_strict(&message, &sig).map_err(|_| bad("the signature does not verify (the file was altered)"))?;
    Ok(Checked { path: path.to_path_buf(), key, file })
}

/// The signature object of `name`.
fn sig_name(kind: &str, name: Hash) -> String {
    format!("{}{name}.sig", sig_dir(kind))
}

/// Every `<hex id>.sig` of a kind, with its object name.
fn list_sigs(store: &Store, kind: &str) -> Result<Vec<(Hash, String)>> {
    let dir = sig_dir(kind);
    let mut out: Vec<(Hash, String)> = store
        .backend
        .list(&dir)?
        .into_iter()
        .filter_map(|o| Some((o.name.strip_prefix(&dir)?.strip_suffix(".sig")?.parse().ok()?, o.name.clone())))
        .collect();
    out.sort();
    Ok(out)
}

fn write_sig(store: &Store, kind: &str, name: Hash, file: &SigFile) -> Result<()> {
    let bytes = file.encode().map_err(|e| Error::Internal(e.to_string()))?;
    store.backend.put(&sig_name(kind, name), &bytes, PutMode::Overwrite).map(|_| ())
}

/// Signs version `id` unless it already has a signature (a version keeps
/// its first one). Caller holds the lock.
pub(crate) fn sign_version(store: &Store, signer: &Signer, id: Hash) -> Result<()> {
    if exists(store.backend.as_ref(), &sig_name("versions", id))? {
        return Ok(());
    }
    let mut file = new_sig(signer, &version_message(id));
    file.version = Some(id);
    write_sig(store, "versions", id, &file)
}

/// Signs the move that `entry` (sealed: `seq` and `prev` filled) will
/// record. Caller holds the lock; the ref has not moved yet.
pub(crate) fn sign_move(store: &Store, signer: &Signer, entry: &AuditEntry) -> Result<()> {
    let mut file = new_sig(signer, &move_message(entry));
    file.r#move = Some(entry.clone());
    write_sig(store, "moves", entry_hash(entry)?, &file)
}

/// Removes the signature of a move that did not happen (its writer
/// failed or was killed before the ref moved).
pub(crate) fn remove_move_signature(store: &Store, entry: Hash) {
    let _ = store.backend.delete(&sig_name("moves", entry));
}

/// Adds the public key in `path` to the store's trusted keys and records
/// it in the audit log (op `trust`). Returns the key; trusting a key twice
/// changes nothing.
pub fn trust_key(store: &Store, path: &Path) -> Result<PublicKey> {
    let key = PublicKey::from_file(path)?;
    let txn = store.begin_write()?;
    let obj = format!("{TRUSTED_DIR}{}.pub", key.fingerprint());
    let dest = store.locate(&obj);
    let found = match store.backend.get(&obj, keys::MAX_KEY_FILE) {
        Ok((bytes, _)) => Some(PublicKey::parse(&dest, &bytes)),
        Err(crate::Error::NotFound { .. }) => None,
        Err(e) => Some(Err(e)),
    };
    match found {
        None => {}
        Some(Ok(k)) if k.key == key.key => return Ok(k),
        Some(Ok(_)) => {
            return Err(Error::AlreadyExists {
                what: format!("{}: another key with the same fingerprint", dest.display()),
            });
        }
        Some(Err(_)) => {
            return Err(Error::corrupt(&dest, "unreadable trusted key file; move it out of the store first"));
        }
    }
    store.backend.put(&obj, key.encode().as_bytes(), PutMode::Create)?;
    let comment = if key.comment.is_empty() { String::new() } else { format!(" ({})", key.comment) };
    txn.record(store, "trust", None, None, &format!("trusted key {}{comment}", key.fingerprint()))?;
    Ok(key)
}

/// The store's trusted keys, and one message per file in `keys/trusted/`
/// that is not a valid public key.
pub fn trusted_keys(store: &Store) -> Result<(Vec<PublicKey>, Vec<String>)> {
    let (mut keys, mut bad) = (Vec::new(), Vec::new());
    let objects = store.backend.list(TRUSTED_DIR)?;
    for o in objects.iter().filter(|o| o.name.ends_with(".pub") && !o.name[TRUSTED_DIR.len()..].contains('/')) {
        let parsed = store
            .backend
            .get(&o.name, keys::MAX_KEY_FILE)
            .and_then(|(bytes, _)| PublicKey::parse(&store.locate(&o.name), &bytes));
        match parsed {
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
        for (h, obj) in list_sigs(store, "moves")? {
            match check_object(store, &obj, h) {
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
    let obj = sig_name("versions", id);
    if !exists(store.backend.as_ref(), &obj)? {
        return Ok(None);
    }
    let (trusted, _) = trusted_keys(store)?;
    Ok(Some(signed_by(&check_object(store, &obj, id)?.key, &trusted)))
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
            let pending = store
                .backend
                .get(PENDING_FILE, MAX_SIG_FILE)
                .ok()
                .and_then(|(b, _)| parse_sealed(b.strip_suffix(b"\n")?).ok())
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
    for (id, obj) in list_sigs(store, "versions")? {
        match check_object(store, &obj, id) {
            Ok(_) if !store.has_version(id) => {
                rep.orphans.push(format!(
                    "{}: signs version {}, which is not in the store",
                    store.locate(&obj).display(),
                    id.short()
                ));
                rep.valid += 1;
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
            None if exists(store.backend.as_ref(), &sig_name("versions", id)).unwrap_or(false) => continue, // damaged: reported above
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
