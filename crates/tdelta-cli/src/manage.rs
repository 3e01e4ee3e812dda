//! Version management commands: tag, tags, history, rollback, verify,
//! drop, gc, stats, diff.

use anyhow::{Result, bail};
use serde_json::json;
use tdelta::{RollbackTarget, Store, TensorStatus};

use crate::progress::Bar;
use crate::{Global, fmt, open_store, print_json};

/// `verify` found damage: exit status 3.
#[derive(Debug)]
pub struct Damaged(pub usize);

impl std::fmt::Display for Damaged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "verify found {} damaged versions or store files", self.0)
    }
}

impl std::error::Error for Damaged {}

pub fn tag(
    g: &Global,
    name: &str,
    reference: Option<&str>,
    delete: bool,
    force: bool,
    why: &str,
    sign: &crate::key::SignArgs,
) -> Result<()> {
    let mut store = open_store(g)?;
    sign.apply(&mut store)?;
    if delete {
        if reference.is_some() {
            bail!("`tag -d NAME` takes no version");
        }
        let old = tdelta::untag(&store, name, why)?;
        if g.json {
            return print_json(&json!({"tag": name, "deleted": true, "old": old}));
        }
        if !g.quiet {
            eprintln!("deleted tag {name} (was {})", old.short());
        }
        return Ok(());
    }
    let id = store.resolve(reference.unwrap_or("HEAD"))?;
    let old = tdelta::tag(&store, name, id, force, why)?;
    if g.json {
        return print_json(&json!({"tag": name, "id": id, "old": old}));
    }
    if !g.quiet {
        match old {
            Some(o) if o != id => eprintln!("moved {name}: {} -> {}", o.short(), id.short()),
            Some(_) => eprintln!("{name} already points to {}", id.short()),
            None => eprintln!("created {name} -> {}", id.short()),
        }
    }
    Ok(())
}

pub fn tags(g: &Global) -> Result<()> {
    let store = open_store(g)?;
    let refs = store.refs()?;
    if g.json {
        let v: Vec<_> = refs.iter().map(|(n, id)| json!({"name": n, "id": id})).collect();
        return print_json(&json!(v));
    }
    for (name, id) in &refs {
        let m = store.manifest(*id);
        let msg = m.map(|m| m.message).unwrap_or_else(|e| format!("({e})"));
        println!("{name:<24} {}  {msg}", id.short());
    }
    if refs.is_empty() && !g.quiet {
        eprintln!("no tags; create one with `tdelta tag NAME [REF]`");
    }
    Ok(())
}

pub fn history(g: &Global, name: &str) -> Result<()> {
    let store = open_store(g)?;
    let h = tdelta::history(&store, name)?;
    let signers = tdelta::move_signers(&store, &h)?;
    if g.json {
        let mut v = serde_json::to_value(&h)?;
        for (e, s) in v.as_array_mut().into_iter().flatten().zip(&signers) {
            e["signed_by"] = json!(s);
        }
        return print_json(&v);
    }
    if h.is_empty() {
        bail!("no history for `{name}`: it was never set");
    }
    let opt = |x: Option<tdelta::Hash>| x.map_or_else(|| "-".repeat(12), |h| h.short());
    for (e, s) in h.iter().zip(&signers) {
        let signed = s.as_ref().map(|s| format!("  signed {}", crate::key::signer_text(s))).unwrap_or_default();
        println!(
            "#{:<4} {}  {:<9} {} -> {}  {}{signed}  {}",
            e.seq,
            fmt::time(e.time),
            e.op,
            opt(e.old),
            opt(e.new),
            e.who,
            e.why
        );
    }
    Ok(())
}

