use serde_json::Value;

use super::*;
use crate::model::{AlertStatus, HazardClass, KeyKind, RegressionAlert};

fn alert(key: &str, status: AlertStatus, suffix: &str, detected_at: i64) -> RegressionAlert {
    RegressionAlert {
        alert_id: format!("VEHICLE/{key}/critical/2026-01-20/{suffix}"),
        status,
        key_kind: KeyKind::Vehicle,
        key: key.into(),
        hazard_class: HazardClass::Critical,
        onset_estimate: 1_768_867_200_000,
        detected_at,
        p_regression: 0.97,
        hr_median: 2.5,
        hr_low: 1.6,
        hr_high: 4.0,
        rate_before: 0.01,
        rate_after: 0.025,
        events_before: 10,
        events_after: 12,
        exposure_before: 1000.0,
        exposure_after: 480.0,
        prior_source: "config".into(),
        sampling_policy: "full".into(),
    }
}

#[test]
fn alerts_group_into_episodes_whose_latest_status_says_whether_they_are_open() {
    let day = 86_400_000;
    let t = 1_769_000_000_000;
    let alerts = vec![
        alert("veh-1", AlertStatus::Resolved, "RESOLVED", t + 9 * day),
        alert("veh-1", AlertStatus::Opened, "OPENED", t),
        alert("veh-1", AlertStatus::Updated, "UPDATED-1", t + 3 * day),
        alert("veh-2", AlertStatus::Opened, "OPENED", t + day),
    ];
    let episodes = regressions::episodes(&alerts);
    assert_eq!(episodes.len(), 2);
    // Newest opened first.
    assert_eq!(episodes[0].id, "VEHICLE/veh-2/critical/2026-01-20");
    assert!(episodes[0].is_open());
    assert_eq!(episodes[1].alerts.len(), 3);
    assert_eq!(episodes[1].alerts[0].status, AlertStatus::Opened);
    assert!(!episodes[1].is_open(), "resolved");
    let data = serde_json::to_value(regressions::data(&alerts, None)).unwrap();
    assert_eq!(data["open"], 1);
    assert_eq!(data["episodes"][1]["updates"], 1);
    assert_eq!(data["episodes"][1]["resolved_at_ms"], t + 9 * day);
    assert_eq!(
        data["episodes"][1]["days_to_detection"].as_f64().unwrap(),
        (t - 1_768_867_200_000) as f64 / day as f64
    );
}

/// A rate as the API serves it.
fn rate_json(estimate: f64, variance: Option<f64>, hours: f64) -> Value {
    serde_json::to_value(Rate::of(estimate, variance, hours)).unwrap()
}

#[test]
fn observed_counts_get_exact_poisson_intervals_and_estimates_normal_ones() {
    // Garwood 95% intervals for a count k: k = 0 -> [0, 3.689], k = 10 -> [4.795, 18.390]
    // (tables to 3 decimals, hence the tolerance).
    let zero = rate_json(0.0, None, 1000.0);
    assert_eq!(zero["rate_per_1000h_ci95"][0], 0.0);
    assert!((zero["rate_per_1000h_ci95"][1].as_f64().unwrap() - 3.689).abs() < 1e-3);
    let ten = rate_json(10.0, None, 2000.0);
    assert!((ten["rate_per_1000h"].as_f64().unwrap() - 5.0).abs() < 1e-12);
    assert!((ten["rate_per_1000h_ci95"][0].as_f64().unwrap() - 4.795 / 2.0).abs() < 1e-3);
    assert!((ten["rate_per_1000h_ci95"][1].as_f64().unwrap() - 18.390 / 2.0).abs() < 1e-3);
    // A Horvitz-Thompson estimate: estimate +- 1.96 SE, never below zero.
    let ht = rate_json(10.0, Some(9.0), 1000.0);
    assert!((ht["rate_per_1000h_ci95"][0].as_f64().unwrap() - (10.0 - 1.96 * 3.0)).abs() < 1e-9);
    assert!((ht["rate_per_1000h_ci95"][1].as_f64().unwrap() - (10.0 + 1.96 * 3.0)).abs() < 1e-9);
    let wide = rate_json(1.0, Some(100.0), 1000.0);
    assert_eq!(wide["rate_per_1000h_ci95"][0], 0.0);
    assert!(
        rate_json(3.0, None, 0.0)["rate_per_1000h"].is_null(),
        "no exposure, no rate"
    );
}

