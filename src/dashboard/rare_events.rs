//! Page 3, rare event detection: critical-event rates by stratum (road type x weather x night,
//! from the latest snapshot's trips) and by vehicle model (live), the review budget spent week by
//! week, and how well the policy's reviews find critical events (its yield against what uniform
//! review at the same spend would find).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::html::{self, interval, kpi, num, text};
use super::svg::{Chart, PALETTE};
use super::{Sources, critical_estimate, fleet_periods, rate_json};
use crate::engine::BinStats;

pub fn data(sources: &Sources<'_>) -> Value {
    let sampled = sources.sampling.is_some();
    let mut by_model: BTreeMap<String, BinStats> = BTreeMap::new();
    sources.vehicles.for_each(&mut |_, vehicle| {
        let model = match vehicle.meta.vehicle_model.as_str() {
            "" => "unknown",
            m => m,
        };
        by_model
            .entry(model.to_string())
            .or_default()
            .add(&vehicle.totals());
    });
    let mut fleet = BinStats::default();
    let strata: Vec<Value> = by_model
        .iter()
        .map(|(model, stats)| {
            fleet.add(stats);
            let (estimate, variance) = critical_estimate(stats, sampled);
            json!({
                "vehicle_model": model,
                "trips": stats.trips,
                "exposure_hours": stats.exposure_hours(),
                "reviewed_trips": if sampled { stats.reviewed_trips } else { stats.trips },
                "critical": rate_json(estimate, variance, stats.exposure_hours()),
                "disengagements_per_1000h": (stats.exposure_hours() > 0.0)
                    .then(|| stats.disengagements as f64 / stats.exposure_hours() * 1000.0),
            })
        })
        .collect();
    let reviewed_trips = if sampled {
        fleet.reviewed_trips
    } else {
        fleet.trips
    };
    let found = if sampled {
        fleet.reviewed_critical
    } else {
        fleet.critical
    };
    let (estimate, _) = critical_estimate(&fleet, sampled);
    let share = |part: u64, whole: u64| (whole > 0).then(|| part as f64 / whole as f64);
    // Uniform review of the same number of trips finds, in expectation, the estimated events
    // times the share of trips reviewed.
    let uniform_expected = share(reviewed_trips, fleet.trips).map(|s| s * estimate);
    let periods: Vec<Value> = fleet_periods(&sources.vehicles)
        .iter()
        .map(|(start, stats)| {
            let reviewed = if sampled {
                stats.reviewed_trips
            } else {
                stats.trips
            };
            json!({
                "period_start_ms": start,
                "trips": stats.trips,
                "reviewed_trips": reviewed,
                "reviewed_share": share(reviewed, stats.trips),
            })
        })
        .collect();
    let by_stratum: Vec<Value> = sources
        .model_run
        .and_then(|run| run.strata.as_deref())
        .unwrap_or_default()
        .iter()
        .map(|s| {
            let hours = if s.exposure_hours.is_finite() {
                s.exposure_hours
            } else {
                0.0
            };
            json!({
                "road_type": s.road_type, "weather": s.weather, "night": s.night,
                "trips": s.trips, "exposure_hours": hours,
                "critical": rate_json(s.critical_events as f64, None, hours),
            })
        })
        .collect();
    json!({
        "policy": sources.sampling.map_or("full", |(p, _)| p),
        "budget": sources.sampling.map_or(1.0, |(_, b)| b),
        "reviews": {
            "trips": fleet.trips,
            "reviewed_trips": reviewed_trips,
            "reviewed_share": share(reviewed_trips, fleet.trips),
            "critical_found": found,
            "critical_estimated": estimate,
            "critical_found_share": (estimate > 0.0).then(|| found as f64 / estimate),
            "uniform_expected_found": uniform_expected,
            "lift_over_uniform": uniform_expected.filter(|u| *u > 0.0).map(|u| found as f64 / u),
        },
        "by_vehicle_model": strata,
        "by_stratum": by_stratum,
        "strata_run_id": sources.model_run.map(|run| run.run_id),
        "period_days": super::PERIOD_DAYS,
        "periods": periods,
    })
}

