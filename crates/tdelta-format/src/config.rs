//! The store's `config` over bytes: `FORMAT.md`, "Store config". A framed
//! file whose frame version is the store format and whose body is JSON.

use serde::{Deserialize, Serialize};

use crate::Algo;
use crate::error::{FileKind, FormatError, Result};
use crate::frame;

/// First 8 bytes of the config.
pub const CONFIG_MAGIC: &[u8; 8] = b"TDSTORE\0";
/// Store format written by this build: 2 names blocks and versions with
/// BLAKE3; format 1 (xxh3-128) is still read.
pub const STORE_VERSION: u32 = 2;
/// Configs larger than this are corrupt by definition.
pub const MAX_CONFIG: u64 = 1 << 16;

/// Settings fixed when a store is created.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoreConfig {
    /// Raw block size in bytes.
    pub block_size: u32,
    /// Creation time.
    pub created: u64,
    /// The algorithm of new ids (absent in format 1: xxh3-128).
    #[serde(default, skip_serializing_if = "is_xxh3")]
    pub hash: Algo,
    /// The store format: the config's frame version (1 or 2).
    #[serde(skip)]
    pub format: u32,
}

fn is_xxh3(a: &Algo) -> bool {
    *a == Algo::Xxh3
}

impl StoreConfig {
    /// The config file, framed with its format as the frame version.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let body = serde_json::to_vec(self)
            .map_err(|e| FormatError::Encode { file: FileKind::Config, reason: e.to_string() })?;
        Ok(frame::frame(CONFIG_MAGIC, self.format, 0, &body))
    }

    /// Parses and checks a config: the block size in range, and the hash
    /// the one its format requires (format 1: xxh3, format 2: blake3).
    pub fn decode(bytes: &[u8]) -> Result<StoreConfig> {
        let framed = frame::unframe(FileKind::Config, bytes, CONFIG_MAGIC, STORE_VERSION)?;
        let bad = |reason: String| Err(FormatError::invalid(FileKind::Config, reason));
        let mut config: StoreConfig = match serde_json::from_slice(framed.body) {
            Ok(c) => c,
            Err(e) => return bad(format!("config is not valid: {e}")),
        };
        if !(crate::block::MIN_BLOCK_SIZE..=crate::block::MAX_BLOCK_SIZE).contains(&config.block_size) {
            return bad(format!("block size {} out of range", config.block_size));
        }
        config.format = framed.version;
        let expected = if config.format >= 2 { Algo::Blake3 } else { Algo::Xxh3 };
        if config.hash != expected {
            return bad(format!(
                "format {} store names hash `{}`; it must be `{expected}`",
                config.format, config.hash
            ));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trips_and_its_hash_must_match_its_format() {
        for (format, hash) in [(1, Algo::Xxh3), (2, Algo::Blake3)] {
            let c = StoreConfig { block_size: 1 << 20, created: 9, hash, format };
            assert_eq!(StoreConfig::decode(&c.encode().unwrap()).unwrap(), c);
        }
        let wrong = StoreConfig { block_size: 1 << 20, created: 9, hash: Algo::Xxh3, format: 2 };
        let e = StoreConfig::decode(&wrong.encode().unwrap()).unwrap_err();
        assert!(e.to_string().contains("format 2 store names hash `xxh3-128`; it must be `blake3`"), "{e}");
        let tiny = StoreConfig { block_size: 1, created: 9, hash: Algo::Blake3, format: 2 };
        assert!(StoreConfig::decode(&tiny.encode().unwrap()).unwrap_err().to_string().contains("out of range"));
        let newer = StoreConfig { format: 3, ..tiny };
        let e = StoreConfig::decode(&newer.encode().unwrap()).unwrap_err();
        assert!(matches!(e, FormatError::UnsupportedVersion { found: 3, supported: 2, .. }), "{e}");
    }
}
