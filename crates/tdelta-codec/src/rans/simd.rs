//! AVX-512 coding of whole groups of 32 symbols: the 32 states as two
//! vectors of 16, table entries gathered per lane.

use std::arch::x86_64::*;

use super::{DTAB, ETAB, L, LANES, MASK, MAX_CTX, SCALE, SCALE_BITS};
use crate::transform::avx512::Words16;

/// True when the CPU has what [`run`] and [`encode`] need.
pub(super) fn available() -> bool {
    use std::sync::OnceLock;
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512vbmi")
            && is_x86_feature_detected!("avx512vbmi2")
            && is_x86_feature_detected!("popcnt")
    })
}

/// Decodes whole groups of `LANES` symbols while the data surely holds
/// their words; returns (symbols decoded, bytes consumed). The scalar
/// loop finishes from there.
///
/// # Safety
///
/// The CPU must have the features [`available`] checks.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vbmi2,popcnt")]
pub(super) unsafe fn run(
    out: &mut [u8],
    ctx: Option<&[u8]>,
    map: &[u8; 256],
    tab: &[u32; DTAB],
    data: &[u8],
    x: &mut [u32; LANES],
) -> (usize, usize) {
    let full = out.len() / LANES * LANES;
    let mut i = 0usize;
    assert!(ctx.is_none_or(|c| c.len() >= out.len()));
    let mut d = Decoder::new(ctx.is_some(), map, tab, data, x);
    // SAFETY: `i + LANES <= full <= out.len()`.
    while i < full && unsafe { d.group(out, ctx, i) } {
        i += LANES;
    }
    (i, d.finish(x))
}

/// [`run`] of two streams of the same length at once: their groups
/// interleaved, so that the latency of one's table gathers and multiplies
/// overlaps the other's (one stream keeps the core waiting on them).
/// Returns, for each stream, the symbols decoded and the bytes consumed
/// (the scalar loop finishes from there).
///
/// # Safety
///
/// The CPU must have the features [`available`] checks.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vbmi2,popcnt")]
pub(super) unsafe fn run_pair(
    out: [&mut [u8]; 2],
    ctx: [Option<&[u8]>; 2],
    map: [&[u8; 256]; 2],
    tab: [&[u32; DTAB]; 2],
    data: [&[u8]; 2],
    x: [&mut [u32; LANES]; 2],
) -> ([usize; 2], [usize; 2]) {
    let [oa, ob] = out;
    let [xa, xb] = x;
    assert_eq!(oa.len(), ob.len());
    let full = oa.len() / LANES * LANES;
    let [ca, cb] = ctx;
    assert!(ca.is_none_or(|c| c.len() >= oa.len()) && cb.is_none_or(|c| c.len() >= ob.len()));
    let mut a = Decoder::new(ca.is_some(), map[0], tab[0], data[0], xa);
    let mut b = Decoder::new(cb.is_some(), map[1], tab[1], data[1], xb);
    let (mut ia, mut ib) = (0usize, 0usize);
    // SAFETY (every group below): as in `run`, for each stream.
    while ia < full && a.room() && b.room() {
        unsafe {
            a.fast_group(oa, ca, ia);
            b.fast_group(ob, cb, ib);
        }
        ia += LANES;
        ib += LANES;
    }
    // Then each alone (one's words may end well before its symbols: a
    // nearly constant plane).
    while ia < full && unsafe { a.group(oa, ca, ia) } {
        ia += LANES;
    }
    while ib < full && unsafe { b.group(ob, cb, ib) } {
        ib += LANES;
    }
    ([ia, ib], [a.finish(xa), b.finish(xb)])
}

/// One byte plane of a [`run_words16`].
pub(super) enum Plane<'a> {
    /// A rANS stream (coded in contexts or not), decoded group by group
    /// from its states `x` (the states at the end are written back).
    Rans { ctxd: bool, map: &'a [u8; 256], tab: &'a [u32; DTAB], data: &'a [u8], x: &'a mut [u32; LANES] },
    /// The plane's bytes, already there.
    Bytes(&'a [u8]),
    /// One byte throughout.
    Const(u8),
}

