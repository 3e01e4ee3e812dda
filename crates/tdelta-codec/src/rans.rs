//! A fast static, context-conditioned rANS coder for byte streams.
//!
//! 32 interleaved 32-bit states (symbol `i` uses state `i % 32`), 12-bit
//! probabilities, 16-bit renormalization words (at most one per symbol, so
//! renormalization is branchless), one table lookup per decoded symbol.
//! On x86-64 with AVX-512 (F, BW, VL, VBMI, VBMI2) the decoder runs 32
//! states as two vectors of 16 (gathered table lookups, renormalization
//! words placed with an expand); the scalar path decodes the same streams
//! and is used elsewhere and for the tails.
//!
//! Each symbol is coded with the frequency table of its context; the
//! context of symbol `i` is `map[ctx(i)]`, where `ctx(i)` is a byte the
//! decoder already knows (e.g. the base's exponent) and `map` (sent in the
//! stream) folds the 256 context bytes into at most [`MAX_CTX`] tables.
//!
//! Layout (little-endian), see `FORMAT.md`:
//!
//! ```text
//! u8 nctx                       1..=MAX_CTX
//! [u8; 256] map                 only when nctx > 1; every entry < nctx
//! nctx × { u16 k, k × varint freq }   freqs of symbols 0..k, sum SCALE
//!                                      (k = 0: the constant symbol 0)
//! 32 × u32 state                each >= L
//! u16 renormalization words
//! ```

use std::cell::RefCell;

use super::CodecError;
use super::streams::malformed;

/// Probability scale bits.
const SCALE_BITS: u32 = 12;
/// Sum of the frequencies of one table.
const SCALE: u32 = 1 << SCALE_BITS;
const MASK: u32 = SCALE - 1;
/// Lower bound of the normalized state; states live in `[L, 2^32)`.
const L: u32 = 1 << 16;
/// Interleaved states.
const LANES: usize = 32;
/// Most frequency tables per stream.
pub(crate) const MAX_CTX: usize = 16;
/// Symbols a context needs to get a table of its own.
const MIN_CTX_SYMBOLS: u32 = 4096;
/// Entries of the encode tables (all contexts).
const ETAB: usize = MAX_CTX << 8;
/// Entries of the decode table (all contexts).
const DTAB: usize = MAX_CTX << SCALE_BITS;

/// Encoder view of one symbol of one table.
#[derive(Debug, Clone, Copy, Default)]
struct EncSym {
    /// `ceil(2^44 / f)`: `floor(x / f) == (x * rcp) >> 44` for the
    /// states the encoder divides (`x < f << 20`).
    rcp: u64,
    /// Frequency.
    f: u32,
    /// Cumulative frequency.
    cum: u16,
    /// `SCALE - f`.
    cmpl: u16,
}

/// Per-thread scratch of the coder (grown, never shrunk).
#[derive(Default)]
struct Scratch {
    /// Joint counts: rows of 256 contexts, three sets (two copies of the
    /// first plane, even/odd symbols, and the second plane of a pair).
    counts: Vec<[u32; 256]>,
    /// Scalar encoder tables, `MAX_CTX × 256`.
    syms: Vec<EncSym>,
    /// Packed encoder tables of the SIMD encoder, `MAX_CTX × 256`.
    etab: Vec<u32>,
    /// Renormalization words as stored, filled from the end.
    words: Vec<u8>,
    /// Decode tables.
    dtab: Vec<u32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut s) => f(&mut s),
        Err(_) => f(&mut Scratch::default()),
    })
}

