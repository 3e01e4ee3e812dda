//! `tdelta unpack` and `tdelta cat`: a version, parts of it, one file or
//! one tensor out of the store.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use tdelta::{DType, LayoutKind, TensorEntry};

use crate::progress::Bar;
use crate::{Global, fmt, open_store, print_json};

#[derive(Args)]
pub(crate) struct UnpackArgs {
    /// Version to restore: HEAD, a tag, an id or an id prefix (4+ hex
    /// digits), optionally followed by ~N (N-th parent) or ^ (parent).
    #[arg(name = "REF")]
    reference: String,
    /// Output file (file versions; a file version restored into an
    /// existing directory lands there under its own name) or directory
    /// (directory versions).
    #[arg(short, long)]
    out: PathBuf,
    /// Let OUT exist: a file version replaces the file (or symlink, not
    /// what it points to) at OUT; a directory version writes its files
    /// into the existing directory OUT, each replacing the file of the same
    /// path. Nothing the version does not contain is removed; the store is
    /// never written (OUT may not be the store or inside it). Without
    /// --force, OUT must not exist or be an empty directory.
    #[arg(long)]
    force: bool,
    /// Only tensors whose name matches GLOB (repeatable, `*` matches
    /// anything): each safetensors file keeps its metadata and only those
    /// tensors, shard indexes list only them, and only their blocks are
    /// read.
    #[arg(long, value_name = "GLOB", num_args = 1..)]
    tensors: Vec<String>,
    /// Only the files of a directory version whose path matches GLOB
    /// (repeatable), e.g. config.json or 'model-00001-*'.
    #[arg(long, value_name = "GLOB", num_args = 1..)]
    files: Vec<String>,
    /// Read REF from this remote without a clone: only the blocks the
    /// requested parts need are fetched (ranged reads), and kept in the
    /// local store for later reads.
    #[arg(long, value_name = "NAME")]
    pub(crate) remote: Option<String>,
}

pub(crate) fn unpack(g: &Global, a: &UnpackArgs) -> Result<()> {
    let store = open_store(g)?;
    let t0 = Instant::now();
    let bar = Bar::new(g.quiet || g.json);
    let sel = tdelta::Selection { files: a.files.clone(), tensors: a.tensors.clone() };
    let opts = tdelta::RestoreOptions { force: a.force };
    if let Some(name) = &a.remote {
        let r = tdelta::remote::find(&store, Some(name))?;
        let (rep, read) = tdelta::remote::unpack(&store, &r, &a.reference, &a.out, &opts, &sel, &bar)
            .map_err(crate::remote::on(name))
            .with_context(|| format!("cannot restore {} from remote `{name}` to {}", a.reference, a.out.display()))?;
        let secs = t0.elapsed().as_secs_f64();
        if g.json {
            // The local restore's report, with what the remote read moved.
            let mut v = serde_json::to_value(&rep)?;
            v["remote"] = serde_json::to_value(&read)?;
            v["seconds"] = serde_json::json!(secs);
            print_json(&v)?;
        } else if !g.quiet {
            eprintln!(
                "restored {} ({}, {} files) from remote `{name}` to {} in {:.2}s: {} blocks fetched ({}, {} requests), {} \
                 read locally, every block verified",
                rep.id.short(),
                fmt::bytes(rep.bytes),
                rep.files,
                rep.out.display(),
                secs,
                read.blocks_fetched,
                fmt::bytes(read.bytes_fetched),
                read.requests,
                read.blocks_local
            );
        }
        return Ok(());
    }
    let id = store.resolve(&a.reference)?;
    let rep = tdelta::restore_parts(&store, id, &a.out, &opts, &sel, &bar)
        .with_context(|| format!("cannot restore {} to {}", a.reference, a.out.display()))?;
    let secs = rep.seconds;
    if g.json {
        print_json(&rep)?;
    } else if !g.quiet {
        eprintln!(
            "restored {} ({}, {} files) to {} in {:.2}s ({}), every block verified",
            id.short(),
            fmt::bytes(rep.bytes),
            rep.files,
            rep.out.display(),
            secs,
            fmt::mbps(rep.bytes, secs)
        );
        // Only a lossy version pays for reading its record again.
        if let Some(l) = rep.lossy.then(|| store.manifest(id)).transpose()?.and_then(|m| m.lossy) {
            eprintln!("{}", crate::lossy_line(&l));
        }
    }
    Ok(())
}

#[derive(Args)]
pub(crate) struct CatArgs {
    /// REF:PATH, a file of a version (e.g. best:config.json), or REF alone
    /// for the file of a file version or with --tensor.
    #[arg(name = "REF[:PATH]")]
    spec: String,
    /// Write this tensor's raw bytes (as stored: little-endian, row-major)
    /// instead of a file.
    #[arg(long, value_name = "NAME")]
    tensor: Option<String>,
    /// With --tensor: write an .npy file (format 1.0) that numpy.load
    /// reads. numpy has no bfloat16: BF16 tensors are written as uint16
    /// (`<u2`, the same bits; view them as bfloat16 with ml_dtypes), and
    /// 8-bit floats as uint8. F4 and F6 tensors are refused.
    #[arg(long, requires = "tensor")]
    npy: bool,
}

