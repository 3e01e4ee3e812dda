//! Codec 17, `quant-ec`: entropy-coded quantized deltas.
//!
//! One step `Δ` per block; each group of `G` elements uses the scale
//! `s = Δ·m(e)`, `m(e) ≈ 2^(e/4)` (`e` in `0..=15`, almost always 0: a larger `e` only keeps
//! the codes of an unusually wide group within `±Q`). With one step for the
//! whole block, the error per element is about the same everywhere, which
//! minimizes the block's squared error for its size (reverse water-filling):
//! groups whose changes are all below about `Δ/2` cost nothing, their
//! elements keep the base value. The encoder picks the coarsest `Δ` whose
//! measured error stays within the target.
//!
//! Codes are zigzag bytes, entropy-coded with the project's rANS coder in
//! the context of their group's *class* (a coarse size of its codes, sent
//! per group with `e`). A group of class 0 has only zero codes, which are
//! not stored.
//!
//! Payload layout (`FORMAT.md`, section *lossy*):
//!
//! ```text
//! u8  bits            2, 4 or 8: codes in -Q..=Q, Q = 2^(bits-1) - 1
//! u8  reserved        0
//! u16 group           G >= 1
//! u32 step            f32 bits of Δ, finite and > 0
//! section groups      ceil(n / G) bytes: e << 4 | class
//! section codes       zigzag codes of the elements of the groups of class
//!                     != 0, in order; rANS context = the group's class
//! ```
//!
//! A section is `u8 method` (0 = stored, 1 = zstd, 2 = rANS), `u32 len`,
//! `len` bytes.

use std::cell::RefCell;

use super::{Bf16, Bits, Elem, F16, F32, Quantized, get_section_into, measure_t};
use crate::{CodecError, rans};
use tdelta_format::DType;

/// Codec name, as in `FORMAT.md`.
pub(crate) const NAME: &str = "quant-ec";

/// Largest per-group step exponent.
const MAX_EXP: usize = 15;

/// Bits of the f32 nearest to `2^(e/4)`, for `e` in `0..=MAX_EXP`.
const MULT_BITS: [u32; MAX_EXP + 1] = [
    0x3F80_0000,
    0x3F98_37F0,
    0x3FB5_04F3,
    0x3FD7_44FD,
    0x4000_0000,
    0x4018_37F0,
    0x4035_04F3,
    0x4057_44FD,
    0x4080_0000,
    0x4098_37F0,
    0x40B5_04F3,
    0x40D7_44FD,
    0x4100_0000,
    0x4118_37F0,
    0x4135_04F3,
    0x4157_44FD,
];

/// The step multiplier of exponent `e`: about `2^(e/4)`.
#[inline(always)]
#[cfg(test)]
pub(crate) fn multiplier(e: usize) -> f32 {
    mult(e)
}

#[inline(always)]
fn mult(e: usize) -> f32 {
    f32::from_bits(MULT_BITS[e & MAX_EXP])
}

/// Section methods.
const STORED: u8 = 0;
const ZSTD: u8 = 1;
const RANS: u8 = 2;

/// Encoder tuning of one width (not part of the format).
#[derive(Debug, Clone, Copy)]
struct Tune {
    /// Rounding threshold: `|x| / s` rounds up from `k + thr` (0.5 is
    /// round to nearest; above it, a dead zone that drops small changes).
    thr: f32,
    /// A group keeps `e = 0` while its largest change is at most
    /// `clip · (Q + 1/2)` steps (above 1, the few largest are clipped).
    clip: f32,
}

fn tune(bits: Bits) -> Tune {
    match bits {
        Bits::Int8 => Tune { thr: 0.5, clip: 1.0 },
        Bits::Int4 => Tune { thr: 0.56, clip: 1.15 },
        Bits::Int2 => Tune { thr: 0.62, clip: 1.6 },
    }
}