/// Normalizes `counts` to frequencies summing to `SCALE`, every symbol
/// seen getting at least 1.
fn normalize(counts: &[u32; 256], freqs: &mut [u32; 256]) {
    let total: u64 = counts.iter().map(|&c| u64::from(c)).sum();
    freqs.fill(0);
    if total == 0 {
        return;
    }
    let mut sum = 0u32;
    let mut best = 0usize;
    for s in 0..256 {
        if counts[s] > 0 {
            // Rounded to nearest.
            let f = ((u64::from(counts[s]) * u64::from(SCALE) + total / 2) / total).max(1) as u32;
            freqs[s] = f;
            sum += f;
            if counts[s] > counts[best] {
                best = s;
            }
        }
    }
    if sum < SCALE {
        freqs[best] += SCALE - sum;
        return;
    }
    // Over the scale: take from the largest frequencies, the best first
    // while it stays well above its share, then round-robin.
    let over = sum - SCALE;
    if freqs[best] > over * 2 {
        freqs[best] -= over;
        return;
    }
    while sum > SCALE {
        let mut order: Vec<usize> = (0..256).filter(|&s| freqs[s] > 1).collect();
        order.sort_by_key(|&s| std::cmp::Reverse(freqs[s]));
        for s in order {
            if sum == SCALE {
                break;
            }
            freqs[s] -= 1;
            sum -= 1;
        }
    }
}

/// A fitted model of one stream: which contexts get tables, the
/// frequencies, and the estimated coded size.
#[derive(Debug, Clone)]
pub(crate) struct Model {
    nctx: usize,
    map: [u8; 256],
    freqs: Vec<[u32; 256]>,
    /// Header bytes (context count, map, tables) as stored.
    header: Vec<u8>,
    /// Estimated stored size in bytes (header, states and words).
    pub(crate) est: usize,
    /// Share of the most frequent symbol, over all contexts (0..=1).
    pub(crate) top_share: f64,
    /// The most frequent symbol.
    pub(crate) top: u8,
}

/// Counts symbols per context byte and fits a model.
pub(crate) fn model(data: &[u8], ctx: Option<&[u8]>) -> Model {
    with_scratch(|s| {
        // Grown only (a shorter resize would zero the rows again when
        // [`model_pair`] grows it back); the rows not used here are zero.
        if s.counts.len() < 512 {
            s.counts.resize(512, [0; 256]);
        }
        let (ca, cb) = s.counts.split_at_mut(256);
        let mut ch = [0u32; 256];
        let mut used = [false; 256];
        match ctx {
            Some(c) => {
                let c = &c[..data.len()];
                let mut pairs = data.chunks_exact(2).zip(c.chunks_exact(2));
                for (d, c) in &mut pairs {
                    ca[usize::from(c[0])][usize::from(d[0])] += 1;
                    cb[usize::from(c[1])][usize::from(d[1])] += 1;
                    // Plain stores (no read-modify-write chain).
                    used[usize::from(c[0])] = true;
                    used[usize::from(c[1])] = true;
                }
                if data.len() % 2 == 1 {
                    let i = data.len() - 1;
                    ca[usize::from(c[i])][usize::from(data[i])] += 1;
                    used[usize::from(c[i])] = true;
                }
            }
            None => {
                let (a, b) = (&mut ca[0], &mut cb[0]);
                let mut c4 = [[0u32; 256]; 2];
                let mut it = data.chunks_exact(4);
                for q in &mut it {
                    a[usize::from(q[0])] += 1;
                    b[usize::from(q[1])] += 1;
                    c4[0][usize::from(q[2])] += 1;
                    c4[1][usize::from(q[3])] += 1;
                }
                for &x in it.remainder() {
                    a[usize::from(x)] += 1;
                }
                for k in 0..256 {
                    a[k] += c4[0][k] + c4[1][k];
                }
                used[0] = true;
            }
        }
        // Merge the two copies of the rows used into `ca`, and clear `cb`.
        let rows = if ctx.is_some() { 256 } else { 1 };
        for c in 0..rows {
            if !used[c] {
                continue;
            }
            let (ra, rb) = (&mut ca[c], &mut cb[c]);
            let mut sum = 0u32;
            for k in 0..256 {
                ra[k] += rb[k];
                sum += ra[k];
            }
            rb.fill(0);
            ch[c] = sum;
        }
        fit(ca, &used, &ch, rows, data.len())
    })
}