/// Rates by road type x weather x night from the latest snapshot, or why there are none.
fn stratum_section(data: &Value) -> String {
    let strata = html::rows(data, "/by_stratum");
    let mut html = String::from("<h2>By stratum: road type × weather × night</h2>");
    if strata.is_empty() {
        html += r#"<p class="note">No snapshot yet: the nightly refit writes one (<code>[refit] schedule_utc</code>).</p>"#;
        return html;
    }
    html += &format!(
        r#"<p class="note">From the trips of refit run {} (exact Poisson 95% intervals){}.</p>"#,
        num(data, "/strata_run_id", 0),
        if data["policy"] == "full" {
            ""
        } else {
            "; under a review budget only reviewed trips' critical events are counted here, so rates are a lower bound"
        }
    );
    let label = |s: &Value| {
        format!(
            "{} {} {}",
            s["road_type"].as_str().unwrap_or("?").to_lowercase(),
            s["weather"].as_str().unwrap_or("?").to_lowercase(),
            if s["night"] == true { "night" } else { "day" }
        )
    };
    let mut chart = Chart::new(
        "rates-by-stratum",
        "Critical events per 1000 h by stratum, 95% interval",
        "stratum",
        "per 1000 h",
    )
    .categories(strata.iter().map(label).collect());
    chart.intervals(
        "rate",
        PALETTE[3],
        html::interval_points(
            strata,
            html::X::Position,
            "/critical/rate_per_1000h",
            "/critical/rate_per_1000h_ci95/0",
            "/critical/rate_per_1000h_ci95/1",
        ),
    );
    html += &chart.render();
    let rows: Vec<Vec<String>> = strata
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let at = |f: &str| format!("/by_stratum/{i}/{f}");
            vec![
                format!("{}. {}", i + 1, html::escape(&label(s))),
                num(data, &at("trips"), 0),
                num(data, &at("exposure_hours"), 1),
                num(data, &at("critical/estimate"), 0),
                interval(
                    data,
                    &at("critical/rate_per_1000h"),
                    &at("critical/rate_per_1000h_ci95/0"),
                    &at("critical/rate_per_1000h_ci95/1"),
                    3,
                ),
            ]
        })
        .collect();
    html += &html::table(
        "by-stratum",
        &[
            "stratum",
            "trips",
            "exposure (h)",
            "critical events",
            "per 1000 h [95%]",
        ],
        &rows,
    );
    html
}

pub fn page(data: &Value) -> String {
    let mut body = String::from(r#"<div class="kpis">"#);
    body += &kpi(
        "Policy",
        &text(data, "/policy"),
        &format!("budget {} of trips", num(data, "/budget", 3)),
    );
    body += &kpi(
        "Review budget spent",
        &num(data, "/reviews/reviewed_share", 3),
        &format!(
            "{} of {} trips reviewed",
            num(data, "/reviews/reviewed_trips", 0),
            num(data, "/reviews/trips", 0)
        ),
    );
    body += &kpi(
        "Critical events found",
        &num(data, "/reviews/critical_found", 0),
        &format!(
            "of an estimated {} ({} found)",
            num(data, "/reviews/critical_estimated", 1),
            num(data, "/reviews/critical_found_share", 3)
        ),
    );
    body += &kpi(
        "Lift over uniform review",
        &num(data, "/reviews/lift_over_uniform", 2),
        &format!(
            "uniform at the same spend: {} expected",
            num(data, "/reviews/uniform_expected_found", 1)
        ),
    );
    body += "</div>";
    let mut spent = Chart::new(
        "budget-spent",
        "Share of trips reviewed by week, against the budget",
        "week",
        "share reviewed",
    )
    .dates();
    spent.line(
        "reviewed",
        PALETTE[0],
        html::points(data, "/periods", "period_start_ms", "reviewed_share"),
    );
    if let Some(budget) = data["budget"].as_f64() {
        spent.rule("budget", budget);
    }
    let models = html::rows(data, "/by_vehicle_model");
    let mut rates = Chart::new(
        "rates-by-model",
        "Critical events per 1000 h by vehicle model, 95% interval",
        "vehicle model",
        "per 1000 h",
    )
    .categories(
        models
            .iter()
            .map(|m| m["vehicle_model"].as_str().unwrap_or("?").to_string())
            .collect(),
    );
    rates.intervals(
        "rate",
        PALETTE[1],
        html::interval_points(
            models,
            html::X::Position,
            "/critical/rate_per_1000h",
            "/critical/rate_per_1000h_ci95/0",
            "/critical/rate_per_1000h_ci95/1",
        ),
    );
    body += &spent.render();
    body += &stratum_section(data);
    body += "<h2>By vehicle model (live)</h2>";
    body += &rates.render();
    let rows: Vec<Vec<String>> = (0..models.len())
        .map(|i| {
            let at = |f: &str| format!("/by_vehicle_model/{i}/{f}");
            vec![
                text(data, &at("vehicle_model")),
                num(data, &at("trips"), 0),
                num(data, &at("exposure_hours"), 0),
                num(data, &at("reviewed_trips"), 0),
                num(data, &at("critical/estimate"), 1),
                interval(
                    data,
                    &at("critical/rate_per_1000h"),
                    &at("critical/rate_per_1000h_ci95/0"),
                    &at("critical/rate_per_1000h_ci95/1"),
                    3,
                ),
                num(data, &at("disengagements_per_1000h"), 2),
            ]
        })
        .collect();
    body += &html::table(
        "by-vehicle-model",
        &[
            "vehicle model",
            "trips",
            "exposure (h)",
            "reviewed trips",
            "critical (est.)",
            "critical per 1000 h [95%]",
            "disengagements per 1000 h",
        ],
        &rows,
    );
    html::page_with(
        data,
        "/rare-events",
        "Rare event detection",
        "/api/rare-events",
        &body,
    )
}
