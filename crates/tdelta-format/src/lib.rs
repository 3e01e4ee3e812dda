//! tdelta's on-disk vocabulary, shared by every other crate: content
//! hashes, dtypes, how a tensor is cut into blocks and which relative paths
//! a version may hold. Pure functions over bytes and strings; no I/O.
#![deny(missing_docs)]

pub mod block;
mod dtype;
mod hash;
pub mod relpath;

pub use dtype::{DType, UnknownDType};
pub use hash::{Algo, Domain, Hash, Hasher};
