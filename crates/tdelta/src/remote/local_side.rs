//! The local store's objects as the transfer engine sees them: names,
//! sizes and files. One small adapter over `store.root()`, so that the
//! engine can move to the store's own backend when `Store::open_with`
//! lands.

use std::fs;
use std::path::PathBuf;

use crate::error::IoContext;
use crate::{Result, Store};

/// One immutable local object.
#[derive(Debug, Clone)]
pub(crate) struct LocalObject {
    /// Its name in the store (`packs/<id>.pack`).
    pub name: String,
    /// Its size.
    pub size: u64,
    /// Its file.
    pub path: PathBuf,
}

/// The immutable objects of a local store, in the order a transfer sends
/// them: packs, then their indexes, then manifests, then signatures. A
/// pack without its index (a writer killed between the two) is left out.
pub(crate) fn immutable_objects(store: &Store) -> Result<Vec<LocalObject>> {
    let mut packs = Vec::new();
    let mut idxs = Vec::new();
    let dir = store.root().join("packs");
    for ent in fs::read_dir(&dir).at(&dir)? {
        let ent = ent.at(&dir)?;
        let Some(name) = ent.file_name().to_str().map(str::to_string) else { continue };
        if let Some(stem) = name.strip_suffix(".idx")
            && stem.parse::<crate::Hash>().is_ok()
            && dir.join(format!("{stem}.pack")).is_file()
        {
            let pack = dir.join(format!("{stem}.pack"));
            let psize = fs::metadata(&pack).at(&pack)?.len();
            packs.push(LocalObject { name: format!("packs/{stem}.pack"), size: psize, path: pack });
            let isize = ent.metadata().at(ent.path())?.len();
            idxs.push(LocalObject { name: format!("packs/{name}"), size: isize, path: ent.path() });
        }
    }
    let mut versions = Vec::new();
    let vdir = store.root().join("versions");
    for ent in fs::read_dir(&vdir).at(&vdir)? {
        let ent = ent.at(&vdir)?;
        let Some(name) = ent.file_name().to_str().map(str::to_string) else { continue };
        if name.strip_suffix(".tdm").is_some_and(|s| s.parse::<crate::Hash>().is_ok()) {
            let size = ent.metadata().at(ent.path())?.len();
            versions.push(LocalObject { name: format!("versions/{name}"), size, path: ent.path() });
        }
    }
    packs.sort_by(|a, b| a.name.cmp(&b.name));
    idxs.sort_by(|a, b| a.name.cmp(&b.name));
    versions.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = packs;
    out.extend(idxs);
    out.extend(versions);
    Ok(out)
}

/// Where a fetched object lands in the local store (`None`: a name the
/// local store does not take).
pub(crate) fn local_path(store: &Store, name: &str) -> Option<PathBuf> {
    let (dir, file) = name.split_once('/')?;
    let ok = match dir {
        "packs" => file
            .strip_suffix(".pack")
            .or_else(|| file.strip_suffix(".idx"))
            .is_some_and(|s| s.parse::<crate::Hash>().is_ok()),
        "versions" => file.strip_suffix(".tdm").is_some_and(|s| s.parse::<crate::Hash>().is_ok()),
        _ => false,
    };
    ok.then(|| store.root().join(dir).join(file))
}
