//! `tdelta bench` through the real binary, on small generated series.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use tdelta::DType;
use tdelta_dev::synth::{SeriesSpec, write_series};

/// The CSV columns the documentation promises, in order: the bulleted
/// list of the doc comment on `CSV_COLUMNS` in `render.rs`.
fn documented_columns() -> Vec<&'static str> {
    let src = include_str!("../crates/tdelta-dev/src/bench/render.rs");
    let doc = &src[..src.find("pub const CSV_COLUMNS").expect("CSV_COLUMNS in render.rs")];
    let cols: Vec<&str> = doc
        .lines()
        .filter_map(|l| l.trim().strip_prefix("/// - "))
        .filter_map(|l| l.split_once("`:").map(|(names, _)| names))
        // A bullet may name several columns: `a`, `b`, `c`: ...
        .flat_map(|names| names.split(',').map(|n| n.trim().trim_matches('`')))
        .collect();
    assert!(cols.len() > 10, "the column list of render.rs was not found: {cols:?}");
    cols
}

const DEFAULTS: &[&str] = &[
    "raw",
    "zstd:3",
    "zipnn",
    "bitx",
    "tdelta:near:3",
    "tdelta:chain:3",
    "tdelta:chain:8",
    "tdelta:keyframe:4",
    "tdelta:root",
    "tdelta:full",
    "tdelta:int8:root",
    "tdelta:int4:root",
];

fn is_lossy(name: &str) -> bool {
    name.contains(":int")
}

fn tdelta(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tdelta")).args(args).env_remove("TDELTA_STORE").output().expect("run tdelta")
}

fn ok(args: &[&str]) -> String {
    let o = tdelta(args);
    assert!(o.status.success(), "tdelta {args:?} failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A small XML well-formedness check: balanced, properly nested tags,
/// quoted attributes, no stray `<` or bare `&` in text. Returns the
/// start tags (name and attribute text) in document order.
fn xml_tags(doc: &str) -> Vec<(String, String)> {
    let mut stack: Vec<String> = Vec::new();
    let mut tags = Vec::new();
    let mut rest = doc.trim();
    assert!(rest.starts_with('<'), "does not start with a tag");
    let check_text = |t: &str| {
        let mut r = t;
        while let Some(i) = r.find('&') {
            let end = r[i..].find(';').unwrap_or_else(|| panic!("bare & in text {t:?}"));
            let ent = &r[i + 1..i + end];
            assert!(
                ["amp", "lt", "gt", "quot", "apos"].contains(&ent) || ent.starts_with('#'),
                "unknown entity &{ent};"
            );
            r = &r[i + end..];
        }
    };
    while !rest.is_empty() {
        let Some(open) = rest.find('<') else {
            check_text(rest);
            assert!(stack.is_empty(), "unclosed tags {stack:?}");
            break;
        };
        check_text(&rest[..open]);
        rest = &rest[open..];
        if rest.starts_with("<!--") {
            let end = rest.find("-->").expect("unterminated comment");
            rest = &rest[end + 3..];
            continue;
        }
        if rest.starts_with("<?") {
            let end = rest.find("?>").expect("unterminated declaration");
            rest = &rest[end + 2..];
            continue;
        }
        // Find the tag end, skipping quoted attribute values.
        let mut quote = None;
        let mut end = None;
        for (i, c) in rest.char_indices().skip(1) {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), '<') => panic!("< inside an attribute: {}", &rest[..i]),
                (Some(_), _) => {}
                (None, '"' | '\'') => quote = Some(c),
                (None, '<') => panic!("unterminated tag: {}", &rest[..i]),
                (None, '>') => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let end = end.expect("unterminated tag");
        let inner = &rest[1..end];
        rest = &rest[end + 1..];
        if let Some(name) = inner.strip_prefix('/') {
            let top = stack.pop().unwrap_or_else(|| panic!("close </{name}> without open"));
            assert_eq!(top, name.trim(), "mismatched close tag");
            continue;
        }
        let self_closing = inner.ends_with('/');
        let body = inner.trim_end_matches('/');
        let name_end = body.find(char::is_whitespace).unwrap_or(body.len());
        let name = &body[..name_end];
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ':'),
            "bad tag name {name:?}"
        );
        // Attributes: name="value" pairs.
        let mut attrs = body[name_end..].trim();
        while !attrs.is_empty() {
            let eq = attrs.find('=').unwrap_or_else(|| panic!("attribute without value in <{name}>"));
            let q = attrs[eq + 1..].chars().next().expect("value");
            assert!(q == '"' || q == '\'', "unquoted attribute in <{name}>");
            let close = attrs[eq + 2..].find(q).expect("unterminated value") + eq + 2;
            check_text(&attrs[eq + 2..close]);
            attrs = attrs[close + 1..].trim_start();
        }
        tags.push((name.to_string(), body[name_end..].to_string()));
        if !self_closing {
            stack.push(name.to_string());
        }
        if stack.is_empty() {
            assert!(rest.trim().is_empty(), "content after the root element");
            break;
        }
    }
    assert!(stack.is_empty(), "unclosed tags {stack:?}");
    tags
}

