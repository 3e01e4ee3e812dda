//! Opening a checkpoint: one file, or a directory of files (Hugging Face
//! sharded layout or any other), with its shard index checked.
//!
//! Symlink policy: a symlink to a regular file inside the checkpoint
//! directory is followed (the file is versioned under the link's path), and
//! so is one into the `blobs/` of the Hugging Face cache repository the
//! checkpoint is a snapshot of (`models--org--name/snapshots/REV/`). A
//! symlink that resolves anywhere else, a dangling one, or one to a
//! directory is refused with an error. Other non-regular files (fifos,
//! sockets, devices) are refused too: opening one could block forever.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use super::header::read_header;
use super::select::{Matcher, Selection};
use super::stamp::Stamp;
use super::{Checkpoint, FileKind, Layout, SourceFile};
use crate::{Error, Result};

/// Largest shard index (`*.safetensors.index.json`) read, in bytes.
pub const MAX_INDEX_LEN: u64 = 100_000_000;

/// Suffix of the files parsed as safetensors.
const SAFETENSORS_SUFFIX: &str = ".safetensors";
/// Suffix of Hugging Face shard indexes.
const INDEX_SUFFIX: &str = ".safetensors.index.json";
/// A store directory at the top of a checkpoint, never part of it.
const STORE_DIR: &str = ".tdelta";
/// Name prefixes of repository folders in the Hugging Face cache.
const HF_REPO_PREFIXES: &[&str] = &["models--", "datasets--", "spaces--"];

/// Opens and validates a checkpoint (file or directory) with the default
/// selection (see [`open_with`]).
pub fn open(path: &Path) -> Result<Checkpoint> {
    open_with(path, &Selection::default())
}

/// Opens and validates a checkpoint (file or directory).
///
/// A single file is parsed if its name ends in `.safetensors`, otherwise it
/// is a blob. A directory contributes every regular file under it that
/// `sel` selects, sorted by `/`-separated relative path, and its empty
/// directories; a top-level `.tdelta` store directory, the default skips
/// ([`super::DEFAULT_EXCLUDES`]) and `sel.skip_dirs` are never part of it.
/// Every `*.safetensors.index.json` in it is checked against the shards it
/// names.
pub fn open_with(path: &Path, sel: &Selection) -> Result<Checkpoint> {
    let meta = fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        return open_dir(path, &Matcher::new(sel)?);
    }
    if !meta.is_file() {
        return Err(Error::checkpoint(path, "not a regular file or directory (fifo, socket or device?)"));
    }
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return Err(Error::checkpoint(path, "file name is not valid utf-8"));
    };
    let file = describe(Found { rel: name.to_owned(), path: path.to_path_buf(), meta })?;
    Ok(Checkpoint {
        root: path.to_path_buf(),
        layout: Layout::File,
        files: vec![file],
        empty_dirs: Vec::new(),
        skipped: 0,
    })
}

/// A file the walk selected.
struct Found {
    rel: String,
    path: PathBuf,
    /// Its metadata (of the target, for a symlink).
    meta: fs::Metadata,
}

/// What the walk of a directory found.
#[derive(Default)]
struct Walk {
    files: Vec<Found>,
    empty_dirs: Vec<String>,
    skipped: u64,
}

fn open_dir(root: &Path, matcher: &Matcher) -> Result<Checkpoint> {
    let canonical_root = fs::canonicalize(root).map_err(|e| Error::io(root, e))?;
    let mut found = walk(root, &canonical_root, matcher)?;
    if found.files.is_empty() {
        let why = if found.skipped > 0 {
            format!("no files to store: all {} were left out (default skips, --include, --exclude)", found.skipped)
        } else {
            "directory contains no files".to_string()
        };
        return Err(Error::checkpoint(root, why));
    }
    found.files.sort_by(|a, b| a.rel.cmp(&b.rel));
    found.empty_dirs.sort();
    let files = found.files.into_iter().map(describe).collect::<Result<Vec<_>>>()?;
    for index in files.iter().filter(|f| f.rel_path.ends_with(INDEX_SUFFIX)) {
        check_index(index, &files)?;
    }
    Ok(Checkpoint {
        root: root.to_path_buf(),
        layout: Layout::Directory,
        files,
        empty_dirs: found.empty_dirs,
        skipped: found.skipped,
    })
}

