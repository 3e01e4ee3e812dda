//! Refs (named pointers to versions) and the hash-chained audit log of
//! every version created and every ref moved. Layouts in `FORMAT.md`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::Hash;
use crate::backend::{Backend, ETag, PutMode};
use crate::error::CorruptKind;
use crate::{Error, Result};

const REF_PREFIX: &str = "tdelta-ref 1 ";
const LOG_HEADER: &str = "tdelta-audit 1";
/// Refs larger than this are corrupt by definition.
pub(crate) const MAX_REF_FILE: u64 = 256;

/// Checks that `name` is a valid ref name: `/`-separated components of
/// ASCII letters, digits, `.`, `_`, `-`, none empty or starting with `.`,
/// at most 200 bytes, and not `HEAD`.
pub fn validate_ref_name(name: &str) -> Result<()> {
    let refuse =
        |reason: &str| Err(Error::InvalidRefName { name: name.escape_debug().to_string(), reason: reason.to_string() });
    if name.is_empty() {
        return refuse("empty");
    }
    if name.len() > 200 {
        return refuse("longer than 200 bytes");
    }
    if name == "HEAD" {
        return refuse("HEAD is reserved");
    }
    for comp in name.split('/') {
        if comp.is_empty() {
            return refuse("empty path component (leading, trailing or double `/`)");
        }
        if comp.starts_with('.') {
            return refuse("a component may not start with `.`");
        }
        if let Some(c) = comp.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
            return refuse(&format!("character {:?} not allowed; use letters, digits, `.`, `_`, `-` and `/`", c));
        }
    }
    if name.ends_with(".lock") || name.ends_with(".tmp") {
        return refuse("may not end in .lock or .tmp");
    }
    Ok(())
}

/// [`validate_ref_name`] plus what a new ref may not be: a name of 4 or
/// more hex digits only, which would read as a version id (prefix).
pub(crate) fn validate_new_ref_name(name: &str) -> Result<()> {
    validate_ref_name(name)?;
    if name.len() >= 4 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::InvalidRefName {
            name: name.to_string(),
            reason: format!("4 or more hex digits read as a version id; add a letter outside a-f, e.g. `v{name}`"),
        });
    }
    Ok(())
}

/// Serializes a ref file.
pub(crate) fn encode_ref(id: Hash) -> String {
    let line = format!("{REF_PREFIX}{id}");
    let sum = xxhash_rust::xxh3::xxh3_64(line.as_bytes());
    format!("{line} {sum:016x}\n")
}

/// Parses the bytes of a ref object (`path` names it in errors).
pub(crate) fn parse_ref(path: &Path, bytes: &[u8]) -> Result<Hash> {
    let text = std::str::from_utf8(bytes).map_err(|_| Error::corrupt(path, "ref is not UTF-8"))?;
    let Some(rest) = text.strip_suffix('\n') else {
        return Err(Error::corrupt_as(CorruptKind::Truncated, path, "ref is truncated (no final newline)"));
    };
    let Some((line, sum)) = rest.rsplit_once(' ') else {
        return Err(Error::corrupt_as(CorruptKind::Truncated, path, "ref has no checksum"));
    };
    let Some(id) = line.strip_prefix(REF_PREFIX) else {
        return Err(Error::corrupt_as(CorruptKind::Magic, path, "not a tdelta ref (bad prefix)"));
    };
    if format!("{:016x}", xxhash_rust::xxh3::xxh3_64(line.as_bytes())) != sum {
        return Err(Error::corrupt_as(CorruptKind::Checksum, path, "ref checksum mismatch"));
    }
    id.parse().map_err(|e| Error::corrupt(path, format!("ref holds no version id: {e}")))
}

/// One entry of the audit log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditEntry {
    /// Position in the log, from 1.
    pub seq: u64,
    /// Seconds since the Unix epoch.
    pub time: u64,
    /// Who did it (user@host).
    pub who: String,
    /// What happened: `pack`, `tag`, `untag`, `rollback`, `drop`, `gc`, `recover`,
    /// `repair`.
    pub op: crate::AuditOp,
    /// The ref moved, if any (`HEAD` included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#ref: Option<String>,
    /// The version it pointed to before, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old: Option<Hash>,
    /// The version it points to now (or the version created or dropped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new: Option<Hash>,
    /// Why, in the user's words.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub why: String,
    /// Hash of the previous entry (zero for the first).
    pub prev: Hash,
}

