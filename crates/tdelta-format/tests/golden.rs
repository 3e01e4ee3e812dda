//! Golden byte vectors (`tests/golden/`, `FORMAT.md`): small files of each
//! kind, for format 1 (xxh3-128 ids) and format 2 (BLAKE3 ids) where they
//! differ. Each test builds the expected bytes field by field from the
//! layout in `FORMAT.md` (only the hash functions come from the code),
//! checks the checked-in file against them, decodes the file into the
//! expected values and encodes those values back to exactly the file.
//!
//! `TDELTA_WRITE_GOLDEN=1 cargo test -p tdelta-format --test golden`
//! (re)writes the files from the spec-built bytes; review the diff.

use std::collections::BTreeMap;
use std::path::PathBuf;

use tdelta_format::audit::{self, AuditEntry, AuditOp, LOG_HEADER};
use tdelta_format::config::StoreConfig;
use tdelta_format::lossy_record::{LossyBlocks, LossyRecord, LossyTensor};
use tdelta_format::manifest::{FileContent, FileEntry, LayoutKind, Manifest, TensorEntry, VersionStats};
use tdelta_format::pack::{self, IndexEntry};
use tdelta_format::signature::{self, SignatureFile};
use tdelta_format::{Algo, DType, Domain, FileKind, Hash, frame, refs};

fn xxh64(b: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(b)
}

/// Compares the spec-built bytes with the checked-in file (or writes it).
fn golden(name: &str, spec: &[u8]) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
    if std::env::var_os("TDELTA_WRITE_GOLDEN").is_some() {
        std::fs::write(&path, spec).unwrap();
    }
    let file = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(file, spec, "{name}: the checked-in file differs from the bytes FORMAT.md gives");
    file
}

/// The binary form of an id: format 1 (16 bytes, little-endian) in
/// versions 1 and 2 of packs; a 32-byte field in version 3.
fn id_field(h: Hash, version: u32) -> Vec<u8> {
    if version >= 3 {
        let mut f = vec![0u8; 32];
        if h.width() == 16 {
            f[..16].copy_from_slice(&u128::from_str_radix(&h.to_hex(), 16).unwrap().to_le_bytes());
        } else {
            f.copy_from_slice(h.as_bytes());
        }
        f
    } else {
        u128::from_str_radix(&h.to_hex(), 16).unwrap().to_le_bytes().to_vec()
    }
}

#[test]
fn frame_golden() {
    // magic, version u32, flags u32, body length u64, body, xxh3-64 of all before.
    let body = b"hello, frame";
    let mut spec = b"TDGOLDEN".to_vec();
    spec.extend_from_slice(&[1, 0, 0, 0]);
    spec.extend_from_slice(&[5, 0, 0, 0]);
    spec.extend_from_slice(&[12, 0, 0, 0, 0, 0, 0, 0]);
    spec.extend_from_slice(body);
    let sum = xxh64(&spec);
    spec.extend_from_slice(&sum.to_le_bytes());
    let file = golden("frame.bin", &spec);

    let f = frame::unframe(FileKind::Config, &file, b"TDGOLDEN", 1).unwrap();
    assert_eq!((f.version, f.flags, f.body), (1, 5, &body[..]));
    assert_eq!(frame::frame(b"TDGOLDEN", 1, 5, body), file);
}

