//! Page 2, regression analysis: the episodes the alerts describe, and for one episode the rate
//! before and after with credible intervals, the run-length posterior of its series now, and
//! P(regression) bin by bin (replayed from the stored bins with the series' own prior).

use serde_json::{Value, json};

use super::Sources;
use super::html::{self, escape, interval, num, text};
use super::svg::{Chart, PALETTE};
use crate::detect::hazard_ratio::GammaRate;
use crate::engine::detection::{self, Series};
use crate::model::{AlertStatus, HazardClass, KeyKind, RegressionAlert, utc_date};

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

fn episode_row(episode: &EpisodeAlerts<'_>) -> Value {
    let first = episode.alerts[0];
    let latest = episode.latest();
    let resolved = (latest.status == AlertStatus::Resolved).then_some(latest.detected_at);
    json!({
        "episode_id": episode.id,
        "key_kind": first.key_kind.name(),
        "key": first.key,
        "hazard_class": first.hazard_class.name(),
        "status": latest.status.name(),
        "open": episode.is_open(),
        "onset_ms": latest.onset_estimate,
        "opened_at_ms": first.detected_at,
        "resolved_at_ms": resolved,
        "days_to_detection": first.time_to_detection_days(),
        "updates": episode.alerts.iter().filter(|a| a.status == AlertStatus::Updated).count(),
        "p_regression": latest.p_regression,
        "hr_median": finite(latest.hr_median),
        "hr_low": finite(latest.hr_low),
        "hr_high": finite(latest.hr_high),
    })
}

fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

pub fn data(alerts: &[RegressionAlert]) -> Value {
    let episodes = episodes(alerts);
    json!({
        "episodes": episodes.iter().map(episode_row).collect::<Vec<_>>(),
        "open": episodes.iter().filter(|e| e.is_open()).count(),
    })
}

/// One episode in detail, `None` if no alert has this episode id.
pub fn episode_data(sources: &Sources<'_>, id: &str) -> Option<Value> {
    let episodes = episodes(sources.alerts);
    let episode = episodes.into_iter().find(|e| e.id == id)?;
    let latest = episode.latest();
    let class_index = HazardClass::ALL
        .iter()
        .position(|c| *c == latest.hazard_class)
        .unwrap_or(0);
    // The live series of the key, the bins it was fed and where it started.
    let (series, history): (Option<Series>, _) = match latest.key_kind {
        KeyKind::Vehicle => match sources.vehicles.get(&latest.key) {
            Some(v) => {
                let first = v.bins.keys().next().copied();
                (
                    v.series.get(class_index).cloned(),
                    first.map(|first| (first, v.bins.clone())),
                )
            }
            None => (None, None),
        },
        KeyKind::Cohort => {
            let series = sources
                .cohorts
                .get(&latest.key)
                .and_then(|s| s.get(class_index).cloned());
            let history = series.as_ref().and_then(|s| {
                detection::cohort_history(
                    sources.settings,
                    sources.vehicles,
                    &latest.key,
                    s.next_bin_ms,
                )
            });
            (series, history)
        }
    };
    let params = series
        .as_ref()
        .map_or(sources.settings.params, |s| *s.detector.params());
    let rate = |events: i64, exposure: f64| {
        let g = GammaRate {
            shape: params.a0 + events as f64,
            rate: params.b0 + exposure,
        };
        let per_1000h = |v: Option<f64>| v.map(|v| v * 1000.0);
        json!({
            "events": events,
            "exposure_hours": exposure,
            "rate_per_1000h": per_1000h(Some(g.mean())),
            "rate_per_1000h_ci95": [per_1000h(g.quantile(0.025)), per_1000h(g.quantile(0.975))],
        })
    };
    let (replayed, bins) = match (&series, history) {
        (Some(s), Some((first, bins))) => {
            let replayed = detection::replay(
                sources.settings,
                params,
                latest.hazard_class,
                &bins,
                first,
                s.next_bin_ms,
            );
            (replayed, bins)
        }
        _ => (Vec::new(), Default::default()),
    };
    let run_length: Vec<Value> = series.as_ref().map_or_else(Vec::new, |s| {
        s.detector
            .run_length_posterior()
            .into_iter()
            .map(|(r, p)| json!({"run_length": r, "probability": p}))
            .collect()
    });
    Some(json!({
        "episode": episode_row(&episode),
        "alerts": episode.alerts.iter().map(|a| json!({
            "alert_id": a.alert_id, "status": a.status.name(), "detected_at_ms": a.detected_at,
            "p_regression": a.p_regression, "hr_median": finite(a.hr_median),
            "hr_low": finite(a.hr_low), "hr_high": finite(a.hr_high),
        })).collect::<Vec<_>>(),
        "prior": {"a0": params.a0, "b0": params.b0},
        "bin_width_ms": sources.settings.bin_width_ms,
        "before": rate(latest.events_before, latest.exposure_before),
        "after": rate(latest.events_after, latest.exposure_after),
        "run_length_posterior": run_length,
        "history": replayed.iter().map(|b| {
            let (events, exposure_hours) =
                detection::stats_of(sources.settings, bins.get(&b.bin_start_ms), latest.hazard_class);
            json!({
                "bin_start_ms": b.bin_start_ms,
                "events": events,
                "exposure_hours": exposure_hours,
                "p_regression": b.p_regression,
                "map_run_length": b.map_run_length,
                "hr_median": b.hazard_ratio.map(|h| h.median),
            })
        }).collect::<Vec<_>>(),
    }))
}

/// `text` safe as a query-string value.
pub fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The link to an episode's page.
pub fn episode_href(id: &str) -> String {
    format!("/regressions/episode?id={}", percent_encode(id))
}

