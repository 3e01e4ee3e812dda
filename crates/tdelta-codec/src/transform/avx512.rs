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
