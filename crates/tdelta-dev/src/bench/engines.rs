//! The strategies as engines: store version `v` of the series, restore
//! version `v` to a path.
//!
//! Every engine writes real files under its store directory and fsyncs
//! them, as the tdelta store does, so stored bytes and times compare.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use rayon::prelude::*;
use serde::Serialize;

use super::{Source, Strategy, XorBase};
use tdelta::IoContext;
use tdelta::checkpoint::{FileKind, Layout, map_range};
use tdelta::codec::baseline;
use tdelta::{DType, Hash, InitOptions, PackOptions, Progress, RestoreOptions, Result, Store};

/// One strategy at work on one series.
pub(super) trait Engine {
    /// Stores version `v` (versions come in order 0, 1, …).
    fn pack(&mut self, v: usize, progress: &dyn Progress) -> Result<()>;
    /// Restores version `v` to `out` (a file or a directory, like the
    /// source); returns the deepest chain one block needed (1 = no delta).
    fn restore(&mut self, v: usize, out: &Path, progress: &dyn Progress) -> Result<u64>;
    /// The worst error recorded over the versions of a lossy strategy.
    fn error(&self) -> Option<LossyError> {
        None
    }
}

/// The error a lossy pack recorded (worst over versions).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct LossyError {
    /// Largest absolute error of one element.
    pub(super) max_abs: f64,
    /// ‖error‖ / ‖weights‖.
    pub(super) weight_rel_l2: f64,
    /// ‖error‖ / ‖delta‖.
    pub(super) delta_rel_l2: f64,
}

/// The engine of `strategy`, storing under `store` (created).
pub(super) fn make<'a>(
    strategy: Strategy,
    series: &'a [Source],
    store: &Path,
    block_size: u32,
) -> Result<Box<dyn Engine + 'a>> {
    Ok(match strategy {
        Strategy::Raw => Box::new(Files::new(series, store, None)?),
        Strategy::Zstd { level } => Box::new(Files::new(series, store, Some(level))?),
        Strategy::Zipnn => Box::new(Planes::new(series, store, None, block_size)?),
        Strategy::Bitx { base } => Box::new(Planes::new(series, store, Some(base), block_size)?),
        Strategy::Tdelta { policy } => {
            let store = Store::init(store, &InitOptions { block_size })?;
            let opts = PackOptions { policy, author: Some("tdelta-bench".into()), ..PackOptions::default() };
            Box::new(Tdelta { series, store, opts, ids: Vec::new(), error: None })
        }
        Strategy::TdeltaLossy { policy, bits } => {
            let store = Store::init(store, &InitOptions { block_size })?;
            let lossy = tdelta::lossy::LossyOptions { bits, ..tdelta::lossy::LossyOptions::default() };
            let opts = PackOptions {
                policy,
                lossy: Some(lossy),
                author: Some("tdelta-bench".into()),
                ..PackOptions::default()
            };
            Box::new(Tdelta { series, store, opts, ids: Vec::new(), error: None })
        }
    })
}

/// Where file `rel` of a restore goes: `out` itself for a file version.
fn out_path(layout: Layout, out: &Path, rel: &str) -> Result<PathBuf> {
    match layout {
        Layout::File => Ok(out.to_path_buf()),
        Layout::Directory => {
            let p = out.join(rel);
            if let Some(parent) = p.parent() {
                fs::create_dir_all(parent).at(parent)?;
            }
            Ok(p)
        }
    }
}

/// A reader that reports the bytes it reads.
struct Counting<'a, R> {
    inner: R,
    progress: &'a dyn Progress,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.advance(n as u64);
        Ok(n)
    }
}

// ---------------------------------------------------------------- raw, zstd

/// Raw copies (`level` none) or whole-file zstd streams.
struct Files<'a> {
    series: &'a [Source],
    root: PathBuf,
    level: Option<i32>,
}

impl<'a> Files<'a> {
    fn new(series: &'a [Source], root: &Path, level: Option<i32>) -> Result<Self> {
        fs::create_dir_all(root).at(root)?;
        Ok(Files { series, root: root.to_path_buf(), level })
    }

    fn stored(&self, v: usize, i: usize) -> PathBuf {
        let ext = if self.level.is_some() { ".zst" } else { "" };
        self.root.join(format!("v{v:05}")).join(format!("{i:05}{ext}"))
    }
}

