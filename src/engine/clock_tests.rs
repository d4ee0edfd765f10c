//! Bad clocks and bad claims (issue 16): each loses no good record and moves no other vehicle's
//! bins, detectors or watermark; the bad records go to the DLQ with their reason.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use super::*;
use crate::codec::{decode, encode_to_vec};
use crate::config::Config;
use crate::generator::{FirmwareRollout, Generator, GeneratorConfig};
use crate::model::*;
use crate::store::Store;
use crate::stream::memory::{
    MemoryDeadLetters, MemoryOutputs, MemoryRecord, MemorySource, partition_for,
};
use crate::stream::runner::{self, CommitPolicy, Sinks, StatusBoard};

const DAY: i64 = 86_400_000;
const HOUR: i64 = 3_600_000;
/// 2099-12-31T00:00Z: inside the 2000..2100 range validation accepts.
const IN_2099: i64 = 4_102_358_400_000;
const PARTITIONS: i32 = 4;

fn engine_with(edit: impl FnOnce(&mut Config)) -> Engine {
    let mut config = Config::default_config();
    edit(&mut config);
    Engine::new(
        config.stream,
        &config.detector,
        RestoredState::default(),
        Metrics::new(),
    )
    .unwrap()
}

fn fleet(vehicles: usize, days: u32) -> Vec<MemoryRecord> {
    let config = GeneratorConfig {
        vehicles,
        days,
        ..GeneratorConfig::default()
    };
    Generator::new(config)
        .unwrap()
        .map(MemoryRecord::from)
        .collect()
}

/// The record re-encoded after `edit` changed its decoded event.
fn rewritten(record: &MemoryRecord, edit: impl FnOnce(&mut TelemetryEvent<'_>)) -> MemoryRecord {
    let mut event = decode(&record.bytes).unwrap();
    edit(&mut event);
    MemoryRecord {
        bytes: encode_to_vec(&event),
        ..record.clone()
    }
}

/// Each record's outcome, by the engine's own processing (no commits), partitioned by key.
fn feed(engine: &mut Engine, records: &[MemoryRecord]) -> Vec<Result<RecordKind, Rejection>> {
    let mut offsets: HashMap<i32, i64> = HashMap::new();
    records
        .iter()
        .map(|r| {
            let partition = partition_for(r.key.as_bytes(), PARTITIONS);
            let offset = offsets.entry(partition).or_default();
            *offset += 1;
            engine.process(&SourceRecord {
                partition: PartitionId::Source(partition),
                offset: *offset - 1,
                key: Some(r.key.as_bytes()),
                payload: &r.bytes,
                timestamp_ms: r.timestamp_ms,
            })
        })
        .collect()
}

type Bins = BTreeMap<String, super::BinMap>;

/// Every vehicle's bins, except `but`'s.
fn bins_except(engine: &Engine, but: &str) -> Bins {
    engine
        .vehicles()
        .snapshot()
        .iter()
        .filter(|v| v.key() != but)
        .map(|v| (v.key().clone(), v.bins.clone()))
        .collect()
}

fn watermarks(engine: &Engine) -> BTreeMap<PartitionId, (i64, i64)> {
    engine
        .source_states()
        .map(|(p, s)| (p, (s.watermark_ms, s.closed_through_ms)))
        .collect()
}

fn reasons(results: &[Result<RecordKind, Rejection>]) -> BTreeMap<&'static str, usize> {
    let mut by_reason = BTreeMap::new();
    for rejection in results.iter().filter_map(|r| r.as_ref().err()) {
        *by_reason.entry(rejection.reason()).or_default() += 1;
    }
    by_reason
}

fn latest_bin(engine: &Engine) -> i64 {
    engine
        .vehicles()
        .snapshot()
        .iter()
        .filter_map(|v| v.bins.keys().last().copied())
        .max()
        .unwrap()
}

