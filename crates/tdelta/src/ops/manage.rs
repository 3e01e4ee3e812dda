//! Version management: tags and channels, rollback, ref history, drop,
//! garbage collection, verification and store figures.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use rayon::prelude::*;
use serde::Serialize;

use super::Progress;
use super::problem::{BlockPart, Problem};
use super::report::{DropReport, RollbackReport, TagReport};
use crate::Hash;
use crate::error::{AuditDamage, CorruptKind};
use crate::ops::blocks::Scratch;
use crate::store::manifest::{BlockRef, FileEntry, Manifest};
use crate::store::pack::{BlockMeta, PackWriter};
use crate::store::{Store, WriteTxn, index_name, pack_name};
use crate::{AuditEntry, AuditReport, Error, Result};

/// Points tag `name` at version `id`. Refuses to move an existing tag to
/// another version unless `force`. The report holds the previous target.
pub fn tag(store: &Store, name: &str, id: Hash, force: bool, why: &str) -> Result<TagReport> {
    crate::store::refs::validate_new_ref_name(name)?;
    let txn = store.begin_write()?;
    store.manifest(id)?;
    let old = store.read_ref(name)?;
    if let Some(old) = old.filter(|o| *o != id && !force) {
        return Err(Error::AlreadyExists { what: format!("tag `{name}` (it points to {})", old.short()) });
    }
    let old = txn.move_ref(store, name, Some(id), "tag", why)?;
    Ok(TagReport { tag: name.to_string(), id: Some(id), old, deleted: false })
}

/// Deletes tag `name`. The report holds the version it pointed to.
pub fn untag(store: &Store, name: &str, why: &str) -> Result<TagReport> {
    crate::validate_ref_name(name)?;
    let txn = store.begin_write()?;
    let old = store.read_ref(name)?.ok_or_else(|| Error::UnknownRef { name: name.to_string() })?;
    txn.move_ref(store, name, None, "untag", why)?;
    Ok(TagReport { tag: name.to_string(), id: None, old: Some(old), deleted: true })
}

/// Where [`rollback`] moves a ref.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RollbackTarget {
    /// To this version.
    Version(Hash),
    /// To the version the ref pointed to `n` moves ago (its history,
    /// newest first, without repeats of the current version).
    Steps(usize),
}

/// Moves ref `name` (a tag or `HEAD`) back to an earlier version in one
/// atomic step, recording why. When the ref already points to the
/// target, nothing changes and nothing is recorded (the report's
/// `old == new`).
pub fn rollback(store: &Store, name: &str, to: RollbackTarget, why: &str) -> Result<RollbackReport> {
    let report = |old, new| RollbackReport { name: name.to_string(), old, new };
    let txn = store.begin_write()?;
    let cur = store.read_ref(name)?.ok_or_else(|| Error::UnknownRef { name: name.to_string() })?;
    let target = match to {
        RollbackTarget::Version(id) => id,
        RollbackTarget::Steps(n) => {
            let earlier = previous_targets(store, name, cur)?;
            let Some(id) = n.checked_sub(1).and_then(|i| earlier.get(i)) else {
                return Err(Error::InvalidArgument(format!(
                    "`{name}` has {} earlier versions in its history; cannot go back {n}",
                    earlier.len()
                )));
            };
            *id
        }
    };
    store.manifest_summary(target)?;
    if target == cur {
        // Already there: nothing moves, nothing is recorded.
        return Ok(report(cur, target));
    }
    txn.move_ref(store, name, Some(target), "rollback", why)?;
    Ok(report(cur, target))
}

/// The versions a ref pointed to before, newest first, each once, without
/// `current`.
fn previous_targets(store: &Store, name: &str, current: Hash) -> Result<Vec<Hash>> {
    let mut seen = HashSet::from([current]);
    let mut out = Vec::new();
    for e in history(store, name)?.iter().rev() {
        for id in [e.new, e.old].into_iter().flatten() {
            if seen.insert(id) {
                out.push(id);
            }
        }
    }
    Ok(out)
}

