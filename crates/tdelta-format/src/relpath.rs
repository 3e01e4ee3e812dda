//! The one rule for the paths a directory version names (`FORMAT.md`,
//! "Paths"): pack refuses to store what restore could not write back,
//! verify reports it as damage, restore refuses it.

use std::collections::BTreeSet;

/// What is wrong with one `/`-separated relative path, if anything.
pub fn problem(rel: &str) -> Option<&'static str> {
    if rel.is_empty() {
        Some("is empty")
    } else if rel.contains('\0') {
        Some("contains a nul byte")
    } else if rel.contains('\\') {
        Some("contains `\\`, which tdelta cannot restore (paths are `/`-separated)")
    } else if rel.starts_with('/') {
        Some("is absolute")
    } else if rel.split('/').any(|c| c == "..") {
        Some("leaves the directory (`..`)")
    } else if rel.split('/').any(|c| c.is_empty() || c == ".") {
        Some("is not a plain relative path (empty or `.` component)")
    } else {
        None
    }
}

/// Checks every path of a directory version: each one alone, then that no
/// name is both a file and a directory (a file that another path lies
/// under, or a file also listed as an empty directory) and none is listed
/// twice. Returns the first problem as a message naming the path.
pub fn check_tree<'a>(
    files: impl IntoIterator<Item = &'a str>,
    empty_dirs: impl IntoIterator<Item = &'a str>,
) -> Result<(), String> {
    let files: Vec<&str> = files.into_iter().collect();
    let dirs: Vec<&str> = empty_dirs.into_iter().collect();
    let mut file_set = BTreeSet::new();
    for &p in &files {
        if let Some(why) = problem(p) {
            return Err(format!("manifest names an unsafe path `{}`: it {why}", p.escape_debug()));
        }
        if !file_set.insert(p) {
            return Err(format!("manifest lists `{p}` twice"));
        }
    }
    let mut dir_set = BTreeSet::new();
    for &d in &dirs {
        if let Some(why) = problem(d) {
            return Err(format!("manifest names an unsafe directory `{}`: it {why}", d.escape_debug()));
        }
        if file_set.contains(d) {
            return Err(format!("manifest names `{d}` both as a file and as a directory"));
        }
        if !dir_set.insert(d) {
            return Err(format!("manifest lists the empty directory `{d}` twice"));
        }
    }
    for &p in files.iter().chain(&dirs) {
        let mut at = 0;
        while let Some(i) = p[at..].find('/') {
            let parent = &p[..at + i];
            if file_set.contains(parent) {
                return Err(format!("manifest names `{parent}` both as a file and as a directory (of `{p}`)"));
            }
            at += i + 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_relative_paths_pass() {
        for ok in ["a", "a/b.json", "sub/dir/model.safetensors", "a b/ü.txt", "..a", "a.."] {
            assert_eq!(problem(ok), None, "{ok}");
        }
    }

    #[test]
    fn every_unsafe_form_is_named() {
        let cases = [
            ("", "is empty"),
            ("a\0b", "nul"),
            ("back\\slash.txt", "`\\`"),
            ("/etc/passwd", "absolute"),
            ("../../escape.txt", "`..`"),
            ("a/../../x", "`..`"),
            ("./x", "`.` component"),
            ("a//b", "empty or `.`"),
            ("a/", "empty or `.`"),
        ];
        for (p, want) in cases {
            let why = problem(p).unwrap_or_else(|| panic!("`{p}` passed"));
            assert!(why.contains(want), "{p}: {why}");
        }
    }

    #[test]
    fn clashes_and_duplicates_are_refused() {
        assert_eq!(check_tree(["a/b", "c"], ["d", "a/e"]), Ok(()));
        let bad: [(&[&str], &[&str], &str); 5] = [
            (&["a", "a/b"], &[], "`a` both as a file and as a directory (of `a/b`)"),
            (&["x", "x/y/z"], &[], "`x` both as a file"),
            (&["a"], &["a"], "`a` both as a file and as a directory"),
            (&["a"], &["a/sub"], "`a` both as a file"),
            (&["a", "a"], &[], "lists `a` twice"),
        ];
        for (files, dirs, want) in bad {
            let e = check_tree(files.iter().copied(), dirs.iter().copied()).expect_err(want);
            assert!(e.contains(want), "{e}");
        }
        let e = check_tree(["ok", "../up"], []).expect_err("escape");
        assert!(e.contains("unsafe path `../up`"), "{e}");
        let e = check_tree(["ok"], ["/abs"]).expect_err("absolute dir");
        assert!(e.contains("unsafe directory `/abs`"), "{e}");
    }
}