#[test]
fn a_record_dated_2099_goes_to_the_dlq_as_future_and_moves_nothing() {
    let clean = fleet(60, 12);
    let mut with_bad = clean.clone();
    // A safety event of one vehicle dated 2099, produced (timestamped) with its neighbours.
    let at = clean.len() / 3;
    let victim = clean[at..]
        .iter()
        .find(|r| matches!(decode(&r.bytes).unwrap().payload, Payload::Safety(_)))
        .unwrap();
    let bad = rewritten(victim, |e| {
        e.event_time_ms = IN_2099;
        if let Payload::Safety(s) = &mut e.payload {
            s.event_id = "clock-reset".into();
        }
    });
    with_bad.insert(at, bad);

    let mut expected = engine_with(|_| {});
    assert!(feed(&mut expected, &clean).iter().all(Result::is_ok));
    let mut e = engine_with(|_| {});
    let results = feed(&mut e, &with_bad);
    assert_eq!(reasons(&results), BTreeMap::from([("future", 1)]));
    assert!(matches!(
        &results[at],
        Err(Rejection::Future {
            field: "event_time",
            time_ms: IN_2099,
            ..
        })
    ));
    assert_eq!(
        bins_except(&e, ""),
        bins_except(&expected, ""),
        "no bin moved"
    );
    assert_eq!(watermarks(&e), watermarks(&expected), "no watermark moved");
    assert!(latest_bin(&e) < IN_2099 - 365 * DAY);
    for vehicle in e.vehicles().snapshot().iter() {
        for (_, series) in vehicle.series.iter().flat_map(|s| s.iter()) {
            assert!(
                series.next_bin_ms < IN_2099 - 365 * DAY,
                "{}",
                vehicle.key()
            );
        }
    }
}

#[test]
fn a_vehicle_whose_clock_runs_days_ahead_makes_no_other_record_late() {
    // One vehicle's clock is 3 days fast; the source gives no timestamps to bound it, so only
    // the watermark's quorum stands between it and everyone else's records.
    let clean: Vec<MemoryRecord> = fleet(60, 12)
        .into_iter()
        .map(|r| MemoryRecord {
            timestamp_ms: None,
            ..r
        })
        .collect();
    let fast = clean[0].key.clone();
    let shift = |e: &mut TelemetryEvent<'_>| {
        e.event_time_ms += 3 * DAY;
        if let Payload::Trip(t) = &mut e.payload {
            t.start_time_ms += 3 * DAY;
            t.end_time_ms += 3 * DAY;
        }
    };
    let skewed: Vec<MemoryRecord> = clean
        .iter()
        .map(|r| {
            if r.key == fast {
                rewritten(r, shift)
            } else {
                r.clone()
            }
        })
        .collect();
    let without_fast: Vec<MemoryRecord> = clean.iter().filter(|r| r.key != fast).cloned().collect();

    let mut expected = engine_with(|_| {});
    assert!(feed(&mut expected, &without_fast).iter().all(Result::is_ok));
    let mut e = engine_with(|_| {});
    let results = feed(&mut e, &skewed);
    let others_rejected = results
        .iter()
        .zip(&skewed)
        .filter(|(r, record)| r.is_err() && record.key != fast)
        .count();
    assert_eq!(others_rejected, 0, "{:?}", reasons(&results));
    // What the vehicles sent (the fleet the fast vehicle is part of sets the expected counts).
    let counts = |engine: &Engine| -> BTreeMap<String, Vec<(i64, [u64; 6])>> {
        bins_except(engine, &fast)
            .into_iter()
            .map(|(id, bins)| {
                let sent = bins
                    .into_iter()
                    .map(|(bin, b)| {
                        let c = [b.trips, b.exposure_ms, b.safety_events, b.critical];
                        (
                            bin,
                            [c[0], c[1], c[2], c[3], b.disengagements, b.mode_transitions],
                        )
                    })
                    .collect();
                (id, sent)
            })
            .collect()
    };
    let (got, want) = (counts(&e), counts(&expected));
    let differing = want
        .iter()
        .filter(|(id, bins)| got.get(*id) != Some(bins))
        .count();
    assert_eq!(
        (got.len(), differing),
        (want.len(), 0),
        "every other vehicle's counts as without the fast one"
    );

    // The check can fail: a watermark any one vehicle moves (quorum 1, the old rule) makes
    // other vehicles' records late.
    let mut one = engine_with(|c| c.stream.watermark_quorum = 1);
    let results = feed(&mut one, &skewed);
    let late_others = results
        .iter()
        .zip(&skewed)
        .filter(|(r, record)| matches!(r, Err(Rejection::Late { .. })) && record.key != fast)
        .count();
    assert!(late_others > 10, "quorum 1: {late_others} late");
}