/// Fits a model to the merged counts `ca` of the contexts `used` (rows
/// `0..rows`, row sums `ch`) of a stream of `len` symbols; clears the rows.
fn fit(ca: &mut [[u32; 256]], used: &[bool; 256], ch: &[u32; 256], rows: usize, len: usize) -> Model {
    let mut totals = [0u32; 256];
    // The contexts that get their own table.
    let mut order: Vec<usize> = (0..256).filter(|&c| ch[c] >= MIN_CTX_SYMBOLS).collect();
    order.sort_by_key(|&c| std::cmp::Reverse(ch[c]));
    let own_max = order.len().min(MAX_CTX);
    let shared_needed = (0..256).any(|c| ch[c] > 0 && !order[..own_max].contains(&c));
    let own = order.len().min(if shared_needed { MAX_CTX - 1 } else { MAX_CTX });
    let nctx = (own + usize::from(shared_needed)).max(1);
    let mut map = [(nctx - 1) as u8; 256];
    for (k, &c) in order[..own].iter().enumerate() {
        map[c] = k as u8;
    }
    let mut counts = vec![[0u32; 256]; nctx];
    for c in 0..rows {
        if used[c] {
            let t = &mut counts[usize::from(map[c])];
            for k in 0..256 {
                t[k] += ca[c][k];
            }
            ca[c].fill(0);
        }
    }
    let mut freqs = vec![[0u32; 256]; nctx];
    let mut header = Vec::with_capacity(300 + nctx * 64);
    header.push(nctx as u8);
    if nctx > 1 {
        header.extend_from_slice(&map);
    }
    let mut bits = 0f64;
    for (cnt, fr) in counts.iter().zip(freqs.iter_mut()) {
        normalize(cnt, fr);
        let k = fr.iter().rposition(|&f| f > 0).map_or(0, |p| p + 1);
        header.extend_from_slice(&(k as u16).to_le_bytes());
        for &f in &fr[..k] {
            if f < 0x80 {
                header.push(f as u8);
            } else {
                header.extend_from_slice(&[(f & 0x7F) as u8 | 0x80, (f >> 7) as u8]);
            }
        }
        for sym in 0..256 {
            if cnt[sym] > 0 {
                bits += f64::from(cnt[sym]) * (f64::from(SCALE) / f64::from(fr[sym])).log2();
            }
        }
        for k in 0..256 {
            totals[k] += cnt[k];
        }
    }
    let (top, &tc) = totals.iter().enumerate().max_by_key(|&(_, c)| *c).expect("256 symbols");
    let est = header.len() + 4 * LANES + (bits / 8.0) as usize + 2;
    Model { nctx, map, freqs, header, est, top_share: f64::from(tc) / (len.max(1) as f64), top: top as u8 }
}

