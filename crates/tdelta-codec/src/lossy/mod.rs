//! Opt-in lossy storage: block-quantized deltas with a measured, recorded,
//! bounded error.
//!
//! A lossy block is an ordinary block whose bytes *are* the reconstruction
//! `R`: the delta `d = new − base` (in `f32`, against the base block as the
//! store restores it) is quantized in groups of `G` elements with one scale
//! per group, `R = round_dtype(base + q·s)` is computed element by element,
//! and the block is stored under the hash of `R` with codec
//! [`CodecId::Quant`](crate::CodecId::Quant). Decoding recomputes
//! exactly the same `R` (pure per-element IEEE arithmetic: one `f32`
//! multiply and one `f32` add, no fused multiply-add, round to nearest even
//! into the dtype), so hashes, `verify`, dedup and later deltas work on `R`
//! bit-exactly, and errors do not accumulate along a chain.
//!
//! Payload layout (`FORMAT.md`, section *lossy*):
//!
//! ```text
//! u8  bits            2, 4 or 8
//! u8  reserved        0
//! u16 group           elements per scale group, >= 1
//! section scales      ceil(n / group) × u16: bfloat16 bits of each scale
//! section codes       n codes of `bits` bits, two's complement, packed
//!                     little-endian (element i at bit i·bits)
//! ```
//!
//! A section is `u8 method` (0 = stored, 1 = zstd), `u32 len`, `len` bytes.

use std::cell::RefCell;
use std::fmt;
use std::str::FromStr;

use crate::CodecError;
use tdelta_format::DType;

use crate::InvalidSetting;

pub mod ec;
#[cfg(test)]
mod tests;

const NAME: &str = "quant";

/// Default number of elements sharing one scale (chosen by measurement:
/// see the README's lossy section).
pub const DEFAULT_GROUP: u32 = 64;

/// Width of the quantized codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Bits {
    /// Codes in `-1..=1` (ternary).
    Int2 = 2,
    /// Codes in `-7..=7`.
    Int4 = 4,
    /// Codes in `-127..=127`.
    Int8 = 8,
}

impl Bits {
    /// The number of bits of one code.
    pub fn bits(self) -> u32 {
        self as u32
    }

    /// Largest code magnitude.
    fn qmax(self) -> i32 {
        (1 << (self.bits() - 1)) - 1
    }

    /// The relative L2 error of the delta a lossy pack aims at with this
    /// width when no `max_error` is given: 1% for int8, 10% for int4, 45%
    /// for int2 (ternary codes cannot do much better than 44% on
    /// Gaussian-like deltas).
    pub fn nominal_error(self) -> f64 {
        match self {
            Bits::Int8 => 0.01,
            Bits::Int4 => 0.10,
            Bits::Int2 => 0.45,
        }
    }

    /// The next wider width, if any.
    pub fn wider(self) -> Option<Bits> {
        match self {
            Bits::Int2 => Some(Bits::Int4),
            Bits::Int4 => Some(Bits::Int8),
            Bits::Int8 => None,
        }
    }

    fn from_u8(b: u8) -> Option<Bits> {
        match b {
            2 => Some(Bits::Int2),
            4 => Some(Bits::Int4),
            8 => Some(Bits::Int8),
            _ => None,
        }
    }

    /// Fractions of the group's absolute maximum tried as `s · qmax`: the
    /// one with the smallest squared error wins (clipping the few largest
    /// changes pays off at low widths).
    fn candidates(self) -> &'static [f32] {
        match self {
            Bits::Int8 => &[1.0],
            Bits::Int4 => &[1.0, 0.85, 0.7, 0.55],
            Bits::Int2 => &[0.7, 0.55, 0.45, 0.35],
        }
    }
}

impl fmt::Display for Bits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "int{}", self.bits())
    }
}

impl FromStr for Bits {
    type Err = InvalidSetting;

    fn from_str(s: &str) -> Result<Bits, InvalidSetting> {
        match s {
            "int8" | "8" => Ok(Bits::Int8),
            "int4" | "4" => Ok(Bits::Int4),
            "int2" | "2" => Ok(Bits::Int2),
            _ => Err(InvalidSetting(format!("invalid lossy width `{s}`: expected int8, int4 or int2"))),
        }
    }
}

