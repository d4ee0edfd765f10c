//! The pages of one key, for an investigation: `/vehicles/{id}` (JSON `/api/vehicles/{id}/page`)
//! and `/cohorts/{key}` (JSON `/api/cohorts/{key}`). Per hazard class: the counts bin by bin
//! against the fleet's prediction, P(regression) over time against the opening threshold, the
//! latest hazard ratio with its 95% CrI, the baseline in use and where it came from; then the
//! key's episodes and alerts; for a vehicle its totals, exposure per bin, and its latest trips
//! and critical events. Linked from the ranking, the episodes and the summary.

use serde_json::{Value, json};

use super::Sources;
use super::html::{self, escape, interval, kpi, num, text};
use super::links::{self, cohort_href, vehicle_href};
use super::regressions::{self, KeyHistory, history_rows};
use super::summary::totals_json;
use super::svg::{Chart, PALETTE};
use crate::model::{HazardClass, KeyKind, utc_date, utc_time};

/// One hazard class of a key: its live conclusions and its history.
fn class_json(sources: &Sources<'_>, kind: KeyKind, key: &str, class: HazardClass) -> Value {
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
    let last = series.as_ref().and_then(|s| s.last);
    let hr = last.and_then(|l| l.hazard_ratio);
    let source = match kind {
        KeyKind::Vehicle => sources.settings.fleet_shape_source[class],
        KeyKind::Cohort => "members",
    };
    json!({
        "hazard_class": class.name(),
        "last_bin_ms": last.map(|l| l.bin_start_ms),
        "p_regression": last.map(|l| l.p_regression),
        "p_open": last.map(|l| l.p_open),
        "onset_ms": last.filter(|l| l.onset_bins > 0).map(|l| l.onset_ms),
        "hr_median": hr.map(|h| h.median).filter(|v| v.is_finite()),
        "hr_low": hr.map(|h| h.low).filter(|v| v.is_finite()),
        "hr_high": hr.map(|h| h.high).filter(|v| v.is_finite()),
        "episode_open": series.as_ref().is_some_and(|s| s.episode.open.is_some()),
        "baseline": {"shape": base.shape, "rate": base.rate, "source": source},
        "history_complete": complete,
        "history": history_rows(&replayed, &bins, complete),
    })
}

/// The key's episodes, most recently opened first.
fn episodes_json(sources: &Sources<'_>, kind: KeyKind, key: &str) -> Vec<Value> {
    regressions::episodes(sources.alerts)
        .iter()
        .filter(|e| e.latest().key_kind == kind && e.latest().key == key)
        .map(regressions::episode_row)
        .collect()
}

fn classes_json(sources: &Sources<'_>, kind: KeyKind, key: &str) -> Vec<Value> {
    HazardClass::ALL
        .iter()
        .map(|class| class_json(sources, kind, key, *class))
        .collect()
}

/// A vehicle's page data; `None` if no process of the group has it in memory.
pub fn vehicle_data(sources: &Sources<'_>, id: &str) -> Option<Value> {
    let vehicle = sources.vehicles.get(id)?;
    let bins: Vec<Value> = vehicle
        .bins
        .iter()
        .map(|(start, stats)| {
            let mut row = totals_json(stats);
            row["bin_start_ms"] = json!(start);
            row
        })
        .collect();
    let recent = |list: &[crate::engine::RecentRecord]| -> Vec<Value> {
        list.iter()
            .rev()
            .map(|r| json!({"trip_id": r.trip_id, "time_ms": r.time_ms, "detail": r.detail}))
            .collect()
    };
    Some(json!({
        "key_kind": KeyKind::Vehicle.name(),
        "key": id,
        "vehicle": {
            "partition": vehicle.partition,
            "vehicle_model": vehicle.meta.vehicle_model,
            "firmware_version": vehicle.meta.firmware_version,
            "last_event_time_ms": vehicle.meta.last_event_time_ms,
            "firmware_history": vehicle.meta.firmware_history,
        },
        "totals": totals_json(&vehicle.totals()),
        "bin_width_ms": sources.settings.bin_width_ms,
        "bins": bins,
        "classes": classes_json(sources, KeyKind::Vehicle, id),
        "episodes": episodes_json(sources, KeyKind::Vehicle, id),
        "recent_trips": recent(&vehicle.meta.recent_trips),
        "recent_critical": recent(&vehicle.meta.recent_critical),
        "detection": sources.settings.rules_json(),
    }))
}

/// A cohort's page data; `None` if no process of the group has its series.
pub fn cohort_data(sources: &Sources<'_>, key: &str) -> Option<Value> {
    sources.cohorts.get(key)?;
    let (kind, value) = key.split_once(':').unwrap_or(("cohort", key));
    Some(json!({
        "key_kind": KeyKind::Cohort.name(),
        "key": key,
        "cohort": {"kind": kind, "value": value},
        "bin_width_ms": sources.settings.bin_width_ms,
        "classes": classes_json(sources, KeyKind::Cohort, key),
        "episodes": episodes_json(sources, KeyKind::Cohort, key),
        "detection": sources.settings.rules_json(),
    }))
}

