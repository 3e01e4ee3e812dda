//! `tdelta log`: list versions (the query itself is `tdelta::log`).

use anyhow::Result;
use clap::Args;
use tdelta::{LogEntry, LogQuery, LogState};

use crate::exit::Damaged;
use crate::{Global, fmt, open_store, print_json};

#[derive(Args)]
pub struct LogArgs {
    /// Where to start.
    #[arg(name = "REF", default_value = "HEAD")]
    reference: String,
    /// Every version in the store, newest first, also those no longer on
    /// HEAD's line (left behind by a rollback or packed on another base).
    #[arg(long, conflicts_with = "REF")]
    all: bool,
    /// At most this many versions.
    #[arg(short = 'n', long)]
    max: Option<usize>,
    /// One line per version: id, refs, first line of the message.
    #[arg(long)]
    oneline: bool,
    /// Only versions whose metadata or metric KEY equals VALUE (repeatable);
    /// nested metrics by dotted keys, e.g. eval.gsm8k=0.5.
    #[arg(long = "where", value_name = "KEY=VALUE", value_parser = crate::parse_kv)]
    filters: Vec<(String, String)>,
    /// Sort by this metric (dotted for nested ones, e.g. eval.gsm8k) or by
    /// created, raw_bytes or stored_bytes: highest first (prefix `-` for
    /// lowest first).
    #[arg(long, value_name = "KEY", allow_hyphen_values = true)]
    sort: Option<String>,
}

pub fn run(g: &Global, a: &LogArgs) -> Result<()> {
    let store = open_store(g)?;
    let q = LogQuery {
        start: a.reference.clone(),
        all: a.all,
        filters: a.filters.clone(),
        sort: a.sort.clone(),
        max: a.max,
    };
    let rep = tdelta::log(&store, &q)?;
    if g.json {
        print_json(&rep.entries)?;
    } else {
        if rep.entries.is_empty() && !g.quiet {
            if rep.empty_store {
                eprintln!("the store has no versions yet; add one with `tdelta pack SOURCE`");
            } else {
                eprintln!("no version matches");
            }
        }
        for e in &rep.entries {
            print_entry(e, a.oneline);
        }
    }
    if rep.damaged > 0 {
        return Err(Damaged(format!(
            "log met {} damaged version{}; `tdelta verify --all` checks the store",
            rep.damaged,
            if rep.damaged == 1 { "" } else { "s" }
        ))
        .into());
    }
    Ok(())
}

fn print_entry(e: &LogEntry, oneline: bool) {
    let names = if e.refs.is_empty() { String::new() } else { format!(" ({})", e.refs.join(", ")) };
    let id = e.id.short();
    let m = match &e.state {
        LogState::Ok(m) => m,
        LogState::Dropped if oneline => return println!("{id}{names} [dropped]"),
        LogState::Dropped => return println!("version {id}{names} [dropped; the line ends here]\n"),
        LogState::Damaged(why) if oneline => return println!("{id}{names} [DAMAGED] {}", fmt::text(why)),
        LogState::Damaged(why) => return println!("version {id}{names} [DAMAGED]\n  {}\n", fmt::text(why)),
    };
    if oneline {
        let first = m.message.lines().next().unwrap_or("");
        println!("{id}{names} {}", fmt::text(first));
        return;
    }
    println!("version {id}{names}");
    println!("  date:    {}", fmt::time(m.created));
    println!("  author:  {}", fmt::text(&m.author));
    println!(
        "  size:    {} raw, {} stored ({})",
        fmt::bytes(m.stats.raw_bytes),
        fmt::bytes(m.stats.stored_bytes),
        fmt::percent(m.stats.stored_bytes, m.stats.raw_bytes)
    );
    if !m.meta.is_empty() {
        let ms: Vec<String> = m.meta.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("  meta:    {}", fmt::text(&ms.join(" ")));
    }
    if !m.metrics.is_empty() {
        let ms: Vec<String> = m.metrics.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("  metrics: {}", fmt::text(&ms.join(" ")));
    }
    if !m.message.is_empty() {
        println!();
        for line in m.message.lines() {
            println!("    {}", fmt::text(line));
        }
    }
    println!();
}