/// Settings of a lossy pack (`PackOptions::lossy` in the engine).
///
/// The error metric of `max_error` is the **relative L2 error of the
/// delta**: for every tensor, `‖R − new‖₂ / ‖new − base‖₂`, where `base` is
/// the base version's tensor as restored and `R` the stored reconstruction.
/// It is enforced per block (`‖e_b‖ ≤ ε‖d_b‖` for every block implies the
/// same bound for the tensor); a block that would exceed it is retried with
/// wider codes, then stored losslessly.
#[derive(Debug, Clone, PartialEq)]
pub struct LossyOptions {
    /// Code width tried first.
    pub bits: Bits,
    /// Elements per scale group (1..=65535).
    pub group: u32,
    /// Bound on the relative L2 error of the delta of every tensor, if any.
    pub max_error: Option<f64>,
    /// Tensor name patterns kept exact (`*` matches any run of characters),
    /// e.g. `*norm*`, `*.bias`.
    pub keep_exact: Vec<String>,
}

impl Default for LossyOptions {
    fn default() -> Self {
        LossyOptions { bits: Bits::Int8, group: DEFAULT_GROUP, max_error: None, keep_exact: Vec::new() }
    }
}

impl LossyOptions {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if !(1..=65535).contains(&self.group) {
            return Err(InvalidSetting(format!("lossy group size {} is not in 1..=65535", self.group)));
        }
        if let Some(e) = self.max_error
            && !(e.is_finite() && e > 0.0)
        {
            return Err(InvalidSetting(format!("max error {e} is not a positive number")));
        }
        Ok(())
    }

    /// True when the tensor `name` must stay exact.
    pub fn keeps_exact(&self, name: &str) -> bool {
        self.keep_exact.iter().any(|p| glob(p, name))
    }
}

/// Simple glob: `*` matches any (possibly empty) run of characters, every
/// other character matches itself.
pub fn glob(pattern: &str, name: &str) -> bool {
    let p = pattern.as_bytes();
    let n = name.as_bytes();
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ni));
            pi += 1;
        } else if pi < p.len() && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// True for the dtypes that can be stored lossily.
pub fn supports(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::BF16 | DType::F16)
}

/// Error sums of one block (or, added up, of one tensor), in `f64`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ErrorSums {
    /// Elements.
    pub elements: u64,
    /// `Σ (R − new)²`.
    pub err_sq: f64,
    /// `Σ (new − base)²` over the blocks that had a base.
    pub delta_sq: f64,
    /// `Σ new²`.
    pub weight_sq: f64,
    /// `max |R − new|`.
    pub max_abs: f64,
}

impl ErrorSums {
    /// Adds another block's sums.
    pub fn add(&mut self, o: &ErrorSums) {
        self.elements += o.elements;
        self.err_sq += o.err_sq;
        self.delta_sq += o.delta_sq;
        self.weight_sq += o.weight_sq;
        self.max_abs = self.max_abs.max(o.max_abs);
    }

    /// `‖R − new‖ / ‖new − base‖` (0 when there is no error).
    pub fn delta_rel_l2(&self) -> f64 {
        ratio(self.err_sq, self.delta_sq)
    }

    /// `‖R − new‖ / ‖new‖` (0 when there is no error).
    pub fn weight_rel_l2(&self) -> f64 {
        ratio(self.err_sq, self.weight_sq)
    }
}

fn ratio(num_sq: f64, den_sq: f64) -> f64 {
    if num_sq == 0.0 {
        0.0
    } else if den_sq == 0.0 {
        f64::INFINITY
    } else {
        (num_sq / den_sq).sqrt()
    }
}

/// A float element type, monomorphized in the hot loops.
trait Elem {
    /// Bytes per element.
    const SIZE: usize;
    /// The raw bits of element `i` (widened to u32).
    fn bits(bytes: &[u8], i: usize) -> u32;
    /// Value of raw bits.
    fn value(bits: u32) -> f32;
    /// Raw bits of `v` rounded to nearest even.
    fn round(v: f32) -> u32;
    /// Writes element `i`.
    fn put(out: &mut [u8], i: usize, bits: u32);
    /// `v` rounded into the dtype, as f32.
    #[inline(always)]
    fn through(v: f32) -> f32 {
        Self::value(Self::round(v))
    }
}

struct F32;
struct Bf16;
struct F16;

impl Elem for F32 {
    const SIZE: usize = 4;
    #[inline(always)]
    fn bits(b: &[u8], i: usize) -> u32 {
        u32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
    }
    #[inline(always)]
    fn value(bits: u32) -> f32 {
        f32::from_bits(bits)
    }
    #[inline(always)]
    fn round(v: f32) -> u32 {
        v.to_bits()
    }
    #[inline(always)]
    fn put(out: &mut [u8], i: usize, bits: u32) {
        out[4 * i..4 * i + 4].copy_from_slice(&bits.to_le_bytes());
    }
}

