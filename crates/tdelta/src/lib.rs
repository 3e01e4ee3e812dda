//! tdelta: a tensor-aware delta storage engine for model checkpoints.
#![deny(missing_docs)]

mod checkpoint;
pub mod codec;
mod dtype;
mod error;

pub use dtype::{DType, UnknownDType};
pub use error::{Error, Result};
