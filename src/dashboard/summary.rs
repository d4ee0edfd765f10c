//! Page 1, the executive summary: exposure, the critical-event rate (Horvitz-Thompson under a
//! review budget), open regressions, time to detection, and sensitivity where the truth is known.

use serde::Serialize;

use super::html::{self, interval, kpi, num};
use super::regressions::EpisodeRow;
use super::svg::{Chart, PALETTE};
use super::{Coverage, Rate, Sources, critical_estimate, fleet_periods, regressions};
use crate::engine::BinStats;
use crate::engine::detection::Rules;
use crate::evaluate::evaluate;
use crate::model::AlertStatus;

/// The summary page's data (`/api/summary`).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub fleet: Fleet,
    pub regressions: RegressionCounts,
    /// Detection scored against the truth, where it is known (simulated fleets).
    pub ground_truth: Option<Score>,
    pub detection: Rules,
    pub open_episodes: Vec<EpisodeRow>,
    pub period_days: i64,
    pub periods: Vec<Period>,
}

/// Fleet totals and the critical-event rate ([`Fleet::of`]).
#[derive(Debug, Clone, Serialize)]
pub struct Fleet {
    pub vehicles: usize,
    pub totals: Totals,
    /// The review budget, where there is one.
    pub sampling: Option<Sampling>,
    pub critical: FleetRate,
}

/// The fleet's critical-event rate and how it was estimated.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct FleetRate {
    #[serde(flatten)]
    pub rate: Rate,
    /// `horvitz_thompson` under a review budget, else `observed`.
    pub method: &'static str,
}

/// What the review budget has reviewed.
#[derive(Debug, Clone, Serialize)]
pub struct Sampling {
    pub policy: String,
    pub budget: f64,
    pub reviewed_trips: u64,
    pub reviewed_share: Option<f64>,
    pub reviewed_critical: u64,
}

/// A bin's (or a sum's) counts and exposure.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Totals {
    pub trips: u64,
    pub exposure_hours: f64,
    pub exposure_ms: u64,
    pub safety_events: u64,
    pub critical: u64,
    pub disengagements: u64,
    pub mode_transitions: u64,
}

impl Totals {
    pub fn of(stats: &BinStats) -> Totals {
        Totals {
            trips: stats.trips,
            exposure_hours: stats.exposure_hours(),
            exposure_ms: stats.exposure_ms,
            safety_events: stats.safety_events,
            critical: stats.critical,
            disengagements: stats.disengagements,
            mode_transitions: stats.mode_transitions,
        }
    }
}

/// Episodes and alerts so far.
#[derive(Debug, Clone, Serialize)]
pub struct RegressionCounts {
    pub episodes: usize,
    pub open: usize,
    pub alerts: usize,
    pub mean_days_from_estimated_onset_to_alert: Option<f64>,
}

/// Detection against the truth.
#[derive(Debug, Clone, Serialize)]
pub struct Score {
    pub horizon_days: f64,
    pub regressions: usize,
    pub detected: usize,
    pub sensitivity: Option<f64>,
    pub sensitivity_ci95: [Option<f64>; 2],
    pub false_alarms: usize,
    pub false_alarms_per_1000_vehicle_months: Option<f64>,
    pub mttd_days_mean: Option<f64>,
    pub mttd_days_mean_ci95: [Option<f64>; 2],
}

/// One period of the trend charts.
#[derive(Debug, Clone, Serialize)]
pub struct Period {
    pub period_start_ms: i64,
    pub exposure_hours: f64,
    pub trips: u64,
    pub critical: Rate,
}