impl Elem for Bf16 {
    const SIZE: usize = 2;
    #[inline(always)]
    fn bits(b: &[u8], i: usize) -> u32 {
        u32::from(u16::from_le_bytes([b[2 * i], b[2 * i + 1]]))
    }
    #[inline(always)]
    fn value(bits: u32) -> f32 {
        f32::from_bits(bits << 16)
    }
    #[inline(always)]
    fn round(v: f32) -> u32 {
        u32::from(bf16_bits(v))
    }
    #[inline(always)]
    fn put(out: &mut [u8], i: usize, bits: u32) {
        out[2 * i..2 * i + 2].copy_from_slice(&(bits as u16).to_le_bytes());
    }
}

impl Elem for F16 {
    const SIZE: usize = 2;
    #[inline(always)]
    fn bits(b: &[u8], i: usize) -> u32 {
        u32::from(u16::from_le_bytes([b[2 * i], b[2 * i + 1]]))
    }
    #[inline(always)]
    fn value(bits: u32) -> f32 {
        half::f16::from_bits(bits as u16).to_f32()
    }
    #[inline(always)]
    fn round(v: f32) -> u32 {
        u32::from(half::f16::from_f32(v).to_bits())
    }
    #[inline(always)]
    fn put(out: &mut [u8], i: usize, bits: u32) {
        out[2 * i..2 * i + 2].copy_from_slice(&(bits as u16).to_le_bytes());
    }
}

/// `f32` → bfloat16 bits, round to nearest even (NaN stays NaN).
#[inline(always)]
fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    (b.wrapping_add(0x7FFF + ((b >> 16) & 1)) >> 16) as u16
}

/// The reconstruction of one element, as dtype bits: `base` itself when
/// the code is 0, else `round_dtype(b + q·s)`.
#[inline(always)]
fn recon<E: Elem>(base_bits: u32, b: f32, q: i32, s: f32) -> u32 {
    if q == 0 {
        return base_bits;
    }
    // One product and one sum, each rounded (no fused multiply-add).
    E::round(b + (q as f32) * s)
}

/// A scale rounded to what the payload stores (bfloat16, nearest even),
/// never zero for a positive input.
fn stored_scale(s: f32) -> u16 {
    let b = bf16_bits(s);
    if b & 0x7FFF == 0 { 1 } else { b }
}

/// One block, quantized.
#[derive(Debug, Clone)]
pub struct Quantized {
    /// The `quant` payload.
    pub payload: Vec<u8>,
    /// The reconstruction `R` (what the payload decodes to).
    pub recon: Vec<u8>,
    /// Error of `R` against the new block.
    pub error: ErrorSums,
}

/// Measures the error of `recon` against `new`, whose base is `base` (or
/// no base): the sums of one block. `dtype` must be lossy-capable
/// ([`supports`]); other dtypes give empty sums.
pub fn measure(dtype: DType, new: &[u8], recon: &[u8], base: Option<&[u8]>) -> ErrorSums {
    match dtype {
        DType::F32 => measure_t::<F32>(new, recon, base),
        DType::BF16 => measure_t::<Bf16>(new, recon, base),
        DType::F16 => measure_t::<F16>(new, recon, base),
        _ => ErrorSums::default(),
    }
}

