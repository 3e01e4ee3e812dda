//! Deterministic generator of realistic checkpoint series (seeded), for
//! tests, benches and the demo.
//!
//! A series is a base model (version 0) followed by fine-tuned versions.
//! The layout is that of a decoder-only transformer (Llama/Qwen naming):
//! `model.embed_tokens.weight`, per layer `self_attn.{q,k,v,o}_proj`
//! (with q/k/v biases), `mlp.{gate,up,down}_proj`, `input_layernorm` and
//! `post_attention_layernorm`, then `model.norm.weight` and `lm_head.weight`.
//!
//! Values are generated in `f32` ("master weights") and rounded to the
//! checkpoint dtype with round-to-nearest-even, so the statistics of the
//! stored bits (which elements change between versions, by how many ULPs)
//! come out as in real training. The perturbation of one version step is
//! calibrated on a real BF16 fine-tuning pair (30 AdamW steps): about two
//! thirds of the elements of the linear weights change, mostly by ±1..±3
//! ULP; norm weights change in a few percent of elements by ±1 ULP; the
//! token embedding changes sparsely (only rows of tokens seen in training).
//!
//! Every element is a pure function of (seed, tensor name, element index,
//! version), so the output is byte-identical whatever the number of threads
//! and however the work is split. Files are streamed to disk in bounded
//! memory.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use tdelta::IoContext;
use tdelta::{DType, Error, Result};

/// Relative size (to the tensor's standard deviation) of one version step
/// of the perturbation of a linear weight, before the per-kind factor.
const REL_STEP: f32 = 0.0047;
/// Absolute size of one version step of the perturbation of a norm weight.
const NORM_STEP: f32 = 4.4e-4;
/// Share of a step that keeps the same direction from step to step
/// (momentum / consistent gradient), so drift grows faster than a random
/// walk.
const PERSIST: f32 = 0.5;
/// Probability that a token-embedding row is touched by one version step.
const EMBED_TOUCH: f32 = 0.6;
/// Mean and spread of the log activity of a token-embedding row.
const EMBED_LOG_MEAN: f32 = -5.0;
const EMBED_LOG_SPREAD: f32 = 2.0;
/// Elements per generation chunk (a chunk is a run of whole rows).
const CHUNK_ELEMS: usize = 1 << 18;
/// Bytes generated ahead of the writer (bounds memory).
const BATCH_BYTES: usize = 32 << 20;

/// What to generate: a series of checkpoint versions of one synthetic model.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesSpec {
    /// Seed of everything; same spec, same bytes.
    pub seed: u64,
    /// Element type of the float tensors: BF16, F16 or F32.
    pub dtype: DType,
    /// Approximate size in bytes of each version.
    pub target_bytes: u64,
    /// Number of versions of the series (version 0 is the base model).
    pub versions: usize,
    /// Write each version as a Hugging Face sharded directory
    /// (`model-0000i-of-0000n.safetensors`, `model.safetensors.index.json`,
    /// `config.json`, `tokenizer.json`) instead of one file.
    pub sharded: bool,
    /// Number of shards when `sharded` (0 = automatic, 2 to 4 by size).
    pub shards: usize,
    /// Version from which the embedding and `lm_head` gain rows.
    pub vocab_extension_at: Option<usize>,
    /// Rows added by the vocab extension (0 = automatic, about 2% of the
    /// vocabulary, a multiple of 64).
    pub vocab_extension_rows: usize,
    /// Version that merges a low-rank update `W += A·B` into the q and v
    /// projections; nothing else changes in that version.
    pub lora_merge_at: Option<usize>,
    /// Rank of the merged LoRA update.
    pub lora_rank: usize,
    /// Fraction of tensors that never change (chosen by hash of the name).
    pub frozen_fraction: f32,
    /// Multiplier of the size of one fine-tuning step (1.0 = calibrated on
    /// a real pair 30 optimizer steps apart).
    pub step_scale: f32,
    /// Share the token embedding with `lm_head` (no `lm_head.weight`).
    pub tied_embeddings: bool,
    /// Insert special values (NaN payloads, -0.0, ±inf, subnormals) in
    /// about one element in a thousand, for round-trip tests. Not realistic.
    pub spice: bool,
    /// Make the versions drift apart as a real run does: the learning rate
    /// decays linearly over the series to [`DRIFT_LR_FINAL`] of its first
    /// value, so each step changes less than the one before while the
    /// common direction keeps the distance from the base growing: each
    /// version is closer to the previous one than to the base, more so
    /// every step. Calibrated on real runs (README, "Choosing a delta
    /// policy"). Off by default (constant steps).
    pub drift: bool,
}

/// With [`SeriesSpec::drift`]: learning rate of the last step relative to
/// the first (real runs: relative L2 of consecutive changes falls 4× in
/// BF16, 12× in F32; 0.1 brings the bytes of `root`, `chain:3` and
/// `chain:8` against BitX closest to a real 11-checkpoint BF16 run).
pub const DRIFT_LR_FINAL: f32 = 0.1;