/// A block prepared for quantization: values as f32, per-group figures.
struct Prep {
    w: Vec<f32>,
    b: Vec<f32>,
    d: Vec<f32>,
    /// Largest `|d|` of each group.
    amax: Vec<f32>,
    /// `Σ (b − w)²` of each group (the error when all its codes are 0).
    zero_err: Vec<f64>,
    /// `Σ d²` over the block.
    dsq: f64,
    group: usize,
}

/// The exponent of a group: the smallest `e` with `amax ≤ lim·mult(e)`
/// (`lim` = the largest change `e = 0` takes unclipped).
#[inline(always)]
fn group_exp(amax: f32, lim: f32) -> usize {
    let mut e = 0;
    while e < MAX_EXP && amax > lim * mult(e) {
        e += 1;
    }
    e
}

/// The code magnitude of `|x|` (already scaled by `1/s`), as an f32
/// integer in `0..=qmax`.
#[inline(always)]
fn code_mag(ax: f32, qmax: f32, off: f32) -> f32 {
    // Truncation of a non-negative value is floor.
    ((ax.min(qmax) + off) as i32) as f32
}

/// Squared error of one group with scale `s` (f32 lanes).
#[inline(always)]
fn group_err<E: Elem>(w: &[f32], b: &[f32], d: &[f32], s: f32, qmax: f32, off: f32) -> f64 {
    let inv = 1.0 / s;
    let mut acc = [0f32; 8];
    let n8 = d.len() / 8 * 8;
    for ((w8, b8), d8) in w[..n8].chunks_exact(8).zip(b[..n8].chunks_exact(8)).zip(d[..n8].chunks_exact(8)) {
        for k in 0..8 {
            let x = d8[k] * inv;
            let q = code_mag(x.abs(), qmax, off).copysign(x);
            let r = E::through(b8[k] + q * s);
            let e = r - w8[k];
            acc[k] += e * e;
        }
    }
    let mut tail = 0f32;
    for k in n8..d.len() {
        let x = d[k] * inv;
        let q = code_mag(x.abs(), qmax, off).copysign(x);
        let e = E::through(b[k] + q * s) - w[k];
        tail += e * e;
    }
    f64::from(acc.iter().sum::<f32>() + tail)
}

/// Squared error of the whole block at step `step`.
#[inline(always)]
fn pass_t<E: Elem>(p: &Prep, step: f32, qmax: f32, t: &Tune) -> f64 {
    let lim = t.clip * (qmax + 0.5) * step;
    let off = 1.0 - t.thr;
    let n = p.w.len();
    let mut total = 0f64;
    for (gi, (&amax, &z)) in p.amax.iter().zip(&p.zero_err).enumerate() {
        let s = step * mult(group_exp(amax, lim));
        if code_mag(amax * (1.0 / s), qmax, off) == 0.0 {
            total += z;
            continue;
        }
        let lo = gi * p.group;
        let hi = (lo + p.group).min(n);
        total += group_err::<E>(&p.w[lo..hi], &p.b[lo..hi], &p.d[lo..hi], s, qmax, off);
    }
    total
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn pass_avx2<E: Elem>(p: &Prep, step: f32, qmax: f32, t: &Tune) -> f64 {
    pass_t::<E>(p, step, qmax, t)
}

/// [`pass_t`], with AVX2 when the CPU has it (the same IEEE operations,
/// so the same result).
fn pass<E: Elem>(p: &Prep, step: f32, qmax: f32, t: &Tune) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { pass_avx2::<E>(p, step, qmax, t) };
    }
    pass_t::<E>(p, step, qmax, t)
}

fn prepare<E: Elem>(new: &[u8], base: &[u8], group: usize) -> Option<Prep> {
    let n = new.len() / E::SIZE;
    let mut w = vec![0f32; n];
    let mut b = vec![0f32; n];
    let mut d = vec![0f32; n];
    let mut finite = true;
    for i in 0..n {
        let wi = E::value(E::bits(new, i));
        let bi = E::value(E::bits(base, i));
        finite &= wi.is_finite() & bi.is_finite();
        w[i] = wi;
        b[i] = bi;
        d[i] = wi - bi;
    }
    if !finite {
        return None;
    }
    Some(figures(w, b, d, group))
}