/// Every move of ref `name` from the audit log, oldest first. A damaged
/// log is an error naming the first bad entry, never a shortened list.
pub fn history(store: &Store, name: &str) -> Result<Vec<AuditEntry>> {
    Ok(audit_entries(store)?.into_iter().filter(|e| e.r#ref.as_deref() == Some(name)).collect())
}

/// Every entry of the audit log, oldest first: packs, ref moves, drops,
/// gc. A damaged log is an error naming the first bad entry. A torn last
/// line (an append cut short, dropped by the next writer) is not.
pub fn audit_entries(store: &Store) -> Result<Vec<AuditEntry>> {
    let rep = store.audit_log()?;
    if let Some(p) = rep.problems.first() {
        return Err(Error::corrupt_audit(
            AuditDamage::LogDamaged,
            CorruptKind::Tampered,
            store.audit().path(),
            p.clone(),
        ));
    }
    Ok(rep.entries)
}

/// Deletes version `id` (its manifest). Refused while a ref points to it.
/// Its blocks stay until [`gc`] finds them unreferenced.
pub fn drop_version(store: &Store, id: Hash, why: &str) -> Result<DropReport> {
    let txn = store.begin_write()?;
    check_droppable(store, id)?;
    remove_version(store, &txn, id, why)?;
    Ok(DropReport { dropped: id })
}

/// What dropping `id` and then running [`gc`] would free; refused as
/// [`drop_version`] would refuse. Changes nothing.
pub fn drop_dry_run(store: &Store, id: Hash) -> Result<GcPreview> {
    check_droppable(store, id)?;
    gc_dry_run(store, &[id])
}

/// Refuses to drop a version that is missing or that a ref points to.
fn check_droppable(store: &Store, id: Hash) -> Result<()> {
    store.manifest_summary(id)?;
    let mut holders: Vec<String> = store.refs()?.into_iter().filter(|(_, v)| *v == id).map(|(n, _)| n).collect();
    if store.read_ref("HEAD")? == Some(id) {
        holders.insert(0, "HEAD".into());
    }
    if !holders.is_empty() {
        return Err(Error::Referenced { version: id.short(), refs: holders });
    }
    Ok(())
}

/// Deletes a manifest and records it. The caller has checked that no ref
/// points to `id`.
///
/// The entry comes first: a reader that finds the manifest gone then
/// always finds the drop recorded, so it can tell a dropped version from
/// a lost one (`log`). A writer stopped in between leaves a version the
/// log calls dropped; dropping it again finishes the job.
fn remove_version(store: &Store, txn: &WriteTxn, id: Hash, why: &str) -> Result<()> {
    txn.record(store, "drop", None, Some(id), why)?;
    txn.delete_manifest(store, id)
}

/// Drops every version that no ref (tags and `HEAD`) points to and that is
/// not among the `keep_last` newest versions of `HEAD`'s line (following
/// parents). Returns the versions dropped, oldest first. Blocks are freed
/// by a following [`gc`].
pub fn prune(store: &Store, keep_last: usize, why: &str) -> Result<Vec<Hash>> {
    let txn = store.begin_write()?;
    let dropped = prune_candidates(store, keep_last)?;
    for id in &dropped {
        remove_version(store, &txn, *id, why)?;
    }
    Ok(dropped)
}

/// The versions [`prune`] would drop, oldest first.
pub fn prune_candidates(store: &Store, keep_last: usize) -> Result<Vec<Hash>> {
    let mut keep: std::collections::HashSet<Hash> = store.refs()?.into_iter().map(|(_, id)| id).collect();
    let mut next = store.read_ref("HEAD")?;
    if let Some(h) = next {
        keep.insert(h);
    }
    for _ in 0..keep_last {
        let Some(id) = next else { break };
        keep.insert(id);
        next = match store.manifest_summary(id) {
            Ok(m) => m.parent,
            Err(Error::UnknownRef { .. }) => None,
            Err(e) => return Err(e),
        };
    }
    let mut rows = Vec::new();
    for id in store.versions()? {
        if !keep.contains(&id) {
            rows.push(super::LogEntry::new(id, super::LogState::Ok(Box::new(store.manifest_summary(id)?))));
        }
    }
    super::log::sort_by_time(store, &mut rows);
    Ok(rows.into_iter().map(|e| e.id).collect())
}

/// What [`gc`] did (after [`prune`], when the caller pruned first).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct GcReport {
    /// Versions dropped first by [`prune`] (the caller fills it in; empty
    /// for a plain gc).
    pub dropped: Vec<Hash>,
    /// Versions kept (all manifests present).
    pub versions: usize,
    /// Blocks removed.
    pub blocks_removed: u64,
    /// Packs deleted whole.
    pub packs_deleted: usize,
    /// Packs rewritten without their dead blocks.
    pub packs_rewritten: usize,
    /// Bytes of `packs/` before and after.
    pub bytes_before: u64,
    /// Bytes after.
    pub bytes_after: u64,
}

/// What a [`gc`] would remove: per pack, the entries it keeps.
struct GcPlan {
    versions: usize,
    /// For each loaded pack: its entries and which of them stay.
    packs: Vec<(Vec<crate::store::pack::Entry>, Vec<bool>)>,
}

/// Finds the blocks that the versions other than `without` need (directly
/// or as delta bases) and, pack by pack, the entries to keep.
fn plan_gc(store: &Store, without: &HashSet<Hash>) -> Result<GcPlan> {
    let versions: Vec<Hash> = store.versions()?.into_iter().filter(|id| !without.contains(id)).collect();
    let mut live: HashSet<Hash> = HashSet::new();
    for id in &versions {
        // A manifest that cannot be read stops gc: what it needs is unknown.
        let m = store.manifest(*id)?;
        for f in &m.files {
            for h in f.block_hashes() {
                if live.insert(h) {
                    for e in store.chain(h)? {
                        live.insert(e.hash);
                    }
                }
            }
        }
    }
    let mut packs = Vec::with_capacity(store.packs.len());
    // Entries of each pack (the index map keeps one copy of a block that
    // sits in several packs; count every pack's own entries).
    let mut kept_elsewhere: HashSet<Hash> = HashSet::new();
    for i in 0..store.packs.len() {
        let entries = store.pack_entries(i)?;
        let keep: Vec<bool> =
            entries.iter().map(|e| live.contains(&e.hash) && !kept_elsewhere.contains(&e.hash)).collect();
        kept_elsewhere.extend(entries.iter().zip(&keep).filter(|(_, k)| **k).map(|(e, _)| e.hash));
        packs.push((entries, keep));
    }
    Ok(GcPlan { versions: versions.len(), packs })
}

/// What [`gc_dry_run`] found: what a gc (after dropping the given
/// versions) would remove.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct GcPreview {
    /// Versions that would be dropped first.
    pub dropped: Vec<Hash>,
    /// Versions that would be kept.
    pub versions: usize,
    /// Blocks that would be removed.
    pub blocks_removed: u64,
    /// Packs that would be deleted whole.
    pub packs_deleted: usize,
    /// Packs that would be rewritten without their dead blocks.
    pub packs_rewritten: usize,
    /// Bytes that would be freed: packs, indexes and the dropped
    /// versions' manifests.
    pub bytes_freed: u64,
    /// Always true: a preview changes nothing (named in its JSON so that a
    /// tool cannot take it for a report of what was done).
    pub dry_run: bool,
}

