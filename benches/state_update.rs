//! The per-record path in process: decode + validate + clock checks + lateness + dedup + bin
//! update + fact capture, i.e. `Engine::process`, on generated records. Commits (RocksDB) are not included:
//! they are measured end to end by scripts/bench-e2e. Run: cargo bench --bench state_update
use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use safetel::config::Config;
use safetel::engine::{Engine, RestoredState, SourceRecord};
use safetel::generator::{Generator, GeneratorConfig};
use safetel::metrics::Metrics;

fn bench(c: &mut Criterion) {
    let config = GeneratorConfig {
        vehicles: 200,
        days: 7,
        ..GeneratorConfig::default()
    };
    // With the simulated produce time as the Kafka timestamp, so the clock checks run.
    let records: Vec<(Vec<u8>, i64)> = Generator::new(config)
        .unwrap()
        .map(|r| (r.bytes, r.produced_ms))
        .collect();
    let config = Config::default_config();
    let stream = config.stream.clone();
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(records.len() as u64));
    group.bench_function("process_decode_and_state_update", |b| {
        b.iter_batched(
            || {
                Engine::new(
                    stream.clone(),
                    &config.detector,
                    RestoredState::default(),
                    Metrics::new(),
                )
                .expect("empty state")
            },
            |mut engine| {
                for (offset, (bytes, produced_ms)) in records.iter().enumerate() {
                    let record = SourceRecord {
                        partition: safetel::engine::PartitionId::Source(0),
                        offset: offset as i64,
                        key: None,
                        payload: bytes,
                        timestamp_ms: Some(*produced_ms),
                    };
                    let _ = black_box(engine.process(&record));
                }
                engine
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
