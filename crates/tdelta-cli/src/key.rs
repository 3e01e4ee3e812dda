//! `tdelta key`: signing keys and the store's trusted keys; `--sign` on
//! writing commands; the signature part of `verify`, `show` and `history`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde_json::json;
use tdelta::{SignedBy, Signer, Store};

use crate::{Global, open_store, print_json};

#[derive(Subcommand)]
pub enum KeyCmd {
    /// Create an ed25519 signing key: the secret key in FILE (mode 0600;
    /// keep it private), the public key in FILE.pub. Refuses to replace
    /// either file. The key is never printed.
    Generate {
        /// Where to write the secret key.
        #[arg(short, long, value_name = "FILE")]
        out: PathBuf,
        /// A comment stored in the public key file (e.g. who owns it).
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Trust a public key (a FILE.pub from `key generate`): versions and
    /// ref moves it signs pass `verify --require-signed`.
    Trust {
        /// The public key file.
        file: PathBuf,
    },
    /// List the store's trusted keys: fingerprint and comment.
    List,
}

/// `--sign` and the key it uses, for pack, tag and rollback.
#[derive(Args)]
pub struct SignArgs {
    /// Sign the ref moves (and the version, if it has no signature yet)
    /// with the ed25519 key from --key or TDELTA_SIGNING_KEY.
    #[arg(long)]
    pub sign: bool,
    /// Secret key file for --sign (from `tdelta key generate`).
    #[arg(long, value_name = "FILE", env = "TDELTA_SIGNING_KEY")]
    pub key: Option<PathBuf>,
}

impl SignArgs {
    /// Makes `store` sign what it writes, when --sign was given.
    pub fn apply(&self, store: &mut Store) -> Result<()> {
        if !self.sign {
            return Ok(());
        }
        let Some(path) = &self.key else {
            return Err(crate::exit::Usage(
                "--sign needs a key: pass --key FILE or set TDELTA_SIGNING_KEY (create one with `tdelta key generate`)"
                    .into(),
            )
            .into());
        };
        let signer = Signer::from_file(path).context("cannot read the signing key")?;
        store.set_signer(Some(signer));
        Ok(())
    }
}

pub fn run(g: &Global, cmd: &KeyCmd) -> Result<()> {
    match cmd {
        KeyCmd::Generate { out, comment } => {
            let signer = Signer::generate()?;
            let pub_path = signer.write_new(out, comment)?;
            let fp = signer.public_key(comment).fingerprint();
            if g.json {
                return print_json(&json!({"fingerprint": fp, "secret_key": out, "public_key": pub_path}));
            }
            println!("{fp}");
            if !g.quiet {
                eprintln!(
                    "wrote the secret key to {} (keep it private) and the public key to {}; \
                     `tdelta key trust {}` makes a store trust it",
                    out.display(),
                    pub_path.display(),
                    pub_path.display()
                );
            }
            Ok(())
        }
        KeyCmd::Trust { file } => {
            let store = open_store(g)?;
            let key = tdelta::trust_key(&store, file)?;
            if g.json {
                return print_json(&json!({"fingerprint": key.fingerprint(), "comment": key.comment}));
            }
            println!("{}", key.fingerprint());
            if !g.quiet {
                eprintln!("trusted key {} {}", key.fingerprint(), crate::fmt::text(&key.comment));
            }
            Ok(())
        }
        KeyCmd::List => {
            let store = open_store(g)?;
            let (keys, bad) = tdelta::trusted_keys(&store)?;
            if g.json {
                let v: Vec<_> =
                    keys.iter().map(|k| json!({"fingerprint": k.fingerprint(), "comment": k.comment})).collect();
                return print_json(&json!({"trusted": v, "damaged": bad}));
            }
            for k in &keys {
                println!("{}  {}", k.fingerprint(), crate::fmt::text(&k.comment));
            }
            for b in &bad {
                eprintln!("warning: {}", crate::fmt::text(b));
            }
            if keys.is_empty() && !g.quiet {
                eprintln!("no trusted keys; add one with `tdelta key trust FILE.pub`");
            }
            Ok(())
        }
    }
}

/// "ab12cd34ef56ab12", with "(untrusted)" when the store does not trust it.
pub fn signer_text(s: &SignedBy) -> String {
    if s.trusted { s.fingerprint.clone() } else { format!("{} (untrusted)", s.fingerprint) }
}

/// The signature part of `verify`: how many problems count as damage,
/// the JSON report, and the lines to print.
pub struct SignatureCheck {
    pub damage: usize,
    pub json: serde_json::Value,
}

/// Checks every signature (a bad one is damage) and, with
/// `require_signed`, rejects every version a ref points to and every ref
/// move that no trusted key signed. Prints text unless `--json`.
pub fn verify(g: &Global, store: &Store, require_signed: bool) -> Result<SignatureCheck> {
    let rep = tdelta::verify_signatures(store)?;
    let mut damage = rep.damaged.len();
    if require_signed {
        damage += rep.unsigned.len();
    }
    if !g.json {
        for d in &rep.damaged {
            println!("STORE    {}", crate::fmt::text(d));
        }
        if require_signed {
            for u in &rep.unsigned {
                println!("UNSIGNED {}", crate::fmt::text(&u.to_string()));
            }
        }
        if !g.quiet {
            for o in &rep.orphans {
                eprintln!("info: orphaned signature {}", crate::fmt::text(o));
            }
            if !require_signed && !rep.unsigned.is_empty() {
                eprintln!(
                    "{} versions or ref moves are not signed by a trusted key (`verify --require-signed` lists them)",
                    rep.unsigned.len()
                );
            }
        }
    }
    let mut json = serde_json::to_value(&rep)?;
    json["required"] = json!(require_signed);
    Ok(SignatureCheck { damage, json })
}
