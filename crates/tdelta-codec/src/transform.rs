//! Element-wise bit transforms and byte-plane (de)interleaving.
//!
//! All transforms here are bijections on bit patterns, so every codec built
//! on them is bit-exact for any input (NaN payloads, -0.0, subnormals...).

use tdelta_format::DType;

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;

/// How the bits of one element are prepared before a plane split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Word {
    /// Opaque bytes: no transform, one plane.
    Bytes,
    /// Integer of `size` bytes, no bit transform.
    Int(usize),
    /// IEEE-like float of `size` bytes (sign bit on top).
    Float(usize),
}

impl Word {
    /// The word kind of a dtype.
    pub(crate) fn of(dtype: DType) -> Word {
        let size = (dtype.bits() / 8) as usize;
        if !dtype.bits().is_multiple_of(8) || size <= 1 && !dtype.is_float() {
            return Word::Bytes;
        }
        if dtype.is_float() {
            Word::Float(size)
        } else if dtype == DType::C64 {
            // Two f32 (real, imaginary): transform as floats of 4 bytes.
            Word::Float(4)
        } else {
            Word::Int(size)
        }
    }

    /// Bytes per transformed word.
    pub(crate) fn size(self) -> usize {
        match self {
            Word::Bytes => 1,
            Word::Int(s) | Word::Float(s) => s,
        }
    }

    /// True for floats.
    pub(crate) fn is_float(self) -> bool {
        matches!(self, Word::Float(_))
    }
}

/// Sign-magnitude float bits to an unsigned integer whose order is the
/// numeric order of the floats (NaNs at both ends).
macro_rules! ordered {
    ($t:ty, $x:expr) => {{
        let x: $t = $x;
        let sign = x >> (<$t>::BITS - 1);
        // Negative: flip all bits; positive: set the sign bit.
        x ^ ((0 as $t).wrapping_sub(sign) | (1 as $t) << (<$t>::BITS - 1))
    }};
}

/// Inverse of `ordered!`.
macro_rules! unordered {
    ($t:ty, $x:expr) => {{
        let x: $t = $x;
        let top = x >> (<$t>::BITS - 1);
        // top == 1: was positive, clear the sign bit; top == 0: flip all.
        x ^ ((top.wrapping_sub(1)) | (1 as $t) << (<$t>::BITS - 1))
    }};
}

macro_rules! zigzag {
    ($t:ty, $s:ty, $d:expr) => {{
        let d: $t = $d;
        (d << 1) ^ (((d as $s) >> (<$t>::BITS - 1)) as $t)
    }};
}

macro_rules! unzigzag {
    ($t:ty, $z:expr) => {{
        let z: $t = $z;
        (z >> 1) ^ (0 as $t).wrapping_sub(z & 1)
    }};
}