/// The models of two streams of the same length coded in the same
/// contexts (the two byte planes of 16-bit words), counted in one pass:
/// the same models as [`model`] of each. The second stream (a delta's
/// high plane, mostly zero) has only its nonzero symbols counted, eight
/// at a time from a mask of the nonzero bytes; its zeros are what is left
/// of each context's count. A run of one symbol in one context would
/// otherwise make every count wait on the one before.
pub(crate) fn model_pair(a: &[u8], b: &[u8], ctx: &[u8]) -> [Model; 2] {
    debug_assert!(a.len() == b.len() && ctx.len() >= a.len());
    with_scratch(|s| {
        if s.counts.len() < 768 {
            s.counts.resize(768, [0; 256]);
        }
        let (a0, rest) = s.counts.split_at_mut(256);
        let (a1, rest) = rest.split_at_mut(256);
        let b0 = &mut rest[..256];
        let mut used = [false; 256];
        let c = &ctx[..a.len()];
        const LOW7: u64 = 0x7F7F_7F7F_7F7F_7F7F;
        let mut it = a.chunks_exact(8).zip(b.chunks_exact(8)).zip(c.chunks_exact(8));
        for ((x, y), c) in &mut it {
            // Two copies for the first plane (even/odd symbols): no
            // read-modify-write chain on a frequent symbol.
            for k in (0..8).step_by(2) {
                a0[usize::from(c[k])][usize::from(x[k])] += 1;
                a1[usize::from(c[k + 1])][usize::from(x[k + 1])] += 1;
            }
            let w = u64::from_le_bytes(y.try_into().expect("8 bytes"));
            // The top bit of each nonzero byte.
            let mut m = (((w & LOW7) + LOW7) | w) & !LOW7;
            while m != 0 {
                let j = (m.trailing_zeros() / 8) as usize;
                b0[usize::from(c[j])][usize::from(y[j])] += 1;
                m &= m - 1;
            }
        }
        let done = a.len() / 8 * 8;
        for i in done..a.len() {
            let ci = usize::from(c[i]);
            a0[ci][usize::from(a[i])] += 1;
            if b[i] != 0 {
                b0[ci][usize::from(b[i])] += 1;
            }
        }
        // The contexts used are those whose rows counted a symbol: only
        // the rows between the least and the greatest context byte are
        // looked at (a vectorized pass; a flag stored per symbol would
        // double the stores of the counting loop).
        let lo = c.iter().copied().fold(u8::MAX, u8::min);
        let hi = c.iter().copied().fold(0, u8::max);
        let mut ch = [0u32; 256];
        for k in usize::from(lo)..=usize::from(hi) {
            let mut sum = 0u32;
            for v in 0..256 {
                a0[k][v] += a1[k][v];
                sum += a0[k][v];
            }
            if sum == 0 {
                continue;
            }
            a1[k].fill(0);
            used[k] = true;
            let nonzero: u32 = b0[k][1..].iter().sum();
            b0[k][0] = sum - nonzero;
            ch[k] = sum;
        }
        [fit(a0, &used, &ch, 256, a.len()), fit(b0, &used, &ch, 256, b.len())]
    })
}

