//! What the watermark quorum costs in latency: how far (event time) a partition's watermark under
//! `stream.watermark_quorum` = q trails the watermark any single vehicle moves (q = 1), record by
//! record, on the generated fleet partitioned as `run` partitions it. Bins close, and records turn
//! late, that much later.
//!
//! cargo run --release --example watermark_lag -- [vehicles] [days] [partitions]
use std::collections::HashMap;

use safetel::codec::decode;
use safetel::engine::admission::{TimeRules, VehicleClocks};
use safetel::engine::memory::partition_for;
use safetel::generator::{Generator, GeneratorConfig};

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
    // Per partition: its vehicles' clocks, and each vehicle's latest record time.
    let mut clocks: HashMap<i32, VehicleClocks> = HashMap::new();
    let mut latest: HashMap<String, i64> = HashMap::new();
    let mut lags: Vec<Vec<i64>> = vec![Vec::new(); quorums.len()];
    let mut records = 0u64;
    for record in Generator::new(config).expect("valid fleet") {
        let Ok(event) = decode(&record.bytes) else {
            continue;
        };
        let partition = partition_for(record.key.as_bytes(), partitions);
        let time = TimeRules::record_time(&event);
        let before = latest.get(&record.key).copied().unwrap_or(i64::MIN);
        let after = before.max(time);
        latest.insert(record.key.clone(), after);
        let partition_clocks = clocks.entry(partition).or_default();
        partition_clocks.advance(before, after);
        let single = partition_clocks.watermark(1);
        for (q, lag) in quorums.iter().zip(&mut lags) {
            let w = partition_clocks.watermark(*q);
            if w != i64::MIN {
                lag.push(single - w);
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
