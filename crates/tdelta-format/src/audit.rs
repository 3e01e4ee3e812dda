//! The audit log over bytes: `FORMAT.md`, "Audit log".
//!
//! A header line, then one entry per line: compact JSON whose last member
//! is `"hash"`. The seal (that hash) is the xxh3-128 of the line's exact
//! bytes with that last member cut out, so an entry with members this
//! build does not know (written by a newer one) still verifies, and the
//! next entry chains to it through its `prev`.

use serde::{Deserialize, Serialize};

use crate::Hash;
use crate::error::{Check, FileKind, FormatError, Result};

/// The first line of the log (without its `\n`).
pub const LOG_HEADER: &str = "tdelta-audit 1";

/// The last bytes of a line before the 32 hex digits of its seal.
const HASH_KEY: &[u8] = b",\"hash\":\"";
/// `,"hash":"` + 32 hex digits + `"}`.
const HASH_MEMBER: usize = HASH_KEY.len() + 32 + 2;

/// One entry of the audit log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditEntry {
    /// Position in the log, from 1.
    pub seq: u64,
    /// Seconds since the Unix epoch.
    pub time: u64,
    /// Who did it (user@host).
    pub who: String,
    /// What happened.
    pub op: AuditOp,
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

#[derive(Deserialize)]
struct Sealed {
    #[serde(flatten)]
    entry: AuditEntry,
    hash: Hash,
}

/// A parsed log line: the entry, the seal it records and the seal its
/// bytes compute to.
#[derive(Debug, Clone, PartialEq)]
pub struct SealedEntry {
    /// The members this build knows.
    pub entry: AuditEntry,
    /// The `hash` member as stored.
    pub hash: Hash,
    /// The hash of the stored line without its `hash` member.
    pub seal: Hash,
}

impl SealedEntry {
    /// True when the stored hash matches the line's bytes.
    pub fn is_intact(&self) -> bool {
        self.hash == self.seal
    }
}

fn canonical(entry: &AuditEntry) -> Result<Vec<u8>> {
    serde_json::to_vec(entry).map_err(|e| FormatError::Encode { file: FileKind::AuditLog, reason: e.to_string() })
}

/// The seal of `entry` as this build writes it (its `hash` in the log).
/// For a line read from a log, [`SealedEntry::seal`] is the one to trust.
pub fn entry_hash(entry: &AuditEntry) -> Result<Hash> {
    Ok(Hash::of(&canonical(entry)?))
}

/// The log line of `entry` (`\n` included) and its seal.
pub fn encode_entry(entry: &AuditEntry) -> Result<(Hash, Vec<u8>)> {
    let mut line = canonical(entry)?;
    let hash = Hash::of(&line);
    line.pop();
    line.extend_from_slice(HASH_KEY);
    line.extend_from_slice(hash.to_hex().as_bytes());
    line.extend_from_slice(b"\"}\n");
    Ok((hash, line))
}

/// Parses one line (without its `\n`) and computes its seal over the
/// stored bytes; [`SealedEntry::is_intact`] says whether it matches.
pub fn parse_entry(line: &[u8]) -> Result<SealedEntry> {
    let bad = |reason: String| Err(FormatError::invalid(FileKind::AuditLog, reason));
    let sealed: Sealed = match serde_json::from_slice(line) {
        Ok(s) => s,
        Err(e) => return bad(format!("not a valid audit entry: {e}")),
    };
    let Some(cut) = line.len().checked_sub(HASH_MEMBER).filter(|&c| line[c..].starts_with(HASH_KEY)) else {
        return bad("not a valid audit entry: `hash` is not its last member".into());
    };
    let mut body = Vec::with_capacity(cut + 1);
    body.extend_from_slice(&line[..cut]);
    body.push(b'}');
    Ok(SealedEntry { entry: sealed.entry, hash: sealed.hash, seal: Hash::of(&body) })
}

/// A whole log, checked: the entries up to the first problem.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckedLog {
    /// The entries that check out, in order, each with its seal.
    pub entries: Vec<(AuditEntry, Hash)>,
    /// The first problem found, if any (the entries after it are not read).
    pub problem: Option<FormatError>,
    /// True when the last line is incomplete (a torn append).
    pub torn_tail: bool,
    /// Bytes of the log up to the end of its last complete line.
    pub complete_len: usize,
}

impl CheckedLog {
    /// The seal the next entry chains to (zero for an empty log).
    pub fn last_hash(&self) -> Hash {
        self.entries.last().map_or_else(Hash::default, |(_, h)| *h)
    }
}

