use std::borrow::Cow;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use super::*;
use crate::codec::{self, encode_to_vec};
use crate::config::Config;
use crate::generator::{FaultConfig, FirmwareRollout, Generator, GeneratorConfig};
use crate::model::*;
use crate::store::Store;
use crate::stream::memory::{MemoryDeadLetters, MemoryOutputs, MemorySource, run_in_memory};
use crate::stream::runner::{self, CommitPolicy, Sinks, StatusBoard};

const HOUR: i64 = 3_600_000;
const T0: i64 = 1_767_571_200_000; // 2026-01-05T00:00Z

fn engine_from(restored: RestoredState) -> Engine {
    let config = Config::default_config();
    Engine::new(config.stream, &config.detector, restored, Metrics::new()).unwrap()
}

fn engine() -> Engine {
    engine_from(RestoredState::default())
}

/// An engine for a test of one or two vehicles: configured, as a fleet that small must be, with
/// a watermark quorum of one (a partition's watermark is its most advanced vehicle's time).
fn engine_of_few() -> Engine {
    let mut config = Config::default_config();
    config.stream.watermark_quorum = 1;
    Engine::new(
        config.stream,
        &config.detector,
        RestoredState::default(),
        Metrics::new(),
    )
    .unwrap()
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
                partition: PartitionId::Source(0),
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
    let mut e = engine_of_few();
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
        e.positions()[&PartitionId::Source(0)],
        7,
        "every record moves the offset, accepted or not"
    );
    assert_eq!(e.vehicles().get("v1").unwrap().totals().safety_events, 2);
}

/// A small fleet with every kind of fault and a firmware rollout that doubles (and more) the
/// critical-event rate of half the fleet from day 20: enough for alerts.
#[test]
fn bins_close_only_after_the_watermark_passes_their_end_plus_lateness_and_raise_alerts() {
    // One vehicle, 8 h a day: 1 critical event a day for 40 days, then 8 a day. The detector
    // must open an episode for it; the alert id names the key, class and onset date.
    let lateness = Config::default_config().stream.allowed_lateness_s * 1000;
    let mut e = engine_of_few();
    let mut records = Vec::new();
    for day in 0..60i64 {
        let start = T0 + day * 24 * HOUR;
        records.push(trip(
            "v1",
            &format!("t{day}"),
            start + 9 * HOUR,
            8.0 * 3600.0,
        ));
        let events = if day < 40 { 1 } else { 8 };
        for k in 0..events {
            let id = format!("e{day}-{k}");
            records.push(safety(
                "v1",
                &id,
                start + 10 * HOUR + k * 60_000,
                EventType::NearMiss,
            ));
        }
    }
    // Day 0 stays open until an event at or past its end plus the lateness arrives.
    feed(&mut e, &records[..2]);
    let next_bin = |e: &Engine| {
        e.vehicles()
            .get("v1")
            .unwrap()
            .series_of(HazardClass::Critical)
            .map(|s| s.next_bin_ms)
    };
    assert_eq!(next_bin(&e), None, "no bin closed yet");
    let at_limit = safety(
        "v1",
        "x1",
        T0 + 24 * HOUR + lateness - 1,
        EventType::HardBrake,
    );
    let past_limit = safety("v1", "x2", T0 + 24 * HOUR + lateness, EventType::HardBrake);
    feed(&mut e, &[at_limit]);
    assert_eq!(next_bin(&e), None, "one ms before the limit: still open");
    feed(&mut e, &[past_limit]);
    assert_eq!(
        next_bin(&e),
        Some(T0 + 24 * HOUR),
        "day 0 closed, day 1 next"
    );

    let mut e = engine_of_few();
    feed(&mut e, &records);
    let alerts = e.take_alerts();
    let opened: Vec<&RegressionAlert> = alerts
        .iter()
        .filter(|a| a.status == AlertStatus::Opened && a.key_kind == KeyKind::Vehicle)
        .collect();
    assert_eq!(opened.len(), 1, "{alerts:?}");
    let alert = opened[0];
    assert_eq!(alert.hazard_class, HazardClass::Critical);
    let onset_day = (alert.onset_estimate - T0) / (24 * HOUR);
    assert!(
        (38..=41).contains(&onset_day),
        "onset estimate day {onset_day}"
    );
    let detected_day = (alert.detected_at - T0) as f64 / (24.0 * HOUR as f64);
    // The config prior (mean 0.01 per hour) sits far below this vehicle's 0.125, so a new segment
    // needs a few elevated bins before it outweighs the long one: about a week.
    assert!(
        detected_day > 40.0 && detected_day <= 50.0,
        "detected on day {detected_day}"
    );
    assert_eq!(
        alert.alert_id,
        format!(
            "VEHICLE/v1/critical/{}/OPENED",
            utc_date(alert.onset_estimate)
        )
    );
    assert!(alert.hr_low > 1.5 && alert.hr_median > 3.0, "{alert:?}");
    assert_eq!(
        e.metrics.open_episodes.get(),
        opened.len() as i64
            + alerts
                .iter()
                .filter(|a| a.status == AlertStatus::Opened && a.key_kind == KeyKind::Cohort)
                .count() as i64
    );
}

