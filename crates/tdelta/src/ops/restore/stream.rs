//! One stored file or one tensor written to a [`Write`] in order, without
//! touching the file system: blocks are decoded in parallel a batch at a
//! time, so memory stays bounded whatever the size.

use std::io::Write;

use rayon::prelude::*;

use super::{block_error, check_len, levels_bound};
use crate::Hash;
use crate::ops::blocks::Scratch;
use crate::store::Store;
use crate::store::manifest::{BlockRef, FileEntry, Manifest, TensorEntry};
use crate::{Error, Result};

/// Blocks decoded at once before they are written out in order.
const BATCH: usize = 32;

/// Writes file `path` of version `id` to `w`, byte for byte; returns its
/// size. An unknown path is an error listing the version's files.
pub fn write_file(store: &Store, id: Hash, path: &str, w: &mut dyn Write) -> Result<u64> {
    let m = store.manifest(id)?;
    let Some(f) = m.file(path) else {
        let names: Vec<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
        return Err(Error::NotInVersion {
            version: id.short(),
            what: format!("file `{path}`"),
            detail: Some(format!("its files are: {}", names.join(", "))),
        });
    };
    stream(store, id, &m, f, &f.blocks(m.block_size), w)?;
    Ok(f.size)
}

/// Writes the raw bytes of tensor `name` of version `id` to `w` (only that
/// tensor's blocks are read); returns the file it is in and its entry.
pub fn write_tensor(store: &Store, id: Hash, name: &str, w: &mut dyn Write) -> Result<(String, TensorEntry)> {
    let m = store.manifest(id)?;
    let (f, ti) =
        m.files.iter().find_map(|f| f.tensors().iter().position(|t| t.name == name).map(|i| (f, i))).ok_or_else(
            || Error::NotInVersion { version: id.short(), what: format!("tensor `{name}`"), detail: None },
        )?;
    let blocks: Vec<BlockRef> = f.blocks(m.block_size).into_iter().filter(|b| b.tensor == Some(ti)).collect();
    stream(store, id, &m, f, &blocks, w)?;
    Ok((f.path.clone(), f.tensors()[ti].clone()))
}

fn stream(store: &Store, id: Hash, m: &Manifest, f: &FileEntry, blocks: &[BlockRef], w: &mut dyn Write) -> Result<()> {
    let bound = levels_bound(m);
    let out_err = |e: std::io::Error| Error::io("<output>", e);
    for batch in blocks.chunks(BATCH) {
        let bufs: Vec<Vec<u8>> = batch
            .par_iter()
            .map_init(Scratch::default, |scratch, b| {
                let mut buf = Vec::new();
                store
                    .read_block_within(b.hash, bound, &mut buf, scratch, None)
                    .map_err(|e| block_error(id, f, b, e))?;
                check_len(store, id, f, b, &buf)?;
                Ok(buf)
            })
            .collect::<Result<_>>()?;
        for buf in &bufs {
            w.write_all(buf).map_err(out_err)?;
        }
    }
    w.flush().map_err(out_err)
}
