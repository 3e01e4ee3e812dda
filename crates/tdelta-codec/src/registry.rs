//! One table of every decoder: the lossless codecs and the lossy ones
//! each register theirs, and [`crate::decode`] looks codecs up here.

use crate::id::{CodecError, CodecId, Decoder};

/// Every registered decoder, lossless first.
const REGISTRY: &[&[Decoder]] = &[crate::lossless::DECODERS, crate::lossy::DECODERS];

/// The decoder of `id`.
pub(crate) fn decoder(id: CodecId) -> Result<&'static Decoder, CodecError> {
    REGISTRY.iter().flat_map(|r| r.iter()).find(|d| d.id == id).ok_or(CodecError::UnknownCodec(id as u8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_codec_has_exactly_one_decoder() {
        for id in CodecId::ALL {
            let n = REGISTRY.iter().flat_map(|r| r.iter()).filter(|d| d.id == *id).count();
            assert_eq!(n, 1, "{}", id.name());
        }
    }
}
