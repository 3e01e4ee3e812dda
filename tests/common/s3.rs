//! The S3 side of the remote tests: the test server's endpoint, buckets on
//! it, and the binary run with test credentials that must never appear in
//! its output.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use super::{bin, stderr};

/// Test credentials (moto accepts any).
pub const KEY_ID: &str = "AKIATDELTATESTKEY01";
pub const SECRET: &str = "tdelta-test-secret-9f8e7d6c5b4a";

/// The S3 endpoint, or `None` (after a skip line) when the tests run
/// without a server.
pub fn s3() -> Option<String> {
    match std::env::var("TDELTA_TEST_S3") {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            assert!(
                std::env::var_os("TDELTA_REQUIRE_S3").is_none(),
                "TDELTA_REQUIRE_S3 is set but TDELTA_TEST_S3 is not: run scripts/test-remote"
            );
            eprintln!("skipped: TDELTA_TEST_S3 is not set (scripts/test-remote starts an S3 server)");
            None
        }
    }
}

/// Creates bucket `name` on the test server (a plain S3 CreateBucket
/// request) and returns the URL of a prefix in it.
pub fn create_bucket(endpoint: &str, name: &str) -> String {
    let hostport = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut s = TcpStream::connect(hostport).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "PUT /{name} HTTP/1.1\r\nHost: {hostport}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "create bucket {name}: {resp}");
    format!("s3://{name}/models")
}

/// The command with the test credentials and endpoint in its environment.
pub fn cmd(endpoint: Option<&str>) -> Command {
    let mut c = bin();
    c.env("AWS_ACCESS_KEY_ID", KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .env("TDELTA_LOCK_WAIT", "30")
        .stdin(Stdio::null());
    match endpoint {
        Some(e) => c.env("AWS_ENDPOINT_URL", e),
        None => c.env_remove("AWS_ENDPOINT_URL"),
    };
    c
}

/// Runs `tdelta --store STORE ARGS`; fails if the credentials show up in
/// its output.
pub fn run_in(endpoint: Option<&str>, store: &Path, args: &[&str]) -> Output {
    let o = cmd(endpoint).arg("--store").arg(store).args(args).output().unwrap();
    for stream in [&o.stdout, &o.stderr] {
        let text = String::from_utf8_lossy(stream);
        assert!(!text.contains(SECRET) && !text.contains(KEY_ID), "credentials in output of {args:?}: {text}");
    }
    o
}

/// [`run_in`] that must succeed; returns stdout.
pub fn ok_in(endpoint: Option<&str>, store: &Path, args: &[&str]) -> String {
    let o = run_in(endpoint, store, args);
    assert!(o.status.success(), "tdelta {args:?} failed ({:?}): {}", o.status, stderr(&o));
    String::from_utf8(o.stdout).unwrap()
}

/// [`ok_in`] with `--json`, parsed.
pub fn json_in(endpoint: Option<&str>, store: &Path, args: &[&str]) -> serde_json::Value {
    let mut a = args.to_vec();
    a.push("--json");
    let out = ok_in(endpoint, store, &a);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("tdelta {args:?} --json: {e}: {out}"))
}
