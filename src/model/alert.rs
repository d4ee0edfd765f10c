//! `safetel.v1.RegressionAlert`: what `run` publishes on `safety.regressions` when an episode
//! opens, updates or resolves, and what `demo` writes to `alerts.jsonl`.

use serde::{Deserialize, Serialize};

pub use crate::detect::AlertStatus;
use crate::model::HazardClass;

/// Whose series an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum KeyKind {
    Vehicle,
    Cohort,
}

impl KeyKind {
    pub fn name(self) -> &'static str {
        match self {
            KeyKind::Vehicle => "VEHICLE",
            KeyKind::Cohort => "COHORT",
        }
    }
}

/// One episode transition. Times are event time, ms since the epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegressionAlert {
    /// Deterministic: `<key kind>/<key>/<class>/<onset date>/<status>[-<n>]`, the same on replay.
    pub alert_id: String,
    pub status: AlertStatus,
    pub key_kind: KeyKind,
    /// Vehicle id, or `firmware:<version>` / `model:<name>` for a cohort.
    pub key: String,
    pub hazard_class: HazardClass,
    /// Start of the segment the episode was opened on.
    pub onset_estimate: i64,
    /// When the stream knew: end of the bin that triggered the alert plus the allowed lateness.
    pub detected_at: i64,
    pub p_regression: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub hr_median: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub hr_low: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub hr_high: f64,
    /// Posterior mean rates per exposure hour. HR and rates are NaN (`null` in JSON) when the
    /// MAP segment has no baseline.
    #[serde(deserialize_with = "nan_if_null")]
    pub rate_before: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub rate_after: f64,
    pub events_before: i64,
    pub events_after: i64,
    /// Exposure hours.
    pub exposure_before: f64,
    pub exposure_after: f64,
    /// `config` or `refit`.
    pub prior_source: String,
    pub sampling_policy: String,
}

/// JSON has no NaN: serde_json writes it as `null`; read `null` back as NaN (no HR available).
fn nan_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

impl RegressionAlert {
    /// Days from the onset estimate to detection.
    pub fn time_to_detection_days(&self) -> f64 {
        (self.detected_at - self.onset_estimate) as f64 / 86_400_000.0
    }
}

/// `YYYY-MM-DD` of a time in ms since the epoch (UTC, proleptic Gregorian).
pub fn utc_date(ms: i64) -> String {
    // Civil from days, after Howard Hinnant's algorithm.
    let z = ms.div_euclid(86_400_000) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// `YYYY-MM-DD HH:MM:SS UTC` of a time in ms since the epoch.
pub fn utc_time(ms: i64) -> String {
    let s = ms.div_euclid(1000).rem_euclid(86_400);
    format!(
        "{} {:02}:{:02}:{:02} UTC",
        utc_date(ms),
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generator::config::parse_date;

    #[test]
    fn a_time_reads_as_its_date_and_clock() {
        assert_eq!(
            utc_time(1_767_571_200_000 + 3_723_000),
            "2026-01-05 01:02:03 UTC"
        );
        assert_eq!(utc_time(-1000), "1969-12-31 23:59:59 UTC");
    }

    #[test]
    fn dates_format_back_to_what_parses() {
        for date in [
            "1970-01-01",
            "2026-01-05",
            "2024-02-29",
            "2024-03-01",
            "1969-12-31",
        ] {
            assert_eq!(utc_date(parse_date(date).unwrap()), date);
        }
        assert_eq!(
            utc_date(parse_date("2026-01-05").unwrap() + 86_399_999),
            "2026-01-05"
        );
    }
}
