//! Refs and the audit log in agreement (FORMAT.md §11–12).
//!
//! Before a ref moves, its writer durably records the audit entry it is
//! about to append in `audit.pending`; after the append it removes the
//! file. A writer killed in between leaves the record behind, and the next
//! writer completes exactly that move (as `recover`). Any other difference
//! between a ref and the last move the log records for it was made outside
//! tdelta: `verify` reports it, writers refuse to run over it, and
//! [`repair_audit`] records the refs as they are.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::Serialize;

use super::refs::{AuditEntry, parse_sealed};
use super::{Store, exists, now, ref_name, whoami};
use crate::Hash;
use crate::backend::PutMode;
use crate::error::{AuditDamage, CorruptKind};
use crate::{Error, Result};

/// The pending-move record at the store root.
pub(crate) const PENDING_FILE: &str = "audit.pending";
/// One audit line; anything longer is not a pending record.
const MAX_PENDING: u64 = 64 << 10;
/// Attempts of a reader to see the log unchanged around its reading of the
/// refs (writers append while it reads).
const READ_ATTEMPTS: usize = 20;

/// A move recorded before its ref moved: the sealed entry to be appended.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    entry: AuditEntry,
    hash: Hash,
}

/// What became of a pending move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PendingState {
    /// Its entry is in the log: only the record was left behind.
    Logged,
    /// The ref moved, the entry was not appended (the crash window).
    Moved,
    /// The ref did not move.
    NotMoved,
    /// Neither the log nor the ref matches it.
    Stale,
}

/// Every ref and `HEAD` as found on disk.
#[derive(Debug, Default)]
struct RefValues {
    /// Readable refs (`HEAD` included, `None` when missing).
    values: BTreeMap<String, Option<Hash>>,
    /// Refs whose file cannot be read (`verify` reports them).
    unreadable: BTreeSet<String>,
}

/// A ref whose value is not the last the audit log gives it.
#[derive(Debug, Clone)]
struct Disagreement {
    name: String,
    /// The entry that last moved it, and to where.
    logged: Option<(u64, Option<Hash>)>,
    current: Option<Hash>,
}

fn short(h: Option<Hash>) -> String {
    h.map_or_else(|| "nothing".into(), Hash::short)
}

impl Disagreement {
    fn reason(&self) -> String {
        let now = match self.current {
            Some(id) => format!("points to {}", id.short()),
            None => "is missing".into(),
        };
        let how = if self.current.is_none() { "deleted" } else { "changed" };
        match self.logged {
            Some((seq, was)) => format!(
                "{now}, but the audit log's last move of `{}` (entry {seq}) is to {} ({how} outside tdelta?)",
                self.name,
                short(was)
            ),
            None => format!("{now}, but the audit log records no move of `{}` (created outside tdelta?)", self.name),
        }
    }
}

/// The last move the log records for each ref: entry number and target.
fn last_moves(entries: &[AuditEntry]) -> BTreeMap<String, (u64, Option<Hash>)> {
    let mut out = BTreeMap::new();
    for e in entries {
        if let Some(r) = &e.r#ref {
            out.insert(r.clone(), (e.seq, e.new));
        }
    }
    out
}

/// Refs whose value differs from the log's, `HEAD` first. A pending move
/// whose ref has moved counts as logged.
fn disagreements(entries: &[AuditEntry], refs: &RefValues, moved: Option<&Pending>) -> Vec<Disagreement> {
    let mut logged = last_moves(entries);
    if let Some(p) = moved
        && let Some(r) = &p.entry.r#ref
    {
        logged.insert(r.clone(), (p.entry.seq, p.entry.new));
    }
    let mut names: Vec<&String> =
        logged.keys().chain(refs.values.keys()).filter(|n| !refs.unreadable.contains(*n)).collect();
    names.sort_by_key(|n| (n.as_str() != "HEAD", n.as_str()));
    names.dedup();
    let mut out = Vec::new();
    for name in names {
        let was = logged.get(name).copied();
        let is = refs.values.get(name).copied().flatten();
        if was.and_then(|w| w.1) != is {
            out.push(Disagreement { name: name.clone(), logged: was, current: is });
        }
    }
    out
}

