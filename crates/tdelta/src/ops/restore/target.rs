//! Where a restore writes: the output path normalized, the paths it must
//! never touch, and the staging directories that make each file appear
//! whole or not at all.
//!
//! A staging directory is created beside its target, named
//! `.<name>.tdelta-partial-<pid>-<random>`, and holds a marker file that its
//! restore keeps locked. A later restore removes such a directory only when
//! the marker says it is tdelta's and nobody holds its lock (its restore
//! died), so a user's file or directory with a similar name is never
//! touched.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::IoContext;
use crate::store::fsutil;
use crate::{Error, OutputRefusal, Result};

/// What a staging directory's name contains between the target's name and
/// the pid.
pub(super) const STAGING_TAG: &str = ".tdelta-partial-";
/// The marker file inside a staging directory.
const MARKER: &str = "TDELTA-PARTIAL";
/// The marker's content.
const MARKER_TEXT: &str = "tdelta restore staging directory; removed by the next restore once its writer is gone\n";

/// `out` made absolute, with `.` and `..` resolved against the real
/// directories (symlinks followed) except the last component, which is
/// never followed: a symlink at OUT is itself the output.
pub(super) fn normalize(out: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(out).at(out)?;
    let comps: Vec<Component> = abs.components().collect();
    let mut cur = PathBuf::new();
    for (i, c) in comps.iter().enumerate() {
        match c {
            Component::Prefix(_) | Component::RootDir => cur.push(c),
            Component::CurDir => {}
            Component::ParentDir => {
                cur.pop();
            }
            Component::Normal(n) => {
                cur.push(n);
                // A `..` must climb out of the directory a link points to,
                // as the kernel does.
                let last = comps[i + 1..].iter().all(|c| matches!(c, Component::CurDir));
                if !last && fs::symlink_metadata(&cur).is_ok_and(|m| m.file_type().is_symlink()) {
                    cur = fs::canonicalize(&cur).at(&cur)?;
                }
            }
        }
    }
    Ok(cur)
}

/// The paths a restore must never write: the store and everything in it,
/// and `/`.
#[derive(Debug)]
pub(super) struct Guard {
    store: Vec<PathBuf>,
}

impl Guard {
    pub(super) fn new(store_root: &Path) -> Result<Guard> {
        let mut store = vec![normalize(store_root)?];
        if let Ok(c) = fs::canonicalize(store_root) {
            store.push(c);
        }
        Ok(Guard { store })
    }

    /// Refuses `path` (normalized) if writing it could touch the store.
    pub(super) fn check(&self, path: &Path) -> Result<()> {
        if path.parent().is_none() {
            return Err(super::refused(path, OutputRefusal::Root));
        }
        if let Some(s) = self.store.iter().find(|s| path.starts_with(s)) {
            return Err(super::refused(path, OutputRefusal::InStore { store: s.clone() }));
        }
        Ok(())
    }
}

/// The kind of entry at `path`, without following a symlink there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Existing {
    Nothing,
    Dir,
    File,
    Symlink,
    Other,
}

pub(super) fn existing(path: &Path) -> Result<Existing> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Existing::Nothing),
        Err(e) => Err(Error::io(path, e)),
        Ok(m) if m.file_type().is_symlink() => Ok(Existing::Symlink),
        Ok(m) if m.is_dir() => Ok(Existing::Dir),
        Ok(m) if m.is_file() => Ok(Existing::File),
        Ok(_) => Ok(Existing::Other),
    }
}

/// A fresh staging directory, locked for the life of the restore and
/// removed when dropped.
#[derive(Debug)]
pub(super) struct Staging {
    dir: PathBuf,
    _marker: File,
}

impl Staging {
    /// Creates `parent/.<name>.tdelta-partial-<pid>-<random>`.
    pub(super) fn create(parent: &Path, name: &str) -> Result<Staging> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let pid = std::process::id();
        for _ in 0..16 {
            let seed = format!(
                "{pid} {} {:?} {:?}",
                COUNTER.fetch_add(1, Ordering::Relaxed),
                std::time::SystemTime::now(),
                std::thread::current().id()
            );
            let rand = xxhash_rust::xxh3::xxh3_64(seed.as_bytes());
            let dir = parent.join(format!(".{name}{STAGING_TAG}{pid}-{rand:016x}"));
            match fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io(&dir, e)),
            }
            let marker_path = dir.join(MARKER);
            let made =
                OpenOptions::new().write(true).read(true).create_new(true).open(&marker_path).and_then(|mut f| {
                    f.lock()?;
                    f.write_all(MARKER_TEXT.as_bytes())?;
                    Ok(f)
                });
            return match made {
                Ok(marker) => Ok(Staging { dir, _marker: marker }),
                Err(e) => {
                    let _ = fs::remove_dir_all(&dir);
                    Err(Error::io(marker_path, e))
                }
            };
        }
        let taken = std::io::Error::new(std::io::ErrorKind::AlreadyExists, "every staging directory name tried exists");
        Err(Error::io(parent, taken))
    }

    pub(super) fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Removes, in `dir`, the staging directories of restores that died, and