#[test]
fn config_golden() {
    // Framed, magic "TDSTORE\0", frame version = store format, flags 0;
    // the body is JSON. Format 1 has no `hash` member (xxh3); format 2
    // names `blake3`.
    for (format, algo, json) in [
        (1u32, Algo::Xxh3, r#"{"block_size":1048576,"created":1700000000}"#),
        (2, Algo::Blake3, r#"{"block_size":1048576,"created":1700000000,"hash":"blake3"}"#),
    ] {
        let mut spec = b"TDSTORE\0".to_vec();
        spec.extend_from_slice(&format.to_le_bytes());
        spec.extend_from_slice(&[0; 4]);
        spec.extend_from_slice(&(json.len() as u64).to_le_bytes());
        spec.extend_from_slice(json.as_bytes());
        let sum = xxh64(&spec);
        spec.extend_from_slice(&sum.to_le_bytes());
        let file = golden(&format!("config-format{format}"), &spec);
        let c = StoreConfig { block_size: 1 << 20, created: 1_700_000_000, hash: algo, format };
        assert_eq!(StoreConfig::decode(&file).unwrap(), c);
        assert_eq!(c.encode().unwrap(), file);
    }
}

/// Two blocks of a store of `algo`: a raw u8 block, and an xor-planes f32
/// delta against it.
fn blocks(algo: Algo) -> [(IndexEntry, Vec<u8>); 2] {
    let raw = b"0123456789abcdef".to_vec();
    let delta = vec![7u8; 10];
    let a = algo.block(&raw);
    let b = algo.block(b"the second block's raw bytes");
    let e = |hash, codec, dtype, depth, raw_len, payload: &[u8], base| IndexEntry {
        hash,
        offset: 0,
        stored_len: payload.len() as u32,
        raw_len,
        codec,
        dtype,
        depth,
        base,
        checksum: xxh64(payload),
    };
    [(e(a, 0, 2, 0, 16, &raw, None), raw.clone()), (e(b, 3, 13, 1, 28, &delta, Some(a)), delta.clone())]
}

/// Pack and index: version 2 (format 1) with 64-byte record headers and
/// index entries, version 3 (format 2) with 104 and 96 bytes.
#[test]
fn pack_and_index_golden() {
    for (version, algo) in [(2u32, Algo::Xxh3), (3, Algo::Blake3)] {
        // Pack: "TDPACK\0\0", version, 4 zero bytes; per block a record
        // header then the payload; footer "TDPKEND\0" + block count.
        let mut spec = b"TDPACK\0\0".to_vec();
        spec.extend_from_slice(&version.to_le_bytes());
        spec.extend_from_slice(&[0; 4]);
        let mut entries = Vec::new();
        for (mut e, payload) in blocks(algo) {
            let base = e.base.unwrap_or_default();
            let mut rec = b"TDBK".to_vec();
            rec.push(e.codec);
            rec.push(e.dtype);
            rec.extend_from_slice(&e.depth.to_le_bytes());
            rec.extend_from_slice(&e.raw_len.to_le_bytes());
            rec.extend_from_slice(&e.stored_len.to_le_bytes());
            rec.extend(id_field(e.hash, version));
            rec.extend(id_field(base, version));
            rec.extend_from_slice(&e.checksum.to_le_bytes());
            if version >= 3 {
                // id widths, then 6 reserved zero bytes.
                rec.extend_from_slice(&[e.hash.width() as u8, base.width() as u8, 0, 0, 0, 0, 0, 0]);
            }
            let hsum = xxh64(&rec);
            rec.extend_from_slice(&hsum.to_le_bytes());
            assert_eq!(rec.len(), pack::record_header_len(version));
            let at = spec.len() as u64;
            spec.extend_from_slice(&rec);
            e.offset = spec.len() as u64;
            entries.push((at, e));
            spec.extend_from_slice(&payload);
        }
        spec.extend_from_slice(b"TDPKEND\0");
        spec.extend_from_slice(&2u64.to_le_bytes());
        let file = golden(&format!("pack-v{version}.pack"), &spec);
        assert_eq!(algo.hash(Domain::Pack, &file).width(), algo.width(), "a pack is named by its hash");

        // The records read back, and are written back, through the crate.
        let mut built = pack::pack_header(version).to_vec();
        for ((at, e), (_, payload)) in entries.iter().zip(blocks(algo)) {
            let got = pack::decode_record_header(version, &file[*at as usize..], *at).unwrap();
            assert_eq!(&got, e);
            built.extend(pack::encode_record_header(version, e).unwrap());
            built.extend_from_slice(&payload);
        }
        built.extend_from_slice(&pack::pack_footer(2));
        assert_eq!(built, file);

        // Index: "TDINDEX\0", version, 4 zero bytes, count u64; entries
        // sorted by id; xxh3-64 of all before.
        let mut entries: Vec<IndexEntry> = entries.into_iter().map(|(_, e)| e).collect();
        entries.sort_by_key(|e| e.hash);
        let mut spec = b"TDINDEX\0".to_vec();
        spec.extend_from_slice(&version.to_le_bytes());
        spec.extend_from_slice(&[0; 4]);
        spec.extend_from_slice(&2u64.to_le_bytes());
        for e in &entries {
            let base = e.base.unwrap_or_default();
            spec.extend(id_field(e.hash, version));
            spec.extend_from_slice(&e.offset.to_le_bytes());
            spec.extend_from_slice(&e.stored_len.to_le_bytes());
            spec.extend_from_slice(&e.raw_len.to_le_bytes());
            spec.extend_from_slice(&[e.codec, e.dtype]);
            spec.extend_from_slice(&e.depth.to_le_bytes());
            if version >= 3 {
                spec.extend_from_slice(&[e.hash.width() as u8, base.width() as u8, 0, 0]);
            } else {
                spec.extend_from_slice(&[0; 4]);
            }
            spec.extend(id_field(base, version));
            spec.extend_from_slice(&e.checksum.to_le_bytes());
        }
        let sum = xxh64(&spec);
        spec.extend_from_slice(&sum.to_le_bytes());
        assert_eq!(spec.len(), 24 + 2 * pack::index_entry_len(version) + 8);
        let idx = golden(&format!("pack-v{version}.idx"), &spec);
        let decoded = pack::decode_index(&idx, file.len() as u64).unwrap();
        assert_eq!((decoded.version, &decoded.entries), (version, &entries));
        assert_eq!(pack::encode_index(version, &entries).unwrap(), idx);
    }
}

fn manifest(algo: Algo) -> Manifest {
    let header_blocks = vec![algo.block(b"header")];
    let t = vec![algo.block(b"weights")];
    let tensors = vec![TensorEntry {
        name: "w".into(),
        dtype: DType::F32,
        shape: vec![2, 2],
        offset: 72,
        len: 16,
        hash: algo.list(&t),
        blocks: t.clone(),
    }];
    let blob = vec![algo.block(b"notes")];
    // Format 2: a lossy version (its record is written), packed as a delta
    // of a parent.
    let lossy = (algo == Algo::Blake3).then(|| LossyRecord {
        bits: "int4".into(),
        delta_rel_l2: Some(0.5),
        exact_blocks: 0,
        format: 1,
        group: 64,
        keep_exact: vec!["*.norm".into()],
        lossy_blocks: 1,
        max_abs_err: Some(0.25),
        max_error: None,
        max_tensor_delta_rel_l2: Some(0.5),
        metric: "delta_rel_l2".into(),
        tensors: vec![LossyTensor {
            blocks: LossyBlocks { exact: 0, int2: 0, int4: 1, int8: 0 },
            delta_rel_l2: Some(0.5),
            dtype: "F32".into(),
            elements: 4,
            file: "model.safetensors".into(),
            max_abs_err: Some(0.25),
            name: "w".into(),
            original_hash: algo.list(&[algo.block(b"exact weights")]).to_hex(),
            weight_rel_l2: None,
        }],
        weight_rel_l2: Some(0.125),
    });
    let parent = (algo == Algo::Blake3).then(|| algo.hash(Domain::Version, b"{}"));
    Manifest {
        parent,
        base: parent,
        created: 1_700_000_000,
        author: "golden@host".into(),
        message: "golden".into(),
        meta: BTreeMap::from([("step".to_string(), "100".to_string())]),
        metrics: BTreeMap::from([("loss".to_string(), serde_json::json!(0.5))]),
        layout: LayoutKind::Directory,
        block_size: 1 << 16,
        policy: if lossy.is_some() { "chain:8".into() } else { "root".into() },
        max_levels: Some(1),
        lossy,
        files: vec![
            FileEntry {
                path: "model.safetensors".into(),
                size: 88,
                hash: algo.list(header_blocks.iter().chain(&t)),
                mode: Some(0o644),
                content: FileContent::Safetensors { header_len: 72, header_blocks, tensors },
            },
            FileEntry {
                path: "notes.txt".into(),
                size: 5,
                hash: algo.list(&blob),
                mode: None,
                content: FileContent::Blob { blocks: blob },
            },
        ],
        empty_dirs: vec!["logs".into()],
        stats: VersionStats { raw_bytes: 93, stored_bytes: 50, new_blocks: 3, ..VersionStats::default() },
    }
}

#[test]
fn manifest_golden() {
    for (format, algo) in [(1, Algo::Xxh3), (2, Algo::Blake3)] {
        let m = manifest(algo);
        let h = |x: Hash| x.to_hex();
        let FileContent::Safetensors { header_blocks, tensors, .. } = &m.files[0].content else { unreachable!() };
        let FileContent::Blob { blocks: blob } = &m.files[1].content else { unreachable!() };
        let id = |x: Option<Hash>| x.map_or("null".to_string(), |x| format!("\"{x}\""));
        let lossy = match &m.lossy {
            None => String::new(),
            Some(l) => format!(
                concat!(
                    r#""lossy":{{"bits":"int4","delta_rel_l2":0.5,"exact_blocks":0,"format":1,"group":64,"#,
                    r#""keep_exact":["*.norm"],"lossy_blocks":1,"max_abs_err":0.25,"max_error":null,"#,
                    r#""max_tensor_delta_rel_l2":0.5,"metric":"delta_rel_l2","tensors":[{{"blocks":"#,
                    r#"{{"exact":0,"int2":0,"int4":1,"int8":0}},"delta_rel_l2":0.5,"dtype":"F32","elements":4,"#,
                    r#""file":"model.safetensors","max_abs_err":0.25,"name":"w","original_hash":"{}","#,
                    r#""weight_rel_l2":null}}],"weight_rel_l2":0.125}},"#
                ),
                l.tensors[0].original_hash
            ),
        };
        // The JSON members in the order FORMAT.md lists them; the version
        // id is the hash of exactly these bytes.
        let json = format!(
            concat!(
                r#"{{"parent":{},"base":{},"created":1700000000,"author":"golden@host","message":"golden","#,
                r#""meta":{{"step":"100"}},"metrics":{{"loss":0.5}},"layout":"directory","block_size":65536,"#,
                r#""policy":"{}","max_levels":1,{}"files":["#,
                r#"{{"path":"model.safetensors","size":88,"hash":"{}","mode":420,"kind":"safetensors","header_len":72,"#,
                r#""header_blocks":["{}"],"tensors":[{{"name":"w","dtype":"F32","shape":[2,2],"offset":72,"len":16,"#,
                r#""hash":"{}","blocks":["{}"]}}]}},"#,
                r#"{{"path":"notes.txt","size":5,"hash":"{}","kind":"blob","blocks":["{}"]}}],"empty_dirs":["logs"],"#,
                r#""stats":{{"raw_bytes":93,"stored_bytes":50,"new_blocks":3,"reused_blocks":0,"delta_blocks":0,"max_depth":0}}}}"#
            ),
            id(m.parent),
            id(m.base),
            m.policy,
            lossy,
            h(m.files[0].hash),
            h(header_blocks[0]),
            h(tensors[0].hash),
            h(tensors[0].blocks[0]),
            h(m.files[1].hash),
            h(blob[0]),
        );
        let vid = algo.hash(Domain::Version, json.as_bytes());
        // Framed (magic "TDMANIF\0", version 1, flag 1 = zstd): the body
        // is the JSON length u64 then its zstd frame (level 3, zstd pinned
        // by Cargo.lock: another encoder may compress differently, and
        // readers accept any valid zstd frame).
        let mut body = (json.len() as u64).to_le_bytes().to_vec();
        body.extend(zstd::bulk::compress(json.as_bytes(), 3).unwrap());
        let mut spec = b"TDMANIF\0".to_vec();
        spec.extend_from_slice(&[1, 0, 0, 0, 1, 0, 0, 0]);
        spec.extend_from_slice(&(body.len() as u64).to_le_bytes());
        spec.extend_from_slice(&body);
        let sum = xxh64(&spec);
        spec.extend_from_slice(&sum.to_le_bytes());
        let file = golden(&format!("manifest-format{format}.tdm"), &spec);

        assert_eq!(Manifest::decode(&file, vid).unwrap(), m);
        assert_eq!(m.encode(algo).unwrap(), (vid, file.clone()));
        let s = Manifest::decode_summary(&file, vid).unwrap();
        assert_eq!((s.policy.as_str(), s.is_lossy, s.block_size), (m.policy.as_str(), m.lossy.is_some(), 65536));
        // An uncompressed body (flags 0) is valid too.
        let plain = frame::frame(tdelta_format::manifest::MANIFEST_MAGIC, 1, 0, json.as_bytes());
        assert_eq!(Manifest::decode(&plain, vid).unwrap(), m);
    }
}

#[test]
fn ref_golden() {
    for (format, hex) in [
        (1, "0123456789abcdeffedcba9876543210"),
        (2, "0123456789abcdeffedcba98765432100123456789abcdeffedcba9876543210"),
    ] {
        let id: Hash = hex.parse().unwrap();
        let line = format!("tdelta-ref 1 {hex}");
        let spec = format!("{line} {:016x}\n", xxh64(line.as_bytes()));
        let file = golden(&format!("HEAD-format{format}"), spec.as_bytes());
        assert_eq!(refs::decode_ref(&file).unwrap(), id);
        assert_eq!(refs::encode_ref(id).as_bytes(), file);
    }
}

fn entries() -> [AuditEntry; 3] {
    let v1: Hash = "2d750215408b1daea45223e98c1dc8d8".parse().unwrap();
    let v2 = Algo::Blake3.hash(Domain::Version, b"golden");
    let first = AuditEntry {
        seq: 1,
        time: 1_700_000_000,
        who: "golden@host".into(),
        op: AuditOp::Pack,
        r#ref: Some("HEAD".into()),
        old: None,
        new: Some(v1),
        why: String::new(),
        prev: Hash::default(),
    };
    let second = AuditEntry {
        seq: 2,
        op: AuditOp::Tag,
        r#ref: Some("stable".into()),
        why: "release".into(),
        prev: audit::entry_hash(&first).unwrap(),
        ..first.clone()
    };
    // After an upgrade to format 2: ids of 64 hex digits.
    let third = AuditEntry {
        seq: 3,
        op: AuditOp::Other("upgrade".into()),
        r#ref: Some("HEAD".into()),
        old: Some(v1),
        new: Some(v2),
        why: String::new(),
        prev: audit::entry_hash(&second).unwrap(),
        ..first.clone()
    };
    [first, second, third]
}

#[test]
fn audit_log_golden() {
    let es = entries();
    let v1 = "2d750215408b1daea45223e98c1dc8d8";
    let v2 = Algo::Blake3.hash(Domain::Version, b"golden").to_hex();
    let b1 = format!(
        r#"{{"seq":1,"time":1700000000,"who":"golden@host","op":"pack","ref":"HEAD","new":"{v1}","prev":"00000000000000000000000000000000"}}"#
    );
    let h1 = Hash::of(b1.as_bytes());
    let b2 = format!(
        r#"{{"seq":2,"time":1700000000,"who":"golden@host","op":"tag","ref":"stable","new":"{v1}","why":"release","prev":"{h1}"}}"#
    );
    let h2 = Hash::of(b2.as_bytes());
    let b3 = format!(
        r#"{{"seq":3,"time":1700000000,"who":"golden@host","op":"upgrade","ref":"HEAD","old":"{v1}","new":"{v2}","prev":"{h2}"}}"#
    );
    let h3 = Hash::of(b3.as_bytes());
    // The seal is the xxh3-128 of the line without its last member
    // `"hash"`, in both formats.
    let seal = |b: &str, h: Hash| format!("{},\"hash\":\"{h}\"}}\n", &b[..b.len() - 1]);
    let spec = format!("{LOG_HEADER}\n{}{}{}", seal(&b1, h1), seal(&b2, h2), seal(&b3, h3));
    let file = golden("audit.log", spec.as_bytes());

    let checked = audit::check_log(&file);
    assert_eq!(checked.problem, None);
    let got: Vec<(AuditEntry, Hash)> = checked.entries;
    assert_eq!(got, vec![(es[0].clone(), h1), (es[1].clone(), h2), (es[2].clone(), h3)]);
    assert_eq!(audit::encode_log(&es).unwrap(), file);
}

/// An entry written by a newer build, with a member this build does not
/// know: sealed over its stored bytes, it verifies here.
#[test]
fn audit_entry_from_a_newer_build_golden() {
    let body = r#"{"seq":1,"time":1700000000,"who":"golden@host","op":"pack","ref":"HEAD","prev":"00000000000000000000000000000000","host_id":7}"#;
    let h = Hash::of(body.as_bytes());
    let spec = format!("{},\"hash\":\"{h}\"}}", &body[..body.len() - 1]);
    let file = golden("audit-newer-entry.json", spec.as_bytes());
    let p = audit::parse_entry(&file).unwrap();
    assert!(p.is_intact());
    assert_eq!((p.entry.op, p.hash), (AuditOp::Pack, h));
}

/// Signature and key files, with the key made from a fixed seed (ed25519
/// signatures are deterministic).
#[test]
fn signature_and_key_golden() {
    use ed25519_dalek::{Signer as _, SigningKey, Verifier as _};
    let seed = [7u8; 32];
    let key = SigningKey::from_bytes(&seed);
    let public = key.verifying_key().to_bytes();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();

    for (format, id) in [
        (1, "579ea9a0947526fc5f204c88a51ab851".parse::<Hash>().unwrap()),
        (2, Algo::Blake3.hash(Domain::Version, b"golden")),
    ] {
        let message = format!("tdelta-signed-version 1\n{id}\n");
        let sig = key.sign(message.as_bytes()).to_bytes();
        let spec = format!(
            r#"{{"format":"tdelta-signature 1","key":"{}","sig":"{}","version":"{id}"}}"#,
            hex(&public),
            hex(&sig)
        );
        let file = golden(&format!("version-format{format}.sig"), spec.as_bytes());
        let f = SignatureFile::decode(&file).unwrap();
        assert_eq!((f.version, f.r#move.is_none(), f.name().unwrap()), (Some(id), true, id));
        assert_eq!(f.message().unwrap(), message.as_bytes());
        let vk = ed25519_dalek::VerifyingKey::from_bytes(&f.key_bytes().unwrap()).unwrap();
        vk.verify(&f.message().unwrap(), &ed25519_dalek::Signature::from_bytes(&f.sig_bytes().unwrap())).unwrap();
        assert_eq!(f.encode().unwrap(), file);
    }

    // A move signature signs every field of its audit entry, one a line.
    let e = &entries()[1];
    let message = format!(
        "tdelta-signed-move 1\nseq 2\nprev {}\ntime 1700000000\nwho \"golden@host\"\nop \"tag\"\nref \"stable\"\n\
         old none\nnew 2d750215408b1daea45223e98c1dc8d8\nwhy \"release\"\n",
        e.prev
    );
    assert_eq!(signature::move_message(e), message.as_bytes());

    let spec = format!("tdelta-public-key 1 {}\n# golden key\n", hex(&public));
    let file = golden("golden.pub", spec.as_bytes());
    assert_eq!(signature::decode_public_key(&file).unwrap(), (public, "golden key".to_string()));
    assert_eq!(signature::encode_public_key(&public, "golden key").as_bytes(), file);
    let spec = format!("tdelta-secret-key 1\n# golden key\n{}\n", hex(&seed));
    let file = golden("golden.key", spec.as_bytes());
    assert_eq!(signature::decode_secret_key(&file).unwrap(), seed);
    assert_eq!(signature::encode_secret_key(&seed, "golden key").as_bytes(), file);
}