/// Refuses a name that restore could not write back (`FORMAT.md`, "Paths").
fn check_name(path: &Path, rel: &str) -> Result<()> {
    match crate::relpath::problem(rel) {
        Some(why) => Err(Error::checkpoint(
            path,
            format!("cannot store the path `{rel}`: it {why}; rename it or leave it out with --exclude"),
        )),
        None => Ok(()),
    }
}

/// Every selected file under `root`, unsorted, and the empty directories.
fn walk(root: &Path, canonical_root: &Path, matcher: &Matcher) -> Result<Walk> {
    let mut out = Walk::default();
    let hf_blobs = hf_blobs_dir(canonical_root);
    // An explicit stack rather than recursion: depth is the file system's.
    let mut dirs = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = dirs.pop() {
        let mut entries = 0usize;
        for entry in fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
            entries += 1;
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let path = entry.path();
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                return Err(Error::checkpoint(&path, "file name is not valid utf-8"));
            };
            let rel = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
            let file_type = entry.file_type().map_err(|e| Error::io(&path, e))?;
            // Left-out entries are not even resolved: an excluded symlink
            // may point anywhere.
            if matcher.excluded(&rel) {
                out.skipped += count_files(&path, file_type.is_dir());
                continue;
            }
            let meta = if file_type.is_symlink() {
                follow_symlink(&path, canonical_root, hf_blobs.as_deref())?
            } else {
                entry.metadata().map_err(|e| Error::io(&path, e))?
            };
            if meta.is_dir() {
                if file_type.is_symlink() {
                    return Err(Error::checkpoint(
                        &path,
                        "symlink to a directory is not supported; only symlinks to files are followed",
                    ));
                }
                if (prefix.is_empty() && rel == STORE_DIR) || matcher.skipped_dir(&meta) {
                    out.skipped += count_files(&path, true);
                    continue;
                }
                dirs.push((path, rel));
            } else if meta.is_file() {
                if !matcher.included(&rel) {
                    out.skipped += 1;
                    continue;
                }
                check_name(&path, &rel)?;
                out.files.push(Found { rel, path, meta });
            } else {
                return Err(Error::checkpoint(&path, "not a regular file (fifo, socket or device?)"));
            }
        }
        if entries == 0 && !prefix.is_empty() && matcher.included(&prefix) {
            check_name(&dir, &prefix)?;
            out.empty_dirs.push(prefix);
        }
    }
    Ok(out)
}

/// How many files a left-out entry holds (1 for a file; a directory is
/// walked without following symlinks). Unreadable parts count as nothing.
fn count_files(path: &Path, is_dir: bool) -> u64 {
    if !is_dir {
        return 1;
    }
    let mut n = 0;
    let mut dirs = vec![path.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in fs::read_dir(&d).into_iter().flatten().flatten() {
            match entry.file_type() {
                Ok(t) if t.is_dir() => dirs.push(entry.path()),
                _ => n += 1,
            }
        }
    }
    n
}

/// The `blobs/` folder of the Hugging Face cache repository whose
/// `snapshots/` the checkpoint lies in, if it does.
fn hf_blobs_dir(canonical_root: &Path) -> Option<PathBuf> {
    canonical_root.ancestors().find_map(|dir| {
        let repo = dir.parent()?;
        let repo_name = repo.file_name()?.to_str()?;
        let is_repo = dir.file_name()? == "snapshots" && HF_REPO_PREFIXES.iter().any(|p| repo_name.starts_with(p));
        is_repo.then(|| repo.join("blobs"))
    })
}

