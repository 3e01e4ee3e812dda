//! Deterministic generator of realistic checkpoint series (seeded), for
//! tests, benches and the demo.
