//! Finding versions: walk a line of parents (or take every version),
//! filter on metadata and metrics, sort on a metric. One query for every
//! front-end (the CLI's `log`, bindings later).
//!
//! Only manifest summaries are read ([`Store::manifest_summary`]), so a
//! listing never builds a version's file and tensor lists. A version that
//! cannot be read, or a parent that is gone without a `drop` in the audit
//! log, becomes a [`LogState::Damaged`] entry instead of an error: the
//! listing shows what it can.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use serde_json::Value;

use crate::Hash;
use crate::store::Store;
use crate::store::manifest::ManifestSummary;
use crate::{Error, Result};

/// What [`log`] lists and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogQuery {
    /// Where the walk starts: a ref, an id or a prefix (default `HEAD`).
    pub start: String,
    /// Every version in the store, newest first, instead of one line.
    pub all: bool,
    /// `(KEY, VALUE)`: keep versions whose metadata KEY equals VALUE or
    /// whose metric KEY (dotted for nested objects: `eval.gsm8k`) equals
    /// it; all must hold.
    pub filters: Vec<(String, String)>,
    /// Sort on this metric (dotted), or on `created`, `raw_bytes` or
    /// `stored_bytes`: highest first, lowest first with a `-` prefix.
    pub sort: Option<String>,
    /// At most this many entries (after filtering and sorting).
    pub max: Option<usize>,
}

impl Default for LogQuery {
    fn default() -> Self {
        LogQuery { start: "HEAD".into(), all: false, filters: Vec::new(), sort: None, max: None }
    }
}

/// One version in a listing. Serialises to the JSON every front-end
/// prints: `id` and `refs`, then the summary's fields (`parent`, `created`,
/// `author`, `message`, `raw_bytes`, `stored_bytes`, `meta`, `metrics`,
/// `lossy`), or `"dropped": true`, or `"damaged": "why"`.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    /// The version.
    pub id: Hash,
    /// The refs (`HEAD`, tags) pointing to it.
    pub refs: Vec<String>,
    /// What could be read of it.
    pub state: LogState,
}

impl LogEntry {
    /// An entry no ref is known to point to.
    pub(crate) fn new(id: Hash, state: LogState) -> LogEntry {
        LogEntry { id, refs: Vec::new(), state }
    }
}

impl Serialize for LogEntry {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("id", &self.id)?;
        map.serialize_entry("refs", &self.refs)?;
        match &self.state {
            LogState::Ok(m) => {
                map.serialize_entry("parent", &m.parent)?;
                map.serialize_entry("created", &m.created)?;
                map.serialize_entry("author", &m.author)?;
                map.serialize_entry("message", &m.message)?;
                map.serialize_entry("raw_bytes", &m.stats.raw_bytes)?;
                map.serialize_entry("stored_bytes", &m.stats.stored_bytes)?;
                map.serialize_entry("meta", &m.meta)?;
                map.serialize_entry("metrics", &m.metrics)?;
                map.serialize_entry("lossy", &m.is_lossy)?;
            }
            LogState::Dropped => map.serialize_entry("dropped", &true)?,
            LogState::Damaged(why) => map.serialize_entry("damaged", why)?,
        }
        map.end()
    }
}

/// Whether a listed version could be read.
#[derive(Debug, Clone, PartialEq)]
pub enum LogState {
    /// Its summary.
    Ok(Box<ManifestSummary>),
    /// Deleted by `drop` (the audit log says so); the line ends here.
    Dropped,
    /// Unreadable, or missing without a `drop`: what is wrong. The line
    /// ends here (its parent is unknown).
    Damaged(String),
}

/// What [`log`] found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LogReport {
    /// The versions listed, in the order asked for.
    pub entries: Vec<LogEntry>,
    /// The store has no version at all (`HEAD` is unset and nothing is
    /// stored).
    pub empty_store: bool,
    /// Damaged entries met (also those filtered out or cut by `max`).
    pub damaged: usize,
}