/// only those: a directory named like one, holding the marker with its
/// exact text, whose lock nobody holds. Best effort: anything else stays.
pub(super) fn clean_leftovers(dir: &Path) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for ent in rd.flatten() {
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        if !is_staging_name(name) || !ent.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let path = ent.path();
        let Ok(mut marker) = OpenOptions::new().read(true).open(path.join(MARKER)) else { continue };
        if !marker.metadata().is_ok_and(|m| m.is_file() && m.len() == MARKER_TEXT.len() as u64) {
            continue;
        }
        let mut text = String::new();
        if marker.read_to_string(&mut text).is_err() || text != MARKER_TEXT || marker.try_lock().is_err() {
            continue;
        }
        if fs::remove_dir_all(&path).is_ok() {
            let _ = fsutil::sync_dir(dir);
        }
    }
}

/// `.<name>.tdelta-partial-<pid>-<16 hex digits>`.
fn is_staging_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('.') else { return false };
    let Some((head, rand)) = rest.rsplit_once('-') else { return false };
    let Some((head, pid)) = head.rsplit_once('-') else { return false };
    rand.len() == 16
        && rand.bytes().all(|b| b.is_ascii_hexdigit())
        && !pid.is_empty()
        && pid.bytes().all(|b| b.is_ascii_digit())
        && format!("{head}-").ends_with(STAGING_TAG)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_resolves_dots_and_keeps_the_last_link() {
        let dir = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(dir.path()).unwrap();
        fs::create_dir_all(root.join("a/b")).unwrap();
        std::os::unix::fs::symlink(root.join("a/b"), root.join("l")).unwrap();
        assert_eq!(normalize(&root.join("a/b/..")).unwrap(), root.join("a"));
        assert_eq!(normalize(&root.join("a/./b/")).unwrap(), root.join("a/b"));
        assert_eq!(normalize(&root.join("l/..")).unwrap(), root.join("a"));
        assert_eq!(normalize(&root.join("l")).unwrap(), root.join("l"));
        assert_eq!(normalize(&root.join("l/x")).unwrap(), root.join("a/b/x"));
        assert_eq!(normalize(&root.join("new/x")).unwrap(), root.join("new/x"));
    }

    #[test]
    fn guard_refuses_the_store_its_insides_and_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(dir.path()).unwrap();
        fs::create_dir_all(root.join("s")).unwrap();
        let g = Guard::new(&root.join("s")).unwrap();
        for bad in [root.join("s"), root.join("s/x"), PathBuf::from("/")] {
            assert!(g.check(&bad).is_err(), "{}", bad.display());
        }
        g.check(&root).unwrap();
        g.check(&root.join("s2")).unwrap();
    }

    #[test]
    fn only_dead_staging_directories_with_the_marker_are_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let live = Staging::create(d, "out").unwrap();
        // What a killed restore leaves: the directory and its marker, with
        // the lock gone with the process.
        let dead = d.join(".out.tdelta-partial-4242-00112233aabbccdd");
        fs::create_dir(&dead).unwrap();
        fs::write(dead.join(MARKER), MARKER_TEXT).unwrap();
        fs::write(dead.join("file"), b"x").unwrap();
        let fake = d.join(".out.tdelta-partial-1-0123456789abcdef");
        fs::create_dir(&fake).unwrap();
        fs::write(fake.join(MARKER), b"mine\n").unwrap();
        fs::create_dir(d.join("out.tdelta-partial")).unwrap();
        clean_leftovers(d);
        assert!(!dead.exists());
        assert!(live.path().join(MARKER).is_file());
        assert!(fake.is_dir() && d.join("out.tdelta-partial").is_dir());
        let dead_path = live.path();
        assert!(is_staging_name(dead_path.file_name().unwrap().to_str().unwrap()));
        assert!(!is_staging_name("out.tdelta-partial"));
    }
}