pub fn page(data: &Value) -> String {
    let episodes = html::rows(data, "/episodes");
    let mut body = format!(
        "<p>{} episodes, {} open.</p>",
        html::rows(data, "/episodes").len(),
        num(data, "/open", 0)
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
        html::interval_points(
            episodes,
            html::X::Position,
            "/hr_median",
            "/hr_low",
            "/hr_high",
        ),
    );
    chart.rule("HR 1.5", 1.5);
    body += &chart.render();
    let rows: Vec<Vec<String>> = episodes
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let at = |field: &str| format!("/episodes/{i}/{field}");
            vec![
                format!(
                    r#"<a href="{}">{}</a>"#,
                    escape(&episode_href(e["episode_id"].as_str().unwrap_or(""))),
                    text(data, &at("key"))
                ),
                text(data, &at("key_kind")),
                text(data, &at("hazard_class")),
                text(data, &at("status")),
                e["onset_ms"].as_i64().map_or("—".into(), utc_date),
                e["opened_at_ms"].as_i64().map_or("—".into(), utc_date),
                num(data, &at("days_to_detection"), 1),
                interval(data, &at("hr_median"), &at("hr_low"), &at("hr_high"), 2),
                num(data, &at("p_regression"), 3),
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
    html::page(
        "/regressions",
        "Regression analysis",
        "/api/regressions",
        &body,
    )
}

pub fn episode_page(data: &Value, id: &str) -> String {
    let mut body = format!(
        "<p>{} {} · class {} · status {} · onset (est.) {} · opened {}</p>",
        text(data, "/episode/key_kind"),
        text(data, "/episode/key"),
        text(data, "/episode/hazard_class"),
        text(data, "/episode/status"),
        data.pointer("/episode/onset_ms")
            .and_then(Value::as_i64)
            .map_or("—".into(), utc_date),
        data.pointer("/episode/opened_at_ms")
            .and_then(Value::as_i64)
            .map_or("—".into(), utc_date),
    );
    body += &html::table(
        "rates",
        &["", "events", "exposure (h)", "rate per 1000 h [95% CrI]"],
        &["before", "after"]
            .iter()
            .map(|side| {
                vec![
                    side.to_string(),
                    num(data, &format!("/{side}/events"), 0),
                    num(data, &format!("/{side}/exposure_hours"), 1),
                    interval(
                        data,
                        &format!("/{side}/rate_per_1000h"),
                        &format!("/{side}/rate_per_1000h_ci95/0"),
                        &format!("/{side}/rate_per_1000h_ci95/1"),
                        3,
                    ),
                ]
            })
            .collect::<Vec<_>>(),
    );
    body += &format!(
        "<p>Hazard ratio at the latest alert: {} · prior Gamma({}, {})</p>",
        interval(
            data,
            "/episode/hr_median",
            "/episode/hr_low",
            "/episode/hr_high",
            2
        ),
        num(data, "/prior/a0", 3),
        num(data, "/prior/b0", 1),
    );
    let at = |row: &Value, f: &str| row.get(f).and_then(Value::as_f64);
    let mut rates = Chart::new(
        "rates-before-after",
        "Rate per 1000 h before and after onset, 95% CrI",
        "before (1) · after (2)",
        "per 1000 h",
    );
    rates.intervals(
        "rate",
        PALETTE[0],
        ["before", "after"]
            .iter()
            .enumerate()
            .filter_map(|(i, side)| {
                let r = data.get(*side)?;
                Some((
                    i as f64 + 1.0,
                    at(r, "rate_per_1000h")?,
                    r.pointer("/rate_per_1000h_ci95/0")?.as_f64()?,
                    r.pointer("/rate_per_1000h_ci95/1")?.as_f64()?,
                ))
            })
            .collect(),
    );
    let mut p = Chart::new(
        "p-regression",
        "P(regression) after each bin",
        "bin",
        "P(regression)",
    )
    .dates();
    p.line(
        "P(regression)",
        PALETTE[1],
        html::points(data, "/history", "bin_start_ms", "p_regression"),
    );
    let mut events = Chart::new(
        "events-per-bin",
        "Events of the class per bin",
        "bin",
        "events",
    )
    .dates();
    events.bars(
        "events",
        PALETTE[3],
        html::points(data, "/history", "bin_start_ms", "events"),
        data.pointer("/bin_width_ms")
            .and_then(Value::as_f64)
            .unwrap_or(86_400_000.0)
            * 0.8,
    );
    let mut run_length = Chart::new(
        "run-length-posterior",
        "Run-length posterior now",
        "run length (bins)",
        "probability",
    );
    run_length.bars(
        "P(run length)",
        PALETTE[2],
        html::points(data, "/run_length_posterior", "run_length", "probability"),
        0.8,
    );
    body += &rates.render();
    body += &p.render();
    body += &events.render();
    body += &run_length.render();
    let alert_rows: Vec<Vec<String>> = html::rows(data, "/alerts")
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let at = |field: &str| format!("/alerts/{i}/{field}");
            vec![
                text(data, &at("alert_id")),
                a["detected_at_ms"].as_i64().map_or("—".into(), utc_date),
                num(data, &at("p_regression"), 3),
                interval(data, &at("hr_median"), &at("hr_low"), &at("hr_high"), 2),
            ]
        })
        .collect();
    body += &html::table(
        "alerts",
        &["alert", "at", "P(regression)", "HR [95% CrI]"],
        &alert_rows,
    );
    let api = format!("/api/regressions/episode?id={}", percent_encode(id));
    html::page("/regressions", "Regression episode", &api, &body)
}