/// Every `k`-th whole group of the block (at least 64 of them), read
/// straight from the bytes, as a block of its own; `None` when the block
/// is too small or has a non-finite value in a sampled group.
fn prepare_sample<E: Elem>(new: &[u8], base: &[u8], group: usize, k: usize) -> Option<Prep> {
    let n = new.len() / E::SIZE;
    let whole = n / group;
    if whole < 64 * k {
        return None;
    }
    let cap = whole.div_ceil(k) * group;
    let (mut w, mut b, mut d) = (Vec::with_capacity(cap), Vec::with_capacity(cap), Vec::with_capacity(cap));
    let mut finite = true;
    for gi in (0..whole).step_by(k) {
        for i in gi * group..(gi + 1) * group {
            let wi = E::value(E::bits(new, i));
            let bi = E::value(E::bits(base, i));
            finite &= wi.is_finite() & bi.is_finite();
            w.push(wi);
            b.push(bi);
            d.push(wi - bi);
        }
    }
    finite.then(|| figures(w, b, d, group))
}

/// The per-group figures of prepared values.
fn figures(w: Vec<f32>, b: Vec<f32>, d: Vec<f32>, group: usize) -> Prep {
    let ng = w.len().div_ceil(group);
    let mut amax = Vec::with_capacity(ng);
    let mut zero_err = Vec::with_capacity(ng);
    let mut dsq = 0f64;
    for gd in d.chunks(group) {
        let mut m = [0f32; 8];
        let mut sq = [0f32; 8];
        let n8 = gd.len() / 8 * 8;
        for c in gd[..n8].chunks_exact(8) {
            for k in 0..8 {
                m[k] = m[k].max(c[k].abs());
                sq[k] += c[k] * c[k];
            }
        }
        let mut mx = m.iter().fold(0f32, |a, &x| a.max(x));
        let mut s = sq.iter().sum::<f32>();
        for &x in &gd[n8..] {
            mx = mx.max(x.abs());
            s += x * x;
        }
        amax.push(mx);
        zero_err.push(f64::from(s));
        dsq += f64::from(s);
    }
    Prep { w, b, d, amax, zero_err, dsq, group }
}

/// Every `k`-th group of a large block, as a block of its own.
fn subsample(p: &Prep, k: usize) -> Option<Prep> {
    let ng = p.amax.len();
    if ng < 64 * k {
        return None;
    }
    let g = p.group;
    let n = p.w.len();
    let mut s = Prep {
        w: Vec::new(),
        b: Vec::new(),
        d: Vec::new(),
        amax: Vec::new(),
        zero_err: Vec::new(),
        dsq: 0.0,
        group: g,
    };
    // Whole groups only (the last one may be short: skip it).
    for gi in (0..ng).step_by(k).filter(|&gi| (gi + 1) * g <= n) {
        let r = gi * g..(gi + 1) * g;
        s.w.extend_from_slice(&p.w[r.clone()]);
        s.b.extend_from_slice(&p.b[r.clone()]);
        s.d.extend_from_slice(&p.d[r]);
        s.amax.push(p.amax[gi]);
        s.zero_err.push(p.zero_err[gi]);
        s.dsq += p.zero_err[gi];
    }
    (s.dsq > 0.0).then_some(s)
}

