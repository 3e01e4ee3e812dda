//! Damaged stores, on the local directory and in memory: every object kind
//! truncated, bit-flipped, appended to or deleted is found by `verify`,
//! which names the object and lists exactly the damaged versions; a
//! restore of damaged data fails with the right [`CorruptKind`] and names
//! the object; undamaged versions still restore bit-exactly; malformed
//! objects get an error, never a panic, a hang or a huge allocation.

#[macro_use]
mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{Damage, damage, overwrite, restored, series, small_blocks};
use tdelta::backend::Backend;
use tdelta::{CorruptKind, Error, ErrorKind, Hash, Policy, Silent, Store};

struct Fixture {
    dir: tempfile::TempDir,
    pristine: Arc<dyn Backend>,
    srcs: Vec<PathBuf>,
    ids: Vec<Hash>,
    /// The pack (id) written by each version's pack.
    packs: Vec<String>,
}

/// Three versions, each packed on its own (one pack each): v0 full, v1
/// and v2 deltas against v0's blocks (`chain:1`); `stable` names v1.
fn fixture(make: fn(&Path) -> Arc<dyn Backend>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let srcs = series(&dir.path().join("src"), 3, 8 << 10, 7);
    let pristine = make(&dir.path().join("pristine"));
    let mut store = Store::init_with(Arc::clone(&pristine), &small_blocks()).unwrap();
    let (mut ids, mut packs) = (Vec::new(), Vec::new());
    for s in &srcs {
        let before = pack_ids(pristine.as_ref());
        ids.push(common::pack_with(&mut store, s, Policy::Chain(1)));
        let new: Vec<String> = pack_ids(pristine.as_ref()).into_iter().filter(|p| !before.contains(p)).collect();
        assert_eq!(new.len(), 1, "one pack per pack: {new:?}");
        packs.push(new[0].clone());
    }
    tdelta::tag(&store, "stable", ids[1], false, "").unwrap();
    Fixture { dir, pristine, srcs, ids, packs }
}

fn pack_ids(b: &dyn Backend) -> Vec<String> {
    common::object_names(b)
        .into_iter()
        .filter_map(|n| n.strip_prefix("packs/")?.strip_suffix(".pack").map(str::to_string))
        .collect()
}

/// A copy of the fixture's store on a new backend of the same kind.
fn copy(fx: &Fixture, make: fn(&Path) -> Arc<dyn Backend>, name: &str) -> Arc<dyn Backend> {
    let b = make(&fx.dir.path().join(name));
    common::copy_objects(fx.pristine.as_ref(), b.as_ref());
    b
}

/// Offset of the middle of the first payload listed in an index.
fn first_payload_middle(idx: &[u8]) -> usize {
    // Pack version 3 (format 2) widens the entry's id field from 16 to 32
    // bytes (FORMAT.md §6).
    let id = if u32::from_le_bytes(idx[8..12].try_into().unwrap()) >= 3 { 32 } else { 16 };
    let off = u64::from_le_bytes(idx[24 + id..24 + id + 8].try_into().unwrap()) as usize;
    let len = u32::from_le_bytes(idx[24 + id + 8..24 + id + 12].try_into().unwrap()) as usize;
    off + len / 2
}

/// One damage case: the object, what is done, the versions that must be
/// listed damaged, and the kinds a read of the damaged thing may fail with.
struct Case {
    object: String,
    how: Damage,
    damaged: Vec<usize>,
    kinds: &'static [CorruptKind],
}

fn cases(fx: &Fixture) -> Vec<Case> {
    use CorruptKind as K;
    let pack1 = &fx.packs[1];
    let idx1 = fx.pristine.get(&format!("packs/{pack1}.idx"), u64::MAX).unwrap().0;
    let c = |object: String, how, damaged: &[usize], kinds| Case { object, how, damaged: damaged.to_vec(), kinds };
    let mut v = Vec::new();
    for how in [Damage::Truncate, Damage::BitFlip(None), Damage::Append, Damage::Delete] {
        let flip = |at| if let Damage::BitFlip(_) = how { Damage::BitFlip(Some(at)) } else { how };
        v.push(c(
            format!("packs/{pack1}.pack"),
            flip(first_payload_middle(&idx1)),
            &[1],
            &[K::Truncated, K::Checksum, K::HashMismatch, K::Undecodable, K::Missing],
        ));
        v.push(c(format!("packs/{pack1}.idx"), how, &[1], &[K::Missing]));
        v.push(c(format!("versions/{}.tdm", fx.ids[2]), how, &[2], &[K::Truncated, K::Checksum, K::Missing]));
        v.push(c("refs/stable".into(), how, &[], &[K::Truncated, K::Checksum, K::Invalid]));
        v.push(c("HEAD".into(), how, &[], &[K::Truncated, K::Checksum, K::Invalid, K::Missing]));
        v.push(c("audit.log".into(), flip(40), &[], &[]));
        // Reported (issue 12); every version restores with the block size
        // its manifest records.
        if how != Damage::Delete {
            v.push(c("config".into(), how, &[], &[]));
        }
    }
    v
}

