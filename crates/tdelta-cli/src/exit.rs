//! Exit statuses and how errors are shown: 0 ok, 1 runtime error, 2 usage
//! error, 3 damage found; with `--json`, the error is also a JSON object
//! on stdout.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::json;

/// A command line that makes no sense (exit status 2), found after
/// parsing: nothing has been written.
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// Damage found in the store (exit status 3).
#[derive(Debug)]
pub struct Damaged(pub String);

impl std::fmt::Display for Damaged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Damaged {}

/// Whether a command already printed its JSON result (then an error
/// after it, such as damage found, is not printed as a second document).
static PRINTED_JSON: AtomicBool = AtomicBool::new(false);

/// Notes that the JSON result is out.
pub fn printed_json() {
    PRINTED_JSON.store(true, Ordering::Relaxed);
}

/// What kind of failure `e` is: `usage`, `damage` or `runtime`.
fn kind(e: &anyhow::Error) -> &'static str {
    for cause in e.chain() {
        if cause.is::<Usage>() || matches!(cause.downcast_ref(), Some(tdelta::Error::InvalidChoice { .. })) {
            return "usage";
        }
        if cause.is::<Damaged>() {
            return "damage";
        }
    }
    "runtime"
}

/// Prints `e` (on stderr, and as JSON on stdout with `--json`) and
/// returns its exit status.
pub fn report(e: &anyhow::Error, json: bool) -> ExitCode {
    let msg = chain(e);
    let kind = kind(e);
    eprintln!("error: {}", crate::fmt::text(&msg));
    if json && !PRINTED_JSON.load(Ordering::Relaxed) {
        println!("{}", json!({"error": msg, "kind": kind}));
    }
    ExitCode::from(match kind {
        "usage" => 2,
        "damage" => 3,
        _ => 1,
    })
}

/// A command-line parse error from clap: help and version go out as
/// usual; errors exit 2, as JSON too when `--json` was given.
pub fn clap_error(e: &clap::Error) -> ExitCode {
    if !e.use_stderr() {
        e.exit();
    }
    let _ = e.print();
    if std::env::args_os().any(|a| a == "--json") {
        // The message without the usage and help hints that follow it.
        let text = e.render().to_string();
        let msg: Vec<&str> = text.lines().take_while(|l| !l.trim().is_empty()).map(str::trim).collect();
        let msg = msg.join(" ");
        println!("{}", json!({"error": msg.trim_start_matches("error: "), "kind": "usage"}));
    }
    ExitCode::from(2)
}

/// The error and its causes on one line, without repeating a cause that a
/// message already includes.
fn chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if out.contains(&s) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&s);
    }
    out
}
