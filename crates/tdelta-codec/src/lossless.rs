//! The lossless codecs: raw, zstd, and byte planes of floats (plain, xor
//! and ULP deltas against a base), entropy-coded with rANS.

use std::cell::RefCell;

use tdelta_format::DType;

use crate::id::{CodecError, CodecId, Decoder};
use crate::rans;
#[cfg(target_arch = "x86_64")]
use crate::rans::fused::Plane;
use crate::streams::{self, encode_streams, malformed, parse_streams};
#[cfg(target_arch = "x86_64")]
use crate::streams::{Method, Stream};
#[cfg(target_arch = "x86_64")]
use crate::transform::avx512::Words16;
use crate::transform::{self, Kind, Word};

/// Encoder settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodeParams {
    /// zstd level (1..=22) of zstd-coded streams (non-float words).
    pub level: i32,
    /// Float streams: 0 favours speed (a plane is entropy-coded only when
    /// that saves a few percent, sparse planes go to fast zstd), 1 and up
    /// favour size (every plane entropy-coded when smaller).
    pub effort: u8,
}

impl Default for EncodeParams {
    fn default() -> Self {
        EncodeParams { level: 3, effort: 0 }
    }
}

impl EncodeParams {
    /// The stream policy these settings mean.
    fn policy(&self) -> streams::Policy {
        if self.effort == 0 {
            streams::Policy { level: self.level, min_gain: 0.02, sparse: 0.9, sparse_slack: 1.5 }
        } else {
            streams::Policy { level: self.level, min_gain: 0.0, sparse: 2.0, sparse_slack: 1.0 }
        }
    }
}

/// One encoded block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// How it was encoded.
    pub codec: CodecId,
    /// The payload.
    pub payload: Vec<u8>,
}

thread_local! {
    /// Per-thread scratch for plane buffers (grown, never shrunk).
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with a per-thread scratch buffer of `len` bytes (contents
/// unspecified).
pub(crate) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut v) => {
            if v.len() < len {
                v.resize(len, 0);
            }
            f(&mut v[..len])
        }
        // Re-entered (cannot happen today): use a fresh buffer.
        Err(_) => f(&mut vec![0u8; len]),
    })
}

/// Encodes with one plane transform. Float planes are entropy-coded with
/// rANS, in the contexts of the exponent (the top plane for `Plain`, the
/// base's for deltas); other words use zstd.
pub(crate) fn encode_planes(
    word: Word,
    kind: Kind,
    new: &[u8],
    base: &[u8],
    params: &EncodeParams,
    mut out: Vec<u8>,
) -> Vec<u8> {
    let s = word.size();
    let n = new.len() / s;
    let entropy = word.is_float();
    with_scratch(new.len() + n, |buf| {
        let (planes, ctxbuf) = buf.split_at_mut(new.len());
        let ctx: Option<&[u8]> = match kind {
            Kind::Xor | Kind::Sub if entropy => {
                transform::split_with_top(word, kind, new, base, planes, ctxbuf);
                Some(ctxbuf)
            }
            _ => {
                transform::split(word, kind, new, base, planes);
                (entropy && kind == Kind::Plain && s > 1).then(|| &planes[(s - 1) * n..])
            }
        };
        let mut streams: [&[u8]; 8] = [&[]; 8];
        let mut ctxs: [Option<&[u8]>; 8] = [None; 8];
        for p in 0..s {
            streams[p] = &planes[p * n..(p + 1) * n];
            ctxs[p] = if kind == Kind::Plain && p == s - 1 { None } else { ctx };
        }
        // Two planes in the same contexts: both models from one pass.
        let mut models = match (s, ctxs[0], ctxs[1]) {
            (2, Some(c), Some(_)) => rans::model_pair(streams[0], streams[1], c).map(Some).to_vec(),
            _ => Vec::new(),
        };
        out.clear();
        out.reserve(new.len() / 2 + 64);
        encode_streams(&streams[..s], &ctxs[..s], &mut models, entropy, &params.policy(), &mut out);
        out
    })
}

