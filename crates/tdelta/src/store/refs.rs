//! Refs (named pointers to versions) and the hash-chained audit log of
//! every version created and every ref moved. Layouts in `FORMAT.md`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::Hash;
use crate::backend::{Backend, ETag, PutMode};
use crate::error::{AuditDamage, CorruptKind};
use crate::{Error, Result};
pub use tdelta_format::audit::AuditEntry;
use tdelta_format::audit::{self, LOG_HEADER};
pub(crate) use tdelta_format::refs::{MAX_REF_FILE, encode_ref};

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

/// Parses the bytes of a ref object (`path` names it in errors).
pub(crate) fn parse_ref(path: &Path, bytes: &[u8]) -> Result<Hash> {
    tdelta_format::refs::decode_ref(bytes).map_err(|e| Error::format(path, e))
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
    /// The seal of each entry as stored (what the next entry chains to).
    pub(crate) hashes: Vec<Hash>,
    /// Bytes of the log up to the end of its last complete line.
    pub(crate) complete_len: usize,
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
            return Err(Error::corrupt_audit(
                AuditDamage::LogMissing,
                CorruptKind::Missing,
                &self.path,
                "audit log is missing (deleted outside tdelta?)",
            ));
        };
        let rep = self.check(&text);
        Ok((rep, text, tag))
    }

    fn check(&self, text: &[u8]) -> AuditReport {
        let checked = audit::check_log(text);
        let mut rep = AuditReport {
            torn_tail: checked.torn_tail,
            complete_len: checked.complete_len,
            problems: checked.problem.iter().map(|p| format!("{}: {p}", self.path.display())).collect(),
            ..AuditReport::default()
        };
        for (entry, hash) in checked.entries {
            rep.entries.push(entry);
            rep.hashes.push(hash);
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
            return Err(Error::corrupt_audit(
                AuditDamage::LogDamaged,
                CorruptKind::Tampered,
                &self.path,
                format!("audit log is damaged, refusing to append: {p}"),
            ));
        }
        if rep.torn_tail {
            self.swap(&text[..rep.complete_len], tag)?;
        }
        entry.seq = rep.entries.len() as u64 + 1;
        // The stored seal: an entry a newer build wrote, with members this
        // build does not know, is chained to as it is.
        entry.prev = rep.hashes.last().copied().unwrap_or_default();
        let line = sealed_line(&entry)?;
        Ok((entry, line))
    }

    /// Appends a line made by [`AuditLog::prepare`]: the log with the
    /// line, swapped in if the log did not change since it was read.
    pub fn append_line(&self, line: &[u8]) -> Result<()> {
        let Some((mut text, tag)) = self.raw()? else {
            return Err(Error::corrupt_audit(
                AuditDamage::LogMissing,
                CorruptKind::Missing,
                &self.path,
                "audit log is missing (deleted outside tdelta?)",
            ));
        };
        text.extend_from_slice(line);
        self.swap(&text, tag)
    }

    /// Replaces the log (atomically) with the header and `entries`, sealed
    /// and chained anew from the first (`repair audit`).
    pub fn rewrite(&self, entries: &[AuditEntry]) -> Result<()> {
        let text = audit::encode_log(entries).map_err(|e| Error::Internal(e.to_string()))?;
        self.backend.put(AUDIT_LOG, &text, PutMode::Overwrite).map(|_| ())
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The hash that seals `entry` as this build writes it (its `hash`
/// field in the log).
pub(crate) fn entry_hash(entry: &AuditEntry) -> Result<Hash> {
    audit::entry_hash(entry).map_err(|e| Error::Internal(e.to_string()))
}

/// The log line of `entry`: its JSON with `hash`, and `\n`.
fn sealed_line(entry: &AuditEntry) -> Result<Vec<u8>> {
    Ok(audit::encode_entry(entry).map_err(|e| Error::Internal(e.to_string()))?.1)
}

/// Parses one sealed line (without its `\n`) and checks its seal over
/// the stored bytes.
pub(crate) fn parse_sealed(line: &[u8]) -> std::result::Result<(AuditEntry, Hash), String> {
    let sealed = audit::parse_entry(line).map_err(|e| e.to_string())?;
    if !sealed.is_intact() {
        return Err("its hash does not match its content".into());
    }
    Ok((sealed.entry, sealed.hash))
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
    fn a_missing_log_is_named_and_typed_for_its_repair() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::new(Arc::new(crate::backend::LocalDir::new(dir.path())));
        let e = log.read().unwrap_err();
        assert_eq!((e.corrupt_kind(), e.audit_damage()), (Some(CorruptKind::Missing), Some(AuditDamage::LogMissing)));
        let e = e.to_string();
        assert!(e.contains("audit.log") && e.contains("missing") && !e.contains("repair audit"), "{e}");
    }
}