/// `hashes` are the stored seals of `entries`.
fn pending_state(entries: &[AuditEntry], hashes: &[Hash], p: &Pending, refs: &RefValues) -> Result<PendingState> {
    let seq = p.entry.seq;
    if seq.checked_sub(1).and_then(|i| hashes.get(usize::try_from(i).ok()?)) == Some(&p.hash) {
        return Ok(PendingState::Logged);
    }
    let tail = hashes.last().copied().unwrap_or_default();
    if entries.len() as u64 + 1 != seq || tail != p.entry.prev {
        return Ok(PendingState::Stale);
    }
    let Some(name) = p.entry.r#ref.as_ref().filter(|r| !refs.unreadable.contains(*r)) else {
        return Ok(PendingState::Stale);
    };
    // A ref file not found is a ref deleted (or never created).
    let current = refs.values.get(name).copied().flatten();
    Ok(if current == p.entry.new && p.entry.new != p.entry.old {
        PendingState::Moved
    } else if current == p.entry.old {
        PendingState::NotMoved
    } else {
        PendingState::Stale
    })
}

/// The `recover` entry that completes a pending move.
fn recover_entry(p: &Pending) -> AuditEntry {
    let e = &p.entry;
    let mut why = format!(
        "completes the {} of {} that {} began at {} (its writer stopped after moving the ref, before logging it; \
         recorded by {})",
        e.op,
        e.r#ref.as_deref().unwrap_or("?"),
        e.who,
        e.time,
        whoami()
    );
    if !e.why.is_empty() {
        why.push_str(": ");
        why.push_str(&e.why);
    }
    AuditEntry {
        seq: 0,
        time: now(),
        who: e.who.clone(),
        op: "recover".into(),
        r#ref: e.r#ref.clone(),
        old: e.old,
        new: e.new,
        why,
        prev: Hash::default(),
    }
}

impl Store {
    fn pending_path(&self) -> PathBuf {
        self.locate(PENDING_FILE)
    }