fn decode_planes(
    codec: CodecId,
    word: Word,
    kind: Kind,
    payload: &[u8],
    base: &[u8],
    out: &mut [u8],
) -> Result<(), CodecError> {
    let name = codec.name();
    let s = word.size();
    if !out.len().is_multiple_of(s) {
        return Err(malformed(name, format!("block of {} bytes is not whole {s}-byte words", out.len())));
    }
    let n = out.len() / s;
    let streams = parse_streams(name, payload, s)?;
    #[cfg(target_arch = "x86_64")]
    if s == 2 && decode_fused16(name, &streams, word, kind, base, out) {
        return Ok(());
    }
    with_scratch(out.len() + n, |buf| {
        let (planes, ctxbuf) = buf.split_at_mut(out.len());
        let (low, top) = planes.split_at_mut((s - 1) * n);
        // The planes below the top one, all in contexts `ctx`.
        let lower = |low: &mut [u8], ctx: &[u8]| -> Result<(), CodecError> {
            for (p, st) in streams.iter().enumerate().take(s - 1) {
                st.decode(name, &mut low[p * n..(p + 1) * n], Some(ctx))?;
            }
            Ok(())
        };
        if kind == Kind::Plain {
            // The top plane first: it is the context of the others.
            streams[s - 1].decode(name, top, None)?;
            lower(low, top)?;
        } else if s == 2 {
            // 16-bit words (BF16, F16): both planes of a delta are in the
            // base's contexts, decoded in one pass.
            transform::top_plane(word, base, ctxbuf);
            streams[1].decode_with(&streams[0], name, [top, low], Some(ctxbuf))?;
        } else {
            transform::top_plane(word, base, ctxbuf);
            streams[s - 1].decode(name, top, Some(ctxbuf))?;
            lower(low, ctxbuf)?;
        }
        transform::merge(word, kind, planes, base, out);
        Ok(())
    })
}

