//! The `tdelta` command-line tool.

fn main() {}
