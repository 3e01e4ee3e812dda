//! The remotes a local store knows: `STORE/remotes`, a framed JSON file
//! (magic `TDREMOTE`, version 1) holding each remote's name, URL, optional
//! endpoint, whether it is the default, and the remote refs last seen
//! (`tracking`). Never a credential: those come from the environment.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::backend::PutMode;
use crate::store::fsutil;
use crate::{Error, Hash, Result, Store};

const MAGIC: &[u8; 8] = b"TDREMOTE";
const VERSION: u32 = 1;
/// Largest `remotes` file read.
const MAX_BYTES: u64 = 16 << 20;

/// One remote of a store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remote {
    /// Its name (`origin`).
    pub name: String,
    /// Where it is: `s3://bucket/prefix`, `file:///path`.
    pub url: String,
    /// S3 endpoint of an S3-compatible service, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The remote that `push`/`fetch`/`pull` use when none is named.
    #[serde(default)]
    pub default: bool,
    /// The remote's refs (and `HEAD`) as last fetched or pushed, as hex ids.
    #[serde(default)]
    pub tracking: BTreeMap<String, String>,
}

impl Remote {
    /// The tracked remote refs, parsed.
    pub fn tracked(&self) -> Vec<(String, Hash)> {
        self.tracking.iter().filter_map(|(k, v)| v.parse().ok().map(|h| (k.clone(), h))).collect()
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Remotes {
    pub remotes: Vec<Remote>,
}

/// The store object holding the remotes.
const OBJECT: &str = "remotes";

fn path(store: &Store) -> std::path::PathBuf {
    store.backend().locate(OBJECT)
}

/// Checks a remote name: letters, digits, `.`, `_`, `-`.
fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', '-'])
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "invalid remote name `{name}`; use letters, digits, `.`, `_` and `-` (up to 64)"
        )))
    }
}

pub(crate) fn read(store: &Store) -> Result<Remotes> {
    let p = path(store);
    let bytes = match store.backend().get(OBJECT, MAX_BYTES) {
        Ok((b, _)) => b,
        Err(Error::NotFound { .. }) => return Ok(Remotes::default()),
        Err(e) => return Err(e),
    };
    let framed = fsutil::unframe(&p, &bytes, MAGIC, VERSION, tdelta_format::FileKind::Remotes)?;
    serde_json::from_slice(framed.body).map_err(|e| Error::corrupt(&p, format!("remotes file: {e}")))
}

/// Writes the object whole through the store's backend (locally: temp
/// file, fsync, rename); the caller holds the store's lease.
pub(crate) fn write(store: &Store, remotes: &Remotes) -> Result<()> {
    let body = serde_json::to_vec_pretty(remotes).map_err(|e| Error::Internal(e.to_string()))?;
    store.backend().put(OBJECT, &fsutil::frame(MAGIC, VERSION, 0, &body), PutMode::Overwrite)?;
    Ok(())
}

/// Every remote of the store, in the order they were added.
pub fn list(store: &Store) -> Result<Vec<Remote>> {
    Ok(read(store)?.remotes)
}

/// The remote called `name`, or the default one (the only one, if there
/// is just one).
pub fn find(store: &Store, name: Option<&str>) -> Result<Remote> {
    let all = read(store)?.remotes;
    let names = || all.iter().map(|r| r.name.clone()).collect::<Vec<_>>();
    match name {
        Some(n) => all.iter().find(|r| r.name == n).cloned().ok_or_else(|| Error::InvalidChoice {
            what: "remote".into(),
            value: n.to_string(),
            valid: names(),
        }),
        None => {
            if let Some(r) = all.iter().find(|r| r.default) {
                return Ok(r.clone());
            }
            match all.as_slice() {
                [one] => Ok(one.clone()),
                _ => Err(Error::NoDefaultRemote { remotes: names() }),
            }
        }
    }
}