/// Forward transform of one word type: plane `p` of element `i` goes to
/// `planes[p * n + i]`. The float transform rotates the word left by one
/// so the sign becomes the lowest bit and the top byte holds the exponent.
/// The transform is chosen once, outside the loops (one monomorphized
/// loop per kind, which the compiler vectorizes).
macro_rules! gen_split {
    ($name:ident, $t:ty, $s:ty) => {
        #[inline(always)]
        fn $name(kind: Kind, float: bool, new: &[u8], base: &[u8], planes: &mut [u8], top: Option<&mut [u8]>) {
            #[inline(always)]
            fn go(
                new: &[u8],
                base: &[u8],
                planes: &mut [u8],
                (top, float): (Option<&mut [u8]>, bool),
                f: impl Fn($t, $t) -> $t,
            ) {
                const S: usize = std::mem::size_of::<$t>();
                let n = new.len() / S;
                let word = |b: &[u8]| <$t>::from_le_bytes(b.try_into().expect("word"));
                if S == 1 {
                    for (o, (a, b)) in planes.iter_mut().zip(new.chunks_exact(S).zip(base.chunks_exact(S))) {
                        *o = f(word(a), word(b)) as u8;
                    }
                    return;
                }
                if S == 2 {
                    let (lo, hi) = planes[..2 * n].split_at_mut(n);
                    let pairs = new.chunks_exact(S).zip(base.chunks_exact(S));
                    match top {
                        // The base's top plane in the same pass.
                        Some(t) => {
                            for (((l, h), t), (a, b)) in lo.iter_mut().zip(hi.iter_mut()).zip(t.iter_mut()).zip(pairs) {
                                let (a, b) = (word(a), word(b));
                                let v = f(a, b);
                                *l = v as u8;
                                *h = (v >> (8 * (S - 1))) as u8;
                                *t = if float {
                                    (b.rotate_left(1) >> (8 * (S - 1))) as u8
                                } else {
                                    (b >> (8 * (S - 1))) as u8
                                };
                            }
                        }
                        None => {
                            for ((l, h), (a, b)) in lo.iter_mut().zip(hi.iter_mut()).zip(pairs) {
                                let v = f(word(a), word(b));
                                *l = v as u8;
                                *h = (v >> (8 * (S - 1))) as u8;
                            }
                        }
                    }
                    return;
                }
                // Whole words at a time, then scattered to the planes.
                for (p, col) in planes.chunks_exact_mut(n.max(1)).take(S).enumerate() {
                    let shift = 8 * p as u32;
                    for (o, (a, b)) in col.iter_mut().zip(new.chunks_exact(S).zip(base.chunks_exact(S))) {
                        *o = (f(word(a), word(b)) >> shift) as u8;
                    }
                }
            }
            let base = if kind == Kind::Plain { new } else { base };
            let t = (top, float);
            match (kind, float) {
                (Kind::Plain, true) => go(new, base, planes, t, |a, _| a.rotate_left(1)),
                (Kind::Plain, false) => go(new, base, planes, t, |a, _| a),
                (Kind::Xor, true) => go(new, base, planes, t, |a, b| (a ^ b).rotate_left(1)),
                (Kind::Xor, false) => go(new, base, planes, t, |a, b| a ^ b),
                (Kind::Sub, true) => {
                    go(new, base, planes, t, |a, b| zigzag!($t, $s, ordered!($t, a).wrapping_sub(ordered!($t, b))))
                }
                (Kind::Sub, false) => go(new, base, planes, t, |a, b| zigzag!($t, $s, a.wrapping_sub(b))),
            }
        }
    };
}

macro_rules! gen_merge {
    ($name:ident, $t:ty) => {
        /// Inverse transform of one word type, from planes into `out`.
        /// Always inlined: [`merge`] compiles it once more for AVX2.
        #[inline(always)]
        fn $name(kind: Kind, float: bool, planes: &[u8], base: &[u8], out: &mut [u8]) {
            #[inline(always)]
            fn go(planes: &[u8], base: &[u8], out: &mut [u8], g: impl Fn($t, $t) -> $t) {
                const S: usize = std::mem::size_of::<$t>();
                let n = out.len() / S;
                let word = |b: &[u8]| <$t>::from_le_bytes(b.try_into().expect("word"));
                if S <= 2 {
                    let (lo, hi) =
                        if S == 2 { (&planes[..n], &planes[n..2 * n]) } else { (&planes[..n], &planes[..n]) };
                    for ((o, b), (&l, &h)) in out.chunks_exact_mut(S).zip(base.chunks_exact(S)).zip(lo.iter().zip(hi)) {
                        let v = if S == 2 { <$t>::from(h) << (8 * (S - 1)) | <$t>::from(l) } else { <$t>::from(l) };
                        o.copy_from_slice(&g(v, word(b)).to_le_bytes());
                    }
                    return;
                }
                let cols: [&[u8]; S] = std::array::from_fn(|p| &planes[p * n..(p + 1) * n]);
                for (i, (o, b)) in out.chunks_exact_mut(S).zip(base.chunks_exact(S)).enumerate() {
                    let mut bytes = [0u8; S];
                    for p in 0..S {
                        bytes[p] = cols[p][i];
                    }
                    o.copy_from_slice(&g(<$t>::from_le_bytes(bytes), word(b)).to_le_bytes());
                }
            }
            // `Plain` has no base: the planes stand in (same length).
            let base = if kind == Kind::Plain { planes } else { base };
            match (kind, float) {
                (Kind::Plain, true) => go(planes, base, out, |v, _| v.rotate_right(1)),
                (Kind::Plain, false) => go(planes, base, out, |v, _| v),
                (Kind::Xor, true) => go(planes, base, out, |v, b| v.rotate_right(1) ^ b),
                (Kind::Xor, false) => go(planes, base, out, |v, b| v ^ b),
                (Kind::Sub, true) => {
                    go(planes, base, out, |v, b| unordered!($t, ordered!($t, b).wrapping_add(unzigzag!($t, v))))
                }
                (Kind::Sub, false) => go(planes, base, out, |v, b| b.wrapping_add(unzigzag!($t, v))),
            }
        }
    };
}