impl Default for SeriesSpec {
    fn default() -> Self {
        SeriesSpec {
            seed: 0,
            dtype: DType::BF16,
            target_bytes: 8 << 20,
            versions: 3,
            sharded: false,
            shards: 0,
            vocab_extension_at: None,
            vocab_extension_rows: 0,
            lora_merge_at: None,
            lora_rank: 8,
            frozen_fraction: 0.02,
            step_scale: 1.0,
            tied_embeddings: false,
            spice: false,
            drift: false,
        }
    }
}

impl SeriesSpec {
    /// A spec with the given essentials and defaults for the rest.
    pub fn new(seed: u64, dtype: DType, target_bytes: u64, versions: usize) -> Self {
        SeriesSpec { seed, dtype, target_bytes, versions, ..SeriesSpec::default() }
    }

    /// The model dimensions chosen for `target_bytes`, at version 0.
    pub fn model_shape(&self) -> ModelShape {
        ModelShape::for_spec(self)
    }
}

/// Dimensions of the synthetic transformer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelShape {
    /// Hidden size.
    pub hidden: usize,
    /// MLP intermediate size.
    pub intermediate: usize,
    /// Number of layers.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// Key/value heads (grouped-query attention).
    pub kv_heads: usize,
    /// Dimension of one head.
    pub head_dim: usize,
    /// Vocabulary size at version 0.
    pub vocab: usize,
}

fn round_up(x: usize, m: usize) -> usize {
    x.div_ceil(m) * m
}

impl ModelShape {
    fn with_hidden(hidden: usize) -> ModelShape {
        let head_dim = if hidden >= 2048 {
            128
        } else if hidden >= 64 {
            64
        } else {
            32
        };
        let heads = (hidden / head_dim).max(1);
        let kv_heads = if heads >= 4 { heads / 4 } else { heads };
        ModelShape {
            hidden,
            intermediate: round_up(hidden * 8 / 3, 32),
            layers: 1,
            heads,
            kv_heads,
            head_dim,
            vocab: 256,
        }
    }

    /// Elements of one layer.
    fn layer_params(&self) -> usize {
        let h = self.hidden;
        let kv = self.kv_heads * self.head_dim;
        let q = self.heads * self.head_dim;
        h * q + 2 * h * kv + q * h + 3 * h * self.intermediate + 2 * h + q + 2 * kv
    }

    fn for_spec(spec: &SeriesSpec) -> ModelShape {
        let elem = (spec.dtype.bits() / 8).max(1);
        let params = (spec.target_bytes / elem) as f64;
        let tables = if spec.tied_embeddings { 1.0 } else { 2.0 };
        let mut best: Option<(f64, ModelShape)> = None;
        for hidden in (32..=8192).step_by(32) {
            let mut m = ModelShape::with_hidden(hidden);
            let h = hidden as f64;
            let vocab = (0.12 * params / h).clamp(256.0, 152_064.0);
            let rest = params - tables * vocab * h - h;
            let layers = (rest / m.layer_params() as f64).round().max(1.0);
            m.layers = layers as usize;
            let v = (params - layers * m.layer_params() as f64 - h) / (tables * h);
            m.vocab = round_up(v.max(256.0) as usize, 64);
            let total = m.params(spec.tied_embeddings) as f64;
            // Prefer hitting the size, then a realistic aspect ratio.
            let size_err = (total / params.max(1.0)).ln().abs();
            let aspect = (h / layers / 64.0).ln().abs();
            let score = size_err * 8.0 + aspect;
            if best.as_ref().is_none_or(|(s, _)| score < *s) {
                best = Some((score, m));
            }
        }
        best.map(|(_, m)| m).unwrap_or_else(|| ModelShape::with_hidden(32))
    }

    fn params(&self, tied: bool) -> usize {
        let tables = if tied { 1 } else { 2 };
        self.layers * self.layer_params() + tables * self.vocab * self.hidden + self.hidden
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Embed,
    LmHead,
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
    Norm,
    QBias,
    KBias,
    VBias,
}

impl Kind {
    /// Standard deviation of the base values (mean for norms is ~1).
    fn std(self) -> f32 {
        match self {
            Kind::Embed => 0.03,
            Kind::LmHead => 0.025,
            Kind::Q | Kind::K => 0.025,
            Kind::V | Kind::O | Kind::Gate | Kind::Up => 0.02,
            Kind::Down => 0.018,
            Kind::Norm => 0.05,
            Kind::QBias => 0.05,
            Kind::KBias => 0.002,
            Kind::VBias => 0.02,
        }
    }