/// Computes what dropping `dropped` and then running [`gc`] would free,
/// changing nothing. Entries in the rewritten packs count their record
/// and index entry (`FORMAT.md`).
pub fn gc_dry_run(store: &Store, dropped: &[Hash]) -> Result<GcPreview> {
    let without: HashSet<Hash> = dropped.iter().copied().collect();
    let plan = plan_gc(store, &without)?;
    let mut rep =
        GcPreview { dropped: dropped.to_vec(), versions: plan.versions, dry_run: true, ..GcPreview::default() };
    for (p, (entries, keep)) in store.packs.iter().zip(&plan.packs) {
        let kept = keep.iter().filter(|k| **k).count();
        rep.blocks_removed += (entries.len() - kept) as u64;
        if kept == entries.len() {
            continue;
        }
        if kept == 0 {
            rep.packs_deleted += 1;
            rep.bytes_freed += p.len + store.index_size(p.id);
        } else {
            rep.packs_rewritten += 1;
            // Record header and index entry of a block, at the version
            // of its pack (3 holds 32-byte id fields).
            use tdelta_format::pack::{index_entry_len, record_header_len};
            let per = (record_header_len(p.version) + index_entry_len(p.version)) as u64;
            rep.bytes_freed +=
                entries.iter().zip(keep).filter(|(_, k)| !**k).map(|(e, _)| per + u64::from(e.stored_len)).sum::<u64>();
        }
    }
    for id in dropped {
        rep.bytes_freed += store.manifest_size(*id);
    }
    Ok(rep)
}