/// Lists versions as `q` asks. A bad sort key is
/// [`Error::InvalidChoice`]; damage is reported in the entries.
pub fn log(store: &Store, q: &LogQuery) -> Result<LogReport> {
    let mut rep = LogReport::default();
    let mut rows = if q.all {
        let ids = store.versions()?;
        rep.empty_store = ids.is_empty();
        let mut dropped = None;
        let mut rows: Vec<LogEntry> = ids
            .into_iter()
            .map(|id| LogEntry::new(id, read_noting_drops(store, id, &mut dropped)))
            // Dropped since the listing was taken.
            .filter(|e| e.state != LogState::Dropped)
            .collect();
        sort_by_time(store, &mut rows);
        rows.reverse();
        rows
    } else {
        match store.resolve(&q.start) {
            // Without filter or sort, the first `max` are all it needs.
            Ok(id) => walk(store, id, q.max.filter(|_| q.filters.is_empty() && q.sort.is_none()))?,
            Err(Error::NoVersions { .. }) => {
                rep.empty_store = store.versions()?.is_empty();
                Vec::new()
            }
            Err(e) => return Err(e),
        }
    };
    rep.damaged = rows.iter().filter(|e| matches!(e.state, LogState::Damaged(_))).count();
    if !q.filters.is_empty() {
        // Damaged entries stay: whether they match is unknown.
        rows.retain(|e| match &e.state {
            LogState::Ok(m) => q.filters.iter().all(|(k, v)| matches(m, k, v)),
            _ => true,
        });
    }
    if let Some(key) = &q.sort {
        sort_on(&mut rows, key)?;
    }
    if let Some(n) = q.max {
        rows.truncate(n);
    }
    let refs = super::refs_by_version(store)?;
    for e in &mut rows {
        e.refs = refs.get(&e.id).cloned().unwrap_or_default();
    }
    rep.entries = rows;
    Ok(rep)
}

/// The summary of `id`, or why not.
fn read(store: &Store, id: Hash) -> LogState {
    match store.manifest_summary(id) {
        Ok(m) => LogState::Ok(Box::new(m)),
        Err(Error::UnknownRef { .. }) => LogState::Damaged(format!("version {} is missing from the store", id.short())),
        Err(e) => LogState::Damaged(e.to_string()),
    }
}

/// [`read`], telling a version the audit log says was dropped
/// ([`LogState::Dropped`]) from a lost one; `dropped` caches the log.
fn read_noting_drops(store: &Store, id: Hash, dropped: &mut Option<HashSet<Hash>>) -> LogState {
    let state = read(store, id);
    if matches!(state, LogState::Damaged(_))
        && !store.has_version(id)
        && dropped.get_or_insert_with(|| dropped_versions(store)).contains(&id)
    {
        return LogState::Dropped;
    }
    state
}

/// `id` and its ancestors, newest first, up to the first version that is
/// gone or unreadable (included, marked), at most `limit` of them.
fn walk(store: &Store, id: Hash, limit: Option<usize>) -> Result<Vec<LogEntry>> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut dropped: Option<HashSet<Hash>> = None;
    let mut next = Some(id);
    while let Some(id) = next.take() {
        if limit.is_some_and(|n| out.len() >= n) {
            break;
        }
        if !seen.insert(id) {
            out.push(LogEntry::new(id, LogState::Damaged(format!("version {} is its own ancestor", id.short()))));
            break;
        }
        let state = read_noting_drops(store, id, &mut dropped);
        if let LogState::Ok(m) = &state {
            next = m.parent;
        }
        out.push(LogEntry::new(id, state));
    }
    Ok(out)
}

/// Versions the audit log records as dropped (empty if it is unreadable:
/// a missing version then counts as damage).
fn dropped_versions(store: &Store) -> HashSet<Hash> {
    store
        .audit_log()
        .map(|rep| rep.entries.into_iter().filter(|e| e.op == "drop").filter_map(|e| e.new).collect())
        .unwrap_or_default()
}

/// Oldest first by creation time; versions created in the same second
/// in the order the audit log recorded their packing, else after their
/// ancestors, then in id order.
pub(crate) fn sort_by_time(store: &Store, rows: &mut [LogEntry]) {
    let mut packed: HashMap<Hash, u64> = HashMap::new();
    if let Ok(rep) = store.audit_log() {
        for e in rep.entries.iter().filter(|e| e.op == "pack") {
            if let Some(id) = e.new {
                packed.entry(id).or_insert(e.seq);
            }
        }
    }
    let parents: HashMap<Hash, Option<Hash>> =
        rows.iter().map(|e| (e.id, if let LogState::Ok(m) = &e.state { m.parent } else { None })).collect();
    let depth = |mut id: Hash| {
        let mut d = 0usize;
        while let Some(Some(p)) = parents.get(&id) {
            d += 1;
            id = *p;
            if d > parents.len() {
                break;
            }
        }
        d
    };
    let created = |e: &LogEntry| if let LogState::Ok(m) = &e.state { m.created } else { 0 };
    rows.sort_by_cached_key(|e| (created(e), packed.get(&e.id).copied().unwrap_or(u64::MAX), depth(e.id), e.id));
}

