//! Signatures written by a signing store handle, its crash windows, and
//! signature files that were altered.

use std::fs;

use super::*;

fn entry() -> AuditEntry {
    AuditEntry {
        seq: 3,
        time: 9,
        who: "a\nwho b".into(),
        op: "tag".into(),
        r#ref: Some("stable".into()),
        old: None,
        new: Some(Hash::of(b"v")),
        why: "x".into(),
        prev: Hash::of(b"p"),
    }
}

#[test]
fn move_messages_bind_every_field() {
    let base = move_message(&entry());
    let edits: [fn(&mut AuditEntry); 9] = [
        |e| e.seq += 1,
        |e| e.time += 1,
        |e| e.who.push('x'),
        |e| e.op = "rollback".into(),
        |e| e.r#ref = None,
        |e| e.old = Some(Hash::of(b"o")),
        |e| e.new = None,
        |e| e.why.push('y'),
        |e| e.prev = Hash::default(),
    ];
    for edit in edits {
        let mut e = entry();
        edit(&mut e);
        assert_ne!(move_message(&e), base);
    }
    assert!(base.starts_with(b"tdelta-signed-move 1\n"));
    assert!(!version_message(Hash::of(b"v")).starts_with(b"tdelta-signed-move"));
}

/// A store whose handle signs with a trusted key, `stable` at `a`.
fn signing_store() -> (tempfile::TempDir, Store, Hash, Hash) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::init(&dir.path().join("s"), &crate::InitOptions::default()).unwrap();
    let s = Signer::generate().unwrap();
    let pub_path = s.write_new(&dir.path().join("k"), "").unwrap();
    trust_key(&store, &pub_path).unwrap();
    store.set_signer(Some(s));
    let (a, b) = (Hash::of(b"a"), Hash::of(b"b"));
    let txn = store.begin_write().unwrap();
    txn.move_ref(&store, "stable", Some(a), "tag", "").unwrap();
    drop(txn);
    (dir, store, a, b)
}

/// What a signing writer killed after signing a move of `stable` to
/// `b` leaves, with the ref renamed or not.
fn kill_after_signing(store: &Store, a: Hash, b: Hash, ref_moved: bool) -> Hash {
    let e = AuditEntry {
        seq: 0,
        time: 7,
        who: "w".into(),
        op: "tag".into(),
        r#ref: Some("stable".into()),
        old: Some(a),
        new: Some(b),
        why: String::new(),
        prev: Hash::default(),
    };
    let (entry, line) = store.audit().prepare(e).unwrap();
    store.write_pending(&line).unwrap();
    sign_move(store, store.signer().unwrap(), &entry).unwrap();
    if ref_moved {
        let seen = store.read_ref_object("refs/stable").unwrap().map(|(_, t)| t);
        store.write_ref_file("refs/stable", seen, Some(b)).unwrap();
    }
    entry_hash(&entry).unwrap()
}

fn unsigned_moves(store: &Store) -> Vec<String> {
    verify_signatures(store).unwrap().unsigned.iter().filter(|u| u.kind == "move").map(|u| u.to_string()).collect()
}

#[test]
fn a_move_signed_but_never_made_is_an_orphan_then_removed_by_the_next_writer() {
    let (_d, store, a, b) = signing_store();
    let h = kill_after_signing(&store, a, b, false);
    let rep = verify_signatures(&store).unwrap();
    assert!(rep.unsigned.is_empty() && rep.damaged.is_empty(), "{rep:?}");
    // `a` and `b` are no versions of the store: their signatures are
    // orphans too.
    let moves: Vec<&String> = rep.orphans.iter().filter(|o| o.contains("moves")).collect();
    assert_eq!(moves.len(), 1, "{rep:?}");
    assert!(moves[0].contains("under way"), "{rep:?}");
    drop(store.begin_write().unwrap());
    assert!(!exists(store.backend().as_ref(), &sig_name("moves", h)).unwrap());
    let rep = verify_signatures(&store).unwrap();
    assert!(rep.unsigned.is_empty() && !rep.orphans.iter().any(|o| o.contains("moves")), "{rep:?}");
}

