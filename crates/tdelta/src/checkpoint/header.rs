//! Parsing and validating safetensors headers from untrusted bytes.
//!
//! The rules follow the official `safetensors` crate (`read_metadata` and
//! `Metadata::validate`), and are stricter where it is silent: duplicate
//! tensor names or `__metadata__` keys are rejected instead of keeping the
//! last one, and every problem is reported with the file, the tensor and the
//! expected versus actual values.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};

use super::{Header, TensorInfo};
use crate::{DType, Error, Result};

/// Size of the little-endian `u64` header length that starts every file.
pub const HEADER_LEN_PREFIX: u64 = 8;

/// Largest JSON header accepted, in bytes (the official crate's limit).
/// Checked before anything is allocated.
pub const MAX_HEADER_LEN: u64 = 100_000_000;

const METADATA_KEY: &str = "__metadata__";

/// Parses and validates a safetensors header.
///
/// `bytes` is a prefix of the file that holds at least the 8-byte length and
/// the JSON header (the whole file is fine too); `file_len` is the length of
/// the whole file, used to check that the tensors tile the data region
/// exactly. `file` only names the file in errors. Never panics, whatever the
/// bytes.
pub fn parse_header(file: &Path, bytes: &[u8], file_len: u64) -> Result<Header> {
    let n = header_json_len(file, bytes, file_len)?;
    // `n <= MAX_HEADER_LEN`, so neither the sum nor the casts can overflow.
    let data_start = HEADER_LEN_PREFIX + n;
    let Some(raw) = bytes.get(..data_start as usize) else {
        return Err(Error::checkpoint(
            file,
            format!("header prefix is truncated: need {data_start} bytes, got {}", bytes.len()),
        ));
    };
    let json = &raw[HEADER_LEN_PREFIX as usize..];
    let text = std::str::from_utf8(json).map_err(|e| {
        Error::checkpoint(
            file,
            format!("header is not valid utf-8 (invalid byte at header offset {})", e.valid_up_to()),
        )
    })?;
    let parsed = parse_json(file, text)?;
    let data_len = file_len - data_start;
    let tensors = validate(file, parsed.tensors, data_start, data_len)?;
    Ok(Header { raw: raw.to_vec(), data_start, tensors, metadata: parsed.metadata })
}

/// Reads and validates the header of an open safetensors file of length
/// `file_len`, reading only the prefix `[0, data_start)`. The header length
/// is checked against [`MAX_HEADER_LEN`] and the file length before the
/// buffer is allocated.
pub fn read_header(file: &Path, f: &File, file_len: u64) -> Result<Header> {
    let mut reader = f;
    reader.seek(SeekFrom::Start(0)).map_err(|e| Error::io(file, e))?;
    let mut len_bytes = [0u8; HEADER_LEN_PREFIX as usize];
    let got = read_up_to(&mut reader, &mut len_bytes).map_err(|e| Error::io(file, e))?;
    let prefix = len_bytes.get(..got).unwrap_or_default();
    let n = header_json_len(file, prefix, file_len)?;
    let data_start = HEADER_LEN_PREFIX + n;
    let mut buf = vec![0u8; data_start as usize];
    buf[..len_bytes.len()].copy_from_slice(&len_bytes);
    let got = read_up_to(&mut reader, &mut buf[len_bytes.len()..]).map_err(|e| Error::io(file, e))?;
    // A file that shrank since `file_len` was taken: report it as such
    // rather than as a parse error on zeroes.
    if got < buf.len() - len_bytes.len() {
        return Err(Error::checkpoint(
            file,
            format!(
                "file is shorter than expected: header needs {data_start} bytes, file ends at {}",
                len_bytes.len() + got
            ),
        ));
    }
    parse_header(file, &buf, file_len)
}

/// Fills `buf` as far as the reader allows; returns how much was read.
fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(k) => filled += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Reads the header length from the first 8 bytes and checks it against the
/// cap and the file length.
fn header_json_len(file: &Path, bytes: &[u8], file_len: u64) -> Result<u64> {
    let Some(prefix) = bytes.first_chunk::<{ HEADER_LEN_PREFIX as usize }>() else {
        return Err(if file_len < HEADER_LEN_PREFIX {
            Error::checkpoint(
                file,
                format!("file is too short: {file_len} bytes, need at least {HEADER_LEN_PREFIX} for the header length"),
            )
        } else {
            Error::checkpoint(
                file,
                format!("header prefix is truncated: need {HEADER_LEN_PREFIX} bytes, got {}", bytes.len()),
            )
        });
    };
    let n = u64::from_le_bytes(*prefix);
    if n > MAX_HEADER_LEN {
        return Err(Error::checkpoint(
            file,
            format!("header length {n} bytes exceeds the limit of {MAX_HEADER_LEN} bytes"),
        ));
    }
    let end = HEADER_LEN_PREFIX + n;
    if end > file_len {
        return Err(Error::checkpoint(
            file,
            format!(
                "header length {n} runs past the end of the file: header ends at byte {end}, file is {file_len} bytes"
            ),
        ));
    }
    Ok(n)
}