/// The value at a dotted `key`: the whole key first (keys may contain
/// dots), then one object level per dot.
pub fn lookup<'a>(map: &'a serde_json::Map<String, Value>, key: &str) -> Option<&'a Value> {
    if let Some(v) = map.get(key) {
        return Some(v);
    }
    key.match_indices('.').map(|(i, _)| i).find_map(|i| match map.get(&key[..i]) {
        Some(Value::Object(inner)) => lookup(inner, &key[i + 1..]),
        _ => None,
    })
}

/// Metric `key` of a version (see [`lookup`]).
fn metric<'a>(m: &'a ManifestSummary, key: &str) -> Option<&'a Value> {
    if let Some(v) = m.metrics.get(key) {
        return Some(v);
    }
    key.match_indices('.').map(|(i, _)| i).find_map(|i| match m.metrics.get(&key[..i]) {
        Some(Value::Object(inner)) => lookup(inner, &key[i + 1..]),
        _ => None,
    })
}

/// Whether a value equals the text given on the command line: strings as
/// text, numbers by value (`1.50` matches `1.5`), others as JSON.
fn value_eq(x: &Value, v: &str) -> bool {
    match x {
        Value::String(s) => s == v,
        Value::Number(n) => v.parse::<f64>().ok() == n.as_f64(),
        other => serde_json::from_str::<Value>(v).is_ok_and(|p| p == *other),
    }
}

fn matches(m: &ManifestSummary, key: &str, v: &str) -> bool {
    m.meta.get(key).is_some_and(|x| x == v) || metric(m, key).is_some_and(|x| value_eq(x, v))
}

/// Keys [`LogQuery::sort`] takes besides metrics.
const BUILTIN_SORT_KEYS: [&str; 3] = ["created", "raw_bytes", "stored_bytes"];

fn sort_value(m: &ManifestSummary, key: &str) -> Option<f64> {
    if let Some(v) = metric(m, key) {
        return v.as_f64();
    }
    match key {
        "created" => Some(m.created as f64),
        "raw_bytes" => Some(m.stats.raw_bytes as f64),
        "stored_bytes" => Some(m.stats.stored_bytes as f64),
        _ => None,
    }
}

/// Every numeric metric path (dotted) of the listed versions.
fn numeric_keys(rows: &[LogEntry]) -> Vec<String> {
    fn walk(prefix: &str, map: &serde_json::Map<String, Value>, out: &mut Vec<String>) {
        for (k, v) in map {
            let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
            match v {
                Value::Number(_) => out.push(path),
                Value::Object(inner) => walk(&path, inner, out),
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    for e in rows {
        if let LogState::Ok(m) = &e.state {
            let map: serde_json::Map<String, Value> = m.metrics.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            walk("", &map, &mut out);
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Sorts on `key` (see [`LogQuery::sort`]); versions without the value,
/// then damaged ones, go last.
fn sort_on(rows: &mut [LogEntry], key: &str) -> Result<()> {
    let (key, asc) = key.strip_prefix('-').map_or((key, false), |k| (k, true));
    let known = BUILTIN_SORT_KEYS.contains(&key)
        || rows.iter().any(|e| matches!(&e.state, LogState::Ok(m) if sort_value(m, key).is_some()));
    if !known && !rows.is_empty() {
        let mut valid = numeric_keys(rows);
        valid.extend(BUILTIN_SORT_KEYS.iter().map(|s| s.to_string()));
        return Err(Error::InvalidChoice { what: "sort key".into(), value: key.into(), valid });
    }
    let val = |e: &LogEntry| if let LogState::Ok(m) = &e.state { sort_value(m, key) } else { None };
    rows.sort_by(|x, y| match (val(x), val(y)) {
        (Some(a), Some(b)) => {
            if asc {
                a.total_cmp(&b)
            } else {
                b.total_cmp(&a)
            }
        }
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_lookup_prefers_whole_keys() {
        let v: Value = serde_json::json!({"eval": {"gsm8k": 0.5, "a.b": {"c": 1}}, "eval.gsm8k": 0.9});
        let Value::Object(map) = v else { unreachable!() };
        assert_eq!(lookup(&map, "eval.gsm8k"), Some(&serde_json::json!(0.9)));
        assert_eq!(lookup(&map, "eval.a.b.c"), Some(&serde_json::json!(1)));
        assert_eq!(lookup(&map, "eval.nope"), None);
    }
}
