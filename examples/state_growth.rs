//! State growth against event time, with the configured retention or with everything kept: a
//! generated fleet through the engine and a real RocksDB store, committing every
//! `commit_records` records (300,000 is about one second of `safetel run`). Every 30 event days
//! it prints the store's live bytes (what the compacted changelog holds and a restore reads), its
//! size on disk, the bins held and the process's RSS; at the end, the bytes the commits wrote to
//! the changelog's column families (keys and values, tombstones included) per input record, and
//! how long a restore of the live state into an engine takes.
//!
//! cargo run --release --example state_growth -- [vehicles] [days] [keep|retain] [commit_records]
//! (with `SAFETEL_*` settings from the environment, e.g. `SAFETEL_RETENTION__BIN_DAYS=60`)
use std::collections::BTreeMap;
use std::path::Path;

use safetel::config::Config;
use safetel::engine::{Engine, RestoredState, Retention, StateDelta};
use safetel::generator::{Generator, GeneratorConfig};
use safetel::metrics::Metrics;
use safetel::store::Store;
use safetel::stream::memory::run_in_memory;
use safetel::stream::runner::{CommitError, CommitTarget};

const DAY: i64 = 86_400_000;

struct Measured {
    store: Store,
    dir: std::path::PathBuf,
    vehicles: safetel::engine::HeldFleet,
    first_day: i64,
    next_report_day: i64,
    written: BTreeMap<&'static str, u64>,
}

impl CommitTarget for Measured {
    fn commit(&mut self, mut delta: StateDelta) -> Result<(), CommitError> {
        let watermark = delta.positions.iter().map(|p| p.watermark_ms).max();
        let ops = self.store.ops(&mut delta)?;
        for op in ops.iter().filter(|op| op.changelog_partition().is_some()) {
            *self.written.entry(op.cf).or_default() +=
                (op.key.len() + op.value.as_ref().map_or(0, Vec::len)) as u64;
        }
        self.store.apply(ops, &[])?;
        let day = watermark.map_or(0, |w| (w - self.first_day) / DAY);
        if day >= self.next_report_day {
            self.next_report_day += 30;
            self.report(day);
        }
        Ok(())
    }
}

impl Measured {
    fn report(&self, day: i64) {
        let live = self.store.live_bytes().unwrap_or(0);
        let mut bins = 0;
        self.vehicles.for_each(|_, v| bins += v.bins.len());
        let (disk, wal) = dir_bytes(&self.dir);
        println!(
            "day {day:>4}  live {:>7.1} MB  on disk {:>7.1} MB (WAL {:>6.1})  bins {bins:>8}  RSS {:>6.1} MB",
            live as f64 / 1e6,
            disk as f64 / 1e6,
            wal as f64 / 1e6,
            rss_kb() as f64 / 1e3
        );
    }
}

/// Bytes of the store's files, and of those its write-ahead log (`*.log`).
fn dir_bytes(dir: &Path) -> (u64, u64) {
    let mut bytes = (0, 0);
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_file() {
            bytes.0 += meta.len();
            if entry.path().extension().is_some_and(|e| e == "log") {
                bytes.1 += meta.len();
            }
        }
    }
    bytes
}

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |i: usize, default: u64| {
        args.get(i)
            .map_or(default, |a| a.parse().expect("a number"))
    };
    let vehicles = number(0, 1000) as usize;
    let days = number(1, 365) as u32;
    let keep = args.get(2).is_some_and(|a| a == "keep");
    let commit_records = number(3, 300_000) as usize;
    // The built-in configuration with SAFETEL_* overrides (SAFETEL_RETENTION__BIN_DAYS=60).
    let config = Config::load(None, std::env::vars()).expect("configuration");
    let retention = if keep {
        Retention::KEEP_ALL
    } else {
        Retention::of(&config)
    };
    let fleet = GeneratorConfig {
        vehicles,
        days,
        ..GeneratorConfig::default()
    };
    let first_day = fleet.validate().expect("valid fleet");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("state");
    let mut engine = Engine::new(
        config.stream.clone(),
        &config.detector,
        RestoredState::default(),
        Metrics::new(),
    )
    .expect("empty state")
    .with_retention(retention);
    let mut target = Measured {
        store: Store::open(&path).expect("store"),
        dir: path,
        vehicles: engine.vehicles(),
        first_day,
        next_report_day: 30,
        written: BTreeMap::new(),
    };
    println!(
        "{vehicles} vehicles x {days} days, {retention:?}, commits every {commit_records} records"
    );
    let mut records = 0u64;
    let stream = Generator::new(fleet)
        .expect("valid fleet")
        .inspect(|_| records += 1)
        .map(|r| (r.key, r.bytes));
    run_in_memory(&mut engine, stream, 4, &mut target, commit_records).expect("run");
    target.report(i64::from(days));
    let total: u64 = target.written.values().sum();
    println!(
        "{records} records; changelog written {:.1} MB, {:.1} bytes per record:",
        total as f64 / 1e6,
        total as f64 / records as f64
    );
    // A restore of the live state, as a process taking over every partition would make it.
    drop(engine);
    let started = std::time::Instant::now();
    let restored = target.store.restore().expect("restore");
    let restored_vehicles = restored.vehicles.len();
    let engine = Engine::new(
        config.stream.clone(),
        &config.detector,
        restored,
        Metrics::new(),
    )
    .expect("restored state");
    println!(
        "restore: {restored_vehicles} vehicles, {:.1} MB live, {:.2} s to an engine",
        target.store.live_bytes().unwrap_or(0) as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    drop(engine);
    for (cf, bytes) in &target.written {
        println!(
            "  {cf:<14} {:>8.1} MB  {:>6.1} B/record",
            *bytes as f64 / 1e6,
            *bytes as f64 / records as f64
        );
    }
}
