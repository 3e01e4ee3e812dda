//! `tdelta repair`: let an owner continue after store files were damaged
//! or changed outside tdelta, recording what was done.

use anyhow::Result;
use clap::Subcommand;
use serde_json::json;

use crate::{Global, open_store, print_json};

#[derive(Subcommand)]
pub enum RepairCmd {
    /// Bring the audit log and the refs back into agreement.
    ///
    /// A damaged audit.log is copied aside as audit.log.damaged-<time>
    /// (never deleted) and replaced by its longest valid prefix; a missing
    /// one is started anew. Refs changed outside tdelta are recorded as
    /// they are (op `repair`), together with one entry saying what was done
    /// and where every ref points. Writes nothing when nothing needs it.
    Audit {
        /// Why (recorded in the audit log).
        #[arg(long, default_value = "")]
        why: String,
    },
}

pub fn run(g: &Global, cmd: &RepairCmd) -> Result<()> {
    match cmd {
        RepairCmd::Audit { why } => audit(g, why),
    }
}

fn audit(g: &Global, why: &str) -> Result<()> {
    let store = open_store(g)?;
    let rep = tdelta::repair_audit(&store, why)?;
    if g.json {
        return print_json(&json!(rep));
    }
    if g.quiet {
        return Ok(());
    }
    if rep.entries_appended == 0 && rep.pending.is_none() {
        eprintln!("nothing to repair: the audit log is intact and agrees with every ref");
        return Ok(());
    }
    if let Some(p) = &rep.log_problem {
        eprintln!("audit log: {p}");
        match &rep.set_aside {
            Some(a) => {
                eprintln!("  kept {} valid entries; the damaged file is kept as {}", rep.kept_entries, a.display())
            }
            None => eprintln!("  started a new log"),
        }
    }
    if let Some(p) = &rep.pending {
        eprintln!("pending ref move: {p}");
    }
    for r in &rep.refs_recorded {
        let s = |h: Option<tdelta::Hash>| h.map_or_else(|| "(none)".into(), |h| h.short());
        let why = if rep.log_problem.is_some() { "" } else { " (changed outside tdelta)" };
        eprintln!("recorded {}: {} -> {}{why}", r.name, s(r.logged), s(r.current));
    }
    for r in &rep.unreadable_refs {
        eprintln!("left {r} as it is: it cannot be read (see `tdelta verify`)");
    }
    eprintln!("appended {} audit entries", rep.entries_appended);
    Ok(())
}
