//! `tdelta`: store many versions of a model checkpoint compactly and
//! restore any of them bit-exactly.
// Doc comments here are clap's help text, written for the terminal:
// brackets and angle brackets in them are not rustdoc links or HTML.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

mod bench;
mod demo;
mod exit;
mod fmt;
mod info;
mod key;
mod log;
mod manage;
mod progress;
mod remote;
mod repair;
mod restore;
mod series;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use tdelta::{Hash, Store};

use crate::progress::Bar;

#[derive(Parser)]
#[command(
    name = "tdelta",
    version,
    about = "Tensor-aware delta storage for model checkpoints",
    long_about = "Stores many versions of a safetensors checkpoint (a file or a Hugging Face \
                  directory) compactly: tensors are cut into blocks, identical blocks are stored \
                  once, changed blocks are stored as bit-exact deltas against the previous \
                  version, and everything is compressed. Any version restores byte for byte.",
    after_help = "Start with `tdelta demo` to see it work on generated checkpoints, or:\n  \
                  tdelta init\n  tdelta pack ./checkpoint-1000 -m \"step 1000\"\n  \
                  tdelta pack ./checkpoint-2000 -m \"step 2000\" --tag best\n  tdelta log\n  \
                  tdelta unpack best -o ./restored"
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args)]
pub(crate) struct Global {
    /// Store directory [env: TDELTA_STORE] [default: .tdelta].
    #[arg(long = "store", global = true, value_name = "STORE")]
    pub store_arg: Option<PathBuf>,
    /// Who is acting, recorded in new versions and the audit log by every
    /// writing command [default: $TDELTA_AUTHOR, else $USER@host].
    #[arg(long, global = true, value_name = "NAME")]
    pub author: Option<String>,
    /// Print machine-readable JSON on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// No progress bars or summaries on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Subcommand)]
pub(crate) enum Cmd {
    /// Create an empty store.
    Init {
        /// Raw block size (e.g. 1M, 256K; 4K..=64M); fixed for the store's life.
        #[arg(long, value_parser = fmt::parse_block_size)]
        block_size: Option<u32>,
    },
    /// Store a checkpoint (a .safetensors file or a directory) as a new
    /// version; print its id.
    ///
    /// The new version is stored as deltas against the version HEAD points
    /// to (or --base); HEAD then points to the new version.
    Pack(PackArgs),
    /// Restore a version (a ref, an id or a unique id prefix), or parts of
    /// it, to a file or directory, checking every block.
    ///
    /// OUT must not exist (or be an empty directory) unless --force; the
    /// output appears whole or not at all, and nothing the version does not
    /// contain is ever removed.
    Unpack(restore::UnpackArgs),
    /// Write one file of a version (REF:PATH), or one tensor (--tensor),
    /// to stdout.
    Cat(restore::CatArgs),
    /// List versions from HEAD (or REF) back through their parents.
    ///
    /// Shows what it can: a damaged or missing version is listed and marked,
    /// and the exit status is then 3.
    Log(log::LogArgs),
    /// Show one version: metadata, metrics, storage figures, files.
    Show {
        /// Version: HEAD, a tag, an id or an id prefix.
        #[arg(name = "REF", default_value = "HEAD")]
        reference: String,
        /// Also list every tensor.
        #[arg(long)]
        tensors: bool,
    },
    /// Point a tag (release channel) at a version, or delete it with -d.
    ///
    /// Names like `stable`, `canary`, `exp/lr-3e-5`. An existing tag moves
    /// only with --force. Every move is recorded (see `tdelta history`).
    Tag {
        /// Tag name.
        name: String,
        /// Version (default HEAD).
        #[arg(name = "REF")]
        reference: Option<String>,
        /// Delete the tag.
        #[arg(short, long)]
        delete: bool,
        /// Move the tag even if it points elsewhere.
        #[arg(long)]
        force: bool,
        /// Why (recorded in the history).
        #[arg(long, default_value = "")]
        why: String,
        #[command(flatten)]
        sign: key::SignArgs,
    },
    /// List tags and the versions they point to.
    Tags,
    /// Every move of a ref (tag or HEAD): time, who, old -> new, why; with
    /// --all, every entry of the audit log (packs, drops, gc too).
    ///
    /// A damaged audit log is an error naming the entry (exit status 3).
    History {
        /// Tag name or HEAD.
        #[arg(required_unless_present = "all")]
        name: Option<String>,
        /// Every entry of the audit log.
        #[arg(long, conflicts_with = "name")]
        all: bool,
    },
    /// Move a tag (or HEAD) back to an earlier version in one atomic step.
    ///
    /// Without --to, goes back --steps versions (default 1) in the ref's own
    /// history; rolling forward again is the same command.
    Rollback {
        /// Tag name or HEAD.
        name: String,
        /// The version to go back to.
        #[arg(long, value_name = "REF")]
        to: Option<String>,
        /// How many earlier targets of the ref to go back.
        #[arg(long)]
        steps: Option<usize>,
        /// Why (recorded in the history).
        #[arg(long, default_value = "")]
        why: String,
        #[command(flatten)]
        sign: key::SignArgs,
    },
    /// Decode every block of a version (default HEAD) or of --all versions
    /// and check every hash, the config, packs, refs and the audit log, and
    /// that every ref is where the log's last move of it says. Exit status
    /// 3 when anything is damaged.
    Verify {
        /// Version to check.
        #[arg(name = "REF")]
        reference: Option<String>,
        /// Check every version.
        #[arg(long)]
        all: bool,
        /// Also report, as damage, every version a ref points to and every
        /// ref move in the audit log not signed by a trusted key.
        #[arg(long)]
        require_signed: bool,
        /// Check this remote instead: every object hashes to its name and
        /// every remote ref's version is whole there.
        #[arg(long, value_name = "NAME", conflicts_with_all = ["REF", "all", "require_signed"])]
        remote: Option<String>,
    },
    /// Delete a version no ref points to; `tdelta gc` then frees its blocks.
    Drop {
        /// Version.
        #[arg(name = "REF")]
        reference: String,
        /// Why (recorded in the audit log).
        #[arg(long, default_value = "")]
        why: String,
        /// Change nothing: show what would go and the bytes a following
        /// gc would free.
        #[arg(long)]
        dry_run: bool,
    },
    /// Remove blocks no version needs, rewriting packs; report bytes freed.
    ///
    /// Versions are deleted only when asked: with `tdelta drop REF`, or here
    /// with --prune, which first drops every version that no tag or HEAD
    /// points to and that is not among the --keep-last newest versions of
    /// HEAD's line.
    Gc {
        /// Drop unreferenced versions first (see above).
        #[arg(long)]
        prune: bool,
        /// With --prune: also keep this many newest versions of HEAD's line.
        #[arg(long, default_value_t = 0, requires = "prune")]
        keep_last: usize,
        /// Why (recorded in the audit log).
        #[arg(long, default_value = "")]
        why: String,
        /// Change nothing: show what would be dropped and removed, and the
        /// bytes that would be freed.
        #[arg(long)]
        dry_run: bool,
        /// Clean this remote instead: remove the objects no remote ref
        /// needs that are older than --grace.
        #[arg(long, value_name = "NAME", conflicts_with = "prune")]
        remote: Option<String>,
        /// With --remote: keep unreferenced objects younger than this (a
        /// push may be under way): a number and s, m, h or d.
        #[arg(long, default_value = "24h", requires = "remote")]
        grace: String,
    },
    /// The store's path, format, hash algorithm, block size, backend and
    /// counts (versions, packs, blocks, bytes, refs).
    Info,
    /// Upgrade a format-1 store (xxh3-128 ids) to format 2 (BLAKE3 ids) so
    /// that it can be written to again.
    ///
    /// Existing versions keep their ids and stay readable; new blocks and
    /// versions get 64-digit BLAKE3 ids. Only the store config is
    /// rewritten, atomically: an interrupted upgrade leaves format 1.
    Upgrade,
    /// Raw vs stored bytes per version and for the whole store.
    Stats {
        /// Only this version.
        #[arg(name = "REF")]
        reference: Option<String>,
    },
    /// Compare two versions tensor by tensor (from the store, nothing is
    /// restored to disk): added, removed, reshaped, changed with relative
    /// L2 change and max |Δ|, most changed first.
    Diff {
        /// First version.
        a: String,
        /// Second version.
        b: String,
        /// Also list unchanged tensors.
        #[arg(long)]
        all: bool,
    },
    /// Generate a series of realistic checkpoints, pack them into a fresh
    /// store, restore each one and check it is bit-exact.
    ///
    /// With --store, the fresh store is made there and kept (it must not
    /// exist yet); TDELTA_STORE is not used.
    Demo(demo::DemoArgs),
    /// Compare storage strategies (raw, zstd, byte planes, XOR deltas,
    /// tdelta policies, lossy) on a series of checkpoints (in temporary
    /// stores: --store is refused).
    Bench(bench::BenchArgs),
    /// Let an owner continue after store files were damaged or changed
    /// outside tdelta; every repair is recorded in the audit log.
    #[command(subcommand)]
    Repair(repair::RepairCmd),
    /// Signing keys: generate one, trust a public key, list trusted keys.
    #[command(subcommand)]
    Key(key::KeyCmd),
    /// Remotes (object storage: s3://bucket/prefix, file:///path) to share
    /// the store through: add, list, remove.
    #[command(subcommand)]
    Remote(remote::RemoteCmd),
    /// Send the versions a remote lacks, then move its refs (default: every
    /// tag and HEAD) by compare-and-swap; a ref that moved elsewhere on the
    /// remote is refused unless --force.
    Push(remote::PushArgs),
    /// Download the versions a remote has and the store lacks, and record
    /// its refs (local refs do not move).
    Fetch {
        /// Remote (default: the default remote).
        remote: Option<String>,
        #[command(flatten)]
        t: remote::TransferArgs,
    },
    /// Fetch, then move local refs to the remote's (only forward, unless
    /// --force).
    Pull(remote::PullArgs),
    /// Create a store from a remote (remote `origin`) with its refs.
    Clone(remote::CloneArgs),
}

#[derive(Args)]
struct PackArgs {
    /// A .safetensors file or a checkpoint directory (a Hugging Face cache
    /// snapshot, models--org--name/snapshots/REV, works as it is).
    source: PathBuf,
    /// Message describing the version.
    #[arg(short, long, default_value = "")]
    message: String,
    /// Point this tag at the new version.
    #[arg(long)]
    tag: Option<String>,
    /// Move --tag even if it already points elsewhere.
    #[arg(long)]
    force: bool,
    /// Delta base: a ref or id (default HEAD), or `none` for no deltas.
    #[arg(long)]
    base: Option<String>,
    /// Delta depth policy: near:K, chain:K, keyframe:K, root or full
    /// (README, "Choosing a delta policy").
    #[arg(long, default_value_t = tdelta::Policy::default(), value_parser = parse_policy)]
    policy: tdelta::Policy,
    /// zstd level, 1..=19.
    #[arg(long, default_value_t = tdelta::codec::EncodeParams::default().level, value_parser = clap::value_parser!(i32).range(1..=19))]
    level: i32,
    /// Metadata KEY=VALUE (repeatable).
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = parse_kv)]
    meta: Vec<(String, String)>,
    /// Metric KEY=VALUE (repeatable): VALUE is a number, true/false, or JSON
    /// (an object, an array, a "quoted string"), e.g. --metric eval_loss=1.93.
    #[arg(long = "metric", value_name = "KEY=VALUE", value_parser = parse_metric)]
    metrics: Vec<(String, serde_json::Value)>,
    /// Metrics from a JSON object file (e.g. eval results); --metric wins on
    /// the same key.
    #[arg(long = "metrics", value_name = "FILE.json")]
    metrics_file: Option<PathBuf>,
    /// LOSSY: store float tensors as quantized deltas with codes of this
    /// width (int8, int4 or int2). Each block is quantized as coarsely as
    /// its target allows: --max-error, else the width's nominal error of
    /// each tensor's change (int8 1%, int4 10%, int2 45%). Blocks where the
    /// exact delta is smaller, or lossy would save under 10%, stay exact.
    /// The error is measured and recorded in the version; never the default.
    #[arg(long, value_name = "WIDTH", value_parser = ["int8", "int4", "int2"])]
    lossy: Option<String>,
    /// With --lossy: bound on each tensor's relative L2 error of the delta
    /// (‖restored − new‖ / ‖new − base‖), e.g. 0.01: the coarsest step
    /// within it is used; blocks the width cannot bring within it get wider
    /// codes or stay exact.
    #[arg(long, value_name = "E", requires = "lossy")]
    max_error: Option<f64>,
    /// With --lossy: keep tensors whose name matches PATTERN exact (`*`
    /// matches anything; repeatable), e.g. '*norm*' '*.bias'.
    #[arg(long, value_name = "PATTERN", requires = "lossy")]
    keep_exact: Vec<String>,
    /// With --lossy: elements per group (each group has its own scale
    /// exponent; groups whose changes all round to zero cost one byte).
    #[arg(long, value_name = "G", requires = "lossy", default_value_t = tdelta::lossy::DEFAULT_GROUP)]
    group: u32,
    /// Store only files whose path (relative to SOURCE, `/`-separated)
    /// matches GLOB (repeatable; `*` also matches `/`), e.g. '*.safetensors'.
    #[arg(long, value_name = "GLOB")]
    include: Vec<String>,
    /// Leave out files and directories matching GLOB (repeatable; wins over
    /// --include), e.g. 'optimizer/' '*.pt'. Always left out: `.git/`,
    /// `.cache/huggingface/` and the store's own directory.
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,
    #[command(flatten)]
    sign: key::SignArgs,
}

