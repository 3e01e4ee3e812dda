//! A seeded generator for the test suites of both the engine and the CLI
//! (`tests/common` includes this file): one copy, no dev-dependency.

/// splitmix64: a tiny seeded generator.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }
}

/// Seed from `env` if set (to replay a failure), else `default`.
pub fn seed(env: &str, default: u64) -> u64 {
    std::env::var(env).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}
