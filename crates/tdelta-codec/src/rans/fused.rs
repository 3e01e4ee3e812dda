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
    let n = out.len() / 2;
    // The top plane has contexts only in a delta; the low plane always.
    let contexts = [w.delta(), true];
    let [ta, tb] = tabs;
    let mut heads = [None, None];
    for (k, (plane, tab)) in planes.iter().zip([&mut *ta, &mut *tb]).enumerate() {
        match *plane {
            Plane::Rans(src) => heads[k] = Some(parse_header(codec, src, contexts[k], tab).ok()?),
            Plane::Bytes(b) if b.len() != n => return None,
            _ => {}
        }
    }
    let (ta, tb): (&[u32; DTAB], &[u32; DTAB]) = (ta, tb);
    let [ht, hl] = &mut heads;
    let [pt, pl] = planes;
    let both = [simd_plane(pt, ht.as_mut(), ta)?, simd_plane(pl, hl.as_mut(), tb)?];
    // SAFETY: the CPU has the SIMD coder's features (`available`).
    let (full, pos) = unsafe { simd::run_words16(both, w, base, out)? };
    // The last words (under a group): planes decoded and merged as usual,
    // and every stream checked to end where it should.
    let rest = n - full;
    let base = if w.delta() { &base[2 * full..] } else { &[][..] };
    let mut ctx = [0u8; LANES];
    if w.delta() {
        transform::top_plane(w.word(), base, &mut ctx[..rest]);
    }
    let mut tail = [0u8; 2 * LANES];
    let (low, top) = tail[..2 * rest].split_at_mut(rest);
    finish_plane(codec, pt, heads[0].as_mut(), ta, pos[0], full, &ctx[..rest], top)?;
    let ctx = if w.delta() { &ctx[..rest] } else { &*top };
    finish_plane(codec, pl, heads[1].as_mut(), tb, pos[1], full, ctx, low)?;
    transform::merge(w.word(), w.kind(), &tail[..2 * rest], base, &mut out[2 * full..]);
    Some(())
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