fn main() -> ExitCode {
    // Like other Unix tools, stop quietly when the reader of our output
    // goes away (`tdelta log | head`) instead of failing to print.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of a signal, before any
    // other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => return exit::clap_error(&e),
    };
    #[cfg(unix)]
    if remote::talks_to_remote(&cli.cmd) {
        // SAFETY: as above, still before any other thread exists. A server
        // that goes away mid-request must be an error, not a death by
        // SIGPIPE (HTTP clients write to sockets with writev, which raises
        // it).
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        }
    }
    let json = cli.global.json;
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => exit::report(&e, json),
    }
}

fn run(cli: Cli) -> Result<()> {
    let g = &cli.global;
    match cli.cmd {
        Cmd::Init { block_size } => cmd_init(g, block_size),
        Cmd::Pack(a) => cmd_pack(g, &a),
        Cmd::Unpack(a) => restore::unpack(g, &a),
        Cmd::Cat(a) => restore::cat(g, &a),
        Cmd::Log(a) => log::run(g, &a),
        Cmd::Show { reference, tensors } => cmd_show(g, &reference, tensors),
        Cmd::Demo(a) => demo::run(g, &a),
        Cmd::Tag { name, reference, delete, force, why, sign } => {
            manage::tag(g, &name, reference.as_deref(), delete, force, &why, &sign)
        }
        Cmd::Tags => manage::tags(g),
        Cmd::History { name, all } => manage::history(g, name.as_deref().filter(|_| !all)),
        Cmd::Rollback { name, to, steps, why, sign } => manage::rollback(g, &name, to.as_deref(), steps, &why, &sign),
        Cmd::Verify { remote: Some(r), .. } => remote::verify(g, &r),
        Cmd::Verify { reference, all, require_signed, remote: None } => {
            manage::verify(g, reference.as_deref(), all, require_signed)
        }
        Cmd::Drop { reference, why, dry_run } => manage::drop(g, &reference, &why, dry_run),
        Cmd::Gc { remote: Some(r), grace, dry_run, .. } => remote::gc(g, &r, &grace, dry_run),
        Cmd::Gc { prune, keep_last, why, dry_run, remote: None, .. } => {
            manage::gc(g, prune.then_some(keep_last), &why, dry_run)
        }
        Cmd::Stats { reference } => manage::stats(g, reference.as_deref()),
        Cmd::Info => info::info(g),
        Cmd::Upgrade => info::upgrade(g),
        Cmd::Diff { a, b, all } => manage::diff(g, &a, &b, all),
        Cmd::Bench(a) => bench::run(g, &a),
        Cmd::Repair(r) => repair::run(g, &r),
        Cmd::Key(k) => key::run(g, &k),
        Cmd::Remote(r) => remote::remote_cmd(g, &r),
        Cmd::Push(a) => remote::push(g, &a),
        Cmd::Fetch { remote, t } => remote::fetch(g, remote.as_deref(), &t),
        Cmd::Pull(a) => remote::pull(g, &a),
        Cmd::Clone(a) => remote::clone(g, &a),
    }
}