/// A [`Plane`] being decoded (two of them live in registers and on the
/// stack of [`run_words16`]: the size of a decoder is no concern).
#[allow(clippy::large_enum_variant)]
enum Source<'a> {
    Rans(Decoder<'a>, &'a mut [u32; LANES]),
    Bytes(&'a [u8]),
    Const(u8),
}

impl<'a> Source<'a> {
    /// The source of `plane`, whose bytes (when given) cover `full` symbols.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn of(plane: Plane<'a>, full: usize) -> Self {
        match plane {
            Plane::Rans { ctxd, map, tab, data, x } => Source::Rans(Decoder::new(ctxd, map, tab, data, x), x),
            Plane::Bytes(b) => {
                assert!(b.len() >= full);
                Source::Bytes(b)
            }
            Plane::Const(v) => Source::Const(v),
        }
    }

    /// Writes a stream's states back; returns the bytes of words consumed
    /// (0 for other planes).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn end(self) -> usize {
        match self {
            Source::Rans(d, x) => d.finish(x),
            _ => 0,
        }
    }

    /// The plane's next 32 bytes (group `i`), in contexts `c`; `None` when
    /// a stream's words run out.
    ///
    /// # Safety
    ///
    /// `Bytes` hold at least `i + LANES` bytes; the CPU has the features
    /// [`available`] checks.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vbmi2,popcnt")]
    unsafe fn next(&mut self, c: __m256i, i: usize) -> Option<__m256i> {
        // SAFETY: the caller's promises; `decode` without `EXACT` only
        // when the words are surely there.
        unsafe {
            match self {
                Source::Rans(d, _) if d.room() => d.decode::<false>(c),
                Source::Rans(d, _) => d.decode::<true>(c),
                Source::Bytes(b) => Some(_mm256_loadu_si256(b.as_ptr().add(i).cast())),
                Source::Const(v) => Some(_mm256_set1_epi8(*v as i8)),
            }
        }
    }
}

