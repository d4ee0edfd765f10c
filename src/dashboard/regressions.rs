//! Page 2, regression analysis: the episodes the alerts describe, and for one episode the rate
//! before and after with credible intervals, the baseline and opening threshold in force, and
//! bin by bin the events against the fleet's prediction and P(regression) (replayed from the
//! stored bins as the live series was fed).

use std::collections::BTreeMap;

use serde::Serialize;

use super::html::{self, escape, num};
use super::links::{self, percent_encode};
use super::svg::{Chart, PALETTE};
use super::{Coverage, Sources};
use crate::detect::hazard_ratio::GammaRate;
use crate::engine::BinStats;
use crate::engine::detection::{self, FleetSums, Rules};
use crate::model::{AlertStatus, HazardClass, KeyKind, RegressionAlert};

/// One episode: the alerts of one key, class and onset, oldest first.
pub struct EpisodeAlerts<'a> {
    pub id: String,
    pub alerts: Vec<&'a RegressionAlert>,
}

impl EpisodeAlerts<'_> {
    pub fn latest(&self) -> &RegressionAlert {
        self.alerts.last().expect("an episode has an alert")
    }

    pub fn is_open(&self) -> bool {
        self.latest().status != AlertStatus::Resolved
    }
}

/// The episode an alert belongs to: its id without the status part.
pub fn episode_id(alert: &RegressionAlert) -> &str {
    alert
        .alert_id
        .rsplit_once('/')
        .map_or(alert.alert_id.as_str(), |(episode, _)| episode)
}

/// Episodes, most recently opened first.
pub fn episodes(alerts: &[RegressionAlert]) -> Vec<EpisodeAlerts<'_>> {
    let mut by_id: std::collections::BTreeMap<&str, Vec<&RegressionAlert>> = Default::default();
    for alert in alerts {
        by_id.entry(episode_id(alert)).or_default().push(alert);
    }
    let mut episodes: Vec<EpisodeAlerts<'_>> = by_id
        .into_iter()
        .map(|(id, mut alerts)| {
            alerts.sort_by_key(|a| (a.detected_at, status_order(a.status)));
            EpisodeAlerts {
                id: id.to_string(),
                alerts,
            }
        })
        .collect();
    episodes.sort_by(|a, b| {
        b.alerts[0]
            .detected_at
            .cmp(&a.alerts[0].detected_at)
            .then(a.id.cmp(&b.id))
    });
    episodes
}

fn status_order(status: AlertStatus) -> u8 {
    match status {
        AlertStatus::Opened => 0,
        AlertStatus::Updated => 1,
        AlertStatus::Resolved => 2,
    }
}

/// One episode as the pages list it (a row of `/api/regressions`).
#[derive(Debug, Clone, Serialize)]
pub struct EpisodeRow {
    pub episode_id: String,
    pub key_kind: &'static str,
    pub key: String,
    pub hazard_class: &'static str,
    pub status: &'static str,
    pub open: bool,
    pub onset_ms: i64,
    pub opened_at_ms: i64,
    pub resolved_at_ms: Option<i64>,
    pub days_to_detection: f64,
    pub updates: usize,
    pub p_regression: f64,
    pub hr_median: Option<f64>,
    pub hr_low: Option<f64>,
    pub hr_high: Option<f64>,
}

/// The fields of a hazard ratio and its 95% CrI, as rows name them.
pub const HR_FIELDS: [&str; 3] = ["hr_median", "hr_low", "hr_high"];

impl EpisodeRow {
    pub fn of(episode: &EpisodeAlerts<'_>) -> EpisodeRow {
        let first = episode.alerts[0];
        let latest = episode.latest();
        let resolved = (latest.status == AlertStatus::Resolved).then_some(latest.detected_at);
        EpisodeRow {
            episode_id: episode.id.clone(),
            key_kind: first.key_kind.name(),
            key: first.key.clone(),
            hazard_class: first.hazard_class.name(),
            status: latest.status.name(),
            open: episode.is_open(),
            onset_ms: latest.onset_estimate,
            opened_at_ms: first.detected_at,
            resolved_at_ms: resolved,
            days_to_detection: first.time_to_detection_days(),
            updates: episode
                .alerts
                .iter()
                .filter(|a| a.status == AlertStatus::Updated)
                .count(),
            p_regression: latest.p_regression,
            hr_median: finite(latest.hr_median),
            hr_low: finite(latest.hr_low),
            hr_high: finite(latest.hr_high),
        }
    }