impl Model {
    /// Encodes `data` (with the contexts the model was fitted on),
    /// appending to `out`; returns false (and leaves `out` as it was) when
    /// the result would not be smaller than `limit` bytes.
    pub(crate) fn encode(&self, data: &[u8], ctx: Option<&[u8]>, limit: usize, out: &mut Vec<u8>) -> bool {
        if self.est >= limit {
            return false;
        }
        let ctxs: Option<&[u8]> = match ctx {
            Some(c) if self.nctx > 1 => Some(&c[..data.len()]),
            _ => None,
        };
        with_scratch(|s| {
            // The words are written from the end of the buffer back, so
            // they end up in decoding order. Every word is written before
            // it is read: no clearing.
            let room = 2 * data.len() + 2;
            if s.words.len() < room {
                s.words.resize(room, 0);
            }
            let mut wp = room;
            let mut x = [L; LANES];
            let mut simd = false;
            #[cfg(target_arch = "x86_64")]
            if simd::available() && use_simd() {
                simd = true;
                self.packed_tables(&mut s.etab);
                let etab: &[u32; ETAB] = (&s.etab[..ETAB]).try_into().expect("sized above");
                let full = data.len() / LANES * LANES;
                wp = encode_tail(&self.map, etab, data, ctxs, full, &mut x, &mut s.words[..room], wp);
                // SAFETY: the CPU features `encode` needs were detected.
                wp = unsafe { simd::encode(&data[..full], ctxs, &self.map, etab, &mut s.words[..wp], &mut x) };
            }
            if !simd {
                self.scalar_tables(&mut s.syms);
                let syms: &[EncSym; ETAB] = (&s.syms[..ETAB]).try_into().expect("sized above");
                wp = encode_scalar(&self.map, syms, data, ctxs, &mut x, &mut s.words[..room], wp);
            }
            let words = &s.words[wp..room];
            let size = self.header.len() + 4 * LANES + words.len();
            if size >= limit {
                return false;
            }
            out.reserve(size);
            out.extend_from_slice(&self.header);
            for v in x {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(words);
            true
        })
    }

    /// Fills `syms` (grown to `ETAB`) with the scalar encoder's tables.
    fn scalar_tables(&self, syms: &mut Vec<EncSym>) {
        syms.resize(ETAB, EncSym::default());
        for (c, fr) in self.freqs.iter().enumerate() {
            let mut cum = 0u32;
            for (&f, e) in fr.iter().zip(&mut syms[c * 256..(c + 1) * 256]) {
                *e = if f == 0 {
                    EncSym::default()
                } else {
                    EncSym { rcp: (1u64 << 44).div_ceil(u64::from(f)), f, cum: cum as u16, cmpl: (SCALE - f) as u16 }
                };
                cum += f;
            }
        }
    }

    /// Fills `etab` (grown to `ETAB`) with `f | cum << 16` per symbol of
    /// each table (0 for the symbols a table does not have).
    #[cfg(target_arch = "x86_64")]
    fn packed_tables(&self, etab: &mut Vec<u32>) {
        etab.resize(ETAB, 0);
        for (c, fr) in self.freqs.iter().enumerate() {
            let mut cum = 0u32;
            for (&f, e) in fr.iter().zip(&mut etab[c * 256..(c + 1) * 256]) {
                *e = if f == 0 { 0 } else { f | cum << 16 };
                cum += f;
            }
        }
    }
}

/// Encodes one symbol of table entry `e` into state `x`, writing the
/// renormalization word (if any) just before byte `wp` of `words`.
#[inline(always)]
fn put(x: &mut u32, e: &EncSym, words: &mut [u8], wp: &mut usize) {
    let need = (*x >> 20) >= e.f;
    words[*wp - 2..*wp].copy_from_slice(&(*x as u16).to_le_bytes());
    *wp -= 2 * usize::from(need);
    let v = if need { *x >> 16 } else { *x };
    let q = ((u64::from(v) * e.rcp) >> 44) as u32;
    *x = v.wrapping_add(q.wrapping_mul(u32::from(e.cmpl))).wrapping_add(u32::from(e.cum));
}

/// The scalar encoder: codes all of `data` backwards (symbol `i` in state
/// `i % LANES`), the words written back from byte `wp` of `words` (which
/// has room for one word per symbol); returns where they start.
fn encode_scalar(
    map: &[u8; 256],
    syms: &[EncSym; ETAB],
    data: &[u8],
    ctxs: Option<&[u8]>,
    x: &mut [u32; LANES],
    words: &mut [u8],
    mut wp: usize,
) -> usize {
    let full = data.len() / LANES * LANES;
    let table = |c: u8| usize::from(map[usize::from(c)]) & (MAX_CTX - 1);
    match ctxs {
        None => {
            for i in (full..data.len()).rev() {
                put(&mut x[i % LANES], &syms[usize::from(data[i])], words, &mut wp);
            }
            for d in data[..full].chunks_exact(LANES).rev() {
                for j in (0..LANES).rev() {
                    put(&mut x[j], &syms[usize::from(d[j])], words, &mut wp);
                }
            }
        }
        Some(c) => {
            for i in (full..data.len()).rev() {
                put(&mut x[i % LANES], &syms[table(c[i]) << 8 | usize::from(data[i])], words, &mut wp);
            }
            for (d, c) in data[..full].chunks_exact(LANES).zip(c[..full].chunks_exact(LANES)).rev() {
                for j in (0..LANES).rev() {
                    put(&mut x[j], &syms[table(c[j]) << 8 | usize::from(d[j])], words, &mut wp);
                }
            }
        }
    }
    wp
}

/// Codes symbols `from..` of `data` (the tail after the whole groups of
/// `LANES`) backwards with the packed tables, like [`encode_scalar`] does
/// (a symbol of frequency 0, which a model never gives a symbol it
/// counted, is coded the same garbage way).
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
fn encode_tail(
    map: &[u8; 256],
    etab: &[u32; ETAB],
    data: &[u8],
    ctxs: Option<&[u8]>,
    from: usize,
    x: &mut [u32; LANES],
    words: &mut [u8],
    mut wp: usize,
) -> usize {
    for i in (from..data.len()).rev() {
        let t = ctxs.map_or(0, |c| usize::from(map[usize::from(c[i])]) & (MAX_CTX - 1));
        let e = etab[t << 8 | usize::from(data[i])];
        let (f, cum) = (e & 0xFFFF, e >> 16);
        let s = &mut x[i % LANES];
        let need = (*s >> 20) >= f;
        words[wp - 2..wp].copy_from_slice(&(*s as u16).to_le_bytes());
        wp -= 2 * usize::from(need);
        let v = if need { *s >> 16 } else { *s };
        let q = v.checked_div(f).unwrap_or(0);
        *s = (q << SCALE_BITS).wrapping_add(v - q * f).wrapping_add(cum);
    }
    wp
}

/// Decodes a stream made by [`Model::encode`] into `out`, with the same
/// contexts (`ctx` at least as long as `out`, or `None`).
pub(crate) fn decode(codec: &'static str, src: &[u8], ctx: Option<&[u8]>, out: &mut [u8]) -> Result<(), CodecError> {
    with_scratch(|s| {
        s.dtab.resize(DTAB, 0);
        let tab: &mut [u32; DTAB] = (&mut s.dtab[..DTAB]).try_into().expect("sized above");
        let mut p = parse(codec, src, ctx, out.len(), tab)?;
        let tab: &[u32; DTAB] = tab;
        let (mut i, mut pos) = (0usize, 0usize);
        #[cfg(target_arch = "x86_64")]
        if simd::available() && use_simd() {
            // SAFETY: the CPU features `run` needs were detected.
            (i, pos) = unsafe { simd::run(out, p.ctx, &p.map, tab, p.data, &mut p.x) };
        }
        finish(codec, &mut p, tab, out, i, pos)
    })
}

/// Decodes two streams of the same length and contexts, `src[k]` into
/// `out[k]`, as [`decode`] of each would; with the SIMD coder, both in
/// one loop (twice the independent work per step: a BF16 delta block's
/// two planes decode ~1.5 times as fast). When either fails, both are
/// decoded again one after the other, so that the error is [`decode`]'s,
/// first stream first (what is left in `out` is then unspecified).
pub(crate) fn decode_pair(
    codec: &'static str,
    src: [&[u8]; 2],
    ctx: Option<&[u8]>,
    out: [&mut [u8]; 2],
) -> Result<(), CodecError> {
    let [oa, ob] = out;
    #[cfg(target_arch = "x86_64")]
    if simd::available() && use_simd() && oa.len() == ob.len() {
        let paired = with_scratch(|s| {
            s.dtab.resize(2 * DTAB, 0);
            let (ta, tb) = s.dtab.split_at_mut(DTAB);
            let ta: &mut [u32; DTAB] = ta.try_into().expect("sized above");
            let tb: &mut [u32; DTAB] = (&mut tb[..DTAB]).try_into().expect("sized above");
            let (Ok(mut a), Ok(mut b)) =
                (parse(codec, src[0], ctx, oa.len(), ta), parse(codec, src[1], ctx, ob.len(), tb))
            else {
                return false;
            };
            let (ta, tb): (&[u32; DTAB], &[u32; DTAB]) = (ta, tb);
            // SAFETY: the CPU features `run_pair` needs were detected.
            let ([ia, ib], [pa, pb]) = unsafe {
                simd::run_pair(
                    [oa, ob],
                    [a.ctx, b.ctx],
                    [&a.map, &b.map],
                    [ta, tb],
                    [a.data, b.data],
                    [&mut a.x, &mut b.x],
                )
            };
            finish(codec, &mut a, ta, oa, ia, pa).is_ok() && finish(codec, &mut b, tb, ob, ib, pb).is_ok()
        });
        if paired {
            return Ok(());
        }
    }
    decode(codec, src[0], ctx, oa)?;
    decode(codec, src[1], ctx, ob)
}

/// A stream's header, parsed: its context map, the contexts it is coded
/// in (`None` for one context), its initial states and its words.
struct Parsed<'a> {
    map: [u8; 256],
    ctx: Option<&'a [u8]>,
    x: [u32; LANES],
    data: &'a [u8],
}