#[test]
fn diagnostics_before_any_refit_say_so_and_the_page_still_renders() {
    let typed = diagnostics::data(None);
    let data = serde_json::to_value(&typed).unwrap();
    assert_eq!(data["available"], false);
    let page = diagnostics::page(&typed, &Coverage::default());
    assert!(page.contains("No refit has run yet"));
    assert!(page.contains(r#"data-api-url="/api/diagnostics""#));
}

#[test]
fn an_episode_link_survives_the_query_string() {
    let id = "COHORT/firmware:fw 3.0+rc/critical/2026-01-30";
    let href = super::links::episode_href(id);
    assert_eq!(
        href,
        "/regressions/episode?id=COHORT%2Ffirmware%3Afw%203.0%2Brc%2Fcritical%2F2026-01-30"
    );
}

/// Every `data-api="/pointer"` number in `html`: (pointer, text shown).
fn tied_numbers(html: &str) -> Vec<(String, String)> {
    html.split(r#"<span data-api=""#)
        .skip(1)
        .map(|rest| {
            let (pointer, rest) = rest.split_once(r#"">"#).unwrap();
            let (text, _) = rest.split_once("</span>").unwrap();
            (pointer.to_string(), text.to_string())
        })
        .collect()
}

/// Each tied number of a page is the number at its pointer in the page's JSON, to the
/// decimals shown (what the browser test checks in Chromium, here for every page's types).
fn assert_tied_to_json(page: &str, html: &str, json: &Value) -> usize {
    let numbers = tied_numbers(html);
    for (pointer, text) in &numbers {
        let value = json
            .pointer(pointer)
            .and_then(Value::as_f64)
            .unwrap_or_else(|| panic!("{page}: {pointer} is not a number in the JSON"));
        let decimals = text.split_once('.').map_or(0, |(_, d)| d.len());
        assert_eq!(
            format!("{value:.decimals$}"),
            *text,
            "{page}: {pointer} shows {text}, the JSON has {value}"
        );
    }
    numbers.len()
}

#[test]
fn every_number_a_page_shows_is_the_number_at_its_place_in_the_pages_json() {
    use crate::generator::{FirmwareRollout, Generator, GeneratorConfig};

    // A fleet whose firmware rollout raises alerts (vehicle and cohort pages with episodes).
    let mut fleet = GeneratorConfig {
        vehicles: 120,
        days: 40,
        ..GeneratorConfig::default()
    };
    fleet.regressions.firmware_rollout = Some(FirmwareRollout {
        version: "fw-9".into(),
        day: 18,
        share: 0.5,
        hr_critical: 6.0,
    });
    let truth = Generator::new(fleet.clone()).unwrap().truth();
    let records: Vec<(String, Vec<u8>)> = Generator::new(fleet)
        .unwrap()
        .map(|r| (r.key, r.bytes))
        .collect();
    let (engine, store, _, outputs) = run_with_store(records, 50_000);
    let alerts = outputs.alerts;
    assert!(!alerts.is_empty(), "the rollout raises alerts");
    let vehicles = engine.vehicles();
    let cohorts = engine.cohorts();
    let fleet_view = engine.fleet_view().read().unwrap().clone();
    let sources = Sources {
        vehicles: FleetVehicles::local(&vehicles),
        cohorts: &cohorts,
        fleet: &fleet_view,
        settings: engine.detection_settings(),
        alerts: &alerts,
        model_run: None,
        sampling: None,
        truth: Some(&truth),
        horizon_days: 14.0,
        history: &*store,
    };
    let coverage = Coverage::default();
    let episode = regressions::episodes(&alerts)[0].id.clone();
    let vehicle = alerts
        .iter()
        .find(|a| a.key_kind == KeyKind::Vehicle)
        .map(|a| a.key.clone())
        .unwrap_or_else(|| "veh-0001".into());
    let summary = summary::data(&sources);
    let listed = regressions::data(&alerts, Some(sources.settings.rules()));
    let detail = regressions::episode_data(&sources, &episode).unwrap();
    let rare = rare_events::data(&sources);
    let ranking = vehicles::data(&sources, "", 20);
    let key = keys::vehicle_data(&sources, &vehicle).unwrap();
    let cohort = keys::cohort_data(&sources, "firmware:fw-9").unwrap();
    let diagnostics = diagnostics::data(None);
    let pages: Vec<(&str, String, Value)> = vec![
        (
            "summary",
            summary::page(&summary, &coverage),
            json(&summary),
        ),
        (
            "regressions",
            regressions::page(&listed, &coverage),
            json(&listed),
        ),
        (
            "episode",
            regressions::episode_page(&detail, &coverage, &episode),
            json(&detail),
        ),
        (
            "rare events",
            rare_events::page(&rare, &coverage),
            json(&rare),
        ),
        (
            "ranking",
            vehicles::page(&ranking, &coverage),
            json(&ranking),
        ),
        ("vehicle", keys::vehicle_page(&key, &coverage), json(&key)),
        (
            "cohort",
            keys::cohort_page(&cohort, &coverage),
            json(&cohort),
        ),
        (
            "diagnostics",
            diagnostics::page(&diagnostics, &coverage),
            json(&diagnostics),
        ),
    ];
    for (page, html, data) in &pages {
        let tied = assert_tied_to_json(page, html, data);
        // Each page but the empty diagnostics one shows numbers (so the check checks something).
        assert!(
            tied > 0 || *page == "diagnostics",
            "{page} shows no tied number"
        );
    }
}

/// A page's JSON as the HTTP edge serves it: its data, with its coverage.
fn json<T: serde::Serialize>(data: &T) -> Value {
    let mut json = serde_json::to_value(data).unwrap();
    json["coverage"] = serde_json::to_value(Coverage::default()).unwrap();
    json
}

/// The vehicle page's latest trips and critical events come from the facts in the store (the
/// stream keeps no lists): for every vehicle, the ten latest of each by time, newest first, as
/// the input records say.
#[test]
fn a_vehicle_page_lists_its_latest_trips_and_critical_events_from_the_stored_facts() {
    use crate::generator::{Generator, GeneratorConfig};
    use crate::model::Payload;

    // Critical events frequent enough that some vehicles have more than ten.
    let fleet = GeneratorConfig {
        vehicles: 12,
        days: 10,
        critical_per_hour: 0.3,
        ..GeneratorConfig::default()
    };
    let records: Vec<(String, Vec<u8>)> = Generator::new(fleet)
        .unwrap()
        .map(|r| (r.key, r.bytes))
        .collect();
    // What the input says, per vehicle: (time, trip id) of every trip and critical event.
    type Listed = Vec<(i64, String)>;
    let mut expected: BTreeMap<String, (Listed, Listed)> = BTreeMap::new();
    for (_, bytes) in &records {
        let event = crate::codec::decode(bytes).unwrap();
        let lists = expected.entry(event.vehicle_id.to_string()).or_default();
        match &event.payload {
            Payload::Trip(t) => lists.0.push((t.end_time_ms, t.trip_id.to_string())),
            Payload::Safety(e) if e.is_critical() => {
                lists.1.push((event.event_time_ms, e.trip_id.to_string()))
            }
            _ => {}
        }
    }
    let latest = |mut all: Vec<(i64, String)>| {
        all.sort();
        all.into_iter()
            .rev()
            .take(recent::RECENT)
            .collect::<Vec<_>>()
    };
    let (engine, store, dead, outputs) = run_with_store(records, 5_000);
    assert!(dead.records.is_empty(), "a clean stream");
    let vehicles = engine.vehicles();
    let (cohorts, fleet_view) = (
        engine.cohorts(),
        engine.fleet_view().read().unwrap().clone(),
    );
    let sources = Sources {
        vehicles: FleetVehicles::local(&vehicles),
        cohorts: &cohorts,
        fleet: &fleet_view,
        settings: engine.detection_settings(),
        alerts: &outputs.alerts,
        model_run: None,
        sampling: None,
        truth: None,
        horizon_days: 14.0,
        history: &*store,
    };
    let listed = |records: &[recent::RecentRecord]| -> Vec<(i64, String)> {
        records
            .iter()
            .map(|r| (r.time_ms, r.trip_id.clone()))
            .collect()
    };
    let mut full_critical = 0;
    for (id, (trips, critical)) in expected {
        let page = keys::vehicle_data(&sources, &id).unwrap();
        assert_eq!(listed(&page.recent_trips), latest(trips), "{id}'s trips");
        full_critical += usize::from(critical.len() > recent::RECENT);
        assert_eq!(
            listed(&page.recent_critical),
            latest(critical),
            "{id}'s critical events"
        );
    }
    assert!(
        full_critical > 0,
        "some vehicle has more critical events than a page lists"
    );
    // Without the store's facts, a page lists none: the lists are not held in memory.
    let bare = Sources {
        history: &recent::NoHistory,
        ..sources
    };
    let some = vehicles.snapshot().iter().next().unwrap().key().clone();
    assert!(
        keys::vehicle_data(&bare, &some)
            .unwrap()
            .recent_trips
            .is_empty()
    );
}

/// The engine and store after `records` ran through them in process (4 partitions, a commit
/// every `commit_every` records), with the dead letters and outputs.
fn run_with_store(
    records: Vec<(String, Vec<u8>)>,
    commit_every: usize,
) -> (
    crate::engine::Engine,
    StoreInDir,
    crate::stream::memory::MemoryDeadLetters,
    crate::stream::memory::MemoryOutputs,
) {
    let config = crate::config::Config::default_config();
    let mut engine = crate::engine::Engine::new(
        config.stream,
        &config.detector,
        crate::engine::RestoredState::default(),
        crate::metrics::Metrics::new(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut store = crate::store::Store::open(dir.path()).unwrap();
    let (dead, outputs) = crate::stream::memory::run_in_memory(
        &mut engine,
        records.into_iter(),
        4,
        &mut store,
        commit_every,
    )
    .unwrap();
    (engine, StoreInDir { store, _dir: dir }, dead, outputs)
}

/// A store and the folder it lives in (deleted when dropped).
struct StoreInDir {
    store: crate::store::Store,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for StoreInDir {
    type Target = crate::store::Store;

    fn deref(&self) -> &crate::store::Store {
        &self.store
    }
}