/// Reads a whole log: the header, then each complete line in order, its
/// sequence number, chain and seal.
pub fn check_log(bytes: &[u8]) -> CheckedLog {
    let mut rep = CheckedLog::default();
    let Some(body) = bytes.strip_prefix(LOG_HEADER.as_bytes()).and_then(|b| b.strip_prefix(b"\n")) else {
        rep.problem = Some(FormatError::corrupt(FileKind::AuditLog, Check::Magic, "missing or bad header line"));
        return rep;
    };
    let head = bytes.len() - body.len();
    let complete = body.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    rep.torn_tail = complete < body.len();
    rep.complete_len = head + complete;
    let mut prev = Hash::default();
    for (i, line) in body[..complete].split(|&b| b == b'\n').filter(|l| !l.is_empty()).enumerate() {
        let n = i as u64 + 1;
        let sealed = match parse_entry(line) {
            Ok(s) => s,
            Err(e) => {
                rep.problem = Some(FormatError::invalid(FileKind::AuditLog, format!("entry {n}: {e}")));
                return rep;
            }
        };
        let problem = if sealed.entry.seq != n {
            Some(format!("entry {n} has sequence number {}", sealed.entry.seq))
        } else if sealed.entry.prev != prev {
            Some(format!("entry {n} does not chain to entry {}", n - 1))
        } else if !sealed.is_intact() {
            Some(format!("entry {n} was edited (its hash does not match its content)"))
        } else {
            None
        };
        if let Some(p) = problem {
            rep.problem = Some(FormatError::corrupt(FileKind::AuditLog, Check::Tampered, p));
            return rep;
        }
        prev = sealed.hash;
        rep.entries.push((sealed.entry, sealed.hash));
    }
    rep
}

/// A new log holding `entries`, sealed and chained anew from the first
/// (`seq` and `prev` are set here).
pub fn encode_log(entries: &[AuditEntry]) -> Result<Vec<u8>> {
    let mut text = format!("{LOG_HEADER}\n").into_bytes();
    let mut prev = Hash::default();
    for (i, e) in entries.iter().enumerate() {
        let mut e = e.clone();
        e.seq = i as u64 + 1;
        e.prev = prev;
        let (hash, line) = encode_entry(&e)?;
        prev = hash;
        text.extend(line);
    }
    Ok(text)
}

/// The operation of an audit entry. Its JSON form is the name, as
/// before; a name this build does not know (written by a newer one) is
/// kept as [`AuditOp::Other`], so the entry still reads and its seal
/// still checks.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum AuditOp {
    /// A version was packed (HEAD moved to it).
    Pack,
    /// A tag was set or moved.
    Tag,
    /// A tag was deleted.
    Untag,
    /// A ref was moved back.
    Rollback,
    /// A version was dropped.
    Drop,
    /// Unreferenced blocks were collected.
    Gc,
    /// A ref move a killed writer left pending was completed.
    Recover,
    /// `repair audit` recorded the refs as found.
    Repair,
    /// Any other name.
    Other(String),
}

impl AuditOp {
    /// The name, as stored.
    pub fn as_str(&self) -> &str {
        match self {
            AuditOp::Pack => "pack",
            AuditOp::Tag => "tag",
            AuditOp::Untag => "untag",
            AuditOp::Rollback => "rollback",
            AuditOp::Drop => "drop",
            AuditOp::Gc => "gc",
            AuditOp::Recover => "recover",
            AuditOp::Repair => "repair",
            AuditOp::Other(s) => s,
        }
    }
}

impl From<&str> for AuditOp {
    fn from(s: &str) -> AuditOp {
        match s {
            "pack" => AuditOp::Pack,
            "tag" => AuditOp::Tag,
            "untag" => AuditOp::Untag,
            "rollback" => AuditOp::Rollback,
            "drop" => AuditOp::Drop,
            "gc" => AuditOp::Gc,
            "recover" => AuditOp::Recover,
            "repair" => AuditOp::Repair,
            other => AuditOp::Other(other.to_string()),
        }
    }
}

impl From<String> for AuditOp {
    fn from(s: String) -> AuditOp {
        AuditOp::from(s.as_str())
    }
}

impl From<AuditOp> for String {
    fn from(op: AuditOp) -> String {
        match op {
            AuditOp::Other(s) => s,
            known => known.as_str().to_string(),
        }
    }
}

impl std::fmt::Display for AuditOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for AuditOp {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for AuditOp {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> AuditEntry {
        AuditEntry {
            seq: 1,
            time: 5,
            who: "a@b".into(),
            op: AuditOp::Tag,
            r#ref: Some("stable".into()),
            old: None,
            new: Some(Hash::of(b"v")),
            why: "ok".into(),
            prev: Hash::default(),
        }
    }

