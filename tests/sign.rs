//! Signed releases (issue 12): `tdelta key`, `--sign` on pack, tag and
//! rollback, `verify --require-signed`, and who signed in `show` and
//! `history`.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use common::*;
use serde_json::Value;
use tdelta::DType;
use tdelta_dev::synth::SeriesSpec;

struct Fx {
    dir: tempfile::TempDir,
    store: PathBuf,
    srcs: Vec<PathBuf>,
    /// The secret key file (trusted by the store) and its public key.
    key: PathBuf,
    /// Everything every command printed, to check the key never shows.
    printed: std::sync::Mutex<String>,
}

impl Fx {
    /// Runs tdelta with `TDELTA_SIGNING_KEY` set to `key`.
    fn run_key(&self, key: &Path, args: &[&str]) -> Output {
        let o = bin()
            .arg("--store")
            .arg(&self.store)
            .args(args)
            .env("TDELTA_SIGNING_KEY", key)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        self.printed.lock().unwrap().push_str(&out(&o));
        o
    }

    fn ok_key(&self, key: &Path, args: &[&str]) -> String {
        let o = self.run_key(key, args);
        assert!(o.status.success(), "tdelta {args:?}: {}", out(&o));
        String::from_utf8(o.stdout).unwrap()
    }

    fn signed(&self, args: &[&str]) -> String {
        self.ok_key(&self.key.clone(), args)
    }

    /// `verify --all` with `extra` flags: exit code and everything printed.
    fn verify(&self, extra: &[&str]) -> (Option<i32>, String) {
        let mut args = vec!["verify", "--all"];
        args.extend(extra);
        let o = self.run_key(Path::new("/nonexistent"), &args);
        (o.status.code(), out(&o))
    }

    fn verify_json(&self, extra: &[&str]) -> (Option<i32>, Value) {
        let mut args = vec!["verify", "--all", "--json"];
        args.extend(extra);
        let o = self.run_key(Path::new("/nonexistent"), &args);
        (o.status.code(), serde_json::from_slice(&o.stdout).unwrap())
    }

    fn secret_hex(&self) -> String {
        let text = fs::read_to_string(&self.key).unwrap();
        text.lines().find(|l| !l.starts_with('#') && !l.starts_with("tdelta")).unwrap().trim().to_string()
    }
}

fn out(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(o))
}

/// A store, three checkpoints, a key generated and trusted.
fn fixture() -> (Fx, String) {
    let dir = tempfile::tempdir().unwrap();
    let spec = SeriesSpec::new(7, DType::BF16, 128 << 10, 3);
    let srcs = tdelta_dev::synth::write_series(&spec, &dir.path().join("src")).unwrap();
    let store = dir.path().join("store");
    init(&store);
    let key = dir.path().join("keys").join("release");
    fs::create_dir_all(key.parent().unwrap()).unwrap();
    let fx = Fx { store, srcs, key: key.clone(), dir, printed: Default::default() };
    let fp = fx.signed(&["key", "generate", "-o", path_str(&key), "--comment", "release team"]).trim().to_string();
    assert_eq!(fp.len(), 16, "{fp}");
    let pub_key = format!("{}.pub", key.display());
    assert_eq!(fx.signed(&["key", "trust", &pub_key]).trim(), fp);
    (fx, fp)
}

/// Packs every checkpoint signed, tags `stable` at the second (signed).
fn signed_history(fx: &Fx) -> Vec<String> {
    let ids: Vec<String> = fx
        .srcs
        .iter()
        .enumerate()
        .map(|(i, s)| fx.signed(&["pack", path_str(s), "-q", "-m", &format!("v{i}"), "--sign"]).trim().to_string())
        .collect();
    fx.signed(&["tag", "stable", &ids[1], "--sign", "-q", "--why", "release"]);
    ids
}