#[test]
fn a_scheduled_refits_spread_applies_from_the_next_bin() {
    let records: Vec<Vec<u8>> = (0..20i64)
        .flat_map(|day| {
            let start = T0 + day * 24 * HOUR;
            [
                trip("v1", &format!("t{day}"), start + 9 * HOUR, 8.0 * 3600.0),
                safety(
                    "v1",
                    &format!("e{day}"),
                    start + 10 * HOUR,
                    EventType::NearMiss,
                ),
            ]
        })
        .collect();
    let mut e = engine_of_few();
    let (to_engine, refits) = std::sync::mpsc::channel();
    e.receive_priors(Box::new(refits));
    feed(&mut e, &records[..20]);
    let shape = |e: &Engine| {
        let settings = e.detection_settings();
        (
            settings.fleet_shape[HazardClass::Critical],
            settings.fleet_shape_source[HazardClass::Critical],
        )
    };
    let config = Config::default_config().detector;
    assert_eq!(shape(&e), (config.fleet_shape, "config"));
    // Two vehicles' posteriors: means 0.01 and 0.02 per hour, so the fleet's mean is 0.015 and
    // its variance 0.005^2 (between) + 5e-5 (within): a Gamma shape of 0.015^2 / 7.5e-5 = 3.
    let prior = Prior {
        a0: 3.0,
        b0: 300.0,
        run_id: 7,
    };
    let other = Prior { a0: 6.0, ..prior };
    to_engine
        .send(vec![("v1".to_string(), prior), ("v2".to_string(), other)])
        .unwrap();
    feed(&mut e, &records[20..24]);
    assert_eq!(
        shape(&e),
        (config.fleet_shape, "config"),
        "not applied until the run loop asks"
    );
    e.apply_received_priors();
    feed(&mut e, &records[24..]);
    assert_eq!(shape(&e), (3.0, "refit"));
    assert_eq!(e.prior("v1"), Some(prior));
    let alerts_source = e
        .vehicles()
        .get("v1")
        .unwrap()
        .series_of(HazardClass::Critical)
        .unwrap()
        .last
        .is_some();
    assert!(alerts_source, "the series went on after the refit");
}

/// Alerts of a fleet run through the engine in process under a review policy.
fn alerts_under(
    policy: Option<crate::sampling::SamplingPolicy>,
    records: &[(String, Vec<u8>)],
) -> Vec<RegressionAlert> {
    let mut e = engine();
    if let Some(policy) = policy {
        e = e.with_sampling(policy);
    }
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let (_, alerts) =
        run_in_memory(&mut e, records.iter().cloned(), 4, &mut store, 50_000).unwrap();
    alerts.alerts
}

#[test]
fn at_budget_one_every_policy_gives_exactly_the_full_result() {
    use crate::sampling::{Policy, SamplingPolicy};
    let records = rollout_fleet(200, 42, 20, 4.0);
    let full = alerts_under(
        Some(SamplingPolicy::new(Policy::Full, 1.0, 0.1, 1).unwrap()),
        &records,
    );
    assert!(
        full.iter().any(|a| a.key == "firmware:fw-9"),
        "the rollout is detected: {full:?}"
    );
    for policy in [
        Policy::Uniform,
        Policy::Stratified,
        Policy::Importance,
        Policy::Adaptive,
    ] {
        let at_one = SamplingPolicy::new(policy, 1.0, 0.1, 1).unwrap();
        let alerts = alerts_under(Some(at_one), &records);
        // Identical but for the policy's name on each alert.
        let unnamed = |a: &[RegressionAlert]| -> Vec<RegressionAlert> {
            a.iter()
                .map(|a| RegressionAlert {
                    sampling_policy: String::new(),
                    ..a.clone()
                })
                .collect()
        };
        assert_eq!(unnamed(&alerts), unnamed(&full), "{policy:?} at budget 1");
        assert!(alerts.iter().all(|a| a.sampling_policy == policy.name()));
    }
    // And a real budget changes what the detectors see.
    let tenth = SamplingPolicy::new(Policy::Uniform, 0.1, 0.1, 1).unwrap();
    assert_ne!(alerts_under(Some(tenth), &records), full);
}

#[test]
fn cohort_bins_wait_for_every_input_partition_except_empty_ones() {
    // Ten days of one vehicle on partition 0; partition 1 has delivered nothing yet.
    let records: Vec<Vec<u8>> = (0..10i64)
        .map(|day| {
            trip(
                "v1",
                &format!("t{day}"),
                T0 + day * 24 * HOUR + 9 * HOUR,
                3600.0,
            )
        })
        .collect();
    let cohort_bins = |inputs: &[(i32, Option<i64>)]| {
        let mut e = engine_of_few();
        e.set_input_partitions(inputs);
        feed(&mut e, &records);
        e.cohorts()
            .get("model:m")
            .map(|s| s[HazardClass::Critical].next_bin_ms)
    };
    assert_eq!(
        cohort_bins(&[(0, None), (1, None)]),
        None,
        "partition 1 holds cohorts back"
    );
    assert_eq!(
        cohort_bins(&[(0, None), (1, Some(5))]),
        None,
        "it has records to deliver"
    );
    // The last trip ends on day 9 at 09:00; minus six hours of lateness, days 0-8 are closed.
    let day9 = T0 + 9 * 24 * HOUR;
    assert_eq!(
        cohort_bins(&[(0, None), (1, Some(0))]),
        Some(day9),
        "an empty partition does not"
    );
    assert_eq!(cohort_bins(&[(0, None)]), Some(day9));
}

#[test]
fn a_partition_with_fewer_vehicles_than_the_quorum_is_not_taken_for_empty() {
    // Partition 1: two vehicles, read to its end first (no watermark under a quorum of three);
    // partition 0: five vehicles, whose bins close. Cohort bins must wait for partition 1,
    // which has delivered records it has not closed, not treat it as empty.
    // Each day's trips, vehicle by vehicle: in event-time order.
    let trips = |vehicles: &[String]| -> Vec<Vec<u8>> {
        (0..10i64)
            .flat_map(|day| {
                let end = T0 + day * 24 * HOUR + 9 * HOUR;
                vehicles
                    .iter()
                    .map(move |v| trip(v, &format!("{v}-t{day}"), end, 3600.0))
            })
            .collect()
    };
    let small = trips(&["s1".into(), "s2".into()]);
    let large = trips(&(0..5).map(|n| format!("l{n}")).collect::<Vec<_>>());
    let mut e = engine();
    e.set_input_partitions(&[(0, Some(large.len() as i64)), (1, Some(small.len() as i64))]);
    let mut offsets = [0i64; 2];
    for bytes in &small {
        e.process(&next_record(&mut offsets, 1, bytes)).unwrap();
    }
    for bytes in &large {
        e.process(&next_record(&mut offsets, 0, bytes)).unwrap();
    }
    assert!(
        e.partition_state(PartitionId::Source(0)).closed_through_ms > T0,
        "partition 0 closed bins"
    );
    assert_eq!(
        e.partition_state(PartitionId::Source(1)).watermark_ms,
        i64::MIN
    );
    let cohort_next = e
        .cohorts()
        .get("model:m")
        .map(|s| s[HazardClass::Critical].next_bin_ms);
    assert!(
        cohort_next.is_none_or(|next| next <= T0),
        "a cohort bin closed without partition 1: {cohort_next:?}"
    );
}

