//! Delta statistics of a pair of safetensors checkpoints.
//!
//! Usage: `synth_stats BASE.safetensors NEW.safetensors [--summary]`
//!
//! or, to generate a synthetic series with `tdelta::synth` first (and print
//! the generation speed), then compare its versions 0 and 1:
//! `synth_stats --gen DIR [--mb N] [--versions N] [--seed N] [--dtype BF16] [--summary] [--gen-only]`
//!
//! For each tensor present in both files it prints the dtype, the shape,
//! the mean and std of the base values, the fraction of elements whose bits
//! changed, and a histogram of the ULP distance between base and new (the
//! difference of the order-preserving integer images of the two values).
//! Then the same over all float tensors together, and the fraction of
//! tensors that did not change at all. `--summary` prints only the totals
//! and one line per tensor class (embedding, norm, bias, weight).

use std::collections::BTreeMap;
use std::process::ExitCode;

use safetensors::{Dtype, SafeTensors};

/// Histogram buckets: 0, -1, +1, -2, +2, -3, +3, |d| in 4..=7, |d| >= 8.
const BUCKETS: [&str; 9] = ["0", "-1", "+1", "-2", "+2", "-3", "+3", "±4..7", "≥8"];

#[derive(Default, Clone)]
struct Acc {
    tensors: u64,
    unchanged_tensors: u64,
    n: u64,
    sum: f64,
    sum2: f64,
    dsum2: f64,
    changed: u64,
    hist: [u64; 9],
}

impl Acc {
    fn add(&mut self, other: &Acc) {
        self.tensors += other.tensors;
        self.unchanged_tensors += other.unchanged_tensors;
        self.n += other.n;
        self.sum += other.sum;
        self.sum2 += other.sum2;
        self.dsum2 += other.dsum2;
        self.changed += other.changed;
        for (a, b) in self.hist.iter_mut().zip(other.hist) {
            *a += b;
        }
    }

    fn std(&self) -> f64 {
        let n = self.n.max(1) as f64;
        let mean = self.sum / n;
        (self.sum2 / n - mean * mean).max(0.0).sqrt()
    }

    fn row(&self) -> String {
        let n = self.n.max(1) as f64;
        let mut s = format!(
            "mean {:+.4} std {:.4} dstd {:.2e} changed {:6.2}% |",
            self.sum / n,
            self.std(),
            (self.dsum2 / n).sqrt(),
            100.0 * self.changed as f64 / n
        );
        for h in self.hist {
            s.push_str(&format!(" {:6.2}", 100.0 * h as f64 / n));
        }
        s
    }
}

/// Order-preserving integer image of a float's bits of width `bits`.
fn key(bits: u64, width: u32) -> i64 {
    let sign = 1u64 << (width - 1);
    let mag = (bits & (sign - 1)) as i64;
    if bits & sign != 0 { -mag } else { mag }
}

fn bucket(d: i64) -> usize {
    match d {
        0 => 0,
        -1 => 1,
        1 => 2,
        -2 => 3,
        2 => 4,
        -3 => 5,
        3 => 6,
        _ if d.abs() < 8 => 7,
        _ => 8,
    }
}

fn decode(dtype: Dtype, chunk: &[u8]) -> (u64, f64) {
    match dtype {
        Dtype::BF16 => {
            let b = u16::from_le_bytes([chunk[0], chunk[1]]);
            (b as u64, half::bf16::from_bits(b).to_f64())
        }
        Dtype::F16 => {
            let b = u16::from_le_bytes([chunk[0], chunk[1]]);
            (b as u64, half::f16::from_bits(b).to_f64())
        }
        _ => {
            let b = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            (b as u64, f32::from_bits(b) as f64)
        }
    }
}

fn stats(dtype: Dtype, base: &[u8], new: &[u8]) -> Acc {
    let size = dtype.bitsize() / 8;
    let width = (size * 8) as u32;
    let mut acc = Acc { tensors: 1, ..Acc::default() };
    for (a, b) in base.chunks_exact(size).zip(new.chunks_exact(size)) {
        let (ba, va) = decode(dtype, a);
        let (bb, vb) = decode(dtype, b);
        acc.n += 1;
        acc.sum += va;
        acc.sum2 += va * va;
        acc.dsum2 += (vb - va) * (vb - va);
        if ba != bb {
            acc.changed += 1;
        }
        acc.hist[bucket(key(bb, width) - key(ba, width))] += 1;
    }
    acc.unchanged_tensors = u64::from(acc.changed == 0);
    acc
}

fn class(name: &str) -> &'static str {
    let lower = name.to_ascii_lowercase();
    if lower.contains("norm") {
        if lower.ends_with("bias") { "norm bias" } else { "norm weight" }
    } else if lower.ends_with("bias") {
        "bias"
    } else if lower.contains("embed") {
        "embedding"
    } else if lower.contains("head") {
        "head"
    } else {
        "weight"
    }
}