    /// Step size relative to `REL_STEP`, per kind (as measured on a real
    /// pair: attention q/k move least, output projections most).
    fn step_factor(self) -> f32 {
        match self {
            Kind::Q | Kind::K => 0.8,
            Kind::V => 1.05,
            Kind::O => 1.2,
            Kind::Gate | Kind::Up => 0.95,
            Kind::Down => 1.3,
            Kind::LmHead | Kind::Embed => 1.0,
            Kind::QBias | Kind::KBias | Kind::VBias => 0.65,
            Kind::Norm => 1.0,
        }
    }
}

/// One tensor of the layout at a given version.
#[derive(Debug, Clone)]
struct TensorDef {
    name: String,
    kind: Kind,
    rows: usize,
    cols: usize,
    /// Rows before the vocab extension (== rows when it did not grow).
    old_rows: usize,
    /// Shape as written (1-D tensors have one entry).
    shape: Vec<usize>,
}

fn layout(spec: &SeriesSpec, v: usize) -> Vec<TensorDef> {
    let m = spec.model_shape();
    let ext = match spec.vocab_extension_at {
        Some(at) if v >= at => extension_rows(spec, &m),
        _ => 0,
    };
    let h = m.hidden;
    let q = m.heads * m.head_dim;
    let kv = m.kv_heads * m.head_dim;
    let mut out = Vec::new();
    let mut push2 = |name: String, kind, rows, cols, old_rows| {
        out.push(TensorDef { name, kind, rows, cols, old_rows, shape: vec![rows, cols] })
    };
    push2("model.embed_tokens.weight".into(), Kind::Embed, m.vocab + ext, h, m.vocab);
    if !spec.tied_embeddings {
        push2("lm_head.weight".into(), Kind::LmHead, m.vocab + ext, h, m.vocab);
    }
    for l in 0..m.layers {
        let p = format!("model.layers.{l}");
        push2(format!("{p}.self_attn.q_proj.weight"), Kind::Q, q, h, q);
        push2(format!("{p}.self_attn.k_proj.weight"), Kind::K, kv, h, kv);
        push2(format!("{p}.self_attn.v_proj.weight"), Kind::V, kv, h, kv);
        push2(format!("{p}.self_attn.o_proj.weight"), Kind::O, h, q, h);
        let i = m.intermediate;
        push2(format!("{p}.mlp.gate_proj.weight"), Kind::Gate, i, h, i);
        push2(format!("{p}.mlp.up_proj.weight"), Kind::Up, i, h, i);
        push2(format!("{p}.mlp.down_proj.weight"), Kind::Down, h, i, h);
    }
    let mut push1 = |name: String, kind, n: usize| {
        out.push(TensorDef { name, kind, rows: 1, cols: n, old_rows: 1, shape: vec![n] })
    };
    for l in 0..m.layers {
        let p = format!("model.layers.{l}");
        push1(format!("{p}.self_attn.q_proj.bias"), Kind::QBias, q);
        push1(format!("{p}.self_attn.k_proj.bias"), Kind::KBias, kv);
        push1(format!("{p}.self_attn.v_proj.bias"), Kind::VBias, kv);
        push1(format!("{p}.input_layernorm.weight"), Kind::Norm, h);
        push1(format!("{p}.post_attention_layernorm.weight"), Kind::Norm, h);
    }
    push1("model.norm.weight".into(), Kind::Norm, h);
    // Files store tensors sorted by name, as `save_file` does.
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn extension_rows(spec: &SeriesSpec, m: &ModelShape) -> usize {
    if spec.vocab_extension_rows > 0 { spec.vocab_extension_rows } else { round_up((m.vocab / 50).max(64), 64) }
}

// ---------------------------------------------------------------------------
// Counter-based randomness: every draw is a hash of (key, index).

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

#[inline]
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[inline(always)]
fn mix32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7FEB_352D);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846C_A68B);
    x ^ (x >> 16)
}

/// Hash of a name (FNV-1a then mixed).
fn name_hash(name: &str) -> u64 {
    let mut h = 0xCBF2_9CE4_8422_2325u64;
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3);
    }
    mix64(h)
}

/// A key derived from a parent key and a purpose tag.
#[inline]
fn derive(key: u64, tag: u64) -> u64 {
    mix64(key ^ mix64(tag.wrapping_mul(GOLDEN).wrapping_add(0x5851_F42D_4C95_7F2D)))
}

