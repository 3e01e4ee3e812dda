//! Benchmark of storage strategies on a checkpoint series.
//!
//! [`run`] stores the same series of checkpoints with each [`Strategy`],
//! one after the other, in fresh stores under a work directory, then
//! restores every version of every strategy, checks it against the source
//! by hash (xxh3-128 of each file) and times it. Every baseline is real
//! code run on the data:
//!
//! - [`Strategy::Raw`]: each file copied as it is;
//! - [`Strategy::Zstd`]: each whole file through a streaming zstd encoder
//!   (one thread, like `zstd -LEVEL`);
//! - [`Strategy::Zipnn`]: each tensor cut into blocks, byte planes split
//!   (exponent apart) and zstd'd, no delta (the ZipNN idea);
//! - [`Strategy::Bitx`]: each block XOR'd with the same block of the
//!   previous version (or of the first one) when the tensor kept its shape,
//!   then byte planes + zstd (the ZipLLM/BitX idea); restoring version `v`
//!   decodes the whole XOR chain back to the last plain block;
//! - [`Strategy::Tdelta`]: a tdelta store with a delta [`Policy`];
//! - [`Strategy::TdeltaLossy`]: the same with quantized deltas (int8,
//!   int4…); its restores are checked by tdelta against the recorded
//!   reconstruction hashes, and its error is the one recorded at pack.
//!
//! The figures are gathered in a [`BenchReport`], rendered by
//! [`BenchReport::to_csv`], [`BenchReport::to_json`] and
//! [`BenchReport::to_svg`]. The library prints nothing: progress goes to
//! the [`Progress`] given to [`run`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use tdelta::IoContext;
use tdelta::checkpoint::{self, Checkpoint, Layout};
use tdelta::{Error, Hash, Policy, Progress, Result};

mod engines;
mod render;
mod sys;
#[cfg(test)]
mod tests;

pub use render::CSV_COLUMNS;
pub use sys::{current_rss, hash_file, peak_rss, reset_peak_rss};

/// Which side of the XOR a [`Strategy::Bitx`] block is taken against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XorBase {
    /// The previous version (a chain as long as the series).
    Previous,
    /// The first version of the series (the base model; depth 2).
    First,
}

/// One way of storing the series.
///
/// Parsed from (and printed as) `raw`, `zstd` / `zstd:LEVEL`, `zipnn`,
/// `bitx` / `bitx:first`, `tdelta` (default policy) or `tdelta:POLICY`
/// where POLICY is `chain:K`, `keyframe:K`, `root` or `full`, or
/// `tdelta:BITS[:POLICY]` with BITS `int8`, `int4` or `int2` (lossy; the
/// `tdelta:` prefix may be left out everywhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Every file copied as it is.
    Raw,
    /// Every whole file compressed with zstd at this level.
    Zstd {
        /// zstd level (1..=22).
        level: i32,
    },
    /// Byte planes + zstd per block, no delta (ZipNN-like).
    Zipnn,
    /// XOR against a base version's block, byte planes + zstd (BitX-like).
    Bitx {
        /// Which version is the base.
        base: XorBase,
    },
    /// tdelta, lossless, with a delta policy.
    Tdelta {
        /// The chain-depth policy.
        policy: Policy,
    },
    /// tdelta with quantized (lossy) deltas of float tensors.
    TdeltaLossy {
        /// The chain-depth policy.
        policy: Policy,
        /// Code width of the quantized deltas.
        bits: tdelta::lossy::Bits,
    },
}

impl Strategy {
    /// Whether restores are expected to differ from the source.
    pub fn is_lossy(&self) -> bool {
        matches!(self, Strategy::TdeltaLossy { .. })
    }

    /// A name usable in a file name.
    fn slug(&self) -> String {
        self.to_string().replace(':', "-")
    }
}

