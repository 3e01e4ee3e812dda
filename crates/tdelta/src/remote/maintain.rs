//! Checking and cleaning a remote: `tdelta verify --remote NAME` and
//! `tdelta gc --remote NAME`.
//!
//! Both read the remote as a store ([`Store::open_with`] over its
//! backend, read-only). gc removes the immutable objects no remote ref
//! needs, except those younger than a grace period: a push writes its
//! objects before it moves a ref, so a push under way (shorter than the
//! grace period) never loses what it sent. See FORMAT.md, "Remote layout".

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

use super::config::Remote;
use super::local_side::{self, Kind};
use super::transfer::{open, parallel, read_remote_ref};
use crate::backend::Backend;
use crate::backend::object::ObjectStoreBackend;
use crate::store::refs;
use crate::{Error, Hash, Progress, Result, Store};

/// A remote ref as verify saw it.
#[derive(Debug, Clone, Serialize)]
pub struct RemoteRefCheck {
    /// The ref (`HEAD`, `stable`).
    pub name: String,
    /// Its version, when the ref could be read.
    pub version: Option<String>,
    /// What is wrong with it (empty: its version is whole on the remote).
    pub problems: Vec<String>,
}

/// What `verify --remote` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RemoteVerifyReport {
    /// The remote's URL.
    pub remote: String,
    /// Objects read and checked.
    pub objects_checked: u64,
    /// Their bytes.
    pub bytes_checked: u64,
    /// Damaged objects, each naming the object.
    pub problems: Vec<String>,
    /// Every ref and `HEAD`.
    pub refs: Vec<RemoteRefCheck>,
}

impl RemoteVerifyReport {
    /// True when nothing is damaged.
    pub fn ok(&self) -> bool {
        self.problems.is_empty() && self.refs.iter().all(|r| r.problems.is_empty())
    }
}

/// Opens the remote as a read-only store.
fn remote_store(b: &ObjectStoreBackend) -> Result<Store> {
    Store::open_with(Arc::new(b.clone()) as Arc<dyn Backend>)
}

/// Every ref object name on the remote, with `HEAD` last.
fn ref_names(b: &ObjectStoreBackend) -> Result<Vec<String>> {
    let mut names: Vec<String> = b
        .list("refs/")?
        .into_iter()
        .filter_map(|m| m.name.strip_prefix("refs/").map(str::to_string))
        .filter(|n| refs::validate_ref_name(n).is_ok())
        .collect();
    match b.head("HEAD") {
        Ok(_) => names.push("HEAD".into()),
        Err(Error::NotFound { .. }) => {}
        Err(e) => return Err(e),
    }
    Ok(names)
}

/// Checks every object of the remote (packs hash to their names, indexes
/// parse against their packs, manifests hash to their ids, signatures
/// verify) and every ref (its version and everything that version needs
/// are there).
pub fn verify(remote: &Remote, jobs: usize, progress: &dyn Progress) -> Result<RemoteVerifyReport> {
    let b = open(remote)?;
    let mut rep = RemoteVerifyReport { remote: b.describe(), ..RemoteVerifyReport::default() };
    let mut objects = Vec::new();
    for prefix in ["packs/", "versions/", "signatures/versions/"] {
        for m in b.list(prefix)? {
            objects.push(m);
        }
    }
    let sizes: std::collections::HashMap<String, u64> = objects.iter().map(|m| (m.name.clone(), m.size)).collect();
    let problems = std::sync::Mutex::new(Vec::new());
    let checked = AtomicU64::new(0);
    let bytes = AtomicU64::new(0);
    progress.begin("verify remote", objects.iter().map(|m| m.size).sum());
    parallel(jobs, &objects, |m| {
        let Some(kind) = Kind::of(&m.name) else { return Ok(()) };
        let where_ = std::path::PathBuf::from(format!("{}/{}", b.describe(), m.name));
        let partner = match kind {
            Kind::Index(id) => Some(crate::store::pack_name(id)),
            Kind::Signature(id) => Some(crate::store::version_name(id)),
            _ => None,
        };
        if let Some(p) = partner.filter(|p| !sizes.contains_key(p)) {
            problems.lock().unwrap_or_else(|e| e.into_inner()).push(format!("{}: {p} is missing", where_.display()));
            return Ok(());
        }
        let r = check_object(&b, &m.name, m.size, kind, &sizes, progress);
        checked.fetch_add(1, Ordering::Relaxed);
        bytes.fetch_add(m.size, Ordering::Relaxed);
        match r {
            Ok(()) => Ok(()),
            Err(e @ Error::Corrupt { .. }) => {
                problems.lock().unwrap_or_else(|e| e.into_inner()).push(e.to_string());
                Ok(())
            }
            Err(e) => Err(e),
        }
    })?;
    progress.end();
    rep.problems = problems.into_inner().unwrap_or_else(|e| e.into_inner());
    rep.objects_checked = checked.into_inner();
    rep.bytes_checked = bytes.into_inner();

    let store = remote_store(&b)?;
    for name in ref_names(&b)? {
        let mut check = RemoteRefCheck { name: name.clone(), version: None, problems: Vec::new() };
        match read_remote_ref(&b, &name) {
            Ok(Some((id, _))) => {
                check.version = Some(id.to_string());
                if let Err(e) = local_side::needed_objects(&store, &[id]) {
                    check.problems.push(format!("version {} is not whole on the remote: {e}", id.short()));
                }
            }
            Ok(None) => {}
            Err(e @ Error::Corrupt { .. }) => check.problems.push(e.to_string()),
            Err(e) => return Err(e),
        }
        rep.refs.push(check);
    }
    Ok(rep)
}