/// Metadata of a symlink's target, if the target lies inside the root or
/// is a regular file in the cache repository's `blobs/`.
fn follow_symlink(link: &Path, canonical_root: &Path, hf_blobs: Option<&Path>) -> Result<fs::Metadata> {
    let target = fs::canonicalize(link)
        .map_err(|e| Error::checkpoint(link, format!("cannot resolve symlink (dangling?): {e}")))?;
    let meta = fs::metadata(&target).map_err(|e| Error::io(link, e))?;
    let in_blobs = hf_blobs.is_some_and(|b| target.starts_with(b)) && meta.is_file();
    if !target.starts_with(canonical_root) && !in_blobs {
        return Err(Error::checkpoint(
            link,
            format!(
                "symlink points outside the checkpoint directory (to {}); copy the file in instead",
                target.display()
            ),
        ));
    }
    Ok(meta)
}

/// Opens `path` for reading and checks that what was opened is a regular
/// file. The walk already checked this, but the file may have been replaced
/// since: opening a fifo that replaced it must not block forever, so on Unix
/// the open is non-blocking (which changes nothing for regular files).
pub(super) fn open_regular(path: &Path) -> Result<File> {
    let mut options = fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let f = options.open(path).map_err(|e| Error::io(path, e))?;
    let meta = f.metadata().map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(Error::checkpoint(path, "not a regular file (fifo, socket or device?)"));
    }
    Ok(f)
}

/// Parses a `.safetensors` file's header; anything else is a blob.
fn describe(found: Found) -> Result<SourceFile> {
    let Found { rel: rel_path, path, meta } = found;
    let mode = crate::portable::mode(&meta);
    if !rel_path.ends_with(SAFETENSORS_SUFFIX) {
        let stamp = Stamp::of(&meta);
        return Ok(SourceFile { rel_path, path, len: stamp.len, kind: FileKind::Blob, stamp, mode });
    }
    let f = open_regular(&path)?;
    // The file actually opened, not the earlier stat.
    let stamp = Stamp::of(&f.metadata().map_err(|e| Error::io(&path, e))?);
    let header = read_header(&path, &f, stamp.len)?;
    Ok(SourceFile { rel_path, path, len: stamp.len, kind: FileKind::Safetensors(header), stamp, mode })
}

/// The part of a shard index we check; other fields are ignored.
#[derive(Deserialize)]
struct Index {
    weight_map: WeightMap,
}

/// Tensor name to shard path, duplicates refused.
struct WeightMap(BTreeMap<String, String>);