/// The strategies run when none are asked for: every baseline and the
/// tdelta policies worth comparing.
pub fn default_strategies() -> Vec<Strategy> {
    vec![
        Strategy::Raw,
        Strategy::Zstd { level: 3 },
        Strategy::Zipnn,
        Strategy::Bitx { base: XorBase::Previous },
        Strategy::Tdelta { policy: Policy::DEFAULT },
        Strategy::Tdelta { policy: Policy::Chain(3) },
        Strategy::Tdelta { policy: Policy::Chain(8) },
        Strategy::Tdelta { policy: Policy::Keyframe(4) },
        Strategy::Tdelta { policy: Policy::Chain(1) },
        Strategy::Tdelta { policy: Policy::Full },
        Strategy::TdeltaLossy { policy: Policy::ROOT, bits: tdelta::lossy::Bits::Int8 },
        Strategy::TdeltaLossy { policy: Policy::ROOT, bits: tdelta::lossy::Bits::Int4 },
    ]
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Strategy::Raw => write!(f, "raw"),
            Strategy::Zstd { level } => write!(f, "zstd:{level}"),
            Strategy::Zipnn => write!(f, "zipnn"),
            Strategy::Bitx { base: XorBase::Previous } => write!(f, "bitx"),
            Strategy::Bitx { base: XorBase::First } => write!(f, "bitx:first"),
            Strategy::Tdelta { policy: Policy::Chain(1) } => write!(f, "tdelta:root"),
            Strategy::Tdelta { policy } => write!(f, "tdelta:{policy}"),
            Strategy::TdeltaLossy { policy: Policy::Chain(1), bits } => write!(f, "tdelta:{bits}:root"),
            Strategy::TdeltaLossy { policy, bits } => write!(f, "tdelta:{bits}:{policy}"),
        }
    }
}

impl FromStr for Strategy {
    type Err = Error;

    fn from_str(s: &str) -> Result<Strategy> {
        let t = s.trim().to_ascii_lowercase();
        let bad = |why: String| {
            Error::InvalidArgument(format!(
                "invalid strategy `{s}`: {why}; expected raw, zstd[:LEVEL], zipnn, bitx[:first], \
                 tdelta[:POLICY] or a policy (near:K, chain:K, keyframe:K, root, full)"
            ))
        };
        Ok(match t.as_str() {
            "raw" => Strategy::Raw,
            "zstd" => Strategy::Zstd { level: 3 },
            "zipnn" => Strategy::Zipnn,
            "bitx" | "bitx:prev" => Strategy::Bitx { base: XorBase::Previous },
            "bitx:first" => Strategy::Bitx { base: XorBase::First },
            "tdelta" => Strategy::Tdelta { policy: Policy::default() },
            _ => {
                if let Some(l) = t.strip_prefix("zstd:") {
                    match l.parse::<i32>() {
                        Ok(level) if (1..=22).contains(&level) => Strategy::Zstd { level },
                        _ => return Err(bad("the zstd level must be 1..=22".into())),
                    }
                } else {
                    let p = t.strip_prefix("tdelta:").unwrap_or(&t);
                    let (head, rest) = p.split_once(':').unwrap_or((p, ""));
                    if let Ok(bits) = head.parse::<tdelta::lossy::Bits>()
                        && head.starts_with("int")
                    {
                        let policy = if rest.is_empty() {
                            Policy::default()
                        } else {
                            rest.parse::<Policy>().map_err(|_| bad("unknown policy".into()))?
                        };
                        Strategy::TdeltaLossy { policy, bits }
                    } else {
                        let policy = p.parse::<Policy>().map_err(|_| bad("unknown name".into()))?;
                        Strategy::Tdelta { policy }
                    }
                }
            }
        })
    }
}

/// Parses a comma-separated list of strategies (`raw,zstd,chain:8`).
pub fn parse_strategies(list: &str) -> Result<Vec<Strategy>> {
    let out: Vec<Strategy> = list.split(',').filter(|p| !p.trim().is_empty()).map(str::parse).collect::<Result<_>>()?;
    if out.is_empty() {
        return Err(Error::InvalidArgument("no strategy given".into()));
    }
    let mut seen = std::collections::HashSet::new();
    for s in &out {
        if !seen.insert(*s) {
            return Err(Error::InvalidArgument(format!("strategy `{s}` is listed twice")));
        }
    }
    Ok(out)
}

impl std::hash::Hash for Strategy {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.to_string().hash(state);
    }
}

/// Options of [`run`].
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Strategies, in the order they run and are reported.
    pub strategies: Vec<Strategy>,
    /// Runs per strategy; times are the median (at least 1).
    pub repeat: usize,
    /// Where the temporary stores and restores go (created if needed; the
    /// caller removes it).
    pub work_dir: PathBuf,
    /// Block size of the tdelta stores and of the block baselines.
    pub block_size: u32,
}