/// Uniform in [0, 1) from the top bits of a hash.
#[inline]
fn unit(h: u64) -> f32 {
    (h >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
}

/// Unit-variance, slightly platykurtic draw (sum of three uniforms, kurtosis
/// 2.6, as measured on real fine-tuning deltas).
#[inline(always)]
fn ih3(h: u32) -> f32 {
    let s = (h & 0x3FF) + ((h >> 10) & 0x3FF) + ((h >> 20) & 0x3FF);
    (s as i32 as f32 - 1534.5) * (1.0 / 511.96)
}

/// Unit-variance draw with heavier tails than a Gaussian (kurtosis ~3.7,
/// ~0.15% beyond 4σ, like trained weights): a scale mixture of a
/// near-Gaussian (sum of six uniforms), from two 32-bit hashes.
#[inline(always)]
fn weight_draw(h1: u32, h2: u32) -> f32 {
    let z = (ih3(h1) + ih3(h2)) * std::f32::consts::FRAC_1_SQRT_2;
    // One in 16 draws comes from the wide component.
    let scale = if (h1 >> 30) | ((h2 >> 30) << 2) == 0 { 1.8 } else { 0.9223 };
    z * scale
}

/// A near-Gaussian unit draw from a 64-bit hash.
#[inline]
fn normal(h: u64) -> f32 {
    (ih3(h as u32) + ih3((h >> 32) as u32)) * std::f32::consts::FRAC_1_SQRT_2
}

// ---------------------------------------------------------------------------
// Per-tensor generation plan for one version.

#[derive(Debug)]
struct Plan {
    def: TensorDef,
    key: u64,
    mean: f32,
    /// Base value scale per column (includes the tensor std).
    base_col: Vec<f32>,
    /// Drift scale per column.
    drift_col: Vec<f32>,
    /// Drift scale per row (for the embedding: the row's activity).
    drift_row: Vec<f32>,
    /// Drift steps applied to this version (0 when frozen).
    steps: u32,
    /// Drift steps already applied when the vocab extension happened.
    ext_steps: u32,
    /// LoRA factors (A: rows × r, B: r × cols) when merged in this version.
    lora: Option<(usize, Vec<f32>, Vec<f32>)>,
    /// Sorted (element index, added value) of outlier weights.
    outliers: Vec<(u64, f32)>,
    spice: bool,
    version: usize,
    dtype: DType,
    /// Learning rate of each drift step (index `s - 1`); empty: all 1.
    lr: Vec<f32>,
}

/// Number of fine-tuning steps contained in version `v`: one per version,
/// except the LoRA-merge version which changes nothing else.
fn drift_steps(spec: &SeriesSpec, v: usize) -> u32 {
    let lora = matches!(spec.lora_merge_at, Some(l) if l >= 1 && l <= v);
    (v - usize::from(lora)) as u32
}

/// Learning rate of every drift step of a drifting series: linear decay
/// from 1 to [`DRIFT_LR_FINAL`] over the series' steps.
fn learning_rates(spec: &SeriesSpec) -> Vec<f32> {
    let total = drift_steps(spec, spec.versions.saturating_sub(1).max(1)) as usize;
    (0..total).map(|i| 1.0 - (1.0 - DRIFT_LR_FINAL) * i as f32 / (total.max(2) - 1) as f32).collect()
}

fn lognormal(h: u64, spread: f32) -> f32 {
    (normal(h) * spread).exp()
}

fn plan(spec: &SeriesSpec, def: TensorDef, v: usize) -> Plan {
    let key = derive(spec.seed, name_hash(&def.name));
    let kind = def.kind;
    let frozen = unit(derive(key, 1)) < spec.frozen_fraction;
    let jitter = 1.0 + 0.1 * normal(derive(key, 2));
    let std = kind.std() * jitter;
    let mean = if kind == Kind::Norm { 1.0 + 0.03 * normal(derive(key, 3)) } else { 0.0 };
    let cols = def.cols;
    let rows = def.rows;
    let ck = derive(key, 4);
    let base_col: Vec<f32> = if def.rows > 1 {
        (0..cols).map(|c| std * lognormal(mix64(ck.wrapping_add(c as u64)), 0.12)).collect()
    } else {
        vec![std; cols]
    };
    let step = spec.step_scale * if kind == Kind::Norm { NORM_STEP } else { REL_STEP * kind.step_factor() * std };
    let dk = derive(key, 5);
    let drift_col: Vec<f32> = if def.rows > 1 {
        (0..cols).map(|c| step * lognormal(mix64(dk.wrapping_add(c as u64)), 0.06)).collect()
    } else {
        vec![step; cols]
    };
    let rk = derive(key, 6);
    let drift_row: Vec<f32> = (0..rows)
        .map(|r| {
            let h = mix64(rk.wrapping_add(r as u64));
            if kind == Kind::Embed {
                (EMBED_LOG_MEAN + EMBED_LOG_SPREAD * normal(h)).exp()
            } else if rows > 1 {
                lognormal(h, 0.12)
            } else {
                1.0
            }
        })
        .collect();
    let steps = if frozen { 0 } else { drift_steps(spec, v) };
    let ext_steps = spec.vocab_extension_at.map(|at| drift_steps(spec, at).min(steps)).unwrap_or(0);
    let lora = match spec.lora_merge_at {
        Some(l) if v >= l && !frozen && matches!(kind, Kind::Q | Kind::V) => {
            let r = spec.lora_rank.max(1);
            let ak = derive(key, 7);
            let bk = derive(key, 8);
            // Element std of A·B: twice one fine-tuning step.
            let b_scale = 2.0 * REL_STEP * spec.step_scale * std / (r as f32).sqrt();
            let a: Vec<f32> = (0..rows * r).map(|i| normal(mix64(ak.wrapping_add(i as u64)))).collect();
            let b: Vec<f32> = (0..r * cols).map(|i| b_scale * normal(mix64(bk.wrapping_add(i as u64)))).collect();
            Some((r, a, b))
        }
        _ => None,
    };
    let mut outliers = Vec::new();
    if matches!(kind, Kind::Down | Kind::O) {
        // A few massive weights, as in real output projections.
        let n = (def.old_rows * cols) as u64;
        let count = n / 100_000 + 2;
        let ok = derive(key, 9);
        for i in 0..count {
            let h = mix64(ok.wrapping_add(i));
            let idx = (h >> 16) % n.max(1);
            let mag = std * (12.0 + 28.0 * unit(mix64(h)));
            let sign = if h & 1 == 0 { 1.0 } else { -1.0 };
            outliers.push((idx, sign * mag));
        }
        outliers.sort_by_key(|o| o.0);
    }
    Plan {
        def,
        key,
        mean,
        base_col,
        drift_col,
        drift_row,
        steps,
        ext_steps,
        lora,
        outliers,
        spice: spec.spice,
        version: v,
        dtype: spec.dtype,
        lr: if spec.drift { learning_rates(spec) } else { Vec::new() },
    }
}

impl Plan {
    fn elem_bytes(&self) -> usize {
        (self.dtype.bits() / 8) as usize
    }

    fn byte_len(&self) -> u64 {
        (self.def.rows * self.def.cols * self.elem_bytes()) as u64
    }

    /// Key of drift step `s` (1-based).
    /// Learning rate of drift step `s` (1-based).
    fn lr(&self, s: u32) -> f32 {
        self.lr.get(s as usize - 1).copied().unwrap_or(1.0)
    }

    fn step_key(&self, s: u32) -> u32 {
        derive(self.key, 1000 + u64::from(s)) as u32
    }

    /// Fills `acc` with the f32 values of row `r`, `g` is scratch. Uses the
    /// AVX2 build of the same code when the CPU has it: integer hashing and
    /// plain f32 multiply/add (no FMA) give identical bits on both paths.
    fn row(&self, r: usize, acc: &mut [f32], g: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            unsafe { self.row_avx2(r, acc, g) };
            return;
        }
        self.row_generic(r, acc, g);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn row_avx2(&self, r: usize, acc: &mut [f32], g: &mut [f32]) {
        self.row_generic(r, acc, g);
    }

    #[inline(always)]
    fn row_generic(&self, r: usize, acc: &mut [f32], g: &mut [f32]) {
        let cols = self.def.cols;
        let idx0 = (r * cols) as u64;
        let new_row = r >= self.def.old_rows;
        // Base values.
        let bk = derive(self.key, 10);
        let (k1, k2) = (bk as u32, (bk >> 32) as u32);
        let i32base = idx0 as u32 ^ ((idx0 >> 32) as u32).wrapping_mul(0x9E37_79B9);
        let init = if new_row { 0.7 } else { 1.0 };
        for ((c, a), s) in acc.iter_mut().enumerate().zip(&self.base_col) {
            let i = i32base.wrapping_add(c as u32);
            let h1 = mix32(k1 ^ i);
            let h2 = mix32(k2.wrapping_add(i));
            *a = self.mean + init * s * weight_draw(h1, h2);
        }
        let lo = self.outliers.partition_point(|o| o.0 < idx0);
        for &(i, add) in &self.outliers[lo..] {
            if i >= idx0 + cols as u64 {
                break;
            }
            acc[(i - idx0) as usize] += add;
        }
        // Drift: persistent direction plus independent step noise.
        let (from, to) = if new_row { (self.ext_steps, self.steps) } else { (0, self.steps) };
        if to > from {
            let sparse = self.def.kind == Kind::Embed && !new_row;
            let row_scale = if sparse { 1.0 } else { self.drift_row[r] };
            let mut any = false;
            if !sparse {
                let n = (from + 1..=to).map(|s| self.lr(s)).sum::<f32>() * PERSIST;
                let dk = derive(self.key, 11) as u32;
                for (c, x) in g.iter_mut().enumerate() {
                    *x = n * ih3(mix32(dk.wrapping_add(i32base.wrapping_add(c as u32))));
                }
                any = true;
            } else {
                g.fill(0.0);
            }
            let fresh = (1.0 - PERSIST * PERSIST).sqrt();
            for s in from + 1..=to {
                let w = if sparse {
                    // Only rows of tokens seen in this step move.
                    let h = mix64(derive(self.key, 12 + u64::from(s)).wrapping_add(r as u64));
                    if unit(h) >= EMBED_TOUCH {
                        continue;
                    }
                    (self.drift_row[r] * lognormal(mix64(h), 0.7)).min(1.5)
                } else {
                    fresh
                } * self.lr(s);
                any = true;
                let sk = self.step_key(s);
                for (c, x) in g.iter_mut().enumerate() {
                    *x += w * ih3(mix32(sk.wrapping_add(i32base.wrapping_add(c as u32))));
                }
            }
            if any {
                for ((a, x), d) in acc.iter_mut().zip(g.iter()).zip(&self.drift_col) {
                    *a += x * d * row_scale;
                }
            }
        }
        if let Some((rank, a, b)) = &self.lora {
            let arow = &a[r * rank..(r + 1) * rank];
            for (k, &ak) in arow.iter().enumerate() {
                let brow = &b[k * cols..(k + 1) * cols];
                for (x, &bv) in acc.iter_mut().zip(brow) {
                    *x += ak * bv;
                }
            }
        }
    }

    /// Generates rows `r0..r1` as little-endian bytes of the dtype.
    fn chunk(&self, r0: usize, r1: usize) -> Vec<u8> {
        let cols = self.def.cols;
        let eb = self.elem_bytes();
        let mut out = vec![0u8; (r1 - r0) * cols * eb];
        let mut acc = vec![0f32; cols];
        let mut g = vec![0f32; cols];
        let mut half_buf = vec![half::f16::ZERO; cols];
        for (r, row) in (r0..r1).zip(out.chunks_exact_mut(cols * eb)) {
            self.row(r, &mut acc, &mut g);
            match self.dtype {
                DType::BF16 => {
                    for (o, &x) in row.chunks_exact_mut(2).zip(&acc) {
                        o.copy_from_slice(&bf16_bits(x).to_le_bytes());
                    }
                }
                DType::F16 => {
                    use half::slice::HalfFloatSliceExt;
                    half_buf.convert_from_f32_slice(&acc);
                    for (o, x) in row.chunks_exact_mut(2).zip(&half_buf) {
                        o.copy_from_slice(&x.to_bits().to_le_bytes());
                    }
                }
                _ => {
                    for (o, &x) in row.chunks_exact_mut(4).zip(&acc) {
                        o.copy_from_slice(&x.to_le_bytes());
                    }
                }
            }
            if self.spice {
                self.add_spice(r, row);
            }
        }
        out
    }

    /// Replaces about one element in 1024 by a special value.
    fn add_spice(&self, r: usize, row: &mut [u8]) {
        let cols = self.def.cols;
        let eb = self.elem_bytes();
        let (sign, exp, mant) = match self.dtype {
            DType::BF16 => (0x8000u32, 0x7F80u32, 0x7Fu32),
            DType::F16 => (0x8000, 0x7C00, 0x3FF),
            _ => (0x8000_0000, 0x7F80_0000, 0x7F_FFFF),
        };
        let sk = derive(self.key, 13) as u32;
        let idx0 = (r * cols) as u32;
        for c in 0..cols {
            let h = mix32(sk.wrapping_add(idx0.wrapping_add(c as u32)));
            if h & 0x3FF != 0 {
                continue;
            }
            let h2 = mix32(h);
            // Half of the special values change kind from version to version.
            let shift = if h2 & 1 == 0 { self.version as u32 } else { 0 };
            let bits = match ((h2 >> 1) + shift) % 6 {
                // Quiet NaN with a payload.
                0 => exp | ((mant >> 1) + 1) | ((h2 >> 8) & (mant >> 2)),
                // Negative NaN, quiet bit clear.
                1 => sign | exp | 1 | ((h2 >> 8) & (mant >> 2)),
                2 => sign,
                3 => exp,
                4 => sign | exp,
                // Subnormal of either sign.
                _ => ((h2 >> 4) & mant) | 1 | ((h2 & 2) * (sign / 2)),
            };
            let at = c * eb;
            let le = bits.to_le_bytes();
            row[at..at + eb].copy_from_slice(&le[..eb]);
        }
    }
}

/// f32 → bf16 bits, round to nearest even (inputs are never NaN here).
#[inline]
fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    (b.wrapping_add(0x7FFF + ((b >> 16) & 1)) >> 16) as u16
}

