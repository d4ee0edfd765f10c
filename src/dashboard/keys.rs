//! The pages of one key, for an investigation: `/vehicles/{id}` (JSON `/api/vehicles/{id}/page`)
//! and `/cohorts/{key}` (JSON `/api/cohorts/{key}`). Per hazard class: the counts bin by bin
//! against the fleet's prediction, P(regression) over time against the opening threshold, the
//! latest hazard ratio with its 95% CrI, the baseline in use and where it came from; then the
//! key's episodes and alerts; for a vehicle its totals, exposure per bin, and its latest trips
//! and critical events. Linked from the ranking, the episodes and the summary.

use serde::Serialize;

use super::html::{self, escape, kpi, num};
use super::links::{cohort_href, vehicle_href};
use super::recent::{RecentLists, RecentRecord};
use super::regressions::{
    self, BaselineInUse, EpisodeRow, HR_FIELDS, HistoryRow, KeyHistory, history_rows,
};
use super::summary::Totals;
use super::svg::{Chart, PALETTE};
use super::{Coverage, Sources};
use crate::engine::PartitionId;
use crate::engine::detection::Rules;
use crate::model::{HazardClass, KeyKind, utc_time};

/// What the pages of a vehicle and of a cohort both show: per hazard class the key's
/// conclusions and history, its episodes, and the rules in force.
#[derive(Debug, Clone, Serialize)]
pub struct KeyPage {
    pub key_kind: &'static str,
    pub key: String,
    pub bin_width_ms: i64,
    pub classes: Vec<ClassView>,
    pub episodes: Vec<EpisodeRow>,
    pub detection: Rules,
}

/// A vehicle's page data (`/api/vehicles/{id}/page`).
#[derive(Debug, Clone, Serialize)]
pub struct VehiclePage {
    #[serde(flatten)]
    pub page: KeyPage,
    pub vehicle: VehicleFacts,
    pub totals: Totals,
    pub bins: Vec<BinRow>,
    /// Newest first, from the facts the store keeps of the vehicle's bins ([`super::recent`]).
    pub recent_trips: Vec<RecentRecord>,
    pub recent_critical: Vec<RecentRecord>,
}

/// What a vehicle's records say of it.
#[derive(Debug, Clone, Serialize)]
pub struct VehicleFacts {
    pub partition: PartitionId,
    pub vehicle_model: String,
    pub firmware_version: String,
    pub last_event_time_ms: i64,
    /// (first seen at, version).
    pub firmware_history: Vec<(i64, String)>,
}

/// One bin of a vehicle: its counts and exposure.
#[derive(Debug, Clone, Serialize)]
pub struct BinRow {
    pub bin_start_ms: i64,
    #[serde(flatten)]
    pub totals: Totals,
}

/// A cohort's page data (`/api/cohorts/{key}`).
#[derive(Debug, Clone, Serialize)]
pub struct CohortPage {
    #[serde(flatten)]
    pub page: KeyPage,
    pub cohort: CohortName,
}

/// A cohort key's parts: `firmware:3.1` is kind `firmware`, value `3.1`.
#[derive(Debug, Clone, Serialize)]
pub struct CohortName {
    pub kind: String,
    pub value: String,
}

/// One hazard class of a key: its live conclusions and its history.
#[derive(Debug, Clone, Serialize)]
pub struct ClassView {
    pub hazard_class: &'static str,
    pub last_bin_ms: Option<i64>,
    pub p_regression: Option<f64>,
    pub p_open: Option<f64>,
    pub onset_ms: Option<i64>,
    pub hr_median: Option<f64>,
    pub hr_low: Option<f64>,
    pub hr_high: Option<f64>,
    pub episode_open: bool,
    pub baseline: BaselineInUse,
    pub history_complete: bool,
    pub history: Vec<HistoryRow>,
}

fn class_view(sources: &Sources<'_>, kind: KeyKind, key: &str, class: HazardClass) -> ClassView {
    let KeyHistory {
        series,
        replayed,
        baseline,
        bins,
        complete,
    } = regressions::key_history(sources, kind, key, class);
    let base = series
        .as_ref()
        .map_or(baseline, |s| s.detector.posterior_baseline(baseline));
    let last = series.as_ref().and_then(|s| s.last.as_ref());
    let hr = last.and_then(|l| l.hazard_ratio.as_deref().copied());
    let source = match kind {
        KeyKind::Vehicle => sources.settings.fleet_shape_source[class],
        KeyKind::Cohort => "members",
    };
    ClassView {
        hazard_class: class.name(),
        last_bin_ms: last.map(|l| l.bin_start_ms),
        p_regression: last.map(|l| l.p_regression),
        p_open: last.map(|l| l.p_open),
        onset_ms: last.filter(|l| l.onset_bins > 0).map(|l| l.onset_ms),
        hr_median: hr.map(|h| h.median).filter(|v| v.is_finite()),
        hr_low: hr.map(|h| h.low).filter(|v| v.is_finite()),
        hr_high: hr.map(|h| h.high).filter(|v| v.is_finite()),
        episode_open: series.as_ref().is_some_and(|s| s.episode.open.is_some()),
        baseline: BaselineInUse {
            shape: base.shape,
            rate: base.rate,
            source: source.to_string(),
        },
        history_complete: complete,
        history: history_rows(&replayed, &bins, complete),
    }
}