#[test]
fn with_timestamps_a_fast_clock_is_refused_as_future() {
    let clean = fleet(60, 12);
    let fast = clean[0].key.clone();
    let skewed: Vec<MemoryRecord> = clean
        .iter()
        .map(|r| {
            if r.key != fast {
                return r.clone();
            }
            rewritten(r, |e| {
                e.event_time_ms += 3 * DAY;
                if let Payload::Trip(t) = &mut e.payload {
                    t.start_time_ms += 3 * DAY;
                    t.end_time_ms += 3 * DAY;
                }
            })
        })
        .collect();
    let mut e = engine_with(|_| {});
    let results = feed(&mut e, &skewed);
    let fast_records = skewed.iter().filter(|r| r.key == fast).count();
    assert_eq!(
        reasons(&results),
        BTreeMap::from([("future", fast_records)])
    );
    assert!(
        e.vehicles().get(&fast).is_none(),
        "the fast vehicle left no state"
    );
}

/// Changes a trip summary and its event time.
type TripEdit = dyn Fn(&mut TripSummary<'_>, &mut i64);

/// A clean trip of the fleet, and the fleet with copies of it rewritten by each of `edits`
/// (new trip ids) inserted just after it.
fn with_trip_variants(clean: &[MemoryRecord], edits: &[&TripEdit]) -> (Vec<MemoryRecord>, usize) {
    let at = clean
        .iter()
        .enumerate()
        .skip(clean.len() / 2)
        .find(|(_, r)| matches!(decode(&r.bytes).unwrap().payload, Payload::Trip(_)))
        .unwrap()
        .0;
    let mut records = clean.to_vec();
    for (n, edit) in edits.iter().enumerate() {
        let variant = rewritten(&clean[at], |e| {
            if let Payload::Trip(t) = &mut e.payload {
                t.trip_id = format!("variant-{n}").into();
                edit(t, &mut e.event_time_ms);
            }
        });
        records.insert(at + 1 + n, variant);
    }
    (records, at + 1)
}

#[test]
fn trips_out_of_their_time_are_refused_with_reasons() {
    let clean = fleet(60, 12);
    let set_times = |start: i64, end: i64| {
        move |t: &mut TripSummary<'_>, _: &mut i64| {
            t.start_time_ms = start;
            t.end_time_ms = end;
            t.duration_s = (end - start) as f64 / 1000.0;
        }
    };
    let in_2099 = set_times(IN_2099, IN_2099 + HOUR);
    let in_2000 = set_times(946_771_200_000, 946_771_200_000 + HOUR);
    let reported_3_days_later = |t: &mut TripSummary<'_>, event_time: &mut i64| {
        t.start_time_ms -= 3 * DAY;
        t.end_time_ms -= 3 * DAY;
        let _ = event_time;
    };
    let sent_3_days_late = |t: &mut TripSummary<'_>, event_time: &mut i64| {
        t.start_time_ms -= 3 * DAY;
        t.end_time_ms -= 3 * DAY;
        *event_time -= 3 * DAY;
    };
    let (records, first) = with_trip_variants(
        &clean,
        &[
            &in_2099,
            &in_2000,
            &reported_3_days_later,
            &sent_3_days_late,
        ],
    );
    let mut expected = engine_with(|_| {});
    feed(&mut expected, &clean);
    let mut e = engine_with(|_| {});
    let results = feed(&mut e, &records);
    let outcome = |n: usize| results[first + n].as_ref().map_err(Rejection::reason);
    assert!(
        matches!(
            &results[first],
            Err(Rejection::Future {
                field: "end_time",
                ..
            })
        ),
        "{:?}",
        results[first]
    );
    assert_eq!(
        outcome(1),
        Err("invalid"),
        "ended 26 years before it was reported"
    );
    assert_eq!(outcome(2), Err("invalid"), "reported 3 days after it ended");
    assert_eq!(outcome(3), Err("late"), "3 days behind the watermark");
    assert_eq!(reasons(&results).values().sum::<usize>(), 4);
    assert_eq!(bins_except(&e, ""), bins_except(&expected, ""));

    // Without timestamps, a trip in 2099 is still not reported at its end.
    let untimed: Vec<MemoryRecord> = records
        .iter()
        .map(|r| MemoryRecord {
            timestamp_ms: None,
            ..r.clone()
        })
        .collect();
    let mut e = engine_with(|_| {});
    let results = feed(&mut e, &untimed);
    assert!(matches!(
        &results[first],
        Err(Rejection::TripReportedAwayFromEnd { .. })
    ));
}

