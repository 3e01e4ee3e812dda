//! Options of a generated checkpoint series, shared by `demo` and `bench`.

use clap::Args;
use tdelta::DType;
use tdelta_dev::synth::SeriesSpec;

use crate::fmt;

/// How to generate a realistic fine-tuning series (`tdelta_dev::synth`).
#[derive(Args)]
pub struct SeriesArgs {
    /// Number of checkpoint versions in the generated series.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub versions: u64,
    /// Approximate size of each generated checkpoint (e.g. 128M, 1G).
    #[arg(long, default_value = "128M", value_parser = fmt::parse_size)]
    pub size: u64,
    /// Element type of the generated weights: bf16, f16 or f32.
    #[arg(long, default_value = "bf16", value_parser = float_dtype)]
    pub dtype: DType,
    /// Seed of the generator (same seed, same bytes).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Let the versions drift apart as in a real run (decaying learning
    /// rate: each version closer to the previous one than to the base).
    #[arg(long)]
    pub drift: bool,
}

impl SeriesArgs {
    /// The generator's specification.
    pub fn spec(&self) -> SeriesSpec {
        SeriesSpec { drift: self.drift, ..SeriesSpec::new(self.seed, self.dtype, self.size, self.versions as usize) }
    }
}

fn float_dtype(s: &str) -> Result<DType, String> {
    match s.to_ascii_uppercase().parse::<DType>() {
        Ok(d @ (DType::BF16 | DType::F16 | DType::F32)) => Ok(d),
        _ => Err(format!("`{s}` is not one of bf16, f16, f32")),
    }
}