// ---------------------------------------------------------------------------
// Writing safetensors files.

/// Header (with its 8-byte length prefix) for the plans, in order.
fn header(plans: &[&Plan]) -> Vec<u8> {
    use std::fmt::Write as _;
    let mut h = String::from("{\"__metadata__\":{\"format\":\"pt\"}");
    let mut off = 0u64;
    for p in plans {
        let shape: Vec<String> = p.def.shape.iter().map(|d| d.to_string()).collect();
        let end = off + p.byte_len();
        let _ = write!(
            h,
            ",\"{}\":{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{},{}]}}",
            p.def.name,
            p.dtype.name(),
            shape.join(","),
            off,
            end
        );
        off = end;
    }
    h.push('}');
    while !h.len().is_multiple_of(8) {
        h.push(' ');
    }
    let mut out = Vec::with_capacity(8 + h.len());
    out.extend_from_slice(&(h.len() as u64).to_le_bytes());
    out.extend_from_slice(h.as_bytes());
    out
}

/// Streams one safetensors file of `plans` into `w`; returns bytes written.
fn write_tensors<W: Write + Send>(plans: &[&Plan], w: &mut W) -> std::io::Result<u64> {
    let head = header(plans);
    w.write_all(&head)?;
    let mut total = head.len() as u64;
    // Jobs: runs of whole rows of about CHUNK_ELEMS elements, in file order.
    let mut jobs: Vec<(usize, usize, usize)> = Vec::new();
    for (i, p) in plans.iter().enumerate() {
        let per = (CHUNK_ELEMS / p.def.cols.max(1)).max(1);
        let mut r = 0;
        while r < p.def.rows {
            let e = (r + per).min(p.def.rows);
            jobs.push((i, r, e));
            r = e;
        }
    }
    // Batches of jobs of about BATCH_BYTES; batch i+1 is generated (in
    // parallel) while batch i is written.
    let mut batches: Vec<&[(usize, usize, usize)]> = Vec::new();
    let mut start = 0;
    while start < jobs.len() {
        let mut end = start;
        let mut bytes = 0usize;
        while end < jobs.len() && (end == start || bytes < BATCH_BYTES) {
            let (i, r0, r1) = jobs[end];
            bytes += (r1 - r0) * plans[i].def.cols * plans[i].elem_bytes();
            end += 1;
        }
        batches.push(&jobs[start..end]);
        start = end;
    }
    let generate = |batch: &[(usize, usize, usize)]| -> Vec<Vec<u8>> {
        batch.par_iter().map(|&(i, r0, r1)| plans[i].chunk(r0, r1)).collect()
    };
    let mut ready = batches.first().map(|b| generate(b)).unwrap_or_default();
    for next in batches.iter().skip(1).map(Some).chain([None]) {
        let (written, generated) = rayon::join(
            || -> std::io::Result<u64> {
                let mut n = 0;
                for c in &ready {
                    w.write_all(c)?;
                    n += c.len() as u64;
                }
                Ok(n)
            },
            || next.map(|b| generate(b)).unwrap_or_default(),
        );
        total += written?;
        ready = generated;
    }
    Ok(total)
}

