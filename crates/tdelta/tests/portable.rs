//! The engine and the dev tooling build on non-Unix targets: no
//! `std::os::unix` (or `std::os::fd`) outside an item or block under
//! `#[cfg(unix)]` (or a Unix `target_os`) in their non-test sources.

use std::path::{Path, PathBuf};

/// Whether an attribute line limits what follows to Unix systems.
fn unix_only(attr: &str) -> bool {
    let a = attr.trim();
    a.starts_with("#[cfg(")
        && !a.starts_with("#[cfg(not(")
        && (a.contains("unix") || a.contains("target_os = \"linux\"") || a.contains("target_os = \"macos\""))
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// Whether line `i` is under a Unix-only `cfg`: on the line's own
/// statement, or on one of the items and blocks that enclose it.
fn guarded(lines: &[&str], i: usize) -> bool {
    let (mut j, mut level) = (i, indent(lines[i]));
    loop {
        let mut k = j;
        while k > 0 && lines[k - 1].trim_start().starts_with("#[") {
            k -= 1;
            if unix_only(lines[k]) {
                return true;
            }
        }
        let Some(p) = (0..j).rev().find(|&p| !lines[p].trim().is_empty() && indent(lines[p]) < level) else {
            return false;
        };
        (j, level) = (p, indent(lines[p]));
    }
}

/// The uses of Unix-only modules in `text` that no `cfg` guards, as
/// 1-based line numbers. Test modules at the end of a file are skipped.
fn unguarded(text: &str) -> Vec<usize> {
    let mut lines: Vec<&str> = text.lines().collect();
    if let Some(t) = lines.windows(2).position(|w| w[0].trim() == "#[cfg(test)]" && w[1].starts_with("mod ")) {
        lines.truncate(t);
    }
    (0..lines.len())
        .filter(|&i| {
            let l = lines[i].trim_start();
            !l.starts_with("//") && (l.contains("std::os::unix") || l.contains("std::os::fd")) && !guarded(&lines, i)
        })
        .map(|i| i + 1)
        .collect()
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if p.is_dir() {
            sources(&p, out);
        } else if name.ends_with(".rs")
            && !name.starts_with("tests")
            && !name.starts_with("testutil")
            && !name.starts_with("testdata")
        {
            out.push(p);
        }
    }
}

#[test]
fn the_scan_tells_guarded_uses_from_unguarded_ones() {
    let text = "use std::os::unix::fs::FileExt;\n\
                fn a() {\n    #[cfg(unix)]\n    {\n        use std::os::unix::fs::MetadataExt;\n    }\n}\n\
                #[cfg(unix)]\nfn b() {\n    let _ = std::os::unix::fs::symlink;\n}\n\
                fn c() {\n    #[cfg(unix)]\n    return std::os::unix::fs::FileExt::read_exact_at(f, b, 0);\n}\n\
                #[cfg(not(unix))]\nfn d() {\n    use std::os::fd::AsRawFd;\n}\n\
                // std::os::unix in a comment\n\
                #[cfg(test)]\nmod tests {\n    use std::os::unix::fs::symlink;\n}\n";
    assert_eq!(unguarded(text), vec![1, 18]);
}

#[test]
fn engine_and_dev_sources_use_unix_apis_only_under_cfg_unix() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    sources(&root.join("src"), &mut files);
    sources(&root.join("../tdelta-dev/src"), &mut files);
    assert!(files.len() > 20, "found only {} source files", files.len());
    let bad: Vec<String> = files
        .iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            unguarded(&text).into_iter().map(move |n| format!("{}:{n}", f.display()))
        })
        .collect();
    assert!(bad.is_empty(), "Unix-only APIs outside #[cfg(unix)]: {bad:?}");
}
