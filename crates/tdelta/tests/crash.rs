//! Kill anywhere, on the local directory: `pack`, `gc`, `tag` and
//! `rollback` run in a child process (this test binary re-run, doing one
//! operation through the library) that is SIGKILLed at seeded random
//! moments. After every kill the store must open, verify clean, every
//! version that existed before must restore bit-exactly and the
//! interrupted operation must be wholly done or not at all. Leftover temp
//! files must go with the next writer, orphan packs with the next `gc`.
//! (The in-memory backend's deterministic faults at every write are in
//! `backends.rs`.)
//!
//! Replay a failure with `TDELTA_CRASH_SEED=<seed printed on stderr>`;
//! `TDELTA_CRASH_KILLS=<n>` scales the number of kills (default 100).
//!
//! Also here: packing onto a nearly full file system (a small tmpfs, when
//! the test runs as root and may mount; skipped with a reason otherwise).

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Rng, restored, seed, series};
use tdelta::{Hash, InitOptions, PackOptions, Policy, RollbackTarget, Silent, Store};

/// Versions kept live at once (unreferenced extras are dropped).
const MAX_LIVE: usize = 2;
/// Delta chains at most this deep keep verify quick (it decodes every
/// level of every chain).
const POLICY: Policy = Policy::Chain(2);

fn blocks() -> InitOptions {
    InitOptions { block_size: 64 << 10 }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Pack,
    Gc,
    Tag,
    Rollback,
}

/// Run as a child (`TDELTA_CRASH_OP=<op>\t<store>\t<arg>...`): does one
/// operation through the library, as the CLI would. Without the variable
/// it does nothing.
#[test]
fn crash_child() {
    let Ok(spec) = std::env::var("TDELTA_CRASH_OP") else { return };
    let a: Vec<&str> = spec.split('\t').collect();
    let mut store = Store::open(Path::new(a[1])).unwrap();
    match a[0] {
        "pack" => {
            let opts = PackOptions { policy: POLICY, message: a[3].into(), ..PackOptions::default() };
            tdelta::pack(&mut store, Path::new(a[2]), &opts, &Silent).map(|_| ())
        }
        "gc" => tdelta::gc(&mut store, "").map(|_| ()),
        "tag" => tdelta::tag(&store, a[2], a[3].parse().unwrap(), true, "").map(|_| ()),
        "rollback" => tdelta::rollback(&store, a[2], RollbackTarget::Version(a[3].parse().unwrap()), "").map(|_| ()),
        other => panic!("unknown op {other}"),
    }
    .unwrap();
}

