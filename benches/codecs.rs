//! Criterion benches of the block codecs.
fn main() {}