impl BenchOptions {
    /// The default strategies, one run, default block size.
    pub fn new(work_dir: impl Into<PathBuf>) -> Self {
        BenchOptions {
            strategies: default_strategies(),
            repeat: 1,
            work_dir: work_dir.into(),
            block_size: tdelta::block::DEFAULT_BLOCK_SIZE,
        }
    }
}

/// The figures of one strategy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StrategyResult {
    /// Strategy name (as `--strategies` takes it).
    pub strategy: String,
    /// Whether the strategy is lossy.
    pub lossy: bool,
    /// Bytes of the source series.
    pub raw_bytes: u64,
    /// Bytes on disk of the strategy's store after the last version (every
    /// file: data, indexes, manifests).
    pub stored_bytes: u64,
    /// `stored_bytes / raw_bytes` (smaller is better).
    pub ratio: f64,
    /// Store size on disk after each version.
    pub stored_after: Vec<u64>,
    /// Bytes each version added to the store (`stored_after` differences).
    pub added_bytes: Vec<u64>,
    /// Seconds to store the whole series (median over repeats).
    pub pack_secs: f64,
    /// Pack throughput over the series, MB/s (10^6 bytes of source).
    pub pack_mb_s: f64,
    /// Seconds to restore each version (median over repeats).
    pub restore_secs: Vec<f64>,
    /// Restore throughput of each version, MB/s of restored bytes.
    pub restore_mb_s: Vec<f64>,
    /// Restore throughput of the newest version, MB/s.
    pub restore_newest_mb_s: f64,
    /// Restore throughput of the slowest version to restore, MB/s.
    pub restore_worst_mb_s: f64,
    /// Which version (0-based) was the slowest to restore.
    pub restore_worst_version: usize,
    /// Deepest chain one block needed to restore each version (1 = no
    /// delta; for raw and zstd always 1).
    pub max_levels: Vec<u64>,
    /// Every version restored to bytes hashing like the source.
    pub verified: bool,
    /// Peak resident memory while this strategy ran (Linux: `VmHWM` after
    /// resetting it to the current RSS at the strategy's start), mapped
    /// source pages included; `None` if unknown.
    pub peak_rss_bytes: Option<u64>,
    /// Resident memory when the strategy started (the floor of
    /// `peak_rss_bytes`: memory the allocator kept from earlier
    /// strategies counts there too); `None` if unknown.
    pub start_rss_bytes: Option<u64>,
    /// Largest absolute error of a lossy strategy (none when lossless).
    pub max_abs_err: Option<f64>,
    /// Relative L2 error of the weights of a lossy strategy,
    /// `‖restored − source‖ / ‖source‖` over the lossy tensors, worst
    /// version (none when lossless).
    pub rel_l2_err: Option<f64>,
    /// Relative L2 error of the deltas, `‖error‖ / ‖new − base‖`, worst
    /// version (none when lossless).
    pub delta_rel_l2_err: Option<f64>,
}

/// The result of [`run`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    /// tdelta version that ran it.
    pub tdelta_version: String,
    /// Number of versions in the series.
    pub versions: usize,
    /// Bytes of each version.
    pub version_bytes: Vec<u64>,
    /// Bytes of the whole series.
    pub raw_bytes: u64,
    /// Runs per strategy (times are medians).
    pub repeat: usize,
    /// Block size used.
    pub block_size: u32,
    /// Worker threads.
    pub threads: usize,
    /// Peak resident memory of the whole run (the largest of the
    /// per-strategy peaks), if known.
    pub peak_rss_bytes: Option<u64>,
    /// One entry per strategy, in order.
    pub strategies: Vec<StrategyResult>,
}

/// One version of the source series, opened and hashed.
#[derive(Debug)]
pub(crate) struct Source {
    pub(crate) ckpt: Checkpoint,
    pub(crate) hashes: Vec<Hash>,
    pub(crate) bytes: u64,
}

/// Progress with the strategy name in front of each phase.
struct Prefixed<'a> {
    inner: &'a dyn Progress,
    prefix: String,
}

impl Progress for Prefixed<'_> {
    fn begin(&self, what: &str, total: u64) {
        self.inner.begin(&format!("{} {what}", self.prefix), total);
    }
    fn advance(&self, n: u64) {
        self.inner.advance(n);
    }
    fn end(&self) {
        self.inner.end();
    }
}