/// [`decode_planes`] of 16-bit words in one pass, the planes decoded
/// straight into the words (`rans::fused`), on a CPU that runs it; false
/// when not done (`out` is then unspecified: the usual path decodes it,
/// and reports what is wrong with the payload).
#[cfg(target_arch = "x86_64")]
fn decode_fused16(
    name: &'static str,
    streams: &[Stream<'_>],
    word: Word,
    kind: Kind,
    base: &[u8],
    out: &mut [u8],
) -> bool {
    let Some(w) = Words16::new(word, kind) else { return false };
    let n = out.len() / 2;
    if !rans::fused::available() || streams[..2].iter().any(|s| s.raw_len != n) {
        return false;
    }
    // zstd planes (sparse ones) are decompressed first, into scratch.
    with_scratch(zstd_planes(streams) * n, |buf| {
        let mut bufs = buf.chunks_exact_mut(n.max(1));
        let Some(planes) = fused_planes(name, streams, &mut bufs) else { return false };
        rans::fused::words16(name, planes, w, base, out)
    })
}

/// A block one delta (`codec`, `payload`) from a full block (`root_codec`,
/// `root_payload`, which must be `planes`) of 16-bit words, both decoded
/// in one pass (`rans::fused::words16_chain`) on a CPU that runs it (as
/// `decodes_over_full` checks, before calling this): the full block's
/// words go straight into the delta's decode, not through memory. False
/// when not done (`out` is then unspecified: decode the levels one by one,
/// which reports what is wrong).
#[cfg(target_arch = "x86_64")]
pub(crate) fn decode_over_full16(
    dtype: DType,
    (root_codec, root_payload): (CodecId, &[u8]),
    (codec, payload): (CodecId, &[u8]),
    out: &mut [u8],
) -> bool {
    let word = Word::of(dtype);
    let kind = match codec {
        CodecId::XorPlanes => Kind::Xor,
        CodecId::UlpPlanes => Kind::Sub,
        _ => return false,
    };
    let (Some(wr), Some(wt)) = (Words16::new(word, Kind::Plain), Words16::new(word, kind)) else { return false };
    let n = out.len() / 2;
    // The codecs and the CPU are the caller's check (`decodes_over_full`).
    if !out.len().is_multiple_of(2) {
        return false;
    }
    let names = [root_codec.name(), codec.name()];
    with_two_payloads(names, [root_payload, payload], n, |rp, tp| {
        rans::fused::words16_chain(names, rp, wr, tp, wt, out)
    })
}

/// Runs `f` on the planes of two 16-bit payloads (`names` their codecs),
/// each plane `n` symbols, their zstd planes decompressed into scratch;
/// false when a payload does not parse, a plane has another length or does
/// not decompress.
#[cfg(target_arch = "x86_64")]
fn with_two_payloads(
    names: [&'static str; 2],
    [a, b]: [&[u8]; 2],
    n: usize,
    f: impl FnOnce([Plane<'_>; 2], [Plane<'_>; 2]) -> bool,
) -> bool {
    let (Ok(sa), Ok(sb)) = (parse_streams(names[0], a, 2), parse_streams(names[1], b, 2)) else { return false };
    if sa[..2].iter().chain(&sb[..2]).any(|s| s.raw_len != n) {
        return false;
    }
    with_scratch((zstd_planes(&sa) + zstd_planes(&sb)) * n, |buf| {
        let mut bufs = buf.chunks_exact_mut(n.max(1));
        match (fused_planes(names[0], &sa, &mut bufs), fused_planes(names[1], &sb, &mut bufs)) {
            (Some(pa), Some(pb)) => f(pa, pb),
            _ => false,
        }
    })
}

/// Two full blocks of 16-bit words (`planes` payloads) of the same length
/// decoded at once (`rans::fused::words16_two`), on a CPU that runs it.
/// False when not done (the outputs are then unspecified: decode each
/// alone, which reports what is wrong).
#[cfg(target_arch = "x86_64")]
pub(crate) fn decode_two_full16(dtype: DType, a: (&[u8], &mut [u8]), b: (&[u8], &mut [u8])) -> bool {
    let ((pa, out_a), (pb, out_b)) = (a, b);
    let Some(w) = Words16::new(Word::of(dtype), Kind::Plain) else { return false };
    let n = out_a.len() / 2;
    if out_a.len() != out_b.len() || !out_a.len().is_multiple_of(2) || !rans::fused::available() {
        return false;
    }
    let name = CodecId::Planes.name();
    with_two_payloads([name, name], [pa, pb], n, |a, b| {
        rans::fused::words16_two([name, name], (a, w, out_a), (b, w, out_b))
    })
}

/// How many of the two planes of a 16-bit payload are zstd frames.
#[cfg(target_arch = "x86_64")]
fn zstd_planes(streams: &[Stream<'_>]) -> usize {
    streams[..2].iter().filter(|s| s.stored().0 == Method::Zstd).count()
}

/// The planes `[top, low]` of a 16-bit payload's streams as a fused decode
/// takes them, a zstd plane decompressed into the next of `bufs`; `None`
/// when one does not decompress.
#[cfg(target_arch = "x86_64")]
fn fused_planes<'a>(
    name: &'static str,
    streams: &[Stream<'a>],
    bufs: &mut impl Iterator<Item = &'a mut [u8]>,
) -> Option<[Plane<'a>; 2]> {
    let mut planes = [Plane::Const(0); 2];
    // The top plane is stream 1.
    for (p, st) in planes.iter_mut().zip([&streams[1], &streams[0]]) {
        let (method, data) = st.stored();
        *p = match method {
            Method::Raw => Plane::Bytes(data),
            Method::Const => Plane::Const(data[0]),
            Method::Rans => Plane::Rans(data),
            Method::Zstd => {
                let b = bufs.next()?;
                streams::zstd_decompress(name, data, b).ok()?;
                Plane::Bytes(b)
            }
        };
    }
    Some(planes)
}

/// Encodes `new` (one block of `dtype` elements), as a delta against
/// `base` when one is given and that is smaller. `base`, when given, has
/// the same length as `new`.
pub fn encode(dtype: DType, new: &[u8], base: Option<&[u8]>, params: &EncodeParams) -> Encoded {
    encode_into(dtype, new, base, params, Vec::new())
}

/// [`encode`] into the allocation of `buf` (its bytes are dropped): a
/// caller that hands back the payloads it is done with allocates, and
/// faults in, no new memory per block. The payload is the same.
pub fn encode_into(dtype: DType, new: &[u8], base: Option<&[u8]>, params: &EncodeParams, buf: Vec<u8>) -> Encoded {
    let mut spare = Some(buf);
    let mut take = || spare.take().unwrap_or_default();
    let word = Word::of(dtype);
    let whole = new.len().is_multiple_of(word.size()) && !new.is_empty();
    let level = params.level;
    let mut best: Option<Encoded> = None;
    fn consider(best: &mut Option<Encoded>, codec: CodecId, payload: Vec<u8>) {
        if best.as_ref().is_none_or(|b| payload.len() < b.payload.len()) {
            *best = Some(Encoded { codec, payload });
        }
    }
    if let Some(base) = base.filter(|b| b.len() == new.len() && whole) {
        consider(&mut best, CodecId::UlpPlanes, encode_planes(word, Kind::Sub, new, base, params, take()));
    }
    // A delta under half the raw size beats any non-delta candidate on
    // real weights: skip them then.
    let good_delta = best.as_ref().is_some_and(|b| b.payload.len() < new.len() / 2);
    if !good_delta {
        if word.is_float() && whole && word.size() > 1 {
            consider(&mut best, CodecId::Planes, encode_planes(word, Kind::Plain, new, &[], params, take()));
        } else {
            let mut z = take();
            z.clear();
            if streams::zstd_append(new, level, &mut z) {
                consider(&mut best, CodecId::Zstd, z);
            }
        }
    }
    match best {
        Some(b) if b.payload.len() < new.len() => b,
        _ => {
            let mut raw = take();
            raw.clear();
            raw.extend_from_slice(new);
            Encoded { codec: CodecId::Raw, payload: raw }
        }
    }
}

/// The lossless decoders, registered with the crate's decoder table.
pub(crate) const DECODERS: &[Decoder] = &[
    Decoder { id: CodecId::Raw, decode: decode_raw },
    Decoder { id: CodecId::Zstd, decode: |_, payload, _, out| zstd_into("zstd", payload, out) },
    Decoder {
        id: CodecId::Planes,
        decode: |d, p, b, o| decode_planes(CodecId::Planes, Word::of(d), Kind::Plain, p, b, o),
    },
    Decoder {
        id: CodecId::XorPlanes,
        decode: |d, p, b, o| decode_planes(CodecId::XorPlanes, Word::of(d), Kind::Xor, p, b, o),
    },
    Decoder {
        id: CodecId::UlpPlanes,
        decode: |d, p, b, o| decode_planes(CodecId::UlpPlanes, Word::of(d), Kind::Sub, p, b, o),
    },
];

fn decode_raw(_: DType, payload: &[u8], _: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
    if payload.len() != out.len() {
        return Err(CodecError::Malformed {
            codec: "raw",
            reason: format!("payload is {} bytes, block is {}", payload.len(), out.len()),
        });
    }
    out.copy_from_slice(payload);
    Ok(())
}

/// Decompresses a zstd frame into exactly `out.len()` bytes.
pub(crate) fn zstd_into(codec: &'static str, payload: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
    streams::zstd_decompress(codec, payload, out)
}
