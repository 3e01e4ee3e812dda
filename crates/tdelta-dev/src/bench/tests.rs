use std::path::PathBuf;

use super::*;
use crate::synth::{SeriesSpec, write_series};
use tdelta::DType;

#[test]
fn strategy_names_round_trip() {
    for s in
        default_strategies().into_iter().chain([Strategy::Bitx { base: XorBase::First }, Strategy::Zstd { level: 19 }])
    {
        assert_eq!(s.to_string().parse::<Strategy>().unwrap(), s, "{s}");
    }
    assert_eq!("chain:8".parse::<Strategy>().unwrap(), Strategy::Tdelta { policy: Policy::Chain(8) });
    assert_eq!("root".parse::<Strategy>().unwrap().to_string(), "tdelta:root");
    assert_eq!("ZSTD".parse::<Strategy>().unwrap(), Strategy::Zstd { level: 3 });
    assert_eq!(
        "int4:root".parse::<Strategy>().unwrap(),
        Strategy::TdeltaLossy { policy: Policy::Chain(1), bits: tdelta::lossy::Bits::Int4 }
    );
    assert_eq!("int8".parse::<Strategy>().unwrap().to_string(), "tdelta:int8:near:3");
    for bad in ["zstd:0", "zstd:x", "lz4", "chain:0", "tdelta:nope", "int8:nope", "int3", ""] {
        assert!(bad.parse::<Strategy>().is_err(), "{bad}");
    }
    assert_eq!(parse_strategies("raw, zipnn").unwrap(), vec![Strategy::Raw, Strategy::Zipnn]);
    assert!(parse_strategies("raw,raw").is_err());
    assert!(parse_strategies(",").is_err());
}

#[test]
fn median_and_rates() {
    assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
    assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    assert_eq!(mb_s(2_000_000, 2.0), 1.0);
    assert_eq!(mb_s(5, 0.0), 0.0);
}

fn series(dir: &std::path::Path, sharded: bool) -> Vec<PathBuf> {
    let mut spec = SeriesSpec::new(7, DType::BF16, 1 << 20, 3);
    spec.sharded = sharded;
    spec.vocab_extension_at = Some(2);
    write_series(&spec, &dir.join("series")).unwrap()
}

fn check(report: &BenchReport, n: usize) {
    assert_eq!(report.strategies.len(), n);
    for r in &report.strategies {
        assert!(r.verified, "{} not bit-exact", r.strategy);
        assert!(r.ratio > 0.0, "{}", r.strategy);
        assert_eq!(r.added_bytes.iter().sum::<u64>(), r.stored_bytes, "{}", r.strategy);
        assert_eq!(r.restore_mb_s.len(), report.versions);
        assert!(r.pack_mb_s > 0.0 && r.restore_newest_mb_s > 0.0, "{}", r.strategy);
    }
}

#[test]
fn every_strategy_restores_bit_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let paths = series(tmp.path(), false);
    let mut opts = BenchOptions::new(tmp.path().join("work"));
    opts.block_size = 64 << 10;
    opts.strategies.push(Strategy::Bitx { base: XorBase::First });
    let report = run(&paths, &opts, &tdelta::Silent).unwrap();
    check(&report, 13);
    let get = |name: &str| report.strategies.iter().find(|r| r.strategy == name).unwrap();
    // Raw stores the series byte for byte; everything else stores less.
    assert_eq!(get("raw").stored_bytes, report.raw_bytes);
    for r in &report.strategies[1..] {
        assert!(r.stored_bytes < report.raw_bytes, "{}", r.strategy);
    }
    // The XOR chain grows with the series; the first-base one does not.
    assert_eq!(get("bitx").max_levels, vec![1, 2, 3]);
    assert_eq!(get("bitx:first").max_levels, vec![1, 2, 2]);
    assert_eq!(get("tdelta:full").max_levels, vec![1, 1, 1]);
    // Deltas beat no deltas on a fine-tuning series.
    assert!(get("tdelta:chain:8").stored_bytes < get("zipnn").stored_bytes);
    // Lossy: marked, with a small recorded error, and smaller.
    for name in ["tdelta:int8:root", "tdelta:int4:root"] {
        let r = get(name);
        assert!(r.lossy, "{name}");
        let e = r.rel_l2_err.unwrap();
        assert!(e > 0.0 && e < 0.05, "{name}: {e}");
        assert!(r.max_abs_err.unwrap() > 0.0 && r.delta_rel_l2_err.unwrap() > 0.0, "{name}");
    }
    // int8 of ±1..3-ULP deltas need not beat lossless; int4 must.
    assert!(get("tdelta:int4:root").stored_bytes < get("tdelta:root").stored_bytes);
    assert!(get("tdelta:chain:8").rel_l2_err.is_none());
    // Temporary stores are gone.
    assert_eq!(std::fs::read_dir(&opts.work_dir).unwrap().count(), 0);
}

#[test]
fn sharded_series_from_a_parent_directory() {
    let tmp = tempfile::tempdir().unwrap();
    series(tmp.path(), true);
    let paths = expand_inputs(&[tmp.path().join("series")]).unwrap();
    assert_eq!(paths.len(), 3);
    assert!(paths.windows(2).all(|w| w[0] < w[1]));
    let mut opts = BenchOptions::new(tmp.path().join("work"));
    opts.strategies = parse_strategies("raw,zstd:1,zipnn,bitx,chain:2").unwrap();
    opts.repeat = 2;
    let report = run(&paths, &opts, &tdelta::Silent).unwrap();
    check(&report, 5);
    assert_eq!(report.repeat, 2);
}