impl Engine for Files<'_> {
    fn pack(&mut self, v: usize, progress: &dyn Progress) -> Result<()> {
        let src = &self.series[v];
        progress.begin("pack", src.bytes);
        for (i, f) in src.ckpt.files.iter().enumerate() {
            let dst = self.stored(v, i);
            if let Some(parent) = dst.parent() {
                fs::create_dir_all(parent).at(parent)?;
            }
            let mut input = Counting { inner: File::open(&f.path).at(&f.path)?, progress };
            let out = File::create(&dst).at(&dst)?;
            let out = match self.level {
                None => {
                    let mut w = BufWriter::with_capacity(4 << 20, out);
                    std::io::copy(&mut input, &mut w).at(&dst)?;
                    w.into_inner().map_err(|e| tdelta::Error::io(&dst, e.into_error()))?
                }
                Some(level) => {
                    let mut enc = zstd::stream::Encoder::new(BufWriter::with_capacity(4 << 20, out), level).at(&dst)?;
                    std::io::copy(&mut input, &mut enc).at(&dst)?;
                    let w = enc.finish().at(&dst)?;
                    w.into_inner().map_err(|e| tdelta::Error::io(&dst, e.into_error()))?
                }
            };
            out.sync_all().at(&dst)?;
        }
        progress.end();
        Ok(())
    }

    fn restore(&mut self, v: usize, out: &Path, progress: &dyn Progress) -> Result<u64> {
        let src = &self.series[v];
        progress.begin("restore", src.bytes);
        if src.ckpt.layout == Layout::Directory {
            fs::create_dir_all(out).at(out)?;
        }
        for (i, f) in src.ckpt.files.iter().enumerate() {
            let stored = self.stored(v, i);
            let dst = out_path(src.ckpt.layout, out, &f.rel_path)?;
            let input = File::open(&stored).at(&stored)?;
            let mut w = BufWriter::with_capacity(4 << 20, File::create(&dst).at(&dst)?);
            match self.level {
                None => std::io::copy(&mut Counting { inner: input, progress }, &mut w).at(&dst)?,
                Some(_) => {
                    let dec = zstd::stream::Decoder::new(input).at(&stored)?;
                    std::io::copy(&mut Counting { inner: dec, progress }, &mut w).at(&dst)?
                }
            };
            let file = w.into_inner().map_err(|e| tdelta::Error::io(&dst, e.into_error()))?;
            file.sync_all().at(&dst)?;
        }
        progress.end();
        Ok(1)
    }
}

// ------------------------------------------------------------ zipnn, bitx

/// One block of a run as stored.
#[derive(Debug, Clone, Serialize)]
struct ChunkRec {
    /// Offset in the source file.
    off: u64,
    /// Raw length.
    len: u64,
    /// Offset of the payload in the version's data file.
    at: u64,
    /// Payload length.
    size: u64,
}

/// One run of a file (the safetensors header, a tensor, a blob).
#[derive(Debug, Clone, Serialize)]
struct UnitRec {
    key: String,
    #[serde(skip)]
    dtype: DType,
    dtype_name: String,
    start: u64,
    len: u64,
    /// (file, unit) in the base version this run is XOR'd against.
    base: Option<(usize, usize)>,
    chunks: Vec<ChunkRec>,
}

#[derive(Debug, Clone, Serialize)]
struct FileRec {
    rel_path: String,
    len: u64,
    units: Vec<UnitRec>,
}

/// Block baselines: byte planes + zstd, XOR'd against a base or not.
struct Planes<'a> {
    series: &'a [Source],
    root: PathBuf,
    xor: Option<XorBase>,
    block_size: u32,
    /// The catalog of each stored version (also written as JSON).
    cats: Vec<Vec<FileRec>>,
    /// Per version: run key → (file, unit).
    keys: Vec<HashMap<String, (usize, usize)>>,
}

/// Bytes of payload encoded per parallel batch.
const WINDOW: u64 = 64 << 20;

impl<'a> Planes<'a> {
    fn new(series: &'a [Source], root: &Path, xor: Option<XorBase>, block_size: u32) -> Result<Self> {
        fs::create_dir_all(root).at(root)?;
        Ok(Planes { series, root: root.to_path_buf(), xor, block_size, cats: Vec::new(), keys: Vec::new() })
    }

    fn data_path(&self, v: usize) -> PathBuf {
        self.root.join(format!("v{v:05}.planes"))
    }

    /// The version version `v` deltas against.
    fn base_version(&self, v: usize) -> Option<usize> {
        match self.xor? {
            _ if v == 0 => None,
            XorBase::Previous => Some(v - 1),
            XorBase::First => Some(0),
        }
    }

