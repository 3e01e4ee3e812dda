//! What a store is (`tdelta info`) and the upgrade of a format-1 store to
//! format 2 (`tdelta upgrade`).

use std::path::PathBuf;

use serde::Serialize;

use super::{STORE_VERSION, Store, read_config, write_config};
use crate::backend::PutMode;
use crate::{Algo, Result};

/// A store's settings and size ([`Store::info`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoreInfo {
    /// The store directory.
    pub path: PathBuf,
    /// Store format: 1 (xxh3-128 ids) or 2 (BLAKE3 ids).
    pub format: u32,
    /// The algorithm of new ids: `blake3` or `xxh3-128`.
    pub hash: Algo,
    /// Raw block size in bytes.
    pub block_size: u32,
    /// Where the objects live: `local PATH`.
    pub backend: String,
    /// Versions (manifests).
    pub versions: usize,
    /// Pack files.
    pub packs: usize,
    /// Distinct blocks stored.
    pub blocks: usize,
    /// Bytes of the pack files.
    pub bytes: u64,
    /// Refs (channels and tags; `HEAD` not counted).
    pub refs: usize,
}

/// What [`Store::upgrade`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct UpgradeReport {
    /// Format before.
    pub from: u32,
    /// Format after.
    pub to: u32,
}

impl UpgradeReport {
    /// True when the store was already at the newest format.
    pub fn unchanged(&self) -> bool {
        self.from == self.to
    }
}

impl Store {
    /// The store's settings and size.
    pub fn info(&self) -> Result<StoreInfo> {
        let stats = self.stats()?;
        Ok(StoreInfo {
            path: self.root.clone(),
            format: self.config.format,
            hash: self.config.hash,
            block_size: self.config.block_size,
            backend: self.backend().describe(),
            versions: stats.versions,
            packs: stats.packs,
            blocks: stats.blocks,
            bytes: stats.pack_bytes,
            refs: self.refs()?.len(),
        })
    }

    /// Upgrades a format-1 store to format 2: new blocks and versions are
    /// named with BLAKE3 from then on; existing objects keep their
    /// xxh3-128 ids (32 hex digits, never equal to a 64-digit BLAKE3 id)
    /// and stay readable. The only write is the config, replaced
    /// atomically under the writer lock: an interrupted upgrade leaves the
    /// store at format 1, whole. A store already at format 2 is left as is.
    pub fn upgrade(&mut self) -> Result<UpgradeReport> {
        self.refuse_if_config_damaged("upgrade")?;
        let _txn = self.begin_write_unsettled()?;
        // Settle a ref move left by a killed format-1 writer first, so
        // that everything before the upgrade is format 1.
        self.settle_refs()?;
        let (_, tag) = self.backend().get("config", 1 << 16)?;
        let mut config = read_config(self.backend().as_ref())?;
        let from = config.format;
        if from < STORE_VERSION {
            config.format = STORE_VERSION;
            config.hash = Algo::Blake3;
            // Compare-and-swap: the config read above is the one replaced.
            write_config(self.backend().as_ref(), &config, PutMode::IfMatch(Some(tag)))?;
        }
        self.config = config;
        Ok(UpgradeReport { from, to: self.config.format })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::InitOptions;

    #[test]
    fn new_store_is_format_2_and_info_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::init(dir.path(), &InitOptions::default()).unwrap();
        let info = store.info().unwrap();
        assert_eq!((info.format, info.hash, info.block_size), (2, Algo::Blake3, 1 << 20));
        assert_eq!(info.backend, format!("local {}", dir.path().display()));
        assert_eq!((info.versions, info.packs, info.blocks, info.bytes, info.refs), (0, 0, 0, 0, 0));
        let json = serde_json::to_value(&info).unwrap();
        assert_eq!(json["hash"], "blake3");
        // The config names both, and a reopen reads them back.
        let reopened = Store::open(dir.path()).unwrap();
        assert_eq!((reopened.config().format, reopened.hasher()), (2, Algo::Blake3));
        assert!(store.upgrade().unwrap().unchanged());
    }

    #[test]
    fn config_whose_hash_contradicts_its_format_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        Store::init(dir.path(), &InitOptions::default()).unwrap();
        let backend = crate::backend::LocalDir::new(dir.path());
        let mut config = read_config(&backend).unwrap();
        config.hash = Algo::Xxh3;
        write_config(&backend, &config, PutMode::Overwrite).unwrap();
        let e = read_config(&backend).unwrap_err().to_string();
        assert!(e.contains("format 2 store names hash `xxh3-128`; it must be `blake3`"), "{e}");
        // The store still opens, read-only, and says why.
        let mut store = Store::open(dir.path()).unwrap();
        assert!(store.config_problem().is_some());
        // Writing and upgrading are refused as damage, naming the config.
        for e in [store.upgrade().unwrap_err(), store.begin_write().unwrap_err()] {
            assert_eq!(e.kind(), crate::ErrorKind::Corrupt, "{e}");
            assert!(e.to_string().contains("config") && e.to_string().contains("refusing to"), "{e}");
        }
    }
}