/// Expands the command-line inputs to the series: several paths are the
/// versions in order; one directory that is not itself a checkpoint
/// (no `model.safetensors.index.json`, no `.safetensors` file directly in
/// it besides checkpoints) is the parent of the versions, taken in name
/// order (hidden entries skipped).
pub fn expand_inputs(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    if paths.len() != 1 || !paths[0].is_dir() || paths[0].join("model.safetensors.index.json").exists() {
        return Ok(paths.to_vec());
    }
    let dir = &paths[0];
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).at(dir)? {
        let e = e.at(dir)?;
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with('.') {
            continue;
        }
        let p = e.path();
        if p.is_dir() || name.ends_with(".safetensors") {
            out.push(p);
        }
    }
    out.sort();
    if out.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "{} holds no checkpoints (no .safetensors files or checkpoint directories)",
            dir.display()
        )));
    }
    Ok(out)
}

/// Opens and hashes the series.
pub(crate) fn load_series(paths: &[PathBuf], progress: &dyn Progress) -> Result<Vec<Source>> {
    if paths.is_empty() {
        return Err(Error::InvalidArgument("the series is empty".into()));
    }
    let mut out = Vec::with_capacity(paths.len());
    for p in paths {
        let ckpt = checkpoint::open(p)?;
        let bytes: u64 = ckpt.files.iter().map(|f| f.len).sum();
        progress.begin("hash", bytes);
        let hashes = ckpt.files.iter().map(|f| hash_file(&f.path, progress)).collect::<Result<Vec<_>>>()?;
        progress.end();
        out.push(Source { ckpt, hashes, bytes });
    }
    Ok(out)
}

/// Whether `out` (the restore of `src`) holds the same files and bytes.
pub(crate) fn matches(out: &Path, src: &Source) -> Result<bool> {
    match src.ckpt.layout {
        Layout::File => Ok(out.is_file() && hash_file(out, &tdelta::Silent)? == src.hashes[0]),
        Layout::Directory => {
            if sys::count_files(out)? != src.ckpt.files.len() {
                return Ok(false);
            }
            for (f, h) in src.ckpt.files.iter().zip(&src.hashes) {
                let p = out.join(&f.rel_path);
                if !p.is_file() || hash_file(&p, &tdelta::Silent)? != *h {
                    return Ok(false);
                }
            }
            Ok(true)
        }
    }
}

/// What one run of one strategy measured.
struct RunFigures {
    error: Option<engines::LossyError>,
    stored_after: Vec<u64>,
    pack_secs: f64,
    restore_secs: Vec<f64>,
    max_levels: Vec<u64>,
    verified: bool,
}