fn measure_t<E: Elem>(new: &[u8], recon: &[u8], base: Option<&[u8]>) -> ErrorSums {
    let n = new.len().min(recon.len()) / E::SIZE;
    // Element `i` adds to lane `i % LANES`; the lanes are summed in order at
    // the end: independent chains (fast), and the same result on every run.
    const LANES: usize = 8;
    let sum = |a: [f64; LANES]| a.iter().fold(0f64, |s, &x| s + x);
    let full = n / LANES * LANES;
    let (mut wsq, mut dsq) = ([0f64; LANES], [0f64; LANES]);
    let weight = |i: usize| f64::from(E::value(E::bits(new, i)));
    // The weights and their change, the part every caller needs.
    match base {
        Some(b) => {
            let delta = |i: usize, w: f64| w - f64::from(E::value(E::bits(b, i)));
            for i0 in (0..full).step_by(LANES) {
                for k in 0..LANES {
                    let w = weight(i0 + k);
                    let d = delta(i0 + k, w);
                    wsq[k] += w * w;
                    dsq[k] += d * d;
                }
            }
            for i in full..n {
                let w = weight(i);
                let d = delta(i, w);
                wsq[i - full] += w * w;
                dsq[i - full] += d * d;
            }
        }
        None => {
            for i0 in (0..full).step_by(LANES) {
                for (k, acc) in wsq.iter_mut().enumerate() {
                    let w = weight(i0 + k);
                    *acc += w * w;
                }
            }
            for i in full..n {
                let w = weight(i);
                wsq[i - full] += w * w;
            }
        }
    }
    // The error: none where the reconstruction is the original itself (an
    // exact block), else over the elements whose bits differ.
    let (mut esq, mut mx) = ([0f64; LANES], [0f64; LANES]);
    if !std::ptr::eq(new, recon) {
        for i in 0..n {
            let (nb, rb) = (E::bits(new, i), E::bits(recon, i));
            if rb != nb {
                let e = f64::from(E::value(rb)) - weight(i);
                esq[i % LANES] += e * e;
                mx[i % LANES] = mx[i % LANES].max(e.abs());
            }
        }
    }
    ErrorSums {
        elements: n as u64,
        weight_sq: sum(wsq),
        err_sq: sum(esq),
        delta_sq: sum(dsq),
        max_abs: mx.iter().fold(0f64, |m, &x| m.max(x)),
    }
}

thread_local! {
    static CCTX: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
}

/// Appends a section (`method`, `len`, bytes): zstd when that is smaller.
fn put_section(src: &[u8], level: i32, out: &mut Vec<u8>) {
    let z = CCTX.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().is_none_or(|(l, _)| *l != level) {
            *c = Some((level, zstd::bulk::Compressor::new(level).ok()?));
        }
        let (_, comp) = c.as_mut()?;
        comp.compress(src).ok()
    });
    match z {
        Some(z) if z.len() < src.len() => {
            out.push(1);
            out.extend_from_slice(&(z.len() as u32).to_le_bytes());
            out.extend_from_slice(&z);
        }
        _ => {
            out.push(0);
            out.extend_from_slice(&(src.len() as u32).to_le_bytes());
            out.extend_from_slice(src);
        }
    }
}

/// Reads a section into `out` (its exact decoded length); returns the rest.
fn get_section<'a>(payload: &'a [u8], out: &mut [u8], what: &str) -> Result<&'a [u8], CodecError> {
    get_section_into(NAME, payload, out, what)
}

/// [`get_section`] for the codec named `codec` (methods 0 and 1).
fn get_section_into<'a>(
    codec: &'static str,
    payload: &'a [u8],
    out: &mut [u8],
    what: &str,
) -> Result<&'a [u8], CodecError> {
    let bad = |reason: String| CodecError::Malformed { codec, reason };
    if payload.len() < 5 {
        return Err(bad(format!("{what} section truncated")));
    }
    let method = payload[0];
    let len = u32::from_le_bytes([payload[1], payload[2], payload[3], payload[4]]) as usize;
    let rest = &payload[5..];
    if rest.len() < len {
        return Err(bad(format!("{what} section claims {len} bytes, {} left", rest.len())));
    }
    let (body, rest) = rest.split_at(len);
    match method {
        0 if len == out.len() => out.copy_from_slice(body),
        0 => return Err(bad(format!("{what} section is {len} bytes, expected {}", out.len()))),
        1 => crate::lossless::zstd_into(codec, body, out)?,
        m => return Err(bad(format!("{what} section has unknown method {m}"))),
    }
    Ok(rest)
}

/// Quantizes the delta of `new` against `base` (same length) with codes of
/// `bits` bits in groups of `group` elements. Returns `None` when the
/// block cannot be stored lossily: a dtype without lossy support, a length
/// that is not whole elements, or a non-finite value in either block.
///
/// This is the encoder of codec 16 (`quant`), which pack format 1 wrote;
/// `tdelta pack` now writes `quant-ec` ([`ec::encode`]). It stays to make
/// `quant` payloads for the tests of their decoder, which old stores need.
pub fn encode(dtype: DType, new: &[u8], base: &[u8], bits: Bits, group: u32, level: i32) -> Option<Quantized> {
    if new.len() != base.len() || group == 0 || group > 65535 {
        return None;
    }
    match dtype {
        DType::F32 => encode_t::<F32>(new, base, bits, group, level),
        DType::BF16 => encode_t::<Bf16>(new, base, bits, group, level),
        DType::F16 => encode_t::<F16>(new, base, bits, group, level),
        _ => None,
    }
}

