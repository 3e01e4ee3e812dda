//! The lossy record of a version ([`crate::manifest::Manifest::lossy`]): the
//! settings a version was packed with and how far its restored weights
//! are from the source (FORMAT.md, the manifest's `lossy` field).
//!
//! Fields are declared in alphabetical order: serialised, the record is
//! byte for byte the JSON object earlier versions wrote (their JSON maps
//! had sorted keys), so a manifest's bytes, and its id, do not change.

use serde::{Deserialize, Serialize};

/// How a lossy version differs from its source, and how it was made.
/// Ratios are `None` (JSON `null`) when not finite.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LossyRecord {
    /// Code width asked for: `int2`, `int4` or `int8`.
    pub bits: String,
    /// Relative L2 error of the deltas over all lossy tensors.
    pub delta_rel_l2: Option<f64>,
    /// Blocks of lossy-eligible tensors kept exact.
    pub exact_blocks: u64,
    /// Version of this record's layout (1).
    pub format: u32,
    /// Elements per quantization group.
    pub group: u64,
    /// Tensor patterns kept exact.
    #[serde(default)]
    pub keep_exact: Vec<String>,
    /// Blocks stored lossily.
    pub lossy_blocks: u64,
    /// Largest absolute error of any element.
    pub max_abs_err: Option<f64>,
    /// The bound on the delta error asked for, if any.
    #[serde(default)]
    pub max_error: Option<f64>,
    /// The worst tensor's relative delta error.
    pub max_tensor_delta_rel_l2: Option<f64>,
    /// What the bound applies to (`delta_rel_l2`).
    pub metric: String,
    /// Each tensor with a lossy block.
    #[serde(default)]
    pub tensors: Vec<LossyTensor>,
    /// Relative L2 error of the weights over all lossy tensors.
    pub weight_rel_l2: Option<f64>,
}

/// One tensor of a [`LossyRecord`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LossyTensor {
    /// Its blocks by how they were stored.
    pub blocks: LossyBlocks,
    /// Relative L2 error of its delta.
    pub delta_rel_l2: Option<f64>,
    /// Its dtype name (`BF16`).
    pub dtype: String,
    /// Elements.
    pub elements: u64,
    /// The file it is in.
    pub file: String,
    /// Largest absolute error of an element.
    pub max_abs_err: Option<f64>,
    /// Its name.
    pub name: String,
    /// Hash of the hashes of its exact source blocks.
    pub original_hash: String,
    /// Relative L2 error of its weights.
    pub weight_rel_l2: Option<f64>,
}

/// Blocks of a tensor by code width, and those kept exact.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LossyBlocks {
    /// Kept exact.
    pub exact: u64,
    /// 2-bit codes.
    pub int2: u64,
    /// 4-bit codes.
    pub int4: u64,
    /// 8-bit codes.
    pub int8: u64,
}

/// `x` when finite, else `None` (JSON `null`).
pub fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON earlier versions built by hand, as `pack` wrote it.
    fn by_hand() -> serde_json::Value {
        serde_json::json!({
            "format": 1, "bits": "int4", "group": 64, "metric": "delta_rel_l2", "max_error": 0.01,
            "keep_exact": ["*.norm"], "lossy_blocks": 3, "exact_blocks": 1, "max_abs_err": 0.0021,
            "delta_rel_l2": 0.0005, "weight_rel_l2": 1.5e-5, "max_tensor_delta_rel_l2": null,
            "tensors": [{
                "file": "a.safetensors", "name": "w", "dtype": "BF16", "original_hash": "ab12",
                "elements": 4096, "blocks": {"int2": 0, "int4": 3, "int8": 0, "exact": 1},
                "max_abs_err": 0.0021, "delta_rel_l2": 0.0005, "weight_rel_l2": 1.5e-5,
            }],
        })
    }

    #[test]
    fn serialises_to_the_same_bytes_as_the_hand_built_json() {
        let v = by_hand();
        let r: LossyRecord = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(r.tensors[0].blocks.int4, 3);
        assert_eq!(r.max_tensor_delta_rel_l2, None);
        assert_eq!(serde_json::to_string(&r).unwrap(), serde_json::to_string(&v).unwrap());
    }

    #[test]
    fn reads_records_without_optional_fields() {
        let mut v = by_hand();
        let o = v.as_object_mut().unwrap();
        o.remove("max_error");
        o.remove("keep_exact");
        let r: LossyRecord = serde_json::from_value(v).unwrap();
        assert_eq!((r.max_error, r.keep_exact.len()), (None, 0));
    }
}