/// Parses the header of stream `src` of `len` symbols, building its
/// decode tables in `tab`; a stream coded in more than one context needs
/// `ctx` (at least `len` bytes).
fn parse<'a>(
    codec: &'static str,
    src: &'a [u8],
    ctx: Option<&'a [u8]>,
    len: usize,
    tab: &mut [u32; DTAB],
) -> Result<Parsed<'a>, CodecError> {
    let ctx = ctx.filter(|c| c.len() >= len).map(|c| &c[..len]);
    let h = parse_header(codec, src, ctx.is_some(), tab)?;
    Ok(Parsed { map: h.map, ctx: ctx.filter(|_| h.ctxd), x: h.x, data: h.data })
}

/// A stream's header without its contexts: whether it is coded in
/// contexts (more than one table), its map, states and words.
struct Header<'a> {
    ctxd: bool,
    map: [u8; 256],
    x: [u32; LANES],
    data: &'a [u8],
}

/// Parses the header of stream `src`, building its decode tables in `tab`;
/// `contexts`: whether the decoder will have the stream's contexts.
fn parse_header<'a>(
    codec: &'static str,
    src: &'a [u8],
    contexts: bool,
    tab: &mut [u32; DTAB],
) -> Result<Header<'a>, CodecError> {
    let bad = |r: &str| malformed(codec, format!("rans: {r}"));
    let (&nctx, mut rest) = src.split_first().ok_or_else(|| bad("empty"))?;
    let nctx = usize::from(nctx);
    if nctx == 0 || nctx > MAX_CTX {
        return Err(bad("bad context count"));
    }
    let mut map = [0u8; 256];
    if nctx > 1 {
        let (m, r) = rest.split_at_checked(256).ok_or_else(|| bad("truncated map"))?;
        if m.iter().any(|&c| usize::from(c) >= nctx) {
            return Err(bad("context map out of range"));
        }
        map.copy_from_slice(m);
        rest = r;
        if !contexts {
            return Err(bad("contexts needed but not given"));
        }
    }
    // Decode tables: slot -> sym | (freq - 1) << 8 | cum << 20.
    for c in 0..nctx {
        let (k, r) = rest.split_at_checked(2).ok_or_else(|| bad("truncated table"))?;
        rest = r;
        let k = usize::from(u16::from_le_bytes([k[0], k[1]]));
        if k > 256 {
            return Err(bad("table longer than 256"));
        }
        let t = &mut tab[c << SCALE_BITS..(c + 1) << SCALE_BITS];
        if k == 0 {
            // The constant symbol 0.
            t.fill(MASK << 8);
            continue;
        }
        let mut cum = 0u32;
        for sym in 0..k {
            let (&b0, r) = rest.split_first().ok_or_else(|| bad("truncated table"))?;
            rest = r;
            let mut f = u32::from(b0);
            if b0 & 0x80 != 0 {
                let (&b1, r) = rest.split_first().ok_or_else(|| bad("truncated table"))?;
                rest = r;
                f = (f & 0x7F) | u32::from(b1) << 7;
            }
            if f > SCALE - cum {
                return Err(bad("frequencies over the scale"));
            }
            if f > 0 {
                t[cum as usize..(cum + f) as usize].fill(sym as u32 | (f - 1) << 8 | cum << 20);
            }
            cum += f;
        }
        if cum != SCALE {
            return Err(bad("frequencies do not sum to the scale"));
        }
    }
    let (head, data) = rest.split_at_checked(4 * LANES).ok_or_else(|| bad("truncated states"))?;
    let mut x = [0u32; LANES];
    for (v, b) in x.iter_mut().zip(head.chunks_exact(4)) {
        *v = u32::from_le_bytes(b.try_into().expect("4 bytes"));
    }
    if x.iter().any(|&v| v < L) {
        return Err(bad("state out of range"));
    }
    Ok(Header { ctxd: nctx > 1, map, x, data })
}

