//! The element types of the safetensors format.

use std::fmt;
use std::str::FromStr;

/// An element type as named in a safetensors header.
///
/// The on-disk code of each variant (see `FORMAT.md`) is its `u8` value and
/// never changes once released.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum DType {
    /// Boolean, one byte per element.
    BOOL = 1,
    /// Unsigned 8-bit integer.
    U8 = 2,
    /// Signed 8-bit integer.
    I8 = 3,
    /// 8-bit float, 4 exponent bits, 3 mantissa bits.
    F8_E4M3 = 4,
    /// 8-bit float, 5 exponent bits, 2 mantissa bits.
    F8_E5M2 = 5,
    /// 8-bit exponent-only scale format (MX).
    F8_E8M0 = 6,
    /// Signed 16-bit integer.
    I16 = 7,
    /// Unsigned 16-bit integer.
    U16 = 8,
    /// IEEE half precision.
    F16 = 9,
    /// bfloat16.
    BF16 = 10,
    /// Signed 32-bit integer.
    I32 = 11,
    /// Unsigned 32-bit integer.
    U32 = 12,
    /// IEEE single precision.
    F32 = 13,
    /// IEEE double precision.
    F64 = 14,
    /// Signed 64-bit integer.
    I64 = 15,
    /// Unsigned 64-bit integer.
    U64 = 16,
    /// Complex of two f32.
    C64 = 17,
    /// 4-bit float (E2M1), two elements per byte.
    F4 = 18,
    /// 6-bit float (E2M3), packed.
    F6_E2M3 = 19,
    /// 6-bit float (E3M2), packed.
    F6_E3M2 = 20,
    /// 8-bit float, 4 exponent bits, 3 mantissa bits, no negative zero
    /// (`0x80` is the only NaN), as on AMD Instinct GPUs.
    F8_E4M3FNUZ = 21,
    /// 8-bit float, 5 exponent bits, 2 mantissa bits, no negative zero.
    F8_E5M2FNUZ = 22,
}

impl DType {
    /// Every dtype, in code order.
    pub const ALL: [DType; 22] = [
        DType::BOOL,
        DType::U8,
        DType::I8,
        DType::F8_E4M3,
        DType::F8_E5M2,
        DType::F8_E8M0,
        DType::I16,
        DType::U16,
        DType::F16,
        DType::BF16,
        DType::I32,
        DType::U32,
        DType::F32,
        DType::F64,
        DType::I64,
        DType::U64,
        DType::C64,
        DType::F4,
        DType::F6_E2M3,
        DType::F6_E3M2,
        DType::F8_E4M3FNUZ,
        DType::F8_E5M2FNUZ,
    ];

    /// Size of one element in bits.
    pub fn bits(self) -> u64 {
        match self {
            DType::F4 => 4,
            DType::F6_E2M3 | DType::F6_E3M2 => 6,
            DType::BOOL | DType::U8 | DType::I8 => 8,
            DType::F8_E4M3 | DType::F8_E5M2 | DType::F8_E8M0 | DType::F8_E4M3FNUZ | DType::F8_E5M2FNUZ => 8,
            DType::I16 | DType::U16 | DType::F16 | DType::BF16 => 16,
            DType::I32 | DType::U32 | DType::F32 => 32,
            DType::F64 | DType::I64 | DType::U64 | DType::C64 => 64,
        }
    }

    /// The unit, in bytes, that blocks of this dtype are aligned to: the
    /// element size, or 1 for sub-byte types (stored as opaque bytes).
    pub fn align(self) -> usize {
        (self.bits() / 8).max(1) as usize
    }

    /// True for the floating-point types that get float-aware transforms.
    pub fn is_float(self) -> bool {
        matches!(
            self,
            DType::F8_E4M3
                | DType::F8_E5M2
                | DType::F8_E4M3FNUZ
                | DType::F8_E5M2FNUZ
                | DType::F16
                | DType::BF16
                | DType::F32
                | DType::F64
        )
    }

    /// The name used in safetensors headers.
    pub fn name(self) -> &'static str {
        match self {
            DType::BOOL => "BOOL",
            DType::U8 => "U8",
            DType::I8 => "I8",
            DType::F8_E4M3 => "F8_E4M3",
            DType::F8_E5M2 => "F8_E5M2",
            DType::F8_E8M0 => "F8_E8M0",
            DType::I16 => "I16",
            DType::U16 => "U16",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::I32 => "I32",
            DType::U32 => "U32",
            DType::F32 => "F32",
            DType::F64 => "F64",
            DType::I64 => "I64",
            DType::U64 => "U64",
            DType::C64 => "C64",
            DType::F4 => "F4",
            DType::F6_E2M3 => "F6_E2M3",
            DType::F6_E3M2 => "F6_E3M2",
            DType::F8_E4M3FNUZ => "F8_E4M3FNUZ",
            DType::F8_E5M2FNUZ => "F8_E5M2FNUZ",
        }
    }

    /// The dtype with on-disk code `code`, if any.
    pub fn from_code(code: u8) -> Option<DType> {
        DType::ALL.iter().copied().find(|d| *d as u8 == code)
    }

    /// Byte length of `elements` elements, or `None` on overflow or when a
    /// sub-byte dtype does not fill whole bytes.
    pub fn byte_len(self, elements: u64) -> Option<u64> {
        let bits = elements.checked_mul(self.bits())?;
        (bits % 8 == 0).then_some(bits / 8)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Error returned when parsing an unknown dtype name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownDType(pub String);

impl fmt::Display for UnknownDType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let valid: Vec<&str> = DType::ALL.iter().map(|d| d.name()).collect();
        write!(f, "unknown dtype `{}`; valid values are: {}", self.0, valid.join(", "))
    }
}

impl std::error::Error for UnknownDType {}

impl FromStr for DType {
    type Err = UnknownDType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DType::ALL.iter().copied().find(|d| d.name() == s).ok_or_else(|| UnknownDType(s.to_string()))
    }
}

impl serde::Serialize for DType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for DType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_codes_round_trip() {
        for d in DType::ALL {
            assert_eq!(d.name().parse::<DType>().unwrap(), d);
            assert_eq!(DType::from_code(d as u8), Some(d));
        }
        assert_eq!(DType::from_code(0), None);
        let err = "F12".parse::<DType>().unwrap_err().to_string();
        assert!(err.contains("unknown dtype `F12`"), "{err}");
        assert!(err.contains("BF16"), "{err}");
    }

    #[test]
    fn byte_len_checks_overflow_and_sub_byte() {
        assert_eq!(DType::BF16.byte_len(3), Some(6));
        assert_eq!(DType::F4.byte_len(3), None);
        assert_eq!(DType::F4.byte_len(4), Some(2));
        assert_eq!(DType::F64.byte_len(u64::MAX / 2), None);
    }
}