impl<'de> Deserialize<'de> for WeightMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = WeightMap;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`weight_map` to be a json object of tensor name to shard file")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<WeightMap, A::Error> {
                let mut out = BTreeMap::new();
                while let Some((tensor, shard)) = map.next_entry::<String, String>()? {
                    if out.contains_key(&tensor) {
                        return Err(de::Error::custom(format_args!("duplicate tensor `{tensor}` in `weight_map`")));
                    }
                    out.insert(tensor, shard);
                }
                Ok(WeightMap(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Checks that every shard an index names exists in the checkpoint and
/// holds the tensors the index puts in it.
fn check_index(index: &SourceFile, files: &[SourceFile]) -> Result<()> {
    let path = &index.path;
    let f = open_regular(path)?;
    let mut bytes = Vec::new();
    f.take(MAX_INDEX_LEN + 1).read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > MAX_INDEX_LEN {
        return Err(Error::checkpoint(path, format!("shard index is larger than the limit of {MAX_INDEX_LEN} bytes")));
    }
    let parsed: Index = serde_json::from_slice(&bytes)
        .map_err(|e| Error::checkpoint(path, format!("invalid shard index json: {e}")))?;
    // Shard paths are relative to the directory holding the index.
    let base = match index.rel_path.rsplit_once('/') {
        Some((dir, _)) => format!("{dir}/"),
        None => String::new(),
    };
    let mut shards: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (tensor, shard) in &parsed.weight_map.0 {
        if !shards.contains_key(shard.as_str()) {
            check_shard_path(path, tensor, shard)?;
            let rel = format!("{base}{shard}");
            let found = files.binary_search_by(|f| f.rel_path.as_str().cmp(&rel)).ok().and_then(|i| files.get(i));
            let Some(found) = found else {
                return Err(Error::checkpoint(
                    path,
                    format!(
                        "weight_map names shard `{shard}` (for tensor `{tensor}`), which is missing from the directory"
                    ),
                ));
            };
            let FileKind::Safetensors(header) = &found.kind else {
                return Err(Error::checkpoint(
                    path,
                    format!("weight_map names shard `{shard}`, which is not a .safetensors file"),
                ));
            };
            let names = header.tensors.iter().map(|t| t.name.as_str()).collect();
            shards.insert(shard, names);
        }
        let holds = shards.get(shard.as_str()).is_some_and(|names| names.contains(tensor.as_str()));
        if !holds {
            return Err(Error::tensor(
                path,
                tensor,
                format!("weight_map puts it in shard `{shard}`, which has no such tensor"),
            ));
        }
    }
    Ok(())
}

/// A shard must be a plain relative path that stays inside the directory.
fn check_shard_path(index: &Path, tensor: &str, shard: &str) -> Result<()> {
    let problem = if shard.is_empty() {
        Some("is empty")
    } else if shard.starts_with('/') {
        Some("is absolute")
    } else if shard.contains('\\') {
        Some("contains `\\`; use `/` separators")
    } else if shard.split('/').any(|s| s == "..") {
        Some("leaves the checkpoint directory (`..`)")
    } else if shard.split('/').any(|s| s.is_empty() || s == ".") {
        Some("is not a plain relative path (empty or `.` component)")
    } else {
        None
    };
    match problem {
        Some(p) => {
            Err(Error::checkpoint(index, format!("weight_map shard path `{shard}` (for tensor `{tensor}`) {p}")))
        }
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hf_blobs_dir_is_found_only_under_a_cache_repository_snapshot() {
        let found = |p: &str| hf_blobs_dir(Path::new(p));
        for (root, blobs) in [
            ("/c/hub/models--org--name/snapshots/rev", "/c/hub/models--org--name/blobs"),
            ("/c/hub/models--org--name/snapshots/rev/sub", "/c/hub/models--org--name/blobs"),
            ("/c/hub/datasets--org--data/snapshots/rev", "/c/hub/datasets--org--data/blobs"),
        ] {
            assert_eq!(found(root).as_deref(), Some(Path::new(blobs)), "{root}");
        }
        for root in ["/c/hub/models--org--name", "/c/plain/snapshots/rev", "/c/models--x/blobs", "/"] {
            assert_eq!(found(root), None, "{root}");
        }
    }

    #[test]
    fn empty_directories_are_listed_and_skipped_ones_counted() {
        let d = tempfile::tempdir().expect("tempdir");
        let root = d.path();
        for dir in ["empty", "a/b/deep", ".git/objects", "store/packs"] {
            fs::create_dir_all(root.join(dir)).unwrap();
        }
        for f in ["x.bin", "a/y.bin", ".git/HEAD", ".git/objects/o", "store/config", "store/packs/p"] {
            fs::write(root.join(f), f).unwrap();
        }
        let sel = Selection { skip_dirs: vec![root.join("store")], ..Selection::default() };
        let c = open_with(root, &sel).expect("open");
        let names: Vec<&str> = c.files.iter().map(|f| f.rel_path.as_str()).collect();
        assert_eq!(names, ["a/y.bin", "x.bin"]);
        assert_eq!(c.empty_dirs, ["a/b/deep", "empty"]);
        assert_eq!(c.skipped, 4);
    }
}