    /// `label` linked to the episode's page.
    pub fn link(&self, label: &str) -> String {
        links::episode_link(&self.episode_id, label)
    }

    /// `label` linked to the page of the episode's key.
    pub fn key_link(&self, label: &str) -> String {
        links::key_link(self.key_kind, &self.key, label)
    }

    /// The hazard ratio with its interval, for the row at `at` (`/episodes/3`).
    pub fn hr_html(&self, at: &str) -> String {
        html::interval_at(
            [self.hr_median, self.hr_low, self.hr_high],
            at,
            HR_FIELDS,
            2,
        )
    }
}

fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

/// The regression page's data (`/api/regressions`).
#[derive(Debug, Clone, Serialize)]
pub struct Regressions {
    pub episodes: Vec<EpisodeRow>,
    pub open: usize,
    pub detection: Option<Rules>,
}

pub fn data(alerts: &[RegressionAlert], rules: Option<Rules>) -> Regressions {
    let episodes = episodes(alerts);
    Regressions {
        episodes: episodes.iter().map(EpisodeRow::of).collect(),
        open: episodes.iter().filter(|e| e.is_open()).count(),
        detection: rules,
    }
}

/// One episode's page data (`/api/regressions/episode?id=`).
#[derive(Debug, Clone, Serialize)]
pub struct EpisodeDetail {
    pub episode: EpisodeRow,
    pub alerts: Vec<AlertRow>,
    pub baseline: BaselineInUse,
    /// The unit of the rates: per 1000 h (a vehicle) or per expected event (a cohort).
    pub rate_unit: &'static str,
    pub p_open: Option<f64>,
    pub bin_width_ms: i64,
    pub before: SideRate,
    pub after: SideRate,
    pub history_complete: bool,
    pub history: Vec<HistoryRow>,
}

/// One alert of an episode.
#[derive(Debug, Clone, Serialize)]
pub struct AlertRow {
    pub alert_id: String,
    pub status: &'static str,
    pub detected_at_ms: i64,
    pub p_regression: f64,
    pub hr_median: Option<f64>,
    pub hr_low: Option<f64>,
    pub hr_high: Option<f64>,
}

/// The baseline a key's series compares with, and where its spread came from.
#[derive(Debug, Clone, Serialize)]
pub struct BaselineInUse {
    pub shape: f64,
    pub rate: f64,
    pub source: String,
}

/// The rate before or after an episode's onset, with its 95% CrI.
#[derive(Debug, Clone, Serialize)]
pub struct SideRate {
    pub events: i64,
    pub exposure: f64,
    pub rate: Option<f64>,
    pub rate_ci95: [Option<f64>; 2],
}

/// One episode in detail, `None` if no alert has this episode id.
pub fn episode_data(sources: &Sources<'_>, id: &str) -> Option<EpisodeDetail> {
    let episodes = episodes(sources.alerts);
    let episode = episodes.into_iter().find(|e| e.id == id)?;
    let latest = episode.latest();
    let settings = sources.settings;
    let KeyHistory {
        series,
        replayed,
        baseline,
        bins,
        complete: history_complete,
    } = key_history(sources, latest.key_kind, &latest.key, latest.hazard_class);
    // Rates in the key's exposure unit: per 1000 risk-adjusted (critical) or autonomous
    // (disengagement) hours for a vehicle; per expected event for a cohort.
    let (scale, unit) = match latest.key_kind {
        KeyKind::Vehicle => (1000.0, "per 1000 h"),
        KeyKind::Cohort => (1.0, "per expected event"),
    };
    let base = series
        .as_ref()
        .map_or(baseline, |s| s.detector.posterior_baseline(baseline));
    let rate = |g: GammaRate, events: i64, exposure: f64| {
        let scaled = |v: Option<f64>| v.map(|v| v * scale);
        SideRate {
            events,
            exposure,
            rate: scaled(Some(g.mean())),
            rate_ci95: [scaled(g.quantile(0.025)), scaled(g.quantile(0.975))],
        }
    };
    let before = base.rate();
    let after = base.after_onset(latest.events_after as u64, latest.exposure_after);
    let p_open = series
        .as_ref()
        .and_then(|s| s.last.as_ref())
        .map(|l| l.p_open);
    Some(EpisodeDetail {
        episode: EpisodeRow::of(&episode),
        alerts: episode
            .alerts
            .iter()
            .map(|a| AlertRow {
                alert_id: a.alert_id.clone(),
                status: a.status.name(),
                detected_at_ms: a.detected_at,
                p_regression: a.p_regression,
                hr_median: finite(a.hr_median),
                hr_low: finite(a.hr_low),
                hr_high: finite(a.hr_high),
            })
            .collect(),
        baseline: BaselineInUse {
            shape: base.shape,
            rate: base.rate,
            source: latest.prior_source.clone(),
        },
        rate_unit: unit,
        p_open,
        bin_width_ms: settings.bin_width_ms,
        before: rate(before, latest.events_before, latest.exposure_before),
        after: rate(after, latest.events_after, latest.exposure_after),
        history_complete,
        history: history_rows(&replayed, &bins, history_complete),
    })
}

