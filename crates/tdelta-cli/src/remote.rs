//! `tdelta remote`, `push`, `fetch`, `pull`, `clone`: sharing a store
//! through object storage.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde_json::json;
use tdelta::remote::{self, PushOptions, TransferReport};

use crate::progress::Bar;
use crate::{Global, open_store, print_json};

/// Remotes of the store.
#[derive(Subcommand)]
pub enum RemoteCmd {
    /// Add a remote: s3://bucket/prefix or file:///path. Credentials come
    /// from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    /// AWS_REGION, AWS_ENDPOINT_URL) and are never stored.
    Add {
        /// Its name (`origin`).
        name: String,
        /// Where it is.
        url: String,
        /// Use it when push, fetch and pull name no remote.
        #[arg(long)]
        default: bool,
        /// Endpoint of an S3-compatible service (http only on loopback).
        #[arg(long, value_name = "URL")]
        endpoint: Option<String>,
    },
    /// List remotes.
    List,
    /// Remove a remote (the remote's data is left alone).
    Remove {
        /// Its name.
        name: String,
    },
}

/// Options shared by the transfer commands.
#[derive(Args)]
pub struct TransferArgs {
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=64))]
    jobs: u32,
}

/// `tdelta push`.
#[derive(Args)]
pub struct PushArgs {
    /// Remote (default: the default remote).
    remote: Option<String>,
    /// Refs to move on the remote (default: every tag and HEAD).
    #[arg(name = "REF")]
    refs: Vec<String>,
    /// Move remote refs even to versions that do not descend from theirs
    /// (recorded in the remote's audit trail with --why).
    #[arg(long)]
    force: bool,
    /// Why (recorded in the remote's audit trail).
    #[arg(long, default_value = "")]
    why: String,
    #[command(flatten)]
    t: TransferArgs,
}

/// `tdelta pull`.
#[derive(Args)]
pub struct PullArgs {
    /// Remote (default: the default remote).
    remote: Option<String>,
    /// Only this ref (or HEAD); default every remote ref and HEAD.
    #[arg(name = "REF")]
    reference: Option<String>,
    /// Move the local ref even if it has versions the remote lacks.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    t: TransferArgs,
}

/// `tdelta clone`.
#[derive(Args)]
pub struct CloneArgs {
    /// The remote: s3://bucket/prefix or file:///path.
    url: String,
    /// Where the new store goes (default: the URL's last component).
    dir: Option<PathBuf>,
    /// Endpoint of an S3-compatible service (http only on loopback).
    #[arg(long, value_name = "URL")]
    endpoint: Option<String>,
    #[command(flatten)]
    t: TransferArgs,
}

pub fn remote_cmd(g: &Global, cmd: &RemoteCmd) -> Result<()> {
    let store = open_store(g)?;
    match cmd {
        RemoteCmd::Add { name, url, default, endpoint } => {
            let r = remote::add(&store, name, url, endpoint.as_deref(), *default)?;
            if g.json {
                print_json(&json!({"added": r.name, "url": r.url, "default": r.default}))?;
            } else if !g.quiet {
                eprintln!("added remote `{}` at {}", r.name, r.url);
            }
        }
        RemoteCmd::List => {
            let all = remote::list(&store)?;
            if g.json {
                let v: Vec<_> = all
                    .iter()
                    .map(|r| json!({"name": r.name, "url": r.url, "endpoint": r.endpoint, "default": r.default, "tracking": r.tracking}))
                    .collect();
                print_json(&json!(v))?;
            } else {
                for r in all {
                    let mark = if r.default { " (default)" } else { "" };
                    let ep = r.endpoint.map(|e| format!(" endpoint {e}")).unwrap_or_default();
                    println!("{}\t{}{ep}{mark}", r.name, r.url);
                }
            }
        }
        RemoteCmd::Remove { name } => {
            let r = remote::remove(&store, name)?;
            if g.json {
                print_json(&json!({"removed": r.name}))?;
            } else if !g.quiet {
                eprintln!("removed remote `{}`", r.name);
            }
        }
    }
    Ok(())
}

/// An engine error from a command on remote `remote`: the hint printed
/// with it names the remote (see [`hint`]).
#[derive(Debug)]
pub(crate) struct OnRemote {
    remote: String,
    source: tdelta::Error,
}

