//! The two byte planes of 16-bit words (BF16, F16) decoded straight into
//! the words: each group of 32 symbols of both planes is decoded by the
//! SIMD coder and transformed back at once (the contexts of a delta
//! computed from the base's words on the way), instead of decoding whole
//! planes, computing the base's top plane and merging in passes of their
//! own. The output is the same bytes; a stream that does not decode makes
//! the caller take the usual path, which reports the error.

use super::{DTAB, LANES, Parsed, finish, parse_header, simd, use_simd, with_scratch};
use crate::transform::{self, avx512::Words16};

/// Where one plane of a fused decode comes from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Plane<'a> {
    /// A rANS stream: a delta's planes in the contexts of the base's top
    /// plane, a `Plain` block's low plane in the top plane's.
    Rans(&'a [u8]),
    /// The plane's bytes.
    Bytes(&'a [u8]),
    /// One byte throughout.
    Const(u8),
}

/// Whether fused decodes run on this CPU (those of the SIMD coder).
pub(crate) fn available() -> bool {
    #[cfg(test)]
    if !FUSED.with(|f| f.get()) {
        return false;
    }
    simd::available() && use_simd()
}

#[cfg(test)]
thread_local! {
    /// Tests turn fused decodes off to compare them with the usual path.
    pub(crate) static FUSED: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

#[cfg(test)]
mod tests;

/// Decodes the 16-bit words of `out` from their planes `[top, low]`
/// (`out.len() / 2` bytes each) transformed back by `w` (against `base`,
/// as long as `out`, for a delta): what decoding each plane and merging
/// them writes. False when not done: not [`available`], or a plane does
/// not decode (`out` is then unspecified).
pub(crate) fn words16(codec: &'static str, planes: [Plane<'_>; 2], w: Words16, base: &[u8], out: &mut [u8]) -> bool {
    if !available() || !out.len().is_multiple_of(2) || (w.delta() && base.len() != out.len()) {
        return false;
    }
    with_scratch(|s| {
        s.dtab.resize(2 * DTAB, 0);
        let (ta, tb) = s.dtab.split_at_mut(DTAB);
        let ta: &mut [u32; DTAB] = ta.try_into().expect("sized above");
        let tb: &mut [u32; DTAB] = (&mut tb[..DTAB]).try_into().expect("sized above");
        run(codec, planes, [ta, tb], w, base, out).is_some()
    })
}

/// [`words16`] with the decode tables `tabs` of the two planes: the whole
/// groups in the SIMD loop, then the last words (under a group) as usual.
fn run(
    codec: &'static str,
    planes: [Plane<'_>; 2],
    tabs: [&mut [u32; DTAB]; 2],
    w: Words16,
    base: &[u8],
    out: &mut [u8],
) -> Option<()> {
    let [ta, tb] = tabs;
    let mut heads = parse_heads(codec, planes, [&mut *ta, &mut *tb], w.delta(), out.len() / 2)?;
    let (ta, tb): (&[u32; DTAB], &[u32; DTAB]) = (ta, tb);
    let both = simd_planes(planes, &mut heads, [ta, tb])?;
    // SAFETY: the CPU has the SIMD coder's features (`available`).
    let (full, pos) = unsafe { simd::run_words16(both, w, base, out)? };
    let base = if w.delta() { &base[2 * full..] } else { &[][..] };
    finish_words(codec, planes, heads, [ta, tb], pos, full, w, base, &mut out[2 * full..])
}

/// Decodes a block one delta from a full block, both in one pass: the
/// full block's planes `root` (`Plain`, transformed back by `wr`) give each
/// group's base words, which the delta's planes `top` (transformed back
/// by `wt`) are decoded against at once. What decoding the full block,
/// then the delta against it, writes; false when not done (not
/// [`available`], or a plane does not decode: `out` is then unspecified).
/// `codecs` name the payloads in errors: the full block's, the delta's.
pub(crate) fn words16_chain(
    codecs: [&'static str; 2],
    root: [Plane<'_>; 2],
    wr: Words16,
    top: [Plane<'_>; 2],
    wt: Words16,
    out: &mut [u8],
) -> bool {
    if !available() || !out.len().is_multiple_of(2) || wr.delta() || !wt.delta() {
        return false;
    }
    with_scratch(|s| {
        s.dtab.resize(4 * DTAB, 0);
        let mut tabs = s.dtab.chunks_exact_mut(DTAB).map(|t| <&mut [u32; DTAB]>::try_from(t).expect("DTAB"));
        let [t0, t1, t2, t3] = std::array::from_fn(|_| tabs.next().expect("four tables"));
        run_chain(codecs, root, [t0, t1], wr, top, [t2, t3], wt, out).is_some()
    })
}

/// [`words16_chain`] with the decode tables of the full block's planes
/// and of the delta's.
#[allow(clippy::too_many_arguments)]
fn run_chain(
    [rc, tc]: [&'static str; 2],
    root: [Plane<'_>; 2],
    [ra, rb]: [&mut [u32; DTAB]; 2],
    wr: Words16,
    top: [Plane<'_>; 2],
    [ta, tb]: [&mut [u32; DTAB]; 2],
    wt: Words16,
    out: &mut [u8],
) -> Option<()> {
    let n = out.len() / 2;
    let mut rh = parse_heads(rc, root, [&mut *ra, &mut *rb], false, n)?;
    let mut th = parse_heads(tc, top, [&mut *ta, &mut *tb], true, n)?;
    let (ra, rb, ta, tb): (&[u32; DTAB], &[u32; DTAB], &[u32; DTAB], &[u32; DTAB]) = (ra, rb, ta, tb);
    let (r, t) = (simd_planes(root, &mut rh, [ra, rb])?, simd_planes(top, &mut th, [ta, tb])?);
    // SAFETY: the CPU has the SIMD coder's features (`available`).
    let (full, [p0, p1, p2, p3]) = unsafe { simd::run_words16_chain(r, wr, t, wt, out)? };
    // The last words: the full block's, then the delta's against them.
    let rest = n - full;
    let mut base = [0u8; 2 * LANES];
    finish_words(rc, root, rh, [ra, rb], [p0, p1], full, wr, &[], &mut base[..2 * rest])?;
    finish_words(tc, top, th, [ta, tb], [p2, p3], full, wt, &base[..2 * rest], &mut out[2 * full..])
}

/// Decodes two full blocks (`Plain`, transformed back by `wa` and `wb`)
/// of the same length at once, their streams interleaved
/// ([`simd::run_words16_two`]): what decoding each alone writes. False when
/// not done (not [`available`], or a plane does not decode: the outputs
/// are then unspecified). `codecs` name the payloads in errors.
pub(crate) fn words16_two(
    codecs: [&'static str; 2],
    (a, wa, out_a): ([Plane<'_>; 2], Words16, &mut [u8]),
    (b, wb, out_b): ([Plane<'_>; 2], Words16, &mut [u8]),
) -> bool {
    if !available() || !out_a.len().is_multiple_of(2) || out_a.len() != out_b.len() || wa.delta() || wb.delta() {
        return false;
    }
    with_scratch(|s| {
        s.dtab.resize(4 * DTAB, 0);
        let mut tabs = s.dtab.chunks_exact_mut(DTAB).map(|t| <&mut [u32; DTAB]>::try_from(t).expect("DTAB"));
        let [t0, t1, t2, t3] = std::array::from_fn(|_| tabs.next().expect("four tables"));
        run_two(codecs, (a, [t0, t1], wa, out_a), (b, [t2, t3], wb, out_b)).is_some()
    })
}

/// One full block of a [`words16_two`]: its planes, their decode tables,
/// its transform and its output.
type Full<'a, 'b> = ([Plane<'a>; 2], [&'b mut [u32; DTAB]; 2], Words16, &'b mut [u8]);

/// [`words16_two`] with each block's decode tables.
fn run_two([ca, cb]: [&'static str; 2], a: Full<'_, '_>, b: Full<'_, '_>) -> Option<()> {
    let (pa, [a0, a1], wa, out_a) = a;
    let (pb, [b0, b1], wb, out_b) = b;
    let n = out_a.len() / 2;
    let mut ha = parse_heads(ca, pa, [&mut *a0, &mut *a1], false, n)?;
    let mut hb = parse_heads(cb, pb, [&mut *b0, &mut *b1], false, n)?;
    let (a0, a1, b0, b1): (&[u32; DTAB], &[u32; DTAB], &[u32; DTAB], &[u32; DTAB]) = (a0, a1, b0, b1);
    let (sa, sb) = (simd_planes(pa, &mut ha, [a0, a1])?, simd_planes(pb, &mut hb, [b0, b1])?);
    // SAFETY: the CPU has the SIMD coder's features (`available`).
    let (full, [p0, p1, p2, p3]) = unsafe { simd::run_words16_two((sa, wa, &mut *out_a), (sb, wb, &mut *out_b))? };
    finish_words(ca, pa, ha, [a0, a1], [p0, p1], full, wa, &[], &mut out_a[2 * full..])?;
    finish_words(cb, pb, hb, [b0, b1], [p2, p3], full, wb, &[], &mut out_b[2 * full..])
}

/// Parses the headers of the rANS planes among `planes` (`[top, low]` of
/// `n` symbols each) into their tables `tabs`; the top plane has contexts
/// only in a delta, the low plane always. `None` when one does not parse
/// or a plane's bytes are not `n` long.
fn parse_heads<'a>(
    codec: &'static str,
    planes: [Plane<'a>; 2],
    tabs: [&mut [u32; DTAB]; 2],
    delta: bool,
    n: usize,
) -> Option<[Option<super::Header<'a>>; 2]> {
    let mut heads = [None, None];
    for (k, (plane, tab)) in planes.iter().zip(tabs).enumerate() {
        match *plane {
            Plane::Rans(src) => heads[k] = Some(parse_header(codec, src, [delta, true][k], tab).ok()?),
            Plane::Bytes(b) if b.len() != n => return None,
            _ => {}
        }
    }
    Some(heads)
}

/// The last words of a fused decode (under a group, from word `full` on,
/// into `out`): the planes decoded and merged as usual (against `base`,
/// the base's words from `full` on, for a delta), and every stream checked
/// to end where it should (`pos`: the bytes of words the SIMD loop used).
#[allow(clippy::too_many_arguments)]
fn finish_words(
    codec: &'static str,
    [pt, pl]: [Plane<'_>; 2],
    [mut ht, mut hl]: [Option<super::Header<'_>>; 2],
    [ta, tb]: [&[u32; DTAB]; 2],
    pos: [usize; 2],
    full: usize,
    w: Words16,
    base: &[u8],
    out: &mut [u8],
) -> Option<()> {
    let rest = out.len() / 2;
    let mut ctx = [0u8; LANES];
    if w.delta() {
        transform::top_plane(w.word(), base, &mut ctx[..rest]);
    }
    let mut tail = [0u8; 2 * LANES];
    let (low, top) = tail[..2 * rest].split_at_mut(rest);
    finish_plane(codec, pt, ht.as_mut(), ta, pos[0], full, &ctx[..rest], top)?;
    let ctx = if w.delta() { &ctx[..rest] } else { &*top };
    finish_plane(codec, pl, hl.as_mut(), tb, pos[1], full, ctx, low)?;
    transform::merge(w.word(), w.kind(), &tail[..2 * rest], base, out);
    Some(())
}

/// The SIMD loop's view of both planes of a block ([`simd_plane`]).
fn simd_planes<'a>(
    [pt, pl]: [Plane<'a>; 2],
    [ht, hl]: &'a mut [Option<super::Header<'_>>; 2],
    [tt, tl]: [&'a [u32; DTAB]; 2],
) -> Option<[simd::Plane<'a>; 2]> {
    Some([simd_plane(pt, ht.as_mut(), tt)?, simd_plane(pl, hl.as_mut(), tl)?])
}

/// The SIMD loop's view of a plane (a rANS stream's from its header).
fn simd_plane<'a>(
    plane: Plane<'a>,
    head: Option<&'a mut super::Header<'_>>,
    tab: &'a [u32; DTAB],
) -> Option<simd::Plane<'a>> {
    Some(match (plane, head) {
        (_, Some(h)) => simd::Plane::Rans { ctxd: h.ctxd, map: &h.map, tab, data: h.data, x: &mut h.x },
        (Plane::Bytes(b), None) => simd::Plane::Bytes(b),
        (Plane::Const(v), None) => simd::Plane::Const(v),
        (Plane::Rans(_), None) => return None,
    })
}

/// Writes the bytes of `plane` from symbol `from` (a multiple of `LANES`)
/// on into `out`: a rANS stream's decoded from where the SIMD loop left
/// it (`pos` bytes of words in, its states in `head`), in contexts `ctx`.
#[allow(clippy::too_many_arguments)]
fn finish_plane(
    codec: &'static str,
    plane: Plane<'_>,
    head: Option<&mut super::Header<'_>>,
    tab: &[u32; DTAB],
    pos: usize,
    from: usize,
    ctx: &[u8],
    out: &mut [u8],
) -> Option<()> {
    match (plane, head) {
        (_, Some(h)) => {
            let mut p = Parsed { map: h.map, ctx: h.ctxd.then_some(ctx), x: h.x, data: h.data };
            finish(codec, &mut p, tab, out, 0, pos).ok()
        }
        (Plane::Bytes(b), None) => {
            out.copy_from_slice(b.get(from..)?);
            Some(())
        }
        (Plane::Const(v), None) => {
            out.fill(v);
            Some(())
        }
        (Plane::Rans(_), None) => None,
    }
}