    /// The pending move, if a writer left one.
    fn read_pending(&self) -> Result<Option<Pending>> {
        let path = self.pending_path();
        let bytes = match self.backend.get(PENDING_FILE, MAX_PENDING) {
            Ok((b, _)) => b,
            Err(Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let bad = |why: String| {
            Error::corrupt_audit(
                AuditDamage::PendingMove,
                CorruptKind::Invalid,
                &path,
                format!("pending ref move is damaged: {why}"),
            )
        };
        let line = bytes.strip_suffix(b"\n").ok_or_else(|| bad("no final newline".into()))?;
        let (entry, hash) = parse_sealed(line).map_err(bad)?;
        if entry.r#ref.is_none() {
            return Err(bad("it names no ref".into()));
        }
        Ok(Some(Pending { entry, hash }))
    }

    /// Records the audit line of a ref move before the ref moves.
    pub(crate) fn write_pending(&self, line: &[u8]) -> Result<()> {
        self.backend.put(PENDING_FILE, line, PutMode::Overwrite).map(|_| ())
    }

    /// Removes the pending-move record (durably), if any.
    pub(crate) fn clear_pending(&self) -> Result<()> {
        self.backend.delete(PENDING_FILE)
    }

    fn ref_values(&self) -> Result<RefValues> {
        let mut out = RefValues::default();
        let files = self.ref_files()?.into_iter().chain([("HEAD".to_string(), "HEAD".to_string())]);
        for (name, obj) in files {
            match self.read_ref_object(&obj) {
                Ok(v) => {
                    out.values.insert(name, v.map(|(id, _)| id));
                }
                Err(_) => {
                    out.unreadable.insert(name);
                }
            }
        }
        Ok(out)
    }

    fn ref_file(&self, name: &str) -> PathBuf {
        self.locate(&ref_name(name))
    }

    /// Run by every writer once it holds the lock: completes the move a
    /// killed writer left pending, then refuses to write while the log is
    /// damaged or a ref differs from the log (both changed outside
    /// tdelta; `repair audit` lets the owner continue).
    pub(crate) fn settle_refs(&self) -> Result<()> {
        let audit = self.audit();
        let rep = audit.read()?;
        if let Some(p) = rep.problems.first() {
            let p = p.strip_prefix(&format!("{}: ", audit.path().display())).unwrap_or(p);
            return Err(Error::corrupt_audit(
                AuditDamage::LogDamaged,
                CorruptKind::Tampered,
                audit.path(),
                format!("audit log is damaged ({p}); writes are refused until it is repaired"),
            ));
        }
        let refs = self.ref_values()?;
        let mut entries = rep.entries;
        if let Some(p) = self.read_pending()? {
            let state = pending_state(&entries, &rep.hashes, &p, &refs)?;
            if state == PendingState::Moved {
                entries.push(audit.append(recover_entry(&p))?);
            }
            if state != PendingState::Stale || disagreements(&entries, &refs, None).is_empty() {
                if matches!(state, PendingState::NotMoved | PendingState::Stale) {
                    super::sign::remove_move_signature(self, p.hash);
                }
                self.clear_pending()?;
            }
        }
        if let Some(d) = disagreements(&entries, &refs, None).first() {
            return Err(Error::corrupt_audit(
                AuditDamage::RefDiffers,
                CorruptKind::Tampered,
                self.ref_file(&d.name),
                format!("{}; writes are refused until this is settled", d.reason()),
            ));
        }
        Ok(())
    }

    /// For `verify` (no lock): every ref and `HEAD` compared with the last
    /// move the audit log records for it; one message per difference. A
    /// move whose writer is still running (or was killed) between the ref
    /// and its entry is not a difference: its pending record explains it.
    pub(crate) fn ref_log_problems(&self) -> Vec<String> {
        let audit = self.audit();
        for attempt in 1..=READ_ATTEMPTS {
            let Ok(rep) = audit.read() else { return Vec::new() };
            if !rep.problems.is_empty() {
                // The log is reported as damaged; its prefix says little.
                return Vec::new();
            }
            // A folder of refs removed, or the pending record replaced,
            // while being read: read again.
            let (refs, pending) = match (self.ref_values(), self.read_pending()) {
                (Ok(r), Ok(p)) => (r, p),
                (Err(e), _) | (_, Err(e)) if attempt == READ_ATTEMPTS => return vec![e.to_string()],
                _ => continue,
            };
            let again = audit.read().map(|r| r.entries.len()).unwrap_or(0);
            if again != rep.entries.len() && attempt < READ_ATTEMPTS {
                continue;
            }
            let moved = match &pending {
                Some(p) => match pending_state(&rep.entries, &rep.hashes, p, &refs) {
                    Ok(PendingState::Moved) => Some(p),
                    Ok(_) => None,
                    Err(e) => return vec![e.to_string()],
                },
                None => None,
            };
            return disagreements(&rep.entries, &refs, moved)
                .iter()
                .map(|d| format!("{}: {}", self.ref_file(&d.name).display(), d.reason()))
                .collect();
        }
        Vec::new()
    }
}

/// A ref whose move [`repair_audit`] recorded.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RefRecorded {
    /// The ref (`HEAD` included).
    pub name: String,
    /// Where the log last put it.
    pub logged: Option<Hash>,
    /// Where it points now (none: missing).
    pub current: Option<Hash>,
}

/// What [`repair_audit`] did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct AuditRepair {
    /// What was wrong with the log file itself (none when it was intact).
    pub log_problem: Option<String>,
    /// Valid entries kept from it.
    pub kept_entries: usize,
    /// Where the damaged log was set aside (never deleted).
    pub set_aside: Option<PathBuf>,
    /// What became of a pending ref move, if one was found.
    pub pending: Option<String>,
    /// Refs that differed from the log, now recorded as found.
    pub refs_recorded: Vec<RefRecorded>,
    /// Every readable ref and `HEAD`, as recorded.
    pub refs: BTreeMap<String, Option<Hash>>,
    /// Refs that cannot be read: left as they are (`verify` names them).
    pub unreadable_refs: Vec<String>,
    /// Entries appended; 0 when nothing needed repair.
    pub entries_appended: usize,
}

/// An object name starting with `stem` that no object has yet.
fn free_name(store: &Store, stem: &str) -> Result<String> {
    let mut p = stem.to_string();
    let mut n = 1;
    while exists(store.backend.as_ref(), &p)? {
        p = format!("{stem}-{n}");
        n += 1;
    }
    Ok(p)
}