/// One tensor entry as written in the header, not yet validated.
#[derive(Deserialize)]
struct RawTensor {
    dtype: String,
    shape: Vec<Dim>,
    data_offsets: (Offset, Offset),
}

/// The header JSON, keys in file order, duplicates kept.
struct RawHeader {
    tensors: Vec<(String, RawTensor)>,
    metadata: Option<BTreeMap<String, String>>,
}

/// Parses the JSON text into a [`RawHeader`], naming the tensor whose entry
/// failed to parse when there is one.
fn parse_json(file: &Path, text: &str) -> Result<RawHeader> {
    let mut current = None;
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = HeaderSeed { current: &mut current }.deserialize(&mut de).and_then(|h| de.end().map(|()| h));
    parsed.map_err(|e| match current {
        Some(name) => Error::tensor(file, &name, format!("invalid header entry: {e}")),
        None => Error::checkpoint(file, format!("invalid json header: {e}")),
    })
}

/// Deserializes the top-level object, recording in `current` the tensor
/// whose entry is being read so that errors can name it.
struct HeaderSeed<'a> {
    current: &'a mut Option<String>,
}

impl<'de> DeserializeSeed<'de> for HeaderSeed<'_> {
    type Value = RawHeader;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<RawHeader, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for HeaderSeed<'_> {
    type Value = RawHeader;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a json object of tensor entries")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawHeader, A::Error> {
        let mut tensors = Vec::new();
        let mut metadata = None;
        let mut seen_metadata = false;
        while let Some(key) = map.next_key::<String>()? {
            if key == METADATA_KEY {
                if seen_metadata {
                    return Err(de::Error::custom("duplicate `__metadata__` key"));
                }
                seen_metadata = true;
                metadata = map.next_value_seed(MetadataSeed)?;
            } else {
                *self.current = Some(key);
                let entry = map.next_value::<RawTensor>()?;
                if let Some(key) = self.current.take() {
                    tensors.push((key, entry));
                }
            }
        }
        Ok(RawHeader { tensors, metadata })
    }
}

/// `__metadata__`: `null` (accepted, as the official crate does) or an
/// object of string values with unique keys.
struct MetadataSeed;

impl<'de> DeserializeSeed<'de> for MetadataSeed {
    type Value = Option<BTreeMap<String, String>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for MetadataSeed {
    type Value = Option<BTreeMap<String, String>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("`__metadata__` to be a json object of string values")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = BTreeMap::new();
        while let Some(key) = map.next_key::<String>()? {
            let MetaValue(value) = map.next_value()?;
            if out.contains_key(&key) {
                return Err(de::Error::custom(format_args!("duplicate key `{key}` in `__metadata__`")));
            }
            out.insert(key, value);
        }
        Ok(Some(out))
    }
}

/// A `__metadata__` value; only strings are allowed.
struct MetaValue(String);

impl<'de> Deserialize<'de> for MetaValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = MetaValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string (`__metadata__` maps strings to strings)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<MetaValue, E> {
                Ok(MetaValue(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<MetaValue, E> {
                Ok(MetaValue(v))
            }
        }
        d.deserialize_string(V)
    }
}

/// Defines a `u64` newtype whose only accepted JSON form is a non-negative
/// integer; anything else (negative, fractional, beyond `u64`, which JSON
/// parsers read as a float) fails with `$what` in the message.
macro_rules! json_u64 {
    ($name:ident, $what:literal) => {
        struct $name(u64);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl Visitor<'_> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($what)
                    }
                    fn visit_u64<E: de::Error>(self, v: u64) -> Result<$name, E> {
                        Ok($name(v))
                    }
                }
                d.deserialize_u64(V)
            }
        }
    };
}

json_u64!(Dim, "a `shape` dimension: an integer in [0, 2^64)");
json_u64!(Offset, "a `data_offsets` value: an integer in [0, 2^64)");