pub(crate) fn cat(g: &Global, a: &CatArgs) -> Result<()> {
    let store = open_store(g)?;
    let (reference, path) = match a.spec.split_once(':') {
        Some((r, p)) => (r, Some(p)),
        None => (a.spec.as_str(), None),
    };
    let id = store.resolve(reference)?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
    if let Some(name) = &a.tensor {
        if path.is_some() {
            bail!("give REF or --tensor NAME, not a file path with --tensor (tensor names are unique in a version)");
        }
        if a.npy {
            let m = store.manifest(id)?;
            let Some(t) = m.files.iter().flat_map(|f| f.tensors()).find(|t| &t.name == name) else {
                bail!("version {} has no tensor `{name}`", id.short());
            };
            out.write_all(&npy_header(t)?).context("cannot write to stdout")?;
        }
        tdelta::write_tensor(&store, id, name, &mut out)?;
        return Ok(());
    }
    let path = match path {
        Some(p) => p.to_string(),
        None => {
            let m = store.manifest(id)?;
            match (m.layout, m.files.as_slice()) {
                (LayoutKind::File, [f]) => f.path.clone(),
                _ => {
                    let names: Vec<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
                    bail!(
                        "version {} is a directory; give REF:PATH with one of its files: {}",
                        id.short(),
                        names.join(", ")
                    );
                }
            }
        }
    };
    tdelta::write_file(&store, id, &path, &mut out)?;
    Ok(())
}

/// The numpy type of a dtype, as `descr` of an .npy header.
fn npy_descr(d: DType) -> Result<&'static str> {
    Ok(match d {
        DType::BOOL => "|b1",
        DType::U8 | DType::F8_E4M3 | DType::F8_E5M2 | DType::F8_E8M0 | DType::F8_E4M3FNUZ | DType::F8_E5M2FNUZ => "|u1",
        DType::I8 => "|i1",
        DType::I16 => "<i2",
        DType::U16 | DType::BF16 => "<u2",
        DType::F16 => "<f2",
        DType::I32 => "<i4",
        DType::U32 => "<u4",
        DType::F32 => "<f4",
        DType::F64 => "<f8",
        DType::I64 => "<i8",
        DType::U64 => "<u8",
        DType::C64 => "<c8",
        other => bail!(
            "numpy has no type for {} (packed sub-byte elements); write the raw bytes without --npy",
            other.name()
        ),
    })
}

/// An .npy version 1.0 header for tensor `t`: magic, version, header
/// length, a Python dict literal padded with spaces to a multiple of 64
/// bytes and ended by a newline.
fn npy_header(t: &TensorEntry) -> Result<Vec<u8>> {
    let shape = match t.shape.as_slice() {
        [] => String::new(),
        [n] => format!("{n},"),
        dims => dims.iter().map(u64::to_string).collect::<Vec<_>>().join(", "),
    };
    let mut dict = format!("{{'descr': '{}', 'fortran_order': False, 'shape': ({shape}), }}", npy_descr(t.dtype)?);
    while (10 + dict.len() + 1) % 64 != 0 {
        dict.push(' ');
    }
    dict.push('\n');
    let len = u16::try_from(dict.len()).context("tensor shape too long for an .npy 1.0 header")?;
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(dtype: DType, shape: Vec<u64>) -> TensorEntry {
        TensorEntry { name: "t".into(), dtype, shape, offset: 0, len: 0, hash: Default::default(), blocks: vec![] }
    }

    #[test]
    fn npy_headers_are_aligned_and_name_the_type() {
        for (d, shape, text) in [
            (DType::F32, vec![2, 3], "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"),
            (DType::BF16, vec![5], "{'descr': '<u2', 'fortran_order': False, 'shape': (5,), }"),
            (DType::I8, vec![], "{'descr': '|i1', 'fortran_order': False, 'shape': (), }"),
        ] {
            let h = npy_header(&entry(d, shape)).unwrap();
            assert_eq!(&h[..8], b"\x93NUMPY\x01\x00");
            assert_eq!(h.len() % 64, 0);
            assert_eq!(usize::from(u16::from_le_bytes([h[8], h[9]])), h.len() - 10);
            let dict = std::str::from_utf8(&h[10..]).unwrap();
            assert_eq!(dict.trim_end(), text);
            assert!(dict.ends_with('\n'));
        }
        let e = npy_header(&entry(DType::F4, vec![4])).unwrap_err().to_string();
        assert!(e.contains("numpy has no type for F4"), "{e}");
    }
}