/// Lets an owner continue after the audit log was damaged or deleted, or
/// refs were changed outside tdelta. A damaged log is copied aside as
/// `audit.log.damaged-<unix time>` (never deleted) and replaced by its
/// longest valid prefix; a missing one is started anew. A pending move is
/// completed (intact log) or discarded. Then one `repair` entry records
/// what was done and the value of every ref, followed by one `repair`
/// entry per ref that differed from the log, so that the log agrees with
/// the refs again. Writes nothing when nothing needs repair.
pub fn repair_audit(store: &Store, why: &str) -> Result<AuditRepair> {
    let _txn = store.begin_write_unsettled()?;
    let audit = store.audit();
    let log_exists = exists(store.backend.as_ref(), super::refs::AUDIT_LOG)?;
    let mut out = AuditRepair::default();
    let entries = match audit.read() {
        Ok(rep) => {
            out.log_problem = rep.problems.first().cloned().or_else(|| {
                rep.torn_tail.then(|| "the last entry is incomplete (a write cut short or the file truncated)".into())
            });
            rep.entries
        }
        Err(_) if !log_exists => {
            out.log_problem = Some("audit.log is missing".into());
            Vec::new()
        }
        Err(e) => return Err(e),
    };
    out.kept_entries = entries.len();
    if out.log_problem.is_some() {
        if let Some((bytes, _)) = audit.raw()? {
            let dest = free_name(store, &format!("audit.log.damaged-{}", now()))?;
            store.backend.put(&dest, &bytes, PutMode::Create)?;
            out.set_aside = Some(store.locate(&dest));
        }
        audit.rewrite(&entries)?;
    }
    let rep = audit.read()?;
    let (mut entries, hashes) = (rep.entries, rep.hashes);
    let refs = store.ref_values()?;
    match store.read_pending() {
        Ok(Some(p)) => {
            let state = if out.log_problem.is_none() {
                pending_state(&entries, &hashes, &p, &refs)?
            } else {
                PendingState::Stale
            };
            let what = format!(
                "the {} of {} begun by {} at {}",
                p.entry.op,
                p.entry.r#ref.as_deref().unwrap_or("?"),
                p.entry.who,
                p.entry.time
            );
            out.pending = Some(if state == PendingState::Moved {
                entries.push(audit.append(recover_entry(&p))?);
                out.entries_appended += 1;
                format!("completed {what} (recorded as recover)")
            } else {
                if state != PendingState::Logged {
                    super::sign::remove_move_signature(store, p.hash);
                }
                format!(
                    "discarded the record of {what}: the ref {}",
                    match state {
                        PendingState::NotMoved => "did not move",
                        _ if out.log_problem.is_some() => "cannot be matched with a damaged log",
                        _ => "does not show it",
                    }
                )
            });
        }
        Ok(None) => {}
        Err(e) => out.pending = Some(format!("removed a damaged pending record: {e}")),
    }
    store.clear_pending()?;
    let diffs = disagreements(&entries, &refs, None);
    out.refs = refs.values.clone();
    out.unreadable_refs = refs.unreadable.iter().cloned().collect();
    if out.log_problem.is_none() && diffs.is_empty() {
        return Ok(out);
    }
    let mut what = Vec::new();
    if !why.is_empty() {
        what.push(why.to_string());
    }
    match (&out.log_problem, &out.set_aside) {
        (Some(p), Some(aside)) => what.push(format!(
            "audit log damaged ({p}): kept its {} valid entries, set the file aside as {}",
            out.kept_entries,
            aside.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned())
        )),
        (Some(p), None) => what.push(format!("{p}: started a new log")),
        (None, _) => {}
    }
    if !diffs.is_empty() {
        let names: Vec<&str> = diffs.iter().map(|d| d.name.as_str()).collect();
        what.push(format!("recorded refs changed outside tdelta: {}", names.join(", ")));
    }
    let values: Vec<String> =
        refs.values.iter().map(|(n, v)| format!("{n}={}", v.map_or_else(|| "none".into(), Hash::to_hex))).collect();
    what.push(format!("refs now: {}", values.join(" ")));
    if !out.unreadable_refs.is_empty() {
        what.push(format!("unreadable, left as they are: {}", out.unreadable_refs.join(", ")));
    }
    let entry = |r#ref: Option<String>, old, new, why: String| AuditEntry {
        seq: 0,
        time: now(),
        who: store.who(),
        op: "repair".into(),
        r#ref,
        old,
        new,
        why,
        prev: Hash::default(),
    };
    audit.append(entry(None, None, None, what.join("; ")))?;
    out.entries_appended += 1;
    let how = if out.log_problem.is_some() {
        "its moves were lost with the damaged part of the log; recorded as found"
    } else {
        "ref changed outside tdelta; recorded as found"
    };
    for d in diffs {
        audit.append(entry(Some(d.name.clone()), d.logged.and_then(|l| l.1), d.current, how.into()))?;
        out.entries_appended += 1;
        out.refs_recorded.push(RefRecorded { name: d.name, logged: d.logged.and_then(|l| l.1), current: d.current });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::InitOptions;

    fn store_with_stable() -> (tempfile::TempDir, Store, Hash, Hash) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::init(&dir.path().join("s"), &InitOptions::default()).unwrap();
        let (a, b) = (Hash::of(b"a"), Hash::of(b"b"));
        let txn = store.begin_write().unwrap();
        txn.move_ref(&store, "stable", Some(a), "tag", "").unwrap();
        drop(txn);
        (dir, store, a, b)
    }

    /// Leaves the state of a writer killed after `step` of a move of
    /// `stable` from `a` to `b` (`None`: a delete): 1 = record written,
    /// 2 = ref renamed or deleted, 3 = entry appended.
    fn kill_after(store: &Store, a: Hash, b: Option<Hash>, step: u8) {
        let entry = AuditEntry {
            seq: 0,
            time: 7,
            who: "w".into(),
            op: "tag".into(),
            r#ref: Some("stable".into()),
            old: Some(a),
            new: b,
            why: "why".into(),
            prev: Hash::default(),
        };
        let (_, line) = store.audit().prepare(entry).unwrap();
        store.write_pending(&line).unwrap();
        if step >= 2 {
            let seen = store.read_ref_object("refs/stable").unwrap().map(|(_, t)| t);
            store.write_ref_file("refs/stable", seen, b).unwrap();
        }
        if step >= 3 {
            store.audit().append_line(&line).unwrap();
        }
    }

    #[test]
    fn each_crash_point_of_a_move_settles_to_one_logged_move() {
        for (step, delete) in (1..=3u8).flat_map(|s| [(s, false), (s, true)]) {
            let (_d, store, a, b) = store_with_stable();
            let b = if delete { None } else { Some(b) };
            kill_after(&store, a, b, step);
            assert!(store.ref_log_problems().is_empty(), "step {step}: {:?}", store.ref_log_problems());
            drop(store.begin_write().unwrap());
            assert!(!store.pending_path().exists(), "step {step}");
            let log = store.audit().read().unwrap().entries;
            let last = log.last().unwrap();
            let want = if step == 1 { Some(a) } else { b };
            assert_eq!((last.new, store.read_ref("stable").unwrap()), (want, want), "step {step}");
            assert_eq!(last.op, if step == 2 { "recover" } else { "tag" }, "step {step}");
            assert!(store.ref_log_problems().is_empty());
        }
    }

    #[test]
    fn a_hand_edit_is_refused_then_recorded_by_repair() {
        let (_d, store, a, b) = store_with_stable();
        let seen = store.read_ref_object("refs/stable").unwrap().map(|(_, t)| t);
        store.write_ref_file("refs/stable", seen, Some(b)).unwrap();
        let p = store.ref_log_problems();
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("changed outside tdelta"), "{p:?}");
        let e = store.begin_write().unwrap_err();
        assert_eq!((e.kind(), e.audit_damage()), (crate::ErrorKind::Corrupt, Some(AuditDamage::RefDiffers)), "{e}");
        let e = e.to_string();
        assert!(e.contains("writes are refused") && !e.contains("tdelta "), "no CLI hint in the library: {e}");
        let r = repair_audit(&store, "").unwrap();
        assert_eq!(r.refs_recorded, vec![RefRecorded { name: "stable".into(), logged: Some(a), current: Some(b) }]);
        assert_eq!(r.entries_appended, 2);
        assert!(store.ref_log_problems().is_empty());
        drop(store.begin_write().unwrap());
        assert_eq!(repair_audit(&store, "").unwrap().entries_appended, 0);
    }
}