#[test]
fn signed_pack_tag_and_rollback_pass_require_signed_and_show_who_signed() {
    let (fx, fp) = fixture();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(fs::metadata(&fx.key).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let ids = signed_history(&fx);
    fx.signed(&["rollback", "stable", "--to", &ids[0], "--sign", "-q", "--why", "regression"]);
    let (code, text) = fx.verify(&["--require-signed"]);
    assert_eq!(code, Some(0), "{text}");
    let (code, v) = fx.verify_json(&["--require-signed"]);
    assert_eq!(code, Some(0));
    let sigs = &v["signatures"];
    assert_eq!(sigs["unsigned"], Value::Array(vec![]), "{v}");
    assert_eq!(sigs["trusted_keys"][0], fp.as_str());
    // 3 versions, 3 HEAD moves, 2 moves of stable.
    assert_eq!(sigs["valid"], 8, "{v}");

    let show = fx.signed(&["show", "stable"]);
    assert!(show.contains(&format!("signed   {fp}\n")), "{show}");
    let shown: Value = serde_json::from_str(&fx.signed(&["show", "stable", "--json"])).unwrap();
    assert_eq!(shown["signed_by"]["fingerprint"], fp.as_str());
    assert_eq!(shown["signed_by"]["trusted"], true);
    let hist = fx.signed(&["history", "stable"]);
    assert_eq!(hist.matches(&format!("signed {fp}")).count(), 2, "{hist}");
    let hist: Value = serde_json::from_str(&fx.signed(&["history", "stable", "--json"])).unwrap();
    assert_eq!(hist[1]["op"], "rollback");
    assert_eq!(hist[1]["signed_by"]["fingerprint"], fp.as_str());
    // A signed delete of a tag is a signed move too.
    fx.signed(&["tag", "canary", &ids[2], "--sign", "-q"]);
    fx.signed(&["tag", "-d", "canary", "--sign", "-q"]);
    assert_eq!(fx.verify(&["--require-signed"]).0, Some(0));
    let all: Value = serde_json::from_str(&fx.signed(&["history", "--all", "--json"])).unwrap();
    let last = all.as_array().unwrap().last().unwrap().clone();
    assert_eq!((&last["op"], &last["signed_by"]["fingerprint"]), (&"untag".into(), &fp.as_str().into()));
    let trusted = &all[0];
    assert_eq!(
        (&trusted["op"], &trusted["why"]),
        (&"trust".into(), &format!("trusted key {fp} (release team)").into())
    );
    let keys = fx.signed(&["key", "list"]);
    assert!(keys.contains(&fp) && keys.contains("release team"), "{keys}");

    // The secret key never appears in anything printed.
    let secret = fx.secret_hex();
    assert_eq!(secret.len(), 64);
    assert!(!fx.printed.lock().unwrap().to_lowercase().contains(&secret));
}

#[test]
fn unsigned_versions_and_moves_are_reported_only_under_require_signed() {
    let (fx, _) = fixture();
    let id = pack(&fx.store, &fx.srcs[0], "v0");
    ok(&fx.store, &["tag", "stable", &id, "-q"]);
    let (code, text) = fx.verify(&[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("not signed by a trusted key"), "{text}");
    let (code, text) = fx.verify(&["--require-signed"]);
    assert_eq!(code, Some(3), "{text}");
    let short = &id[..12];
    assert!(text.contains(&format!("UNSIGNED version {short} (HEAD, stable): not signed")), "{text}");
    assert!(text.contains("UNSIGNED move 2 of `HEAD`: pack of"), "{text}");
    assert!(text.contains("UNSIGNED move 3 of `stable`: tag of"), "{text}");
    let (_, v) = fx.verify_json(&["--require-signed"]);
    let unsigned = v["signatures"]["unsigned"].as_array().unwrap();
    assert_eq!(unsigned.len(), 3, "{v}");
    assert_eq!(unsigned[2]["kind"], "version");
    assert_eq!(unsigned[2]["id"], id.as_str());

    // Signing the release later covers the version and that move only.
    fx.signed(&["tag", "stable", &id, "--force", "--sign", "-q"]);
    let (_, v) = fx.verify_json(&["--require-signed"]);
    let unsigned = v["signatures"]["unsigned"].as_array().unwrap();
    let seqs: Vec<&Value> = unsigned.iter().map(|u| &u["seq"]).collect();
    assert_eq!(seqs, [2, 3], "{v}");
}

#[test]
fn a_key_the_store_does_not_trust_is_reported() {
    let (fx, fp) = fixture();
    let other = fx.dir.path().join("keys").join("intern");
    let other_fp = fx.signed(&["key", "generate", "-o", path_str(&other), "-q"]).trim().to_string();
    assert_ne!(other_fp, fp);
    fx.ok_key(&other, &["pack", path_str(&fx.srcs[0]), "-q", "--sign"]);
    let (code, text) = fx.verify(&["--require-signed"]);
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains(&format!("signed by untrusted key {other_fp}")), "{text}");
    assert_eq!(text.matches("UNSIGNED").count(), 2, "{text}");
    let show = fx.signed(&["show", "HEAD"]);
    assert!(show.contains(&format!("signed   {other_fp} (untrusted)")), "{show}");
    // Valid signatures by an untrusted key are not damage without the flag.
    assert_eq!(fx.verify(&[]).0, Some(0));
}

#[test]
fn a_resealed_audit_log_is_caught_under_require_signed() {
    let (fx, _) = fixture();
    signed_history(&fx);
    common::reseal(&fx.store, &|v| {
        if v["seq"] == 2 {
            v["why"] = "rewritten".into();
        }
    });
    // The unkeyed chain alone cannot tell (tests/integrity.rs) ...
    let (code, text) = fx.verify(&[]);
    assert_eq!(code, Some(0), "{text}");
    // ... the signatures can.
    let (code, text) = fx.verify(&["--require-signed"]);
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("entry 2 was changed after"), "{text}");
}