/// The key's episodes, most recently opened first.
fn key_episodes(sources: &Sources<'_>, kind: KeyKind, key: &str) -> Vec<EpisodeRow> {
    regressions::episodes(sources.alerts)
        .iter()
        .filter(|e| e.latest().key_kind == kind && e.latest().key == key)
        .map(EpisodeRow::of)
        .collect()
}

fn key_page(sources: &Sources<'_>, kind: KeyKind, key: &str) -> KeyPage {
    KeyPage {
        key_kind: kind.name(),
        key: key.to_string(),
        bin_width_ms: sources.settings.bin_width_ms,
        classes: HazardClass::ALL
            .iter()
            .map(|class| class_view(sources, kind, key, *class))
            .collect(),
        episodes: key_episodes(sources, kind, key),
        detection: sources.settings.rules(),
    }
}

/// A vehicle's page data; `None` if no process of the group has it in memory.
pub fn vehicle_data(sources: &Sources<'_>, id: &str) -> Option<VehiclePage> {
    let vehicle = sources.vehicles.get(id)?;
    let bins = vehicle
        .bins
        .iter()
        .map(|(start, stats)| BinRow {
            bin_start_ms: *start,
            totals: Totals::of(stats),
        })
        .collect();
    let recent = RecentLists::of_vehicle_page(sources.history, id, &vehicle);
    Some(VehiclePage {
        page: key_page(sources, KeyKind::Vehicle, id),
        vehicle: VehicleFacts {
            partition: vehicle.partition,
            vehicle_model: vehicle.meta.vehicle_model.clone(),
            firmware_version: vehicle.meta.firmware_version.clone(),
            last_event_time_ms: vehicle.meta.last_event_time_ms,
            firmware_history: vehicle.meta.firmware_history.clone(),
        },
        totals: Totals::of(&vehicle.totals()),
        bins,
        recent_trips: recent.trips,
        recent_critical: recent.critical,
    })
}

/// A cohort's page data; `None` if no process of the group has its series.
pub fn cohort_data(sources: &Sources<'_>, key: &str) -> Option<CohortPage> {
    sources.cohorts.get(key)?;
    let (kind, value) = key.split_once(':').unwrap_or(("cohort", key));
    Some(CohortPage {
        page: key_page(sources, KeyKind::Cohort, key),
        cohort: CohortName {
            kind: kind.to_string(),
            value: value.to_string(),
        },
    })
}

/// The rule in force; per class its conclusions in a line, and its charts; then the episodes.
fn key_page_html(key: &KeyPage) -> String {
    let mut body = html::rule_line(Some(&key.detection), "/detection");
    for (i, class) in key.classes.iter().enumerate() {
        let at = |f: &str| format!("/classes/{i}/{f}");
        let name = class.hazard_class;
        body += &format!("<h2>{}</h2>", escape(name));
        body += &format!(
            "<p>P(regression) {} after the bin of {} (an episode opens at {}) · HR {} · baseline \
             Gamma({}, {}) from the {} · episode {}.</p>",
            num(class.p_regression, &at("p_regression"), 3),
            html::date(class.last_bin_ms),
            num(class.p_open, &at("p_open"), 4),
            html::interval_at(
                [class.hr_median, class.hr_low, class.hr_high],
                &format!("/classes/{i}"),
                HR_FIELDS,
                2
            ),
            num(class.baseline.shape, &at("baseline/shape"), 2),
            num(class.baseline.rate, &at("baseline/rate"), 2),
            escape(&class.baseline.source),
            if class.episode_open {
                "open"
            } else {
                "not open"
            },
        );
        if !class.history_complete {
            body += "<p class=\"note\">Bins older than <code>retention.bin_days</code> have been \
                retired on this partition: the counts are those of the bins kept, and \
                P(regression) is not replayed from them.</p>";
        }
        let counts = regressions::events_chart(
            &class.history,
            key.bin_width_ms,
            &format!("{name}-events"),
            &format!("{name}: events per bin, and predicted"),
            "fleet-predicted",
        );
        body += &counts.render();
        let mut p = regressions::p_regression_chart(
            &class.history,
            &format!("{name}-p-regression"),
            &format!("{name}: P(regression) by bin"),
        );
        p.line(
            "opens at",
            PALETTE[4],
            html::points(
                &class.history,
                |h| Some(h.bin_start_ms as f64),
                |h| h.p_open,
            ),
        );
        body += &p.render();
    }
    body + &episodes_html(&key.episodes)
}