impl Fleet {
    /// Fleet totals and the critical-event rate per 1000 exposure hours with a 95% interval.
    /// Under a review budget, critical events are known only for reviewed trips: the fleet's
    /// total is their Horvitz-Thompson estimate (each reviewed event weighted 1/pi) with its
    /// variance, and the interval is normal on it. Exposure is known for every trip.
    pub fn of(totals: &BinStats, vehicles: usize, sampling: Option<(&str, f64)>) -> Fleet {
        let (estimate, variance) = critical_estimate(totals, sampling.is_some());
        Fleet {
            vehicles,
            totals: Totals::of(totals),
            sampling: sampling.map(|(policy, budget)| Sampling {
                policy: policy.to_string(),
                budget,
                reviewed_trips: totals.reviewed_trips,
                reviewed_share: (totals.trips > 0)
                    .then(|| totals.reviewed_trips as f64 / totals.trips as f64),
                reviewed_critical: totals.reviewed_critical,
            }),
            critical: FleetRate {
                rate: Rate::of(estimate, variance, totals.exposure_hours()),
                method: if sampling.is_some() {
                    "horvitz_thompson"
                } else {
                    "observed"
                },
            },
        }
    }
}

/// Open episodes the summary lists (newest first), each linked to its key's page.
const OPEN_EPISODES_SHOWN: usize = 10;

