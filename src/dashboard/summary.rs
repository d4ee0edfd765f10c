//! Page 1, the executive summary: exposure, the critical-event rate (Horvitz-Thompson under a
//! review budget), open regressions, time to detection, and sensitivity where the truth is known.

use serde_json::{Value, json};

use super::html::{self, interval, kpi, num, text};
use super::svg::{Chart, PALETTE};
use super::{Sources, critical_estimate, fleet_periods, rate_json, regressions};
use crate::engine::BinStats;
use crate::evaluate::evaluate;
use crate::model::AlertStatus;

/// Fleet totals and the critical-event rate per 1000 exposure hours with a 95% interval. Under
/// a review budget, critical events are known only for reviewed trips: the fleet's total is
/// their Horvitz-Thompson estimate (each reviewed event weighted 1/pi) with its variance, and
/// the interval is normal on it. Exposure is known for every trip.
pub fn fleet_json(totals: &BinStats, vehicles: usize, sampling: Option<(&str, f64)>) -> Value {
    let (estimate, variance) = critical_estimate(totals, sampling.is_some());
    let mut critical = rate_json(estimate, variance, totals.exposure_hours());
    critical["method"] = json!(if sampling.is_some() {
        "horvitz_thompson"
    } else {
        "observed"
    });
    json!({
        "vehicles": vehicles,
        "totals": totals_json(totals),
        "sampling": sampling.map(|(policy, budget)| json!({
            "policy": policy,
            "budget": budget,
            "reviewed_trips": totals.reviewed_trips,
            "reviewed_share": (totals.trips > 0).then(|| totals.reviewed_trips as f64 / totals.trips as f64),
            "reviewed_critical": totals.reviewed_critical,
        })),
        "critical": critical,
    })
}

/// A bin's (or a sum's) counts and exposure.
pub fn totals_json(stats: &BinStats) -> Value {
    json!({
        "trips": stats.trips,
        "exposure_hours": stats.exposure_hours(),
        "exposure_ms": stats.exposure_ms,
        "safety_events": stats.safety_events,
        "critical": stats.critical,
        "disengagements": stats.disengagements,
        "mode_transitions": stats.mode_transitions,
    })
}

/// Open episodes the summary lists (newest first), each linked to its key's page.
const OPEN_EPISODES_SHOWN: usize = 10;

fn open_episodes_html(data: &Value) -> String {
    let rows: Vec<Vec<String>> = html::rows(data, "/open_episodes")
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let at = |f: &str| format!("/open_episodes/{i}/{f}");
            let opened = e["opened_at_ms"]
                .as_i64()
                .map_or("—".into(), crate::model::utc_date);
            vec![
                super::links::key_link(e, &text(data, &at("key"))),
                text(data, &at("hazard_class")),
                super::links::episode_link(e, &opened),
                interval(data, &at("hr_median"), &at("hr_low"), &at("hr_high"), 2),
            ]
        })
        .collect();
    if rows.is_empty() {
        return "<h2>Open regressions</h2><p>None open.</p>".into();
    }
    format!(
        "<h2>Open regressions</h2>{}",
        html::table(
            "open-episodes",
            &["key", "class", "opened", "HR [95% CrI]"],
            &rows
        )
    )
}

pub fn data(sources: &Sources<'_>) -> Value {
    let periods = fleet_periods(&sources.vehicles);
    let mut totals = BinStats::default();
    for stats in periods.values() {
        totals.add(stats);
    }
    let sampled = sources.sampling.is_some();
    let weekly: Vec<Value> = periods
        .iter()
        .map(|(start, stats)| {
            let (estimate, variance) = critical_estimate(stats, sampled);
            json!({
                "period_start_ms": start,
                "exposure_hours": stats.exposure_hours(),
                "trips": stats.trips,
                "critical": rate_json(estimate, variance, stats.exposure_hours()),
            })
        })
        .collect();
    let episodes = regressions::episodes(sources.alerts);
    let opened: Vec<f64> = sources
        .alerts
        .iter()
        .filter(|a| a.status == AlertStatus::Opened)
        .map(|a| a.time_to_detection_days())
        .collect();
    let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    let ground_truth = sources.truth.map(|truth| {
        let e = evaluate(truth, sources.alerts, sources.horizon_days);
        json!({
            "horizon_days": e.horizon_days,
            "regressions": e.regressions,
            "detected": e.detected,
            "sensitivity": e.sensitivity,
            "sensitivity_ci95": e.sensitivity_ci,
            "false_alarms": e.false_alarms,
            "false_alarms_per_1000_vehicle_months": e.false_alarms_per_1000_vehicle_months,
            "mttd_days_mean": e.mttd_days_mean,
            "mttd_days_mean_ci95": e.mttd_days_mean_ci,
        })
    });
    json!({
        "fleet": fleet_json(&totals, sources.vehicles.len(), sources.sampling),
        "regressions": {
            "episodes": episodes.len(),
            "open": episodes.iter().filter(|e| e.is_open()).count(),
            "alerts": sources.alerts.len(),
            "mean_days_from_estimated_onset_to_alert": mean(&opened),
        },
        "ground_truth": ground_truth,
        "detection": sources.settings.rules_json(),
        "open_episodes": episodes
            .iter()
            .filter(|e| e.is_open())
            .take(OPEN_EPISODES_SHOWN)
            .map(regressions::episode_row)
            .collect::<Vec<_>>(),
        "period_days": super::PERIOD_DAYS,
        "periods": weekly,
    })
}