fn problems_text(rep: &tdelta::VerifyReport) -> String {
    let mut t = rep.store_problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n");
    for v in &rep.versions {
        for p in &v.problems {
            t.push_str(&format!("\n{}: {p}", v.id));
        }
    }
    t
}

fn every_damage_is_found_and_named(make: fn(&Path) -> Arc<dyn Backend>) {
    let fx = fixture(make);
    let scratch = fx.dir.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let all = cases(&fx);
    let n = all.len();
    for (i, case) in all.into_iter().enumerate() {
        let b = copy(&fx, make, &format!("work{i}"));
        damage(b.as_ref(), &case.object, case.how);
        let label = format!("{:?} {}", case.how, case.object);
        let store = Store::open_with(Arc::clone(&b)).unwrap_or_else(|e| panic!("{label}: store does not open: {e}"));
        let rep = tdelta::verify(&store, &fx.ids, &Silent).unwrap_or_else(|e| panic!("{label}: verify: {e}"));
        let text = problems_text(&rep);
        assert!(!rep.ok(), "{label}: verify found nothing");
        let damaged: Vec<usize> = (0..3).filter(|v| !rep.versions[*v].problems.is_empty()).collect();
        // Bytes after a pack's footer: readers find blocks through the
        // index, so every version restores; verify sees the pack no longer
        // hashes to its name.
        let appended_pack = case.how == Damage::Append && case.object.ends_with(".pack");
        let want = if appended_pack { vec![] } else { case.damaged.clone() };
        assert_eq!(damaged, want, "{label}: damaged versions listed: {text}");
        let pack1 = &fx.packs[1];
        let named = text.contains(&case.object)
            || (case.object.starts_with("packs/") && text.contains(pack1.as_str()))
            || (case.object.ends_with(".tdm") && text.contains(&fx.ids[2].to_string()));
        assert!(named, "{label}: verify does not name the object: {text}");

        // Reading the damaged thing fails with the kind of damage, naming it.
        let probe: Option<Error> = match case.object.as_str() {
            // A deleted tag is just not there: the log's last move of it
            // is what verify finds.
            "refs/stable" if case.how == Damage::Delete => None,
            "refs/stable" => store.resolve("stable").err(),
            "HEAD" => store.resolve("HEAD").err(),
            o if o.ends_with(".tdm") => restored(&store, fx.ids[2], &scratch).err(),
            o if o.starts_with("packs/") && !appended_pack => restored(&store, fx.ids[1], &scratch).err(),
            _ => None,
        };
        // A version whose manifest is gone is not there to restore.
        let lost_version = case.how == Damage::Delete && case.object.ends_with(".tdm");
        if let Some(e) = probe.as_ref().filter(|_| lost_version) {
            assert_eq!(e.kind(), ErrorKind::NotFound, "{label}: {e}");
            assert!(e.to_string().contains(&fx.ids[2].to_string()), "{label}: {e}");
        } else if let Some(e) = &probe {
            assert_eq!(e.kind(), ErrorKind::Corrupt, "{label}: {e}");
            let kind = e.corrupt_kind().unwrap();
            assert!(case.kinds.contains(&kind), "{label}: kind {kind:?}, not one of {:?}: {e}", case.kinds);
            let msg = e.to_string();
            let named = msg.contains(&case.object)
                || msg.contains(&fx.ids[2].to_string())
                || msg.contains(pack1.as_str())
                || msg.contains("missing");
            assert!(named, "{label}: the error does not say what is wrong where: {msg}");
        } else {
            let unread = case.kinds.is_empty() || appended_pack;
            let gone_tag = case.object == "refs/stable" && case.how == Damage::Delete;
            assert!(unread || gone_tag, "{label}: reading the damaged object succeeded");
        }
        // Undamaged versions still restore bit-exactly.
        for (v, id) in fx.ids.iter().enumerate() {
            if !case.damaged.contains(&v) || appended_pack {
                let got = restored(&store, *id, &scratch).unwrap_or_else(|e| panic!("{label}: v{v}: {e}"));
                assert_eq!(got, std::fs::read(&fx.srcs[v]).unwrap(), "{label}: v{v}");
            }
        }
    }
    eprintln!("damage cases found and named: {n}");
}

