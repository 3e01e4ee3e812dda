//! Fuzz target: signature and key files (`tdelta_format::signature`), ref
//! files (`tdelta_format::refs`) and audit log lines and logs
//! (`tdelta_format::audit`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tdelta_format::{audit, refs, signature};

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = signature::SignatureFile::decode(data) {
        let _ = f.name();
        let _ = f.message();
        let again = f.encode().expect("a decoded signature file encodes");
        assert_eq!(signature::SignatureFile::decode(&again).expect("decode(encode(f))"), f);
    }
    let _ = signature::decode_public_key(data);
    let _ = signature::decode_secret_key(data);
    let _ = refs::decode_ref(data);
    if let Ok(line) = audit::parse_entry(data) {
        let _ = line.is_intact();
        let _ = audit::entry_hash(&line.entry);
    }
    let _ = audit::check_log(data);
});