fn check_spec(spec: &SeriesSpec) -> Result<()> {
    if !matches!(spec.dtype, DType::BF16 | DType::F16 | DType::F32) {
        return Err(Error::InvalidArgument(format!("synthetic checkpoints are BF16, F16 or F32, not {}", spec.dtype)));
    }
    Ok(())
}

fn plans_for(spec: &SeriesSpec, v: usize) -> Vec<Plan> {
    layout(spec, v).into_par_iter().map(|d| plan(spec, d, v)).collect()
}

fn write_file(path: &Path, plans: &[&Plan]) -> Result<u64> {
    let file = File::create(path).at(path)?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let n = write_tensors(plans, &mut w).at(path)?;
    w.flush().at(path)?;
    Ok(n)
}

/// Writes version `v` (0 = base) to `path` (a .safetensors file, or a
/// directory when `spec.sharded`). Returns bytes written (all files).
pub fn write_version(spec: &SeriesSpec, v: usize, path: &Path) -> Result<u64> {
    check_spec(spec)?;
    let plans = plans_for(spec, v);
    if !spec.sharded {
        let refs: Vec<&Plan> = plans.iter().collect();
        return write_file(path, &refs);
    }
    fs::create_dir_all(path).at(path)?;
    // Shard assignment from version-0 sizes, so it is stable over versions.
    let base = layout(spec, 0);
    let eb = spec.dtype.bits() / 8;
    let sizes: Vec<u64> = base.iter().map(|d| (d.rows * d.cols) as u64 * eb).collect();
    let total: u64 = sizes.iter().sum();
    let n = if spec.shards > 0 {
        spec.shards.min(base.len())
    } else if total < 64 << 20 {
        2
    } else if total < 512 << 20 {
        3
    } else {
        4
    };
    let mut shard_of = Vec::with_capacity(base.len());
    let mut acc = 0u64;
    for s in &sizes {
        let k = ((acc * n as u64) / total.max(1)) as usize;
        shard_of.push(k.min(n - 1));
        acc += s;
    }
    let mut written = 0u64;
    let mut weight_map = serde_json::Map::new();
    let mut data_size = 0u64;
    for k in 0..n {
        let fname = format!("model-{:05}-of-{:05}.safetensors", k + 1, n);
        let refs: Vec<&Plan> = plans.iter().zip(&shard_of).filter(|(_, s)| **s == k).map(|(p, _)| p).collect();
        for p in &refs {
            weight_map.insert(p.def.name.clone(), fname.clone().into());
            data_size += p.byte_len();
        }
        written += write_file(&path.join(&fname), &refs)?;
    }
    let index = serde_json::json!({
        "metadata": { "total_size": data_size },
        "weight_map": weight_map,
    });
    let files = [
        ("model.safetensors.index.json", json_text(&index)),
        ("config.json", json_text(&config_json(spec, v))),
        ("tokenizer.json", json_text(&tokenizer_json(spec, v))),
    ];
    for (name, text) in files {
        let p = path.join(name);
        fs::write(&p, text.as_bytes()).at(&p)?;
        written += text.len() as u64;
    }
    Ok(written)
}

