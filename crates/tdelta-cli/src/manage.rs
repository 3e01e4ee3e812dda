//! Version management commands: tag, tags, history, rollback, verify,
//! drop, gc, stats, diff.

use anyhow::{Result, bail};
use tdelta::{RollbackTarget, Store, TensorStatus};

use crate::exit::{Damaged, Usage};
use crate::progress::Bar;
use crate::{Global, fmt, open_store, print_json};

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
            return Err(Usage("`tag -d NAME` takes no version".into()).into());
        }
        let rep = tdelta::untag(&store, name, why)?;
        if g.json {
            return print_json(&rep);
        }
        if !g.quiet {
            eprintln!("deleted tag {name} (was {})", rep.old.map_or_else(String::new, |o| o.short()));
        }
        return Ok(());
    }
    let id = store.resolve(reference.unwrap_or("HEAD"))?;
    let rep = tdelta::tag(&store, name, id, force, why)?;
    if g.json {
        return print_json(&rep);
    }
    if !g.quiet {
        match rep.old {
            Some(o) if o != id => eprintln!("moved {name}: {} -> {}", o.short(), id.short()),
            Some(_) => eprintln!("{name} already points to {}", id.short()),
            None => eprintln!("created {name} -> {}", id.short()),
        }
    }
    Ok(())
}

pub fn tags(g: &Global) -> Result<()> {
    let store = open_store(g)?;
    let refs = tdelta::tags(&store)?;
    if g.json {
        return print_json(&refs);
    }
    for tdelta::TagEntry { name, id } in &refs {
        let m = store.manifest(*id);
        let msg = m.map(|m| m.message).unwrap_or_else(|e| format!("({e})"));
        println!("{name:<24} {}  {}", id.short(), fmt::text(&msg));
    }
    if refs.is_empty() && !g.quiet {
        eprintln!("no tags; create one with `tdelta tag NAME [REF]`");
    }
    Ok(())
}

/// `history NAME` (one ref's moves) or `history --all` (`name` None:
/// every audit entry). A damaged audit log is damage (exit 3).
pub fn history(g: &Global, name: Option<&str>) -> Result<()> {
    let store = open_store(g)?;
    // A damaged log is an engine error of kind `corrupt`: exit 3, with
    // the repair named.
    let h = tdelta::signed_history(&store, name)?;
    if g.json {
        return print_json(&h);
    }
    if h.is_empty() {
        match name {
            Some(n) => bail!("no history for `{n}`: it was never set"),
            None => bail!("the audit log is empty"),
        }
    }
    let opt = |x: Option<tdelta::Hash>| x.map_or_else(|| "-".repeat(12), |h| h.short());
    for tdelta::HistoryEntry { entry: e, signed_by: s } in &h {
        let r = if name.is_none() { format!("{:<16} ", e.r#ref.as_deref().unwrap_or("-")) } else { String::new() };
        let signed = s.as_ref().map(|s| format!("  signed {}", crate::key::signer_text(s))).unwrap_or_default();
        println!(
            "#{:<4} {}  {:<9} {r}{} -> {}  {}{signed}  {}",
            e.seq,
            fmt::time(e.time),
            fmt::text(e.op.as_str()),
            opt(e.old),
            opt(e.new),
            fmt::text(&e.who),
            fmt::text(&e.why)
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
        (Some(_), Some(_)) => return Err(Usage("give --to or --steps, not both".into()).into()),
    };
    let rep = tdelta::rollback(&store, name, target, why)?;
    if g.json {
        return print_json(&rep);
    }
    let (old, new) = (rep.old, rep.new);
    if !g.quiet {
        if old == new {
            eprintln!("{name} already points to {}; nothing changed", new.short());
        } else {
            eprintln!("{name}: {} -> {}", old.short(), new.short());
        }
    }
    Ok(())
}

pub fn verify(g: &Global, reference: Option<&str>, all: bool, require_signed: bool) -> Result<()> {
    let store = open_store(g)?;
    let ids = match (reference, all) {
        (Some(_), true) => return Err(Usage("give a version or --all, not both".into()).into()),
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
            println!("STORE    {}", fmt::text(&p.to_string()));
        }
        for v in &rep.versions {
            if v.problems.is_empty() {
                println!("ok       {}", v.id.short());
            } else {
                println!("DAMAGED  {}", v.id.short());
                for p in &v.problems {
                    println!("         {}", fmt::text(&p.to_string()));
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
        return Err(Damaged(format!("verify found {damaged} damaged versions or store files")).into());
    }
    Ok(())
}

pub fn drop(g: &Global, reference: &str, why: &str, dry_run: bool) -> Result<()> {
    let store = open_store(g)?;
    let id = store.resolve(reference)?;
    if dry_run {
        let p = tdelta::drop_dry_run(&store, id)?;
        return preview(g, &p);
    }
    let rep = tdelta::drop_version(&store, id, why)?;
    if g.json {
        return print_json(&rep);
    }
    if !g.quiet {
        eprintln!("dropped {}; run `tdelta gc` to free its blocks", id.short());
    }
    Ok(())
}

/// The result of `drop --dry-run` and `gc [--prune] --dry-run`.
fn preview(g: &Global, p: &tdelta::GcPreview) -> Result<()> {
    if g.json {
        return print_json(p);
    }
    for id in &p.dropped {
        println!("would drop {}", id.short());
    }
    println!(
        "would keep {} versions, remove {} blocks ({} packs deleted, {} rewritten) and free {}",
        p.versions,
        p.blocks_removed,
        p.packs_deleted,
        p.packs_rewritten,
        fmt::bytes(p.bytes_freed)
    );
    if !g.quiet {
        eprintln!("dry run: nothing was changed");
    }
    Ok(())
}

pub fn gc(g: &Global, prune: Option<usize>, why: &str, dry_run: bool) -> Result<()> {
    let mut store = open_store(g)?;
    if dry_run {
        let dropped = match prune {
            Some(keep_last) => tdelta::prune_candidates(&store, keep_last)?,
            None => Vec::new(),
        };
        let p = tdelta::gc_dry_run(&store, &dropped)?;
        return preview(g, &p);
    }
    let dropped = match prune {
        Some(keep_last) => tdelta::prune(&store, keep_last, if why.is_empty() { "gc --prune" } else { why })?,
        None => Vec::new(),
    };
    let mut rep = tdelta::gc(&mut store, why)?;
    rep.dropped = dropped;
    if g.json {
        return print_json(&rep);
    }
    if !g.quiet {
        for id in &rep.dropped {
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
            fmt::text(&v.message)
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
        let detail = match t.status {
            TensorStatus::Reshaped => {
                format!("{:?} -> {:?}", t.shape.0.clone().unwrap_or_default(), t.shape.1.clone().unwrap_or_default())
            }
            TensorStatus::DtypeChanged => format!("{:?} -> {:?}", t.dtype.0, t.dtype.1),
            _ => String::new(),
        };
        println!(
            "{:<14} {:<48} {:>10} {:>10} {:>12}  {detail}",
            t.status.name(),
            fmt::text(&t.name),
            t.changed_fraction.map_or("-".into(), |f| format!("{:.2}%", f * 100.0)),
            t.rel_l2.map_or("-".into(), |v| format!("{v:.3e}")),
            t.max_abs.map_or("-".into(), |v| format!("{v:.3e}")),
        );
    }
    for f in &rep.files {
        println!("{:<14} {}", f.status.name(), fmt::text(&f.path));
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