/// The coarsest step (found in a few passes) whose error is within
/// `target_sq`, and true; when none is found, the step with the smallest
/// error, and false.
fn search<E: Elem>(p: &Prep, target_sq: f64, qmax: f32, t: &Tune, start: Option<f32>) -> (f32, bool) {
    let n = p.w.len().max(1) as f64;
    let mut step = start.unwrap_or_else(|| ((12.0 * target_sq / n).sqrt() as f32).max(f32::MIN_POSITIVE));
    // Largest feasible and smallest infeasible steps seen.
    let mut lo: Option<f32> = None;
    let mut hi: Option<f32> = None;
    let mut best_any = (f64::INFINITY, step);
    let mut prev: Option<(f64, f64)> = None;
    let goal = target_sq * 0.99;
    for _ in 0..10 {
        let err = pass::<E>(p, step, qmax, t);
        if lo.is_none() && err > target_sq && hi.is_some_and(|h| step < h) && err >= best_any.0 {
            // A smaller step did not help: the codes' range is the limit.
            break;
        }
        if err < best_any.0 {
            best_any = (err, step);
        }
        if err <= target_sq {
            lo = Some(lo.map_or(step, |l| l.max(step)));
            if err >= target_sq * 0.97 {
                break;
            }
        } else {
            hi = Some(hi.map_or(step, |h| h.min(step)));
        }
        let (ls, le) = (f64::from(step).ln(), err.max(1e-300).ln());
        let alpha = match prev {
            Some((ps, pe)) if (ls - ps).abs() > 1e-4 && err > 0.0 => ((le - pe) / (ls - ps)).clamp(0.5, 3.0),
            _ => 2.0,
        };
        prev = Some((ls, le));
        let mut next = if err == 0.0 { step * 4.0 } else { (ls + (goal.ln() - le) / alpha).exp() as f32 };
        if let (Some(l), Some(h)) = (lo, hi) {
            if !(next > l && next < h) {
                next = (l * h).sqrt();
            }
            if h / l < 1.002 {
                break;
            }
        } else if let Some(l) = lo {
            next = next.max(l * 1.01);
        } else if let Some(h) = hi {
            next = next.min(h * 0.99);
        }
        if !next.is_finite() || next <= 0.0 {
            break;
        }
        step = next;
    }
    if let Some(l) = lo {
        return (l, true);
    }
    // Nothing within the target: smaller steps, while they help.
    let mut step = best_any.1;
    for _ in 0..12 {
        step *= 0.5;
        let err = pass::<E>(p, step, qmax, t);
        if err <= target_sq {
            return (step, true);
        }
        if err >= best_any.0 {
            break;
        }
        best_any = (err, step);
    }
    (best_any.1, false)
}

/// Zigzag of a code: 0, -1, 1, -2, 2, … → 0, 1, 2, 3, 4, …
#[inline(always)]
fn zigzag(q: i32) -> u8 {
    ((q << 1) ^ (q >> 31)) as u8
}

#[inline(always)]
fn unzigzag(z: u8) -> i32 {
    i32::from(z >> 1) ^ -i32::from(z & 1)
}

/// The class of a nonzero group from the sum of its code magnitudes:
/// half-octaves of the mean magnitude, 1..=15.
fn class_of(sum_abs: u32, len: usize) -> u8 {
    let m = sum_abs as f32 / len as f32;
    (1.0 + 2.0 * (1.0 + m).log2()).min(15.0) as u8
}

/// Quantizes at `step`: the groups and codes sections' bytes, the contexts
/// of the codes, and the reconstruction.
fn emit<E: Elem>(p: &Prep, base: &[u8], step: f32, qmax: f32, t: &Tune) -> (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>) {
    let mut recon = base.to_vec();
    let (groups, codes, ctx) = emit_codes::<E>(p, step, qmax, t, Some(&mut recon));
    (groups, codes, ctx, recon)
}