#[test]
fn xml_checker_catches_errors() {
    xml_tags(r#"<svg a="1"><g class="x">t &amp; u</g><rect/></svg>"#);
    for bad in ["<svg><g></svg>", "<svg>a & b</svg>", "<svg a=1></svg>", "<svg></g>", "<svg><g></g>"] {
        assert!(std::panic::catch_unwind(|| xml_tags(bad)).is_err(), "{bad}");
    }
}

#[test]
fn default_strategies_on_a_generated_series() {
    let tmp = tempfile::tempdir().unwrap();
    let (csv, json, svg) = (tmp.path().join("b.csv"), tmp.path().join("b.json"), tmp.path().join("b.svg"));
    let work = tmp.path().join("work");
    let out = ok(&[
        "bench",
        "--generate",
        "--versions",
        "4",
        "--size",
        "1M",
        "-q",
        "--dir",
        s(&work),
        "--csv",
        s(&csv),
        "--json-out",
        s(&json),
        "--svg",
        s(&svg),
    ]);
    // The table: one line per strategy, each bit-exact.
    for name in DEFAULTS {
        let line = out.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name}: {out}"));
        let expect = if is_lossy(name) { " lossy " } else { " yes " };
        assert!(line.contains(expect), "{line}");
    }
    assert!(out.contains("series: 4 versions"), "{out}");
    assert!(out.contains("bytes added by each version"), "{out}");

    // JSON.
    let j: serde_json::Value = serde_json::from_str(&fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(j["versions"], 4);
    let raw = j["raw_bytes"].as_u64().unwrap();
    let strategies = j["strategies"].as_array().unwrap();
    let names: Vec<&str> = strategies.iter().map(|r| r["strategy"].as_str().unwrap()).collect();
    assert_eq!(names, DEFAULTS);
    for r in strategies {
        let name = r["strategy"].as_str().unwrap();
        assert_eq!(r["verified"], true, "{name}");
        assert_eq!(r["lossy"], is_lossy(name), "{name}");
        if is_lossy(name) {
            let e = r["rel_l2_err"].as_f64().unwrap();
            assert!(e > 0.0 && e < 0.05, "{name}: {e}");
            assert!(r["max_abs_err"].as_f64().unwrap() > 0.0, "{name}");
        } else {
            assert!(r["rel_l2_err"].is_null() && r["max_abs_err"].is_null(), "{name}");
        }
        let ratio = r["ratio"].as_f64().unwrap();
        assert!(ratio > 0.0, "{name}");
        let stored = r["stored_bytes"].as_u64().unwrap();
        assert!((ratio - stored as f64 / raw as f64).abs() < 1e-9, "{name}");
        let added: Vec<u64> = r["added_bytes"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
        assert_eq!(added.len(), 4, "{name}");
        assert_eq!(added.iter().sum::<u64>(), stored, "{name}");
        for k in ["pack_mb_s", "restore_newest_mb_s", "restore_worst_mb_s"] {
            assert!(r[k].as_f64().unwrap() > 0.0, "{name} {k}");
        }
        assert_eq!(r["restore_mb_s"].as_array().unwrap().len(), 4);
    }
    let by = |n: &str| strategies.iter().find(|r| r["strategy"] == n).unwrap();
    assert_eq!(by("raw")["stored_bytes"].as_u64().unwrap(), raw);
    assert!(by("tdelta:chain:8")["stored_bytes"].as_u64() < by("zipnn")["stored_bytes"].as_u64());
    assert_eq!(by("bitx")["max_levels"], serde_json::json!([1, 2, 3, 4]));
    assert!(by("tdelta:int4:root")["stored_bytes"].as_u64() < by("tdelta:root")["stored_bytes"].as_u64());

    // CSV.
    let text = fs::read_to_string(&csv).unwrap();
    let mut lines = text.lines();
    let columns = documented_columns();
    assert_eq!(lines.next().unwrap().split(',').collect::<Vec<_>>(), columns);
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), DEFAULTS.len());
    for (row, name) in rows.iter().zip(DEFAULTS) {
        assert_eq!(row.len(), columns.len());
        let col = |c: &str| row[columns.iter().position(|x| *x == c).unwrap()];
        assert_eq!(col("strategy"), *name);
        assert_eq!(col("verified"), "true");
        assert_eq!(col("lossy"), is_lossy(name).to_string());
        assert_eq!(col("max_abs_err").is_empty(), !is_lossy(name));
        assert_eq!(col("versions"), "4");
        assert!(col("ratio").parse::<f64>().unwrap() > 0.0);
        assert!(col("pack_mb_s").parse::<f64>().unwrap() > 0.0);
        let added: u64 = col("added_bytes").split(';').map(|x| x.parse::<u64>().unwrap()).sum();
        assert_eq!(added, col("stored_bytes").parse::<u64>().unwrap());
    }

    // SVG: well-formed, one series per strategy.
    let tags = xml_tags(&fs::read_to_string(&svg).unwrap());
    assert_eq!(tags[0].0, "svg");
    let series: Vec<&String> =
        tags.iter().filter(|(n, a)| n == "g" && a.contains(r#"class="series""#)).map(|(_, a)| a).collect();
    assert_eq!(series.len(), DEFAULTS.len());
    for (a, name) in series.iter().zip(DEFAULTS) {
        assert!(a.contains(&format!(r#"data-strategy="{name}""#)), "{a}");
    }
    // The work directory is emptied of what bench made.
    assert!(!work.join("series").exists() && !work.join("work").exists());
}

#[test]
fn picked_strategies_repeat_and_global_json() {
    let tmp = tempfile::tempdir().unwrap();
    let out = ok(&[
        "--json",
        "bench",
        "--generate",
        "--versions",
        "3",
        "--size",
        "1M",
        "--dtype",
        "f16",
        "--strategies",
        "zstd:1,bitx:first,root",
        "--repeat",
        "3",
        "-q",
        "--dir",
        s(tmp.path()),
    ]);
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["repeat"], 3);
    let names: Vec<&str> =
        j["strategies"].as_array().unwrap().iter().map(|r| r["strategy"].as_str().unwrap()).collect();
    assert_eq!(names, ["zstd:1", "bitx:first", "tdelta:root"]);
    assert_eq!(j["strategies"][1]["max_levels"], serde_json::json!([1, 2, 2]));
}

#[test]
fn a_directory_of_checkpoints_in_name_order() {
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = SeriesSpec::new(3, DType::BF16, 1 << 20, 3);
    spec.sharded = true;
    let dir = tmp.path().join("ckpts");
    write_series(&spec, &dir).unwrap();
    let out = ok(&["bench", s(&dir), "--strategies", "raw,zipnn,chain:2", "-q", "--dir", s(&tmp.path().join("w"))]);
    assert!(out.contains("series: 3 versions"), "{out}");
    assert_eq!(out.lines().filter(|l| l.contains(" yes ")).count(), 3, "{out}");
    // Explicit paths, in the order given.
    let v0 = dir.join("v000");
    let v2 = dir.join("v002");
    let out = ok(&["--json", "bench", s(&v2), s(&v0), "--strategies", "bitx", "-q", "--dir", s(&tmp.path().join("w"))]);
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["versions"], 2);
    assert_eq!(j["strategies"][0]["verified"], true);
}

#[test]
fn bad_input_fails_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let w = tmp.path().join("w");
    for args in [
        vec!["bench", "--generate", "--strategies", "raw,lz4", "--dir", s(&w)],
        vec!["bench", "--generate", "--strategies", "zstd:99", "--dir", s(&w)],
        vec!["bench", s(&tmp.path().join("missing.safetensors")), "--dir", s(&w)],
    ] {
        let o = tdelta(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.starts_with("error: ") && !err.contains("panicked"), "{err}");
    }
    // Neither paths nor --generate, or a dtype the generator lacks: usage errors.
    assert_eq!(tdelta(&["bench"]).status.code(), Some(2));
    let o = tdelta(&["bench", "--generate", "--dtype", "i8", "--dir", s(&w)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not one of bf16, f16, f32"));
}