fn faulty_fleet() -> Vec<(String, Vec<u8>)> {
    let mut config = GeneratorConfig {
        vehicles: 120,
        days: 42,
        faults: FaultConfig {
            out_of_order: 0.03,
            late: 0.01,
            duplicate: 0.03,
            corrupt: 0.02,
        },
        ..GeneratorConfig::default()
    };
    config.regressions.firmware_rollout = Some(FirmwareRollout {
        version: "fw-9".into(),
        day: 20,
        share: 0.5,
        hr_critical: 4.0,
    });
    Generator::new(config)
        .unwrap()
        .map(|r| (r.key, r.bytes))
        .collect()
}

fn run_all(
    store: &mut Store,
    engine: &mut Engine,
    records: Vec<(String, Vec<u8>)>,
    skip: HashMap<PartitionId, i64>,
) -> (MemoryDeadLetters, MemoryOutputs) {
    let mut dlq = MemoryDeadLetters::default();
    let mut alerts = MemoryOutputs::default();
    let mut source = MemorySource::new(records.into_iter(), 3).resume_from(skip);
    let policy = CommitPolicy {
        interval: Duration::from_secs(3600),
        max_records: 997,
    };
    let sinks = Sinks {
        dead_letters: &mut dlq,
        outputs: &mut alerts,
    };
    runner::run(
        engine,
        &mut source,
        sinks,
        store,
        policy,
        &AtomicBool::new(false),
        &StatusBoard::default(),
    )
    .unwrap();
    (dlq, alerts)
}

#[test]
fn restart_from_any_commit_gives_the_state_of_an_uninterrupted_run() {
    let records = faulty_fleet();
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("whole")).unwrap();
    let mut e = engine();
    let (dlq, alerts) = run_all(&mut store, &mut e, records.clone(), HashMap::new());
    let expected = store.snapshot().unwrap();
    assert!(
        dlq.records.len() > 20,
        "faults reached the DLQ: {}",
        dlq.records.len()
    );
    assert!(
        alerts.alerts.iter().any(|a| a.key == "firmware:fw-9"),
        "the rollout raised an alert: {:?}",
        alerts.alerts
    );
    assert!(
        expected["series"].as_object().unwrap().len() > 120,
        "vehicle and cohort series are in the store"
    );

    // "Crash" after the first ~40% of records: a commit is made, then the process is gone and its
    // uncommitted hot state with it. A fresh engine restores from the store and replays.
    let cut = records.len() * 2 / 5;
    let mut store = Store::open(&dir.path().join("crashed")).unwrap();
    let mut first = engine();
    let (_, alerts_before_crash) = run_all(
        &mut store,
        &mut first,
        records[..cut].to_vec(),
        HashMap::new(),
    );
    // Records processed after the last commit would be lost with the process; simulate that by
    // processing more without committing.
    for (offset, (_, bytes)) in records[cut..cut + 500].iter().enumerate() {
        let _ = first.process(&SourceRecord {
            partition: PartitionId::Source(0),
            offset: offset as i64,
            key: None,
            payload: bytes,
            timestamp_ms: None,
        });
    }
    drop(first);
    let restored = store.restore().unwrap();
    let positions: HashMap<PartitionId, i64> = restored
        .partitions
        .iter()
        .map(|(p, s)| (*p, s.next_offset))
        .collect();
    let mut second = engine_from(restored);
    let (_, alerts_after_restart) = run_all(&mut store, &mut second, records, positions);
    assert_eq!(store.snapshot().unwrap(), expected);
    // Every alert of the uninterrupted run was published by one of the two, identically.
    let published: Vec<&RegressionAlert> = alerts_before_crash
        .alerts
        .iter()
        .chain(&alerts_after_restart.alerts)
        .collect();
    for alert in &alerts.alerts {
        assert!(
            published.contains(&alert),
            "alert {} lost or changed by the crash",
            alert.alert_id
        );
    }
}

/// Hands over its records, then has nothing more (like a caught-up Kafka consumer) until stopped.
struct IdleAfterRecords(Vec<Vec<u8>>, usize);