    /// Decodes block `c` of unit `u` of file `f` of version `v`; returns
    /// the bytes and the chain length.
    fn decode(&self, data: &[File], v: usize, f: usize, u: usize, c: usize) -> Result<(Vec<u8>, u64)> {
        let unit = &self.cats[v][f].units[u];
        let rec = &unit.chunks[c];
        let mut payload = vec![0u8; rec.size as usize];
        super::sys::read_at(&data[v], &mut payload, rec.at).at(self.data_path(v))?;
        let mut out = vec![0u8; rec.len as usize];
        match (unit.base, self.base_version(v)) {
            (Some((bf, bu)), Some(bv)) => {
                let (base, levels) = self.decode(data, bv, bf, bu, c)?;
                baseline::bitx_like_decode(unit.dtype, &payload, &base, &mut out)?;
                Ok((out, levels + 1))
            }
            _ => {
                baseline::zipnn_like_decode(unit.dtype, &payload, &mut out)?;
                Ok((out, 1))
            }
        }
    }
}

/// The runs of a file: (key, dtype, start, len).
fn runs_of(rel: &str, kind: &FileKind, len: u64) -> Vec<(String, DType, u64, u64)> {
    match kind {
        FileKind::Safetensors(h) => {
            let mut out = vec![(format!("{rel}\0#header"), DType::U8, 0, h.data_start)];
            out.extend(h.tensors.iter().map(|t| (format!("{rel}\0{}", t.name), t.dtype, t.start, t.len)));
            out
        }
        FileKind::Blob => vec![(format!("{rel}\0#blob"), DType::U8, 0, len)],
    }
}

fn map_file(path: &Path, len: u64) -> Result<Mmap> {
    let file = File::open(path).at(path)?;
    let map = map_range(&file, path, 0, len as usize)?;
    tdelta::checkpoint::advise_sequential(&map);
    Ok(map)
}