fn episodes_html(episodes: &[EpisodeRow]) -> String {
    let rows: Vec<Vec<String>> = episodes
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let at = format!("/episodes/{i}");
            vec![
                e.link(&escape(e.hazard_class)),
                escape(e.status),
                html::date(Some(e.onset_ms)),
                html::date(Some(e.opened_at_ms)),
                e.hr_html(&at),
                num(e.p_regression, &format!("{at}/p_regression"), 3),
            ]
        })
        .collect();
    if rows.is_empty() {
        return "<h2>Episodes</h2><p>No alert has been raised for this key.</p>".into();
    }
    format!(
        "<h2>Episodes</h2>{}",
        html::table(
            "episodes",
            &[
                "episode (class)",
                "status",
                "onset (est.)",
                "opened",
                "HR [95% CrI]",
                "P(regression)"
            ],
            &rows,
        )
    )
}

fn recent_html(records: &[RecentRecord], title: &str) -> String {
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            vec![
                escape(&utc_time(r.time_ms)),
                escape(&r.trip_id),
                escape(&r.detail),
            ]
        })
        .collect();
    if rows.is_empty() {
        return format!("<h2>{title}</h2><p>None yet.</p>");
    }
    format!(
        "<h2>{title}</h2>{}",
        html::table(
            &title.to_lowercase().replace(' ', "-"),
            &["time", "trip", ""],
            &rows
        )
    )
}

pub fn vehicle_page(data: &VehiclePage, coverage: &Coverage) -> String {
    let id = &data.page.key;
    let facts = &data.vehicle;
    let mut body = format!(
        "<p>Model {} · firmware {} · partition {} · last record {}</p>",
        escape(&facts.vehicle_model),
        escape(&facts.firmware_version),
        num(facts.partition.stored(), "/vehicle/partition", 0),
        escape(&utc_time(facts.last_event_time_ms)),
    );
    let totals = &data.totals;
    body += r#"<div class="kpis">"#;
    body += &kpi(
        "Exposure (hours)",
        &num(totals.exposure_hours, "/totals/exposure_hours", 1),
        &format!("{} trips", num(totals.trips, "/totals/trips", 0)),
    );
    body += &kpi(
        "Critical events",
        &num(totals.critical, "/totals/critical", 0),
        &format!(
            "{} safety events",
            num(totals.safety_events, "/totals/safety_events", 0)
        ),
    );
    body += &kpi(
        "Disengagements",
        &num(totals.disengagements, "/totals/disengagements", 0),
        &format!(
            "{} mode transitions",
            num(totals.mode_transitions, "/totals/mode_transitions", 0)
        ),
    );
    body += "</div>";
    let mut exposure = Chart::new(
        "exposure-per-bin",
        "Exposure per bin (hours driven in trips that ended in it)",
        "bin",
        "hours",
    )
    .dates();
    exposure.bars(
        "exposure",
        PALETTE[0],
        html::points(
            &data.bins,
            |b| Some(b.bin_start_ms as f64),
            |b| Some(b.totals.exposure_hours),
        ),
        data.page.bin_width_ms as f64 * 0.8,
    );
    body += &exposure.render();
    body += &key_page_html(&data.page);
    body += &recent_html(&data.recent_critical, "Latest critical events");
    body += &recent_html(&data.recent_trips, "Latest trips");
    html::page_with(
        coverage,
        "/vehicles",
        &format!("Vehicle {id}"),
        &format!("/api{}/page", vehicle_href(id)),
        &body,
    )
}

pub fn cohort_page(data: &CohortPage, coverage: &Coverage) -> String {
    let key = &data.page.key;
    let mut body = format!(
        "<p>The cohort of vehicles with {} {}, compared with what its members' own fleet \
         predictions add up to.</p>",
        escape(&data.cohort.kind),
        escape(&data.cohort.value),
    );
    body += &key_page_html(&data.page);
    html::page_with(
        coverage,
        "/regressions",
        &format!("Cohort {key}"),
        &format!("/api{}", cohort_href(key)),
        &body,
    )
}