/// Checks every entry against the data region `[data_start, data_start +
/// data_len)` and returns the tensors sorted by start.
fn validate(file: &Path, raw: Vec<(String, RawTensor)>, data_start: u64, data_len: u64) -> Result<Vec<TensorInfo>> {
    reject_duplicates(file, &raw)?;
    let mut tensors = Vec::with_capacity(raw.len());
    for (name, t) in raw {
        let dtype: DType =
            t.dtype.parse().map_err(|e: crate::UnknownDType| Error::tensor(file, &name, e.to_string()))?;
        let shape: Vec<u64> = t.shape.into_iter().map(|Dim(d)| d).collect();
        let (Offset(begin), Offset(end)) = t.data_offsets;
        if begin > end {
            return Err(Error::tensor(file, &name, format!("data_offsets begin {begin} is greater than end {end}")));
        }
        if end > data_len {
            return Err(Error::tensor(
                file,
                &name,
                format!(
                    "data_offsets end {end} is past the end of the data region ({data_len} bytes): file truncated?"
                ),
            ));
        }
        let expected = tensor_byte_len(file, &name, dtype, &shape)?;
        if end - begin != expected {
            return Err(Error::tensor(
                file,
                &name,
                format!(
                    "size mismatch: {dtype} shape {shape:?} needs {expected} bytes, data_offsets [{begin}, {end}] hold {}",
                    end - begin
                ),
            ));
        }
        tensors.push(TensorInfo {
            name,
            dtype,
            shape,
            // `end <= data_len` and `data_start + data_len == file_len`.
            start: data_start + begin,
            len: end - begin,
        });
    }
    tensors.sort_by(|a, b| (a.start, a.len, &a.name).cmp(&(b.start, b.len, &b.name)));
    check_tiling(file, &tensors, data_start, data_len)?;
    Ok(tensors)
}

/// Byte length of a tensor, with the overflow and sub-byte cases named.
fn tensor_byte_len(file: &Path, name: &str, dtype: DType, shape: &[u64]) -> Result<u64> {
    // Left to right, like the official crate: a zero dimension after an
    // overflowing prefix is still an overflow.
    let Some(elements) = shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d)) else {
        return Err(Error::tensor(
            file,
            name,
            format!("shape {shape:?} overflows: element count does not fit in 64 bits"),
        ));
    };
    let Some(bits) = elements.checked_mul(dtype.bits()) else {
        return Err(Error::tensor(
            file,
            name,
            format!("shape {shape:?} overflows: {elements} {dtype} elements do not fit in 2^64 bits"),
        ));
    };
    dtype.byte_len(elements).ok_or_else(|| {
        Error::tensor(file, name, format!("{elements} {dtype} elements are {bits} bits, which do not fill whole bytes"))
    })
}

/// Tensor names must be unique (JSON parsers would silently keep the last).
fn reject_duplicates(file: &Path, raw: &[(String, RawTensor)]) -> Result<()> {
    let mut names: Vec<&str> = raw.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    match names.windows(2).find(|w| w[0] == w[1]) {
        Some(w) => Err(Error::tensor(file, w[0], "duplicate tensor name: the header defines it more than once")),
        None => Ok(()),
    }
}

/// The tensors, sorted by start, must tile `[0, data_len)` exactly: no gap,
/// no overlap, nothing after the last one.
fn check_tiling(file: &Path, tensors: &[TensorInfo], data_start: u64, data_len: u64) -> Result<()> {
    let mut expected = 0u64;
    let mut previous: Option<&TensorInfo> = None;
    for t in tensors {
        let begin = t.start - data_start;
        if begin != expected {
            let reason = match (previous, begin < expected) {
                (Some(p), true) => format!(
                    "data_offsets [{begin}, {}] overlap tensor `{}` which ends at {expected}",
                    begin + t.len,
                    p.name
                ),
                (Some(p), false) => format!(
                    "gap of {} bytes before this tensor: `{}` ends at {expected}, this one begins at {begin}",
                    begin - expected,
                    p.name
                ),
                (None, _) => format!(
                    "gap of {begin} bytes at the start of the data region: the first tensor begins at {begin}, expected 0"
                ),
            };
            return Err(Error::tensor(file, &t.name, reason));
        }
        expected = begin + t.len;
        previous = Some(t);
    }
    if expected != data_len {
        return Err(Error::checkpoint(
            file,
            format!(
                "{} trailing bytes after the last tensor: tensors end at data offset {expected}, data region is {data_len} bytes",
                data_len - expected
            ),
        ));
    }
    Ok(())
}