/// Removes every block no version needs (directly or as a delta base) by
/// deleting or rewriting packs, and pack files that lost their index.
///
/// Crash-safe: a rewritten pack and its index land before the old index
/// and pack are removed, so every live block is always in an indexed pack.
pub fn gc(store: &mut Store, why: &str) -> Result<GcReport> {
    let txn = store.begin_write()?;
    store.load_packs()?;
    let rep = gc_locked(store, &txn, why)?;
    store.load_packs()?;
    Ok(rep)
}

/// [`gc`] of the packs loaded under `txn`'s lease.
fn gc_locked(store: &Store, txn: &WriteTxn, why: &str) -> Result<GcReport> {
    let plan = plan_gc(store, &HashSet::new())?;
    let bytes_before = store.packs_bytes()?;
    let mut rep = GcReport { versions: plan.versions, bytes_before, ..GcReport::default() };
    for (p, (entries, keep)) in store.packs.iter().zip(&plan.packs) {
        let keep: Vec<_> = entries.iter().zip(keep).filter(|(_, k)| **k).map(|(e, _)| e).collect();
        rep.blocks_removed += (entries.len() - keep.len()) as u64;
        if keep.len() == entries.len() {
            continue;
        }
        if !keep.is_empty() {
            let mut w = PackWriter::create(store)?;
            let mut buf = Vec::new();
            for e in &keep {
                crate::store::pack::read_payload(store, p, e, &mut buf)?;
                w.add(
                    BlockMeta {
                        hash: e.hash,
                        raw_len: e.raw_len,
                        codec: e.codec,
                        dtype: e.dtype,
                        depth: e.depth,
                        base: e.base,
                    },
                    &buf,
                )?;
            }
            w.finish(store)?;
            rep.packs_rewritten += 1;
        } else {
            rep.packs_deleted += 1;
        }
        txn.delete_pack(store, p.id)?;
    }
    // Packs whose index never landed (a writer killed in between).
    txn.delete_unindexed_packs(store)?;
    rep.bytes_after = store.packs_bytes()?;
    let note = format!("{why} (freed {} bytes)", rep.bytes_before.saturating_sub(rep.bytes_after));
    txn.record(store, "gc", None, None, note.trim())?;
    Ok(rep)
}

/// The check of one version by [`verify`].
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct VersionCheck {
    /// The version.
    pub id: Hash,
    /// What is wrong (empty when the version restores bit-exactly).
    pub problems: Vec<Problem>,
}

/// What [`verify`] found.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct VerifyReport {
    /// One entry per version checked.
    pub versions: Vec<VersionCheck>,
    /// Distinct blocks decoded and checked.
    pub blocks_checked: u64,
    /// Raw bytes those blocks restore to.
    pub bytes_checked: u64,
    /// Problems of the store itself: config, packs, refs, audit log.
    pub store_problems: Vec<Problem>,
}

impl VerifyReport {
    /// True when nothing is wrong.
    pub fn ok(&self) -> bool {
        self.store_problems.is_empty() && self.versions.iter().all(|v| v.problems.is_empty())
    }
}

/// Checks that a pack's bytes still hash to its name (its id): catches
/// bytes appended or altered anywhere, including outside any payload.
fn check_pack_id(store: &Store, p: &crate::store::PackFile) -> Result<()> {
    let actual = store.hash_pack(p)?;
    if actual != p.id {
        return Err(Error::corrupt_as(
            CorruptKind::HashMismatch,
            &p.path,
            format!("the pack's content hashes to {actual}, not to its name (bytes were altered or appended)"),
        ));
    }
    Ok(())
}

/// At most this many problems are listed per version.
const MAX_PROBLEMS: usize = 20;

