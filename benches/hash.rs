//! Block id cost: xxh3-128 (format 1) vs BLAKE3 (format 2) on 1 MiB blocks,
//! one core (pack hashes blocks in parallel with rayon on top of this).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use tdelta_format::Algo;

fn block_ids(c: &mut Criterion) {
    let block: Vec<u8> = (0..1u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let mut g = c.benchmark_group("block_id_1MiB");
    g.throughput(Throughput::Bytes(block.len() as u64));
    for algo in [Algo::Xxh3, Algo::Blake3] {
        g.bench_function(algo.name(), |b| b.iter(|| algo.block(black_box(&block))));
    }
    g.finish();
}

criterion_group!(benches, block_ids);
criterion_main!(benches);