/// The groups and codes sections' bytes and the contexts of the codes at
/// `step`; writes the changed elements into `recon` when given.
fn emit_codes<E: Elem>(
    p: &Prep,
    step: f32,
    qmax: f32,
    t: &Tune,
    mut recon: Option<&mut Vec<u8>>,
) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let n = p.w.len();
    let lim = t.clip * (qmax + 0.5) * step;
    let off = 1.0 - t.thr;
    let mut groups = Vec::with_capacity(p.amax.len());
    let mut codes = Vec::with_capacity(n);
    let mut ctx = Vec::with_capacity(n);
    for (gi, &amax) in p.amax.iter().enumerate() {
        let e = group_exp(amax, lim);
        let s = step * mult(e);
        if code_mag(amax * (1.0 / s), qmax, off) == 0.0 {
            groups.push(0);
            continue;
        }
        let inv = 1.0 / s;
        let lo = gi * p.group;
        let hi = (lo + p.group).min(n);
        let start = codes.len();
        let mut sum = 0u32;
        for i in lo..hi {
            let x = p.d[i] * inv;
            let m = code_mag(x.abs(), qmax, off);
            let q = if x < 0.0 { -(m as i32) } else { m as i32 };
            sum += m as u32;
            codes.push(zigzag(q));
            if q != 0
                && let Some(r) = recon.as_deref_mut()
            {
                E::put(r, i, E::round(p.b[i] + (q as f32) * s));
            }
        }
        if sum == 0 {
            codes.truncate(start);
            groups.push(0);
            continue;
        }
        let class = class_of(sum, hi - lo);
        groups.push((e as u8) << 4 | class);
        ctx.resize(codes.len(), class);
    }
    (groups, codes, ctx)
}

/// Appends a section: rANS (with `ctx`) when smaller than stored.
fn put_section(src: &[u8], ctx: Option<&[u8]>, out: &mut Vec<u8>) {
    let at = out.len();
    out.push(RANS);
    out.extend_from_slice(&[0; 4]);
    if !src.is_empty() {
        let m = rans::model(src, ctx);
        if m.encode(src, ctx, src.len(), out) {
            let len = (out.len() - at - 5) as u32;
            out[at + 1..at + 5].copy_from_slice(&len.to_le_bytes());
            return;
        }
    }
    out[at] = STORED;
    out[at + 1..at + 5].copy_from_slice(&(src.len() as u32).to_le_bytes());
    out.extend_from_slice(src);
}

/// Quantizes the delta of `new` against `base` (same length) for a relative
/// L2 error of the delta of at most `target` (the coarsest step found
/// within it), codes within the range of `bits`. With `strict`, returns
/// `None` unless the measured error is within `target`. Also `None` for a
/// dtype without lossy support, a length that is not whole elements, a
/// non-finite value in either block, or a group size out of `1..=65535`.
pub fn encode(
    dtype: DType,
    new: &[u8],
    base: &[u8],
    bits: Bits,
    group: u32,
    target: f64,
    strict: bool,
) -> Option<Quantized> {
    encode_from(dtype, new, base, bits, group, target, strict, None)
}

/// [`encode`], with `start` (e.g. the step [`predict`] found on a sample
/// for the same width and target) taken as the step instead of searching:
/// it is checked on the whole block like any step and made finer while
/// over the target. The result meets the same rules either way.
#[allow(clippy::too_many_arguments)]
pub fn encode_from(
    dtype: DType,
    new: &[u8],
    base: &[u8],
    bits: Bits,
    group: u32,
    target: f64,
    strict: bool,
    start: Option<f32>,
) -> Option<Quantized> {
    if new.len() != base.len() || group == 0 || group > 65535 || !(target.is_finite() && target > 0.0) {
        return None;
    }
    match dtype {
        DType::F32 => encode_t::<F32>(new, base, bits, group, target, strict, start),
        DType::BF16 => encode_t::<Bf16>(new, base, bits, group, target, strict, start),
        DType::F16 => encode_t::<F16>(new, base, bits, group, target, strict, start),
        _ => None,
    }
}

