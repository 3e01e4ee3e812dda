//! Version manifests: the types and their codec live in the format crate
//! (`tdelta_format::manifest`, layout in `FORMAT.md`); the store reads the
//! bytes and names the file in errors.

pub use tdelta_format::manifest::*;
