//! The 16-bit transforms of [`super`] on 32 words at a time, for decoders
//! that fuse them into the entropy decoder's loop (`rans::fused`): the
//! same bits as [`super::top_plane`] and [`super::merge`] of those words.

use std::arch::x86_64::*;

use super::{Kind, Word};

/// The inverse transform of 16-bit words of one kind.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Words16 {
    kind: Kind,
    word: Word,
    float: bool,
}

impl Words16 {
    /// The transform of `kind` on `word`, when its words are 16-bit.
    pub(crate) fn new(word: Word, kind: Kind) -> Option<Words16> {
        (word.size() == 2).then_some(Words16 { kind, word, float: word.is_float() })
    }

    /// The word.
    pub(crate) fn word(self) -> Word {
        self.word
    }

    /// The kind of transform.
    pub(crate) fn kind(self) -> Kind {
        self.kind
    }

    /// Whether it takes a base (a delta).
    pub(crate) fn delta(self) -> bool {
        self.kind != Kind::Plain
    }

    /// The context bytes of 32 base words `b`: their top plane.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(crate) fn contexts(self, b: __m512i) -> __m256i {
        // The top byte of the float-rotated word is bits 7..14.
        let t = if self.float { _mm512_srli_epi16::<7>(b) } else { _mm512_srli_epi16::<8>(b) };
        _mm512_cvtepi16_epi8(t)
    }

    /// The 32 words of planes `top` and `low` (32 bytes each), against
    /// base words `b` (ignored by `Plain`).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(crate) fn merge(self, top: __m256i, low: __m256i, b: __m512i) -> __m512i {
        let v = _mm512_or_si512(_mm512_slli_epi16::<8>(_mm512_cvtepu8_epi16(top)), _mm512_cvtepu8_epi16(low));
        let rot = |v: __m512i| {
            if self.float { _mm512_or_si512(_mm512_srli_epi16::<1>(v), _mm512_slli_epi16::<15>(v)) } else { v }
        };
        match self.kind {
            Kind::Plain => rot(v),
            Kind::Xor => _mm512_xor_si512(rot(v), b),
            Kind::Sub => {
                let sign = _mm512_set1_epi16(i16::MIN);
                // unzigzag: (v >> 1) ^ -(v & 1).
                let d = _mm512_xor_si512(
                    _mm512_srli_epi16::<1>(v),
                    _mm512_sub_epi16(_mm512_setzero_si512(), _mm512_and_si512(v, _mm512_set1_epi16(1))),
                );
                if !self.float {
                    return _mm512_add_epi16(b, d);
                }
                // ordered: negative flips all bits, positive the sign bit.
                let o = _mm512_xor_si512(b, _mm512_or_si512(_mm512_srai_epi16::<15>(b), sign));
                let s = _mm512_add_epi16(o, d);
                // unordered: top bit set flips the sign bit, else all bits.
                let flip = _mm512_or_si512(_mm512_xor_si512(_mm512_srai_epi16::<15>(s), _mm512_set1_epi16(-1)), sign);
                _mm512_xor_si512(s, flip)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::noise;

    /// On every 16-bit pattern of the planes, against random and special
    /// base words, for every kind and word: the contexts are the top plane
    /// and the merge writes the words `transform::merge` writes.
    #[test]
    fn words16_match_top_plane_and_merge() {
        if !(is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw")) {
            return;
        }
        let n = 1 << 16;
        // Plane values: every pattern once (low byte, then top byte).
        let low: Vec<u8> = (0..n).map(|v| v as u8).collect();
        let top: Vec<u8> = (0..n).map(|v| (v >> 8) as u8).collect();
        let mut base = noise(9, 2 * n);
        for (i, w) in [0x0000u16, 0x8000, 0x7FFF, 0xFFFF, 0x7F80, 0xFF80, 0x0001, 0x8001].iter().enumerate() {
            base[2 * i..2 * i + 2].copy_from_slice(&w.to_le_bytes());
        }
        let mut planes = low.clone();
        planes.extend_from_slice(&top);
        for word in [Word::Float(2), Word::Int(2)] {
            let mut ctx = vec![0u8; n];
            super::super::top_plane(word, &base, &mut ctx);
            for kind in [Kind::Plain, Kind::Xor, Kind::Sub] {
                let w = Words16::new(word, kind).expect("16-bit");
                let mut want = vec![0u8; 2 * n];
                super::super::merge(word, kind, &planes, &base, &mut want);
                let mut got = vec![0u8; 2 * n];
                let mut got_ctx = vec![0u8; n];
                for i in (0..n).step_by(32) {
                    // SAFETY: the CPU has AVX-512 F and BW (checked
                    // above); each group reads and writes inside the
                    // vectors (n is a multiple of 32).
                    unsafe {
                        let b = _mm512_loadu_si512(base.as_ptr().add(2 * i).cast());
                        let t = _mm256_loadu_si256(top.as_ptr().add(i).cast());
                        let l = _mm256_loadu_si256(low.as_ptr().add(i).cast());
                        _mm256_storeu_si256(got_ctx.as_mut_ptr().add(i).cast(), w.contexts(b));
                        _mm512_storeu_si512(got.as_mut_ptr().add(2 * i).cast(), w.merge(t, l, b));
                    }
                }
                assert!(got_ctx == ctx, "{word:?}: contexts differ from the top plane");
                assert!(got == want, "{word:?} {kind:?}: merged words differ");
            }
        }
    }
}