fn json_text(v: &serde_json::Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

fn vocab_at(spec: &SeriesSpec, v: usize) -> usize {
    let m = spec.model_shape();
    match spec.vocab_extension_at {
        Some(at) if v >= at => m.vocab + extension_rows(spec, &m),
        _ => m.vocab,
    }
}

fn config_json(spec: &SeriesSpec, v: usize) -> serde_json::Value {
    let m = spec.model_shape();
    serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": m.hidden,
        "intermediate_size": m.intermediate,
        "num_hidden_layers": m.layers,
        "num_attention_heads": m.heads,
        "num_key_value_heads": m.kv_heads,
        "head_dim": m.head_dim,
        "vocab_size": vocab_at(spec, v),
        "hidden_act": "silu",
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "attention_bias": true,
        "tie_word_embeddings": spec.tied_embeddings,
        "torch_dtype": match spec.dtype {
            DType::F16 => "float16",
            DType::F32 => "float32",
            _ => "bfloat16",
        },
        "transformers_version": "4.44.0",
    })
}

/// A plausible few-KB tokenizer file; it gains added tokens at the vocab
/// extension and is otherwise identical across versions.
fn tokenizer_json(spec: &SeriesSpec, v: usize) -> serde_json::Value {
    const LETTERS: &[u8] = b"etaoinshrdlucmfwypvbgkjqxz";
    let key = derive(spec.seed, 0x70_6b6e);
    let mut vocab = serde_json::Map::new();
    for (i, special) in ["<unk>", "<s>", "</s>"].iter().enumerate() {
        vocab.insert((*special).to_string(), i.into());
    }
    for i in 3..400u64 {
        let h = mix64(key.wrapping_add(i));
        let len = 2 + (h % 6) as usize;
        let mut word = String::from(if h & 0x100 != 0 { "\u{2581}" } else { "" });
        for k in 0..len {
            word.push(LETTERS[((h >> (9 + 5 * k)) % 26) as usize] as char);
        }
        vocab.entry(word).or_insert(i.into());
    }
    let m = spec.model_shape();
    let mut added = vec![serde_json::json!({"id": 0, "content": "<unk>", "special": true})];
    let vocab_now = vocab_at(spec, v);
    for (n, id) in (m.vocab..vocab_now).enumerate().take(64) {
        added.push(serde_json::json!({"id": id, "content": format!("<extra_{n}>"), "special": false}));
    }
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": [{"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}]},
        "pre_tokenizer": null,
        "model": {"type": "BPE", "unk_token": "<unk>", "byte_fallback": true, "vocab": vocab, "merges": []},
    })
}

