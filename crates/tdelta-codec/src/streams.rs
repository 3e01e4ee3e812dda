//! The stream container shared by the plane codecs: a small header, then
//! each stream stored raw, as one constant byte, or as one zstd frame.
//!
//! Layout (all integers little-endian), see `FORMAT.md`:
//!
//! ```text
//! u8 count
//! count × { u8 method, u32 raw_len, u32 stored_len }
//! the stored bytes of each stream, in order, back to back
//! ```

use std::cell::RefCell;

use super::CodecError;

/// How one stream is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Method {
    /// The bytes as they are.
    Raw = 0,
    /// One zstd frame.
    Zstd = 1,
    /// One byte, repeated `raw_len` times.
    Const = 2,
    /// Context-conditioned rANS (`rans.rs`), contexts from the codec's
    /// context plane.
    Rans = 3,
}

/// Most streams a payload may hold.
pub(crate) const MAX_STREAMS: usize = 8;
/// Bytes of header per stream.
const ENTRY: usize = 9;

thread_local! {
    static CCTX: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    static DCTX: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
    /// The sample [`zstd_may_fit`] compresses.
    static SAMPLE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// zstd-compresses `src` into `dst` (whose length is the most it may
/// take); returns the compressed size, or `None` when it does not fit.
pub(crate) fn zstd_compress(src: &[u8], level: i32, dst: &mut [u8]) -> Option<usize> {
    CCTX.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().is_none_or(|(l, _)| *l != level) {
            *c = Some((level, zstd::bulk::Compressor::new(level).ok()?));
        }
        let (_, comp) = c.as_mut()?;
        comp.compress_to_buffer(src, dst).ok()
    })
}

/// zstd-compresses `src`, appending to `out`; returns false (and leaves
/// `out` as it was) when the frame would not be smaller than `src`.
pub(crate) fn zstd_append(src: &[u8], level: i32, out: &mut Vec<u8>) -> bool {
    zstd_append_within(src, level, usize::MAX, out)
}

/// Room zstd is given past the largest frame wanted: it needs a few bytes
/// more than the frame it writes (8 on every stream tried).
const ZSTD_ROOM: usize = 1024;

/// [`zstd_append`] of a frame that is kept only when at most `limit` bytes:
/// zstd is given little more room than that, so it gives up as soon as the
/// frame outgrows it and a frame that would be thrown away is not finished.
/// A frame kept is the one [`zstd_append`] makes (zstd's output depends on
/// the input and the level, not on the room).
pub(crate) fn zstd_append_within(src: &[u8], level: i32, limit: usize, out: &mut Vec<u8>) -> bool {
    let start = out.len();
    let room = limit.saturating_add(ZSTD_ROOM).min(src.len().saturating_sub(1));
    out.resize(start + room, 0);
    match zstd_compress(src, level, &mut out[start..]) {
        Some(n) if n <= limit => {
            out.truncate(start + n);
            true
        }
        _ => {
            out.truncate(start);
            false
        }
    }
}

/// Streams shorter than this are not sampled by [`zstd_may_fit`].
const SAMPLE_MIN: usize = 64 << 10;
/// Pieces of a stream [`zstd_may_fit`] compresses, evenly spread.
const SAMPLE_PIECES: usize = 8;
/// The share of a stream they cover (one in this many bytes).
const SAMPLE_EVERY: usize = 8;
/// Bytes of a frame that do not grow with its input (header, block
/// headers, checksum-free end): allowed to the sample on top of its share.
const FRAME_FIXED: usize = 32;