#[test]
fn a_signed_move_completed_as_recover_counts_as_signed() {
    let (_d, store, a, b) = signing_store();
    kill_after_signing(&store, a, b, true);
    drop(store.begin_write().unwrap());
    let mut log = store.audit().read().unwrap().entries;
    assert_eq!(log.last().unwrap().op, "recover");
    // The ref moves (the first entry records the key trusted).
    log.retain(|e| e.r#ref.is_some());
    assert_eq!(log.len(), 2);
    assert!(unsigned_moves(&store).is_empty(), "{:?}", unsigned_moves(&store));
    let by = move_signers(&store, &log).unwrap();
    assert!(by.iter().all(|s| s.as_ref().is_some_and(|s| s.trusted)), "{by:?}");
}

#[test]
fn a_failed_ref_write_takes_its_signature_back() {
    let (_d, store, _a, _b) = signing_store();
    let txn = store.begin_write().unwrap();
    let before = list_sigs(&store, "moves").unwrap();
    // Deleting a ref that does not exist fails after the signing.
    assert!(txn.move_ref(&store, "nothing", None, "untag", "").is_err());
    assert_eq!(list_sigs(&store, "moves").unwrap(), before);
    assert!(!store.root.join(PENDING_FILE).exists());
}

#[test]
fn signature_files_detect_edits() {
    let dir = tempfile::tempdir().unwrap();
    let s = Signer::generate().unwrap();
    let e = entry();
    let h = entry_hash(&e).unwrap();
    let mut file = new_sig(&s, &move_message(&e));
    file.r#move = Some(e.clone());
    let p = dir.path().join("m.sig");
    fs::write(&p, serde_json::to_vec(&file).unwrap()).unwrap();
    let check_file = |p: &Path, h| check_bytes(p, &fs::read(p).unwrap(), h);
    check_file(&p, h).unwrap();
    assert!(check_file(&p, Hash::of(b"other")).is_err());
    let mut edited = file.clone();
    edited.r#move.as_mut().unwrap().why = "changed".into();
    fs::write(&p, serde_json::to_vec(&edited).unwrap()).unwrap();
    let h2 = entry_hash(edited.r#move.as_ref().unwrap()).unwrap();
    assert!(check_file(&p, h2).unwrap_err().to_string().contains("does not verify"));
}

/// The messages exactly as FORMAT.md §16 writes them.
#[test]
fn signed_messages_match_the_spec() {
    let id: Hash = "0123456789abcdef0123456789abcdef".parse().unwrap();
    assert_eq!(version_message(id), b"tdelta-signed-version 1\n0123456789abcdef0123456789abcdef\n");
    let mut e = entry();
    e.new = Some(id);
    e.prev = Hash::default();
    let want = "tdelta-signed-move 1\nseq 3\nprev 00000000000000000000000000000000\ntime 9\nwho \"a\\nwho b\"\n\
                op \"tag\"\nref \"stable\"\nold none\nnew 0123456789abcdef0123456789abcdef\nwhy \"x\"\n";
    assert_eq!(String::from_utf8(move_message(&e)).unwrap(), want);
    e.r#ref = None;
    assert!(String::from_utf8(move_message(&e)).unwrap().contains("\nref none\n"));
}

/// What the `signature` fuzz target runs: a signature file checked under
/// the name its content claims, then a public and a secret key file.
fn parse_all(bytes: &[u8]) {
    let name = serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| v["version"].as_str()?.parse().ok())
        .unwrap_or_else(|| Hash::of(bytes));
    let _ = check_bytes(Path::new("fuzz.sig"), bytes, name);
    let _ = PublicKey::parse(Path::new("fuzz.pub"), bytes);
    let _ = Signer::parse(Path::new("fuzz.key"), bytes);
}

/// The fuzz seeds, cut at every length and with bytes flipped: errors,
/// never a panic.
#[test]
fn parsers_refuse_cut_and_flipped_seeds() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/corpus/signature");
    let mut seen = 0;
    for ent in fs::read_dir(dir).unwrap() {
        let bytes = fs::read(ent.unwrap().path()).unwrap();
        for n in 0..=bytes.len() {
            parse_all(&bytes[..n]);
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x21;
            parse_all(&b);
        }
        seen += 1;
    }
    assert_eq!(seen, 4);
    let sig = fs::read(format!("{dir}/version.sig")).unwrap();
    let id = serde_json::from_slice::<serde_json::Value>(&sig).unwrap()["version"].as_str().unwrap().parse().unwrap();
    check_bytes(Path::new("v.sig"), &sig, id).unwrap();
    let key = fs::read(format!("{dir}/seed.key")).unwrap();
    assert_eq!(Signer::parse(Path::new("seed.key"), &key).unwrap().public_key("").fingerprint().len(), 16);
}