#[test]
fn a_trip_claiming_more_driving_than_its_timestamps_is_refused_and_hides_no_regression() {
    // The firmware rollout of the cohort tests: fw-9 from day 32 at 3x the critical rate.
    let mut config = GeneratorConfig {
        vehicles: 300,
        days: 60,
        ..GeneratorConfig::default()
    };
    config.regressions.firmware_rollout = Some(FirmwareRollout {
        version: "fw-9".into(),
        day: 32,
        share: 0.5,
        hr_critical: 3.0,
    });
    let clean: Vec<MemoryRecord> = Generator::new(config)
        .unwrap()
        .map(MemoryRecord::from)
        .collect();
    // Two fw-9 vehicles claim 48 h for every trip on fw-9.
    let mut liars: Vec<String> = Vec::new();
    for r in &clean {
        if let Ok(TelemetryEvent {
            payload: Payload::Trip(t),
            ..
        }) = decode(&r.bytes)
            && t.firmware_version == "fw-9"
            && !liars.contains(&r.key)
        {
            liars.push(r.key.clone());
        }
        if liars.len() == 2 {
            break;
        }
    }
    let is_lie = |r: &MemoryRecord| {
        liars.contains(&r.key)
            && matches!(decode(&r.bytes).unwrap().payload, Payload::Trip(t) if t.firmware_version == "fw-9")
    };
    let lying: Vec<MemoryRecord> = clean
        .iter()
        .map(|r| {
            if !is_lie(r) {
                return r.clone();
            }
            rewritten(r, |e| {
                if let Payload::Trip(t) = &mut e.payload {
                    t.duration_s = 172_800.0;
                }
            })
        })
        .collect();
    let lies = clean.iter().filter(|r| is_lie(r)).count();
    assert!(lies > 20, "{lies} lying trips");
    let honest: Vec<MemoryRecord> = clean.iter().filter(|r| !is_lie(r)).cloned().collect();

    let alerts = |records: &[MemoryRecord]| {
        let mut e = engine_with(|_| {});
        let results = feed(&mut e, records);
        (reasons(&results), e.take_alerts())
    };
    let (rejected, raised) = alerts(&lying);
    assert_eq!(rejected, BTreeMap::from([("invalid", lies)]));
    let (none, expected) = alerts(&honest);
    assert!(none.is_empty());
    assert_eq!(raised, expected, "the lies changed no alert");
    assert!(
        raised
            .iter()
            .any(|a| a.key == "firmware:fw-9" && a.status == AlertStatus::Opened),
        "the rollout is caught"
    );
}