/// Adds a remote (checking its URL parses), optionally as the default.
pub fn add(store: &Store, name: &str, url: &str, endpoint: Option<&str>, default: bool) -> Result<Remote> {
    validate_name(name)?;
    // Refuses bad URLs and http endpoints off loopback before saving.
    let opts = crate::backend::object::RemoteOptions { endpoint: endpoint.map(str::to_string) };
    if !url.starts_with("file://") {
        crate::backend::object::ObjectStoreBackend::open(url, &opts)?;
    } else if !url["file://".len()..].starts_with('/') {
        return Err(Error::InvalidArgument(format!("remote url `{url}`: use an absolute path: file:///path")));
    }
    if url.contains('@') && url.starts_with("s3://") {
        return Err(Error::InvalidArgument(
            "remote url: credentials do not belong in the url; use AWS_* variables".into(),
        ));
    }
    let _txn = store.begin_write()?;
    let mut all = read(store)?;
    if all.remotes.iter().any(|r| r.name == name) {
        return Err(Error::AlreadyExists { what: format!("remote `{name}`") });
    }
    if default {
        for r in &mut all.remotes {
            r.default = false;
        }
    }
    let remote = Remote {
        name: name.to_string(),
        url: url.trim_end_matches('/').to_string(),
        endpoint: endpoint.map(str::to_string),
        default,
        tracking: BTreeMap::new(),
    };
    all.remotes.push(remote.clone());
    write(store, &all)?;
    Ok(remote)
}

/// Removes a remote (and what was tracked of it).
pub fn remove(store: &Store, name: &str) -> Result<Remote> {
    let _txn = store.begin_write()?;
    let mut all = read(store)?;
    let Some(i) = all.remotes.iter().position(|r| r.name == name) else {
        return Err(Error::InvalidChoice {
            what: "remote".into(),
            value: name.to_string(),
            valid: all.remotes.iter().map(|r| r.name.clone()).collect(),
        });
    };
    let r = all.remotes.remove(i);
    write(store, &all)?;
    Ok(r)
}

/// Records what the remote's refs were seen pointing to. The caller holds
/// the store's lock.
pub(crate) fn set_tracking(store: &Store, name: &str, refs: &[(String, Hash)], replace: bool) -> Result<()> {
    let mut all = read(store)?;
    if let Some(r) = all.remotes.iter_mut().find(|r| r.name == name) {
        if replace {
            r.tracking.clear();
        }
        for (k, v) in refs {
            r.tracking.insert(k.clone(), v.to_string());
        }
        write(store, &all)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::InitOptions;

    #[test]
    fn add_list_remove_and_default() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::init(&d.path().join("s"), &InitOptions::default()).unwrap();
        assert!(list(&store).unwrap().is_empty());
        let r = format!("file://{}", d.path().join("r").display());
        add(&store, "origin", &r, None, false).unwrap();
        assert_eq!(find(&store, None).unwrap().name, "origin", "the only remote is the default");
        add(&store, "backup", &r, Some("http://127.0.0.1:9"), true).unwrap();
        assert_eq!(find(&store, None).unwrap().name, "backup");
        let e = add(&store, "origin", &r, None, false).unwrap_err();
        assert!(e.to_string().contains("already exists"), "{e}");
        let e = find(&store, Some("nope")).unwrap_err();
        assert!(e.to_string().contains("valid values are: origin, backup"), "{e}");
        remove(&store, "backup").unwrap();
        assert_eq!(list(&store).unwrap().len(), 1);
        add(&store, "third", &r, None, false).unwrap();
        let e = find(&store, None).unwrap_err();
        assert!(
            matches!(&e, Error::NoDefaultRemote { remotes } if remotes == &["origin", "third"]),
            "two remotes, neither the default: {e}"
        );
        assert_eq!(e.kind(), crate::ErrorKind::NotFound);
        assert_eq!(e.to_string(), "no remote named and no default one; the store has: origin, third");
        remove(&store, "third").unwrap();
        remove(&store, "origin").unwrap();
        let e = find(&store, None).unwrap_err();
        assert!(matches!(&e, Error::NoDefaultRemote { remotes } if remotes.is_empty()), "{e}");
        assert_eq!(e.to_string(), "no remote named and the store has none");
        add(&store, "origin", &r, None, false).unwrap();
        let e = add(&store, "bad name", &r, None, false).unwrap_err();
        assert!(e.to_string().contains("invalid remote name"), "{e}");
        let bytes = std::fs::read(store.root().join("remotes")).unwrap();
        assert_eq!(&bytes[..8], MAGIC);
    }
}