impl runner::RecordSource for IdleAfterRecords {
    fn poll(
        &mut self,
        _max_wait: Duration,
        handle: &mut dyn FnMut(&SourceRecord<'_>) -> std::ops::ControlFlow<()>,
    ) -> Result<runner::Poll, runner::SourceError> {
        let Some(bytes) = self.0.get(self.1) else {
            std::thread::sleep(Duration::from_millis(1));
            return Ok(runner::Poll::Records(0));
        };
        let _ = handle(&SourceRecord {
            partition: PartitionId::Source(0),
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
            let mut alerts = MemoryOutputs::default();
            let sinks = Sinks {
                dead_letters: &mut dlq,
                outputs: &mut alerts,
            };
            runner::run(
                &mut e,
                &mut source,
                sinks,
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

/// A fleet with a firmware regression (`fw-9` on half the vehicles from day `day`).
fn rollout_fleet(vehicles: usize, days: u32, day: u32, hr_critical: f64) -> Vec<(String, Vec<u8>)> {
    let mut config = GeneratorConfig {
        vehicles,
        days,
        ..GeneratorConfig::default()
    };
    config.regressions.firmware_rollout = Some(FirmwareRollout {
        version: "fw-9".into(),
        day,
        share: 0.5,
        hr_critical,
    });
    Generator::new(config)
        .unwrap()
        .map(|r| (r.key, r.bytes))
        .collect()
}

/// The fleet of the review-loop tests.
fn review_fleet() -> Vec<(String, Vec<u8>)> {
    rollout_fleet(150, 40, 18, 6.0)
}

/// What a run with a review service leaves behind.
struct ServiceRun {
    engine: Engine,
    alerts: Vec<RegressionAlert>,
    requests: usize,
    rejections: Vec<Rejection>,
}

/// Runs `records` through an engine that asks a review service (a [`ReviewDesk`] holding the
/// critical events back), over 4 partitions like `run_in_memory`. Requests made within a batch
/// of `batch` records are answered after the next batch (the service's delay); requests for
/// trips in `unanswered` are never answered. With `restart_at`, the engine commits to a store
/// there and a new engine continues from what the store restores.
fn run_with_review_service(
    policy: crate::sampling::SamplingPolicy,
    records: &[(String, Vec<u8>)],
    batch: usize,
    unanswered: &dyn Fn(&str) -> bool,
    restart_at: Option<usize>,
    timeout_ms: i64,
) -> ServiceRun {
    use crate::generator::ReviewDesk;
    let make = |restored| {
        engine_from(restored)
            .with_sampling(policy.clone())
            .with_review_service(timeout_ms)
    };
    let mut desk = ReviewDesk::default();
    let withheld: Vec<(String, Vec<u8>)> = records
        .iter()
        .filter(|(_, bytes)| !desk.withhold(bytes))
        .cloned()
        .collect();
    let mut stream = withheld.into_iter();
    let mut engine = make(RestoredState::default());
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut offsets: HashMap<i32, i64> = HashMap::new();
    let (mut alerts, mut rejections, mut requests) = (Vec::new(), Vec::new(), 0);
    let mut answers: Vec<(String, Vec<u8>)> = Vec::new();
    let mut processed = 0;
    loop {
        // The previous batch's answers arrive behind the next batch of telemetry.
        let due = std::mem::take(&mut answers);
        let chunk: Vec<(String, Vec<u8>)> = stream.by_ref().take(batch).collect();
        if chunk.is_empty() && due.is_empty() {
            break;
        }
        for (key, bytes) in chunk.into_iter().chain(due) {
            let partition = crate::stream::memory::partition_for(key.as_bytes(), 4);
            let offset = offsets.entry(partition).or_insert(0);
            let record = SourceRecord {
                partition: PartitionId::Source(partition),
                offset: *offset,
                key: Some(key.as_bytes()),
                payload: &bytes,
                timestamp_ms: None,
            };
            *offset += 1;
            processed += 1;
            if let Err(rejection) = engine.process(&record) {
                rejections.push(rejection);
            }
            if restart_at == Some(processed) {
                alerts.extend(engine.take_alerts());
                for request in engine.take_review_requests() {
                    requests += 1;
                    if !unanswered(&request.trip_id) {
                        answers.push(desk.answer(&request));
                    }
                }
                store.write(engine.take_delta()).unwrap();
                engine = make(store.restore().unwrap());
            }
        }
        alerts.extend(engine.take_alerts());
        for request in engine.take_review_requests() {
            requests += 1;
            if !unanswered(&request.trip_id) {
                answers.push(desk.answer(&request));
            }
        }
    }
    ServiceRun {
        engine,
        alerts,
        requests,
        rejections,
    }
}

/// (reviewed trips, reviewed critical events, reviewed risk exposure) over every vehicle.
fn reviewed_totals(engine: &Engine) -> (u64, u64, u64) {
    engine
        .vehicles()
        .snapshot()
        .iter()
        .fold((0, 0, 0), |(t, c, x), v| {
            let s = v.totals();
            (
                t + s.reviewed_trips,
                c + s.reviewed_critical,
                x + s.reviewed_risk_exposure_ms,
            )
        })
}

#[test]
fn a_review_service_gives_exactly_the_in_stream_result() {
    use crate::sampling::{Policy, SamplingPolicy};
    let records = review_fleet();
    let policy = SamplingPolicy::new(Policy::Stratified, 0.5, 0.1, 5).unwrap();
    // In-stream: critical events are in the stream, the policy decides which count.
    let mut in_stream = engine().with_sampling(policy.clone());
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let (_, outputs) = run_in_memory(
        &mut in_stream,
        records.iter().cloned(),
        4,
        &mut store,
        50_000,
    )
    .unwrap();
    assert!(
        outputs.review_requests.is_empty(),
        "no service, no requests"
    );
    let expected = reviewed_totals(&in_stream);
    assert!(
        expected.1 > 20,
        "enough reviewed events to matter: {expected:?}"
    );

    // Through a review service answering 2000 records late; and again with a restart between.
    for restart_at in [None, Some(records.len() / 2)] {
        let run = run_with_review_service(
            policy.clone(),
            &records,
            2000,
            &|_| false,
            restart_at,
            60 * 24 * HOUR,
        );
        assert!(
            run.rejections.iter().all(|r| !matches!(
                r,
                Rejection::UnrequestedReview { .. } | Rejection::ReviewedEventOutsideTrip { .. }
            )),
            "{:?}",
            run.rejections.iter().take(3).collect::<Vec<_>>()
        );
        assert_eq!(
            run.requests as u64, expected.0,
            "one request per reviewed trip ({restart_at:?})"
        );
        assert_eq!(reviewed_totals(&run.engine), expected, "{restart_at:?}");
        assert_eq!(
            ht_totals(&run.engine),
            ht_totals(&in_stream),
            "{restart_at:?}"
        );
        assert_eq!(run.alerts, outputs.alerts, "{restart_at:?}");
        assert_eq!(run.engine.metrics.reviews_pending.get(), 0);
        if restart_at.is_none() {
            let answered = run.engine.metrics.review_results("answered").get();
            assert_eq!(answered, expected.0);
        }
    }
    assert!(
        outputs.alerts.iter().any(|a| a.key == "firmware:fw-9"),
        "the regression is seen through the review loop"
    );
}

#[test]
fn unanswered_reviews_hold_bins_until_they_time_out() {
    use crate::sampling::{Policy, SamplingPolicy, uniform_draw};
    let records = review_fleet();
    let policy = SamplingPolicy::new(Policy::Uniform, 0.3, 0.1, 5).unwrap();
    let lost = |trip: &str| uniform_draw(trip, 99) < 0.2;
    // Answers come a batch (about a day of this fleet's event time) after their request.
    let timeout = 6 * 24 * HOUR;
    let mut run = run_with_review_service(policy, &records, 2000, &lost, None, timeout);
    let metrics = &run.engine.metrics;
    let (answered, timed_out, pending) = (
        metrics.review_results("answered").get(),
        metrics.review_results("timed_out").get(),
        metrics.reviews_pending.get() as u64,
    );
    assert_eq!(answered + timed_out + pending, run.requests as u64);
    assert!(timed_out > 50, "lost reviews time out: {timed_out}");
    assert!(pending > 0, "the last days' lost reviews are still awaited");
    // Every partition's bins closed up to the oldest review still awaited, which is at most
    // the timeout behind the watermark: nothing waits for ever.
    for (_, state) in run.engine.source_states() {
        let oldest = state
            .review_holds
            .first()
            .map(|(start, _, _)| *start)
            .unwrap();
        assert!(
            oldest >= state.watermark_ms - timeout,
            "{oldest} vs {}",
            state.watermark_ms
        );
        assert!(state.closed_through_ms > oldest - 24 * HOUR);
        assert!(state.closed_through_ms <= oldest);
    }
    // An answer for a review given up is dead-lettered, not counted.
    let given_up = records
        .iter()
        .find_map(|(_, bytes)| match codec::decode(bytes).ok()?.payload {
            Payload::Trip(t)
                if lost(&t.trip_id)
                    && !run.engine.vehicles().snapshot().iter().any(|v| {
                        v.meta
                            .pending_reviews
                            .iter()
                            .any(|p| *p.trip_id == *t.trip_id)
                    })
                    && crate::sampling::selected(&t.trip_id, 5, 0.3) =>
            {
                Some((t.trip_id.to_string(), t.end_time_ms))
            }
            _ => None,
        })
        .expect("a timed-out trip");
    let vehicle = records
        .iter()
        .find_map(|(key, bytes)| match codec::decode(bytes).ok()?.payload {
            Payload::Trip(t) if *t.trip_id == *given_up.0 => Some(key.clone()),
            _ => None,
        })
        .unwrap();
    let answer = encode_to_vec(&TelemetryEvent {
        vehicle_id: vehicle.as_str().into(),
        event_time_ms: given_up.1,
        payload: Payload::Review(ReviewResult {
            trip_id: given_up.0.as_str().into(),
            events: Vec::new(),
        }),
    });
    let partition = crate::stream::memory::partition_for(vehicle.as_bytes(), 4);
    let unrequested_before = run.engine.metrics.dlq_records("unrequested_review").get();
    assert!(
        run.rejections
            .iter()
            .all(|r| !matches!(r, Rejection::UnrequestedReview { .. })),
        "in time, every answer finds its request"
    );
    let result = run.engine.process(&SourceRecord {
        partition: PartitionId::Source(partition),
        offset: 1 << 40,
        key: Some(vehicle.as_bytes()),
        payload: &answer,
        timestamp_ms: None,
    });
    assert!(
        matches!(result, Err(Rejection::UnrequestedReview { ref trip_id }) if *trip_id == given_up.0),
        "{result:?}"
    );
    assert_eq!(
        run.engine.metrics.dlq_records("unrequested_review").get(),
        unrequested_before + 1
    );
}

/// Horvitz-Thompson estimate (total, variance) of every critical event, from the bins.
fn ht_totals(engine: &Engine) -> (f64, f64) {
    fleet_totals(&engine.vehicles()).ht_critical()
}

#[test]
fn fleet_critical_events_estimated_from_reviews_are_unbiased() {
    use crate::sampling::{Policy, SamplingPolicy};
    let records = review_fleet();
    let truth = records
        .iter()
        .filter(|(_, b)| {
            matches!(codec::decode(b).map(|e| e.payload), Ok(Payload::Safety(e)) if e.is_critical())
        })
        .count() as f64;
    // 40 selections (seeds) of the same fleet at 20%, stratified (probabilities 0.02..~0.6).
    let runs: Vec<(f64, f64)> = (0..40)
        .map(|seed| {
            let policy = SamplingPolicy::new(Policy::Stratified, 0.2, 0.1, seed).unwrap();
            let mut e = engine().with_sampling(policy);
            let dir = tempfile::tempdir().unwrap();
            let mut store = Store::open(dir.path()).unwrap();
            run_in_memory(&mut e, records.iter().cloned(), 4, &mut store, 50_000).unwrap();
            ht_totals(&e)
        })
        .collect();
    let n = runs.len() as f64;
    let mean = runs.iter().map(|r| r.0).sum::<f64>() / n;
    let empirical_var = runs.iter().map(|r| (r.0 - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let mean_estimated_var = runs.iter().map(|r| r.1).sum::<f64>() / n;
    // Unbiased: the mean of 40 estimates is within 3 standard errors of the truth (fails by
    // chance 0.3% of the time; these seeds are fixed, so the test is reproducible).
    let se = (empirical_var / n).sqrt();
    assert!(
        (mean - truth).abs() < 3.0 * se,
        "HT mean {mean:.1} vs truth {truth} (se {se:.1})"
    );
    // The variance estimate is right on average: within 50% of the empirical variance (an
    // estimate from 40 replicates has a relative sd of ~22%, so 50% is over two of them).
    let ratio = mean_estimated_var / empirical_var;
    assert!(
        (0.5..1.5).contains(&ratio),
        "estimated variance {mean_estimated_var:.1} vs empirical {empirical_var:.1}"
    );
    // Not trivially exact: only a fifth of the trips were looked at.
    assert!(runs.iter().any(|r| r.0 != truth) && runs.iter().all(|r| r.1 > 0.0));
}

#[test]
fn replays_reproduce_the_live_series_of_vehicles_and_of_a_cohort_new_mid_stream() {
    // A firmware rolled out on day 18 to half the fleet with 6x the critical rate: its cohort
    // appears mid-stream and alerts; vehicles' series run from their first bin.
    let records = rollout_fleet(150, 40, 18, 6.0);
    let mut e = engine();
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let (_, outputs) = run_in_memory(&mut e, records.into_iter(), 4, &mut store, 50_000).unwrap();
    let settings = e.detection_settings().clone();
    let vehicles = e.vehicles().snapshot();
    let mut compared = 0;
    for vehicle in vehicles.iter().take(20) {
        for (class, series) in vehicle.series.iter().flat_map(|s| s.iter()) {
            let replayed = detection::replay_vehicle(
                &settings,
                class,
                &PartitionVehicles(&vehicles, vehicle.partition),
                &vehicle.bins,
                series.next_bin_ms,
            );
            assert_eq!(replayed.last(), series.last.as_ref(), "{}", vehicle.key());
            compared += 1;
        }
    }
    assert_eq!(compared, 40);
    let cohort = "firmware:fw-9";
    assert!(
        outputs.alerts.iter().any(|a| a.key == cohort),
        "the rollout is detected"
    );
    let live = &e.cohorts()[cohort];
    let history = detection::cohort_history(
        &settings,
        &vehicles,
        cohort,
        live[HazardClass::Critical].next_bin_ms,
    )
    .unwrap();
    for (class, series) in live.iter() {
        let replayed = detection::replay_cohort(&settings, class, &history, series.next_bin_ms);
        assert_eq!(replayed.last(), series.last.as_ref(), "{cohort} {class:?}");
        // The alert's P(regression) is in the replayed history, at the bin it was raised after.
        for alert in outputs
            .alerts
            .iter()
            .filter(|a| a.key == cohort && a.hazard_class == class)
        {
            let bin = alert.detected_at - settings.allowed_lateness_ms - settings.bin_width_ms;
            let at = replayed.iter().find(|b| b.bin_start_ms == bin).unwrap();
            assert_eq!(at.p_regression, alert.p_regression, "{}", alert.alert_id);
        }
    }
}

/// The repartition topic as the engines see it: per topic partition, what each producer sent,
/// in order.
#[derive(Default)]
struct ReportTopic {
    /// topic partition -> per producer, the reports sent (JSON)
    sent: BTreeMap<i32, Vec<Vec<Vec<u8>>>>,
}

impl ReportTopic {
    /// One producer's reports of a commit, sent twice over with `replay` (a commit replayed).
    fn send(
        &mut self,
        producer: usize,
        reports: Vec<(i32, cohorts::PartitionReport)>,
        replay: bool,
    ) {
        let times = if replay { 2 } else { 1 };
        for _ in 0..times {
            for (q, report) in &reports {
                let sent = self.sent.entry(*q).or_insert_with(|| vec![Vec::new(); 2]);
                sent[producer].push(serde_json::to_vec(report).unwrap());
            }
        }
    }
}

/// The next record of `partition`, at its next offset in `offsets`.
fn next_record<'a>(offsets: &mut [i64], partition: i32, payload: &'a [u8]) -> SourceRecord<'a> {
    let offset = offsets[partition as usize];
    offsets[partition as usize] += 1;
    SourceRecord {
        partition: PartitionId::Source(partition),
        offset,
        key: None,
        payload,
        timestamp_ms: None,
    }
}

#[test]
fn cohorts_aggregated_through_a_repartition_topic_equal_one_process() {
    use rand::{Rng, SeedableRng};
    // A fleet with a firmware rollout (a cohort new mid-stream) and vehicle faults.
    let fleet: Vec<(String, Vec<u8>)> = Generator::new(GeneratorConfig {
        seed: 5,
        vehicles: 300,
        days: 56,
        ..GeneratorConfig::default()
    })
    .unwrap()
    .map(|r| (r.key, r.bytes))
    .collect();
    let partition_of = |key: &str| crate::stream::memory::partition_for(key.as_bytes(), 4);

    // One process, its aggregator in process.
    let mut single = engine();
    let mut offsets = [0i64; 4];
    let mut single_alerts = Vec::new();
    for (key, bytes) in &fleet {
        let partition = partition_of(key);
        let _ = single.process(&next_record(&mut offsets, partition, bytes));
        single_alerts.extend(single.take_alerts());
    }

    // Two processes (partitions 0-1 and 2-3), reports through two topic partitions, aggregator
    // 0 on the first process and 1 on the second. Each topic partition takes both producers'
    // reports interleaved at random (order kept per producer), and a producer sometimes sends a
    // run of reports twice (what a crash between the transaction and the store write replays).
    let mut pair: Vec<Engine> = (0..2)
        .map(|_| {
            let mut e = engine().with_cohort_topic(2);
            e.set_source_partitions(4);
            e
        })
        .collect();
    let owner = |partition: i32| (partition / 2) as usize;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut topic = ReportTopic::default();
    let mut delivered = [0usize; 2];
    let mut next_offset = [0i64; 2];
    let mut offsets = [0i64; 4];
    let mut pair_alerts = Vec::new();
    let mut deliver =
        |pair: &mut Vec<Engine>, topic: &mut ReportTopic, rng: &mut rand::rngs::StdRng| {
            for q in 0..2i32 {
                let Some(producers) = topic.sent.get_mut(&q) else {
                    continue;
                };
                let mut queue: Vec<Vec<u8>> = Vec::new();
                let mut heads: Vec<std::collections::VecDeque<Vec<u8>>> = producers
                    .iter_mut()
                    .map(|sent| sent.drain(..).collect())
                    .collect();
                while heads.iter().any(|h| !h.is_empty()) {
                    let from = rng.random_range(0..heads.len());
                    if let Some(bytes) = heads[from].pop_front() {
                        queue.push(bytes);
                    }
                }
                for bytes in queue {
                    let at = q as usize;
                    pair[at]
                        .process(&SourceRecord {
                            partition: PartitionId::Cohort(q),
                            offset: next_offset[at],
                            key: None,
                            payload: &bytes,
                            timestamp_ms: None,
                        })
                        .unwrap();
                    next_offset[at] += 1;
                    delivered[at] += 1;
                }
            }
        };
    for (i, (key, bytes)) in fleet.iter().enumerate() {
        let partition = partition_of(key);
        let _ = pair[owner(partition)].process(&next_record(&mut offsets, partition, bytes));
        if i % 997 == 0 || i + 1 == fleet.len() {
            for (producer, engine) in pair.iter_mut().enumerate() {
                let replay = rng.random_bool(0.2);
                topic.send(producer, engine.take_delta().cohort_reports, replay);
            }
            deliver(&mut pair, &mut topic, &mut rng);
        }
        for engine in pair.iter_mut() {
            pair_alerts.extend(engine.take_alerts());
        }
    }
    // The last reports, and what the aggregators close on them.
    for _ in 0..2 {
        for (producer, engine) in pair.iter_mut().enumerate() {
            topic.send(producer, engine.take_delta().cohort_reports, false);
        }
        deliver(&mut pair, &mut topic, &mut rng);
        for engine in pair.iter_mut() {
            pair_alerts.extend(engine.take_alerts());
        }
    }
    assert!(
        delivered.iter().all(|d| *d > 0),
        "both aggregators got reports: {delivered:?}"
    );

    let cohorts_of_pair: BTreeMap<String, ByClass<detection::Series>> =
        pair.iter().flat_map(|e| e.cohorts()).collect();
    let single_cohorts = single.cohorts();
    assert!(
        single_cohorts.len() > 2,
        "cohorts: {:?}",
        single_cohorts.keys()
    );
    assert!(
        pair.iter().all(|e| !e.cohorts().is_empty()),
        "the cohorts are split between the aggregators"
    );
    assert_eq!(
        single_cohorts.keys().collect::<Vec<_>>(),
        cohorts_of_pair.keys().collect::<Vec<_>>()
    );
    for (cohort, series) in &single_cohorts {
        // Exactly: the detectors' run-length posteriors included (Series: PartialEq).
        assert!(
            series == &cohorts_of_pair[cohort],
            "{cohort}: the series differ"
        );
    }
    let by_id = |alerts: Vec<RegressionAlert>| -> BTreeMap<String, RegressionAlert> {
        alerts
            .into_iter()
            .map(|a| (a.alert_id.clone(), a))
            .collect()
    };
    let (single_alerts, pair_alerts) = (by_id(single_alerts), by_id(pair_alerts));
    assert!(
        single_alerts.keys().any(|id| id.starts_with("COHORT/")),
        "the rollout raises cohort alerts"
    );
    assert_eq!(single_alerts.len(), pair_alerts.len());
    for (id, alert) in &single_alerts {
        let other = &pair_alerts[id];
        // NaN fields (no baseline) compare unequal: compare their JSON.
        assert_eq!(
            serde_json::to_string(alert).unwrap(),
            serde_json::to_string(other).unwrap(),
            "{id}"
        );
    }
}

#[test]
fn a_firmware_rollouts_rise_is_the_firmware_cohorts_not_its_models() {
    // Half the fleet gets fw-9 on day 32 with 3x the critical rate: each model cohort's rate
    // rises 2x if it counts its fw-9 vehicles. The firmware cohort alerts; no model cohort does,
    // because vehicles count towards their model only on established firmware.
    let records = rollout_fleet(300, 60, 32, 3.0);
    let mut e = engine();
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let (_, outputs) = run_in_memory(&mut e, records.into_iter(), 4, &mut store, 50_000).unwrap();
    let opened: Vec<&str> = outputs
        .alerts
        .iter()
        .filter(|a| a.key_kind == KeyKind::Cohort && a.status == AlertStatus::Opened)
        .map(|a| a.key.as_str())
        .collect();
    assert!(opened.contains(&"firmware:fw-9"), "{opened:?}");
    assert!(
        opened.iter().all(|k| !k.starts_with("model:")),
        "a model cohort alerted on the firmware's rise: {opened:?}"
    );
    // The model cohorts were fed all along, on their established-firmware members.
    let settings = e.detection_settings().clone();
    let vehicles = e.vehicles().snapshot();
    let cohorts = e.cohorts();
    let model = cohorts
        .keys()
        .find(|k| k.starts_with("model:"))
        .expect("model cohorts");
    let (_, bins) = detection::cohort_history(
        &settings,
        &vehicles,
        model,
        cohorts[model][HazardClass::Critical].next_bin_ms,
    )
    .unwrap();
    let width = settings.bin_width_ms;
    let day = |d: i64| bins.keys().next().unwrap() + d * width;
    let trips_at = |d: i64| bins.get(&day(d)).map_or(0, |b| b.trips);
    assert!(
        trips_at(40) * 10 < trips_at(25) * 7,
        "{model}: fw-9 vehicles leave it during the guard window ({} trips on day 25, {} on day 40)",
        trips_at(25),
        trips_at(40)
    );
}

#[test]
fn the_fleet_a_restored_partition_compares_with_is_the_live_ones() {
    // Restores recompute each partition's fleet sums from its vehicles' bins; they must be what
    // the live engine built bin by bin (the same bins in the basis, the same counts), or a
    // restart would change every vehicle's baseline.
    let records = rollout_fleet(150, 40, 18, 6.0);
    let mut e = engine();
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    run_in_memory(&mut e, records.into_iter(), 4, &mut store, 50_000).unwrap();
    let settings = e.detection_settings().clone();
    let vehicles = e.vehicles().snapshot();
    assert_eq!(e.source_states().count(), 4);
    for (p, state) in e.source_states() {
        let restored = detection::FleetSums::of(
            &settings,
            &PartitionVehicles(&vehicles, p),
            state.closed_through_ms,
        );
        let live = &state.fleet_sums;
        assert_eq!(
            (restored.basis_bins, restored.recent.len()),
            (live.basis_bins, live.recent.len()),
            "partition {p}: bins in the basis and after it"
        );
        for class in HazardClass::ALL {
            assert_eq!(
                settings.vehicle_baseline(class, &restored),
                settings.vehicle_baseline(class, live),
                "partition {p} {class:?}"
            );
        }
    }
}

/// The facts a store keeps, as a multiset of (partition, vehicle, record bytes).
fn kept_facts(store: &Store) -> BTreeMap<(PartitionId, String, Vec<u8>), usize> {
    let mut facts = BTreeMap::new();
    store
        .for_each_fact(|partition, vehicle, record| {
            *facts
                .entry((partition, vehicle.to_string(), record.to_vec()))
                .or_insert(0) += 1;
        })
        .unwrap();
    facts
}

#[test]
fn the_ledger_rebuilds_from_the_input_exactly_the_facts_the_engine_kept() {
    // Copies, damaged, late and out-of-order records: rejected ones must be skipped again.
    let records = faulty_fleet();
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let mut e = engine();
    let (dlq, _) = run_all(&mut store, &mut e, records.clone(), HashMap::new());
    assert!(dlq.records.len() > 100, "rejections: {}", dlq.records.len());
    let kept = kept_facts(&store);
    assert!(!kept.is_empty());

    // Each partition's input as the source numbered it, offered to a rebuild from the ledger
    // the store keeps, into a second store.
    let mut inputs: HashMap<PartitionId, Vec<Vec<u8>>> = HashMap::new();
    for (key, bytes) in &records {
        let partition =
            PartitionId::Source(crate::stream::memory::partition_for(key.as_bytes(), 3));
        inputs.entry(partition).or_default().push(bytes.clone());
    }
    let restored = store.restore().unwrap();
    let rebuilt_dir = tempfile::tempdir().unwrap();
    let rebuilt = Store::open(rebuilt_dir.path()).unwrap();
    let width = Config::default_config().stream.bin_width_s * 1000;
    let mut skipped = 0;
    for (partition, input) in &inputs {
        let state = &restored.partitions[partition];
        let wanted = super::ledger::Wanted::of(state, i64::MIN, width).unwrap();
        assert!(
            wanted.seen_from > wanted.facts_from,
            "the ids that count are recent"
        );
        let rejected = store.rejected_offsets(*partition, wanted.from()).unwrap();
        skipped += rejected.len();
        let mut rebuild = super::ledger::FactsRebuild::new(*partition, width, wanted, rejected);
        for (offset, bytes) in input.iter().enumerate() {
            rebuild.offer(offset as i64, bytes);
        }
        assert_eq!(rebuild.unreadable, 0, "partition {partition}");
        assert!(rebuild.ids_kept > 0);
        rebuilt
            .put_facts(&rebuild.take_segments(), &rebuild.take_seen())
            .unwrap();
    }
    assert_eq!(
        skipped,
        dlq.records.len(),
        "every rejection is in the ledger"
    );
    assert_eq!(kept_facts(&rebuilt), kept, "the same facts");
    // And the same ids that still count, partition for partition.
    let rebuilt_state = rebuilt.restore().unwrap();
    for (partition, state) in &restored.partitions {
        let mut ids = rebuilt_state
            .partitions
            .get(partition)
            .map(|p| p.seen.clone())
            .unwrap_or_default();
        // (The rebuilt store has no positions: filter by the cutoff as a restore does.)
        ids.retain(|_, time| *time >= state.seen_cutoff_ms);
        assert!(
            !state.seen.is_empty(),
            "partition {partition} has ids that count"
        );
        assert_eq!(ids, state.seen, "partition {partition}");
    }
}

#[test]
fn the_ledger_starts_where_the_bins_wanted_start_and_lets_go_with_retention() {
    let mut p = PartitionState::default();
    // Bins of a day, first seen at offsets 10, 40 and 25 (a late vehicle's record).
    let day = 86_400_000;
    p.note_fact_bin(0, 10);
    p.note_fact_bin(day, 40);
    p.note_fact_bin(day, 55); // a later segment of the same bin: not the first
    p.note_fact_bin(2 * day, 30);
    p.note_fact_bin(2 * day, 25); // an earlier segment in the commit that opened it
    assert_eq!(p.fact_bins[&day], 40);
    assert_eq!(p.fact_bins[&(2 * day)], 25);
    assert_eq!(p.new_fact_bins, vec![0, day, 2 * day]);
    assert_eq!(p.facts_from(i64::MIN), Some(10));
    assert_eq!(
        p.facts_from(day),
        Some(25),
        "from the least offset of those bins"
    );
    assert_eq!(p.facts_from(2 * day), Some(25));
    assert_eq!(p.facts_from(3 * day), None);
}

#[test]
fn the_refit_reads_from_the_timelines_the_intervals_the_facts_give() {
    let records = faulty_fleet();
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let mut e = engine();
    run_all(&mut store, &mut e, records, HashMap::new());
    // The whole stream (42 days), and a window that cuts it.
    for (window_days, least_events) in [(90, 50), (10, 5)] {
        let (partitions, rows) = crate::nightly::intervals_from_store(&store, window_days).unwrap();
        let from_facts = crate::nightly::intervals_from_facts(&store, window_days).unwrap();
        let events = rows.iter().filter(|r| r.2).count();
        assert!(events > least_events, "{events} events in {window_days} d");
        assert_eq!(partitions, from_facts.0, "window {window_days} d");
        assert_eq!(rows, from_facts.1, "window {window_days} d");
    }
}
