//! Fuzz target: `tdelta::fuzzing::header` on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tdelta::fuzzing::header(data);
});