/// Per class: its conclusions in a line, and its charts.
fn classes_html(data: &Value) -> String {
    let mut body = html::rule_line(data, "/detection");
    for (i, class) in html::rows(data, "/classes").iter().enumerate() {
        let at = |f: &str| format!("/classes/{i}/{f}");
        let name = class["hazard_class"].as_str().unwrap_or("");
        body += &format!("<h2>{}</h2>", escape(name));
        body += &format!(
            "<p>P(regression) {} after the bin of {} (an episode opens at {}) · HR {} · baseline \
             Gamma({}, {}) from the {} · episode {}.</p>",
            num(data, &at("p_regression"), 3),
            class["last_bin_ms"].as_i64().map_or("—".into(), utc_date),
            num(data, &at("p_open"), 4),
            interval(data, &at("hr_median"), &at("hr_low"), &at("hr_high"), 2),
            num(data, &at("baseline/shape"), 2),
            num(data, &at("baseline/rate"), 2),
            text(data, &at("baseline/source")),
            if class["episode_open"] == json!(true) {
                "open"
            } else {
                "not open"
            },
        );
        if class["history_complete"] == json!(false) {
            body += "<p class=\"note\">Bins older than <code>retention.bin_days</code> have been \
                retired on this partition: the counts are those of the bins kept, and \
                P(regression) is not replayed from them.</p>";
        }
        let history = at("history");
        let counts = regressions::events_chart(
            data,
            &history,
            &format!("{name}-events"),
            &format!("{name}: events per bin, and predicted"),
            "fleet-predicted",
        );
        body += &counts.render();
        let mut p = regressions::p_regression_chart(
            data,
            &history,
            &format!("{name}-p-regression"),
            &format!("{name}: P(regression) by bin"),
        );
        p.line(
            "opens at",
            PALETTE[4],
            html::points(data, &history, "bin_start_ms", "p_open"),
        );
        body += &p.render();
    }
    body
}

fn episodes_html(data: &Value) -> String {
    let rows: Vec<Vec<String>> = html::rows(data, "/episodes")
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let at = |f: &str| format!("/episodes/{i}/{f}");
            vec![
                links::episode_link(e, &text(data, &at("hazard_class"))),
                text(data, &at("status")),
                e["onset_ms"].as_i64().map_or("—".into(), utc_date),
                e["opened_at_ms"].as_i64().map_or("—".into(), utc_date),
                interval(data, &at("hr_median"), &at("hr_low"), &at("hr_high"), 2),
                num(data, &at("p_regression"), 3),
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

fn recent_html(data: &Value, pointer: &str, title: &str) -> String {
    let rows: Vec<Vec<String>> = html::rows(data, pointer)
        .iter()
        .enumerate()
        .map(|(i, r)| {
            vec![
                r["time_ms"].as_i64().map_or("—".into(), utc_time),
                text(data, &format!("{pointer}/{i}/trip_id")),
                text(data, &format!("{pointer}/{i}/detail")),
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

pub fn vehicle_page(data: &Value) -> String {
    let id = data["key"].as_str().unwrap_or("");
    let mut body = format!(
        "<p>Model {} · firmware {} · partition {} · last record {}</p>",
        text(data, "/vehicle/vehicle_model"),
        text(data, "/vehicle/firmware_version"),
        num(data, "/vehicle/partition", 0),
        data.pointer("/vehicle/last_event_time_ms")
            .and_then(Value::as_i64)
            .map_or("—".into(), utc_time),
    );
    body += r#"<div class="kpis">"#;
    body += &kpi(
        "Exposure (hours)",
        &num(data, "/totals/exposure_hours", 1),
        &format!("{} trips", num(data, "/totals/trips", 0)),
    );
    body += &kpi(
        "Critical events",
        &num(data, "/totals/critical", 0),
        &format!("{} safety events", num(data, "/totals/safety_events", 0)),
    );
    body += &kpi(
        "Disengagements",
        &num(data, "/totals/disengagements", 0),
        &format!(
            "{} mode transitions",
            num(data, "/totals/mode_transitions", 0)
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
        html::points(data, "/bins", "bin_start_ms", "exposure_hours"),
        data["bin_width_ms"].as_f64().unwrap_or(86_400_000.0) * 0.8,
    );
    body += &exposure.render();
    body += &classes_html(data);
    body += &episodes_html(data);
    body += &recent_html(data, "/recent_critical", "Latest critical events");
    body += &recent_html(data, "/recent_trips", "Latest trips");
    html::page_with(
        data,
        "/vehicles",
        &format!("Vehicle {id}"),
        &format!("/api{}/page", vehicle_href(id)),
        &body,
    )
}

pub fn cohort_page(data: &Value) -> String {
    let key = data["key"].as_str().unwrap_or("");
    let mut body = format!(
        "<p>The cohort of vehicles with {} {}, compared with what its members' own fleet \
         predictions add up to.</p>",
        text(data, "/cohort/kind"),
        text(data, "/cohort/value"),
    );
    body += &classes_html(data);
    body += &episodes_html(data);
    html::page_with(
        data,
        "/regressions",
        &format!("Cohort {key}"),
        &format!("/api{}", cohort_href(key)),
        &body,
    )
}
