use std::borrow::Cow;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use super::memory::{MemoryDeadLetters, MemorySource};
use super::runner::{self, CommitPolicy, StatusBoard};
use super::*;
use crate::codec::encode_to_vec;
use crate::config::Config;
use crate::generator::{FaultConfig, Generator, GeneratorConfig};
use crate::model::*;
use crate::store::Store;

const HOUR: i64 = 3_600_000;
const T0: i64 = 1_767_571_200_000; // 2026-01-05T00:00Z

fn engine() -> Engine {
    Engine::new(
        Config::default_config().stream,
        RestoredState::default(),
        Metrics::new(),
    )
}

fn safety(vehicle: &str, id: &str, time: i64, event_type: EventType) -> Vec<u8> {
    encode_to_vec(&TelemetryEvent {
        vehicle_id: Cow::Borrowed(vehicle),
        event_time_ms: time,
        payload: Payload::Safety(SafetyEvent {
            event_id: Cow::Borrowed(id),
            trip_id: "t".into(),
            event_type,
            severity: Severity::Low,
            speed_kph: 50.0,
        }),
    })
}

fn trip(vehicle: &str, id: &str, end: i64, duration_s: f64) -> Vec<u8> {
    encode_to_vec(&TelemetryEvent {
        vehicle_id: Cow::Borrowed(vehicle),
        event_time_ms: end,
        payload: Payload::Trip(TripSummary {
            trip_id: Cow::Borrowed(id),
            driver_id: "d".into(),
            start_time_ms: end - (duration_s * 1000.0) as i64,
            end_time_ms: end,
            distance_km: 10.0,
            duration_s,
            mode: DrivingMode::Manual,
            road_type: RoadType::Urban,
            weather: Weather::Clear,
            night: false,
            firmware_version: "fw-1".into(),
            vehicle_model: "m".into(),
        }),
    })
}

fn feed(engine: &mut Engine, records: &[Vec<u8>]) -> Vec<Result<RecordKind, Rejection>> {
    records
        .iter()
        .enumerate()
        .map(|(offset, bytes)| {
            engine.process(&SourceRecord {
                partition: 0,
                offset: offset as i64,
                key: None,
                payload: bytes,
                timestamp_ms: None,
            })
        })
        .collect()
}

#[test]
fn counts_and_exposure_land_in_event_time_bins() {
    let mut e = engine();
    let results = feed(
        &mut e,
        &[
            trip("v1", "t1", T0 + HOUR, 1800.0),
            safety("v1", "e1", T0 + 2 * HOUR, EventType::NearMiss),
            safety("v1", "e2", T0 + 25 * HOUR, EventType::HardBrake),
            trip("v1", "t2", T0 + 26 * HOUR, 3600.5),
        ],
    );
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let vehicles = e.vehicles();
    let v = vehicles.get("v1").unwrap();
    let day0 = v.bins[&T0];
    let day1 = v.bins[&(T0 + 24 * HOUR)];
    assert_eq!(
        (
            day0.trips,
            day0.exposure_ms,
            day0.critical,
            day0.safety_events
        ),
        (1, 1_800_000, 1, 1)
    );
    assert_eq!(
        (
            day1.trips,
            day1.exposure_ms,
            day1.critical,
            day1.safety_events
        ),
        (1, 3_600_500, 0, 1)
    );
    assert_eq!(v.meta.firmware_version, "fw-1");
}

#[test]
fn duplicates_and_late_records_are_rejected_with_reasons() {
    let mut e = engine();
    let lateness = Config::default_config().stream.allowed_lateness_s * 1000;
    let results = feed(
        &mut e,
        &[
            safety("v1", "e1", T0 + 10 * HOUR, EventType::HardBrake),
            safety("v1", "e1", T0 + 10 * HOUR, EventType::HardBrake),
            safety("v2", "e1", T0 + 10 * HOUR, EventType::HardBrake), // same id, other vehicle: distinct
            safety("v1", "e3", T0 + 10 * HOUR - lateness, EventType::HardBrake), // exactly at the limit: on time
            safety(
                "v1",
                "e4",
                T0 + 10 * HOUR - lateness - 1,
                EventType::HardBrake,
            ),
            vec![0, 0, 0, 0, 2, 0xff],
            vec![0; 70_000],
        ],
    );
    let reasons: Vec<&str> = results
        .iter()
        .map(|r| r.as_ref().map_or_else(|e| e.reason(), |_| "ok"))
        .collect();
    assert_eq!(
        reasons,
        ["ok", "duplicate", "ok", "ok", "late", "decode", "oversized"]
    );
    assert_eq!(
        e.positions()[&0],
        7,
        "every record moves the offset, accepted or not"
    );
    assert_eq!(e.vehicles().get("v1").unwrap().totals().safety_events, 2);
}