gen_split!(split16, u16, i16);
gen_split!(split32, u32, i32);
gen_split!(split64, u64, i64);
gen_split!(split8, u8, i8);
gen_merge!(merge16, u16);
gen_merge!(merge32, u32);
gen_merge!(merge64, u64);
gen_merge!(merge8, u8);

/// Which element-wise transform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The value itself (floats rotated so the sign is the low bit).
    Plain,
    /// `new ^ base` (floats rotated like `Plain`).
    Xor,
    /// Zigzag of `ord(new) - ord(base)`, wrapping, where `ord` maps floats
    /// to order-preserving integers and is the identity on integers.
    Sub,
}

/// Transforms `new` (and `base` for deltas) into `word.size()` planes of
/// `new.len() / word.size()` bytes each, written to `planes` (same length
/// as `new`). `new.len()` must be a multiple of the word size.
pub(crate) fn split(word: Word, kind: Kind, new: &[u8], base: &[u8], planes: &mut [u8]) {
    split_top(word, kind, new, base, planes, None);
}

/// [`split`] of a delta (`kind` not `Plain`) that also writes the top
/// plane of `base` ([`top_plane`]) into `top`: for 16-bit words in the same
/// pass over `base`.
pub(crate) fn split_with_top(word: Word, kind: Kind, new: &[u8], base: &[u8], planes: &mut [u8], top: &mut [u8]) {
    debug_assert!(kind != Kind::Plain, "a plain split has no base");
    split_top(word, kind, new, base, planes, Some(top));
}

fn split_top(word: Word, kind: Kind, new: &[u8], base: &[u8], planes: &mut [u8], top: Option<&mut [u8]>) {
    #[cfg(target_arch = "x86_64")]
    if use_avx2() {
        #[target_feature(enable = "avx2")]
        fn wide(word: Word, kind: Kind, new: &[u8], base: &[u8], planes: &mut [u8], top: Option<&mut [u8]>) {
            split_any(word, kind, new, base, planes, top);
        }
        // SAFETY: the CPU runs AVX2 (checked above), all `wide` needs.
        return unsafe { wide(word, kind, new, base, planes, top) };
    }
    split_any(word, kind, new, base, planes, top);
}

/// [`split`] (and the top plane of `base` into `top`, when given) for
/// whatever instructions the caller is compiled for.
#[inline(always)]
fn split_any(word: Word, kind: Kind, new: &[u8], base: &[u8], planes: &mut [u8], top: Option<&mut [u8]>) {
    let f = word.is_float();
    if word.size() == 2 {
        return split16(kind, f, new, base, planes, top);
    }
    match word.size() {
        4 => split32(kind, f, new, base, planes, None),
        8 => split64(kind, f, new, base, planes, None),
        _ => split8(kind, f, new, base, planes, None),
    }
    if let Some(t) = top {
        top_plane_any(word, base, t);
    }
}

/// Inverse of [`split`]. On a CPU with AVX2 the same loops run compiled
/// for it (twice the lanes of the baseline's SSE2): this is the last pass
/// of every decode, over every byte a read returns.
pub(crate) fn merge(word: Word, kind: Kind, planes: &[u8], base: &[u8], out: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if use_avx2() {
        #[target_feature(enable = "avx2")]
        fn wide(word: Word, kind: Kind, planes: &[u8], base: &[u8], out: &mut [u8]) {
            merge_any(word, kind, planes, base, out);
        }
        // SAFETY: the CPU runs AVX2 (checked above), all `wide` needs.
        return unsafe { wide(word, kind, planes, base, out) };
    }
    merge_any(word, kind, planes, base, out)
}