fn open_episodes_html(data: &Summary) -> String {
    let rows: Vec<Vec<String>> = data
        .open_episodes
        .iter()
        .enumerate()
        .map(|(i, e)| {
            vec![
                e.key_link(&html::escape(&e.key)),
                html::escape(e.hazard_class),
                e.link(&html::date(Some(e.opened_at_ms))),
                e.hr_html(&format!("/open_episodes/{i}")),
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

pub fn data(sources: &Sources<'_>) -> Summary {
    let periods = fleet_periods(&sources.vehicles);
    let mut totals = BinStats::default();
    for stats in periods.values() {
        totals.add(stats);
    }
    let sampled = sources.sampling.is_some();
    let weekly: Vec<Period> = periods
        .iter()
        .map(|(start, stats)| {
            let (estimate, variance) = critical_estimate(stats, sampled);
            Period {
                period_start_ms: *start,
                exposure_hours: stats.exposure_hours(),
                trips: stats.trips,
                critical: Rate::of(estimate, variance, stats.exposure_hours()),
            }
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
        Score {
            horizon_days: e.horizon_days,
            regressions: e.regressions,
            detected: e.detected,
            sensitivity: e.sensitivity,
            sensitivity_ci95: e.sensitivity_ci,
            false_alarms: e.false_alarms,
            false_alarms_per_1000_vehicle_months: e.false_alarms_per_1000_vehicle_months,
            mttd_days_mean: e.mttd_days_mean,
            mttd_days_mean_ci95: e.mttd_days_mean_ci,
        }
    });
    Summary {
        fleet: Fleet::of(&totals, sources.vehicles.len(), sources.sampling),
        regressions: RegressionCounts {
            episodes: episodes.len(),
            open: episodes.iter().filter(|e| e.is_open()).count(),
            alerts: sources.alerts.len(),
            mean_days_from_estimated_onset_to_alert: mean(&opened),
        },
        ground_truth,
        detection: sources.settings.rules(),
        open_episodes: episodes
            .iter()
            .filter(|e| e.is_open())
            .take(OPEN_EPISODES_SHOWN)
            .map(EpisodeRow::of)
            .collect(),
        period_days: super::PERIOD_DAYS,
        periods: weekly,
    }
}

pub fn page(data: &Summary, coverage: &Coverage) -> String {
    let mut body = kpis_html(data);
    let periods = &data.periods;
    let start = |p: &Period| Some(p.period_start_ms as f64);
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
            .filter_map(|p| {
                let [low, high] = p.critical.rate_per_1000h_ci95;
                Some((p.period_start_ms as f64, low?, high?))
            })
            .collect(),
    );
    rate.line(
        "rate",
        PALETTE[0],
        html::points(periods, start, |p| p.critical.rate_per_1000h),
    );
    let mut exposure = Chart::new("exposure", "Exposure hours by week", "week", "hours").dates();
    exposure.bars(
        "exposure",
        PALETTE[2],
        html::points(periods, start, |p| Some(p.exposure_hours)),
        (super::PERIOD_DAYS * 86_400_000) as f64 * 0.8,
    );
    body += &format!(
        "<p class=\"note\">Detection: each vehicle and cohort against what the fleet predicts \
         for it; an episode opens when P(HR &gt; {}) reaches the threshold calibrated for at \
         most {} false alarms per 1000 vehicle-months.</p>",
        num(data.detection.threshold_hr, "/detection/threshold_hr", 1),
        num(
            data.detection.false_alarms_per_1000_vehicle_months,
            "/detection/false_alarms_per_1000_vehicle_months",
            2
        ),
    );
    body += &open_episodes_html(data);
    body += "<h2>Trends</h2>";
    body += &rate.render();
    body += &exposure.render();
    html::page_with(coverage, "/", "Executive summary", "/api/summary", &body)
}

/// The key figures: exposure, the critical rate, regressions, and detection against the truth.
fn kpis_html(data: &Summary) -> String {
    let fleet = &data.fleet;
    let method = if fleet.sampling.is_some() {
        "Horvitz-Thompson estimate from reviewed trips, 95% interval"
    } else {
        "every trip reviewed; exact Poisson 95% interval"
    };
    let critical = &fleet.critical.rate;
    let counts = &data.regressions;
    let mut body = String::from(r#"<div class="kpis">"#);
    body += &kpi(
        "Exposure (hours)",
        &num(
            fleet.totals.exposure_hours,
            "/fleet/totals/exposure_hours",
            0,
        ),
        &format!(
            "{} trips, {} vehicles",
            num(fleet.totals.trips, "/fleet/totals/trips", 0),
            num(fleet.vehicles, "/fleet/vehicles", 0)
        ),
    );
    body += &kpi(
        "Critical events per 1000 h",
        &num(critical.rate_per_1000h, "/fleet/critical/rate_per_1000h", 3),
        &format!(
            "[{}, {}] {method}",
            num(
                critical.rate_per_1000h_ci95[0],
                "/fleet/critical/rate_per_1000h_ci95/0",
                3
            ),
            num(
                critical.rate_per_1000h_ci95[1],
                "/fleet/critical/rate_per_1000h_ci95/1",
                3
            )
        ),
    );
    body += &kpi(
        "Open regressions",
        &num(counts.open, "/regressions/open", 0),
        &format!(
            "{} episodes, {} alerts",
            num(counts.episodes, "/regressions/episodes", 0),
            num(counts.alerts, "/regressions/alerts", 0)
        ),
    );
    body += &kpi(
        "Days from estimated onset to alert",
        &num(
            counts.mean_days_from_estimated_onset_to_alert,
            "/regressions/mean_days_from_estimated_onset_to_alert",
            1,
        ),
        "mean over opened alerts",
    );
    match &data.ground_truth {
        Some(truth) => body += &truth_kpis_html(truth),
        None => {
            body += &kpi(
                "Detection sensitivity",
                "—",
                "needs ground truth (simulated fleets)",
            )
        }
    }
    body + "</div>"
}

fn truth_kpis_html(truth: &Score) -> String {
    let sensitivity = kpi(
        "Detection sensitivity",
        &num(truth.sensitivity, "/ground_truth/sensitivity", 3),
        &format!(
            "[{}, {}]: {} of {} injected regressions within {} days",
            num(
                truth.sensitivity_ci95[0],
                "/ground_truth/sensitivity_ci95/0",
                3
            ),
            num(
                truth.sensitivity_ci95[1],
                "/ground_truth/sensitivity_ci95/1",
                3
            ),
            num(truth.detected, "/ground_truth/detected", 0),
            num(truth.regressions, "/ground_truth/regressions", 0),
            num(truth.horizon_days, "/ground_truth/horizon_days", 0)
        ),
    );
    let [low, high] = truth.mttd_days_mean_ci95;
    let mttd = kpi(
        "MTTD (days, from true onset)",
        &interval(
            [truth.mttd_days_mean, low, high],
            [
                "/ground_truth/mttd_days_mean",
                "/ground_truth/mttd_days_mean_ci95/0",
                "/ground_truth/mttd_days_mean_ci95/1",
            ],
            1,
        ),
        &format!(
            "false alarms: {} ({} per 1000 vehicle-months)",
            num(truth.false_alarms, "/ground_truth/false_alarms", 0),
            num(
                truth.false_alarms_per_1000_vehicle_months,
                "/ground_truth/false_alarms_per_1000_vehicle_months",
                2
            )
        ),
    );
    sensitivity + &mttd
}
