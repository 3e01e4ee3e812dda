//! Fuzz target: manifest decoding (`tdelta_format::manifest`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tdelta_format::frame::frame;
use tdelta_format::manifest::{MANIFEST_MAGIC, MANIFEST_VERSION, Manifest};
use tdelta_format::{Algo, Hash};

// The bytes as a framed file, then wrapped in a valid frame (first byte:
// flags) so the fuzzer gets past the checksum, then as manifest JSON; a
// manifest that decodes encodes and decodes back to itself.
fuzz_target!(|data: &[u8]| {
    let _ = Manifest::decode(data, Hash::of(data));
    if let [flags, body @ ..] = data {
        let framed = frame(MANIFEST_MAGIC, MANIFEST_VERSION, u32::from(*flags & 3), body);
        let _ = Manifest::decode(&framed, Hash::of(body));
        let _ = Manifest::decode_summary(&framed, Hash::of(body));
    }
    if let Ok(m) = Manifest::from_json(data) {
        for algo in [Algo::Xxh3, Algo::Blake3] {
            let (id, bytes) = m.encode(algo).expect("a decoded manifest encodes");
            assert_eq!(Manifest::decode(&bytes, id).expect("decode(encode(m))"), m);
        }
    }
});