/// Whether a level-1 zstd frame of `s` may fit in `limit` bytes, judged
/// from the frame of a sample (an eighth of the stream, in pieces spread
/// over it): false only when that frame, scaled up, outgrows the limit by
/// a quarter (its fixed bytes not scaled), so that the full frame, which
/// would almost surely be thrown away, is not made. True for short
/// streams.
pub(crate) fn zstd_may_fit(s: &[u8], limit: usize) -> bool {
    if s.len() < SAMPLE_MIN {
        return true;
    }
    let piece = s.len() / (SAMPLE_PIECES * SAMPLE_EVERY);
    let stride = s.len() / SAMPLE_PIECES;
    SAMPLE.with(|b| {
        let mut b = b.borrow_mut();
        b.clear();
        for k in 0..SAMPLE_PIECES {
            b.extend_from_slice(&s[k * stride..k * stride + piece]);
        }
        let mut frame = Vec::new();
        let room = (limit.saturating_mul(5) / (4 * SAMPLE_EVERY)).saturating_add(FRAME_FIXED);
        zstd_append_within(&b, 1, room, &mut frame)
    })
}

/// Decompresses one zstd frame into exactly `out.len()` bytes.
pub(crate) fn zstd_decompress(codec: &'static str, src: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
    let r = DCTX.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(zstd::bulk::Decompressor::new()?);
        }
        d.as_mut().expect("set above").decompress_to_buffer(src, out)
    });
    match r {
        Ok(n) if n == out.len() => Ok(()),
        Ok(n) => Err(malformed(codec, format!("zstd stream decoded to {n} bytes, expected {}", out.len()))),
        Err(e) => Err(malformed(codec, format!("zstd stream: {e}"))),
    }
}

pub(crate) fn malformed(codec: &'static str, reason: String) -> CodecError {
    CodecError::Malformed { codec, reason }
}

/// A rough order-0 entropy test: true when `s` looks incompressible
/// (more than ~7.9 bits per byte), so zstd need not be tried.
fn looks_random(s: &[u8]) -> bool {
    if s.len() < 4096 {
        return false;
    }
    // Sample up to 64 KiB spread over the stream.
    let mut h = [0u32; 256];
    let step = (s.len() / 65536).max(1);
    let mut n = 0u32;
    for &b in s.iter().step_by(step) {
        h[b as usize] += 1;
        n += 1;
    }
    let nf = f64::from(n);
    let bits: f64 = h
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / nf;
            -p * p.log2()
        })
        .sum();
    bits > 7.9
}

/// How hard the stream encoder works for a smaller payload.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Policy {
    /// zstd level for zstd-coded streams.
    pub(crate) level: i32,
    /// A stream is entropy-coded only when that saves at least this share
    /// of its raw size (else it is stored raw, decoded at memcpy speed).
    pub(crate) min_gain: f64,
    /// A stream whose most frequent symbol has at least this share is
    /// tried with zstd level 1 (fast to decode when sparse), kept when
    /// not much larger than rANS.
    pub(crate) sparse: f64,
    /// How much larger (as a factor) the sparse zstd frame may be.
    pub(crate) sparse_slack: f64,
}