/// A key's live series for one class, and its conclusions bin by bin replayed from its bins
/// (as the live series was fed), with the baseline and the bins' counts against the fleet's
/// prediction.
pub struct KeyHistory {
    pub series: Option<detection::Series>,
    pub replayed: Vec<detection::LastBin>,
    pub baseline: crate::detect::fleet_relative::Baseline,
    /// Bin start -> (events, fleet-predicted events).
    pub bins: BTreeMap<i64, (u64, f64)>,
    /// False where bins were retired: then `replayed` is empty and `bins` are those kept.
    pub complete: bool,
}

pub fn key_history(
    sources: &Sources<'_>,
    kind: KeyKind,
    key: &str,
    class: HazardClass,
) -> KeyHistory {
    let settings = sources.settings;
    // Where the partition has retired bins (README "Retention"), a replay from the bins kept
    // would not be what the live series saw: the history then shows counts only, and the
    // baseline is the live fleet's.
    let mut history_complete = true;
    let (series, replayed, baseline, bins) = match kind {
        KeyKind::Vehicle => match sources.vehicles.get(key) {
            Some(v) => {
                let partition = sources.vehicles.partition(v.partition);
                let series = v.series_of(class).cloned();
                let through = series.as_ref().map_or(i64::MIN, |s| s.next_bin_ms);
                // Complete when no bin was retired on the partition and none of its vehicles
                // has left memory: then its bins in memory are all it ever had.
                let view = sources.fleet.get(&v.partition);
                let live = view.map(|view| &view.fleet);
                history_complete = view.is_none_or(|view| view.departed == 0)
                    && !sources
                        .vehicles
                        .any(|o| o.partition == v.partition && o.retired != BinStats::default());
                let (fleet, replayed) = match live {
                    Some(live) if !history_complete => {
                        (settings.vehicle_baseline(class, live), Vec::new())
                    }
                    _ => (
                        settings
                            .vehicle_baseline(class, &FleetSums::of(settings, &partition, through)),
                        detection::replay_vehicle(settings, class, &partition, &v.bins, through),
                    ),
                };
                // The bins the live series has been fed (the open ones have no conclusion yet).
                let bins: BTreeMap<i64, (u64, f64)> = v
                    .bins
                    .range(..through)
                    .map(|(b, st)| {
                        (
                            *b,
                            (
                                detection::stats_of(settings, Some(st), class).0,
                                st.expected(class),
                            ),
                        )
                    })
                    .collect();
                (series, replayed, fleet, bins)
            }
            None => (
                None,
                Vec::new(),
                settings.cohort_baseline(),
                BTreeMap::new(),
            ),
        },
        KeyKind::Cohort => {
            let series = sources.cohorts.get(key).map(|s| s[class].clone());
            let through = series.as_ref().map_or(i64::MIN, |s| s.next_bin_ms);
            let history = detection::cohort_history(settings, &sources.vehicles, key, through);
            let replayed = history.as_ref().map_or_else(Vec::new, |h| {
                detection::replay_cohort(settings, class, h, through)
            });
            let bins = history.map_or_else(BTreeMap::new, |(_, bins)| {
                bins.iter()
                    .map(|(b, st)| (*b, detection::cohort_stats_of(settings, Some(st), class)))
                    .collect()
            });
            (series, replayed, settings.cohort_baseline(), bins)
        }
    };
    KeyHistory {
        series,
        replayed,
        baseline,
        bins,
        complete: history_complete,
    }
}

