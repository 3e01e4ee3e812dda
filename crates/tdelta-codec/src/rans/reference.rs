//! The scalar encoder as it was before the word buffer was filled from its
//! end and the AVX-512 encoder was added: the reference the tests hold the
//! encoder to, byte for byte.

use super::{EncSym, L, LANES, MAX_CTX, Model, SCALE, with_scratch};

impl Model {
    /// [`Model::encode`], as it was: encodes `data` (with the contexts the model was fitted on),
    /// appending to `out`; returns false (and leaves `out` as it was) when
    /// the result would not be smaller than `limit` bytes.
    pub(crate) fn encode_reference(&self, data: &[u8], ctx: Option<&[u8]>, limit: usize, out: &mut Vec<u8>) -> bool {
        if self.est >= limit {
            return false;
        }
        with_scratch(|s| {
            s.syms.resize(MAX_CTX * 256, EncSym::default());
            for (c, fr) in self.freqs.iter().enumerate() {
                let mut cum = 0u32;
                for (&f, e) in fr.iter().zip(&mut s.syms[c * 256..(c + 1) * 256]) {
                    *e = if f == 0 {
                        EncSym::default()
                    } else {
                        EncSym {
                            rcp: (1u64 << 44).div_ceil(u64::from(f)),
                            f,
                            cum: cum as u16,
                            cmpl: (SCALE - f) as u16,
                        }
                    };
                    cum += f;
                }
            }
            let syms: &[EncSym; MAX_CTX * 256] = (&s.syms[..MAX_CTX * 256]).try_into().expect("sized above");
            let mut words = vec![0u16; data.len() + 1];
            let words = &mut words[..];
            let mut wp = 0usize;
            let mut x = [L; LANES];
            let map = &self.map;
            let one = self.nctx == 1;
            #[inline(always)]
            fn put(x: &mut u32, e: &EncSym, words: &mut [u16], wp: &mut usize) {
                let need = (*x >> 20) >= e.f;
                words[*wp] = *x as u16;
                *wp += usize::from(need);
                let v = if need { *x >> 16 } else { *x };
                let q = ((u64::from(v) * e.rcp) >> 44) as u32;
                *x = v.wrapping_add(q.wrapping_mul(u32::from(e.cmpl))).wrapping_add(u32::from(e.cum));
            }
            let ctxs: &[u8] = match ctx {
                Some(c) if !one => &c[..data.len()],
                _ => &[],
            };
            let full = data.len() / LANES * LANES;
            // The tail first (encoding runs backwards).
            for i in (full..data.len()).rev() {
                let c = if ctxs.is_empty() { 0 } else { usize::from(map[usize::from(ctxs[i])]) & (MAX_CTX - 1) };
                let e = &syms[c << 8 | usize::from(data[i])];
                put(&mut x[i % LANES], e, words, &mut wp);
            }
            if ctxs.is_empty() {
                for d in data[..full].chunks_exact(LANES).rev() {
                    for j in (0..LANES).rev() {
                        put(&mut x[j], &syms[usize::from(d[j])], words, &mut wp);
                    }
                }
            } else {
                for (d, c) in data[..full].chunks_exact(LANES).zip(ctxs[..full].chunks_exact(LANES)).rev() {
                    for j in (0..LANES).rev() {
                        let t = usize::from(map[usize::from(c[j])]) & (MAX_CTX - 1);
                        put(&mut x[j], &syms[t << 8 | usize::from(d[j])], words, &mut wp);
                    }
                }
            }
            let size = self.header.len() + 4 * LANES + 2 * wp;
            if size >= limit {
                return false;
            }
            out.reserve(size);
            out.extend_from_slice(&self.header);
            for v in x {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend(words[..wp].iter().rev().flat_map(|w| w.to_le_bytes()));
            true
        })
    }
}