/// Builds a payload holding `streams`, each stored the smallest way found
/// under `policy`: with rANS (stream `i` coded in the contexts `ctxs[i]`,
/// when given) when `entropy` is set, else with zstd. `models[i]`, when
/// given, is stream `i`'s model already fitted (`rans::model` of it).
pub(crate) fn encode_streams(
    streams: &[&[u8]],
    ctxs: &[Option<&[u8]>],
    models: &mut [Option<super::rans::Model>],
    entropy: bool,
    policy: &Policy,
    out: &mut Vec<u8>,
) {
    debug_assert!(streams.len() <= MAX_STREAMS);
    out.clear();
    out.push(streams.len() as u8);
    let header = out.len();
    out.resize(header + ENTRY * streams.len(), 0);
    for (i, s) in streams.iter().enumerate() {
        let start = out.len();
        let method = if s.is_empty() {
            Method::Raw
        } else if entropy {
            let ctx = ctxs.get(i).copied().flatten();
            let m = models.get_mut(i).and_then(Option::take).unwrap_or_else(|| super::rans::model(s, ctx));
            let limit = ((s.len() as f64) * (1.0 - policy.min_gain)) as usize;
            // The most a sparse plane's zstd frame may take to be kept.
            let within = (m.est as f64 * policy.sparse_slack) as usize;
            if m.top_share >= 1.0 {
                out.push(m.top);
                Method::Const
            } else if m.top_share >= policy.sparse
                && zstd_may_fit(s, within)
                // Only a frame within the slack is kept: zstd stops past it.
                && zstd_append_within(s, 1, within, out)
                && (out.len() - start) as f64 <= m.est as f64 * policy.sparse_slack
            {
                Method::Zstd
            } else {
                out.truncate(start);
                if m.encode(s, ctx, limit.min(s.len()), out) {
                    Method::Rans
                } else {
                    out.extend_from_slice(s);
                    Method::Raw
                }
            }
        } else if s.iter().all(|&b| b == s[0]) {
            out.push(s[0]);
            Method::Const
        } else if looks_random(s) || !zstd_append(s, policy.level, out) {
            Method::Raw
        } else {
            Method::Zstd
        };
        if method == Method::Raw {
            out.truncate(start);
            out.extend_from_slice(s);
        }
        let stored = (out.len() - start) as u32;
        let e = &mut out[header + ENTRY * i..header + ENTRY * (i + 1)];
        e[0] = method as u8;
        e[1..5].copy_from_slice(&(s.len() as u32).to_le_bytes());
        e[5..9].copy_from_slice(&stored.to_le_bytes());
    }
}

/// One stream of a parsed payload.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stream<'a> {
    method: Method,
    /// Decoded length.
    pub(crate) raw_len: usize,
    data: &'a [u8],
}

/// Parses the header of a stream payload: it must hold exactly `count`
/// streams, and the stored lengths must add up to the payload exactly.
pub(crate) fn parse_streams<'a>(
    codec: &'static str,
    payload: &'a [u8],
    count: usize,
) -> Result<[Stream<'a>; MAX_STREAMS], CodecError> {
    debug_assert!(count <= MAX_STREAMS);
    let empty = Stream { method: Method::Raw, raw_len: 0, data: &[] };
    let mut out = [empty; MAX_STREAMS];
    let Some((&n, rest)) = payload.split_first() else {
        return Err(malformed(codec, "empty payload".into()));
    };
    if usize::from(n) != count {
        return Err(malformed(codec, format!("{n} streams, expected {count}")));
    }
    let Some((head, mut data)) = rest.split_at_checked(ENTRY * count) else {
        return Err(malformed(codec, "truncated stream header".into()));
    };
    for (i, e) in head.chunks_exact(ENTRY).enumerate() {
        let method = match e[0] {
            0 => Method::Raw,
            1 => Method::Zstd,
            2 => Method::Const,
            3 => Method::Rans,
            m => return Err(malformed(codec, format!("stream {i}: unknown method {m}"))),
        };
        let raw_len = u32::from_le_bytes(e[1..5].try_into().expect("4 bytes")) as usize;
        let stored = u32::from_le_bytes(e[5..9].try_into().expect("4 bytes")) as usize;
        let Some((s, rest)) = data.split_at_checked(stored) else {
            return Err(malformed(codec, format!("stream {i}: {stored} bytes past the payload end")));
        };
        let ok = match method {
            Method::Raw => stored == raw_len,
            Method::Const => stored == 1,
            Method::Zstd | Method::Rans => true,
        };
        if !ok {
            return Err(malformed(codec, format!("stream {i}: stored length {stored} for raw length {raw_len}")));
        }
        out[i] = Stream { method, raw_len, data: s };
        data = rest;
    }
    if !data.is_empty() {
        return Err(malformed(codec, format!("{} trailing bytes", data.len())));
    }
    Ok(out)
}

impl<'a> Stream<'a> {
    /// How the stream is stored, and its stored bytes.
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn stored(&self) -> (Method, &'a [u8]) {
        (self.method, self.data)
    }