/// Runs `records` through the runner into `store`, from the state and positions restored there
/// (as a restarted process does), committing every `max_records` and at the end.
fn run_committing(
    store: &mut Store,
    records: &[MemoryRecord],
    max_records: usize,
) -> MemoryDeadLetters {
    let restored = store.restore().unwrap();
    let skip: HashMap<PartitionId, i64> = restored
        .partitions
        .iter()
        .map(|(p, s)| (*p, s.next_offset))
        .collect();
    let config = Config::default_config();
    let mut engine =
        Engine::new(config.stream, &config.detector, restored, Metrics::new()).unwrap();
    let mut dlq = MemoryDeadLetters::default();
    let mut outputs = MemoryOutputs::default();
    let mut source = MemorySource::new(records.iter().cloned(), PARTITIONS).resume_from(skip);
    runner::run(
        &mut engine,
        &mut source,
        Sinks {
            dead_letters: &mut dlq,
            outputs: &mut outputs,
        },
        store,
        CommitPolicy {
            interval: Duration::from_secs(3600),
            max_records,
        },
        &std::sync::atomic::AtomicBool::new(false),
        &StatusBoard::default(),
    )
    .unwrap();
    dlq
}

#[test]
fn whether_a_copy_is_a_duplicate_does_not_depend_on_where_commits_fall() {
    // Safety events re-sent: an exact copy an hour of stream later (a duplicate), an exact copy
    // 20 hours later (late), and the same id reused for a new event 12 hours later (its first
    // use no longer counts: accepted). Commits fall between each record and its copy in one
    // run, nowhere in another; in others the process stops after a commit that falls between
    // them and a new one restores the store and goes on (as after a crash: what was not
    // committed never reached the store).
    let clean = fleet(40, 6);
    let event_at = |from: usize| {
        (from..clean.len())
            .find(|&i| matches!(decode(&clean[i].bytes).unwrap().payload, Payload::Safety(_)))
            .unwrap()
    };
    let time_of = |r: &MemoryRecord| decode(&r.bytes).unwrap().event_time_ms;
    let after = |i: usize, delay: i64| {
        let due = time_of(&clean[i]) + delay;
        (i..clean.len())
            .find(|&j| time_of(&clean[j]) >= due)
            .unwrap()
    };
    let mut records = clean.clone();
    let mut inserts: Vec<(usize, MemoryRecord)> = Vec::new();
    for (n, (delay, shift)) in [(HOUR, 0), (20 * HOUR, 0), (12 * HOUR, 12 * HOUR)]
        .into_iter()
        .enumerate()
    {
        let original = event_at(clean.len() / 5 * (n + 1));
        let at = after(original, delay);
        let copy = rewritten(&clean[original], |e| e.event_time_ms += shift);
        inserts.push((
            at,
            MemoryRecord {
                timestamp_ms: clean[at].timestamp_ms,
                ..copy
            },
        ));
    }
    inserts.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
    for (at, record) in inserts {
        records.insert(at, record);
    }

    let dir = tempfile::tempdir().unwrap();
    let outcome = |name: &str, max_records: usize, crash_at: Option<usize>| {
        let mut store = Store::open(&dir.path().join(name)).unwrap();
        let mut dlq = Vec::new();
        if let Some(cut) = crash_at {
            // Everything up to `cut` committed, then the process is gone; a new one resumes.
            dlq.extend(run_committing(&mut store, &records[..cut], max_records).records);
        }
        dlq.extend(run_committing(&mut store, &records, max_records).records);
        let mut reasons: BTreeMap<&'static str, usize> = BTreeMap::new();
        for letter in &dlq {
            *reasons.entry(letter.reason).or_default() += 1;
        }
        (store.snapshot().unwrap(), reasons)
    };
    let (one_commit, reasons) = outcome("one-commit", usize::MAX, None);
    assert_eq!(
        reasons,
        BTreeMap::from([("duplicate", 1), ("late", 1)]),
        "the copy an hour later is a duplicate, the one 20 hours later late, the reused id new"
    );
    let every_record = outcome("every-record", 1, None);
    assert_eq!(every_record, (one_commit.clone(), reasons.clone()));
    let every_50 = outcome("every-50", 50, None);
    assert_eq!(every_50, (one_commit.clone(), reasons.clone()));
    for cut in [records.len() / 3, records.len() * 3 / 5] {
        let crashed = outcome(&format!("crash-{cut}"), 50, Some(cut));
        assert_eq!(
            crashed,
            (one_commit.clone(), reasons.clone()),
            "crash at {cut}"
        );
    }
}
