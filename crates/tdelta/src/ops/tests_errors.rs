//! Each typed error is raised by the operation that should raise it, with
//! its class ([`crate::ErrorKind`]) and, for damage, the check that failed
//! ([`crate::CorruptKind`]).

use std::fs;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};

use super::*;
use crate::{CorruptKind, Error, ErrorKind, InitOptions, Store};

fn one_file(path: &Path, fill: u8) {
    let bytes = vec![fill; 64];
    let view = TensorView::new(Dtype::U8, vec![64], &bytes).unwrap();
    fs::write(path, safetensors::serialize([("w".to_string(), view)], None).unwrap()).unwrap();
}

/// A store with one version of one file; returns it and the version.
fn packed(dir: &Path) -> (Store, crate::Hash) {
    let mut s = Store::init(&dir.join("store"), &InitOptions::default()).unwrap();
    let src = dir.join("a.safetensors");
    one_file(&src, 1);
    let id = pack(&mut s, &src, &PackOptions::default(), &Silent).unwrap().id;
    (s, id)
}

#[test]
fn missing_things_are_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let e = Store::open(&dir.path().join("none")).unwrap_err();
    assert!(matches!(e, Error::NoStore { .. }) && e.kind() == ErrorKind::NotFound, "{e}");
    assert!(!e.to_string().contains("tdelta init"), "library messages carry no CLI hints: {e}");
    let (s, id) = packed(dir.path());
    for spec in ["nope", "ffff0000"] {
        let e = s.resolve(spec).unwrap_err();
        assert!(matches!(e, Error::UnknownRef { .. }) && e.kind() == ErrorKind::NotFound, "{spec}: {e}");
    }
    let e = s.resolve("HEAD~1").unwrap_err();
    assert!(matches!(e, Error::NotInVersion { .. }) && e.kind() == ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains("has no parent"), "{e}");
    let e = write_file(&s, id, "nope.bin", &mut Vec::new()).unwrap_err();
    assert!(matches!(e, Error::NotInVersion { .. }) && e.to_string().contains("a.safetensors"), "{e}");
    let e = write_tensor(&s, id, "nope", &mut Vec::new()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    let sel = Selection { files: vec![], tensors: vec!["nope*".into()] };
    let e = restore_parts(&s, id, &dir.path().join("out"), &RestoreOptions::default(), &sel, &Silent).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    let e = untag(&s, "nope", "").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
}

#[test]
fn existing_stores_and_tags_already_exist() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, id) = packed(dir.path());
    let e = Store::init(s.root(), &InitOptions::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
    tag(&s, "stable", id, false, "").unwrap();
    let src = dir.path().join("b.safetensors");
    one_file(&src, 2);
    let other = pack(&mut s, &src, &PackOptions::default(), &Silent).unwrap().id;
    let e = tag(&s, "stable", other, false, "").unwrap_err();
    assert!(matches!(&e, Error::AlreadyExists { what } if what.starts_with("tag `stable`")), "{e}");
    assert!(!e.to_string().contains("--force"), "library messages carry no CLI hints: {e}");
    let opts = PackOptions { tag: Some("stable".into()), ..Default::default() };
    let e = pack(&mut s, &src, &opts, &Silent).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
}

#[test]
fn a_held_lock_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let (s, id) = packed(dir.path());
    let _held = s.begin_write().unwrap();
    // A second handle waits a little, then gives up.
    let mut other = Store::open(s.root()).unwrap();
    other.lock_wait = std::time::Duration::from_millis(50);
    let e = tag(&other, "t", id, false, "").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Locked, "{e}");
}

/// Flips one byte in the middle of `path`.
fn flip(path: &Path) {
    let mut b = fs::read(path).unwrap();
    let n = b.len() / 2;
    b[n] ^= 1;
    fs::write(path, b).unwrap();
}

#[test]
fn damage_is_corrupt_and_names_the_check() {
    let dir = tempfile::tempdir().unwrap();
    let (s, id) = packed(dir.path());
    let manifest = s.manifest_path(id);
    let good = fs::read(&manifest).unwrap();
    flip(&manifest);
    let e = s.manifest(id).unwrap_err();
    assert_eq!((e.kind(), e.corrupt_kind()), (ErrorKind::Corrupt, Some(CorruptKind::Checksum)), "{e}");
    fs::write(&manifest, b"not a manifest at all, but long enough to hold a frame").unwrap();
    let e = s.manifest(id).unwrap_err();
    assert_eq!(e.corrupt_kind(), Some(CorruptKind::Magic), "{e}");
    fs::write(&manifest, &good[..good.len() - 3]).unwrap();
    let e = s.manifest(id).unwrap_err();
    assert_eq!(e.corrupt_kind(), Some(CorruptKind::Truncated), "{e}");
    fs::write(&manifest, &good).unwrap();
    // A ref file edited by hand fails its checksum.
    let head = s.root().join("HEAD");
    let text = fs::read_to_string(&head).unwrap();
    fs::write(&head, format!("{}0\n", text.trim_end())).unwrap();
    let e = s.resolve("HEAD").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    fs::write(&head, text).unwrap();
    // A pack whose payload was altered: the block error has the class of
    // its cause.
    let pack = fs::read_dir(s.root().join("packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "pack"))
        .unwrap();
    flip(&pack);
    let s = Store::open(s.root()).unwrap();
    let e = restore(&s, id, &dir.path().join("out.safetensors"), &RestoreOptions::default(), &Silent).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.corrupt_kind().is_some(), "{e}");
}

#[test]
fn kinds_and_checks_serialise_as_their_names() {
    for k in [ErrorKind::NotFound, ErrorKind::AlreadyExists, ErrorKind::Corrupt, ErrorKind::InvalidInput] {
        assert_eq!(serde_json::to_value(k).unwrap(), k.name());
    }
    for c in [CorruptKind::HashMismatch, CorruptKind::Checksum, CorruptKind::Missing] {
        assert_eq!(serde_json::to_value(c).unwrap(), c.name());
    }
}

#[test]
fn restore_output_refusals_are_typed() {
    use crate::OutputRefusal as R;
    let dir = tempfile::tempdir().unwrap();
    let (s, id) = packed(dir.path());
    let out = dir.path().join("out.safetensors");
    fs::write(&out, b"not ours").unwrap();
    let e = restore(&s, id, &out, &RestoreOptions::default(), &Silent).unwrap_err();
    assert!(
        matches!(&e, Error::OutputRefused { refusal: R::Exists { directory: false }, path } if *path == out),
        "{e}"
    );
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
    assert!(!e.to_string().contains("--force"), "library messages carry no CLI hints: {e}");
    assert_eq!(fs::read(&out).unwrap(), b"not ours");
    let e = restore(&s, id, &s.root().join("sub"), &RestoreOptions { force: true }, &Silent).unwrap_err();
    assert!(matches!(&e, Error::OutputRefused { refusal: R::InStore { .. }, .. }), "{e}");
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(e.to_string().contains("is inside the store"), "{e}");
}

#[test]
fn dropping_a_referenced_version_is_a_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let (s, id) = packed(dir.path());
    tag(&s, "stable", id, false, "").unwrap();
    let e = drop_version(&s, id, "").unwrap_err();
    assert!(matches!(&e, Error::Referenced { refs, .. } if *refs == ["HEAD", "stable"]), "{e}");
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
}