/// Writes all versions into `dir` as `v000.safetensors`, `v001.safetensors`…
/// (or `v000/`, `v001/`… directories when sharded); returns their paths.
pub fn write_series(spec: &SeriesSpec, dir: &Path) -> Result<Vec<PathBuf>> {
    check_spec(spec)?;
    fs::create_dir_all(dir).at(dir)?;
    let mut out = Vec::with_capacity(spec.versions);
    for v in 0..spec.versions {
        let p = if spec.sharded { dir.join(format!("v{v:03}")) } else { dir.join(format!("v{v:03}.safetensors")) };
        write_version(spec, v, &p)?;
        out.push(p);
    }
    Ok(out)
}

/// Returns the bytes of version `v` as one single safetensors file in
/// memory (whatever `spec.sharded` says), for unit tests of small specs.
/// A dtype other than BF16, F16 or F32 is treated as BF16.
pub fn version_bytes(spec: &SeriesSpec, v: usize) -> Vec<u8> {
    let mut spec = spec.clone();
    if check_spec(&spec).is_err() {
        spec.dtype = DType::BF16;
    }
    let plans = plans_for(&spec, v);
    let refs: Vec<&Plan> = plans.iter().collect();
    let data: u64 = refs.iter().map(|p| p.byte_len()).sum();
    let mut out = Vec::with_capacity(data as usize + (64 << 10));
    // Writing into a Vec cannot fail.
    let _ = write_tensors(&refs, &mut out);
    out
}

#[cfg(test)]
mod tests;