fn run(base_path: &str, new_path: &str, summary: bool) -> Result<(), String> {
    let base_bytes = std::fs::read(base_path).map_err(|e| format!("{base_path}: {e}"))?;
    let new_bytes = std::fs::read(new_path).map_err(|e| format!("{new_path}: {e}"))?;
    let base = SafeTensors::deserialize(&base_bytes).map_err(|e| format!("{base_path}: {e}"))?;
    let new = SafeTensors::deserialize(&new_bytes).map_err(|e| format!("{new_path}: {e}"))?;

    let mut names: Vec<String> = base.names().into_iter().map(str::to_owned).collect();
    names.sort();
    let mut total = Acc::default();
    let mut classes: BTreeMap<&str, Acc> = BTreeMap::new();
    let mut skipped = Vec::new();
    if !summary {
        println!("{:<56} {:<5} {:<14} buckets %: {}", "tensor", "dtype", "shape", BUCKETS.join(" "));
    }
    for name in &names {
        let a = base.tensor(name).map_err(|e| e.to_string())?;
        let Ok(b) = new.tensor(name) else {
            skipped.push(format!("{name} (missing in new)"));
            continue;
        };
        let float = matches!(a.dtype(), Dtype::BF16 | Dtype::F16 | Dtype::F32);
        if !float || a.dtype() != b.dtype() {
            skipped.push(format!("{name} ({:?})", a.dtype()));
            continue;
        }
        // A grown tensor (vocab extension) is compared on its common prefix.
        let common = a.data().len().min(b.data().len());
        let grown = if a.shape() != b.shape() {
            format!(" (shape now {:?}, prefix compared)", b.shape())
        } else {
            String::new()
        };
        let acc = stats(a.dtype(), &a.data()[..common], &b.data()[..common]);
        if !summary {
            println!(
                "{:<56} {:<5} {:<14} {}{}",
                name,
                format!("{:?}", a.dtype()),
                format!("{:?}", a.shape()),
                acc.row(),
                grown
            );
        }
        total.add(&acc);
        classes.entry(class(name)).or_default().add(&acc);
    }
    for (new_name, _) in new.tensors() {
        if base.tensor(&new_name).is_err() {
            skipped.push(format!("{new_name} (only in new)"));
        }
    }
    println!("\nby class (buckets %: {}):", BUCKETS.join(" "));
    for (name, acc) in &classes {
        println!("  {:<16} {:4} tensors, {:4} unchanged, {}", name, acc.tensors, acc.unchanged_tensors, acc.row());
    }
    println!(
        "\noverall: {} float tensors, {} elements, unchanged tensors {:.1}%",
        total.tensors,
        total.n,
        100.0 * total.unchanged_tensors as f64 / total.tensors.max(1) as f64
    );
    println!("  {}", total.row());
    let changed = total.changed.max(1) as f64;
    print!("  among changed elements:");
    for (label, h) in BUCKETS.iter().zip(total.hist).skip(1) {
        print!(" {label}:{:.1}%", 100.0 * h as f64 / changed);
    }
    println!();
    if !skipped.is_empty() {
        println!("skipped: {}", skipped.join(", "));
    }
    Ok(())
}

/// Value of option `--name` in `args`, parsed.
fn opt<T: std::str::FromStr>(args: &[String], name: &str) -> Result<Option<T>, String> {
    match args.iter().position(|a| a == name) {
        None => Ok(None),
        Some(i) => {
            let v = args.get(i + 1).ok_or(format!("{name} needs a value"))?;
            v.parse().map(Some).map_err(|_| format!("bad value for {name}: {v}"))
        }
    }
}

/// Generates a synthetic series into `dir`, prints the speed, and returns
/// the paths of versions 0 and 1.
fn generate(args: &[String]) -> Result<(String, String), String> {
    let dir = opt::<String>(args, "--gen")?.ok_or("--gen needs a directory")?;
    let mb: u64 = opt(args, "--mb")?.unwrap_or(100);
    let versions: usize = opt(args, "--versions")?.unwrap_or(2).max(2);
    let seed: u64 = opt(args, "--seed")?.unwrap_or(1);
    let dtype: tdelta::DType = opt::<String>(args, "--dtype")?
        .unwrap_or_else(|| "BF16".into())
        .parse()
        .map_err(|e: tdelta::UnknownDType| e.to_string())?;
    let spec = tdelta_dev::synth::SeriesSpec::new(seed, dtype, mb << 20, versions);
    println!("generating {versions} versions of ~{mb} MB ({dtype}): {:?}", spec.model_shape());
    let start = std::time::Instant::now();
    let paths = tdelta_dev::synth::write_series(&spec, std::path::Path::new(&dir)).map_err(|e| e.to_string())?;
    let secs = start.elapsed().as_secs_f64();
    let bytes: u64 = paths.iter().map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)).sum();
    println!(
        "wrote {:.1} MB in {secs:.2} s: {:.0} MB/s ({} threads)\n",
        bytes as f64 / 1e6,
        bytes as f64 / 1e6 / secs,
        rayon_threads()
    );
    // Generation alone, without the disk: version 1 in memory.
    let start = std::time::Instant::now();
    let mem = tdelta_dev::synth::version_bytes(&spec, 1);
    let secs = start.elapsed().as_secs_f64();
    println!(
        "in memory, version 1: {:.1} MB in {secs:.2} s: {:.0} MB/s\n",
        mem.len() as f64 / 1e6,
        mem.len() as f64 / 1e6 / secs
    );
    drop(mem);
    let p = |i: usize| paths[i].to_string_lossy().into_owned();
    Ok((p(0), p(1)))
}

fn rayon_threads() -> String {
    std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "all".into())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let summary = args.iter().any(|a| a == "--summary");
    if args.iter().any(|a| a == "--gen") {
        let gen_only = args.iter().any(|a| a == "--gen-only");
        let result = generate(&args).and_then(|(a, b)| if gen_only { Ok(()) } else { run(&a, &b, summary) });
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let files: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let [base, new] = files.as_slice() else {
        eprintln!("usage: synth_stats BASE.safetensors NEW.safetensors [--summary]");
        return ExitCode::from(2);
    };
    match run(base, new, summary) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
