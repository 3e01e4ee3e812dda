//! A static, context-conditioned rANS coder for byte streams.
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
//!                                      (k = 0: context never used)
//! u32 state0, u32 state1        both in [L, L << 8)
//! renormalization bytes
//! ```

use super::CodecError;
use super::streams::malformed;

/// Probability scale bits.
const SCALE_BITS: u32 = 11;
/// Sum of the frequencies of one table.
const SCALE: u32 = 1 << SCALE_BITS;
/// Lower bound of the normalized state.
const L: u32 = 1 << 23;
/// Most frequency tables per stream.
pub(crate) const MAX_CTX: usize = 16;
/// Symbols a context needs to get a table of its own.
const MIN_CTX_SYMBOLS: u32 = 4096;

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
            let f = ((u64::from(counts[s]) * u64::from(SCALE)) / total).max(1) as u32;
            freqs[s] = f;
            sum += f;
            if counts[s] > counts[best] {
                best = s;
            }
        }
    }
    if sum < SCALE {
        freqs[best] += SCALE - sum;
    }
    while sum > SCALE {
        // Take from the largest frequencies first.
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

/// Encodes `data` with contexts `ctx(i)`, appending to `out`; returns
/// false (and leaves `out` as it was) when the result would not be
/// smaller than `limit` bytes.
pub(crate) fn encode(data: &[u8], ctx: impl Fn(usize) -> u8, limit: usize, out: &mut Vec<u8>) -> bool {
    let start = out.len();
    // Context histogram, and the contexts that get their own table.
    let mut ch = [0u32; 256];
    for i in 0..data.len() {
        ch[ctx(i) as usize] += 1;
    }
    let mut order: Vec<usize> = (0..256).filter(|&c| ch[c] >= MIN_CTX_SYMBOLS).collect();
    order.sort_by_key(|&c| std::cmp::Reverse(ch[c]));
    let shared_needed = ch.iter().enumerate().any(|(c, &n)| n > 0 && !order[..order.len().min(MAX_CTX)].contains(&c));
    let own = order.len().min(if shared_needed { MAX_CTX - 1 } else { MAX_CTX });
    let nctx = (own + usize::from(shared_needed)).max(1);
    let mut map = [(nctx - 1) as u8; 256];
    for (k, &c) in order[..own].iter().enumerate() {
        map[c] = k as u8;
    }
    // Symbol histograms per table.
    let mut counts = vec![[0u32; 256]; nctx];
    for (i, &b) in data.iter().enumerate() {
        counts[map[ctx(i) as usize] as usize][b as usize] += 1;
    }
    // Tables: freq and cumulative, packed as freq | cum << 16, and the
    // reciprocal of freq (floor(x / f) == (x * rcp) >> 42 for x < 2^31).
    let mut tables = vec![[0u32; 256]; nctx];
    let mut rcps = vec![[0u64; 256]; nctx];
    out.push(nctx as u8);
    if nctx > 1 {
        out.extend_from_slice(&map);
    }
    let mut freqs = [0u32; 256];
    for (c, t) in tables.iter_mut().enumerate() {
        normalize(&counts[c], &mut freqs);
        let k = freqs.iter().rposition(|&f| f > 0).map_or(0, |p| p + 1);
        out.extend_from_slice(&(k as u16).to_le_bytes());
        let mut cum = 0u32;
        for s in 0..k {
            let f = freqs[s];
            if f < 0x80 {
                out.push(f as u8);
            } else {
                out.extend_from_slice(&[(f & 0x7F) as u8 | 0x80, (f >> 7) as u8]);
            }
            t[s] = f | cum << 16;
            if f > 0 {
                rcps[c][s] = (1u64 << 42).div_ceil(u64::from(f));
            }
            cum += f;
        }
    }
    // Estimated size check: bail out early when clearly too big.
    let mut bits = 0f64;
    for (c, cnt) in counts.iter().enumerate() {
        for s in 0..256 {
            if cnt[s] > 0 {
                let f = tables[c][s] & 0xFFFF;
                bits += f64::from(cnt[s]) * (f64::from(SCALE) / f64::from(f)).log2();
            }
        }
    }
    let header = out.len() - start;
    if header + (bits / 8.0) as usize + 8 >= limit {
        out.truncate(start);
        return false;
    }
    // The coded bytes, built backwards.
    let mut rev: Vec<u8> = Vec::with_capacity((bits / 8.0) as usize + 64);
    let mut st = [L, L];
    for i in (0..data.len()).rev() {
        let c = map[ctx(i) as usize] as usize;
        let sym = data[i] as usize;
        let t = tables[c][sym];
        let (f, cum) = (t & 0xFFFF, t >> 16);
        let x = &mut st[i & 1];
        let x_max = ((L >> SCALE_BITS) << 8) * f;
        while *x >= x_max {
            rev.push(*x as u8);
            *x >>= 8;
        }
        let q = ((u128::from(*x) * u128::from(rcps[c][sym])) >> 42) as u32;
        *x = q * SCALE + (*x - q * f) + cum;
    }
    for x in [st[1], st[0]] {
        rev.extend_from_slice(&x.to_be_bytes());
    }
    if header + rev.len() >= limit {
        out.truncate(start);
        return false;
    }
    out.extend(rev.iter().rev());
    true
}

/// Decodes a stream made by [`encode`] into `out`, with the same contexts.
/// `tables` is scratch space.
pub(crate) fn decode(
    codec: &'static str,
    src: &[u8],
    ctx: Option<&[u8]>,
    out: &mut [u8],
    tables: &mut Vec<u32>,
) -> Result<(), CodecError> {
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
    }
    // Decode tables: slot -> sym | freq << 8 | cum << 20 (0 = unusable).
    tables.clear();
    tables.resize(nctx << SCALE_BITS, 0);
    for c in 0..nctx {
        let (k, r) = rest.split_at_checked(2).ok_or_else(|| bad("truncated table"))?;
        rest = r;
        let k = usize::from(u16::from_le_bytes([k[0], k[1]]));
        if k > 256 {
            return Err(bad("table longer than 256"));
        }
        let t = &mut tables[c << SCALE_BITS..(c + 1) << SCALE_BITS];
        let mut cum = 0u32;
        for s in 0..k {
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
            for slot in &mut t[cum as usize..(cum + f) as usize] {
                *slot = s as u32 | f << 8 | cum << 20;
            }
            cum += f;
        }
        if cum != SCALE && k != 0 {
            return Err(bad("frequencies do not sum to the scale"));
        }
    }
    let (head, data) = rest.split_at_checked(8).ok_or_else(|| bad("truncated states"))?;
    let mut st = [
        u32::from_le_bytes(head[..4].try_into().expect("4 bytes")),
        u32::from_le_bytes(head[4..].try_into().expect("4 bytes")),
    ];
    if st.iter().any(|&x| !(L..L << 8).contains(&x)) {
        return Err(bad("state out of range"));
    }
    let pos = match ctx {
        Some(c) if c.len() >= out.len() => run(out, c.iter().copied(), &map, tables, data, &mut st),
        _ => run(out, std::iter::repeat(0u8), &map, tables, data, &mut st),
    }
    .ok_or_else(|| bad("truncated data or empty context"))?;
    if st != [L, L] || pos != data.len() {
        return Err(bad("stream does not end where it should"));
    }
    Ok(())
}

