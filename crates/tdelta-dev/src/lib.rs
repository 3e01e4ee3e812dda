//! Development tooling of tdelta, outside the engine's public API: the
//! storage-strategy benchmark ([`mod@bench`]) and the generator of realistic
//! checkpoint series ([`synth`]).
#![deny(missing_docs)]

pub mod bench;
pub mod synth;
