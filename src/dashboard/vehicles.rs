//! Page 4, vehicle performance: vehicles ranked by the posterior mean of their critical-event
//! hazard per risk-adjusted hour, the fleet's Gamma distribution (the fleet's mean rate over the
//! vehicles held here, the detectors' spread) updated with the vehicle's events and exposure,
//! with 95% credible intervals; searchable by vehicle id.

use serde::Serialize;

use super::html::{self, escape, num};
use super::svg::{Chart, PALETTE};
use super::{Coverage, Sources};
use crate::detect::hazard_ratio::GammaRate;
use crate::engine::detection::{FleetSums, stats_of};
use crate::model::HazardClass;

/// Rows shown when the request does not say.
pub const DEFAULT_LIMIT: usize = 50;

/// One vehicle's critical-event hazard posterior and the data behind it.
struct Ranked {
    vehicle_id: String,
    posterior: GammaRate,
    events: u64,
    exposure_hours: f64,
}

/// The ranking page's data (`/api/vehicle-ranking?q=&limit=`).
#[derive(Debug, Clone, Serialize)]
pub struct Ranking {
    pub hazard_class: &'static str,
    pub query: String,
    pub vehicles: usize,
    pub matching: usize,
    pub limit: usize,
    pub ranking: Vec<RankedRow>,
    pub prior_mean_per_1000h: f64,
}

/// One vehicle of the ranking.
#[derive(Debug, Clone, Serialize)]
pub struct RankedRow {
    pub rank: usize,
    pub vehicle_id: String,
    pub events: u64,
    pub exposure_hours: f64,
    pub hazard_per_1000h: f64,
    pub hazard_per_1000h_ci95: [Option<f64>; 2],
}

impl RankedRow {
    fn hazard(&self) -> [Option<f64>; 3] {
        let [low, high] = self.hazard_per_1000h_ci95;
        [Some(self.hazard_per_1000h), low, high]
    }
}

pub fn data(sources: &Sources<'_>, query: &str, limit: usize) -> Ranking {
    let class = HazardClass::Critical;
    // The fleet as the vehicles held here show it, through their latest bin.
    let mut latest = i64::MIN;
    sources.vehicles.for_each(&mut |_, v| {
        latest = latest.max(v.bins.keys().next_back().copied().unwrap_or(i64::MIN));
    });
    let through = latest.saturating_add(sources.settings.bin_width_ms);
    let fleet = sources.settings.vehicle_baseline(
        class,
        &FleetSums::of(sources.settings, &sources.vehicles, through),
    );
    let mut ranked: Vec<Ranked> = Vec::new();
    sources.vehicles.for_each(&mut |id, v| {
        let (events, exposure_hours) = stats_of(sources.settings, Some(&v.totals()), class);
        ranked.push(Ranked {
            vehicle_id: id.to_string(),
            posterior: GammaRate {
                shape: fleet.shape + events as f64,
                rate: fleet.rate + exposure_hours,
            },
            events,
            exposure_hours,
        });
    });
    ranked.sort_by(|a, b| {
        b.posterior
            .mean()
            .total_cmp(&a.posterior.mean())
            .then(a.vehicle_id.cmp(&b.vehicle_id))
    });
    let needle = query.trim().to_lowercase();
    let matching: Vec<(usize, &Ranked)> = ranked
        .iter()
        .enumerate()
        .filter(|(_, v)| needle.is_empty() || v.vehicle_id.to_lowercase().contains(&needle))
        .collect();
    let per_1000h = |v: Option<f64>| v.map(|v| v * 1000.0);
    let rows = matching
        .iter()
        .take(limit)
        .map(|(rank, v)| RankedRow {
            rank: rank + 1,
            vehicle_id: v.vehicle_id.clone(),
            events: v.events,
            exposure_hours: v.exposure_hours,
            hazard_per_1000h: v.posterior.mean() * 1000.0,
            hazard_per_1000h_ci95: [
                per_1000h(v.posterior.quantile(0.025)),
                per_1000h(v.posterior.quantile(0.975)),
            ],
        })
        .collect();
    Ranking {
        hazard_class: class.name(),
        query: query.to_string(),
        vehicles: ranked.len(),
        matching: matching.len(),
        limit,
        ranking: rows,
        prior_mean_per_1000h: fleet.shape / fleet.rate * 1000.0,
    }
}

pub fn page(data: &Ranking, coverage: &Coverage) -> String {
    let query = data.query.as_str();
    let mut body = format!(
        r#"<form method="get" action="/vehicles"><label>Vehicle id contains <input name="q" value="{}" autocomplete="off"></label> <button type="submit">Search</button></form>"#,
        escape(query)
    );
    body += &format!(
        "<p>{} of {} vehicles match; ranked by the posterior mean critical-event hazard.</p>",
        num(data.matching, "/matching", 0),
        num(data.vehicles, "/vehicles", 0)
    );
    let rows = &data.ranking;
    let mut chart = Chart::new(
        "vehicle-hazards",
        "Posterior critical-event hazard per 1000 risk-adjusted h, 95% CrI",
        "rank",
        "per 1000 h",
    );
    chart.intervals(
        "hazard",
        PALETTE[0],
        html::interval_points(rows, |_, r| Some(r.rank as f64), RankedRow::hazard),
    );
    if data.prior_mean_per_1000h.is_finite() {
        chart.rule("prior mean", data.prior_mean_per_1000h);
    }
    body += &chart.render();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let at = |f: &str| format!("/ranking/{i}/{f}");
            vec![
                num(r.rank, &at("rank"), 0),
                html::link(
                    &super::links::vehicle_href(&r.vehicle_id),
                    &escape(&r.vehicle_id),
                ),
                num(r.events, &at("events"), 0),
                num(r.exposure_hours, &at("exposure_hours"), 1),
                html::interval_at(
                    r.hazard(),
                    &format!("/ranking/{i}"),
                    [
                        "hazard_per_1000h",
                        "hazard_per_1000h_ci95/0",
                        "hazard_per_1000h_ci95/1",
                    ],
                    3,
                ),
            ]
        })
        .collect();
    body += &html::table(
        "ranking",
        &[
            "rank",
            "vehicle",
            "critical events",
            "exposure (h)",
            "hazard per 1000 h [95% CrI]",
        ],
        &cells,
    );
    let api = if query.is_empty() {
        "/api/vehicle-ranking".to_string()
    } else {
        format!(
            "/api/vehicle-ranking?q={}",
            super::links::percent_encode(query)
        )
    };
    html::page_with(coverage, "/vehicles", "Vehicle performance", &api, &body)
}
