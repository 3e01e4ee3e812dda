//! Entry points for the fuzz targets in `fuzz/`: each feeds untrusted bytes
//! to one reader. Not a stable API.

use std::path::Path;

use crate::DType;
use crate::Hash;
use crate::codec::{CodecId, decode};
use crate::store::manifest::Manifest;

/// Parses a safetensors header from the start of `bytes` (as if it were a
/// whole file of that length).
pub fn header(bytes: &[u8]) {
    let _ = crate::checkpoint::parse_header(Path::new("fuzz.safetensors"), bytes, bytes.len() as u64);
}

/// Decodes a framed manifest file as given, then the bytes wrapped in a
/// valid frame (first byte: flags) so that the fuzzer gets past the
/// checksum, then parses the bytes as manifest JSON.
pub fn manifest(bytes: &[u8]) {
    let p = Path::new("fuzz.manifest");
    let _ = Manifest::decode(p, bytes, Hash::of(bytes));
    if let [flags, body @ ..] = bytes {
        let framed = crate::store::fsutil::frame(
            crate::store::manifest::MANIFEST_MAGIC,
            crate::store::manifest::MANIFEST_VERSION,
            u32::from(*flags & 3),
            body,
        );
        let _ = Manifest::decode(p, &framed, Hash::of(body));
    }
    let _ = Manifest::from_json(p, bytes);
}

/// Parses a pack index as given, then with its trailing checksum fixed up
/// so that the fuzzer reaches the entry checks.
pub fn pack_index(bytes: &[u8]) {
    let p = Path::new("fuzz.idx");
    let _ = crate::store::pack::decode_index(p, bytes, 0, u64::MAX / 2);
    if bytes.len() >= 8 {
        let mut fixed = bytes.to_vec();
        let end = fixed.len() - 8;
        let sum = xxhash_rust::xxh3::xxh3_64(&fixed[..end]);
        fixed[end..].copy_from_slice(&sum.to_le_bytes());
        let _ = crate::store::pack::decode_index(p, &fixed, 0, u64::MAX / 2);
        let _ = crate::store::pack::decode_index(p, &fixed, 0, 1 << 20);
    }
}

/// Decodes a block payload: the first bytes choose codec, dtype and the
/// raw length (capped at 1 MiB); the rest is split into base and payload.
pub fn block(bytes: &[u8]) {
    let [codec, dtype, l0, l1, l2, rest @ ..] = bytes else { return };
    let Ok(codec) = CodecId::from_u8(*codec) else { return };
    let Some(dtype) = DType::from_code(*dtype) else { return };
    let raw_len = (usize::from(*l0) | usize::from(*l1) << 8 | usize::from(*l2) << 16) & 0xF_FFFF;
    let mut out = vec![0u8; raw_len];
    let base = rest.get(..raw_len).filter(|_| codec.needs_base());
    let payload = if base.is_some() { &rest[raw_len..] } else { rest };
    let _ = decode(dtype, codec, payload, base, &mut out);
}

/// Checks a signature file as given (under the name its content claims,
/// so that the fuzzer reaches the signature check), then parses the bytes
/// as a public and as a secret key file.
pub fn signature(bytes: &[u8]) {
    let p = Path::new("fuzz.sig");
    let name = serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| v["version"].as_str()?.parse().ok())
        .unwrap_or_else(|| Hash::of(bytes));
    let _ = crate::store::sign::check_bytes(p, bytes, name);
    let _ = crate::store::sign::PublicKey::parse(Path::new("fuzz.pub"), bytes);
    let _ = crate::store::sign::Signer::parse(Path::new("fuzz.key"), bytes);
}