fn encode_t<E: Elem>(new: &[u8], base: &[u8], bits: Bits, group: u32, level: i32) -> Option<Quantized> {
    if new.is_empty() || !new.len().is_multiple_of(E::SIZE) {
        return None;
    }
    let n = new.len() / E::SIZE;
    let g = group as usize;
    let qmax = bits.qmax();
    let ngroups = n.div_ceil(g);
    let mut scales = Vec::with_capacity(ngroups * 2);
    let mut codes = vec![0i8; n];
    let mut recon_bytes = vec![0u8; new.len()];
    // Per group: new values, base values, base bits, deltas.
    let mut nf = vec![0f32; g];
    let mut bf = vec![0f32; g];
    let mut bb = vec![0u32; g];
    let mut d = vec![0f32; g];
    for gi in 0..ngroups {
        let lo = gi * g;
        let hi = (lo + g).min(n);
        let len = hi - lo;
        let mut amax = 0f32;
        for k in 0..len {
            let w = E::value(E::bits(new, lo + k));
            let bits_b = E::bits(base, lo + k);
            let b = E::value(bits_b);
            if !w.is_finite() || !b.is_finite() {
                return None;
            }
            nf[k] = w;
            bf[k] = b;
            bb[k] = bits_b;
            let x = w - b;
            d[k] = x;
            amax = amax.max(x.abs());
        }
        let mut best: Option<(f32, u16)> = None;
        let cands = bits.candidates();
        if cands.len() == 1 && amax > 0.0 && amax.is_finite() {
            best = Some((0.0, stored_scale(amax * cands[0] / qmax as f32)));
        } else if amax > 0.0 && amax.is_finite() {
            for &c in cands {
                let sb = stored_scale(amax * c / qmax as f32);
                let s = f32::from_bits(u32::from(sb) << 16);
                if !s.is_finite() {
                    continue;
                }
                let inv = 1.0 / s;
                let mut sse = 0f32;
                for (((&dk, &bk), &bbk), &nk) in d[..len].iter().zip(&bf[..len]).zip(&bb[..len]).zip(&nf[..len]) {
                    let q = quantize(dk, inv, qmax);
                    let e = E::value(recon::<E>(bbk, bk, q, s)) - nk;
                    sse += e * e;
                }
                if sse.is_finite() && best.is_none_or(|(b, _)| sse < b) {
                    best = Some((sse, sb));
                }
            }
        }
        let sb = best.map_or(0, |(_, sb)| sb);
        let s = f32::from_bits(u32::from(sb) << 16);
        scales.extend_from_slice(&sb.to_le_bytes());
        let inv = 1.0 / s;
        for k in 0..len {
            let q = if sb == 0 { 0 } else { quantize(d[k], inv, qmax) };
            codes[lo + k] = q as i8;
            E::put(&mut recon_bytes, lo + k, recon::<E>(bb[k], bf[k], q, s));
        }
    }
    let packed = pack_codes(&codes, bits);
    let mut payload = Vec::with_capacity(16 + scales.len() + packed.len() / 2);
    payload.push(bits.bits() as u8);
    payload.push(0);
    payload.extend_from_slice(&(group as u16).to_le_bytes());
    put_section(&scales, level, &mut payload);
    put_section(&packed, level, &mut payload);
    let error = measure_t::<E>(new, &recon_bytes, Some(base));
    Some(Quantized { payload, recon: recon_bytes, error })
}

/// `clamp(round(d · inv), -qmax, qmax)`, `inv = 1 / s` (round half away
/// from zero; encoder only, so the exact rounding is not part of the
/// format).
#[inline(always)]
fn quantize(d: f32, inv: f32, qmax: i32) -> i32 {
    let x = (d * inv).clamp(-qmax as f32, qmax as f32);
    (x + 0.5f32.copysign(x)) as i32
}

fn pack_codes(codes: &[i8], bits: Bits) -> Vec<u8> {
    let b = bits.bits() as usize;
    let per = 8 / b;
    let mask = ((1u16 << b) - 1) as u8;
    let mut out = vec![0u8; (codes.len() * b).div_ceil(8)];
    for (o, chunk) in out.iter_mut().zip(codes.chunks(per)) {
        let mut v = 0u8;
        for (k, &q) in chunk.iter().enumerate() {
            v |= ((q as u8) & mask) << (k * b);
        }
        *o = v;
    }
    out
}