/// Decodes the whole groups of `LANES` 16-bit words of `out` from their
/// byte planes `[top, low]` (of `out.len() / 2` bytes each) and writes
/// the words transformed back by `w` (against the words of `base`, for a
/// delta): one pass, no planes in memory. A delta's planes are in the
/// contexts of the base's top plane; otherwise the low plane is in the
/// contexts of the top plane. Returns the words done (the whole groups)
/// and each plane's bytes of words consumed; `None` when a stream's
/// words run out (a truncated stream: `out` is then unspecified).
///
/// # Safety
///
/// The CPU must have the features [`available`] checks.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vbmi2,popcnt")]
pub(super) unsafe fn run_words16(
    planes: [Plane<'_>; 2],
    w: Words16,
    base: &[u8],
    out: &mut [u8],
) -> Option<(usize, [usize; 2])> {
    let n = out.len() / 2;
    let full = n / LANES * LANES;
    assert!(!w.delta() || base.len() >= 2 * full);
    let [mut top, mut low] = planes.map(|p| Source::of(p, full));
    let mut i = 0usize;
    // SAFETY (all loads and stores below): group `i` (`i + LANES <=
    // full`) reads 64 base bytes at `2 * i` (asserted above for a delta)
    // and 32 plane bytes at `i` (asserted above), and writes 64 bytes at
    // `2 * i` of `out` (`2 * full <= out.len()`).
    unsafe {
        while i < full {
            let (b, c) = if w.delta() {
                let b = _mm512_loadu_si512(base.as_ptr().add(2 * i).cast());
                (b, w.contexts(b))
            } else {
                (_mm512_setzero_si512(), _mm256_setzero_si256())
            };
            let t = top.next(c, i)?;
            let l = low.next(if w.delta() { c } else { t }, i)?;
            _mm512_storeu_si512(out.as_mut_ptr().add(2 * i).cast(), w.merge(t, l, b));
            i += LANES;
        }
    }
    Some((full, [top.end(), low.end()]))
}

/// [`run_words16`] of a block one delta from a full block, both levels
/// in one pass: each group's base words are decoded from the full block's
/// planes `root` (transformed back by `wr`, the `Plain` transform) and
/// used at once as the base of the delta's planes `top` (transformed back
/// by `wt`). No base block goes through memory, and the latencies of the
/// three or four streams overlap. Returns the words done and the bytes of
/// words consumed by each plane (`root`'s top and low, then `top`'s);
/// `None` when a stream's words run out (`out` is then unspecified).
///
/// # Safety
///
/// The CPU must have the features [`available`] checks.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vbmi2,popcnt")]
pub(super) unsafe fn run_words16_chain(
    root: [Plane<'_>; 2],
    wr: Words16,
    top: [Plane<'_>; 2],
    wt: Words16,
    out: &mut [u8],
) -> Option<(usize, [usize; 4])> {
    assert!(!wr.delta() && wt.delta());
    let full = out.len() / 2 / LANES * LANES;
    let [mut rt, mut rl] = root.map(|p| Source::of(p, full));
    let [mut dt, mut dl] = top.map(|p| Source::of(p, full));
    let mut i = 0usize;
    // SAFETY (all loads and stores below): group `i` (`i + LANES <= full`)
    // reads 32 plane bytes at `i` (asserted by `Source::of`) and writes 64
    // bytes at `2 * i` of `out` (`2 * full <= out.len()`).
    unsafe {
        while i < full {
            let t = rt.next(_mm256_setzero_si256(), i)?;
            let b = wr.merge(t, rl.next(t, i)?, _mm512_setzero_si512());
            let c = wt.contexts(b);
            let (t, l) = (dt.next(c, i)?, dl.next(c, i)?);
            _mm512_storeu_si512(out.as_mut_ptr().add(2 * i).cast(), wt.merge(t, l, b));
            i += LANES;
        }
    }
    Some((full, [rt.end(), rl.end(), dt.end(), dl.end()]))
}

/// [`run_words16`] of two full blocks (the `Plain` transform) of the same
/// length at once, their groups interleaved: one block's stream keeps the
/// core waiting on its gathers and multiplies, two overlap. Returns the
/// words done in each and the bytes of words consumed by each plane
/// (`a`'s top and low, then `b`'s); `None` when a stream's words run out.
///
/// # Safety
///
/// The CPU must have the features [`available`] checks.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vbmi2,popcnt")]
pub(super) unsafe fn run_words16_two(
    (a, wa, out_a): ([Plane<'_>; 2], Words16, &mut [u8]),
    (b, wb, out_b): ([Plane<'_>; 2], Words16, &mut [u8]),
) -> Option<(usize, [usize; 4])> {
    assert!(!wa.delta() && !wb.delta() && out_a.len() == out_b.len());
    let full = out_a.len() / 2 / LANES * LANES;
    let [mut at, mut al] = a.map(|p| Source::of(p, full));
    let [mut bt, mut bl] = b.map(|p| Source::of(p, full));
    let (zero, base) = (_mm256_setzero_si256(), _mm512_setzero_si512());
    let mut i = 0usize;
    // SAFETY (all loads and stores below): group `i` (`i + LANES <= full`)
    // reads 32 plane bytes at `i` (asserted by `Source::of`) and writes 64
    // bytes at `2 * i` of each output (`2 * full <= len`).
    unsafe {
        while i < full {
            let (ta, tb) = (at.next(zero, i)?, bt.next(zero, i)?);
            let (la, lb) = (al.next(ta, i)?, bl.next(tb, i)?);
            _mm512_storeu_si512(out_a.as_mut_ptr().add(2 * i).cast(), wa.merge(ta, la, base));
            _mm512_storeu_si512(out_b.as_mut_ptr().add(2 * i).cast(), wb.merge(tb, lb, base));
            i += LANES;
        }
    }
    Some((full, [at.end(), al.end(), bt.end(), bl.end()]))
}

/// The SIMD decoding state of one stream: its 32 states as two vectors,
/// its context map, tables and words.
struct Decoder<'a> {
    xa: __m512i,
    xb: __m512i,
    map: [__m512i; 4],
    /// Coded in contexts (else every symbol in table 0).
    ctxd: bool,
    tab: *const i32,
    data: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    /// Loads the states `x`; `ctxd`: the stream is coded in contexts.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn new(ctxd: bool, map: &[u8; 256], tab: &'a [u32; DTAB], data: &'a [u8], x: &[u32; LANES]) -> Self {
        // SAFETY: `x` has 32 states, `map` 256 bytes.
        unsafe {
            Decoder {
                xa: _mm512_loadu_si512(x.as_ptr().cast()),
                xb: _mm512_loadu_si512(x.as_ptr().add(16).cast()),
                map: std::array::from_fn(|k| _mm512_loadu_si512(map.as_ptr().add(64 * k).cast())),
                ctxd,
                tab: tab.as_ptr().cast::<i32>(),
                data,
                pos: 0,
            }
        }
    }

    /// Stores the states back into `x`; returns the bytes consumed.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn finish(&self, x: &mut [u32; LANES]) -> usize {
        // SAFETY: `x` has 32 states.
        unsafe {
            _mm512_storeu_si512(x.as_mut_ptr().cast(), self.xa);
            _mm512_storeu_si512(x.as_mut_ptr().add(16).cast(), self.xb);
        }
        self.pos
    }

    /// Decodes the group of `LANES` symbols at `i` into `out`, in the
    /// contexts at `i` of `ctx` (when coded in contexts); false when the
    /// stream's words run out first (the states are then unchanged, the
    /// group's output bytes not to be used).
    ///
    /// # Safety
    ///
    /// `i + LANES <= out.len()` and, when coded in contexts, `ctx` holds
    /// at least `i + LANES` bytes; the CPU has the features [`available`]
    /// checks.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vbmi2,popcnt")]
    unsafe fn group(&mut self, out: &mut [u8], ctx: Option<&[u8]>, i: usize) -> bool {
        if self.room() {
            // SAFETY: the caller's promise, and the words are there.
            unsafe { self.fast_group(out, ctx, i) };
            return true;
        }
        // SAFETY: the caller's promise.
        unsafe {
            let Some(s) = self.decode::<true>(Self::contexts(ctx, i)) else { return false };
            _mm256_storeu_si256(out.as_mut_ptr().add(i).cast(), s);
        }
        true
    }

    /// The 32 context bytes at `i` of `ctx` (zero without).
    ///
    /// # Safety
    ///
    /// `ctx`, when given, holds at least `i + LANES` bytes.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn contexts(ctx: Option<&[u8]>, i: usize) -> __m256i {
        match ctx {
            // SAFETY: the caller's promise.
            Some(c) => unsafe { _mm256_loadu_si256(c.as_ptr().add(i).cast()) },
            None => _mm256_setzero_si256(),
        }
    }

    /// Whether the words of one more group are surely there (at most 64
    /// bytes: two per state).
    #[inline]
    fn room(&self) -> bool {
        self.pos + 64 <= self.data.len()
    }

    /// [`Decoder::group`] when [`Decoder::room`]: no check, plain loads.
    ///
    /// # Safety
    ///
    /// As for [`Decoder::group`], and [`Decoder::room`].
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vbmi2,popcnt")]
    unsafe fn fast_group(&mut self, out: &mut [u8], ctx: Option<&[u8]>, i: usize) {
        // SAFETY: the caller's promises.
        unsafe {
            let s = self.decode::<false>(Self::contexts(ctx, i)).unwrap_or_else(|| _mm256_setzero_si256());
            _mm256_storeu_si256(out.as_mut_ptr().add(i).cast(), s);
        }
    }

    /// Decodes the next group of `LANES` symbols, in the contexts `c` (32
    /// context bytes, used when the stream is coded in contexts), and
    /// returns them; `None` when the words run out first (only checked
    /// with `EXACT`; the states are then unchanged). `EXACT`: check that
    /// the words are there and load only those used, else load 64 bytes
    /// at `pos` (the caller checked [`Decoder::room`]).
    ///
    /// # Safety
    ///
    /// Without `EXACT`, [`Decoder::room`]; the CPU has the features
    /// [`available`] checks.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vbmi2,popcnt")]
    unsafe fn decode<const EXACT: bool>(&mut self, c: __m256i) -> Option<__m256i> {
        // SAFETY (all loads below): the words are loaded only where the
        // masks say, inside `data` (checked before the loads); gathered
        // indices are `(t & 15) << 12 | slot < DTAB`.
        unsafe {
            let mask = _mm512_set1_epi32(MASK as i32);
            let one = _mm512_set1_epi32(1);
            let lv = _mm512_set1_epi32(L as i32);
            let cmask = _mm512_set1_epi32((MAX_CTX - 1) as i32);
            let [m0, m1, m2, m3] = self.map;
            let (ta, tb) = match self.ctxd {
                true => {
                    let cb = _mm512_castsi256_si512(c);
                    let lo = _mm512_permutex2var_epi8(m0, cb, m1);
                    let hi = _mm512_permutex2var_epi8(m2, cb, m3);
                    let t = _mm512_mask_mov_epi8(lo, _mm512_movepi8_mask(cb), hi);
                    let ta = _mm512_cvtepu8_epi32(_mm512_castsi512_si128(t));
                    let tb = _mm512_cvtepu8_epi32(_mm512_extracti32x4_epi32::<1>(t));
                    (
                        _mm512_slli_epi32::<SCALE_BITS>(_mm512_and_si512(ta, cmask)),
                        _mm512_slli_epi32::<SCALE_BITS>(_mm512_and_si512(tb, cmask)),
                    )
                }
                false => (_mm512_setzero_si512(), _mm512_setzero_si512()),
            };
            let (xa, xb, tp, data) = (self.xa, self.xb, self.tab, self.data);
            let sa = _mm512_and_si512(xa, mask);
            let sb = _mm512_and_si512(xb, mask);
            let ea = _mm512_i32gather_epi32::<4>(_mm512_or_si512(ta, sa), tp);
            let eb = _mm512_i32gather_epi32::<4>(_mm512_or_si512(tb, sb), tp);
            let fa = _mm512_add_epi32(_mm512_and_si512(_mm512_srli_epi32::<8>(ea), mask), one);
            let fb = _mm512_add_epi32(_mm512_and_si512(_mm512_srli_epi32::<8>(eb), mask), one);
            let va = _mm512_sub_epi32(
                _mm512_add_epi32(_mm512_mullo_epi32(fa, _mm512_srli_epi32::<SCALE_BITS>(xa)), sa),
                _mm512_srli_epi32::<20>(ea),
            );
            let vb = _mm512_sub_epi32(
                _mm512_add_epi32(_mm512_mullo_epi32(fb, _mm512_srli_epi32::<SCALE_BITS>(xb)), sb),
                _mm512_srli_epi32::<20>(eb),
            );
            let syms = _mm256_set_m128i(_mm512_cvtepi32_epi8(eb), _mm512_cvtepi32_epi8(ea));
            let ka = _mm512_cmplt_epu32_mask(va, lv);
            let kb = _mm512_cmplt_epu32_mask(vb, lv);
            let (na, nb) = (2 * ka.count_ones() as usize, 2 * kb.count_ones() as usize);
            if EXACT && self.pos + na + nb > data.len() {
                // The words run out (a truncated stream): the scalar loop
                // redoes this group, and reports it.
                return None;
            }
            let (pa, pb) = (data.as_ptr().add(self.pos), data.as_ptr().add(self.pos + na));
            let (wa, wb) = if !EXACT {
                // Far from the end: two plain 32-byte loads, expanded.
                (
                    _mm256_maskz_expand_epi16(ka, _mm256_loadu_si256(pa.cast())),
                    _mm256_maskz_expand_epi16(kb, _mm256_loadu_si256(pb.cast())),
                )
            } else {
                // Near it: only the words used are loaded, `na` bytes at
                // `pos` and `nb` after them, inside `data` (checked above).
                (_mm256_maskz_expandloadu_epi16(ka, pa.cast()), _mm256_maskz_expandloadu_epi16(kb, pb.cast()))
            };
            self.xa =
                _mm512_mask_mov_epi32(va, ka, _mm512_or_si512(_mm512_slli_epi32::<16>(va), _mm512_cvtepu16_epi32(wa)));
            self.xb =
                _mm512_mask_mov_epi32(vb, kb, _mm512_or_si512(_mm512_slli_epi32::<16>(vb), _mm512_cvtepu16_epi32(wb)));
            self.pos += na + nb;
            Some(syms)
        }
    }
}

/// Byte permutation patterns of the encoder.
///
/// The encoder keeps its 32 states lane-reversed: vector `A` holds states
/// 31..16 (lane `l`: state `31 - l`), vector `B` states 15..0. Then the
/// renormalization words of a group, compressed in lane order and reversed,
/// come out right-aligned in decoding order.
struct Patterns {
    /// Gather indices `symbol | table << 8` (zero-extended to 32 bits) for
    /// `A` and `B` of the high and the low group of 32 out of 64 symbols
    /// (`permutex2var_epi8(symbols, p, tables)` masked with [`IDX_BYTES`]).
    hi_a: __m512i,
    hi_b: __m512i,
    lo_a: __m512i,
    lo_b: __m512i,
    /// The low 16 bits of the states of `A` then `B`, as 32 words.
    words: __m512i,
    /// Reverses 32 words.
    reverse: __m512i,
}

/// The bytes of a 32-bit index the index patterns fill (the low two).
const IDX_BYTES: u64 = 0x3333_3333_3333_3333;

/// A pattern of 64 bytes, byte `k` being `f(k)`.
#[target_feature(enable = "avx512f")]
fn pattern(f: impl Fn(usize) -> usize) -> __m512i {
    let p: [u8; 64] = std::array::from_fn(|k| f(k) as u8);
    // SAFETY: `p` is 64 bytes.
    unsafe { _mm512_loadu_si512(p.as_ptr().cast()) }
}

impl Patterns {
    #[target_feature(enable = "avx512f")]
    fn new() -> Patterns {
        // Lane `l` of a vector holding symbols `top - l`: its symbol byte
        // (from the first table) then its table byte (from the second).
        let idx = |top: usize| pattern(move |k| if k % 4 == 0 { top - k / 4 } else { 64 + top - k / 4 });
        Patterns {
            hi_a: idx(63),
            hi_b: idx(47),
            lo_a: idx(31),
            lo_b: idx(15),
            words: pattern(|k| (k / 32) * 64 + (k % 32) / 2 * 4 + k % 2),
            reverse: pattern(|k| if k % 2 == 0 { 31 - k / 2 } else { 0 }),
        }
    }
}

/// One encoding step of 16 states `x` with the packed table entries `e`
/// (`f | cum << 16`): returns the new states and the lanes that emit their
/// low 16 bits as a renormalization word, exactly as the scalar encoder.
///
/// `floor(v / f)` (`v < f << 20`, so the quotient is below 2^20) is
/// estimated in f32, every rounding downwards (`rcp14` and one Newton
/// step: the estimate is below the quotient by under 2^-21 of it, so by at
/// most one) and corrected with the exact integer remainder. For `f == 0`
/// (a symbol the table does not have, never coded with a fitted model)
/// the estimate is NaN, converted to `u32::MAX`, and the state becomes
/// `v`, as in the scalar encoder.
#[inline]
#[target_feature(enable = "avx512f")]
fn step(x: __m512i, e: __m512i) -> (__m512i, __mmask16) {
    const DOWN: i32 = _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC;
    let f = _mm512_and_si512(e, _mm512_set1_epi32(0xFFFF));
    let cum = _mm512_srli_epi32::<16>(e);
    let need = _mm512_cmpge_epu32_mask(_mm512_srli_epi32::<20>(x), f);
    let v = _mm512_mask_srli_epi32::<16>(x, need, x);
    let ff = _mm512_cvtepi32_ps(f);
    let r0 = _mm512_rcp14_ps(ff);
    let rf = _mm512_fmadd_round_ps::<DOWN>(r0, _mm512_fnmadd_round_ps::<DOWN>(ff, r0, _mm512_set1_ps(1.0)), r0);
    let q = _mm512_cvttps_epu32(_mm512_mul_round_ps::<DOWN>(_mm512_cvt_roundepu32_ps::<DOWN>(v), rf));
    // The remainder of the estimate, in [0, 2f).
    let r = _mm512_sub_epi32(v, _mm512_mullo_epi32(q, f));
    let cmpl = _mm512_sub_epi32(_mm512_set1_epi32(SCALE as i32), f);
    // `q * SCALE + r + cum`, one more `SCALE - f` when `q` was one short.
    let y = _mm512_add_epi32(_mm512_add_epi32(_mm512_slli_epi32::<SCALE_BITS>(q), cum), r);
    (_mm512_mask_add_epi32(y, _mm512_cmpge_epu32_mask(r, f), y, cmpl), need)
}

/// The table entries of 16 gather indices (`symbol | table << 8`): when
/// every symbol is 0 (most of a delta's high plane), picked from `zero`
/// (each table's entry of symbol 0, by table) with one permute instead of
/// a gather; the same entries either way.
///
/// # Safety
///
/// The indices must be below `ETAB`.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn entries(etab: &[u32; ETAB], i: __m512i, zero: __m512i) -> __m512i {
    if _mm512_test_epi32_mask(i, _mm512_set1_epi32(0xFF)) == 0 {
        // Tables are below MAX_CTX (16): the permute's 4 index bits.
        _mm512_permutexvar_epi32(_mm512_srli_epi32::<8>(i), zero)
    } else {
        // SAFETY: the caller's promise.
        unsafe { _mm512_i32gather_epi32::<4>(i, etab.as_ptr().cast()) }
    }
}

/// Codes one group of 32 symbols, gather indices `ia` (states 31..16) and
/// `ib` (states 15..0), into the lane-reversed states `x`; the words go
/// just below `*wp` in `words`. `zero` holds each table's entry of symbol
/// 0 ([`entries`]).
///
/// # Safety
///
/// `words` must be writable for the 64 bytes below `*wp`; the indices must
/// be below `ETAB`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi,avx512vbmi2,popcnt")]
unsafe fn group(
    etab: &[u32; ETAB],
    zero: __m512i,
    (ia, ib): (__m512i, __m512i),
    x: &mut [__m512i; 2],
    words: *mut u8,
    wp: &mut usize,
    p: &Patterns,
) {
    // SAFETY: the caller's promises.
    unsafe {
        let ea = entries(etab, ia, zero);
        let eb = entries(etab, ib, zero);
        let (ya, na) = step(x[0], ea);
        let (yb, nb) = step(x[1], eb);
        let w = _mm512_permutex2var_epi8(x[0], p.words, x[1]);
        let k = u32::from(na) | u32::from(nb) << 16;
        // Compressed in lane order (states descending), then reversed:
        // right-aligned in decoding order.
        let w = _mm512_permutexvar_epi16(p.reverse, _mm512_maskz_compress_epi16(k, w));
        _mm512_storeu_si512(words.add(*wp - 64).cast(), w);
        *wp -= 2 * k.count_ones() as usize;
        *x = [ya, yb];
    }
}

/// Encodes `data` (whole groups of `LANES` symbols, the last group first),
/// continuing from the states `x`; renormalization words are written back
/// from the end of `words` (which must have room for one per symbol) in
/// decoding order, as the scalar encoder does. Returns where they start.
/// The tables of `map` must be below `MAX_CTX`.
///
/// # Safety
///
/// The CPU must have the features [`available`] checks.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vbmi2,popcnt")]
pub(super) unsafe fn encode(
    data: &[u8],
    ctx: Option<&[u8]>,
    map: &[u8; 256],
    etab: &[u32; ETAB],
    words: &mut [u8],
    x: &mut [u32; LANES],
) -> usize {
    assert!(data.len().is_multiple_of(LANES) && words.len() >= 2 * data.len());
    assert!(ctx.is_none_or(|c| c.len() >= data.len()));
    assert!(map.iter().all(|&t| usize::from(t) < MAX_CTX));
    let p = Patterns::new();
    let reverse = _mm512_set_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let mut wp = words.len();
    let mut i = data.len();
    // SAFETY (all loads and stores below): `x` has 32 states, `map` 256
    // bytes; a block of 32 or 64 symbols at `i` reads that many data and
    // context bytes at `i` (`i` + that `<= data.len() <= ctx.len()`);
    // gathered indices are `symbol | table << 8 < ETAB` (tables below
    // `MAX_CTX`, asserted above); a group writes the 64 bytes below `wp`,
    // and `wp >= 2 * (i + 32)` before it: asserted at the start, and each
    // group of 32 symbols takes at most 64 bytes.
    unsafe {
        let mut s = [
            _mm512_permutexvar_epi32(reverse, _mm512_loadu_si512(x.as_ptr().add(16).cast())),
            _mm512_permutexvar_epi32(reverse, _mm512_loadu_si512(x.as_ptr().cast())),
        ];
        let m = [0, 64, 128, 192].map(|k| _mm512_loadu_si512(map.as_ptr().add(k).cast()));
        // The tables of 64 context bytes.
        let tables = |c: __m512i| {
            let lo = _mm512_permutex2var_epi8(m[0], c, m[1]);
            let hi = _mm512_permutex2var_epi8(m[2], c, m[3]);
            _mm512_mask_mov_epi8(lo, _mm512_movepi8_mask(c), hi)
        };
        let idx = |d: __m512i, t: __m512i, pa: __m512i, pb: __m512i| {
            (_mm512_maskz_permutex2var_epi8(IDX_BYTES, d, pa, t), _mm512_maskz_permutex2var_epi8(IDX_BYTES, d, pb, t))
        };
        let out = words.as_mut_ptr();
        let zero = _mm512_loadu_si512(std::array::from_fn::<u32, MAX_CTX, _>(|t| etab[t << 8]).as_ptr().cast());
        if (i / LANES) % 2 == 1 {
            i -= LANES;
            let d = _mm512_zextsi256_si512(_mm256_loadu_si256(data.as_ptr().add(i).cast()));
            let t = match ctx {
                Some(c) => tables(_mm512_zextsi256_si512(_mm256_loadu_si256(c.as_ptr().add(i).cast()))),
                None => _mm512_setzero_si512(),
            };
            group(etab, zero, idx(d, t, p.lo_a, p.lo_b), &mut s, out, &mut wp, &p);
        }
        while i > 0 {
            i -= 2 * LANES;
            let d = _mm512_loadu_si512(data.as_ptr().add(i).cast());
            let t = match ctx {
                Some(c) => tables(_mm512_loadu_si512(c.as_ptr().add(i).cast())),
                None => _mm512_setzero_si512(),
            };
            group(etab, zero, idx(d, t, p.hi_a, p.hi_b), &mut s, out, &mut wp, &p);
            group(etab, zero, idx(d, t, p.lo_a, p.lo_b), &mut s, out, &mut wp, &p);
        }
        _mm512_storeu_si512(x.as_mut_ptr().add(16).cast(), _mm512_permutexvar_epi32(reverse, s[0]));
        _mm512_storeu_si512(x.as_mut_ptr().cast(), _mm512_permutexvar_epi32(reverse, s[1]));
    }
    wp
}
