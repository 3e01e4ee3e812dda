//! Criterion bench of a whole pack and restore: a generated BF16 base and
//! fine-tune pair (`tdelta_dev::synth`), the fine-tune packed as deltas against
//! the base, then restored. Size from `TDELTA_BENCH_BYTES` (default 1 GiB;
//! the bench name carries it).
//!
//! `cargo bench -p tdelta-dev --bench store`

use std::path::Path;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use tdelta::{DType, InitOptions, PackOptions, RestoreOptions, Silent, Store};
use tdelta_dev::synth::{SeriesSpec, write_version};

fn bytes() -> u64 {
    std::env::var("TDELTA_BENCH_BYTES").ok().and_then(|v| v.parse().ok()).unwrap_or(1 << 30)
}

/// A fresh store holding the base version.
fn store_with_base(dir: &Path, base: &Path) -> Store {
    let root = dir.join("store");
    if root.exists() {
        std::fs::remove_dir_all(&root).expect("remove old store");
    }
    let mut s = Store::init(&root, &InitOptions::default()).expect("init");
    tdelta::pack(&mut s, base, &PackOptions::default(), &Silent).expect("pack base");
    s
}

fn pack_and_restore(c: &mut Criterion) {
    let n = bytes();
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = SeriesSpec::new(42, DType::BF16, n, 2);
    let (v0, v1) = (dir.path().join("v0.safetensors"), dir.path().join("v1.safetensors"));
    write_version(&spec, 0, &v0).expect("write v0");
    let len = write_version(&spec, 1, &v1).expect("write v1");
    let name = format!("{}MiB", n >> 20);

    let mut g = c.benchmark_group("store");
    g.sample_size(10).measurement_time(Duration::from_secs(30)).throughput(Throughput::Bytes(len));
    g.bench_function(format!("pack-bf16-finetune/{name}"), |b| {
        b.iter_batched(
            || store_with_base(dir.path(), &v0),
            |mut s| tdelta::pack(&mut s, &v1, &PackOptions::default(), &Silent).expect("pack"),
            BatchSize::PerIteration,
        )
    });
    let mut s = store_with_base(dir.path(), &v0);
    let id = tdelta::pack(&mut s, &v1, &PackOptions::default(), &Silent).expect("pack").id;
    let out = dir.path().join("restored.safetensors");
    g.bench_function(format!("restore-bf16-finetune/{name}"), |b| {
        b.iter(|| tdelta::restore(&s, id, &out, &RestoreOptions { force: true }, &Silent).expect("restore"))
    });
    g.finish();
}

criterion_group!(benches, pack_and_restore);
criterion_main!(benches);