fn run_op(store: &Path, op: &[String]) -> std::process::Child {
    let mut spec = vec![op[0].clone(), store.to_str().unwrap().to_string()];
    spec.extend(op[1..].iter().cloned());
    common::this_test("crash_child")
        .env("TDELTA_CRASH_OP", spec.join("\t"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

struct World {
    seed: u64,
    store: PathBuf,
    scratch: PathBuf,
    srcs: Vec<PathBuf>,
    /// Every live version and the source it must restore to.
    expected: BTreeMap<Hash, usize>,
    /// Next source to pack.
    next_src: usize,
    /// Longest observed uninterrupted run of each op, for kill delays.
    est: BTreeMap<Op, Duration>,
}

impl World {
    fn fail(&self, what: String) -> ! {
        panic!("[seed {}] {what}\nreplay with TDELTA_CRASH_SEED={}", self.seed, self.seed)
    }

    /// The store as the next process finds it.
    fn open(&self, after: &str) -> Store {
        Store::open(&self.store).unwrap_or_else(|e| self.fail(format!("the store does not open after {after}: {e}")))
    }

    fn restores(&self, id: Hash, src: usize) {
        let got = restored(&self.open("a restore"), id, &self.scratch)
            .unwrap_or_else(|e| self.fail(format!("version {id} does not restore: {e}")));
        if got != fs::read(&self.srcs[src]).unwrap() {
            self.fail(format!("version {id} does not restore to source {src}"));
        }
    }

    fn verify_all(&self, after: &str) {
        let store = self.open(after);
        let rep = tdelta::verify(&store, &store.versions().unwrap(), &Silent)
            .unwrap_or_else(|e| self.fail(format!("verify after {after}: {e}")));
        if !rep.ok() {
            self.fail(format!("verify after {after}: {rep:?}"));
        }
    }

    fn versions(&self) -> Vec<Hash> {
        self.open("an operation").versions().unwrap()
    }

    fn refs(&self) -> BTreeMap<String, Option<Hash>> {
        let store = self.open("an operation");
        ["HEAD", "stable", "canary"].iter().map(|n| (n.to_string(), store.read_ref(n).unwrap())).collect()
    }

    /// Runs `op` to completion in this process (setup and clean-ups).
    fn ok(&self, op: impl FnOnce(&mut Store) -> tdelta::Result<()>) {
        let mut store = self.open("an operation");
        op(&mut store).unwrap_or_else(|e| self.fail(format!("an operation failed: {e}")));
    }
}

/// Files in `dir` (names), empty if missing.
fn list(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = match fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

/// `packs/*.pack` without their `.idx`.
fn orphan_packs(store: &Path) -> Vec<String> {
    let names = list(&store.join("packs"));
    names.iter().filter(|n| n.ends_with(".pack") && !names.contains(&n.replace(".pack", ".idx"))).cloned().collect()
}

fn timed(est: &mut BTreeMap<Op, Duration>, op: Op, f: impl FnOnce()) {
    let t = Instant::now();
    f();
    est.insert(op, t.elapsed());
}

#[test]
fn kill_anywhere_leaves_a_consistent_store() {
    let seed = seed("TDELTA_CRASH_SEED", 0x007d_e17a_c4a5);
    let target_kills: usize = std::env::var("TDELTA_CRASH_KILLS").ok().and_then(|s| s.parse().ok()).unwrap_or(100);
    eprintln!("crash test seed {seed} (replay with TDELTA_CRASH_SEED={seed}), {target_kills} kills");
    let t_start = Instant::now();
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let srcs = series(&dir.path().join("src"), 10, 128 << 10, (seed % 1000) as u32);
    let store = dir.path().join("store");
    let scratch = dir.path().join("scratch");
    fs::create_dir_all(&scratch).unwrap();
    Store::init(&store, &blocks()).unwrap();
    let mut w = World {
        seed,
        store: store.clone(),
        scratch,
        srcs,
        expected: BTreeMap::new(),
        next_src: 0,
        est: BTreeMap::new(),
    };

    // Two versions packed normally, measuring each op once (in a child,
    // as the kills will run it).
    let mut est = BTreeMap::new();
    let measure = |op: Vec<String>| {
        let out = run_op(&store, &op).wait_with_output().unwrap();
        assert!(out.status.success(), "{op:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    for i in 0..2 {
        let src = w.srcs[i].to_str().unwrap().to_string();
        timed(&mut est, Op::Pack, || measure(vec!["pack".into(), src, format!("src {i}")]));
        w.expected.insert(w.open("pack").resolve("HEAD").unwrap(), i);
    }
    w.next_src = 2;
    let ids: Vec<String> = w.expected.keys().map(Hash::to_string).collect();
    timed(&mut est, Op::Tag, || measure(vec!["tag".into(), "stable".into(), ids[0].clone()]));
    timed(&mut est, Op::Rollback, || measure(vec!["rollback".into(), "stable".into(), ids[1].clone()]));
    timed(&mut est, Op::Gc, || measure(vec!["gc".into()]));
    w.est = est;
    eprintln!("measured durations: {:?}", w.est);

    let (n_pack, n_gc, n_tag) = (target_kills * 40 / 100, target_kills * 20 / 100, target_kills * 20 / 100);
    let plan: Vec<(Op, usize)> = vec![
        (Op::Pack, n_pack),
        (Op::Gc, n_gc),
        (Op::Tag, n_tag),
        (Op::Rollback, target_kills - n_pack - n_gc - n_tag),
    ];
    let mut kills: BTreeMap<Op, usize> = BTreeMap::new();
    let mut completed: BTreeMap<Op, usize> = BTreeMap::new();
    let mut landed_by_kill = 0usize;
    let mut tmp_leftovers = 0usize;
    let mut orphan_seen = 0usize;
    let mut iter = 0usize;
    loop {
        let todo: Vec<Op> =
            plan.iter().filter(|(op, n)| kills.get(op).copied().unwrap_or(0) < *n).map(|(op, _)| *op).collect();
        if todo.is_empty() {
            break;
        }
        iter += 1;
        if iter > target_kills * 6 {
            w.fail(format!("too many iterations without enough kills: {kills:?}"));
        }
        let op = *rng.pick(&todo);
        // Keep at most MAX_LIVE versions (so verify stays quick) by
        // dropping unreferenced ones; this also gives gc garbage to
        // collect (packs to rewrite), not only orphans.
        while w.expected.len() > MAX_LIVE {
            let held: Vec<Hash> = w.refs().into_values().flatten().collect();
            let free: Vec<Hash> = w.expected.keys().filter(|v| !held.contains(v)).copied().collect();
            if free.is_empty() {
                break;
            }
            let id = *rng.pick(&free);
            w.ok(|s| tdelta::drop_version(s, id, "").map(|_| ()));
            w.expected.remove(&id);
        }
        let before_versions = w.versions();
        let before_refs = w.refs();
        let ids: Vec<Hash> = w.expected.keys().copied().collect();
        // The op, and the ref it may move with its target.
        let (args, moves): (Vec<String>, Option<(&str, Hash)>) = match op {
            Op::Pack => {
                let s = w.next_src % w.srcs.len();
                (vec!["pack".into(), w.srcs[s].to_str().unwrap().into(), format!("src {s}")], None)
            }
            Op::Gc => (vec!["gc".into()], None),
            Op::Tag => {
                let name = *rng.pick(&["stable", "canary"]);
                let to = *rng.pick(&ids);
                (vec!["tag".into(), name.into(), to.to_string()], Some((name, to)))
            }
            Op::Rollback => {
                let name = *rng.pick(&["stable", "HEAD"]);
                let to = *rng.pick(&ids);
                (vec!["rollback".into(), name.into(), to.to_string()], Some((name, to)))
            }
        };
        let note = args.join(" ");
        // Half the kills anywhere in the op's expected run time, half in
        // its last 30% (where files land: packs are written after the
        // blocks are encoded).
        let est = w.est[&op].max(Duration::from_millis(5)).as_micros() as u64;
        let delay = Duration::from_micros(if rng.below(2) == 0 {
            rng.below(est * 11 / 10 + 1)
        } else {
            est - rng.below(est * 3 / 10 + 1)
        });
        let t = Instant::now();
        let mut child = run_op(&store, &args);
        std::thread::sleep(delay);
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        let elapsed = t.elapsed();
        let killed = out.status.signal() == Some(9);
        if killed {
            *kills.entry(op).or_default() += 1;
        } else {
            if !out.status.success() {
                w.fail(format!("{note} failed on its own: {}", String::from_utf8_lossy(&out.stderr)));
            }
            *completed.entry(op).or_default() += 1;
            let e = w.est.get_mut(&op).unwrap();
            *e = (*e * 7 + elapsed * 3) / 10;
        }
        let what =
            format!("{} {note} after {delay:?} (iteration {iter})", if killed { "kill of" } else { "completed" });
        // The history, shown (by the test harness) when a later check fails.
        eprintln!("{what}: packs {:?}", pack_files(&w.store));

        // The store opens and every version checks out.
        w.verify_all(&what);
        let after_versions = w.versions();
        let after_refs = w.refs();
        for v in &before_versions {
            if !after_versions.contains(v) {
                w.fail(format!("{what}: version {v} vanished"));
            }
        }
        let new: Vec<Hash> = after_versions.iter().filter(|v| !before_versions.contains(v)).copied().collect();
        match op {
            Op::Pack => {
                let s = w.next_src % w.srcs.len();
                if new.len() > 1 {
                    w.fail(format!("{what}: {} versions appeared", new.len()));
                }
                if let Some(v) = new.first() {
                    // The interrupted version is whole: it restores.
                    w.restores(*v, s);
                    w.expected.insert(*v, s);
                    if killed {
                        landed_by_kill += 1;
                    }
                }
                let head = after_refs["HEAD"];
                if head != before_refs["HEAD"] {
                    let Some(h) = head else { w.fail(format!("{what}: HEAD vanished")) };
                    if !(new.contains(&h) || w.expected.get(&h).is_some_and(|x| *x == s)) {
                        w.fail(format!("{what}: HEAD moved to {h}, not to the packed version"));
                    }
                    w.restores(h, s);
                    w.next_src += 1;
                } else if !killed {
                    w.fail(format!("{what}: completed but HEAD did not move"));
                }
            }
            _ => {
                if after_versions != before_versions {
                    w.fail(format!("{what}: version set changed: {new:?}"));
                }
                for (name, old) in &before_refs {
                    let now = after_refs[name];
                    let target = moves.filter(|(n, _)| n == name).map(|(_, to)| to);
                    if !(now == *old || (target.is_some() && now == target)) {
                        w.fail(format!("{what}: ref {name} went from {old:?} to {now:?}"));
                    }
                    if !killed && target.is_some() && now != target {
                        w.fail(format!("{what}: completed but {name} is {now:?}"));
                    }
                }
            }
        }
        // Every version that existed before still restores bit-exactly:
        // each was restored and compared with its source when it landed,
        // its manifest is named by its hash and still there, and verify
        // above re-decoded and hash-checked every block of every version.
        // One of them, at random, is restored again every 8 rounds.
        if iter.is_multiple_of(8) {
            let live: Vec<(Hash, usize)> = w.expected.iter().map(|(k, v)| (*k, *v)).collect();
            let (id, s) = *rng.pick(&live);
            w.restores(id, s);
        }

        // Temp files of the killed writer go with the next writer (here a
        // tag that moves nothing).
        if !list(&store.join("tmp")).is_empty() {
            tmp_leftovers += 1;
            let canary = after_refs["canary"].or(after_refs["HEAD"]).unwrap();
            w.ok(|s| tdelta::tag(s, "canary", canary, true, "").map(|_| ()));
            let left = list(&store.join("tmp"));
            if !left.is_empty() {
                w.fail(format!("{what}: the next writer left temp files: {left:?}"));
            }
        }
        if !orphan_packs(&store).is_empty() {
            orphan_seen += 1;
        }
        if op == Op::Gc && !killed && !orphan_packs(&store).is_empty() {
            w.fail(format!("{what}: gc left orphan packs {:?}", orphan_packs(&store)));
        }
    }

    // Finally: a full gc cleans every leftover; everything restores.
    w.ok(|s| tdelta::gc(s, "").map(|_| ()));
    assert!(orphan_packs(&store).is_empty(), "[seed {seed}] orphans after gc: {:?}", orphan_packs(&store));
    assert!(list(&store.join("tmp")).is_empty(), "[seed {seed}] tmp not empty after gc");
    assert!(!store.join("audit.pending").exists(), "[seed {seed}] a pending ref move outlived the next writer");
    w.verify_all("final gc");
    for (id, s) in &w.expected {
        w.restores(*id, *s);
    }
    // The log is complete: after a writer ran (the gc above), the newest
    // entry of every ref names where the ref points, also for moves whose
    // writer was killed before it logged them (recorded as `recover`).
    let st = w.open("final gc");
    let mut current = vec![("HEAD".to_string(), st.resolve("HEAD").unwrap())];
    current.extend(st.refs().unwrap());
    let mut recovered = 0;
    for (name, id) in &current {
        let h = tdelta::history(&st, name).unwrap();
        for e in h.iter().filter(|e| e.op == tdelta::AuditOp::Recover) {
            // Only a move its killed writer recorded as pending (issue 12).
            assert!(e.why.starts_with("completes the "), "[seed {seed}] {e:?}");
            recovered += 1;
        }
        let last = h.iter().max_by_key(|e| e.seq);
        assert_eq!(last.and_then(|e| e.new), Some(*id), "[seed {seed}] the audit log does not end with {name} -> {id}");
    }
    let total: usize = kills.values().sum();
    eprintln!(
        "crash test: {total} kills survived {kills:?}; {completed:?} ran to completion; {landed_by_kill} \
         killed packs had already landed their version; temp leftovers cleaned {tmp_leftovers}×; orphan packs \
         seen {orphan_seen}×; {recovered} unlogged ref moves recorded; {} versions live; {:.1}s",
        w.expected.len(),
        t_start.elapsed().as_secs_f64()
    );
    assert!(total >= target_kills);
}

/// Unmounts a tmpfs on drop.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Fills the file system holding `filler` with it, then frees `free`
/// bytes of it.
fn fill_leaving(filler: &Path, free: u64) {
    let mut f = fs::File::create(filler).unwrap();
    let chunk = vec![0xa5u8; 64 << 10];
    let mut written = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => panic!("filling: {e}"),
        }
    }
    let _ = f.sync_all();
    f.set_len(written.saturating_sub(free)).unwrap();
    f.sync_all().unwrap();
}

/// Every file under the store but the lock (relative path → bytes).
fn files(store: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, d: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if p.is_dir() {
                out.insert(format!("{rel}/"), Vec::new());
                walk(root, &p, out);
            } else if rel != "lock" {
                out.insert(rel, fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(store, store, &mut out);
    out
}

#[test]
fn pack_on_a_full_disk_fails_clearly_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let st = Command::new("mount").args(["-t", "tmpfs", "-o", "size=8M", "tmpfs"]).arg(&mnt).output();
    match st {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            eprintln!("SKIPPED disk-full test: cannot mount a tmpfs: {}", String::from_utf8_lossy(&o.stderr).trim());
            return;
        }
        Err(e) => {
            eprintln!("SKIPPED disk-full test: cannot run mount: {e}");
            return;
        }
    }
    let _guard = Mount(mnt.clone());
    let srcs = series(&dir.path().join("src"), 2, 256 << 10, 5);
    let path = mnt.join("store");
    let mut store = Store::init(&path, &blocks()).unwrap();
    let v0 = common::pack_with(&mut store, &srcs[0], Policy::default());
    let filler = mnt.join("filler");
    let mut failures = 0;
    // Free space from a few pages up to nearly what the pack needs: the
    // pack runs out in different places (pack file, index, manifest, HEAD).
    for free in [0u64, 4 << 10, 16 << 10, 64 << 10, 256 << 10, 512 << 10, 1 << 20] {
        fill_leaving(&filler, free);
        let before = files(&path);
        let mut store = Store::open(&path).unwrap();
        match tdelta::pack(&mut store, &srcs[1], &PackOptions::default(), &Silent) {
            Ok(_) => {
                eprintln!("disk-full: with {free} bytes free the pack fitted");
                fs::remove_file(&filler).unwrap();
                break;
            }
            Err(e) => {
                failures += 1;
                assert_eq!(e.kind(), tdelta::ErrorKind::Io, "free {free}: {e}");
                let msg = e.to_string();
                assert!(msg.contains("No space left on device") && msg.contains(path.to_str().unwrap()), "{msg}");
                let after = files(&path);
                let changed: Vec<&String> =
                    before.keys().chain(after.keys()).filter(|k| before.get(*k) != after.get(*k)).collect();
                assert!(changed.is_empty(), "free {free}: a failed pack changed the store: {changed:?} ({msg})");
            }
        }
        fs::remove_file(&filler).unwrap();
    }
    assert!(failures > 0, "the pack never ran out of space");
    // Space freed: packing works again and everything restores.
    let mut store = Store::open(&path).unwrap();
    let v1 = common::pack_with(&mut store, &srcs[1], Policy::default());
    let rep = tdelta::verify(&store, &store.versions().unwrap(), &Silent).unwrap();
    assert!(rep.ok(), "{rep:?}");
    for (id, src) in [(v0, &srcs[0]), (v1, &srcs[1])] {
        assert_eq!(restored(&store, id, dir.path()).unwrap(), fs::read(src).unwrap());
    }
    eprintln!("disk-full: {failures} packs refused with ENOSPC, store unchanged each time");
}

/// The files under `packs/`, by short name, sorted.
fn pack_files(store: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(store.join("packs"))
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v.iter()
        .map(|n| {
            format!("{}{}", &n[..8.min(n.len())], n.rsplit_once('.').map(|(_, x)| format!(".{x}")).unwrap_or_default())
        })
        .collect()
}

/// A `gc` stopped after it deleted a dead pack of full blocks but before
/// the dead pack of deltas on them leaves indexed blocks whose bases are
/// gone. A later pack of the same content must store those blocks again
/// (their chains are broken), not reuse them, and the store must then read
/// the whole copy: the version `pack` printed restores.
#[test]
fn blocks_left_by_an_interrupted_gc_are_stored_again_not_reused() {
    let dir = tempfile::tempdir().unwrap();
    let srcs = series(&dir.path().join("src"), 3, 64 << 10, 11);
    let path = dir.path().join("store");
    let mut store = Store::init(&path, &blocks()).unwrap();
    let packs = |s: &Store| -> Vec<String> {
        let mut v: Vec<String> = s.backend().list("packs/").unwrap().into_iter().map(|o| o.name).collect();
        v.retain(|n| n.ends_with(".pack"));
        v
    };
    let v0 = common::pack_with(&mut store, &srcs[0], Policy::Chain(1));
    let p0 = packs(&store);
    let v1 = common::pack_with(&mut store, &srcs[1], Policy::Chain(1));
    // v2 stores full blocks: nothing live depends on v0's or v1's packs.
    common::pack_with(&mut store, &srcs[2], Policy::Full);
    tdelta::drop_version(&store, v1, "").unwrap();
    tdelta::drop_version(&store, v0, "").unwrap();
    // The interrupted gc: v0's pack (the bases) is gone, v1's (the deltas)
    // is still indexed.
    assert_eq!(p0.len(), 1);
    let p0 = p0[0].strip_suffix(".pack").unwrap();
    store.backend().delete(&format!("{p0}.idx")).unwrap();
    store.backend().delete(&format!("{p0}.pack")).unwrap();

    let mut store = Store::open(&path).unwrap();
    let again = common::pack_with(&mut store, &srcs[1], Policy::Chain(1));
    let fresh = Store::open(&path).unwrap();
    let report = tdelta::verify(&fresh, &[again], &Silent).unwrap();
    assert!(report.versions.iter().all(|v| v.problems.is_empty()), "{report:?}");
    let scratch = dir.path().join("scratch");
    fs::create_dir_all(&scratch).unwrap();
    assert_eq!(restored(&fresh, again, &scratch).unwrap(), fs::read(&srcs[1]).unwrap());
}
