//! Fuzz target: pack index decoding (`tdelta_format::pack`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tdelta_format::pack::{decode_index, encode_index};

// The bytes as given, then with the trailing checksum fixed up so the
// fuzzer reaches the entry checks; an index that decodes encodes to an
// index that decodes to the same entries.
fuzz_target!(|data: &[u8]| {
    let _ = decode_index(data, u64::MAX / 2);
    if data.len() >= 8 {
        let mut fixed = data.to_vec();
        let end = fixed.len() - 8;
        let sum = xxhash_rust::xxh3::xxh3_64(&fixed[..end]);
        fixed[end..].copy_from_slice(&sum.to_le_bytes());
        if let Ok(index) = decode_index(&fixed, u64::MAX / 2) {
            let again = encode_index(index.version, &index.entries).expect("a decoded index encodes");
            assert_eq!(decode_index(&again, u64::MAX / 2).expect("decode(encode(index))"), index);
        }
        let _ = decode_index(&fixed, 1 << 20);
    }
});