#[derive(Serialize, Deserialize)]
struct Sealed {
    #[serde(flatten)]
    entry: AuditEntry,
    hash: Hash,
}

fn seal(entry: &AuditEntry) -> Result<Hash> {
    let bytes = serde_json::to_vec(entry).map_err(|e| Error::Internal(format!("cannot serialize audit entry: {e}")))?;
    Ok(Hash::of(&bytes))
}

/// The audit log: one JSON object per line, each sealed by the hash of its
/// content, which includes the previous entry's hash. The object
/// `audit.log` is never changed in place: an append replaces it by
/// compare-and-swap with its content plus the new line, under the lease
/// (a local store writes it as any other file: temp, fsync, rename).
#[derive(Debug)]
pub(crate) struct AuditLog {
    backend: Arc<dyn Backend>,
    path: PathBuf,
}

/// The audit log's object name.
pub(crate) const AUDIT_LOG: &str = "audit.log";

/// Result of reading the audit log.
#[derive(Debug, Default)]
pub struct AuditReport {
    /// The entries that check out, in order.
    pub entries: Vec<AuditEntry>,
    /// Problems found (empty when the chain is intact).
    pub problems: Vec<String>,
    /// True when the last line is incomplete (a torn append).
    pub torn_tail: bool,
}

impl AuditLog {
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        let path = backend.locate(AUDIT_LOG);
        AuditLog { backend, path }
    }

    /// Creates the log with its header line.
    pub fn create(&self) -> Result<()> {
        self.backend.put(AUDIT_LOG, format!("{LOG_HEADER}\n").as_bytes(), PutMode::Overwrite).map(|_| ())
    }

    /// The log's bytes and tag; `None` when it is missing.
    pub fn raw(&self) -> Result<Option<(Vec<u8>, ETag)>> {
        match self.backend.get(AUDIT_LOG, 1 << 36) {
            Ok(v) => Ok(Some(v)),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads and checks the whole chain.
    pub fn read(&self) -> Result<AuditReport> {
        Ok(self.read_tagged()?.0)
    }

    /// [`AuditLog::read`], with the bytes and tag read.
    fn read_tagged(&self) -> Result<(AuditReport, Vec<u8>, ETag)> {
        let Some((text, tag)) = self.raw()? else {
            return Err(Error::corrupt_as(
                CorruptKind::Missing,
                &self.path,
                "audit log is missing (deleted outside tdelta?); `tdelta repair audit` starts a new one \
                 recording the current refs",
            ));
        };
        let rep = self.check(&text);
        Ok((rep, text, tag))
    }

    fn check(&self, text: &[u8]) -> AuditReport {
        let mut rep = AuditReport::default();
        let body = match text.strip_prefix(format!("{LOG_HEADER}\n").as_bytes()) {
            Some(b) => b,
            None => {
                rep.problems.push(format!("{}: missing or bad header line", self.path.display()));
                return rep;
            }
        };
        let complete = match body.iter().rposition(|&b| b == b'\n') {
            Some(p) => p + 1,
            None => 0,
        };
        if complete < body.len() {
            rep.torn_tail = true;
        }
        let mut prev = Hash::default();
        for (i, line) in body[..complete].split(|&b| b == b'\n').filter(|l| !l.is_empty()).enumerate() {
            let n = i as u64 + 1;
            let sealed: Sealed = match serde_json::from_slice(line) {
                Ok(s) => s,
                Err(e) => {
                    rep.problems.push(format!("{}: entry {n} is not valid: {e}", self.path.display()));
                    return rep;
                }
            };
            let problem = if sealed.entry.seq != n {
                Some(format!("entry {n} has sequence number {}", sealed.entry.seq))
            } else if sealed.entry.prev != prev {
                Some(format!("entry {n} does not chain to entry {}", n - 1))
            } else if seal(&sealed.entry).ok() != Some(sealed.hash) {
                Some(format!("entry {n} was edited (its hash does not match its content)"))
            } else {
                None
            };
            if let Some(p) = problem {
                rep.problems.push(format!("{}: {p}", self.path.display()));
                return rep;
            }
            prev = sealed.hash;
            rep.entries.push(sealed.entry);
        }
        rep
    }

    /// Appends an entry (filling `seq` and `prev`), repairing a torn tail
    /// first. Must be called with the store lock held.
    pub fn append(&self, entry: AuditEntry) -> Result<AuditEntry> {
        let (entry, line) = self.prepare(entry)?;
        self.append_line(&line)?;
        Ok(entry)
    }

    /// Replaces the log by `bytes` if it is still as read (`tag`).
    fn swap(&self, bytes: &[u8], tag: ETag) -> Result<()> {
        self.backend.put(AUDIT_LOG, bytes, PutMode::IfMatch(Some(tag))).map(|_| ())
    }

    /// Fills `seq` and `prev` of the entry that the next append will add
    /// and returns it with its sealed line, after refusing a damaged log
    /// and cutting a torn tail. Must be called with the store lock held,
    /// which keeps the line valid until [`AuditLog::append_line`].
    pub fn prepare(&self, mut entry: AuditEntry) -> Result<(AuditEntry, Vec<u8>)> {
        let (rep, text, tag) = self.read_tagged()?;
        if let Some(p) = rep.problems.first() {
            let p = p.strip_prefix(&format!("{}: ", self.path.display())).unwrap_or(p);
            return Err(Error::corrupt_as(
                CorruptKind::Tampered,
                &self.path,
                format!(
                    "audit log is damaged, refusing to append: {p}; `tdelta repair audit` keeps the valid \
                     entries and sets the damaged file aside"
                ),
            ));
        }
        if rep.torn_tail {
            let keep = text.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
            self.swap(&text[..keep], tag)?;
        }
        entry.seq = rep.entries.len() as u64 + 1;
        entry.prev = rep.entries.last().map_or(Ok(Hash::default()), seal)?;
        let line = sealed_line(&entry)?;
        Ok((entry, line))
    }

    /// Appends a line made by [`AuditLog::prepare`]: the log with the
    /// line, swapped in if the log did not change since it was read.
    pub fn append_line(&self, line: &[u8]) -> Result<()> {
        let Some((mut text, tag)) = self.raw()? else {
            return Err(Error::corrupt(&self.path, "audit log is missing (deleted outside tdelta?)"));
        };
        text.extend_from_slice(line);
        self.swap(&text, tag)
    }

    /// Replaces the log (atomically) with the header and `entries`, sealed
    /// and chained anew from the first (`repair audit`).
    pub fn rewrite(&self, entries: &[AuditEntry]) -> Result<()> {
        let mut text = format!("{LOG_HEADER}\n").into_bytes();
        let mut prev = Hash::default();
        for (i, e) in entries.iter().enumerate() {
            let mut e = e.clone();
            e.seq = i as u64 + 1;
            e.prev = prev;
            prev = seal(&e)?;
            text.extend(sealed_line(&e)?);
        }
        self.backend.put(AUDIT_LOG, &text, PutMode::Overwrite).map(|_| ())
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The hash that seals `entry` (its `hash` field in the log).
pub(crate) fn entry_hash(entry: &AuditEntry) -> Result<Hash> {
    seal(entry)
}

/// The log line of `entry`: its JSON with `hash`, and `\n`.
fn sealed_line(entry: &AuditEntry) -> Result<Vec<u8>> {
    let hash = seal(entry)?;
    let mut line = serde_json::to_vec(&Sealed { entry: entry.clone(), hash })
        .map_err(|e| Error::Internal(format!("cannot serialize audit entry: {e}")))?;
    line.push(b'\n');
    Ok(line)
}

/// Parses one sealed line (without its `\n`) and checks its seal.
pub(crate) fn parse_sealed(line: &[u8]) -> std::result::Result<(AuditEntry, Hash), String> {
    let sealed: Sealed = serde_json::from_slice(line).map_err(|e| format!("not a valid audit entry: {e}"))?;
    match seal(&sealed.entry) {
        Ok(h) if h == sealed.hash => Ok((sealed.entry, sealed.hash)),
        Ok(_) => Err("its hash does not match its content".into()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    #[test]
    fn ref_names() {
        for ok in ["stable", "canary", "exp/lr-3e-5", "v1.2", "a_b"] {
            validate_ref_name(ok).unwrap();
        }
        for (bad, why) in [
            ("", "empty"),
            ("../x", "start with `.`"),
            ("/abs", "empty path component"),
            ("a//b", "empty path component"),
            ("HEAD", "reserved"),
            ("a\u{7}b", "not allowed"),
            ("sp ace", "not allowed"),
            ("x.lock", ".lock"),
        ] {
            let e = validate_ref_name(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn new_refs_may_not_look_like_version_ids() {
        for bad in ["abcd", "2024", "DEADBEEF", "0123456789abcdef0123456789abcdef"] {
            let e = validate_new_ref_name(bad).unwrap_err().to_string();
            assert!(e.contains("read as a version id"), "{bad}: {e}");
            validate_ref_name(bad).unwrap();
        }
        for ok in ["abc", "v2024", "beefy", "exp/abcd", "ab-cd"] {
            validate_new_ref_name(ok).unwrap();
        }
    }

    #[test]
    fn ref_round_trip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r");
        let id = Hash::of(b"v");
        assert_eq!(parse_ref(&p, encode_ref(id).as_bytes()).unwrap(), id);
        let mut s = encode_ref(id).into_bytes();
        s[20] = if s[20] == b'0' { b'1' } else { b'0' };
        assert!(parse_ref(&p, &s).unwrap_err().to_string().contains("checksum mismatch"));
        assert!(parse_ref(&p, &encode_ref(id).as_bytes()[..30]).unwrap_err().to_string().contains("truncated"));
    }

    fn entry(op: &str) -> AuditEntry {
        AuditEntry {
            seq: 0,
            time: 1,
            who: "t".into(),
            op: op.into(),
            r#ref: Some("stable".into()),
            old: None,
            new: Some(Hash::of(op.as_bytes())),
            why: String::new(),
            prev: Hash::default(),
        }
    }

    #[test]
    fn audit_chain_detects_edits_and_repairs_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::new(Arc::new(crate::backend::LocalDir::new(dir.path())));
        log.create().unwrap();
        for op in ["pack", "tag", "rollback"] {
            log.append(entry(op)).unwrap();
        }
        let rep = log.read().unwrap();
        assert_eq!(rep.entries.len(), 3);
        assert!(rep.problems.is_empty());

        let text = fs::read_to_string(dir.path().join("audit.log")).unwrap();
        fs::write(dir.path().join("audit.log"), format!("{text}{{\"seq\":4,")).unwrap();
        let rep = log.read().unwrap();
        assert!(rep.torn_tail && rep.problems.is_empty());
        log.append(entry("drop")).unwrap();
        let rep = log.read().unwrap();
        assert_eq!(rep.entries.len(), 4);
        assert!(!rep.torn_tail);

        let text = fs::read_to_string(dir.path().join("audit.log")).unwrap();
        fs::write(dir.path().join("audit.log"), text.replace("\"op\":\"tag\"", "\"op\":\"gag\"")).unwrap();
        let rep = log.read().unwrap();
        assert_eq!(rep.problems.len(), 1, "{:?}", rep.problems);
        assert!(rep.problems[0].contains("entry 2 was edited"), "{:?}", rep.problems);
        assert!(log.append(entry("x")).is_err());
    }

    #[test]
    fn rewrite_of_the_valid_prefix_keeps_its_seals() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::new(Arc::new(crate::backend::LocalDir::new(dir.path())));
        log.create().unwrap();
        for op in ["pack", "tag", "rollback"] {
            log.append(entry(op)).unwrap();
        }
        let before = fs::read(log.path()).unwrap();
        let entries = log.read().unwrap().entries;
        log.rewrite(&entries).unwrap();
        assert_eq!(fs::read(log.path()).unwrap(), before);
        log.rewrite(&entries[..1]).unwrap();
        let rep = log.read().unwrap();
        assert!(rep.problems.is_empty() && rep.entries == entries[..1]);
    }

    #[test]
    fn a_missing_log_is_named_with_its_cure() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::new(Arc::new(crate::backend::LocalDir::new(dir.path())));
        let e = log.read().unwrap_err().to_string();
        assert!(e.contains("audit.log") && e.contains("missing") && e.contains("repair audit"), "{e}");
    }
}