/// Decodes the rest of stream `p` into `out` with the scalar loop, from
/// symbol `i` and byte `pos` on, and checks that it ends where it should.
fn finish(
    codec: &'static str,
    p: &mut Parsed<'_>,
    tab: &[u32; DTAB],
    out: &mut [u8],
    i: usize,
    pos: usize,
) -> Result<(), CodecError> {
    let bad = |r: &str| malformed(codec, format!("rans: {r}"));
    let map = &p.map;
    let pos = match p.ctx {
        Some(c) => run(out, |i| map[usize::from(c[i])], tab, p.data, &mut p.x, i, pos),
        None => run(out, |_| 0, tab, p.data, &mut p.x, i, pos),
    }
    .ok_or_else(|| bad("truncated data"))?;
    if p.x != [L; LANES] || pos != p.data.len() {
        return Err(bad("stream does not end where it should"));
    }
    Ok(())
}

/// One decoding step of state `x`; `w` is the next word (used only when
/// the state needs it); returns the symbol and whether `w` was used.
#[inline(always)]
fn step(x: &mut u32, t: usize, tab: &[u32; DTAB], w: u32) -> (u8, bool) {
    let slot = *x & MASK;
    let e = tab[(t & (MAX_CTX - 1)) << SCALE_BITS | slot as usize];
    let f = ((e >> 8) & MASK) + 1;
    let v = f.wrapping_mul(*x >> SCALE_BITS).wrapping_add(slot).wrapping_sub(e >> 20);
    let need = v < L;
    *x = if need { v << 16 | w } else { v };
    (e as u8, need)
}