fn faulty_fleet() -> Vec<(String, Vec<u8>)> {
    let config = GeneratorConfig {
        vehicles: 30,
        days: 8,
        faults: FaultConfig {
            out_of_order: 0.03,
            late: 0.01,
            duplicate: 0.03,
            corrupt: 0.02,
        },
        ..GeneratorConfig::default()
    };
    Generator::new(config)
        .unwrap()
        .map(|r| (r.key, r.bytes))
        .collect()
}

fn run_all(
    store: &mut Store,
    engine: &mut Engine,
    records: Vec<(String, Vec<u8>)>,
    skip: HashMap<i32, i64>,
) -> MemoryDeadLetters {
    let mut dlq = MemoryDeadLetters::default();
    let mut source = MemorySource::new(records.into_iter(), 3).resume_from(skip);
    let policy = CommitPolicy {
        interval: Duration::from_secs(3600),
        max_records: 997,
    };
    runner::run(
        engine,
        &mut source,
        &mut dlq,
        store,
        policy,
        &AtomicBool::new(false),
        &StatusBoard::default(),
    )
    .unwrap();
    dlq
}

#[test]
fn restart_from_any_commit_gives_the_state_of_an_uninterrupted_run() {
    let records = faulty_fleet();
    let config = Config::default_config();

    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("whole")).unwrap();
    let mut e = Engine::new(
        config.stream.clone(),
        RestoredState::default(),
        Metrics::new(),
    );
    let dlq = run_all(&mut store, &mut e, records.clone(), HashMap::new());
    let expected = store.snapshot().unwrap();
    assert!(
        dlq.records.len() > 20,
        "faults reached the DLQ: {}",
        dlq.records.len()
    );

    // "Crash" after the first ~40% of records: a commit is made, then the process is gone and its
    // uncommitted hot state with it. A fresh engine restores from the store and replays.
    let cut = records.len() * 2 / 5;
    let mut store = Store::open(&dir.path().join("crashed")).unwrap();
    let mut first = Engine::new(
        config.stream.clone(),
        RestoredState::default(),
        Metrics::new(),
    );
    run_all(
        &mut store,
        &mut first,
        records[..cut].to_vec(),
        HashMap::new(),
    );
    // Records processed after the last commit would be lost with the process; simulate that by
    // processing more without committing.
    for (offset, (_, bytes)) in records[cut..cut + 500].iter().enumerate() {
        let _ = first.process(&SourceRecord {
            partition: 0,
            offset: offset as i64,
            key: None,
            payload: bytes,
            timestamp_ms: None,
        });
    }
    drop(first);
    let restored = store.restore().unwrap();
    let positions: HashMap<i32, i64> = restored
        .partitions
        .iter()
        .map(|(p, s)| (*p, s.next_offset))
        .collect();
    let mut second = Engine::new(config.stream.clone(), restored, Metrics::new());
    run_all(&mut store, &mut second, records, positions);
    assert_eq!(store.snapshot().unwrap(), expected);
}

/// Hands over its records, then has nothing more (like a caught-up Kafka consumer) until stopped.
struct IdleAfterRecords(Vec<Vec<u8>>, usize);

impl runner::RecordSource for IdleAfterRecords {
    fn poll(
        &mut self,
        _max_wait: Duration,
        handle: &mut dyn FnMut(&SourceRecord<'_>),
    ) -> Result<runner::Poll, runner::SourceError> {
        let Some(bytes) = self.0.get(self.1) else {
            std::thread::sleep(Duration::from_millis(1));
            return Ok(runner::Poll::Records(0));
        };
        handle(&SourceRecord {
            partition: 0,
            offset: self.1 as i64,
            key: None,
            payload: bytes,
            timestamp_ms: None,
        });
        self.1 += 1;
        Ok(runner::Poll::Records(1))
    }
}

#[test]
fn commits_become_visible_while_the_source_is_idle() {
    // Regression: a commit still in flight when records stopped coming was never acknowledged.
    let records: Vec<Vec<u8>> = (0..50)
        .map(|i| {
            safety(
                "v1",
                &format!("e{i}"),
                T0 + i64::from(i) * 1000,
                EventType::HardBrake,
            )
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let mut e = engine();
    let status = StatusBoard::default();
    let shutdown = AtomicBool::new(false);
    let policy = CommitPolicy {
        interval: Duration::from_millis(1),
        max_records: 7,
    };
    std::thread::scope(|scope| {
        let run = scope.spawn(|| {
            let mut source = IdleAfterRecords(records, 0);
            let mut dlq = MemoryDeadLetters::default();
            runner::run(
                &mut e,
                &mut source,
                &mut dlq,
                &mut store,
                policy,
                &shutdown,
                &status,
            )
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while status.snapshot().committed_records < 50 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let committed = status.snapshot().committed_records;
        shutdown.store(true, std::sync::atomic::Ordering::Relaxed);
        run.join().unwrap().unwrap();
        assert_eq!(
            committed, 50,
            "every record committed and acknowledged before shutdown"
        );
    });
}
