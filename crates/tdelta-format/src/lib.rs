//! tdelta's on-disk format, shared by every other crate: content hashes,
//! dtypes, how a tensor is cut into blocks, which relative paths a version
//! may hold, and the encoding and decoding of every kind of store file
//! (the framed envelope, the config, packs and their indexes, manifests,
//! refs, audit entries, signature and key files). Pure functions over
//! bytes and strings; no I/O. The contract is `FORMAT.md`; `tests/golden/`
//! holds files of each kind that these functions must read and write byte
//! for byte.
//!
//! ```
//! use tdelta_format::{Hash, refs};
//! let id = Hash::of(b"a version");
//! let bytes = refs::encode_ref(id);
//! assert_eq!(refs::decode_ref(bytes.as_bytes()).unwrap(), id);
//! ```
#![deny(missing_docs)]

pub mod audit;
pub mod block;
pub mod config;
mod dtype;
mod error;
pub mod frame;
mod hash;
pub mod lossy_record;
pub mod manifest;
pub mod pack;
pub mod refs;
pub mod relpath;
pub mod signature;

pub use dtype::{DType, UnknownDType};
pub use error::{Check, FileKind, FormatError};
pub use hash::{Algo, Domain, Hash, Hasher};
