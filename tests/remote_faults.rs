//! Remotes under faults (issue 15): the S3 server stopped in the middle of
//! a push or a clone, and `fetch`/`pull` killed at seeded random moments.
//! The local store stays consistent and a re-run completes.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::s3::{cmd, create_bucket, ok_in, run_in, s3};
use common::{Rng, stderr};
use tdelta::DType;
use tdelta_dev::synth::SeriesSpec;

/// A store with `n` versions of a generated series.
fn setup(dir: &Path, n: usize, bytes: u64) -> (PathBuf, Vec<PathBuf>) {
    let store = dir.join("store");
    let spec = SeriesSpec::new(15, DType::BF16, bytes, n);
    let srcs = tdelta_dev::synth::write_series(&spec, &dir.join("src")).unwrap();
    ok_in(None, &store, &["init", "--block-size", "64K", "-q"]);
    for s in &srcs {
        ok_in(None, &store, &["pack", s.to_str().unwrap(), "-q", "--base", "none"]);
    }
    (store, srcs)
}

/// The local store is consistent: it verifies, every index has its pack,
/// and every ref names a version it holds whole.
fn assert_local_consistent(store: &Path) {
    let o = run_in(None, store, &["verify", "--all", "-q"]);
    assert!(o.status.success(), "verify after a fault: {}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
}

/// A private S3 server (moto, from the same virtual environment as the
/// shared one) that the test may stop.
struct Server {
    endpoint: String,
    pid: String,
}

impl Server {
    fn start() -> Server {
        Server::start_on(None)
    }

    /// A server on `port` (a fresh one, empty, where one was stopped), or
    /// on a free port.
    fn start_on(port: Option<&str>) -> Server {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/s3-server");
        let o = Command::new(&script).args(port).output().unwrap();
        assert!(o.status.success(), "s3-server: {}", stderr(&o));
        let out = String::from_utf8(o.stdout).unwrap();
        let get = |k: &str| out.lines().find_map(|l| l.strip_prefix(k)).unwrap().to_string();
        Server { endpoint: get("TDELTA_TEST_S3="), pid: get("S3_SERVER_PID=") }
    }

    fn stop(&self) {
        let _ = Command::new("kill").arg("-9").arg(&self.pid).stderr(Stdio::null()).status();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How long a command facing a stopped server may take before it counts
/// as hung (its retries give up well before).
const HUNG: Duration = Duration::from_secs(300);

/// Waits for `child`, bounded by [`HUNG`]: a command that outlives it is
/// killed and the test fails.
fn wait_bounded(child: std::process::Child) -> Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(HUNG) {
        Ok(o) => o.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("the command hung: still running {HUNG:?} after the server stopped");
        }
    }
}

/// Stops the server at a seeded moment within `cmd`'s run (measured
/// beforehand as `full`), then waits for the command (bounded).
fn stop_during(server: &Server, mut c: Command, full: Duration, rng: &mut Rng) -> Output {
    let child = c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let at = Duration::from_micros(rng.below(full.as_micros().max(1000) as u64));
    std::thread::sleep(at);
    server.stop();
    wait_bounded(child)
}

/// The server dies in the middle of a push, then of a clone: each exits
/// with a clear error naming the remote (or had finished), never a panic
/// or a hang, and the local stores stay consistent and untouched by the
/// push. A server started again on the same address lets the re-run
/// complete, and a clone of the result restores bit-exact.
#[test]
fn s3_server_stopped_mid_push_and_mid_clone() {
    let Some(_) = s3() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (store, srcs) = setup(dir.path(), 2, 6 << 20);
    let mut rng = Rng(common::seed("TDELTA_TEST_SEED", 0x5eed_0516));

    // How long a push takes, on a first server.
    let first = Server::start();
    let url = create_bucket(&first.endpoint, "faults");
    ok_in(None, &store, &["remote", "add", "origin", &url, "--endpoint", &first.endpoint]);
    let t0 = Instant::now();
    ok_in(Some(&first.endpoint), &store, &["push", "-q", "--jobs", "2"]);
    let full = t0.elapsed();
    // A clone from it: how long that takes.
    let t0 = Instant::now();
    let probe = dir.path().join("probe");
    ok_in(None, &probe, &["clone", &url, probe.to_str().unwrap(), "-q", "--endpoint", &first.endpoint]);
    let full_clone = t0.elapsed();

    // Stop it mid-clone.
    let target = dir.path().join("clone");
    let mut c = cmd(None);
    c.args(["clone", &url, target.to_str().unwrap(), "-q", "--endpoint", &first.endpoint]);
    let o = stop_during(&first, c, full_clone, &mut rng);
    let msg = stderr(&o);
    assert!(!msg.contains("panicked"), "{msg}");
    if !o.status.success() {
        assert_eq!(o.status.code(), Some(1), "{msg}");
        assert!(msg.contains("error"), "{msg}");
    }
    if target.join("config").exists() {
        assert_local_consistent(&target);
    }

    // A second server; stop it mid-push.
    let mut second = Server::start();
    let url2 = create_bucket(&second.endpoint, "faults2");
    ok_in(None, &store, &["remote", "add", "second", &url2, "--endpoint", &second.endpoint]);
    let before = common::snapshot(&store, &["lock", "remotes"]);
    let mut c = cmd(None);
    c.arg("--store").arg(&store).args(["push", "second", "-q", "--jobs", "2"]);
    let o = stop_during(&second, c, full, &mut rng);
    let msg = stderr(&o);
    assert!(!msg.contains("panicked"), "{msg}");
    if !o.status.success() {
        assert_eq!(o.status.code(), Some(1), "{:?}: {msg}", o.status);
        assert!(msg.contains("remote `second`") && msg.contains("s3://faults2/"), "names the remote: {msg}");
    }
    assert_eq!(common::snapshot(&store, &["lock", "remotes"]), before, "a push changes no local object");
    assert_local_consistent(&store);
    // A push to a server that is gone is a clear error naming the remote,
    // within the bound.
    let mut c = cmd(None);
    c.arg("--store").arg(&store).args(["push", "second", "-q"]);
    let o = wait_bounded(c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap());
    let msg = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{msg}");
    assert!(!msg.contains("panicked"), "{msg}");
    assert!(msg.contains("remote `second`") && msg.contains("s3://faults2/"), "names the remote: {msg}");

    // The server back on the same address (fresh: moto keeps nothing),
    // its bucket made again: the re-run completes, the remote verifies,
    // and a clone restores bit-exact.
    let port = second.endpoint.rsplit(':').next().unwrap().to_string();
    second = Server::start_on(Some(&port));
    assert_eq!(create_bucket(&second.endpoint, "faults2"), url2);
    ok_in(None, &store, &["push", "second", "-q"]);
    ok_in(None, &store, &["verify", "--remote", "second", "-q"]);
    let again = dir.path().join("again");
    ok_in(None, &again, &["clone", &url2, again.to_str().unwrap(), "-q", "--endpoint", &second.endpoint]);
    let out = dir.path().join("again.safetensors");
    ok_in(None, &again, &["unpack", "HEAD", "-o", out.to_str().unwrap(), "-q"]);
    assert_eq!(fs::read(&out).unwrap(), fs::read(&srcs[1]).unwrap());
}

/// Kills `fetch` and `pull` at seeded random moments: after each kill the
/// local store verifies, and a final pull completes bit-exact.
fn killed_pulls(url: &str, endpoint: Option<&str>, kills: usize) {
    let dir = tempfile::tempdir().unwrap();
    let (store, srcs) = setup(dir.path(), 3, 4 << 20);
    let mut add = vec!["remote", "add", "origin", url];
    if let Some(e) = endpoint {
        add.extend(["--endpoint", e]);
    }
    ok_in(endpoint, &store, &add);
    ok_in(endpoint, &store, &["push", "-q"]);
    let team = dir.path().join("team");
    ok_in(None, &team, &["init", "--block-size", "64K", "-q"]);
    ok_in(endpoint, &team, &add);
    // How long a whole pull takes, into a scratch store.
    let scratch = dir.path().join("scratch");
    ok_in(None, &scratch, &["init", "--block-size", "64K", "-q"]);
    ok_in(endpoint, &scratch, &add);
    let t0 = Instant::now();
    ok_in(endpoint, &scratch, &["pull", "-q", "--jobs", "2"]);
    let full = t0.elapsed().as_micros().max(1000) as u64;
    let mut rng = Rng(common::seed("TDELTA_TEST_SEED", 0x5eed_0517));
    for i in 0..kills {
        let verb = if i % 2 == 0 { "fetch" } else { "pull" };
        let mut child = cmd(endpoint)
            .arg("--store")
            .arg(&team)
            .args([verb, "-q", "--jobs", "2"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(rng.below(full * 2)));
        let _ = child.kill();
        let _ = child.wait();
        assert_local_consistent(&team);
    }
    ok_in(endpoint, &team, &["pull", "-q"]);
    assert_local_consistent(&team);
    let out = dir.path().join("out");
    ok_in(None, &team, &["unpack", "HEAD", "-o", out.to_str().unwrap(), "-q"]);
    assert_eq!(fs::read(&out).unwrap(), fs::read(&srcs[2]).unwrap());
    assert!(
        fs::read_dir(team.join("tmp")).map(|d| d.count()).unwrap_or(0) == 0,
        "the re-run cleared what the killed ones left in tmp/"
    );
}

#[test]
fn file_remote_killed_fetch_and_pull_leave_the_store_consistent() {
    let dir = tempfile::tempdir().unwrap();
    killed_pulls(&format!("file://{}", dir.path().join("remote").display()), None, 20);
}

#[test]
fn s3_killed_fetch_and_pull_leave_the_store_consistent() {
    let Some(ep) = s3() else { return };
    let url = create_bucket(&ep, &format!("tdelta-killedpull-{}", std::process::id()));
    killed_pulls(&url, Some(&ep), 20);
}