impl Global {
    /// The store directory: --store, else `TDELTA_STORE`, else `.tdelta`.
    pub fn store(&self) -> PathBuf {
        self.store_arg
            .clone()
            .or_else(|| std::env::var_os("TDELTA_STORE").filter(|v| !v.is_empty()).map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(".tdelta"))
    }
}

fn lock_notice(holder: &str) {
    eprintln!("waiting for the store lock held by {}", fmt::text(holder));
}

pub(crate) fn open_store(g: &Global) -> Result<Store> {
    let mut store = Store::open(&g.store())?;
    store.author.clone_from(&g.author);
    if !g.quiet {
        store.lock_notice = Some(lock_notice);
    }
    // For scripts and tests that should not wait the full minute.
    if let Some(secs) = std::env::var("TDELTA_LOCK_WAIT").ok().and_then(|v| v.parse::<f64>().ok()) {
        store.lock_wait = std::time::Duration::from_secs_f64(secs.clamp(0.0, 86_400.0));
    }
    Ok(store)
}

/// Prints a result (a report of the engine, serialised as every front-end
/// serialises it) as pretty JSON on stdout.
pub(crate) fn print_json<T: serde::Serialize + ?Sized>(v: &T) -> Result<()> {
    exit::printed_json();
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn cmd_init(g: &Global, block_size: Option<u32>) -> Result<()> {
    let mut opts = tdelta::InitOptions::default();
    if let Some(bs) = block_size {
        opts.block_size = bs;
    }
    let store = Store::init(&g.store(), &opts)?;
    if g.json {
        print_json(&tdelta::InitReport::of(&store))?;
    } else if !g.quiet {
        eprintln!(
            "initialized an empty store at {} (block size {})",
            store.root().display(),
            fmt::bytes(u64::from(store.config().block_size))
        );
    }
    Ok(())
}

/// `KEY=VALUE` with a non-empty KEY (a clap value parser).
pub(crate) fn parse_kv(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

/// `KEY=VALUE` where VALUE is a number, `true`/`false`, or JSON (object,
/// array, quoted string).
fn parse_metric(s: &str) -> Result<(String, serde_json::Value), String> {
    let (k, v) = parse_kv(s)?;
    match serde_json::from_str::<serde_json::Value>(v.trim()) {
        Ok(serde_json::Value::Null) | Err(_) => Err(format!(
            "`{v}` is not a metric value; valid values are: a number, true, false, or JSON (an object, \
             an array, a \"quoted string\")"
        )),
        Ok(val) => Ok((k, val)),
    }
}

fn parse_policy(s: &str) -> Result<tdelta::Policy, String> {
    s.parse().map_err(|e: tdelta::Error| e.to_string())
}

fn cmd_pack(g: &Global, a: &PackArgs) -> Result<()> {
    let mut store = open_store(g)?;
    a.sign.apply(&mut store)?;
    let mut opts = tdelta::PackOptions {
        message: a.message.clone(),
        tag: a.tag.clone(),
        force_tag: a.force,
        policy: a.policy,
        include: a.include.clone(),
        exclude: a.exclude.clone(),
        ..Default::default()
    };
    opts.encode.level = a.level;
    if let Some(w) = &a.lossy {
        opts.lossy = Some(tdelta::lossy::LossyOptions {
            bits: w.parse()?,
            group: a.group,
            max_error: a.max_error,
            keep_exact: a.keep_exact.clone(),
        });
    }
    opts.meta = a.meta.iter().cloned().collect();
    if let Some(f) = &a.metrics_file {
        let text = std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{}: not valid JSON", f.display()))?;
        let serde_json::Value::Object(map) = v else {
            bail!("{}: metrics must be a JSON object", f.display());
        };
        opts.metrics.extend(map);
    }
    opts.metrics.extend(a.metrics.iter().cloned());
    opts.base = match a.base.as_deref() {
        None => tdelta::BaseChoice::Head,
        Some("none") => tdelta::BaseChoice::None,
        Some(r) => tdelta::BaseChoice::Version(store.resolve(r)?),
    };
    let bar = Bar::new(g.quiet || g.json);
    let rep = tdelta::pack(&mut store, &a.source, &opts, &bar)
        .with_context(|| format!("cannot pack {}", a.source.display()))?;
    let (s, secs) = (&rep.stats, rep.seconds);
    if g.json {
        print_json(&rep)?;
    } else {
        println!("{}", rep.id);
        if !g.quiet {
            eprintln!(
                "packed {} in {:.2}s ({}): stored {} ({} of raw), {} new blocks ({} deltas), {} reused",
                fmt::bytes(s.raw_bytes),
                secs,
                fmt::mbps(s.raw_bytes, secs),
                fmt::bytes(s.stored_bytes),
                fmt::percent(s.stored_bytes, s.raw_bytes),
                s.new_blocks,
                s.delta_blocks,
                s.reused_blocks
            );
            if rep.skipped > 0 {
                eprintln!("skipped {} files (default skips, the store, --include/--exclude)", rep.skipped);
            }
            if let Some(l) = &rep.manifest.lossy {
                eprintln!("{}", lossy_line(l));
            }
        }
    }
    Ok(())
}

/// One line saying a version is LOSSY and how far from its source.
pub(crate) fn lossy_line(l: &tdelta::LossyRecord) -> String {
    format!(
        "LOSSY: {} codes, delta rel-L2 {} (worst tensor {}); restores are not bit-exact to the source",
        l.bits,
        pct(l.delta_rel_l2),
        pct(l.max_tensor_delta_rel_l2),
    )
}

/// A ratio as a percentage with 3 decimals, `-` when unknown.
fn pct(x: Option<f64>) -> String {
    x.map_or_else(|| "-".to_string(), |x| format!("{:.3}%", x * 100.0))
}

fn cmd_show(g: &Global, reference: &str, tensors: bool) -> Result<()> {
    let store = open_store(g)?;
    let rep = tdelta::show(&store, store.resolve(reference)?)?;
    if g.json {
        return print_json(&rep);
    }
    print_manifest(&rep, tensors);
    Ok(())
}

/// The `LOSSY` lines of `show`: settings, totals, then the worst tensors.
fn print_lossy(l: &tdelta::LossyRecord) {
    let f = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |x| format!("{x:.3e}"));
    let bound = l.max_error.map_or_else(|| "none".to_string(), |x| format!("{:.3}%", x * 100.0));
    println!(
        "LOSSY    {} codes, groups of {}, bound on delta rel-L2 {}{}; {} lossy blocks, {} exact",
        l.bits,
        l.group,
        bound,
        if l.keep_exact.is_empty() {
            String::new()
        } else {
            format!(", kept exact: {}", fmt::text(&l.keep_exact.join(" ")))
        },
        l.lossy_blocks,
        l.exact_blocks,
    );
    println!(
        "LOSSY    error: delta rel-L2 {} (worst tensor {}), weight rel-L2 {}, max abs {}",
        pct(l.delta_rel_l2),
        pct(l.max_tensor_delta_rel_l2),
        pct(l.weight_rel_l2),
        f(l.max_abs_err),
    );
    let mut tensors: Vec<&tdelta::LossyTensor> = l.tensors.iter().collect();
    let n = tensors.len();
    tensors.sort_by(|a, b| {
        let k = |t: &tdelta::LossyTensor| t.delta_rel_l2.unwrap_or(f64::INFINITY);
        k(b).total_cmp(&k(a))
    });
    println!(
        "LOSSY    {n} lossy tensors, worst first:  delta rel-L2  weight rel-L2  max abs  blocks int2/int4/int8/exact"
    );
    for t in tensors.iter().take(10) {
        let b = &t.blocks;
        println!(
            "  {:<46} {:>12} {:>14} {:>9}  {}/{}/{}/{}",
            fmt::text(&t.name),
            pct(t.delta_rel_l2),
            pct(t.weight_rel_l2),
            f(t.max_abs_err),
            b.int2,
            b.int4,
            b.int8,
            b.exact,
        );
    }
    if n > 10 {
        println!("  … {} more (tdelta log --json shows them all)", n - 10);
    }
}

fn print_manifest(rep: &tdelta::ShowReport, tensors: bool) {
    let (id, m) = (rep.id, &rep.manifest);
    println!("version  {id}");
    if !rep.refs.is_empty() {
        println!("refs     {}", rep.refs.join(", "));
    }
    let opt = |h: Option<Hash>| h.map_or_else(|| "-".to_string(), |h| h.short());
    println!("parent   {}", opt(m.parent));
    println!("base     {}", opt(m.base));
    println!("date     {}", fmt::time(m.created));
    println!("author   {}", fmt::text(&m.author));
    match &rep.signed_by {
        tdelta::Signature::Signed(Some(s)) => println!("signed   {}", key::signer_text(s)),
        tdelta::Signature::Signed(None) => println!("signed   no"),
        tdelta::Signature::Problem { problem } => println!("signed   DAMAGED: {problem}"),
    }
    println!("message  {}", fmt::text(&m.message));
    for (k, v) in &m.meta {
        println!("meta     {} = {}", fmt::text(k), fmt::text(v));
    }
    for (k, v) in &m.metrics {
        println!("metric   {} = {}", fmt::text(k), fmt::text(&v.to_string()));
    }
    let s = &m.stats;
    println!(
        "storage  {} raw, {} added ({}); {} new blocks ({} deltas, depth ≤ {}), {} reused; policy {}, blocks of {}",
        fmt::bytes(s.raw_bytes),
        fmt::bytes(s.stored_bytes),
        fmt::percent(s.stored_bytes, s.raw_bytes),
        s.new_blocks,
        s.delta_blocks,
        s.max_depth,
        s.reused_blocks,
        m.policy,
        fmt::bytes(u64::from(m.block_size))
    );
    if let Some(l) = &m.lossy {
        print_lossy(l);
    }
    println!("files    {}", m.files.len());
    for f in &m.files {
        let n = f.tensors().len();
        let kind = if matches!(f.content, tdelta::FileContent::Safetensors { .. }) {
            format!("{n} tensors")
        } else {
            "blob".into()
        };
        println!("  {:<48} {:>12}  {kind}  {}", fmt::text(&f.path), fmt::bytes(f.size), f.hash.short());
        if tensors {
            for t in f.tensors() {
                println!(
                    "    {:<46} {:<8} {:<20} {:>12}",
                    fmt::text(&t.name),
                    t.dtype.name(),
                    format!("{:?}", t.shape),
                    fmt::bytes(t.len)
                );
            }
        }
    }
}
