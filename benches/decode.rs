//! Decode throughput: the fast path (current schema) and the resolution path (older schema), on
//! a realistic mix of generated records. Run: cargo bench --bench decode
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use safetel::codec::decode;
use safetel::generator::{Generator, GeneratorConfig};

fn records() -> Vec<Vec<u8>> {
    let config = GeneratorConfig {
        vehicles: 200,
        days: 7,
        ..GeneratorConfig::default()
    };
    Generator::new(config).unwrap().map(|r| r.bytes).collect()
}

fn bench(c: &mut Criterion) {
    let records = records();
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(records.len() as u64));
    group.bench_function("current_schema_fast_path", |b| {
        b.iter(|| {
            for bytes in &records {
                black_box(decode(black_box(bytes)).unwrap());
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
