//! Page 3, rare event detection: critical-event rates by stratum (road type x weather x night,
//! from the latest snapshot's trips) and by vehicle model (live), the review budget spent week by
//! week, and how well the policy's reviews find critical events (its yield against what uniform
//! review at the same spend would find).

use std::collections::BTreeMap;

use serde::Serialize;

use super::html::{self, kpi, num};
use super::svg::{Chart, PALETTE};
use super::{Coverage, Rate, Sources, critical_estimate, fleet_periods};
use crate::engine::BinStats;

/// The rare-events page's data (`/api/rare-events`).
#[derive(Debug, Clone, Serialize)]
pub struct RareEvents {
    pub policy: String,
    pub budget: f64,
    pub reviews: Reviews,
    pub by_vehicle_model: Vec<ModelRate>,
    pub by_stratum: Vec<StratumRate>,
    /// The refit run whose snapshot the strata are from.
    pub strata_run_id: Option<i64>,
    pub period_days: i64,
    pub periods: Vec<ReviewPeriod>,
}

/// What the reviews found, against uniform review at the same spend.
#[derive(Debug, Clone, Serialize)]
pub struct Reviews {
    pub trips: u64,
    pub reviewed_trips: u64,
    pub reviewed_share: Option<f64>,
    pub critical_found: u64,
    pub critical_estimated: f64,
    pub critical_found_share: Option<f64>,
    pub uniform_expected_found: Option<f64>,
    pub lift_over_uniform: Option<f64>,
}

/// One vehicle model's rates (live).
#[derive(Debug, Clone, Serialize)]
pub struct ModelRate {
    pub vehicle_model: String,
    pub trips: u64,
    pub exposure_hours: f64,
    pub reviewed_trips: u64,
    pub critical: Rate,
    pub disengagements_per_1000h: Option<f64>,
}

/// One stratum's critical rate, from the latest snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct StratumRate {
    pub road_type: String,
    pub weather: String,
    pub night: bool,
    pub trips: u64,
    pub exposure_hours: f64,
    pub critical: Rate,
}

impl StratumRate {
    fn label(&self) -> String {
        format!(
            "{} {} {}",
            self.road_type.to_lowercase(),
            self.weather.to_lowercase(),
            if self.night { "night" } else { "day" }
        )
    }
}

/// One period's review spend.
#[derive(Debug, Clone, Serialize)]
pub struct ReviewPeriod {
    pub period_start_ms: i64,
    pub trips: u64,
    pub reviewed_trips: u64,
    pub reviewed_share: Option<f64>,
}