impl std::fmt::Display for OnRemote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.source.fmt(f)
    }
}

impl std::error::Error for OnRemote {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Marks an engine error as coming from a command on remote `remote`.
pub(crate) fn on(remote: &str) -> impl FnOnce(tdelta::Error) -> anyhow::Error + '_ {
    move |source| OnRemote { remote: remote.to_string(), source }.into()
}

/// What the user can do about an error of a command on a remote, in terms
/// of this command line (the library's messages are neutral): the text
/// appended to the message, with its separator.
pub(crate) fn hint(e: &anyhow::Error) -> Option<String> {
    use tdelta::Error as E;
    let on = e.chain().find_map(|c| c.downcast_ref::<OnRemote>())?;
    let name = &on.remote;
    let mut err = &on.source;
    while let E::InBlock { source, .. } = err {
        err = source;
    }
    Some(match err {
        // Damage to an object of the remote (`s3://...`, `file://...`).
        E::Corrupt { file, .. } if file.to_string_lossy().contains("://") => {
            format!("; `tdelta verify --remote {name}` names every damaged object of the remote")
        }
        E::Conflict { what, .. } if what.starts_with("remote `") => {
            format!("; pull first (`tdelta pull {name}`), or pass --force to replace it")
        }
        E::Conflict { what, .. } if what.starts_with("local `") => {
            format!("; push it to `{name}`, or pass --force to take the remote's")
        }
        E::NoStore { .. } => "; check the url, or push a store there first".to_string(),
        _ => return None,
    })
}

fn summary(g: &Global, verb: &str, remote: &str, r: &TransferReport) -> Result<()> {
    if g.json {
        return print_json(r);
    }
    for u in &r.refs {
        if u.status != "unchanged" {
            println!("{}\t{}\t{}", u.name, u.status, &u.new[..u.new.len().min(12)]);
        }
    }
    if !g.quiet {
        eprintln!(
            "{verb} {remote}: {} objects ({}), {} already there ({}), {:.1}s",
            r.objects_sent,
            crate::fmt::bytes(r.bytes_sent),
            r.objects_skipped,
            crate::fmt::bytes(r.bytes_skipped),
            r.seconds
        );
    }
    Ok(())
}

pub fn push(g: &Global, a: &PushArgs) -> Result<()> {
    let store = open_store(g)?;
    // `push REF` with one argument: a remote name wins, else it is a ref.
    let (name, refs) = split_remote(&store, a.remote.as_deref(), &a.refs)?;
    let r = remote::find(&store, name.as_deref())?;
    let opts = PushOptions { refs, force: a.force, why: a.why.clone(), jobs: a.t.jobs as usize };
    let bar = Bar::new(g.quiet);
    let report = remote::push(&store, &r, &opts, &bar)
        .map_err(on(&r.name))
        .with_context(|| format!("cannot push to remote `{}`", r.name))?;
    summary(g, "pushed to", &r.name, &report)
}

/// The first positional is a remote when it names one; otherwise it is the
/// first ref.
fn split_remote(store: &tdelta::Store, first: Option<&str>, rest: &[String]) -> Result<(Option<String>, Vec<String>)> {
    let Some(first) = first else { return Ok((None, rest.to_vec())) };
    if remote::list(store)?.iter().any(|r| r.name == first) {
        return Ok((Some(first.to_string()), rest.to_vec()));
    }
    let mut refs = vec![first.to_string()];
    refs.extend(rest.iter().cloned());
    Ok((None, refs))
}

pub fn fetch(g: &Global, name: Option<&str>, t: &TransferArgs) -> Result<()> {
    let store = open_store(g)?;
    let r = remote::find(&store, name)?;
    let bar = Bar::new(g.quiet);
    let report = remote::fetch(&store, &r, t.jobs as usize, &bar)
        .map_err(on(&r.name))
        .with_context(|| format!("cannot fetch from remote `{}`", r.name))?;
    summary(g, "fetched from", &r.name, &report)
}

pub fn pull(g: &Global, a: &PullArgs) -> Result<()> {
    let store = open_store(g)?;
    let (name, refs) = split_remote(&store, a.remote.as_deref(), a.reference.as_slice())?;
    if refs.len() > 1 {
        return Err(crate::exit::Usage("pull takes one REF; run it once per ref".into()).into());
    }
    let r = remote::find(&store, name.as_deref())?;
    drop(store);
    let bar = Bar::new(g.quiet);
    let report = remote::pull(&g.store(), &r, refs.first().map(String::as_str), a.force, a.t.jobs as usize, &bar)
        .map_err(on(&r.name))
        .with_context(|| format!("cannot pull from remote `{}`", r.name))?;
    summary(g, "pulled from", &r.name, &report)
}