/// Decodes every block of the given versions (each distinct block once,
/// in parallel) and checks every hash; also checks the config, the pack
/// files, the refs, the audit log's hash chain, and that every ref and
/// `HEAD` is where the log's last move of it put it.
pub fn verify(store: &Store, ids: &[Hash], progress: &dyn Progress) -> Result<VerifyReport> {
    let mut rep = VerifyReport::default();
    let sp = &mut rep.store_problems;
    sp.extend(store.config_problem().map(|m| Problem::Config { message: m.to_string() }));
    sp.extend(store.damaged_packs().iter().map(|m| Problem::Pack { pack: None, message: m.clone() }));
    // A missing or unreadable log is damage to report, not a reason to
    // stop checking the rest.
    let audit =
        store.audit_log().unwrap_or_else(|e| AuditReport { problems: vec![e.to_string()], ..Default::default() });
    sp.extend(audit.problems.into_iter().map(|message| Problem::AuditLog { message }));
    if audit.torn_tail {
        // A cut-short append and a truncated log look the same: report it
        // as damage; the next writer drops the partial line.
        sp.push(Problem::AuditLog {
            message: "audit.log: the last entry is incomplete (a write cut short or the file truncated); \
                      the next writer drops the partial line"
                .into(),
        });
    }
    let bad_packs: Vec<Problem> = store
        .packs
        .par_iter()
        .filter_map(|p| {
            check_pack_id(store, p).err().map(|e| Problem::Pack { pack: Some(p.id), message: e.to_string() })
        })
        .collect();
    sp.extend(bad_packs);

    let ref_problem = |message: String| Problem::Ref { message };
    match store.refs_checked() {
        Ok(bad) => sp.extend(bad.into_iter().map(ref_problem)),
        Err(e) => sp.push(ref_problem(e.to_string())),
    }
    if let Err(e) = store.read_ref("HEAD") {
        sp.push(ref_problem(e.to_string()));
    }
    sp.extend(store.ref_log_problems().into_iter().map(ref_problem));
    let mut manifests: Vec<(Hash, Option<Manifest>)> = Vec::new();
    for id in ids {
        match store.manifest(*id) {
            Ok(m) => manifests.push((*id, Some(m))),
            Err(e) => {
                rep.versions
                    .push(VersionCheck { id: *id, problems: vec![Problem::Manifest { message: e.to_string() }] });
                manifests.push((*id, None));
            }
        }
    }
    // Each block once, with the fewest decodes any version holding it
    // allows (its manifest's `max_levels`): a deeper chain is damage.
    let mut unique: HashMap<Hash, (u64, u16)> = HashMap::new();
    for m in manifests.iter().filter_map(|(_, m)| m.as_ref()) {
        let bound = super::restore::levels_bound(m);
        for f in &m.files {
            for b in f.blocks(store.config().block_size) {
                let e = unique.entry(b.hash).or_insert((b.len, bound));
                e.1 = e.1.min(bound);
            }
        }
    }
    let blocks: Vec<(Hash, u64, u16)> = unique.into_iter().map(|(h, (len, bound))| (h, len, bound)).collect();
    progress.begin("verifying", blocks.iter().map(|b| b.1).sum());
    let broken: Mutex<HashMap<Hash, Error>> = Mutex::new(HashMap::new());
    blocks.par_iter().for_each_init(
        || (Scratch::default(), Vec::new()),
        |(scratch, buf), (h, len, bound)| {
            if let Err(e) = store.read_block_within(*h, *bound, buf, scratch, None) {
                broken.lock().unwrap_or_else(|p| p.into_inner()).insert(*h, e);
            }
            progress.advance(*len);
        },
    );
    progress.end();
    rep.blocks_checked = blocks.len() as u64;
    rep.bytes_checked = blocks.iter().map(|b| b.1).sum();
    let broken = broken.into_inner().unwrap_or_else(|p| p.into_inner());
    rep.store_problems.extend(lost_pack_files(store, &broken, &manifests));
    for (id, m) in &manifests {
        let Some(m) = m else { continue };
        let mut problems = Vec::new();
        // What restore would refuse to write is damage too.
        problems.extend(m.check_paths().err().map(|message| Problem::Path { message }));
        let mut more = 0;
        for f in &m.files {
            for b in f.blocks(m.block_size) {
                if let Some(e) = broken.get(&b.hash) {
                    if problems.len() < MAX_PROBLEMS {
                        problems.push(block_problem(f, &b, e));
                    } else {
                        more += 1;
                    }
                }
            }
        }
        if more > 0 {
            problems.push(Problem::MoreBlocks { count: more });
        }
        rep.versions.push(VersionCheck { id: *id, problems });
    }
    rep.versions.sort_by_key(|v| ids.iter().position(|i| *i == v.id));
    Ok(rep)
}

