//! Bytes and single-threaded speed of the block codecs on a checkpoint pair,
//! side by side with the BitX-like and ZipNN-like baselines.
//!
//! ```text
//! cargo run --release -p tdelta-dev --example codec_ratio -- [BASE NEW] [--level N] [--effort N]
//!     [--reps N] [--entropy] [--synthetic MIB]
//! ```
//!
//! Without files it reads the real pair in `../shared/data/minilm-sib-bf16`
//! when present; `--synthetic MIB` measures a generated BF16 pair instead.

use std::time::{Duration, Instant};

use tdelta::DType;
use tdelta::codec::{self, EncodeParams, baseline};

const BLOCK: usize = 1 << 20;

/// Blocks of the two checkpoints, paired: (dtype, new, base).
type Pairs<'a> = Vec<(DType, &'a [u8], &'a [u8])>;

fn blocks<'a>(new: &'a safetensors::SafeTensors<'a>, base: &'a safetensors::SafeTensors<'a>) -> Pairs<'a> {
    let mut out = Vec::new();
    let mut names: Vec<_> = new.names().into_iter().map(str::to_string).collect();
    names.sort();
    for name in names {
        let n = new.tensor(&name).expect("tensor");
        let Ok(b) = base.tensor(&name) else { continue };
        let Ok(dtype) = format!("{:?}", n.dtype()).parse::<DType>() else { continue };
        if b.data().len() != n.data().len() {
            continue;
        }
        let step = BLOCK / dtype.align() * dtype.align();
        for (x, y) in n.data().chunks(step).zip(b.data().chunks(step)) {
            out.push((dtype, x, y));
        }
    }
    out
}

#[path = "../../tdelta-codec/src/testutil.rs"]
mod testutil;
use testutil::Rng;

/// BF16 ~ N(0, 0.02) and a fine-tune: ~60% of elements unchanged, most
/// others ±1..3 ULPs, a few further.
fn synthetic(mib: usize) -> (Vec<u8>, Vec<u8>) {
    let n = mib << 19;
    let mut r = Rng(0x1234_5678_9ABC_DEF1);
    let mut base = Vec::with_capacity(n * 2);
    let mut new = Vec::with_capacity(n * 2);
    for _ in 0..n {
        let b = half::bf16::from_f64(r.normal() * 0.02).to_bits();
        let u = r.unit();
        let d: i32 = if u < 0.6 {
            0
        } else if u < 0.85 {
            if r.next() & 1 == 0 { 1 } else { -1 }
        } else if u < 0.98 {
            (r.next() % 5) as i32 - 2 + if r.next() & 1 == 0 { 1 } else { -1 }
        } else {
            (r.next() % 33) as i32 - 16
        };
        let nb = (b as i32 + d) as u16;
        base.extend_from_slice(&b.to_le_bytes());
        new.extend_from_slice(&nb.to_le_bytes());
    }
    (new, base)
}

#[derive(Default)]
struct Row {
    bytes: u64,
    enc: Duration,
    dec: Duration,
}

fn mbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64().max(1e-9)
}