fn share(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

pub fn data(sources: &Sources<'_>) -> RareEvents {
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
    let models: Vec<ModelRate> = by_model
        .iter()
        .map(|(model, stats)| {
            fleet.add(stats);
            let (estimate, variance) = critical_estimate(stats, sampled);
            ModelRate {
                vehicle_model: model.clone(),
                trips: stats.trips,
                exposure_hours: stats.exposure_hours(),
                reviewed_trips: if sampled {
                    stats.reviewed_trips
                } else {
                    stats.trips
                },
                critical: Rate::of(estimate, variance, stats.exposure_hours()),
                disengagements_per_1000h: (stats.exposure_hours() > 0.0)
                    .then(|| stats.disengagements as f64 / stats.exposure_hours() * 1000.0),
            }
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
    // Uniform review of the same number of trips finds, in expectation, the estimated events
    // times the share of trips reviewed.
    let uniform_expected = share(reviewed_trips, fleet.trips).map(|s| s * estimate);
    let periods = fleet_periods(&sources.vehicles)
        .iter()
        .map(|(start, stats)| {
            let reviewed = if sampled {
                stats.reviewed_trips
            } else {
                stats.trips
            };
            ReviewPeriod {
                period_start_ms: *start,
                trips: stats.trips,
                reviewed_trips: reviewed,
                reviewed_share: share(reviewed, stats.trips),
            }
        })
        .collect();
    let by_stratum = sources
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
            StratumRate {
                road_type: s.road_type.clone(),
                weather: s.weather.clone(),
                night: s.night,
                trips: s.trips,
                exposure_hours: hours,
                critical: Rate::of(s.critical_events as f64, None, hours),
            }
        })
        .collect();
    RareEvents {
        policy: sources.sampling.map_or("full", |(p, _)| p).to_string(),
        budget: sources.sampling.map_or(1.0, |(_, b)| b),
        reviews: Reviews {
            trips: fleet.trips,
            reviewed_trips,
            reviewed_share: share(reviewed_trips, fleet.trips),
            critical_found: found,
            critical_estimated: estimate,
            critical_found_share: (estimate > 0.0).then(|| found as f64 / estimate),
            uniform_expected_found: uniform_expected,
            lift_over_uniform: uniform_expected
                .filter(|u| *u > 0.0)
                .map(|u| found as f64 / u),
        },
        by_vehicle_model: models,
        by_stratum,
        strata_run_id: sources.model_run.map(|run| run.outline.run_id),
        period_days: super::PERIOD_DAYS,
        periods,
    }
}

/// Rates by road type x weather x night from the latest snapshot, or why there are none.
fn stratum_section(data: &RareEvents) -> String {
    let strata = &data.by_stratum;
    let mut html = String::from("<h2>By stratum: road type × weather × night</h2>");
    if strata.is_empty() {
        html += r#"<p class="note">No snapshot yet: the nightly refit writes one (<code>[refit] schedule_utc</code>).</p>"#;
        return html;
    }
    html += &format!(
        r#"<p class="note">From the trips of refit run {} (exact Poisson 95% intervals){}.</p>"#,
        num(data.strata_run_id, "/strata_run_id", 0),
        if data.policy == "full" {
            ""
        } else {
            "; under a review budget only reviewed trips' critical events are counted here, so rates are a lower bound"
        }
    );
    let mut chart = Chart::new(
        "rates-by-stratum",
        "Critical events per 1000 h by stratum, 95% interval",
        "stratum",
        "per 1000 h",
    )
    .categories(strata.iter().map(StratumRate::label).collect());
    chart.intervals(
        "rate",
        PALETTE[3],
        html::interval_points(strata, html::position, |s| s.critical.per_1000h()),
    );
    html += &chart.render();
    let rows: Vec<Vec<String>> = strata
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let at = |f: &str| format!("/by_stratum/{i}/{f}");
            vec![
                format!("{}. {}", i + 1, html::escape(&s.label())),
                num(s.trips, &at("trips"), 0),
                num(s.exposure_hours, &at("exposure_hours"), 1),
                num(s.critical.estimate, &at("critical/estimate"), 0),
                s.critical.html(&at("critical"), 3),
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

fn kpis_html(data: &RareEvents) -> String {
    let reviews = &data.reviews;
    let mut body = String::from(r#"<div class="kpis">"#);
    body += &kpi(
        "Policy",
        &html::escape(&data.policy),
        &format!("budget {} of trips", num(data.budget, "/budget", 3)),
    );
    body += &kpi(
        "Review budget spent",
        &num(reviews.reviewed_share, "/reviews/reviewed_share", 3),
        &format!(
            "{} of {} trips reviewed",
            num(reviews.reviewed_trips, "/reviews/reviewed_trips", 0),
            num(reviews.trips, "/reviews/trips", 0)
        ),
    );
    body += &kpi(
        "Critical events found",
        &num(reviews.critical_found, "/reviews/critical_found", 0),
        &format!(
            "of an estimated {} ({} found)",
            num(reviews.critical_estimated, "/reviews/critical_estimated", 1),
            num(
                reviews.critical_found_share,
                "/reviews/critical_found_share",
                3
            )
        ),
    );
    body += &kpi(
        "Lift over uniform review",
        &num(reviews.lift_over_uniform, "/reviews/lift_over_uniform", 2),
        &format!(
            "uniform at the same spend: {} expected",
            num(
                reviews.uniform_expected_found,
                "/reviews/uniform_expected_found",
                1
            )
        ),
    );
    body + "</div>"
}

pub fn page(data: &RareEvents, coverage: &Coverage) -> String {
    let mut body = kpis_html(data);
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
        html::points(
            &data.periods,
            |p| Some(p.period_start_ms as f64),
            |p| p.reviewed_share,
        ),
    );
    spent.rule("budget", data.budget);
    let models = &data.by_vehicle_model;
    let mut rates = Chart::new(
        "rates-by-model",
        "Critical events per 1000 h by vehicle model, 95% interval",
        "vehicle model",
        "per 1000 h",
    )
    .categories(models.iter().map(|m| m.vehicle_model.clone()).collect());
    rates.intervals(
        "rate",
        PALETTE[1],
        html::interval_points(models, html::position, |m| m.critical.per_1000h()),
    );
    body += &spent.render();
    body += &stratum_section(data);
    body += "<h2>By vehicle model (live)</h2>";
    body += &rates.render();
    let rows: Vec<Vec<String>> = models
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let at = |f: &str| format!("/by_vehicle_model/{i}/{f}");
            vec![
                html::escape(&m.vehicle_model),
                num(m.trips, &at("trips"), 0),
                num(m.exposure_hours, &at("exposure_hours"), 0),
                num(m.reviewed_trips, &at("reviewed_trips"), 0),
                num(m.critical.estimate, &at("critical/estimate"), 1),
                m.critical.html(&at("critical"), 3),
                num(
                    m.disengagements_per_1000h,
                    &at("disengagements_per_1000h"),
                    2,
                ),
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
        coverage,
        "/rare-events",
        "Rare event detection",
        "/api/rare-events",
        &body,
    )
}