/// The block a failed read found missing, if that is why it failed.
fn missing_block(e: &Error) -> Option<Hash> {
    match e {
        Error::InBlock { source, .. } => missing_block(source),
        Error::MissingBlock { block } => block.parse().ok(),
        _ => None,
    }
}

/// The pack files found without their other half: a pack whose index is
/// missing while versions need blocks it holds, an index whose pack is
/// missing; each named with the versions that need its blocks (`broken`:
/// the blocks that failed, by id). A pack without index that no version
/// needs is a writer's leftover, which gc removes: not damage.
fn lost_pack_files(
    store: &Store,
    broken: &HashMap<Hash, Error>,
    manifests: &[(Hash, Option<Manifest>)],
) -> Vec<Problem> {
    let (packs, indexes) = match store.unpaired_packs() {
        Ok(p) => p,
        Err(e) => return vec![Problem::Pack { pack: None, message: e.to_string() }],
    };
    let missing_of: HashMap<Hash, Hash> =
        broken.iter().filter_map(|(top, e)| Some((*top, missing_block(e)?))).collect();
    // The short ids of the versions that need a block of `held`.
    let needing = |held: &HashSet<Hash>| -> Vec<String> {
        let tops: HashSet<Hash> = missing_of.iter().filter(|(_, m)| held.contains(m)).map(|(t, _)| *t).collect();
        let needs =
            |m: &Manifest| m.files.iter().any(|f| f.blocks(m.block_size).iter().any(|b| tops.contains(&b.hash)));
        manifests.iter().filter(|(_, m)| m.as_ref().is_some_and(needs)).map(|(v, _)| v.short()).collect()
    };
    let mut out = Vec::new();
    for id in packs.into_iter().filter(|_| !missing_of.is_empty()) {
        let (idx, pack) = (store.locate(&index_name(id)), store.locate(&pack_name(id)));
        let message = match store.record_hashes(id) {
            Err(e) => format!("{}: index is missing, and its pack cannot be read: {e}", idx.display()),
            Ok(h) => match needing(&h.into_iter().collect()) {
                v if v.is_empty() => continue,
                v => format!(
                    "{}: index is missing; its pack {} holds blocks that versions {} need",
                    idx.display(),
                    pack.display(),
                    v.join(", ")
                ),
            },
        };
        out.push(Problem::Pack { pack: Some(id), message });
    }
    for id in indexes {
        let pack = store.locate(&pack_name(id));
        let versions = store.index_hashes(id).map(|h| needing(&h.into_iter().collect())).unwrap_or_default();
        let message = match versions {
            v if v.is_empty() => format!("{}: pack of this index is missing", pack.display()),
            v => format!("{}: pack is missing; versions {} need its blocks", pack.display(), v.join(", ")),
        };
        out.push(Problem::Pack { pack: Some(id), message });
    }
    out
}

/// The problem of block `b` of file `f` that failed with `e`.
fn block_problem(f: &FileEntry, b: &BlockRef, e: &Error) -> Problem {
    let (part, tensor) = match b.tensor {
        Some(t) => (BlockPart::Tensor, Some(f.tensors()[t].name.clone())),
        None if matches!(f.content, crate::FileContent::Safetensors { .. }) => (BlockPart::Header, None),
        None => (BlockPart::Blob, None),
    };
    Problem::Block {
        file: f.path.clone(),
        part,
        tensor,
        index: b.index,
        check: e.corrupt_kind(),
        message: e.to_string(),
    }
}