fn encode_t<E: Elem>(
    new: &[u8],
    base: &[u8],
    bits: Bits,
    group: u32,
    target: f64,
    strict: bool,
    start: Option<f32>,
) -> Option<Quantized> {
    if new.is_empty() || !new.len().is_multiple_of(E::SIZE) {
        return None;
    }
    let p = prepare::<E>(new, base, group as usize)?;
    let qmax = bits.qmax() as f32;
    let t = tune(bits);
    let target_sq = target * target * p.dsq;
    let start = start.filter(|s| s.is_finite() && *s > 0.0);
    let (mut step, feasible) = if p.dsq <= 0.0 {
        (1.0, true)
    } else if let Some(s) = start {
        // A step found on a sample of this block: emitted and checked
        // below (in f64, as recorded), made finer there if over.
        (s, true)
    } else {
        // First on a quarter of the groups (spread over the block), then
        // on all of them from there: most passes cost a quarter.
        let start = subsample(&p, 4).map(|sub| search::<E>(&sub, target * target * sub.dsq, qmax, &t, None).0);
        search::<E>(&p, target_sq, qmax, &t, start)
    };
    for attempt in 0..6 {
        if !(step.is_finite() && step > 0.0) {
            return None;
        }
        let (groups, codes, ctx, recon) = emit::<E>(&p, base, step, qmax, &t);
        let error = measure_t::<E>(new, &recon, Some(base));

        // The search measured in f32: check in f64, as recorded.
        let limit = target * target * (1.0 - 1e-9) * error.delta_sq;
        if feasible && error.err_sq > limit && attempt < 5 && error.err_sq.is_finite() {
            step *= (0.97 * (limit / error.err_sq).sqrt()).clamp(0.25, 0.995) as f32;
            continue;
        }
        if strict && (error.err_sq > limit || error.err_sq.is_nan()) {
            return None;
        }
        let mut payload = Vec::with_capacity(16 + groups.len() + codes.len());
        payload.push(bits.bits() as u8);
        payload.push(0);
        payload.extend_from_slice(&(group as u16).to_le_bytes());
        payload.extend_from_slice(&step.to_bits().to_le_bytes());
        put_section(&groups, None, &mut payload);
        put_section(&codes, Some(&ctx), &mut payload);
        return Some(Quantized { payload, recon, error });
    }
    None
}

/// Groups sampled by [`predict`]: one in this many.
const SAMPLE: usize = 8;

/// A prediction, from one group in `SAMPLE` (spread over the block), of
/// the payload size [`encode`] would reach for the same target, and the
/// step found (0 when the width cannot reach the target on the sample):
/// the step search and the entropy estimate of the codes run on the sample
/// only.
/// `None` when the block is too small to sample (at least 64 sampled
/// groups) or cannot be quantized; the caller then simply encodes.
pub fn predict(dtype: DType, new: &[u8], base: &[u8], bits: Bits, group: u32, target: f64) -> Option<(usize, f32)> {
    if new.len() != base.len() || group == 0 || group > 65535 {
        return None;
    }
    match dtype {
        DType::F32 => predict_t::<F32>(new, base, bits, group as usize, target),
        DType::BF16 => predict_t::<Bf16>(new, base, bits, group as usize, target),
        DType::F16 => predict_t::<F16>(new, base, bits, group as usize, target),
        _ => None,
    }
}

fn predict_t<E: Elem>(new: &[u8], base: &[u8], bits: Bits, group: usize, target: f64) -> Option<(usize, f32)> {
    if !new.len().is_multiple_of(E::SIZE) {
        return None;
    }
    let p = prepare_sample::<E>(new, base, group, SAMPLE)?;
    if p.dsq <= 0.0 {
        return Some((0, 0.0));
    }
    let qmax = bits.qmax() as f32;
    let t = tune(bits);
    let (step, feasible) = search::<E>(&p, target * target * p.dsq, qmax, &t, None);
    if !(step.is_finite() && step > 0.0) {
        return None;
    }
    let (groups, codes, ctx) = emit_codes::<E>(&p, step, qmax, &t, None);
    let mut est = rans::model(&groups, None).est.min(groups.len());
    if !codes.is_empty() {
        est += rans::model(&codes, Some(&ctx)).est.min(codes.len());
    }
    // The sampled share of the block's elements.
    let share = p.w.len() as f64 / (new.len() / E::SIZE) as f64;
    // A step the width cannot bring within the target is no start.
    Some(((est as f64 / share) as usize, if feasible { step } else { 0.0 }))
}