/// Reads one remote object whole and checks it (see [`verify`]).
fn check_object(
    b: &ObjectStoreBackend,
    name: &str,
    size: u64,
    kind: Kind,
    sizes: &std::collections::HashMap<String, u64>,
    progress: &dyn Progress,
) -> Result<()> {
    let where_ = std::path::PathBuf::from(format!("{}/{name}", b.describe()));
    match kind {
        Kind::Pack(id) => {
            let mut h = id.algo().hasher(crate::Domain::Pack);
            b.get_with(name, &mut |chunk| {
                h.update(chunk);
                progress.advance(chunk.len() as u64);
                Ok(())
            })?;
            let actual = h.finish();
            if actual != id {
                return Err(Error::corrupt_as(
                    crate::error::CorruptKind::HashMismatch,
                    &where_,
                    format!("the pack's content hashes to {actual}, not to its name"),
                ));
            }
            Ok(())
        }
        _ => {
            let (bytes, _) = b.get(name, 1 << 34)?;
            progress.advance(size);
            match kind {
                Kind::Index(id) => {
                    let pack_len = sizes.get(&crate::store::pack_name(id)).copied().unwrap_or(0);
                    crate::store::pack::decode_index(&where_, &bytes, 0, pack_len).map(|_| ())
                }
                Kind::Version(id) => crate::store::manifest::Manifest::decode_summary(&bytes, id)
                    .map(|_| ())
                    .map_err(|e| crate::Error::format(&where_, e)),
                Kind::Signature(id) => crate::store::sign::check_bytes(&where_, &bytes, id).map(|_| ()),
                Kind::Pack(_) => Ok(()),
            }
        }
    }
}

/// What `gc --remote` did (or would do, with `dry_run`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RemoteGcReport {
    /// The remote's URL.
    pub remote: String,
    /// Versions kept: the remote refs' and their lines.
    pub versions_kept: u64,
    /// Objects removed (or that would be).
    pub removed: Vec<String>,
    /// Their bytes.
    pub bytes_removed: u64,
    /// Unreachable objects kept because they are younger than the grace
    /// period (a push may be under way).
    pub young_kept: u64,
    /// Nothing was removed.
    pub dry_run: bool,
}

/// Removes the immutable objects (packs, indexes, manifests, version
/// signatures) no remote ref needs and older than `grace`: manifests and
/// signatures first, then indexes, then packs, so that a reader never
/// sees an index without its pack.
pub fn gc(remote: &Remote, grace: Duration, dry_run: bool) -> Result<RemoteGcReport> {
    let b = open(remote)?;
    let mut rep = RemoteGcReport { remote: b.describe(), dry_run, ..RemoteGcReport::default() };
    // The objects first, then the refs: an object a push sends after this
    // listing is not a candidate, and one listed here is younger than the
    // grace period if a push under way sent it.
    let mut objects = Vec::new();
    for prefix in ["packs/", "versions/", "signatures/versions/"] {
        objects.extend(b.list(prefix)?);
    }
    let store = remote_store(&b)?;
    if !store.damaged_packs().is_empty() {
        return Err(Error::corrupt(
            b.locate("packs/"),
            format!("the remote has damaged packs ({})", store.damaged_packs().join("; ")),
        ));
    }
    let mut tips: Vec<Hash> = Vec::new();
    for name in ref_names(&b)? {
        if let Some((id, _)) = read_remote_ref(&b, &name)? {
            tips.push(id);
        }
    }
    let versions = local_side::lines(&store, &tips)?;
    rep.versions_kept = versions.len() as u64;
    let keep: HashSet<String> = local_side::needed_objects(&store, &versions)?.into_iter().map(|o| o.name).collect();
    let now = crate::store::now();
    let mut doomed: Vec<(usize, String, u64)> = Vec::new();
    for m in objects {
        let Some(kind) = Kind::of(&m.name) else { continue };
        if keep.contains(&m.name) {
            continue;
        }
        // Unknown age counts as young.
        let old = m.modified.is_some_and(|t| now.saturating_sub(t) >= grace.as_secs());
        if !old {
            rep.young_kept += 1;
            continue;
        }
        let order = match kind {
            Kind::Version(_) => 0,
            Kind::Signature(_) => 1,
            Kind::Index(_) => 2,
            Kind::Pack(_) => 3,
        };
        doomed.push((order, m.name, m.size));
    }
    doomed.sort();
    for (_, name, size) in doomed {
        if !dry_run {
            b.delete(&name)?;
        }
        rep.bytes_removed += size;
        rep.removed.push(name);
    }
    Ok(rep)
}

/// Parses a grace period: a number followed by `s`, `m`, `h` or `d`.
pub fn parse_grace(text: &str) -> Result<Duration> {
    let bad =
        || Error::InvalidArgument(format!("grace period `{text}` not understood; use a number and s, m, h or d (24h)"));
    let t = text.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(bad()),
    };
    n.checked_mul(secs).map(Duration::from_secs).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_periods_parse_and_bad_ones_list_the_units() {
        assert_eq!(parse_grace("0s").unwrap(), Duration::ZERO);
        assert_eq!(parse_grace("90m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_grace("24h").unwrap(), Duration::from_secs(86400));
        assert_eq!(parse_grace("7d").unwrap(), Duration::from_secs(7 * 86400));
        for bad in ["", "h", "12", "1w", "-1h", "99999999999999999999d"] {
            let e = parse_grace(bad).unwrap_err().to_string();
            assert!(e.contains("s, m, h or d"), "{bad}: {e}");
        }
    }
}
