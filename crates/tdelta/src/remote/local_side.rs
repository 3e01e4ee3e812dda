//! The local store's objects as the transfer engine sees them, through the
//! store's own backend ([`Store::backend`]): what a set of versions needs,
//! and which object names a fetch may write.

use std::collections::{BTreeSet, HashSet};

use crate::store::{index_name, pack_name, version_name};
use crate::{Error, Hash, Result, Store};

/// One immutable local object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LocalObject {
    /// Its name in the store (`packs/<id>.pack`).
    pub name: String,
    /// Its size.
    pub size: u64,
}

/// The signature object of version `id` (FORMAT.md §16).
pub(crate) fn version_sig_name(id: Hash) -> String {
    format!("signatures/versions/{id}.sig")
}

/// The versions `tips` and every ancestor the local store holds (through
/// manifest parents and delta bases), tips first.
pub(crate) fn lines(store: &Store, tips: &[Hash]) -> Result<Vec<Hash>> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut stack: Vec<Hash> = tips.iter().rev().copied().collect();
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        // A tip must be there; an ancestor dropped from the local store
        // (`tdelta drop`) ends its line.
        if !store.has_version(id) {
            if tips.contains(&id) {
                return Err(Error::UnknownRef { name: id.to_string() });
            }
            continue;
        }
        let s = store.manifest_summary(id)?;
        out.push(id);
        stack.extend(s.base);
        stack.extend(s.parent);
    }
    Ok(out)
}

/// The immutable objects that `versions` need, in the order a transfer
/// sends them: the packs holding their blocks and every delta base of
/// those blocks, then those packs' indexes, then the manifests, then the
/// versions' signatures where the store has them. A block the store lacks
/// is an error: a remote never gets a version whose objects are not all
/// there.
pub(crate) fn needed_objects(store: &Store, versions: &[Hash]) -> Result<Vec<LocalObject>> {
    let mut packs: BTreeSet<usize> = BTreeSet::new();
    let mut done: HashSet<Hash> = HashSet::new();
    for &id in versions {
        let m = store.manifest(id)?;
        for f in &m.files {
            for h in f.block_hashes() {
                if !done.insert(h) {
                    continue;
                }
                for e in store.chain(h)? {
                    done.insert(e.hash);
                    packs.insert(e.pack as usize);
                }
            }
        }
    }
    let backend = store.backend();
    let mut out = Vec::new();
    let mut idxs = Vec::new();
    for i in packs {
        let p = &store.packs[i];
        out.push(LocalObject { name: pack_name(p.id), size: p.len });
        let name = index_name(p.id);
        let size = backend.head(&name)?.size;
        idxs.push(LocalObject { name, size });
    }
    out.extend(idxs);
    let mut sigs = Vec::new();
    for &id in versions {
        let name = version_name(id);
        let size = backend.head(&name)?.size;
        out.push(LocalObject { name, size });
        let sig = version_sig_name(id);
        match backend.head(&sig) {
            Ok(m) => sigs.push(LocalObject { name: sig, size: m.size }),
            Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    out.extend(sigs);
    Ok(out)
}

/// What a fetched object is, by its name (`None`: a name the local store
/// does not take).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Pack(Hash),
    Index(Hash),
    Version(Hash),
    Signature(Hash),
}

impl Kind {
    pub(crate) fn of(name: &str) -> Option<Kind> {
        let id = |s: Option<&str>| s.and_then(|s| s.parse::<Hash>().ok());
        if let Some(rest) = name.strip_prefix("packs/") {
            if let Some(h) = id(rest.strip_suffix(".pack")) {
                return Some(Kind::Pack(h));
            }
            return id(rest.strip_suffix(".idx")).map(Kind::Index);
        }
        if let Some(rest) = name.strip_prefix("versions/") {
            return id(rest.strip_suffix(".tdm")).map(Kind::Version);
        }
        let rest = name.strip_prefix("signatures/versions/")?;
        id(rest.strip_suffix(".sig")).map(Kind::Signature)
    }

    /// The phase of a transfer it belongs to: packs, indexes, manifests,
    /// signatures.
    pub(crate) fn phase(self) -> usize {
        match self {
            Kind::Pack(_) => 0,
            Kind::Index(_) => 1,
            Kind::Version(_) => 2,
            Kind::Signature(_) => 3,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_by_name() {
        let h = Hash::of(b"x");
        assert_eq!(Kind::of(&format!("packs/{h}.pack")), Some(Kind::Pack(h)));
        assert_eq!(Kind::of(&format!("packs/{h}.idx")), Some(Kind::Index(h)));
        assert_eq!(Kind::of(&format!("versions/{h}.tdm")), Some(Kind::Version(h)));
        assert_eq!(Kind::of(&version_sig_name(h)), Some(Kind::Signature(h)));
        assert_eq!(Kind::of("packs/README.idx"), None);
        assert_eq!(Kind::of(&format!("signatures/moves/{h}.sig")), None);
        assert_eq!(Kind::of(&format!("refs/{h}")), None);
    }
}
