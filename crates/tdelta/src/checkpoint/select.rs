//! Which files of a checkpoint directory are stored: default skips, the
//! store's own directory, and include/exclude glob patterns matched against
//! `/`-separated paths relative to the checkpoint root.

use std::fs;
use std::path::PathBuf;

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::{Error, Result, portable};

/// Always left out of a directory checkpoint: version-control data and the
/// Hugging Face download cache that `--local-dir` downloads leave behind.
pub const DEFAULT_EXCLUDES: &[&str] = &["**/.git", "**/.cache/huggingface"];

/// What to store of a checkpoint directory (ignored for a single file).
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// When not empty, only files matching one of these patterns are
    /// stored (`*` matches across `/` too; `**`, `?`, `[ab]`, `{a,b}`).
    pub include: Vec<String>,
    /// Files and directories matching one of these are left out (a
    /// directory with everything under it); exclusion wins over inclusion.
    pub exclude: Vec<String>,
    /// Directories never stored, wherever they appear in the tree (the
    /// store's own directory).
    pub skip_dirs: Vec<PathBuf>,
}

/// A compiled [`Selection`].
#[derive(Debug)]
pub(super) struct Matcher {
    include: Option<GlobSet>,
    exclude: GlobSet,
    /// `(dev, ino)` of the skipped directories that exist.
    skip: Vec<(u64, u64)>,
}

fn glob_set<'a>(what: &str, patterns: impl IntoIterator<Item = &'a str>) -> Result<GlobSet> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        // `dir/` names a directory; the path it is matched against has no
        // trailing slash.
        let trimmed = p.strip_suffix('/').filter(|t| !t.is_empty()).unwrap_or(p);
        let g = Glob::new(trimmed)
            .map_err(|e| Error::InvalidArgument(format!("invalid {what} pattern `{p}`: {}", e.kind())))?;
        b.add(g);
    }
    b.build().map_err(|e| Error::InvalidArgument(format!("invalid {what} patterns: {e}")))
}

impl Matcher {
    pub(super) fn new(sel: &Selection) -> Result<Matcher> {
        let include = if sel.include.is_empty() {
            None
        } else {
            Some(glob_set("include", sel.include.iter().map(String::as_str))?)
        };
        let exclude =
            glob_set("exclude", DEFAULT_EXCLUDES.iter().copied().chain(sel.exclude.iter().map(String::as_str)))?;
        let skip =
            sel.skip_dirs.iter().filter_map(|d| fs::metadata(d).ok()).filter_map(|m| portable::file_id(&m)).collect();
        Ok(Matcher { include, exclude, skip })
    }

    /// A file or directory left out with everything under it.
    pub(super) fn excluded(&self, rel: &str) -> bool {
        self.exclude.is_match(rel)
    }

    /// A file (or empty directory) the include patterns let in.
    pub(super) fn included(&self, rel: &str) -> bool {
        self.include.as_ref().is_none_or(|g| g.is_match(rel))
    }

    /// One of the directories never stored.
    pub(super) fn skipped_dir(&self, meta: &fs::Metadata) -> bool {
        portable::file_id(meta).is_some_and(|id| self.skip.contains(&id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(include: &[&str], exclude: &[&str]) -> Matcher {
        let sel = Selection {
            include: include.iter().map(|s| s.to_string()).collect(),
            exclude: exclude.iter().map(|s| s.to_string()).collect(),
            skip_dirs: Vec::new(),
        };
        Matcher::new(&sel).expect("patterns")
    }

    #[test]
    fn default_skips_apply_at_any_depth() {
        let m = matcher(&[], &[]);
        for skip in [".git", "sub/.git", ".cache/huggingface", "a/.cache/huggingface"] {
            assert!(m.excluded(skip), "{skip}");
        }
        for keep in ["model.safetensors", ".gitattributes", ".cache", ".cache/other", "git/x"] {
            assert!(!m.excluded(keep), "{keep}");
            assert!(m.included(keep), "{keep}");
        }
    }

    #[test]
    fn patterns_include_and_exclude() {
        let m = matcher(&["*.safetensors", "config.json"], &["optimizer/", "*.tmp"]);
        assert!(m.included("model.safetensors") && m.included("sub/model.safetensors"));
        assert!(m.included("config.json") && !m.included("sub/config.json") && !m.included("README.md"));
        assert!(m.excluded("optimizer") && m.excluded("x.tmp") && m.excluded("a/b/x.tmp"));
        assert!(!m.excluded("optimizer.json"));
    }

    #[test]
    fn a_bad_pattern_is_named() {
        let sel = Selection { exclude: vec!["a[".into()], ..Selection::default() };
        let e = Matcher::new(&sel).expect_err("bad glob").to_string();
        assert!(e.contains("invalid exclude pattern `a[`"), "{e}");
    }
}