/// The scalar decoding loop, from symbol `i` and byte `pos` of `data`
/// (`i` a multiple of `LANES`); returns the bytes of `data` consumed,
/// `None` on truncated data.
#[inline(always)]
fn run(
    out: &mut [u8],
    ctx: impl Fn(usize) -> u8,
    tab: &[u32; DTAB],
    data: &[u8],
    x: &mut [u32; LANES],
    mut i: usize,
    mut pos: usize,
) -> Option<usize> {
    let full = out.len() / LANES * LANES;
    // Fast path: at most 2 bytes per symbol, so the words are always there.
    for o in out[i.min(full)..full].chunks_exact_mut(LANES) {
        let Some(w) = data.get(pos..pos + 2 * LANES) else { break };
        let mut k = 0usize;
        for j in 0..LANES {
            let word = u32::from(u16::from_le_bytes([w[k], w[k + 1]]));
            let (s, used) = step(&mut x[j], usize::from(ctx(i + j)), tab, word);
            o[j] = s;
            k += usize::from(used) * 2;
        }
        pos += k;
        i += LANES;
    }
    // The rest, with checked reads.
    while i < out.len() {
        let j = i % LANES;
        let word = match data.get(pos..pos + 2) {
            Some(w) => u32::from(u16::from_le_bytes([w[0], w[1]])),
            None => 0,
        };
        let (s, used) = step(&mut x[j], usize::from(ctx(i)), tab, word);
        if used {
            if pos + 2 > data.len() {
                return None;
            }
            pos += 2;
        }
        out[i] = s;
        i += 1;
    }
    Some(pos)
}

#[cfg(test)]
thread_local! {
    /// Tests turn the SIMD coder off to check both paths agree.
    pub(crate) static SIMD: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

/// Whether the SIMD coder may be used (always, outside tests).
#[cfg(target_arch = "x86_64")]
#[inline]
fn use_simd() -> bool {
    #[cfg(test)]
    {
        SIMD.with(|s| s.get())
    }
    #[cfg(not(test))]
    {
        true
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod fused;
#[cfg(test)]
mod reference;
#[cfg(target_arch = "x86_64")]
mod simd;