#[test]
fn writing_to_a_format_1_store_needs_an_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/store-v1");
    let dst = dir.path().join("store");
    copy_dir(&src, &dst);
    let s = Store::open(&dst).unwrap();
    let id = s.resolve("HEAD").unwrap();
    let e = tag(&s, "t", id, false, "").unwrap_err();
    assert!(matches!(e, Error::NeedsUpgrade { format: 1, .. }), "{e}");
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert!(!e.to_string().contains("tdelta upgrade"), "library messages carry no CLI hints: {e}");
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dst = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &dst);
        } else {
            fs::copy(&p, &dst).unwrap();
        }
    }
}

#[test]
fn a_cancelled_read_is_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let (s, id) = packed(dir.path());
    let m = s.manifest(id).unwrap();
    let mut out = vec![0u8; 16];
    let mut reads = [TensorRead { name: "w", start: 0, out: &mut out }];
    let cancel = std::sync::atomic::AtomicBool::new(true);
    let e = read_tensors_into(&s, id, &m, &mut reads, &Silent, &cancel).unwrap_err();
    assert!(matches!(e, Error::Interrupted), "{e}");
    assert_eq!(e.kind(), ErrorKind::Interrupted);
}

#[test]
fn a_ref_name_that_clashes_with_refs_already_exists() {
    let dir = tempfile::tempdir().unwrap();
    let (s, id) = packed(dir.path());
    tag(&s, "team/a", id, false, "").unwrap();
    for name in ["team", "team/a/b"] {
        let e = tag(&s, name, id, false, "").unwrap_err();
        assert!(matches!(e, Error::RefClash { .. }) && e.kind() == ErrorKind::AlreadyExists, "{name}: {e}");
        assert!(e.to_string().contains("a name cannot be both a ref and a folder of refs"), "{e}");
    }
}

#[test]
fn damage_to_the_record_of_ref_moves_is_typed_for_its_repair() {
    use crate::AuditDamage as A;
    let dir = tempfile::tempdir().unwrap();
    let (s, id) = packed(dir.path());
    let root = s.root().to_path_buf();
    let typed = |e: &Error, want: A| {
        assert_eq!((e.kind(), e.audit_damage()), (ErrorKind::Corrupt, Some(want)), "{e}");
        assert!(!e.to_string().contains("tdelta "), "library messages carry no CLI hints: {e}");
    };
    // A pending move that does not parse.
    fs::write(root.join("audit.pending"), b"garbage\n").unwrap();
    typed(&tag(&s, "t", id, false, "").unwrap_err(), A::PendingMove);
    fs::remove_file(root.join("audit.pending")).unwrap();
    // An edited entry: writers and `history` refuse it.
    let log = fs::read(root.join("audit.log")).unwrap();
    let mut edited = log.clone();
    let at = edited.len() - 10;
    edited[at] ^= 0x01;
    fs::write(root.join("audit.log"), &edited).unwrap();
    typed(&tag(&s, "t", id, false, "").unwrap_err(), A::LogDamaged);
    typed(&history(&s, "HEAD").unwrap_err(), A::LogDamaged);
    // A missing log.
    fs::remove_file(root.join("audit.log")).unwrap();
    typed(&tag(&s, "t", id, false, "").unwrap_err(), A::LogMissing);
    fs::write(root.join("audit.log"), &log).unwrap();
    // A ref moved by hand.
    tag(&s, "t", id, false, "").unwrap();
    fs::copy(root.join("HEAD"), root.join("refs/u")).unwrap();
    typed(&tag(&s, "v", id, false, "").unwrap_err(), A::RefDiffers);
}

#[test]
fn a_block_whose_length_contradicts_the_manifest_is_damage() {
    let dir = tempfile::tempdir().unwrap();
    let (s, id) = packed(dir.path());
    let m = s.manifest(id).unwrap();
    let b = m.files[0].blocks(m.block_size)[0];
    let mut out = vec![0u8; b.len as usize + 1];
    let e = s.read_block_into(b.hash, 16, &mut out, &mut super::blocks::Scratch::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains(".pack") && e.to_string().contains("manifest expects"), "{e}");
}