pub fn rollback(
    g: &Global,
    name: &str,
    to: Option<&str>,
    steps: Option<usize>,
    why: &str,
    sign: &crate::key::SignArgs,
) -> Result<()> {
    let mut store = open_store(g)?;
    sign.apply(&mut store)?;
    let target = match (to, steps) {
        (Some(r), None) => RollbackTarget::Version(store.resolve(r)?),
        (None, n) => RollbackTarget::Steps(n.unwrap_or(1)),
        (Some(_), Some(_)) => bail!("give --to or --steps, not both"),
    };
    let (old, new) = tdelta::rollback(&store, name, target, why)?;
    if g.json {
        return print_json(&json!({"ref": name, "old": old, "new": new}));
    }
    if !g.quiet {
        eprintln!("{name}: {} -> {}", old.short(), new.short());
    }
    Ok(())
}

pub fn verify(g: &Global, reference: Option<&str>, all: bool, require_signed: bool) -> Result<()> {
    let store = open_store(g)?;
    let ids = match (reference, all) {
        (Some(_), true) => bail!("give a version or --all, not both"),
        (Some(r), false) => vec![store.resolve(r)?],
        (None, true) => store.versions()?,
        (None, false) => match store.resolve("HEAD") {
            Ok(id) => vec![id],
            // Reported below with the other store problems.
            Err(tdelta::Error::HeadMissing { .. }) => Vec::new(),
            Err(e) => return Err(e.into()),
        },
    };
    let bar = Bar::new(g.quiet || g.json);
    let rep = tdelta::verify(&store, &ids, &bar)?;
    let mut damaged = rep.versions.iter().filter(|v| !v.problems.is_empty()).count() + rep.store_problems.len();
    if g.json {
        let mut v = serde_json::to_value(&rep)?;
        let signed = crate::key::verify(g, &store, require_signed)?;
        damaged += signed.damage;
        v["signatures"] = signed.json;
        print_json(&v)?;
    } else {
        damaged += crate::key::verify(g, &store, require_signed)?.damage;
        for p in &rep.store_problems {
            println!("STORE    {p}");
        }
        for v in &rep.versions {
            if v.problems.is_empty() {
                println!("ok       {}", v.id.short());
            } else {
                println!("DAMAGED  {}", v.id.short());
                for p in &v.problems {
                    println!("         {p}");
                }
            }
        }
        if !g.quiet {
            eprintln!(
                "checked {} versions: {} distinct blocks, {} decoded and hash-checked",
                rep.versions.len(),
                rep.blocks_checked,
                fmt::bytes(rep.bytes_checked)
            );
        }
    }
    if damaged > 0 {
        return Err(Damaged(damaged).into());
    }
    Ok(())
}

pub fn drop(g: &Global, reference: &str, why: &str) -> Result<()> {
    let store = open_store(g)?;
    let id = store.resolve(reference)?;
    tdelta::drop_version(&store, id, why)?;
    if g.json {
        return print_json(&json!({"dropped": id}));
    }
    if !g.quiet {
        eprintln!("dropped {}; run `tdelta gc` to free its blocks", id.short());
    }
    Ok(())
}

pub fn gc(g: &Global, prune: Option<usize>, why: &str) -> Result<()> {
    let mut store = open_store(g)?;
    let dropped = match prune {
        Some(keep_last) => tdelta::prune(&store, keep_last, if why.is_empty() { "gc --prune" } else { why })?,
        None => Vec::new(),
    };
    let rep = tdelta::gc(&mut store, why)?;
    if g.json {
        let mut v = serde_json::to_value(&rep)?;
        v["dropped"] = json!(dropped);
        return print_json(&v);
    }
    if !g.quiet {
        for id in &dropped {
            eprintln!("dropped {}", id.short());
        }
        eprintln!(
            "kept {} versions; removed {} blocks ({} packs deleted, {} rewritten); packs {} -> {} (freed {})",
            rep.versions,
            rep.blocks_removed,
            rep.packs_deleted,
            rep.packs_rewritten,
            fmt::bytes(rep.bytes_before),
            fmt::bytes(rep.bytes_after),
            fmt::bytes(rep.bytes_before.saturating_sub(rep.bytes_after))
        );
    }
    Ok(())
}