/// Whether the CPU runs AVX2 (detected once; tests can turn it off to
/// compare both paths): the element-wise loops of [`split`], [`merge`] and
/// the top plane then run compiled for it (the same code and results; the
/// default build targets SSE2, eight 16-bit words at a time).
#[cfg(target_arch = "x86_64")]
fn use_avx2() -> bool {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    #[cfg(test)]
    if !AVX2.with(|c| c.get()) {
        return false;
    }
    *OK.get_or_init(|| is_x86_feature_detected!("avx2"))
}

#[cfg(all(test, target_arch = "x86_64"))]
thread_local! {
    /// Tests turn the AVX2 merge off to check both paths agree.
    pub(crate) static AVX2: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

/// [`merge`] for whatever instructions the caller is compiled for.
#[inline(always)]
fn merge_any(word: Word, kind: Kind, planes: &[u8], base: &[u8], out: &mut [u8]) {
    let f = word.is_float();
    match word.size() {
        2 => merge16(kind, f, planes, base, out),
        4 => merge32(kind, f, planes, base, out),
        8 => merge64(kind, f, planes, base, out),
        _ => merge8(kind, f, planes, base, out),
    }
}

/// Writes the top byte of each float-rotated word of `src` (the exponent,
/// or its top 8 bits) to `out` (one byte per word).
pub(crate) fn top_plane(word: Word, src: &[u8], out: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if use_avx2() {
        #[target_feature(enable = "avx2")]
        fn wide(word: Word, src: &[u8], out: &mut [u8]) {
            top_plane_any(word, src, out);
        }
        // SAFETY: the CPU runs AVX2 (checked above), all `wide` needs.
        return unsafe { wide(word, src, out) };
    }
    top_plane_any(word, src, out);
}

/// [`top_plane`] for whatever instructions the caller is compiled for.
#[inline(always)]
fn top_plane_any(word: Word, src: &[u8], out: &mut [u8]) {
    let s = word.size();
    if s == 2 {
        // The common case, in a loop the compiler vectorizes.
        let float = word.is_float();
        for (o, w) in out.iter_mut().zip(src.chunks_exact(2)) {
            let v = u16::from_le_bytes([w[0], w[1]]);
            *o = if float { (v.rotate_left(1) >> 8) as u8 } else { (v >> 8) as u8 };
        }
        return;
    }
    for (o, w) in out.iter_mut().zip(src.chunks_exact(s)) {
        let hi = w[s - 1];
        let lo = if s >= 2 { w[s - 2] } else { hi };
        *o = if word.is_float() { hi << 1 | lo >> 7 } else { hi };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::noise;

    /// The dispatched loops (AVX2 where the CPU has it) write what the
    /// baseline build of the same loops writes, for every word and kind.
    #[test]
    fn dispatched_split_and_top_plane_match_the_baseline_loops() {
        for (len, seed) in [(0usize, 1u64), (2, 2), (62, 3), (4096, 4), (65_544, 5)] {
            let new = noise(seed, len);
            let base = noise(seed + 100, len);
            for word in [Word::Float(2), Word::Float(4), Word::Float(8), Word::Int(2), Word::Int(4), Word::Bytes] {
                let s = word.size();
                let (new, base) = (&new[..len / s * s], &base[..len / s * s]);
                for kind in [Kind::Plain, Kind::Xor, Kind::Sub] {
                    let (mut a, mut b) = (vec![0u8; new.len()], vec![1u8; new.len()]);
                    split(word, kind, new, base, &mut a);
                    split_any(word, kind, new, base, &mut b, None);
                    assert_eq!(a, b, "{word:?} {kind:?} {len}");
                    if kind != Kind::Plain {
                        // With the base's top plane in the same pass: the
                        // same planes, and the top plane `top_plane` makes.
                        let (mut c, mut t) = (vec![2u8; new.len()], vec![3u8; new.len() / s]);
                        split_with_top(word, kind, new, base, &mut c, &mut t);
                        let mut want = vec![4u8; new.len() / s];
                        top_plane_any(word, base, &mut want);
                        assert_eq!((c, t), (a.clone(), want), "{word:?} {kind:?} {len}");
                    }
                }
                let (mut a, mut b) = (vec![0u8; new.len() / s], vec![1u8; new.len() / s]);
                top_plane(word, base, &mut a);
                top_plane_any(word, base, &mut b);
                assert_eq!(a, b, "{word:?} {len}");
            }
        }
    }
}