thread_local! {
    /// Decoder scratch: groups, codes, contexts.
    static SCRATCH: RefCell<(Vec<u8>, Vec<u8>, Vec<u8>)> = const { RefCell::new((Vec::new(), Vec::new(), Vec::new())) };
}

fn bad(reason: String) -> CodecError {
    CodecError::Malformed { codec: NAME, reason }
}

/// Reads one section into `out` (exactly its decoded length).
fn get_section<'a>(payload: &'a [u8], out: &mut [u8], ctx: Option<&[u8]>, what: &str) -> Result<&'a [u8], CodecError> {
    if payload.len() < 5 {
        return Err(bad(format!("{what} section truncated")));
    }
    match payload[0] {
        RANS => {
            let len = u32::from_le_bytes([payload[1], payload[2], payload[3], payload[4]]) as usize;
            let rest = &payload[5..];
            if rest.len() < len {
                return Err(bad(format!("{what} section claims {len} bytes, {} left", rest.len())));
            }
            let (body, rest) = rest.split_at(len);
            rans::decode(NAME, body, ctx, out)?;
            Ok(rest)
        }
        STORED | ZSTD => get_section_into(NAME, payload, out, what),
        m => Err(bad(format!("{what} section has unknown method {m}"))),
    }
}

/// Decodes a `quant-ec` payload against its base into `out`.
pub fn decode(dtype: DType, payload: &[u8], base: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
    let (bits, group, es) = super::check_payload(NAME, dtype, payload, base, out, 8)?;
    let step = f32::from_bits(u32::from_le_bytes([payload[4], payload[5], payload[6], payload[7]]));
    if !(step.is_finite() && step > 0.0) {
        return Err(bad(format!("step {step} is not a positive finite number")));
    }
    let n = out.len() / es;
    let ng = n.div_ceil(group);
    SCRATCH.with(|s| {
        let mut fresh = (Vec::new(), Vec::new(), Vec::new());
        let mut guard = s.try_borrow_mut();
        let (groups, codes, ctx) = match guard.as_deref_mut() {
            Ok(s) => (&mut s.0, &mut s.1, &mut s.2),
            Err(_) => (&mut fresh.0, &mut fresh.1, &mut fresh.2),
        };
        groups.clear();
        groups.resize(ng, 0);
        let rest = get_section(&payload[8..], groups, None, "groups")?;
        ctx.clear();
        for (gi, &g) in groups.iter().enumerate() {
            let class = g & 15;
            if class != 0 {
                let len = group.min(n - gi * group);
                ctx.resize(ctx.len() + len, class);
            }
        }
        codes.clear();
        codes.resize(ctx.len(), 0);
        let rest = get_section(rest, codes, Some(ctx), "codes")?;
        if !rest.is_empty() {
            return Err(bad(format!("{} trailing bytes", rest.len())));
        }
        let zmax = 2 * bits.qmax() as u8;
        if let Some(i) = codes.iter().position(|&c| c > zmax) {
            return Err(bad(format!("code {} of stored element {i} is out of range", unzigzag(codes[i]))));
        }
        match dtype {
            DType::F32 => rebuild::<F32>(group, step, groups, codes, base, out),
            DType::BF16 => rebuild::<Bf16>(group, step, groups, codes, base, out),
            _ => rebuild::<F16>(group, step, groups, codes, base, out),
        }
    })
}

