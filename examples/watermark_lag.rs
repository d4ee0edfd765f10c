//! What the watermark quorum costs in latency: how far (event time) a partition's watermark under
//! `stream.watermark_quorum` = q trails the watermark any single vehicle moves (q = 1), record by
//! record, on the generated fleet partitioned as `run` partitions it. Bins close, and records turn
//! late, that much later.
//!
//! cargo run --release --example watermark_lag -- [vehicles] [days] [partitions]
use std::collections::HashMap;

use safetel::codec::decode;
use safetel::engine::admission::{TimeRules, VehicleClocks};
use safetel::generator::{Generator, GeneratorConfig};
use safetel::stream::memory::partition_for;

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<u64>().expect("a number"));
    let vehicles = args.next().unwrap_or(3000) as usize;
    let days = args.next().unwrap_or(56) as u32;
    let partitions = args.next().unwrap_or(4) as i32;
    let quorums = [2usize, 3, 5, 10];
    let config = GeneratorConfig {
        vehicles,
        days,
        ..GeneratorConfig::default()
    };
    // Per quorum and partition, its vehicles' clocks; per partition, the latest record time.
    let mut clocks: Vec<HashMap<i32, VehicleClocks>> = vec![HashMap::new(); quorums.len()];
    let mut single_clock: HashMap<i32, i64> = HashMap::new();
    let mut lags: Vec<Vec<i64>> = vec![Vec::new(); quorums.len()];
    let mut records = 0u64;
    for record in Generator::new(config).expect("valid fleet") {
        let Ok(event) = decode(&record.bytes) else {
            continue;
        };
        let partition = partition_for(record.key.as_bytes(), partitions);
        let time = TimeRules::record_time(&event);
        let single = single_clock.entry(partition).or_insert(i64::MIN);
        *single = (*single).max(time);
        for ((q, lag), per_partition) in quorums.iter().zip(&mut lags).zip(&mut clocks) {
            let partition_clocks = per_partition.entry(partition).or_default();
            partition_clocks.observe(&record.key, time, *q);
            let w = partition_clocks.watermark(*q);
            if w != i64::MIN {
                lag.push(*single - w);
            }
        }
        records += 1;
    }
    println!(
        "{records} records, {vehicles} vehicles x {days} days on {partitions} partitions: how far the watermark trails the most advanced vehicle"
    );
    println!("quorum | median | p99 | max (seconds of event time)");
    for (q, lag) in quorums.iter().zip(&mut lags) {
        lag.sort_unstable();
        let at = |p: f64| lag[((lag.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
        println!(
            "{q:>6} | {:>6.1} | {:>5.1} | {:>5.1}",
            at(0.5),
            at(0.99),
            at(1.0)
        );
    }
}