pub fn stats(g: &Global, reference: Option<&str>) -> Result<()> {
    let store = open_store(g)?;
    let mut st = tdelta::stats(&store)?;
    if let Some(r) = reference {
        let id = store.resolve(r)?;
        st.versions.retain(|v| v.id == id);
    }
    if g.json {
        return print_json(&serde_json::to_value(&st)?);
    }
    let refs = tdelta::refs_by_version(&store)?;
    println!(
        "{:<12} {:>11} {:>11} {:>8} {:>7} {:>5} {:<6} message",
        "version", "raw", "added", "ratio", "deltas", "depth", "kind"
    );
    for v in &st.versions {
        let names = refs.get(&v.id).map(|r| format!(" ({})", r.join(", "))).unwrap_or_default();
        println!(
            "{:<12} {:>11} {:>11} {:>8} {:>7} {:>5} {:<6} {}{names}",
            v.id.short(),
            fmt::bytes(v.raw_bytes),
            fmt::bytes(v.stored_bytes),
            fmt::percent(v.stored_bytes, v.raw_bytes),
            v.delta_blocks,
            v.max_depth,
            if v.lossy { "LOSSY" } else { "exact" },
            v.message
        );
    }
    if reference.is_none() {
        println!(
            "\nstore: {} versions, {} raw in all; {} distinct blocks ({} raw, dedup {:.2}x) stored in {} ({} packs, compression {:.2}x); the store is {} of raw",
            st.versions.len(),
            fmt::bytes(st.raw_bytes),
            st.blocks,
            fmt::bytes(st.unique_bytes),
            st.dedup_ratio,
            fmt::bytes(st.pack_bytes + st.manifest_bytes),
            st.packs,
            st.compression_ratio,
            fmt::percent(st.pack_bytes + st.manifest_bytes, st.raw_bytes)
        );
    }
    Ok(())
}

pub fn diff(g: &Global, a: &str, b: &str, all: bool) -> Result<()> {
    let store: Store = open_store(g)?;
    let (ia, ib) = (store.resolve(a)?, store.resolve(b)?);
    let rep = tdelta::diff(&store, ia, ib)?;
    if g.json {
        return print_json(&serde_json::to_value(&rep)?);
    }
    let unchanged = rep.tensors.iter().filter(|t| t.status == TensorStatus::Unchanged).count();
    println!("{:<14} {:<48} {:>10} {:>10} {:>12}  detail", "status", "tensor", "changed", "rel L2", "max |Δ|");
    for t in &rep.tensors {
        if t.status == TensorStatus::Unchanged && !all {
            continue;
        }
        let status = serde_json::to_value(t.status)?.as_str().unwrap_or("?").to_string();
        let detail = match t.status {
            TensorStatus::Reshaped => {
                format!("{:?} -> {:?}", t.shape.0.clone().unwrap_or_default(), t.shape.1.clone().unwrap_or_default())
            }
            TensorStatus::DtypeChanged => format!("{:?} -> {:?}", t.dtype.0, t.dtype.1),
            _ => String::new(),
        };
        println!(
            "{:<14} {:<48} {:>10} {:>10} {:>12}  {detail}",
            status,
            t.name,
            t.changed_fraction.map_or("-".into(), |f| format!("{:.2}%", f * 100.0)),
            t.rel_l2.map_or("-".into(), |v| format!("{v:.3e}")),
            t.max_abs.map_or("-".into(), |v| format!("{v:.3e}")),
        );
    }
    for f in &rep.files {
        println!("{:<14} {}", f.status, f.path);
    }
    if !g.quiet {
        eprintln!(
            "{} -> {}: {} tensors differ, {unchanged} unchanged{}",
            ia.short(),
            ib.short(),
            rep.tensors.len() - unchanged,
            if all { "" } else { " (hidden; --all shows them)" }
        );
    }
    Ok(())
}
