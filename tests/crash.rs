//! Kill anywhere: `pack`, `gc`, `tag` and `rollback` run as child processes
//! and are SIGKILLed at seeded random moments. After every kill the store
//! must open, `verify --all` must pass, every version that existed before
//! must restore bit-exactly and the interrupted operation must be wholly
//! done or not at all. Leftover temp files must go with the next writer,
//! orphan packs with the next `gc`.
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

use common::*;
use tdelta::DType;
use tdelta_dev::synth::SeriesSpec;

/// Versions kept live at once (unreferenced extras are dropped).
const MAX_LIVE: usize = 2;
/// Delta chains at most this deep keep `verify --all` quick in debug
/// builds (it decodes every level of every chain).
const POLICY: &str = "chain:2";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Pack,
    Gc,
    Tag,
    Rollback,
}

struct World {
    seed: u64,
    store: PathBuf,
    scratch: PathBuf,
    srcs: Vec<PathBuf>,
    /// Every live version and the source it must restore to.
    expected: BTreeMap<String, usize>,
    /// Next source to pack.
    next_src: usize,
    /// Longest observed uninterrupted run of each op, for kill delays.
    est: BTreeMap<Op, Duration>,
}

impl World {
    fn fail(&self, what: String) -> ! {
        panic!("[seed {}] {what}\nreplay with TDELTA_CRASH_SEED={}", self.seed, self.seed)
    }

    fn restores(&self, id: &str, src: usize) {
        let got = unpack_bytes(&self.store, id, &self.scratch);
        if got != fs::read(&self.srcs[src]).unwrap() {
            self.fail(format!("version {id} does not restore to source {src}"));
        }
    }

    fn verify_all(&self, after: &str) {
        let t = Instant::now();
        let o = run(&self.store, &["verify", "--all", "-q"]);
        if std::env::var("TDELTA_CRASH_TRACE").is_ok() {
            eprintln!("verify {:?}", t.elapsed());
        }
        if !o.status.success() {
            self.fail(format!(
                "verify --all after {after} exited {:?}:\n{}{}",
                o.status.code(),
                String::from_utf8_lossy(&o.stdout),
                stderr(&o)
            ));
        }
    }
}

fn refs_now(store: &Path) -> BTreeMap<String, Option<String>> {
    ["HEAD", "stable", "canary"].iter().map(|n| (n.to_string(), ref_target(store, n))).collect()
}

