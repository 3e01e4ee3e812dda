//! tdelta: a tensor-aware delta storage engine for model checkpoints.
#![deny(missing_docs)]

pub mod block;
pub mod checkpoint;
pub mod codec;
mod dtype;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod hash;
mod ops;
mod store;
pub mod synth;

pub use dtype::{DType, UnknownDType};
pub use error::{Error, Result};
pub use hash::Hash;
pub use store::manifest::{BlockRef, FileContent, FileEntry, LayoutKind, Manifest, TensorEntry, VersionStats};
pub use store::refs::{validate_ref_name, AuditEntry, AuditReport};
pub use store::{InitOptions, Store, StoreConfig};
