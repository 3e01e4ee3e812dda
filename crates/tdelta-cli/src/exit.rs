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

/// What kind of failure `e` is: `usage`, `damage` (a usage error or
/// damage found by any check of the store's bytes) or `runtime`.
fn kind(e: &anyhow::Error) -> &'static str {
    for cause in e.chain() {
        if cause.is::<Usage>() || matches!(cause.downcast_ref(), Some(tdelta::Error::InvalidChoice { .. })) {
            return "usage";
        }
        if cause.is::<Damaged>() || engine(e).is_some_and(|t| t.kind() == tdelta::ErrorKind::Corrupt) {
            return "damage";
        }
    }
    "runtime"
}

/// The engine error in `e`'s chain, if any.
fn engine(e: &anyhow::Error) -> Option<&tdelta::Error> {
    e.chain().find_map(|c| c.downcast_ref::<tdelta::Error>())
}

/// What the user can do about an engine error, in terms of this command
/// line (the library's messages are neutral): the text appended to the
/// message, with its separator.
fn hint(e: &tdelta::Error) -> Option<String> {
    use tdelta::AuditDamage as A;
    use tdelta::Error as E;
    use tdelta::OutputRefusal as R;
    let (sep, text) = match e {
        E::Corrupt { audit: Some(A::LogMissing), .. } => {
            ("; ", "`tdelta repair audit` starts a new one recording the current refs")
        }
        E::Corrupt { audit: Some(A::LogDamaged), .. } => {
            ("; ", "`tdelta repair audit` keeps its valid entries and sets the damaged file aside")
        }
        E::Corrupt { audit: Some(A::PendingMove), .. } => ("; ", "`tdelta repair audit` removes it"),
        E::Corrupt { audit: Some(A::RefDiffers), .. } => {
            (": ", "`tdelta verify` lists every difference, `tdelta repair audit` records the refs as they are")
        }
        E::InBlock { source, .. } => return hint(source),
        E::NoStore { .. } => ("; ", "create one with `tdelta init`"),
        E::NoVersions { .. } => ("; ", "add one with `tdelta pack SOURCE`"),
        E::HeadMissing { .. } => ("; ", "`tdelta verify` reports it; name a version or tag instead of HEAD"),
        E::UnsupportedFormat { .. } => ("; ", "upgrade tdelta"),
        E::NeedsUpgrade { .. } => ("; ", "run `tdelta upgrade` to write to it"),
        E::AmbiguousRef { .. } => ("; ", "give more digits"),
        E::NoDefaultRemote { remotes } if remotes.is_empty() => ("; ", "add one with `tdelta remote add NAME URL`"),
        E::NoDefaultRemote { .. } => ("; ", "name one, or add one with --default"),
        E::AlreadyExists { what } if what.starts_with("tag `") => ("; ", "pass --force to move it"),
        E::OutputRefused { refusal: R::Exists { directory: false } | R::Appeared, .. } => {
            (" or ", "pass --force to replace it")
        }
        E::OutputRefused { refusal: R::Exists { directory: true }, .. } => {
            (" or ", "pass --force to write the version's files into it (other files are left alone)")
        }
        _ => return None,
    };
    Some(format!("{sep}{text}"))
}

/// Prints `e` (on stderr, and as JSON on stdout with `--json`) and
/// returns its exit status.
pub fn report(e: &anyhow::Error, json: bool) -> ExitCode {
    let mut msg = chain(e);
    let kind = kind(e);
    let engine = engine(e);
    if let Some(h) = crate::remote::hint(e).or_else(|| engine.and_then(hint)) {
        msg.push_str(&h);
    }
    eprintln!("error: {}", crate::fmt::text(&msg));
    if json && !PRINTED_JSON.load(Ordering::Relaxed) {
        let mut v = json!({"error": msg, "kind": kind});
        // The engine's class of the error (`not_found`, `corrupt`, ...)
        // and, for damage, which check failed.
        if let Some(t) = engine {
            v["type"] = json!(t.kind());
            if let Some(c) = t.corrupt_kind() {
                v["check"] = json!(c);
            }
        }
        println!("{v}");
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
