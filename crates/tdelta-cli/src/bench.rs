//! `tdelta bench`: compare storage strategies on a checkpoint series.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use tdelta_dev::bench::{BenchOptions, BenchReport, StrategyResult};

use crate::Global;
use crate::fmt;
use crate::progress::Bar;
use crate::series::SeriesArgs;

#[derive(Args)]
#[command(
    long_about = "Stores the same series of checkpoints with several strategies, each in a fresh \
                  temporary store, restores every version of every strategy, checks each restore \
                  against the source by hash, and prints bytes stored and pack/restore speeds side \
                  by side.\n\n\
                  Strategies (--strategies, comma-separated):\n  \
                  raw           every file copied as it is\n  \
                  zstd[:LEVEL]  every whole file through zstd (one thread; default level 3)\n  \
                  zipnn         per block: byte planes (exponent apart) + zstd, no delta (ZipNN-like)\n  \
                  bitx          per block: XOR with the previous version + byte planes + zstd \
                  (BitX-like); restoring version N decodes the whole XOR chain\n  \
                  bitx:first    the same, XOR with the first version (the base model)\n  \
                  tdelta:POLICY a tdelta store; POLICY is near:K, chain:K, keyframe:K, root or full \
                  (the `tdelta:` prefix may be left out)\n  \
                  tdelta:BITS[:POLICY]  lossy tdelta: deltas quantized to BITS = int8, int4 or int2 \
                  (default policy: the store default, near:3); the table shows the error recorded at pack\n\
                  Default: raw,zstd:3,zipnn,bitx,near:3,chain:3,chain:8,keyframe:4,root,full,int8:root,int4:root.\n\n\
                  Reading the table: `stored` is what the store holds on disk after the last \
                  version (`% raw` of the series); `per version` is the mean cost of one more \
                  checkpoint after the first; `pack` is source MB (10^6 B) stored per second; \
                  `newest` and `worst` are restore speeds of the newest version and of the slowest \
                  one to restore (vN); `levels` is the deepest chain one block needed; `exact` says \
                  every version restored bit-exactly (`lossy`: restored and checked against the recorded \
                  reconstruction, with `error` = largest absolute error and relative L2 error of the \
                  weights, worst version); `peak RSS` is the resident-memory high-water \
                  mark while the strategy ran (Linux), page cache of mapped checkpoints included.",
    after_help = "Examples:\n  \
                  tdelta bench --generate --versions 10 --size 512M\n  \
                  tdelta bench ./runs/ckpts --strategies zstd,bitx,chain:8 --csv out.csv --svg out.svg\n  \
                  tdelta bench step-1000.safetensors step-2000.safetensors step-3000.safetensors\n  \
                  tdelta --json bench --generate > bench.json"
)]
pub struct BenchArgs {
    /// Checkpoints (.safetensors files or checkpoint directories) in version
    /// order, or one directory whose entries are the checkpoints (taken in
    /// name order).
    #[arg(value_name = "PATH", required_unless_present = "generate", conflicts_with = "generate")]
    paths: Vec<PathBuf>,
    /// Benchmark a generated, realistic fine-tuning series instead of PATHs.
    #[arg(long)]
    generate: bool,
    /// With --generate: the series to generate.
    #[command(flatten)]
    series: SeriesArgs,
    /// With --generate: write each version as a sharded HF directory.
    #[arg(long)]
    sharded: bool,
    /// Strategies to run, comma-separated, in order (names: see --help).
    #[arg(short, long, value_name = "LIST")]
    strategies: Option<String>,
    /// Run each strategy N times and report the median times.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=100))]
    repeat: u64,
    /// Block size of the tdelta stores and of the zipnn/bitx blocks.
    #[arg(long, value_parser = fmt::parse_block_size)]
    block_size: Option<u32>,
    /// Also write the results as CSV to FILE (one line per strategy).
    #[arg(long, value_name = "FILE")]
    csv: Option<PathBuf>,
    /// Also write the full results as JSON to FILE (the global --json
    /// prints the same on stdout instead of the table).
    #[arg(long, value_name = "FILE")]
    json_out: Option<PathBuf>,
    /// Also write a chart (stored bytes per version, speeds) as SVG to FILE.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
    /// Work directory for the generated series and temporary stores
    /// (default: a new directory under the system temp dir, removed after).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the work directory (the generated series) afterwards.
    #[arg(long)]
    keep: bool,
}

pub fn run(g: &Global, a: &BenchArgs) -> Result<()> {
    if g.store_arg.is_some() {
        return Err(crate::exit::Usage(
            "bench builds its own temporary stores; --store does not apply (--dir says where they go)".into(),
        )
        .into());
    }
    let strategies = match &a.strategies {
        Some(list) => tdelta_dev::bench::parse_strategies(list)?,
        None => tdelta_dev::bench::default_strategies(),
    };
    let dir = match &a.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("tdelta-bench-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let res = bench(g, a, strategies, &dir);
    if !a.keep && a.dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    } else if a.dir.is_some() && !a.keep {
        // Our own entries only: the user's directory stays.
        let _ = std::fs::remove_dir_all(dir.join("series"));
        let _ = std::fs::remove_dir_all(dir.join("work"));
    } else if !g.quiet {
        eprintln!("kept {}", dir.display());
    }
    res
}