pub fn page(data: &Value) -> String {
    let sampled = data
        .pointer("/fleet/sampling")
        .is_some_and(|s| !s.is_null());
    let method = if sampled {
        "Horvitz-Thompson estimate from reviewed trips, 95% interval"
    } else {
        "every trip reviewed; exact Poisson 95% interval"
    };
    let mut body = String::from(r#"<div class="kpis">"#);
    body += &kpi(
        "Exposure (hours)",
        &num(data, "/fleet/totals/exposure_hours", 0),
        &format!(
            "{} trips, {} vehicles",
            num(data, "/fleet/totals/trips", 0),
            num(data, "/fleet/vehicles", 0)
        ),
    );
    body += &kpi(
        "Critical events per 1000 h",
        &num(data, "/fleet/critical/rate_per_1000h", 3),
        &format!(
            "[{}, {}] {method}",
            num(data, "/fleet/critical/rate_per_1000h_ci95/0", 3),
            num(data, "/fleet/critical/rate_per_1000h_ci95/1", 3)
        ),
    );
    body += &kpi(
        "Open regressions",
        &num(data, "/regressions/open", 0),
        &format!(
            "{} episodes, {} alerts",
            num(data, "/regressions/episodes", 0),
            num(data, "/regressions/alerts", 0)
        ),
    );
    body += &kpi(
        "Days from estimated onset to alert",
        &num(
            data,
            "/regressions/mean_days_from_estimated_onset_to_alert",
            1,
        ),
        "mean over opened alerts",
    );
    if data.pointer("/ground_truth").is_some_and(|t| !t.is_null()) {
        body += &kpi(
            "Detection sensitivity",
            &num(data, "/ground_truth/sensitivity", 3),
            &format!(
                "[{}, {}]: {} of {} injected regressions within {} days",
                num(data, "/ground_truth/sensitivity_ci95/0", 3),
                num(data, "/ground_truth/sensitivity_ci95/1", 3),
                num(data, "/ground_truth/detected", 0),
                num(data, "/ground_truth/regressions", 0),
                num(data, "/ground_truth/horizon_days", 0)
            ),
        );
        body += &kpi(
            "MTTD (days, from true onset)",
            &interval(
                data,
                "/ground_truth/mttd_days_mean",
                "/ground_truth/mttd_days_mean_ci95/0",
                "/ground_truth/mttd_days_mean_ci95/1",
                1,
            ),
            &format!(
                "false alarms: {} ({} per 1000 vehicle-months)",
                num(data, "/ground_truth/false_alarms", 0),
                num(
                    data,
                    "/ground_truth/false_alarms_per_1000_vehicle_months",
                    2
                )
            ),
        );
    } else {
        body += &kpi(
            "Detection sensitivity",
            "—",
            "needs ground truth (simulated fleets)",
        );
    }
    body += "</div>";

    let periods = html::rows(data, "/periods");
    let at = |row: &Value, pointer: &str| row.pointer(pointer).and_then(Value::as_f64);
    let mut rate = Chart::new(
        "critical-rate",
        "Critical events per 1000 h by week, with 95% interval",
        "week",
        "per 1000 h",
    )
    .dates();
    rate.band(
        PALETTE[0],
        periods
            .iter()
            .filter_map(|r| {
                Some((
                    at(r, "/period_start_ms")?,
                    at(r, "/critical/rate_per_1000h_ci95/0")?,
                    at(r, "/critical/rate_per_1000h_ci95/1")?,
                ))
            })
            .collect(),
    );
    rate.line(
        "rate",
        PALETTE[0],
        periods
            .iter()
            .filter_map(|r| {
                Some((
                    at(r, "/period_start_ms")?,
                    at(r, "/critical/rate_per_1000h")?,
                ))
            })
            .collect(),
    );
    let mut exposure = Chart::new("exposure", "Exposure hours by week", "week", "hours").dates();
    exposure.bars(
        "exposure",
        PALETTE[2],
        html::points(data, "/periods", "period_start_ms", "exposure_hours"),
        (super::PERIOD_DAYS * 86_400_000) as f64 * 0.8,
    );
    body += &format!(
        "<p class=\"note\">Detection: each vehicle and cohort against what the fleet predicts \
         for it; an episode opens when P(HR &gt; {}) reaches the threshold calibrated for at \
         most {} false alarms per 1000 vehicle-months.</p>",
        num(data, "/detection/threshold_hr", 1),
        num(data, "/detection/false_alarms_per_1000_vehicle_months", 2),
    );
    body += &open_episodes_html(data);
    body += "<h2>Trends</h2>";
    body += &rate.render();
    body += &exposure.render();
    html::page_with(data, "/", "Executive summary", "/api/summary", &body)
}
