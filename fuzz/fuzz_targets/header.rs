//! Fuzz target: safetensors header parsing (`tdelta::checkpoint::parse_header`,
//! as if the bytes were a whole file).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = tdelta::checkpoint::parse_header(Path::new("fuzz.safetensors"), data, data.len() as u64);
});