fn bench(g: &Global, a: &BenchArgs, strategies: Vec<tdelta_dev::bench::Strategy>, dir: &Path) -> Result<()> {
    let (paths, source) = if a.generate {
        let dtype = a.series.dtype;
        let mut spec = a.series.spec();
        spec.sharded = a.sharded;
        if !g.quiet {
            eprintln!(
                "generating {} versions of about {} ({dtype}, seed {}) in {}",
                a.series.versions,
                fmt::bytes(a.series.size),
                a.series.seed,
                dir.display()
            );
        }
        let paths = tdelta_dev::synth::write_series(&spec, &dir.join("series"))?;
        (paths, format!("generated, {dtype}, seed {}", a.series.seed))
    } else {
        let paths = tdelta_dev::bench::expand_inputs(&a.paths)?;
        (paths, "from files".to_string())
    };
    let mut opts = BenchOptions::new(dir.join("work"));
    opts.strategies = strategies;
    opts.repeat = a.repeat as usize;
    if let Some(bs) = a.block_size {
        opts.block_size = bs;
    }
    let bar = Bar::series(g.quiet, paths.len() as u64);
    let report = tdelta_dev::bench::run(&paths, &opts, &bar)?;

    if let Some(p) = &a.csv {
        std::fs::write(p, report.to_csv()).with_context(|| format!("cannot write {}", p.display()))?;
    }
    if let Some(p) = &a.json_out {
        std::fs::write(p, report.to_json()).with_context(|| format!("cannot write {}", p.display()))?;
    }
    if let Some(p) = &a.svg {
        std::fs::write(p, report.to_svg()).with_context(|| format!("cannot write {}", p.display()))?;
    }
    if g.json {
        print!("{}", report.to_json());
    } else {
        print!("{}", table(&report, &source));
    }
    let failed: Vec<&str> =
        report.strategies.iter().filter(|r| !r.lossy && !r.verified).map(|r| r.strategy.as_str()).collect();
    if !failed.is_empty() {
        bail!("not bit-exact on restore: {}", failed.join(", "));
    }
    Ok(())
}

/// Left-aligned first column, right-aligned others.
fn render(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let width: Vec<usize> =
        (0..cols).map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            let pad = width[c] - cell.chars().count();
            if c == 0 {
                line.push_str(cell);
                line.push_str(&" ".repeat(pad));
            } else {
                line.push_str("  ");
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn mb(v: f64) -> String {
    format!("{v:.0} MB/s")
}

fn row(r: &StrategyResult) -> Vec<String> {
    let mut cells = vec![
        r.strategy.clone(),
        fmt::bytes(r.stored_bytes),
        format!("{:.2}%", r.ratio * 100.0),
        fmt::bytes(r.mean_added()),
        mb(r.pack_mb_s),
        mb(r.restore_newest_mb_s),
        format!("{} (v{})", mb(r.restore_worst_mb_s), r.restore_worst_version),
        r.max_levels.iter().max().copied().unwrap_or(0).to_string(),
        if r.lossy {
            "lossy".into()
        } else if r.verified {
            "yes".into()
        } else {
            "NO".into()
        },
        r.peak_rss_bytes.map(fmt::bytes).unwrap_or_else(|| "-".into()),
    ];
    if r.lossy {
        cells.push(format!(
            "max {} / rel L2 {}",
            r.max_abs_err.map(|e| format!("{e:.3e}")).unwrap_or_else(|| "-".into()),
            r.rel_l2_err.map(|e| format!("{e:.3e}")).unwrap_or_else(|| "-".into())
        ));
    }
    cells
}

fn table(report: &BenchReport, source: &str) -> String {
    let mut out = format!(
        "series: {} versions, {} raw ({source}); {} threads; block {}; {}\n\n",
        report.versions,
        fmt::bytes(report.raw_bytes),
        report.threads,
        fmt::bytes(u64::from(report.block_size)),
        if report.repeat > 1 { format!("times are medians of {} runs", report.repeat) } else { "one run".into() }
    );
    let mut head: Vec<String> =
        ["strategy", "stored", "% raw", "per version", "pack", "newest", "worst", "levels", "exact", "peak RSS"]
            .map(String::from)
            .to_vec();
    if report.strategies.iter().any(|r| r.lossy) {
        head.push("error".into());
    }
    let mut rows = vec![head];
    rows.extend(report.strategies.iter().map(row));
    out.push_str(&render(&rows));

    // Bytes each version added, per strategy.
    out.push_str("\nbytes added by each version:\n");
    let mut rows = vec![
        std::iter::once("version".to_string())
            .chain(report.strategies.iter().map(|r| r.strategy.clone()))
            .collect::<Vec<_>>(),
    ];
    for v in 0..report.versions {
        let mut r = vec![format!("v{v} ({})", fmt::bytes(report.version_bytes[v]))];
        r.extend(report.strategies.iter().map(|s| fmt::bytes(s.added_bytes.get(v).copied().unwrap_or(0))));
        rows.push(r);
    }
    out.push_str(&render(&rows));
    out.push_str(
        "\nstored: store size on disk after the last version; per version: mean bytes added by each version after \
         the first;\npack: source MB/s over the series; newest/worst: restore MB/s of the newest version and of the \
         slowest one (vN);\nlevels: deepest delta chain one block needed; peak RSS: resident-memory high-water mark \
         while the strategy ran\n(Linux VmHWM, reset per strategy; includes page cache of mapped checkpoints).\n",
    );
    if let Some(p) = report.peak_rss_bytes {
        out.push_str(&format!("peak RSS of the whole run: {}\n", fmt::bytes(p)));
    }
    out
}
