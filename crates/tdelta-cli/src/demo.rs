//! `tdelta demo`: the main job on generated data, end to end.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::json;
use tdelta::{DType, Store};

use crate::Global;
use crate::fmt;
use crate::progress::Bar;
use crate::series::SeriesArgs;

#[derive(Args)]
pub struct DemoArgs {
    #[command(flatten)]
    series: SeriesArgs,
    /// Work directory (default: a new directory under the system temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the generated checkpoints and the store.
    #[arg(long)]
    keep: bool,
}

pub fn run(g: &Global, a: &DemoArgs) -> Result<()> {
    let dtype = a.series.dtype;
    let dir = match &a.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("tdelta-demo-{}", std::process::id())),
    };
    if let Some(s) = &g.store_arg
        && s.join("config").exists()
    {
        bail!("{} already holds a store; the demo packs into a new one (pick another --store)", s.display());
    }
    if dir.join("store").exists() {
        bail!("{} already holds a demo store; remove it or pick another --dir", dir.display());
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let res = demo(g, a, dtype, &dir);
    if !a.keep && a.dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    } else if !g.quiet {
        eprintln!("kept {}", dir.display());
    }
    if res.is_ok()
        && let Some(s) = &g.store_arg
        && !g.quiet
    {
        eprintln!("the demo store is at {}; try `tdelta --store {} log`", s.display(), s.display());
    }
    res
}

fn say(g: &Global, msg: impl AsRef<str>) {
    if !g.quiet && !g.json {
        eprintln!("{}", msg.as_ref());
    }
}

fn demo(g: &Global, a: &DemoArgs, dtype: DType, dir: &Path) -> Result<()> {
    let spec = a.series.spec();
    say(
        g,
        format!(
            "generating {} {} checkpoints of ~{} in {} (seed {})",
            a.series.versions,
            dtype.name(),
            fmt::bytes(a.series.size),
            dir.display(),
            a.series.seed
        ),
    );
    let t0 = Instant::now();
    let mut sources = Vec::new();
    for v in 0..a.series.versions as usize {
        let p = dir.join(format!("v{v:03}.safetensors"));
        tdelta_dev::synth::write_version(&spec, v, &p).with_context(|| format!("cannot write {}", p.display()))?;
        sources.push(p);
    }
    say(g, format!("generated in {:.1}s", t0.elapsed().as_secs_f64()));

    // --store names where the demo store goes (kept); else it lives in
    // the work directory.
    let store_dir = g.store_arg.clone().unwrap_or_else(|| dir.join("store"));
    let mut store = Store::init(&store_dir, &tdelta::InitOptions::default())?;
    let bar = Bar::series(g.quiet || g.json, sources.len() as u64);
    let mut rows = Vec::new();
    if !g.json {
        println!(
            "{:<8} {:>11} {:>11} {:>8} {:>8} {:>12} {:>12}  restored",
            "version", "raw", "stored", "ratio", "deltas", "pack", "unpack"
        );
    }
    for (v, src) in sources.iter().enumerate() {
        let opts = tdelta::PackOptions { message: format!("demo step {v}"), ..Default::default() };
        let t = Instant::now();
        let rep = tdelta::pack(&mut store, src, &opts, &bar)?;
        let pack_s = t.elapsed().as_secs_f64();
        let out = dir.join(format!("restored-v{v:03}.safetensors"));
        let t = Instant::now();
        tdelta::restore(&store, rep.id, &out, &tdelta::RestoreOptions { force: true }, &bar)?;
        let unpack_s = t.elapsed().as_secs_f64();
        let same = same_bytes(src, &out)?;
        std::fs::remove_file(&out).with_context(|| format!("cannot remove {}", out.display()))?;
        if !same {
            bail!("restored version {} differs from {}", rep.id.short(), src.display());
        }
        let s = &rep.manifest.stats;
        if !g.json {
            println!(
                "{:<8} {:>11} {:>11} {:>8} {:>8} {:>12} {:>12}  bit-exact",
                rep.id.short()[..8].to_string(),
                fmt::bytes(s.raw_bytes),
                fmt::bytes(s.stored_bytes),
                fmt::percent(s.stored_bytes, s.raw_bytes),
                s.delta_blocks,
                fmt::mbps(s.raw_bytes, pack_s),
                fmt::mbps(s.raw_bytes, unpack_s),
            );
        }
        rows.push(json!({
            "id": rep.id, "raw_bytes": s.raw_bytes, "stored_bytes": s.stored_bytes,
            "delta_blocks": s.delta_blocks, "pack_seconds": pack_s, "unpack_seconds": unpack_s,
            "bit_exact": same,
        }));
    }
    let raw: u64 = rows.iter().filter_map(|r| r["raw_bytes"].as_u64()).sum();
    let on_disk = dir_size(&store_dir)?;
    if g.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"versions": rows, "raw_bytes": raw, "store_bytes": on_disk}))?
        );
    } else {
        println!(
            "\n{} versions, {} raw; the store takes {} on disk ({} of raw, {:.1}x smaller); every version restored bit-exactly",
            rows.len(),
            fmt::bytes(raw),
            fmt::bytes(on_disk),
            fmt::percent(on_disk, raw),
            raw as f64 / on_disk.max(1) as f64
        );
    }
    Ok(())
}

/// Compares two files byte for byte.
fn same_bytes(a: &Path, b: &Path) -> Result<bool> {
    let mut fa = File::open(a).with_context(|| format!("cannot open {}", a.display()))?;
    let mut fb = File::open(b).with_context(|| format!("cannot open {}", b.display()))?;
    if fa.metadata()?.len() != fb.metadata()?.len() {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0u8; 4 << 20], vec![0u8; 4 << 20]);
    loop {
        let n = fa.read(&mut ba)?;
        if n == 0 {
            return Ok(true);
        }
        fb.read_exact(&mut bb[..n])?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

/// Total size of the regular files under `dir`.
fn dir_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for ent in std::fs::read_dir(dir)? {
        let ent = ent?;
        let md = ent.metadata()?;
        total += if md.is_dir() { dir_size(&ent.path())? } else { md.len() };
    }
    Ok(total)
}