/// "tensor `x` block 3", "header block 0" or "block 2".
pub(crate) fn block_name(f: &FileEntry, b: &BlockRef) -> String {
    match b.tensor {
        Some(t) => format!("tensor `{}` block {}", f.tensors()[t].name, b.index),
        None if matches!(f.content, crate::FileContent::Safetensors { .. }) => format!("header block {}", b.index),
        None => format!("block {}", b.index),
    }
}

/// Storage figures of one version for [`stats`].
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VersionFigures {
    /// The version.
    pub id: Hash,
    /// Creation time.
    pub created: u64,
    /// Message.
    pub message: String,
    /// Raw bytes of the checkpoint.
    pub raw_bytes: u64,
    /// Payload bytes it added to the store when packed.
    pub stored_bytes: u64,
    /// Blocks stored as deltas when packed.
    pub delta_blocks: u64,
    /// Deepest delta chain among its blocks (0 = all full).
    pub max_depth: u16,
    /// Whether some tensors were stored lossily.
    pub lossy: bool,
}

/// Storage figures of the store ([`stats`]).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StoreFigures {
    /// Versions, oldest first.
    pub versions: Vec<VersionFigures>,
    /// Sum of the raw sizes of all versions.
    pub raw_bytes: u64,
    /// Raw bytes of the distinct blocks (after dedup).
    pub unique_bytes: u64,
    /// Payload bytes of the distinct blocks (after dedup and encoding).
    pub payload_bytes: u64,
    /// Bytes of the pack files (payloads plus framing).
    pub pack_bytes: u64,
    /// Bytes of the manifests.
    pub manifest_bytes: u64,
    /// `raw_bytes / unique_bytes`.
    pub dedup_ratio: f64,
    /// `unique_bytes / payload_bytes`.
    pub compression_ratio: f64,
    /// `raw_bytes / (pack_bytes + manifest_bytes)`.
    pub total_ratio: f64,
    /// Distinct blocks.
    pub blocks: usize,
    /// Pack files.
    pub packs: usize,
}

/// Figures for every version (oldest first; versions packed in the same
/// second after their parents) and the whole store.
pub fn stats(store: &Store) -> Result<StoreFigures> {
    let mut rows = Vec::new();
    let mut manifest_bytes = 0;
    for id in store.versions()? {
        let m = store.manifest_summary(id)?;
        manifest_bytes += store.manifest_size(id);
        rows.push(super::LogEntry::new(id, super::LogState::Ok(Box::new(m))));
    }
    super::log::sort_by_time(store, &mut rows);
    let versions: Vec<VersionFigures> = rows
        .into_iter()
        .filter_map(|e| match e.state {
            super::LogState::Ok(m) => Some(VersionFigures {
                id: e.id,
                created: m.created,
                message: m.message,
                raw_bytes: m.stats.raw_bytes,
                stored_bytes: m.stats.stored_bytes,
                delta_blocks: m.stats.delta_blocks,
                max_depth: m.stats.max_depth,
                lossy: m.is_lossy,
            }),
            _ => None,
        })
        .collect();
    let s = store.stats()?;
    let raw_bytes: u64 = versions.iter().map(|v| v.raw_bytes).sum();
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    Ok(StoreFigures {
        raw_bytes,
        unique_bytes: s.raw_block_bytes,
        payload_bytes: s.payload_bytes,
        pack_bytes: s.pack_bytes,
        manifest_bytes,
        dedup_ratio: ratio(raw_bytes, s.raw_block_bytes),
        compression_ratio: ratio(s.raw_block_bytes, s.payload_bytes),
        total_ratio: ratio(raw_bytes, s.pack_bytes + manifest_bytes),
        blocks: s.blocks,
        packs: s.packs,
        versions,
    })
}

/// The refs (`HEAD` and tags) pointing at each version, for listings.
pub fn refs_by_version(store: &Store) -> Result<BTreeMap<Hash, Vec<String>>> {
    let mut by: BTreeMap<Hash, Vec<String>> = BTreeMap::new();
    if let Some(h) = store.read_ref("HEAD")? {
        by.entry(h).or_default().push("HEAD".into());
    }
    for (name, id) in store.refs()? {
        by.entry(id).or_default().push(name);
    }
    Ok(by)
}