pub fn clone(g: &Global, a: &CloneArgs) -> Result<()> {
    let dir = match &a.dir {
        Some(d) => d.clone(),
        None => {
            let last = a.url.trim_end_matches('/').rsplit('/').next().unwrap_or("");
            if last.is_empty() || last.contains(':') {
                return Err(crate::exit::Usage("name the new store's directory: tdelta clone URL DIR".into()).into());
            }
            PathBuf::from(last)
        }
    };
    let bar = Bar::new(g.quiet);
    let report = remote::clone(&a.url, a.endpoint.as_deref(), &dir, a.t.jobs as usize, &bar)
        .map_err(on("origin"))
        .with_context(|| format!("cannot clone into {}", dir.display()))?;
    if !g.quiet && !g.json {
        eprintln!("cloned into {}", dir.display());
    }
    summary(g, "cloned from", "origin", &report)
}

/// `tdelta verify --remote NAME`: exit status 3 when anything is damaged.
pub fn verify(g: &Global, name: &str) -> Result<()> {
    let store = open_store(g)?;
    let r = remote::find(&store, Some(name))?;
    let bar = Bar::new(g.quiet || g.json);
    let rep = remote::verify(&r, 8, &bar).map_err(on(&r.name))?;
    if g.json {
        print_json(&serde_json::to_value(&rep)?)?;
    } else {
        for p in &rep.problems {
            println!("DAMAGED  {}", crate::fmt::text(p));
        }
        for c in &rep.refs {
            let v = c.version.as_deref().map_or("-", |v| &v[..v.len().min(12)]);
            if c.problems.is_empty() {
                println!("ok       {}\t{v}", c.name);
            } else {
                println!("DAMAGED  {}\t{v}", c.name);
                for p in &c.problems {
                    println!("         {}", crate::fmt::text(p));
                }
            }
        }
        if !g.quiet {
            eprintln!(
                "checked {} objects ({}) and {} refs of remote `{}`",
                rep.objects_checked,
                crate::fmt::bytes(rep.bytes_checked),
                rep.refs.len(),
                r.name
            );
        }
    }
    if !rep.ok() {
        let n = rep.problems.len() + rep.refs.iter().filter(|c| !c.problems.is_empty()).count();
        return Err(
            crate::exit::Damaged(format!("verify found {n} damaged objects or refs on remote `{}`", r.name)).into()
        );
    }
    Ok(())
}

/// `tdelta gc --remote NAME [--grace D] [--dry-run]`.
pub fn gc(g: &Global, name: &str, grace: &str, dry_run: bool) -> Result<()> {
    let store = open_store(g)?;
    let r = remote::find(&store, Some(name))?;
    let grace = remote::parse_grace(grace).map_err(|e| crate::exit::Usage(e.to_string()))?;
    let rep = remote::gc(&r, grace, dry_run).map_err(on(&r.name))?;
    if g.json {
        return print_json(&serde_json::to_value(&rep)?);
    }
    for o in &rep.removed {
        println!("{}\t{o}", if dry_run { "would remove" } else { "removed" });
    }
    if !g.quiet {
        eprintln!(
            "remote `{}`: kept {} versions; {} {} objects ({}); kept {} unreferenced objects younger than the grace period",
            r.name,
            rep.versions_kept,
            if dry_run { "would remove" } else { "removed" },
            rep.removed.len(),
            crate::fmt::bytes(rep.bytes_removed),
            rep.young_kept
        );
    }
    Ok(())
}

/// True for the commands that talk to a remote over the network.
pub(crate) fn talks_to_remote(cmd: &crate::Cmd) -> bool {
    use crate::Cmd;
    match cmd {
        Cmd::Push(_) | Cmd::Fetch { .. } | Cmd::Pull(_) | Cmd::Clone(_) => true,
        Cmd::Unpack(a) => a.remote.is_some(),
        Cmd::Verify { remote, .. } | Cmd::Gc { remote, .. } => remote.is_some(),
        _ => false,
    }
}