/// The decoding loop; returns the bytes of `data` consumed, `None` on
/// truncated data or a symbol in an empty context.
#[inline(always)]
fn run(
    out: &mut [u8],
    mut ctx: impl Iterator<Item = u8>,
    map: &[u8; 256],
    tables: &[u32],
    data: &[u8],
    st: &mut [u32; 2],
) -> Option<usize> {
    let mut pos = 0usize;
    macro_rules! step {
        ($x:ident, $c:expr) => {{
            let slot = $x & (SCALE - 1);
            let e = tables[(usize::from(map[usize::from($c)]) << SCALE_BITS) | slot as usize];
            let f = (e >> 8) & 0xFFF;
            if f == 0 {
                return None;
            }
            $x = f * ($x >> SCALE_BITS) + slot - (e >> 20);
            while $x < L {
                $x = $x << 8 | u32::from(*data.get(pos)?);
                pos += 1;
            }
            e as u8
        }};
    }
    let [mut x0, mut x1] = *st;
    let mut pairs = out.chunks_exact_mut(2);
    for o in &mut pairs {
        let c0 = ctx.next()?;
        let c1 = ctx.next()?;
        o[0] = step!(x0, c0);
        o[1] = step!(x1, c1);
    }
    if let [o] = pairs.into_remainder() {
        *o = step!(x0, ctx.next()?);
    }
    *st = [x0, x1];
    Some(pos)
}