/// Malformed objects: well framed enough to be parsed, with values that
/// would make a careless reader allocate without bound or loop.
fn malformed_objects_get_clear_errors(make: fn(&Path) -> Arc<dyn Backend>) {
    let fx = fixture(make);
    let get = |n: &str| fx.pristine.get(n, u64::MAX).unwrap().0;
    let tdm0 = format!("versions/{}.tdm", fx.ids[0]);
    let idx0 = format!("packs/{}.idx", fx.packs[0]);
    let patched = |name: &str, at: usize, with: &[u8]| {
        let mut b = get(name);
        b[at..at + with.len()].copy_from_slice(with);
        b
    };
    let cases: Vec<(String, Vec<u8>, &str)> = vec![
        (tdm0.clone(), b"\x89garbage, not a manifest at all \x00\x01".repeat(3), "bad magic"),
        // A frame claiming a body of 2^62 bytes.
        (tdm0.clone(), patched(&tdm0, 16, &(1u64 << 62).to_le_bytes()), "4611686018427387904"),
        (tdm0.clone(), vec![0u8; 5 << 20], "bad magic"),
        (idx0.clone(), patched(&idx0, 16, &(1u64 << 58).to_le_bytes()), "288230376151711744"),
        ("config".into(), patched("config", 16, &u64::MAX.to_le_bytes()), "length"),
        ("config".into(), patched("config", 8, &9u32.to_le_bytes()), "format version 9 is not supported"),
        ("HEAD".into(), vec![b'x'; 10_000], "256"),
        ("refs/stable".into(), b"tdelta-ref 1 zz 0000000000000000\n".to_vec(), "checksum"),
        ("audit.log".into(), b"not an audit log\n".to_vec(), "header"),
    ];
    for (i, (object, bytes, want)) in cases.iter().enumerate() {
        let b = copy(&fx, make, &format!("bad{i}"));
        overwrite(b.as_ref(), object, bytes);
        let text = match Store::open_with(Arc::clone(&b)) {
            Err(e) => {
                assert!(
                    matches!(e.kind(), ErrorKind::Corrupt | ErrorKind::Unsupported),
                    "{object}: open failed but not as damage: {e}"
                );
                e.to_string()
            }
            Ok(store) => {
                let rep = tdelta::verify(&store, &fx.ids, &Silent).unwrap();
                assert!(!rep.ok(), "{object}: verify found nothing");
                problems_text(&rep)
            }
        };
        assert!(text.contains(want), "{object}: expected `{want}` in: {text}");
        let file = object.rsplit('/').next().unwrap();
        assert!(text.contains(file), "{object}: not named: {text}");
    }
}

/// Issue 13: a pack's index deleted (or the pack whose index remains):
/// `verify` names that exact file and the versions it damages; a pack
/// without index that no version needs (a killed writer's leftover) is
/// not damage.
fn a_lost_index_or_pack_is_named_with_the_versions_it_damages(make: fn(&Path) -> Arc<dyn Backend>) {
    let fx = fixture(make);
    let pack1 = &fx.packs[1];
    for (i, lost) in [format!("packs/{pack1}.idx"), format!("packs/{pack1}.pack")].into_iter().enumerate() {
        let b = copy(&fx, make, &format!("lost{i}"));
        b.delete(&lost).unwrap();
        let store = Store::open_with(b).unwrap();
        let rep = tdelta::verify(&store, &fx.ids, &Silent).unwrap();
        let text = problems_text(&rep);
        let named: Vec<String> =
            rep.store_problems.iter().map(ToString::to_string).filter(|p| p.contains(&lost)).collect();
        assert_eq!(named.len(), 1, "{lost}: one problem names it: {text}");
        assert!(named[0].contains(&fx.ids[1].short()), "{lost}: the damaged version is named: {}", named[0]);
        assert!(!named[0].contains(&fx.ids[0].short()) && !named[0].contains(&fx.ids[2].short()), "{}", named[0]);
        let damaged: Vec<usize> = (0..3).filter(|v| !rep.versions[*v].problems.is_empty()).collect();
        assert_eq!(damaged, [1], "{lost}: {text}");
    }
    // A leftover pack without index, needed by no version: not damage.
    let b = copy(&fx, make, "leftover");
    let leftover = Hash::of(b"a pack a killed writer left");
    let pack0 = b.get(&format!("packs/{}.pack", fx.packs[0]), u64::MAX).unwrap().0;
    b.put(&format!("packs/{leftover}.pack"), &pack0, tdelta::backend::PutMode::Create).unwrap();
    let store = Store::open_with(b).unwrap();
    let rep = tdelta::verify(&store, &fx.ids, &Silent).unwrap();
    assert!(rep.ok(), "{}", problems_text(&rep));
}

on_both_backends!(
    every_damage_is_found_and_named,
    a_lost_index_or_pack_is_named_with_the_versions_it_damages;
    capped: malformed_objects_get_clear_errors
);