#[test]
fn kill_anywhere_leaves_a_consistent_store() {
    let seed = seed("TDELTA_CRASH_SEED", 0x007d_e17a_c4a5);
    let target_kills: usize = std::env::var("TDELTA_CRASH_KILLS").ok().and_then(|s| s.parse().ok()).unwrap_or(100);
    eprintln!("crash test seed {seed} (replay with TDELTA_CRASH_SEED={seed}), {target_kills} kills");
    let t_start = Instant::now();
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let spec = SeriesSpec::new(seed % 1000, DType::BF16, 512 << 10, 10);
    let srcs = tdelta_dev::synth::write_series(&spec, &dir.path().join("src")).unwrap();
    let store = dir.path().join("store");
    let scratch = dir.path().join("scratch");
    fs::create_dir_all(&scratch).unwrap();
    init(&store);
    let mut w = World {
        seed,
        store: store.clone(),
        scratch,
        srcs,
        expected: BTreeMap::new(),
        next_src: 0,
        est: BTreeMap::new(),
    };

    // Two versions packed normally, measuring each op once.
    for i in 0..2 {
        let t = Instant::now();
        let id = ok(&store, &["pack", path_str(&w.srcs[i]), "-q", "--policy", POLICY]).trim().to_string();
        w.est.insert(Op::Pack, t.elapsed());
        w.expected.insert(id, i);
    }
    w.next_src = 2;
    let ids: Vec<String> = w.expected.keys().cloned().collect();
    let t = Instant::now();
    ok(&store, &["tag", "stable", &ids[0], "-q"]);
    w.est.insert(Op::Tag, t.elapsed());
    let t = Instant::now();
    ok(&store, &["rollback", "stable", "--to", &ids[1], "-q"]);
    w.est.insert(Op::Rollback, t.elapsed());
    let t = Instant::now();
    ok(&store, &["gc", "-q"]);
    w.est.insert(Op::Gc, t.elapsed());
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
        // Keep at most MAX_LIVE versions (so `verify --all` stays quick)
        // by dropping unreferenced ones; this also gives gc garbage to
        // collect (packs to rewrite), not only orphans.
        while w.expected.len() > MAX_LIVE {
            let held: Vec<String> = refs_now(&store).into_values().flatten().collect();
            let free: Vec<String> = w.expected.keys().filter(|v| !held.contains(v)).cloned().collect();
            if free.is_empty() {
                break;
            }
            let id = rng.pick(&free).clone();
            ok(&store, &["drop", &id, "-q"]);
            w.expected.remove(&id);
        }
        let before_versions = versions(&store);
        let before_refs = refs_now(&store);
        let ids: Vec<String> = w.expected.keys().cloned().collect();
        let (args, note): (Vec<String>, String) = match op {
            Op::Pack => {
                let s = w.next_src % w.srcs.len();
                let args = ["pack", w.srcs[s].to_str().unwrap(), "-q", "-m", &format!("src {s}"), "--policy", POLICY];
                (args.iter().map(|a| a.to_string()).collect(), format!("pack src {s}"))
            }
            Op::Gc => (vec!["gc".into(), "-q".into()], "gc".into()),
            Op::Tag => {
                let name = *rng.pick(&["stable", "canary"]);
                let to = rng.pick(&ids).clone();
                (vec!["tag".into(), name.into(), to.clone(), "--force".into(), "-q".into()], format!("tag {name} {to}"))
            }
            Op::Rollback => {
                let name = *rng.pick(&["stable", "HEAD"]);
                let to = rng.pick(&ids).clone();
                (
                    vec!["rollback".into(), name.into(), "--to".into(), to.clone(), "-q".into()],
                    format!("rollback {name} {to}"),
                )
            }
        };
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
        let mut child =
            bin().arg("--store").arg(&store).args(&args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
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
        if std::env::var("TDELTA_CRASH_TRACE").is_ok() {
            eprintln!("{note}: delay {delay:?} elapsed {elapsed:?} killed {killed}");
        }
        let what =
            format!("{} {note} after {delay:?} (iteration {iter})", if killed { "kill of" } else { "completed" });

        // The store opens and every version checks out.
        w.verify_all(&what);
        let after_versions = versions(&store);
        let after_refs = refs_now(&store);
        for v in &before_versions {
            if !after_versions.contains(v) {
                w.fail(format!("{what}: version {v} vanished"));
            }
        }
        let new: Vec<&String> = after_versions.iter().filter(|v| !before_versions.contains(v)).collect();
        match op {
            Op::Pack => {
                let s = w.next_src % w.srcs.len();
                if new.len() > 1 {
                    w.fail(format!("{what}: {} versions appeared", new.len()));
                }
                if let Some(v) = new.first() {
                    // The interrupted version is whole: it restores.
                    w.restores(v, s);
                    w.expected.insert((*v).clone(), s);
                    if killed {
                        landed_by_kill += 1;
                    }
                }
                let head = after_refs["HEAD"].clone();
                if head != before_refs["HEAD"] {
                    let h = head.unwrap_or_default();
                    if !(new.iter().any(|v| **v == h) || w.expected.get(&h).is_some_and(|x| *x == s)) {
                        w.fail(format!("{what}: HEAD moved to {h}, not to the packed version"));
                    }
                    w.restores(&h, s);
                    w.next_src += 1;
                } else if !killed {
                    w.fail(format!("{what}: completed but HEAD did not move"));
                }
                if !killed && new.is_empty() && head_unchanged(&before_refs, &after_refs) {
                    w.fail(format!("{what}: completed without a new version"));
                }
            }
            _ => {
                if !new.is_empty() {
                    w.fail(format!("{what}: versions appeared: {new:?}"));
                }
                if after_versions != before_versions {
                    w.fail(format!("{what}: version set changed"));
                }
                for (name, old) in &before_refs {
                    let now = &after_refs[name];
                    let target = args
                        .get(2)
                        .filter(|_| op == Op::Tag && args[1] == *name)
                        .or_else(|| args.get(3).filter(|_| op == Op::Rollback && args[1] == *name));
                    let allowed = now == old || (target.is_some() && now.as_ref() == target);
                    if !allowed {
                        w.fail(format!("{what}: ref {name} went from {old:?} to {now:?}"));
                    }
                    if !killed && target.is_some() && now.as_ref() != target {
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
            let live: Vec<(String, usize)> = w.expected.iter().map(|(k, v)| (k.clone(), *v)).collect();
            let (id, s) = rng.pick(&live).clone();
            w.restores(&id, s);
        }

        // Temp files of the killed writer go with the next writer (here a
        // tag that moves nothing).
        if !list(&store.join("tmp")).is_empty() {
            tmp_leftovers += 1;
            let canary = after_refs["canary"].clone().unwrap_or_else(|| "HEAD".into());
            ok(&store, &["tag", "canary", &canary, "--force", "-q"]);
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
    ok(&store, &["gc", "-q"]);
    assert!(orphan_packs(&store).is_empty(), "[seed {seed}] orphans after gc: {:?}", orphan_packs(&store));
    assert!(list(&store.join("tmp")).is_empty(), "[seed {seed}] tmp not empty after gc");
    assert!(!store.join("audit.pending").exists(), "[seed {seed}] a pending ref move outlived the next writer");
    w.verify_all("final gc");
    for (id, s) in &w.expected {
        w.restores(id, *s);
    }
    let audit = json(&store, &["history", "HEAD"]);
    assert!(audit.as_array().is_some_and(|a| !a.is_empty()), "[seed {seed}] no HEAD history");
    // The log is complete: after a writer ran (the gc above), the newest
    // entry of every ref names where the ref points, also for moves whose
    // writer was killed before it logged them (recorded as `recover`).
    let head = json(&store, &["show", "HEAD"])["id"].as_str().unwrap().to_string();
    let mut current: Vec<(String, String)> = vec![("HEAD".into(), head)];
    for t in json(&store, &["tags"]).as_array().unwrap() {
        current.push((t["name"].as_str().unwrap().into(), t["id"].as_str().unwrap().into()));
    }
    let mut recovered = 0;
    for (name, id) in &current {
        let h = json(&store, &["history", name]);
        let h = h.as_array().unwrap();
        for e in h.iter().filter(|e| e["op"] == "recover") {
            // Only a move its killed writer recorded as pending (issue 12).
            assert!(e["why"].as_str().is_some_and(|w| w.starts_with("completes the ")), "[seed {seed}] {e}");
            recovered += 1;
        }
        let last = h.iter().max_by_key(|e| e["seq"].as_u64().unwrap());
        assert_eq!(
            last.and_then(|e| e["new"].as_str()),
            Some(id.as_str()),
            "[seed {seed}] the audit log does not end with {name} -> {id}"
        );
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

fn head_unchanged(a: &BTreeMap<String, Option<String>>, b: &BTreeMap<String, Option<String>>) -> bool {
    a["HEAD"] == b["HEAD"]
}

/// Unmounts a tmpfs on drop.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Fills the file system holding `dir` with `filler`, then frees `free`
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
    let spec = SeriesSpec::new(5, DType::BF16, 2 << 20, 3);
    let srcs = tdelta_dev::synth::write_series(&spec, &dir.path().join("src")).unwrap();
    let store = mnt.join("store");
    init(&store);
    let v0 = pack(&store, &srcs[0], "v0");
    let filler = mnt.join("filler");
    let mut failures = 0;
    // Free space from a few pages up to nearly what the pack needs: the
    // pack runs out in different places (pack file, index, manifest, HEAD).
    for free in [0u64, 4 << 10, 16 << 10, 64 << 10, 256 << 10, 512 << 10, 1 << 20] {
        fill_leaving(&filler, free);
        let before = snapshot(&store, &["lock"]);
        let o = run(&store, &["pack", srcs[1].to_str().unwrap(), "-q", "-m", "v1"]);
        if o.status.success() {
            eprintln!("disk-full: with {free} bytes free the pack fitted");
            fs::remove_file(&filler).unwrap();
            break;
        }
        failures += 1;
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.contains("No space left on device") && err.contains(store.to_str().unwrap()), "free {free}: {err}");
        let after = snapshot(&store, &["lock"]);
        let changed: Vec<&String> =
            before.keys().chain(after.keys()).filter(|k| before.get(*k) != after.get(*k)).collect();
        assert!(changed.is_empty(), "free {free}: a failed pack changed the store: {changed:?} ({err})");
        fs::remove_file(&filler).unwrap();
    }
    assert!(failures > 0, "the pack never ran out of space");
    // Space freed: packing works again and everything restores.
    let v1 = pack(&store, &srcs[1], "v1");
    ok(&store, &["verify", "--all", "-q"]);
    let scratch = dir.path().join("scratch");
    fs::create_dir_all(&scratch).unwrap();
    assert_eq!(unpack_bytes(&store, &v0, &scratch), fs::read(&srcs[0]).unwrap());
    assert_eq!(unpack_bytes(&store, &v1, &scratch), fs::read(&srcs[1]).unwrap());
    eprintln!("disk-full: {failures} packs refused with ENOSPC, store unchanged each time");
}