/// One bin of a key's history: its count against the fleet's prediction, and where replayed,
/// the series' conclusions after it.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryRow {
    pub bin_start_ms: i64,
    pub events: u64,
    pub expected: f64,
    pub events_cumulative: u64,
    pub expected_cumulative: f64,
    pub p_regression: Option<f64>,
    pub p_open: Option<f64>,
    pub onset_bins: Option<u32>,
    pub hr_median: Option<f64>,
}

/// The episode's bins: counts against the fleet's prediction, and where the history is complete
/// the replayed conclusions; else (bins retired) the bins kept, with counts only.
pub fn history_rows(
    replayed: &[detection::LastBin],
    bins: &BTreeMap<i64, (u64, f64)>,
    complete: bool,
) -> Vec<HistoryRow> {
    let conclusions: BTreeMap<i64, &detection::LastBin> =
        replayed.iter().map(|b| (b.bin_start_ms, b)).collect();
    let starts: Vec<i64> = if complete {
        replayed.iter().map(|b| b.bin_start_ms).collect()
    } else {
        bins.keys().copied().collect()
    };
    let mut total = (0u64, 0.0f64);
    starts
        .into_iter()
        .map(|start| {
            let (events, expected) = bins.get(&start).copied().unwrap_or((0, 0.0));
            total.0 += events;
            total.1 += expected;
            let b = conclusions.get(&start);
            HistoryRow {
                bin_start_ms: start,
                events,
                expected,
                events_cumulative: total.0,
                expected_cumulative: total.1,
                p_regression: b.map(|b| b.p_regression),
                p_open: b.map(|b| b.p_open),
                onset_bins: b.map(|b| b.onset_bins),
                hr_median: b.and_then(|b| b.hazard_ratio.as_ref().map(|h| h.median)),
            }
        })
        .collect()
}

pub fn page(data: &Regressions, coverage: &Coverage) -> String {
    let episodes = &data.episodes;
    let mut body = format!(
        "<p>{} episodes, {} open.</p>{}",
        episodes.len(),
        num(data.open, "/open", 0),
        html::rule_line(data.detection.as_ref(), "/detection")
    );
    let mut chart = Chart::new(
        "episode-hazard-ratios",
        "Hazard ratio at the latest alert of each episode, 95% CrI",
        "episode (newest first)",
        "hazard ratio",
    );
    chart.intervals(
        "HR",
        PALETTE[1],
        html::interval_points(episodes, html::position, |e| {
            [e.hr_median, e.hr_low, e.hr_high]
        }),
    );
    chart.rule("HR 1.5", 1.5);
    body += &chart.render();
    let rows: Vec<Vec<String>> = episodes
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let at = format!("/episodes/{i}");
            vec![
                e.link(&escape(&e.key)),
                e.key_link(&escape(e.key_kind)),
                escape(e.hazard_class),
                escape(e.status),
                html::date(Some(e.onset_ms)),
                html::date(Some(e.opened_at_ms)),
                num(e.days_to_detection, &format!("{at}/days_to_detection"), 1),
                e.hr_html(&at),
                num(e.p_regression, &format!("{at}/p_regression"), 3),
            ]
        })
        .collect();
    body += &html::table(
        "episodes",
        &[
            "key",
            "kind",
            "class",
            "status",
            "onset (est.)",
            "opened",
            "days to alert",
            "HR [95% CrI]",
            "P(regression)",
        ],
        &rows,
    );
    html::page_with(
        coverage,
        "/regressions",
        "Regression analysis",
        "/api/regressions",
        &body,
    )
}