fn rebuild<E: Elem>(
    group: usize,
    step: f32,
    groups: &[u8],
    codes: &[u8],
    base: &[u8],
    out: &mut [u8],
) -> Result<(), CodecError> {
    // Scales first (so the element loop cannot fail).
    for (gi, &g) in groups.iter().enumerate() {
        if !(step * mult(usize::from(g >> 4))).is_finite() {
            return Err(bad(format!("scale of group {gi} is not finite")));
        }
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        unsafe { rebuild_avx2::<E>(group, step, groups, codes, base, out) };
        return Ok(());
    }
    rebuild_t::<E>(group, step, groups, codes, base, out);
    Ok(())
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn rebuild_avx2<E: Elem>(group: usize, step: f32, groups: &[u8], codes: &[u8], base: &[u8], out: &mut [u8]) {
    rebuild_t::<E>(group, step, groups, codes, base, out);
}

/// The reconstruction: one f32 product and one f32 sum per element with a
/// nonzero code (same IEEE operations on every path, no fused multiply-add).
#[inline(always)]
fn rebuild_t<E: Elem>(group: usize, step: f32, groups: &[u8], codes: &[u8], base: &[u8], out: &mut [u8]) {
    let gb = group * E::SIZE;
    let mut at = 0usize;
    for ((&g, ob), bb) in groups.iter().zip(out.chunks_mut(gb)).zip(base.chunks(gb)) {
        if g & 15 == 0 {
            ob.copy_from_slice(bb);
            continue;
        }
        let s = step * mult(usize::from(g >> 4));
        let len = ob.len() / E::SIZE;
        let cs = &codes[at..at + len];
        at += len;
        rebuild_run::<E>(cs, s, bb, ob);
    }
}

#[inline(always)]
fn rebuild_run<E: Elem>(cs: &[u8], s: f32, bb: &[u8], ob: &mut [u8]) {
    for ((&c, b), o) in cs.iter().zip(bb.chunks_exact(E::SIZE)).zip(ob.chunks_exact_mut(E::SIZE)) {
        let bits = E::bits(b, 0);
        let q = unzigzag(c);
        let r = E::round(E::value(bits) + (q as f32) * s);
        E::put(o, 0, if q == 0 { bits } else { r });
    }
}

/// A rough size, in bytes, of the exact delta of `new` against `base`:
/// the significant bits of each element's zigzag ULP difference, counted
/// on one run of 512 elements in eight (all of a small block) and scaled.
/// The lossless codecs usually need somewhat more; the caller may skip the
/// exact encoding when a lossy payload is well under this.
pub fn exact_estimate(dtype: DType, new: &[u8], base: &[u8]) -> usize {
    if new.len() != base.len() {
        return usize::MAX;
    }
    let size = match dtype {
        DType::F32 => 4,
        DType::BF16 | DType::F16 => 2,
        _ => return usize::MAX,
    };
    const RUN: usize = 512;
    const EVERY: usize = 8;
    let run = RUN * size;
    if new.len() < 64 * run * EVERY {
        return exact_bits(dtype, new, base) / 8;
    }
    let mut bits = 0usize;
    let mut sampled = 0usize;
    for at in (0..new.len() - run).step_by(run * EVERY) {
        bits += exact_bits(dtype, &new[at..at + run], &base[at..at + run]);
        sampled += run;
    }
    (bits as f64 / 8.0 * new.len() as f64 / sampled as f64) as usize
}

/// The significant bits of the zigzag ULP differences of `new` and `base`.
fn exact_bits(dtype: DType, new: &[u8], base: &[u8]) -> usize {
    let bits: u64 = match dtype {
        DType::F32 => new
            .chunks_exact(4)
            .zip(base.chunks_exact(4))
            .map(|(a, b)| {
                let ord = |x: u32| if x >> 31 == 1 { !x } else { x | 0x8000_0000 };
                let d = ord(u32::from_le_bytes([a[0], a[1], a[2], a[3]]))
                    .wrapping_sub(ord(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))) as i32;
                u64::from(32 - ((d << 1) ^ (d >> 31)).leading_zeros())
            })
            .sum(),
        DType::BF16 | DType::F16 => new
            .chunks_exact(2)
            .zip(base.chunks_exact(2))
            .map(|(a, b)| {
                let ord = |x: u16| if x >> 15 == 1 { !x } else { x | 0x8000 };
                let d =
                    ord(u16::from_le_bytes([a[0], a[1]])).wrapping_sub(ord(u16::from_le_bytes([b[0], b[1]]))) as i16;
                u64::from(16 - ((d << 1) ^ (d >> 15)).leading_zeros())
            })
            .sum(),
        _ => return usize::MAX,
    };
    bits as usize
}