impl Engine for Planes<'_> {
    fn pack(&mut self, v: usize, progress: &dyn Progress) -> Result<()> {
        let src = &self.series[v];
        let base_v = self.base_version(v);
        let path = self.data_path(v);
        let mut w = BufWriter::with_capacity(4 << 20, File::create(&path).at(&path)?);
        let mut at = 0u64;
        let mut files = Vec::with_capacity(src.ckpt.files.len());
        let mut keys = HashMap::new();
        progress.begin("pack", src.bytes);
        for (fi, f) in src.ckpt.files.iter().enumerate() {
            let map = map_file(&f.path, f.len)?;
            let mut base_maps: HashMap<usize, Mmap> = HashMap::new();
            let mut units = Vec::new();
            let mut jobs: Vec<(usize, u64, u64)> = Vec::new();
            // A single-file version is matched by run names only: its
            // file name changes from version to version.
            let rel = if src.ckpt.layout == Layout::File { "" } else { f.rel_path.as_str() };
            for (key, dtype, start, len) in runs_of(rel, &f.kind, f.len) {
                let base = base_v.and_then(|bv| {
                    let &(bf, bu) = self.keys[bv].get(&key)?;
                    let b = &self.cats[bv][bf].units[bu];
                    (b.dtype == dtype && b.len == len).then_some((bf, bu))
                });
                if let (Some((bf, _)), Some(bv)) = (base, base_v)
                    && !base_maps.contains_key(&bf)
                {
                    let bsrc = &self.series[bv].ckpt.files[bf];
                    base_maps.insert(bf, map_file(&bsrc.path, bsrc.len)?);
                }
                let ui = units.len();
                keys.insert(key.clone(), (fi, ui));
                for (o, l) in tdelta::block::ranges(len, self.block_size, dtype.align()) {
                    jobs.push((ui, start + o, l));
                }
                units.push(UnitRec { key, dtype, dtype_name: dtype.to_string(), start, len, base, chunks: Vec::new() });
            }
            let cats = &self.cats;
            let mut i = 0;
            while i < jobs.len() {
                let mut j = i;
                let mut bytes = 0;
                while j < jobs.len() && (j == i || bytes + jobs[j].2 <= WINDOW) {
                    bytes += jobs[j].2;
                    j += 1;
                }
                let payloads: Vec<Vec<u8>> = jobs[i..j]
                    .par_iter()
                    .map(|&(ui, off, len)| {
                        let unit = &units[ui];
                        let new = &map[off as usize..(off + len) as usize];
                        let p = match (unit.base, base_v) {
                            (Some((bf, bu)), Some(bv)) => {
                                let bstart = cats[bv][bf].units[bu].start + (off - unit.start);
                                let base = &base_maps[&bf][bstart as usize..(bstart + len) as usize];
                                baseline::bitx_like(unit.dtype, new, base)
                            }
                            _ => baseline::zipnn_like(unit.dtype, new),
                        };
                        progress.advance(len);
                        p
                    })
                    .collect();
                for (&(ui, off, len), p) in jobs[i..j].iter().zip(payloads) {
                    w.write_all(&p).at(&path)?;
                    units[ui].chunks.push(ChunkRec { off, len, at, size: p.len() as u64 });
                    at += p.len() as u64;
                }
                i = j;
            }
            files.push(FileRec { rel_path: f.rel_path.clone(), len: f.len, units });
        }
        let file = w.into_inner().map_err(|e| tdelta::Error::io(&path, e.into_error()))?;
        file.sync_all().at(&path)?;
        // The catalog: what a reader needs to find each block.
        let cat_path = self.root.join(format!("v{v:05}.json"));
        let text = serde_json::to_vec(&files).map_err(|e| tdelta::Error::Internal(e.to_string()))?;
        let mut cat = File::create(&cat_path).at(&cat_path)?;
        cat.write_all(&text).at(&cat_path)?;
        cat.sync_all().at(&cat_path)?;
        progress.end();
        self.cats.push(files);
        self.keys.push(keys);
        Ok(())
    }

    fn restore(&mut self, v: usize, out: &Path, progress: &dyn Progress) -> Result<u64> {
        let src = &self.series[v];
        let data: Vec<File> = (0..=v)
            .map(|k| {
                let p = self.data_path(k);
                File::open(&p).at(&p)
            })
            .collect::<Result<_>>()?;
        progress.begin("restore", src.bytes);
        if src.ckpt.layout == Layout::Directory {
            fs::create_dir_all(out).at(out)?;
        }
        let mut levels = 1;
        for (fi, f) in self.cats[v].iter().enumerate() {
            let dst = out_path(src.ckpt.layout, out, &f.rel_path)?;
            let file = File::create(&dst).at(&dst)?;
            file.set_len(f.len).at(&dst)?;
            let jobs: Vec<(usize, usize)> =
                f.units.iter().enumerate().flat_map(|(u, unit)| (0..unit.chunks.len()).map(move |c| (u, c))).collect();
            let l = jobs
                .par_iter()
                .map(|&(u, c)| -> Result<u64> {
                    let (bytes, l) = self.decode(&data, v, fi, u, c)?;
                    let rec = &f.units[u].chunks[c];
                    super::sys::write_at(&file, &bytes, rec.off).at(&dst)?;
                    progress.advance(rec.len);
                    Ok(l)
                })
                .try_reduce(|| 1u64, |a, b| Ok(a.max(b)))?;
            levels = levels.max(l);
            file.sync_all().at(&dst)?;
        }
        progress.end();
        Ok(levels)
    }
}

// ------------------------------------------------------------------ tdelta

/// A tdelta store.
struct Tdelta<'a> {
    series: &'a [Source],
    store: Store,
    opts: PackOptions,
    ids: Vec<Hash>,
    error: Option<LossyError>,
}

impl Engine for Tdelta<'_> {
    fn pack(&mut self, v: usize, progress: &dyn Progress) -> Result<()> {
        let path = self.series[v].ckpt.root.clone();
        let mut opts = self.opts.clone();
        opts.message = format!("bench version {v}");
        let r = tdelta::pack(&mut self.store, &path, &opts, progress)?;
        self.ids.push(r.id);
        if opts.lossy.is_some() {
            let rec = r.manifest.lossy.as_ref();
            let get = |k: fn(&tdelta::LossyRecord) -> Option<f64>| rec.and_then(k).unwrap_or(0.0);
            let e = self.error.get_or_insert_with(LossyError::default);
            e.max_abs = e.max_abs.max(get(|l| l.max_abs_err));
            e.weight_rel_l2 = e.weight_rel_l2.max(get(|l| l.weight_rel_l2));
            e.delta_rel_l2 = e.delta_rel_l2.max(get(|l| l.delta_rel_l2));
        }
        Ok(())
    }

    fn error(&self) -> Option<LossyError> {
        self.error
    }

    fn restore(&mut self, v: usize, out: &Path, progress: &dyn Progress) -> Result<u64> {
        let r = tdelta::restore(&self.store, self.ids[v], out, &RestoreOptions { force: true }, progress)?;
        Ok(r.max_levels.max(1))
    }
}