    #[test]
    fn a_line_round_trips_and_its_seal_is_the_old_one() {
        let e = entry();
        let (hash, line) = encode_entry(&e).unwrap();
        // The seal over the stored bytes equals the seal of the canonical
        // re-serialisation for every line this build writes (old logs).
        assert_eq!(hash, entry_hash(&e).unwrap());
        let p = parse_entry(line.strip_suffix(b"\n").unwrap()).unwrap();
        assert!(p.is_intact());
        assert_eq!((p.entry, p.hash), (e, hash));
    }

    /// Issue 13: an entry with a member this build does not know (written
    /// by a newer build) verifies, because the seal covers its bytes, and
    /// the next entry chains to its stored hash.
    #[test]
    fn an_unknown_member_keeps_the_entry_intact() {
        let mut body = serde_json::to_vec(&entry()).unwrap();
        body.pop();
        body.extend_from_slice(b",\"signer\":{\"k\":[1,2]}}");
        let hash = Hash::of(&body);
        let mut line = body[..body.len() - 1].to_vec();
        line.extend_from_slice(format!(",\"hash\":\"{hash}\"}}").as_bytes());
        let p = parse_entry(&line).unwrap();
        assert!(p.is_intact());
        assert_eq!((p.entry.clone(), p.hash), (entry(), hash));
        assert_ne!(entry_hash(&p.entry).unwrap(), hash, "re-serialising would lose the member");

        let mut log = format!("{LOG_HEADER}\n").into_bytes();
        log.extend_from_slice(&line);
        log.push(b'\n');
        let next = AuditEntry { seq: 2, prev: hash, op: AuditOp::Other("upgrade".into()), ..entry() };
        log.extend(encode_entry(&next).unwrap().1);
        let checked = check_log(&log);
        assert_eq!(checked.problem, None);
        assert_eq!(checked.entries.len(), 2);
        assert_eq!(checked.entries[0].1, hash);

        let edited = String::from_utf8(line).unwrap().replace("[1,2]", "[1,3]");
        assert!(!parse_entry(edited.as_bytes()).unwrap().is_intact());
    }

    #[test]
    fn lines_without_a_final_hash_member_are_refused() {
        let (_, line) = encode_entry(&entry()).unwrap();
        let text = String::from_utf8(line).unwrap();
        let moved = text.trim_end().replacen("{\"seq\"", "{\"hash\":\"00000000000000000000000000000000\",\"seq\"", 1);
        let moved = moved.rsplit_once(",\"hash\"").unwrap().0.to_string() + "}";
        let e = parse_entry(moved.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("`hash` is not its last member"), "{e}");
        let e = parse_entry(b"{\"seq\":").unwrap_err();
        assert!(e.to_string().contains("not a valid audit entry"), "{e}");
    }

    #[test]
    fn the_log_check_finds_edits_torn_tails_and_bad_headers() {
        let entries: Vec<AuditEntry> = [AuditOp::Pack, AuditOp::Tag, AuditOp::Rollback]
            .into_iter()
            .map(|op| AuditEntry { op, ..entry() })
            .collect();
        let log = encode_log(&entries).unwrap();
        let c = check_log(&log);
        assert_eq!((c.entries.len(), c.problem.clone(), c.torn_tail, c.complete_len), (3, None, false, log.len()));
        let mut torn = log.clone();
        torn.extend_from_slice(b"{\"seq\":4,");
        let c = check_log(&torn);
        assert!(c.torn_tail && c.problem.is_none() && c.complete_len == log.len());
        let edited = String::from_utf8(log.clone()).unwrap().replace("\"op\":\"tag\"", "\"op\":\"gag\"");
        let c = check_log(edited.as_bytes());
        let p = c.problem.unwrap();
        assert_eq!((c.entries.len(), p.check()), (1, Some(Check::Tampered)));
        assert!(p.to_string().contains("entry 2 was edited"), "{p}");
        assert_eq!(check_log(b"tdelta-audit 2\n").problem.unwrap().check(), Some(Check::Magic));
    }

    #[test]
    fn op_names_round_trip_and_unknown_names_are_kept() {
        for name in ["pack", "tag", "untag", "rollback", "drop", "gc", "recover", "repair", "upgrade"] {
            let op: AuditOp = serde_json::from_str(&format!("\"{name}\"")).unwrap();
            assert_eq!(op, name);
            assert_eq!(serde_json::to_string(&op).unwrap(), format!("\"{name}\""));
        }
        assert_eq!(AuditOp::from("gc"), AuditOp::Gc);
        assert_eq!(AuditOp::from("upgrade"), AuditOp::Other("upgrade".into()));
    }
}