    /// Decodes the stream into `out`, which must be `raw_len` long; `ctx`
    /// is the context plane of a rANS stream (as long as `out`).
    pub(crate) fn decode(&self, codec: &'static str, out: &mut [u8], ctx: Option<&[u8]>) -> Result<(), CodecError> {
        if out.len() != self.raw_len {
            return Err(malformed(codec, format!("stream of {} bytes, expected {}", self.raw_len, out.len())));
        }
        match self.method {
            Method::Raw => out.copy_from_slice(self.data),
            Method::Const => out.fill(self.data[0]),
            Method::Zstd => zstd_decompress(codec, self.data, out)?,
            Method::Rans => super::rans::decode(codec, self.data, ctx, out)?,
        }
        Ok(())
    }

    /// Decodes `self` into `out[0]`, then `other` into `out[1]`, both in
    /// contexts `ctx`, as [`Stream::decode`] of each would: two rANS
    /// streams in one pass of the coder.
    pub(crate) fn decode_with(
        &self,
        other: &Stream<'_>,
        codec: &'static str,
        out: [&mut [u8]; 2],
        ctx: Option<&[u8]>,
    ) -> Result<(), CodecError> {
        let [oa, ob] = out;
        let rans = |s: &Stream<'_>, o: &[u8]| s.method == Method::Rans && s.raw_len == o.len();
        if rans(self, oa) && rans(other, ob) {
            return super::rans::decode_pair(codec, [self.data, other.data], ctx, [oa, ob]);
        }
        self.decode(codec, oa, ctx)?;
        other.decode(codec, ob, ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream like the top plane of a small delta: zero but for one
    /// symbol in `density`.
    fn sparse(n: usize, density: u32) -> Vec<u8> {
        let mut x = 0x9E37_79B9u32;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                if x.is_multiple_of(density) { (x >> 8) as u8 } else { 0 }
            })
            .collect()
    }

    #[test]
    fn the_zstd_sample_refuses_only_a_limit_the_frame_clearly_outgrows() {
        for density in [2, 16, 200] {
            let s = sparse(1 << 19, density);
            let mut full = Vec::new();
            assert!(zstd_append(&s, 1, &mut full));
            let size = full.len();
            // A limit the whole frame meets: zstd is tried.
            assert!(zstd_may_fit(&s, size), "{density}");
            assert!(zstd_may_fit(&s, size * 2), "{density}");
            // Far under the frame: not tried.
            assert!(!zstd_may_fit(&s, size / 3), "{density}");
        }
        // A nearly constant stream whose frame is mostly fixed bytes: tried.
        let mut rare = vec![0u8; 1 << 19];
        rare[1000] = 7;
        rare[300_000] = 9;
        let mut full = Vec::new();
        assert!(zstd_append(&rare, 1, &mut full));
        assert!(zstd_may_fit(&rare, full.len()));
        // Short streams are always tried.
        assert!(zstd_may_fit(&sparse(SAMPLE_MIN - 1, 2), 0));
    }

    #[test]
    fn a_zstd_frame_within_its_limit_is_the_frame_made_without_one() {
        for density in [2, 4, 16, 64] {
            let s = sparse(1 << 20, density);
            let mut full = vec![7u8];
            assert!(zstd_append(&s, 1, &mut full));
            let size = full.len() - 1;
            for limit in [size, size + 1, s.len()] {
                let mut out = vec![7u8];
                assert!(zstd_append_within(&s, 1, limit, &mut out), "{density} {limit}");
                assert_eq!(out, full, "{density} {limit}");
            }
            // One byte short: not kept, and `out` is as it was.
            for limit in [size - 1, size / 3, 0] {
                let mut out = vec![7u8];
                assert!(!zstd_append_within(&s, 1, limit, &mut out), "{density} {limit}");
                assert_eq!(out, [7u8], "{density} {limit}");
            }
        }
    }
}