pub fn episode_page(data: &EpisodeDetail, coverage: &Coverage, id: &str) -> String {
    let e = &data.episode;
    let mut body = format!(
        r#"<p>{} <a href="{}">{}</a> · class {} · status {} · onset (est.) {} · opened {}</p>"#,
        escape(e.key_kind),
        escape(&links::key_href(e.key_kind, &e.key)),
        escape(&e.key),
        escape(e.hazard_class),
        escape(e.status),
        html::date(Some(e.onset_ms)),
        html::date(Some(e.opened_at_ms)),
    );
    let sides = [("before", &data.before), ("after", &data.after)];
    body += &html::table(
        "rates",
        &["", "events", "exposure", "rate [95% CrI]"],
        &sides
            .iter()
            .map(|(side, r)| {
                vec![
                    side.to_string(),
                    num(r.events, &format!("/{side}/events"), 0),
                    num(r.exposure, &format!("/{side}/exposure"), 2),
                    html::interval_at(
                        [r.rate, r.rate_ci95[0], r.rate_ci95[1]],
                        &format!("/{side}"),
                        ["rate", "rate_ci95/0", "rate_ci95/1"],
                        3,
                    ),
                ]
            })
            .collect::<Vec<_>>(),
    );
    body += &format!(
        "<p>Rates {} (exposure: risk-adjusted hours for critical events, autonomous hours for          disengagements; a cohort's is its members' expected count). Hazard ratio at the latest          alert: {} · baseline Gamma({}, {}) from the {} · an episode opens at P(regression) &ge; {},          the threshold calibrated for the false-alarm budget.</p>",
        escape(data.rate_unit),
        e.hr_html("/episode"),
        num(data.baseline.shape, "/baseline/shape", 2),
        num(data.baseline.rate, "/baseline/rate", 2),
        escape(&data.baseline.source),
        num(data.p_open, "/p_open", 6),
    );
    let mut rates = Chart::new(
        "rates-before-after",
        "Rate before and after onset, 95% CrI",
        "before (1) · after (2)",
        "rate",
    );
    rates.intervals(
        "rate",
        PALETTE[0],
        html::interval_points(&sides, html::position, |(_, r)| {
            [r.rate, r.rate_ci95[0], r.rate_ci95[1]]
        }),
    );
    let history = &data.history;
    let p = p_regression_chart(history, "p-regression", "P(regression) after each bin");
    let events = events_chart(
        history,
        data.bin_width_ms,
        "events-per-bin",
        "Events of the class per bin, and what the fleet predicted",
        "expected",
    );
    let mut cumulative = Chart::new(
        "cumulative-against-expected",
        "Events so far against what the fleet predicted",
        "bin",
        "events",
    )
    .dates();
    cumulative.line(
        "seen",
        PALETTE[0],
        html::points(history, bin_start, |h| Some(h.events_cumulative as f64)),
    );
    cumulative.line(
        "predicted",
        PALETTE[2],
        html::points(history, bin_start, |h| Some(h.expected_cumulative)),
    );
    body += &rates.render();
    if !data.history_complete {
        body += "<p>Bins older than <code>retention.bin_days</code> have been retired on this \
            partition: the history below shows the bins kept, with their counts; P(regression) \
            is not replayed bin by bin from them (the live series and the alerts are exact).</p>";
    }
    body += &p.render();
    body += &events.render();
    body += &cumulative.render();
    let alert_rows: Vec<Vec<String>> = data
        .alerts
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let at = format!("/alerts/{i}");
            vec![
                escape(&a.alert_id),
                html::date(Some(a.detected_at_ms)),
                num(a.p_regression, &format!("{at}/p_regression"), 3),
                html::interval_at([a.hr_median, a.hr_low, a.hr_high], &at, HR_FIELDS, 2),
            ]
        })
        .collect();
    body += &html::table(
        "alerts",
        &["alert", "at", "P(regression)", "HR [95% CrI]"],
        &alert_rows,
    );
    let api = format!("/api/regressions/episode?id={}", percent_encode(id));
    html::page_with(coverage, "/regressions", "Regression episode", &api, &body)
}

fn bin_start(row: &HistoryRow) -> Option<f64> {
    Some(row.bin_start_ms as f64)
}

/// P(regression) bin by bin.
pub(super) fn p_regression_chart(history: &[HistoryRow], id: &str, title: &str) -> Chart {
    let mut chart = Chart::new(id, title, "bin", "P(regression)").dates();
    chart.line(
        "P(regression)",
        PALETTE[1],
        html::points(history, bin_start, |h| h.p_regression),
    );
    chart
}

/// A class's events per bin as bars, and the fleet's prediction as a line named `predicted`.
pub(super) fn events_chart(
    history: &[HistoryRow],
    bin_width_ms: i64,
    id: &str,
    title: &str,
    predicted: &str,
) -> Chart {
    let mut chart = Chart::new(id, title, "bin", "events").dates();
    chart.bars(
        "events",
        PALETTE[3],
        html::points(history, bin_start, |h| Some(h.events as f64)),
        bin_width_ms as f64 * 0.8,
    );
    chart.line(
        predicted,
        PALETTE[2],
        html::points(history, bin_start, |h| Some(h.expected)),
    );
    chart
}