#[test]
fn a_signed_move_removed_from_the_end_of_the_log_is_caught() {
    let (fx, _) = fixture();
    let ids = signed_history(&fx);
    let stable_before = fs::read(fx.store.join("refs/stable")).unwrap();
    let log_before = fs::read(fx.store.join("audit.log")).unwrap();
    fx.signed(&["tag", "stable", &ids[2], "--force", "--sign", "-q"]);
    // Cut the move from the log and put the ref back by hand: log and refs
    // agree again, so only the signature tells.
    fs::write(fx.store.join("audit.log"), &log_before).unwrap();
    fs::write(fx.store.join("refs/stable"), &stable_before).unwrap();
    let (code, text) = fx.verify(&[]);
    assert_eq!(code, Some(0), "{text}");
    let (code, text) = fx.verify(&["--require-signed"]);
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("UNSIGNED move 6 of `stable`: the signed tag of `stable`"), "{text}");
    assert!(text.contains("is not in the audit log"), "{text}");
}

#[test]
fn a_tampered_signature_file_is_damage_even_without_the_flag() {
    let (fx, _) = fixture();
    let ids = signed_history(&fx);
    let sig = fx.store.join("signatures/versions").join(format!("{}.sig", ids[1]));
    let text = fs::read_to_string(&sig).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let s = v["sig"].as_str().unwrap();
    let flipped = format!("{}{}", if s.starts_with('0') { '1' } else { '0' }, &s[1..]);
    fs::write(&sig, text.replace(s, &flipped)).unwrap();
    let (code, text) = fx.verify(&[]);
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains(sig.to_str().unwrap()) && text.contains("does not verify"), "{text}");
    let show = fx.signed(&["show", &ids[1]]);
    assert!(show.contains("signed   DAMAGED"), "{show}");
}

#[test]
fn sign_without_a_key_and_key_overwrite_are_refused() {
    let (fx, _) = fixture();
    let o = bin()
        .arg("--store")
        .arg(&fx.store)
        .args(["pack", path_str(&fx.srcs[0]), "--sign"])
        .env_remove("TDELTA_SIGNING_KEY")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "a usage error");
    assert!(stderr(&o).contains("--sign needs a key"), "{}", stderr(&o));
    assert!(versions(&fx.store).is_empty());
    let before = fs::read(&fx.key).unwrap();
    let o = fx.run_key(&fx.key.clone(), &["key", "generate", "-o", path_str(&fx.key)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("key file") && stderr(&o).contains("already exists"), "{}", stderr(&o));
    assert_eq!(fs::read(&fx.key).unwrap(), before);
    // A secret key is not a public key to trust.
    let o = fx.run_key(&fx.key.clone(), &["key", "trust", path_str(&fx.key)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("secret key"), "{}", stderr(&o));
    assert!(!out(&o).contains(&fx.secret_hex()));
}

#[test]
fn verify_require_signed_during_signed_moves_sees_no_damage() {
    let (fx, _) = fixture();
    let ids = signed_history(&fx);
    let fx = std::sync::Arc::new(fx);
    let writer = {
        let fx = fx.clone();
        let ids = ids.clone();
        std::thread::spawn(move || {
            for i in 0..16 {
                let to = &ids[i % ids.len()];
                let name = if i % 4 == 3 { "HEAD" } else { "stable" };
                let o = fx.run_key(&fx.key, &["rollback", name, "--to", to, "--sign", "-q"]);
                assert!(o.status.success(), "{}", out(&o));
            }
        })
    };
    let mut runs = 0;
    while !writer.is_finished() || runs == 0 {
        let (code, text) = fx.verify(&["--require-signed"]);
        assert_eq!(code, Some(0), "{text}");
        runs += 1;
    }
    writer.join().unwrap();
    assert_eq!(fx.verify(&["--require-signed"]).0, Some(0));
}