#[test]
fn renderings_are_consistent() {
    let tmp = tempfile::tempdir().unwrap();
    let paths = series(tmp.path(), false);
    let mut opts = BenchOptions::new(tmp.path().join("work"));
    opts.strategies = parse_strategies("raw,bitx,root").unwrap();
    let report = run(&paths, &opts, &tdelta::Silent).unwrap();
    let back: BenchReport = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(back.strategies.len(), 3);
    for (a, b) in back.strategies.iter().zip(&report.strategies) {
        assert_eq!((&a.strategy, a.stored_bytes, &a.added_bytes), (&b.strategy, b.stored_bytes, &b.added_bytes));
        assert!((a.pack_mb_s - b.pack_mb_s).abs() < 1e-6 * b.pack_mb_s.max(1.0));
    }
    let csv = report.to_csv();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0].split(',').collect::<Vec<_>>(), CSV_COLUMNS);
    assert_eq!(lines.len(), 4);
    for l in &lines[1..] {
        assert_eq!(l.split(',').count(), CSV_COLUMNS.len(), "{l}");
    }
    let svg = report.to_svg();
    assert_eq!(svg.matches(r#"<g class="series""#).count(), 3);
    assert!(svg.contains(r#"data-strategy="tdelta:root""#));
    assert_eq!(svg.matches("<g").count(), svg.matches("</g>").count());
}

/// The value of attribute `name` in an SVG element's text.
fn attr<'a>(el: &'a str, name: &str) -> Option<&'a str> {
    let at = el.find(&format!(" {name}=\""))? + name.len() + 3;
    Some(&el[at..at + el[at..].find('"')?])
}

#[test]
fn chart_lines_are_told_apart_labelled_and_on_round_ticks() {
    let tmp = tempfile::tempdir().unwrap();
    let paths = series(tmp.path(), false);
    let mut opts = BenchOptions::new(tmp.path().join("work"));
    // The tdelta policies store this short series identically: their
    // lines coincide, which is the hard case for telling them apart.
    opts.strategies = parse_strategies("bitx,zipnn,root,near:3,chain:3,chain:8,keyframe:4,full").unwrap();
    let report = run(&paths, &opts, &tdelta::Silent).unwrap();
    let svg = report.to_svg();
    let lines: Vec<&str> = svg.lines().filter(|l| l.contains(r#"class="line""#)).collect();
    assert_eq!(lines.len(), 8);
    // Every line has its own look (colour, dash, marker).
    let looks: std::collections::HashSet<(Option<&str>, Option<&str>, Option<&str>)> =
        lines.iter().map(|l| (attr(l, "stroke"), attr(l, "stroke-dasharray"), attr(l, "data-marker"))).collect();
    assert_eq!(looks.len(), 8);
    // One end label per line, with its value, none overlapping another.
    let labels: Vec<(f64, &str)> = svg
        .split("<text ")
        .filter(|t| t.starts_with(r#"class="end-label""#))
        .map(|t| (attr(t, "y").unwrap().parse().unwrap(), &t[t.find('>').unwrap() + 1..t.find("</text>").unwrap()]))
        .collect();
    assert_eq!(labels.len(), 8);
    for r in &report.strategies {
        assert!(
            labels.iter().any(|(_, t)| t.starts_with(&format!("{} ", r.strategy)) && t.contains("iB")),
            "{labels:?}"
        );
    }
    let mut ys: Vec<f64> = labels.iter().map(|l| l.0).collect();
    ys.sort_by(f64::total_cmp);
    assert!(ys.windows(2).all(|w| w[1] - w[0] >= 14.0), "{ys:?}");
    // Y ticks: round numbers of one unit, evenly spaced, spanning the data.
    let ticks: Vec<(f64, f64, String)> = svg
        .split("<text ")
        .filter(|t| t.starts_with(r#"class="y-tick""#))
        .map(|t| {
            let label = &t[t.find('>').unwrap() + 1..t.find("</text>").unwrap()];
            let (num, unit) = label.split_once(' ').unwrap();
            (attr(t, "y").unwrap().parse().unwrap(), num.parse().unwrap(), unit.to_string())
        })
        .collect();
    assert!(ticks.len() >= 3, "{ticks:?}");
    assert!(ticks.iter().all(|t| t.2 == ticks[0].2));
    assert!(svg.contains(&format!("Store size after each version, {}", ticks[0].2)));
    let step = ticks[1].1 - ticks[0].1;
    let mag = 10f64.powf(step.log10().floor());
    assert!([1.0, 2.0, 5.0, 10.0].iter().any(|m| (step / mag - m).abs() < 1e-9), "step {step}");
    for w in ticks.windows(2) {
        assert!((w[1].1 - w[0].1 - step).abs() < 1e-9 * step.max(1.0), "{ticks:?}");
    }
    let unit = match ticks[0].2.as_str() {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1048576.0,
        u => panic!("unit {u}"),
    };
    let all = report.strategies.iter().flat_map(|r| r.stored_after.iter().map(|&b| b as f64 / unit));
    let (lo, hi) = all.fold((f64::INFINITY, 0.0f64), |(a, b), x| (a.min(x), b.max(x)));
    assert!(ticks[0].1 <= lo && lo < ticks[0].1 + step, "{ticks:?} vs {lo}");
    assert!(ticks[ticks.len() - 1].1 >= hi && hi > ticks[ticks.len() - 1].1 - step, "{ticks:?} vs {hi}");
}

#[test]
fn empty_series_and_missing_paths_fail() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = BenchOptions::new(tmp.path().join("work"));
    assert!(run(&[], &opts, &tdelta::Silent).is_err());
    assert!(run(&[tmp.path().join("nope.safetensors")], &opts, &tdelta::Silent).is_err());
    std::fs::create_dir(tmp.path().join("empty")).unwrap();
    assert!(expand_inputs(&[tmp.path().join("empty")]).is_err());
}