/// Median of the values.
fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Runs [`measure_once`] `reps` times; bytes from the first run, times the
/// median of each column.
fn measure(label: &str, pairs: &Pairs<'_>, params: EncodeParams, reps: usize) {
    let runs: Vec<(Vec<(&str, Row)>, String)> = (0..reps.max(1)).map(|_| measure_once(pairs, params)).collect();
    let raw: u64 = pairs.iter().map(|p| p.1.len() as u64).sum();
    let (first, info) = &runs[0];
    let bitx = first.iter().find(|r| r.0.starts_with("bitx")).map_or(1, |r| r.1.bytes);
    println!(
        "\n## {label}: {} blocks, {:.1} MiB raw, {params:?}, {info}, medians of {} runs",
        pairs.len(),
        raw as f64 / 1048576.0,
        runs.len()
    );
    println!("| codec | bytes | vs raw | vs bitx_like | encode MB/s | decode MB/s |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    println!("| raw | {raw} | 100.0% | | | |");
    for (k, (name, r)) in first.iter().enumerate() {
        let enc = median(runs.iter().map(|x| x.0[k].1.enc).collect());
        let dec = median(runs.iter().map(|x| x.0[k].1.dec).collect());
        println!(
            "| {name} | {} | {:.2}% | {:.3}× | {:.0} | {:.0} |",
            r.bytes,
            100.0 * r.bytes as f64 / raw as f64,
            r.bytes as f64 / bitx.max(1) as f64,
            mbps(raw, enc),
            mbps(raw, dec),
        );
    }
}

fn measure_once<'p>(pairs: &Pairs<'_>, params: EncodeParams) -> (Vec<(&'p str, Row)>, String) {
    let mut rows: Vec<(&str, Row)> = Vec::new();
    let mut out = vec![0u8; BLOCK];
    let mut codec_count = std::collections::BTreeMap::<&str, usize>::new();

    // Non-delta, of the base.
    let mut zr = Row::default();
    let mut pr = Row::default();
    for &(dtype, _, base) in pairs {
        let out = &mut out[..base.len()];
        let t = Instant::now();
        let z = baseline::zipnn_like(dtype, base);
        zr.enc += t.elapsed();
        let t = Instant::now();
        baseline::zipnn_like_decode(dtype, &z, out).expect("zipnn decode");
        zr.dec += t.elapsed();
        assert!(out == base);
        zr.bytes += z.len() as u64;

        let t = Instant::now();
        let e = codec::encode(dtype, base, None, &params);
        pr.enc += t.elapsed();
        let t = Instant::now();
        codec::decode(dtype, e.codec, &e.payload, None, out).expect("decode");
        pr.dec += t.elapsed();
        assert!(out == base);
        pr.bytes += e.payload.len() as u64;
    }
    rows.push(("zipnn_like (base)", zr));
    rows.push(("tdelta non-delta (base)", pr));

    // Delta of new against base; identical blocks are deduplicated (0).
    let mut br = Row::default();
    let mut dr = Row::default();
    let mut same = 0usize;
    for &(dtype, new, base) in pairs {
        if new == base {
            same += 1;
            continue;
        }
        let out = &mut out[..new.len()];
        let t = Instant::now();
        let b = baseline::bitx_like(dtype, new, base);
        br.enc += t.elapsed();
        let t = Instant::now();
        baseline::bitx_like_decode(dtype, &b, base, out).expect("bitx decode");
        br.dec += t.elapsed();
        assert!(out == new);
        br.bytes += b.len() as u64;

        let t = Instant::now();
        let e = codec::encode(dtype, new, Some(base), &params);
        dr.enc += t.elapsed();
        let t = Instant::now();
        codec::decode(dtype, e.codec, &e.payload, Some(base), out).expect("decode");
        dr.dec += t.elapsed();
        assert!(out == new);
        dr.bytes += e.payload.len() as u64;
        *codec_count.entry(e.codec.name()).or_default() += 1;
    }
    rows.push(("bitx_like (delta)", br));
    rows.push(("tdelta delta", dr));
    (rows, format!("{same} identical blocks, delta codecs used {codec_count:?}"))
}

fn h(counts: &std::collections::HashMap<u32, u64>) -> f64 {
    let n: u64 = counts.values().sum();
    counts
        .values()
        .map(|&c| {
            let p = c as f64 / n as f64;
            -(c as f64) * p.log2()
        })
        .sum()
}

/// Order-0 / conditional entropies (in % of raw) of BF16 streams.
fn entropy(label: &str, pairs: &Pairs<'_>) {
    use std::collections::HashMap;
    let mut m: [HashMap<u32, u64>; 8] = Default::default();
    let mut raw = 0u64;
    let mut pb = [0f64; 4];
    for &(dtype, new, base) in pairs {
        if dtype != DType::BF16 {
            continue;
        }
        let mut q: [HashMap<u32, u64>; 4] = Default::default();
        for (a, b) in new.chunks_exact(2).zip(base.chunks_exact(2)) {
            let a = u16::from_le_bytes([a[0], a[1]]);
            let b = u16::from_le_bytes([b[0], b[1]]);
            let r = b.rotate_left(1);
            let ord = |x: u16| if x & 0x8000 != 0 { !x } else { x | 0x8000 };
            let d = ord(a).wrapping_sub(ord(b)) as i16;
            let z = ((d << 1) ^ (d >> 15)) as u16;
            *q[0].entry(u32::from(r >> 8)).or_default() += 1;
            *q[1].entry(u32::from(r & 0xff)).or_default() += 1;
            *q[2].entry(u32::from(z)).or_default() += 1;
            *q[3].entry(u32::from(z) | u32::from(r >> 8) << 16).or_default() += 1;
        }
        if new != base {
            pb[2] += h(&q[2]);
            pb[3] += h(&q[3]) - h(&q[0]);
        }
        pb[0] += h(&q[0]);
        pb[1] += h(&q[1]);
        for (a, b) in new.chunks_exact(2).zip(base.chunks_exact(2)) {
            let a = u16::from_le_bytes([a[0], a[1]]);
            let b = u16::from_le_bytes([b[0], b[1]]);
            raw += 16;
            let r = b.rotate_left(1);
            let (e, mant) = (u32::from(r >> 8), u32::from(r & 0xFF));
            *m[0].entry(e).or_default() += 1;
            *m[1].entry(mant).or_default() += 1;
            *m[2].entry(e << 8 | mant).or_default() += 1;
            let ord = |x: u16| if x & 0x8000 != 0 { !x } else { x | 0x8000 };
            let d = ord(a).wrapping_sub(ord(b)) as i16;
            let z = ((d << 1) ^ (d >> 15)) as u16;
            *m[3].entry(u32::from(z)).or_default() += 1;
            *m[4].entry(u32::from(z) | e << 16).or_default() += 1;
            *m[5].entry(u32::from(z & 0xFF)).or_default() += 1;
            let x = (a ^ b).rotate_left(1);
            *m[6].entry(u32::from(x >> 8)).or_default() += 1;
            *m[7].entry(u32::from(x & 0xff)).or_default() += 1;
        }
    }
    let pct = |bits: f64| 100.0 * bits / raw as f64;
    println!(
        "per block: H(exp) {:.2}% H(mant) {:.2}% H(z) {:.2}% H(z|exp) {:.2}%",
        pct(pb[0]),
        pct(pb[1]),
        pct(pb[2]),
        pct(pb[3])
    );
    println!("\n## entropy {label} (% of raw BF16)");
    println!("base: H(exp) {:.2}%  H(mant) {:.2}%  H(exp,mant) {:.2}%", pct(h(&m[0])), pct(h(&m[1])), pct(h(&m[2])));
    println!(
        "delta: H(z) {:.2}%  H(z|exp) {:.2}%  H(zlow) {:.2}%  xor: H(xhi)+H(xlo) {:.2}%",
        pct(h(&m[3])),
        pct(h(&m[4]) - h(&m[0])),
        pct(h(&m[5])),
        pct(h(&m[6]) + h(&m[7]))
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut files = Vec::new();
    let mut levels = vec![3];
    let mut efforts = vec![0u8, 1];
    let mut reps = 5usize;
    let mut show_entropy = false;
    let mut synth_mib = 0usize;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--level" => levels = vec![it.next().and_then(|s| s.parse().ok()).expect("--level N")],
            "--effort" => efforts = vec![it.next().and_then(|s| s.parse().ok()).expect("--effort N")],
            "--reps" => reps = it.next().and_then(|s| s.parse().ok()).expect("--reps N"),
            "--entropy" => show_entropy = true,
            "--synthetic" => synth_mib = it.next().and_then(|s| s.parse().ok()).expect("--synthetic MIB"),
            _ => files.push(a.clone()),
        }
    }
    if files.is_empty() && synth_mib == 0 {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data/minilm-sib-bf16");
        files = vec![format!("{dir}/step_0000.safetensors"), format!("{dir}/step_0030.safetensors")];
        synth_mib = 32;
    }
    if let [base, new] = &files[..] {
        let bb = std::fs::read(base).expect("read base");
        let nb = std::fs::read(new).expect("read new");
        let bs = safetensors::SafeTensors::deserialize(&bb).expect("parse base");
        let ns = safetensors::SafeTensors::deserialize(&nb).expect("parse new");
        let pairs = blocks(&ns, &bs);
        if show_entropy {
            entropy("real", &pairs);
        }
        for &level in &levels {
            for &effort in &efforts {
                measure(&format!("{new} vs {base}"), &pairs, EncodeParams { level, effort }, reps);
            }
        }
    }
    if synth_mib > 0 {
        let (new, base) = synthetic(synth_mib);
        let pairs: Pairs<'_> = new.chunks(BLOCK).zip(base.chunks(BLOCK)).map(|(n, b)| (DType::BF16, n, b)).collect();
        if show_entropy {
            entropy("synthetic", &pairs);
        }
        for &level in &levels {
            for &effort in &efforts {
                measure(&format!("synthetic BF16 {synth_mib} MiB"), &pairs, EncodeParams { level, effort }, reps);
            }
        }
    }
}