fn run_once(
    strategy: Strategy,
    series: &[Source],
    dir: &Path,
    block_size: u32,
    progress: &dyn Progress,
) -> Result<RunFigures> {
    let store_dir = dir.join("store");
    let mut engine = engines::make(strategy, series, &store_dir, block_size)?;
    let mut stored_after = Vec::with_capacity(series.len());
    let mut pack_secs = 0.0;
    for v in 0..series.len() {
        let t = Instant::now();
        engine.pack(v, progress)?;
        pack_secs += t.elapsed().as_secs_f64();
        stored_after.push(sys::dir_bytes(&store_dir)?);
    }
    let mut restore_secs = Vec::with_capacity(series.len());
    let mut max_levels = Vec::with_capacity(series.len());
    let mut verified = true;
    for (v, src) in series.iter().enumerate() {
        let out = dir.join(format!("restore-v{v}"));
        sys::remove_any(&out)?;
        let t = Instant::now();
        let levels = engine.restore(v, &out, progress)?;
        restore_secs.push(t.elapsed().as_secs_f64());
        max_levels.push(levels);
        // A lossy restore differs from the source by design; tdelta has
        // checked it against the recorded reconstruction hashes.
        if !strategy.is_lossy() {
            verified &= matches(&out, src)?;
        }
        sys::remove_any(&out)?;
    }
    let error = engine.error();
    drop(engine);
    sys::remove_any(&store_dir)?;
    Ok(RunFigures { error, stored_after, pack_secs, restore_secs, max_levels, verified })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// MB/s (10^6 bytes per second), 0 when nothing was timed.
pub fn mb_s(bytes: u64, secs: f64) -> f64 {
    if secs > 0.0 { bytes as f64 / secs / 1e6 } else { 0.0 }
}

/// Runs every strategy of `opts` on the series at `paths` (checkpoint
/// files or directories, in version order) and measures them.
pub fn run(paths: &[PathBuf], opts: &BenchOptions, progress: &dyn Progress) -> Result<BenchReport> {
    if opts.strategies.is_empty() {
        return Err(Error::InvalidArgument("no strategy to run".into()));
    }
    std::fs::create_dir_all(&opts.work_dir).at(&opts.work_dir)?;
    let series = load_series(paths, progress)?;
    let version_bytes: Vec<u64> = series.iter().map(|s| s.bytes).collect();
    let raw_bytes: u64 = version_bytes.iter().sum();
    let repeat = opts.repeat.max(1);
    let mut results = Vec::with_capacity(opts.strategies.len());
    for (i, &strategy) in opts.strategies.iter().enumerate() {
        let mut runs = Vec::with_capacity(repeat);
        let reset = reset_peak_rss();
        let start_rss = if reset { current_rss() } else { None };
        for r in 0..repeat {
            let rep = if repeat > 1 { format!(" run {}/{repeat}", r + 1) } else { String::new() };
            let prefixed =
                Prefixed { inner: progress, prefix: format!("[{}/{}] {strategy}{rep}", i + 1, opts.strategies.len()) };
            let dir = opts.work_dir.join(format!("{}-{r}", strategy.slug()));
            sys::remove_any(&dir)?;
            std::fs::create_dir_all(&dir).at(&dir)?;
            let figures = run_once(strategy, &series, &dir, opts.block_size, &prefixed);
            sys::remove_any(&dir)?;
            runs.push(figures?);
        }
        let peak = if reset { peak_rss() } else { None };
        results.push(summarize(strategy, &runs, &version_bytes, peak, start_rss));
    }
    Ok(BenchReport {
        tdelta_version: env!("CARGO_PKG_VERSION").to_string(),
        versions: series.len(),
        version_bytes,
        raw_bytes,
        repeat,
        block_size: opts.block_size,
        threads: rayon::current_num_threads(),
        // Resets lower VmHWM: the run's peak is the largest of the peaks.
        peak_rss_bytes: results.iter().filter_map(|r| r.peak_rss_bytes).chain(peak_rss()).max(),
        strategies: results,
    })
}

fn summarize(
    strategy: Strategy,
    runs: &[RunFigures],
    version_bytes: &[u64],
    peak: Option<u64>,
    start_rss: Option<u64>,
) -> StrategyResult {
    let last = &runs[runs.len() - 1];
    let raw_bytes: u64 = version_bytes.iter().sum();
    let stored_after = last.stored_after.clone();
    let stored_bytes = stored_after.last().copied().unwrap_or(0);
    let added_bytes: Vec<u64> =
        stored_after.iter().scan(0u64, |prev, &s| Some(s.saturating_sub(std::mem::replace(prev, s)))).collect();
    let pack_secs = median(runs.iter().map(|r| r.pack_secs).collect());
    let restore_secs: Vec<f64> =
        (0..version_bytes.len()).map(|v| median(runs.iter().map(|r| r.restore_secs[v]).collect())).collect();
    let restore_mb_s: Vec<f64> = restore_secs.iter().zip(version_bytes).map(|(&s, &b)| mb_s(b, s)).collect();
    let (worst_v, worst) =
        restore_mb_s.iter().copied().enumerate().min_by(|a, b| a.1.total_cmp(&b.1)).unwrap_or((0, 0.0));
    StrategyResult {
        strategy: strategy.to_string(),
        lossy: strategy.is_lossy(),
        raw_bytes,
        stored_bytes,
        ratio: if raw_bytes > 0 { stored_bytes as f64 / raw_bytes as f64 } else { 0.0 },
        stored_after,
        added_bytes,
        pack_secs,
        pack_mb_s: mb_s(raw_bytes, pack_secs),
        restore_newest_mb_s: restore_mb_s.last().copied().unwrap_or(0.0),
        restore_secs,
        restore_worst_mb_s: worst,
        restore_worst_version: worst_v,
        restore_mb_s,
        max_levels: last.max_levels.clone(),
        verified: runs.iter().all(|r| r.verified),
        peak_rss_bytes: peak,
        start_rss_bytes: start_rss,
        max_abs_err: last.error.map(|e| e.max_abs),
        rel_l2_err: last.error.map(|e| e.weight_rel_l2),
        delta_rel_l2_err: last.error.map(|e| e.delta_rel_l2),
    }
}
