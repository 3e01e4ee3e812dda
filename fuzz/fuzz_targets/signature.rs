//! Fuzz target: `tdelta::fuzzing::signature` on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tdelta::fuzzing::signature(data);
});