/// Checks what the two lossy payloads (`quant`, `quant-ec`) share: a float
/// dtype with lossy support, a block of whole elements as long as its base,
/// a header of at least `header` bytes starting `u8 bits, u8 0, u16 group`
/// (group > 0). Returns the width, the group size and the element size.
pub(crate) fn check_payload(
    codec: &'static str,
    dtype: DType,
    payload: &[u8],
    base: &[u8],
    out: &[u8],
    header: usize,
) -> Result<(Bits, usize, usize), CodecError> {
    let bad = |reason: String| CodecError::Malformed { codec, reason };
    if !supports(dtype) {
        return Err(bad(format!("dtype {dtype} cannot be quantized")));
    }
    let es = (dtype.bits() / 8) as usize;
    if !out.len().is_multiple_of(es) || base.len() != out.len() {
        return Err(bad(format!("block of {} bytes is not whole {es}-byte elements", out.len())));
    }
    if payload.len() < header.max(4) {
        return Err(bad("payload shorter than its header".into()));
    }
    let bits = Bits::from_u8(payload[0]).ok_or_else(|| bad(format!("unknown code width {}", payload[0])))?;
    if payload[1] != 0 {
        return Err(bad(format!("reserved byte is {}", payload[1])));
    }
    let group = usize::from(u16::from_le_bytes([payload[2], payload[3]]));
    if group == 0 {
        return Err(bad("group size 0".into()));
    }
    Ok((bits, group, es))
}

/// Decodes a `quant` payload against its base into `out`.
pub fn decode(dtype: DType, payload: &[u8], base: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
    let bad = |reason: String| CodecError::Malformed { codec: NAME, reason };
    let (bits, group, es) = check_payload(NAME, dtype, payload, base, out, 4)?;
    let n = out.len() / es;
    let ngroups = n.div_ceil(group);
    let mut scales = vec![0u8; ngroups * 2];
    let rest = get_section(&payload[4..], &mut scales, "scales")?;
    let b = bits.bits() as usize;
    let mut packed = vec![0u8; (n * b).div_ceil(8)];
    let rest = get_section(rest, &mut packed, "codes")?;
    if !rest.is_empty() {
        return Err(bad(format!("{} trailing bytes", rest.len())));
    }
    match dtype {
        DType::F32 => decode_t::<F32>(bits, group, &scales, &packed, base, out),
        DType::BF16 => decode_t::<Bf16>(bits, group, &scales, &packed, base, out),
        _ => decode_t::<F16>(bits, group, &scales, &packed, base, out),
    }
}

fn decode_t<E: Elem>(
    bits: Bits,
    group: usize,
    scales: &[u8],
    packed: &[u8],
    base: &[u8],
    out: &mut [u8],
) -> Result<(), CodecError> {
    let b = bits.bits() as usize;
    let n = out.len() / E::SIZE;
    let per = 8 / b;
    let mask = ((1u16 << b) - 1) as u8;
    let shift = 8 - b as u32;
    let forbidden = -(1i32 << (b - 1));
    for (gi, sc) in scales.chunks_exact(2).enumerate() {
        let sb = u16::from_le_bytes([sc[0], sc[1]]);
        if sb & 0x7F80 == 0x7F80 {
            return Err(CodecError::Malformed { codec: NAME, reason: format!("scale of group {gi} is not finite") });
        }
        let s = f32::from_bits(u32::from(sb) << 16);
        let lo = gi * group;
        let hi = (lo + group).min(n);
        for i in lo..hi {
            let field = (packed[i / per] >> ((i % per) * b)) & mask;
            // Sign-extend the b-bit field.
            let q = i32::from(((field << shift) as i8) >> shift);
            if q == forbidden {
                return Err(CodecError::Malformed {
                    codec: NAME,
                    reason: format!("code {q} of element {i} is out of range"),
                });
            }
            let bb = E::bits(base, i);
            E::put(out, i, recon::<E>(bb, E::value(bb), q, s));
        }
    }
    Ok(())
}

/// The lossy decoders, registered with the crate's decoder table.
pub(crate) const DECODERS: &[crate::id::Decoder] = &[
    crate::id::Decoder { id: crate::CodecId::Quant, decode },
    crate::id::Decoder { id: crate::CodecId::QuantEc, decode: ec::decode },
];
