//! Generator settings: fleet size and time span, base rates, injected regressions and faults.

use serde::{Deserialize, Serialize};

/// What `safetel generate` simulates. Defaults aim at realism, not ease: critical events are rare
/// and the injected regressions are of the size a real fleet sees (docs/design.md §3).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeneratorConfig {
    pub seed: u64,
    pub vehicles: usize,
    pub days: u32,
    /// First simulated day, `YYYY-MM-DD` (UTC).
    pub start_date: String,
    /// Mean trips per vehicle and day (Poisson).
    pub trips_per_day: f64,
    pub mean_trip_minutes: f64,
    /// Share of trips driven in AUTONOMOUS and in ASSISTED mode (the rest MANUAL).
    pub autonomous_share: f64,
    pub assisted_share: f64,
    /// Low and medium severity events per driving hour, before stratum risk.
    pub low_events_per_hour: f64,
    /// Critical events (near miss, collision, high severity) per driving hour, before stratum risk.
    pub critical_per_hour: f64,
    /// Unplanned AUTONOMOUS -> MANUAL transitions per autonomous hour.
    pub disengagements_per_autonomous_hour: f64,
    /// Spread of per-vehicle risk: log-normal with this standard deviation of the log.
    pub vehicle_frailty_sd: f64,
    pub vehicle_models: Vec<String>,
    pub firmware_versions: Vec<String>,
    pub regressions: RegressionConfig,
    pub faults: FaultConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegressionConfig {
    /// Share of vehicles that develop a fault of their own.
    pub vehicle_fault_fraction: f64,
    /// Hazard ratio of a vehicle fault, drawn uniformly from this range.
    pub vehicle_fault_hr_min: f64,
    pub vehicle_fault_hr_max: f64,
    /// A firmware version rolled out mid-stream that raises the critical-event hazard. A fleet
    /// file without the table has none (the built-in fleet has one).
    #[serde(default)]
    pub firmware_rollout: Option<FirmwareRollout>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirmwareRollout {
    pub version: String,
    /// Day (0-based) from which the rolled-out vehicles run the new firmware.
    pub day: u32,
    /// Share of vehicles that get it.
    pub share: f64,
    pub hr_critical: f64,
}

/// Shares of records to disturb, each record at most one way.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaultConfig {
    /// Delivered up to an hour of event time after their place, within the allowed lateness.
    pub out_of_order: f64,
    /// Delivered two days late, beyond the allowed lateness.
    pub late: f64,
    /// Delivered twice.
    pub duplicate: f64,
    /// Replaced by malformed bytes of one of several kinds.
    pub corrupt: f64,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            seed: 42,
            vehicles: 300,
            days: 56,
            start_date: "2026-01-05".into(),
            trips_per_day: 3.0,
            mean_trip_minutes: 40.0,
            autonomous_share: 0.4,
            assisted_share: 0.3,
            low_events_per_hour: 0.8,
            critical_per_hour: 0.004,
            disengagements_per_autonomous_hour: 0.05,
            vehicle_frailty_sd: 0.3,
            vehicle_models: vec!["atlas".into(), "borealis".into(), "cirrus".into()],
            firmware_versions: vec!["fw-2.1.0".into(), "fw-2.2.0".into()],
            regressions: RegressionConfig::default(),
            faults: FaultConfig::default(),
        }
    }
}

impl Default for RegressionConfig {
    fn default() -> Self {
        RegressionConfig {
            vehicle_fault_fraction: 0.03,
            vehicle_fault_hr_min: 3.0,
            vehicle_fault_hr_max: 8.0,
            firmware_rollout: Some(FirmwareRollout {
                version: "fw-3.0.0".into(),
                day: 28,
                share: 0.3,
                hr_critical: 2.5,
            }),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("generator setting `{field}`: {reason}")]
pub struct GeneratorConfigError {
    pub field: &'static str,
    pub reason: String,
}

impl GeneratorConfig {
    /// Checks cross-field rules; returns the first day's start in ms since the epoch.
    pub fn validate(&self) -> Result<i64, GeneratorConfigError> {
        let err = |field, reason: &str| {
            Err(GeneratorConfigError {
                field,
                reason: reason.into(),
            })
        };
        let start_ms = match parse_date(&self.start_date) {
            Some(ms) => ms,
            None => return err("start_date", "expected YYYY-MM-DD"),
        };
        if self.vehicles == 0 {
            return err("vehicles", "must be at least 1");
        }
        if self.days == 0 {
            return err("days", "must be at least 1");
        }
        for (field, value) in [
            ("trips_per_day", self.trips_per_day),
            ("mean_trip_minutes", self.mean_trip_minutes),
            ("low_events_per_hour", self.low_events_per_hour),
            ("critical_per_hour", self.critical_per_hour),
            (
                "disengagements_per_autonomous_hour",
                self.disengagements_per_autonomous_hour,
            ),
            ("vehicle_frailty_sd", self.vehicle_frailty_sd),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return err(field, "must be a finite number >= 0");
            }
        }
        if self.mean_trip_minutes <= 0.0 {
            return err("mean_trip_minutes", "must be positive");
        }
        if !(0.0..=1.0).contains(&(self.autonomous_share + self.assisted_share)) {
            return err(
                "autonomous_share",
                "autonomous_share + assisted_share must be within 0..=1",
            );
        }
        if self.vehicle_models.is_empty() || self.firmware_versions.is_empty() {
            return err(
                "vehicle_models",
                "vehicle_models and firmware_versions must not be empty",
            );
        }
        let r = &self.regressions;
        if !(0.0..=1.0).contains(&r.vehicle_fault_fraction) {
            return err("regressions.vehicle_fault_fraction", "must be within 0..=1");
        }
        if !(r.vehicle_fault_hr_min >= 1.0 && r.vehicle_fault_hr_max >= r.vehicle_fault_hr_min) {
            return err("regressions.vehicle_fault_hr_min", "need 1 <= min <= max");
        }
        if let Some(rollout) = &r.firmware_rollout
            && (!(0.0..=1.0).contains(&rollout.share) || rollout.hr_critical < 0.0)
        {
            return err(
                "regressions.firmware_rollout",
                "share must be within 0..=1 and hr_critical >= 0",
            );
        }
        let f = &self.faults;
        let total = f.out_of_order + f.late + f.duplicate + f.corrupt;
        if [f.out_of_order, f.late, f.duplicate, f.corrupt]
            .iter()
            .any(|v| !(0.0..=1.0).contains(v))
            || total > 1.0
        {
            return err(
                "faults",
                "each share must be within 0..=1 and together at most 1",
            );
        }
        Ok(start_ms)
    }
}

/// `YYYY-MM-DD` to ms since the epoch at 00:00 UTC (proleptic Gregorian calendar).
pub fn parse_date(date: &str) -> Option<i64> {
    let mut parts = date.splitn(3, '-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: i64 = parts.next()?.parse().ok()?;
    let d: i64 = parts.next()?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    // Days from civil, after Howard Hinnant's algorithm.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some((era * 146_097 + doe - 719_468) * 86_400_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_parse_to_epoch_ms() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("2026-01-05"), Some(1_767_571_200_000));
        assert_eq!(parse_date("2024-03-01"), Some(1_709_251_200_000));
        assert_eq!(parse_date("2026-13-01"), None);
    }

    #[test]
    fn committed_fleet_file_states_the_defaults() {
        let file: GeneratorConfig =
            toml::from_str(include_str!("../../config/fleet.toml")).unwrap();
        let defaults = GeneratorConfig::default();
        assert_eq!(
            serde_json::to_value(&file).unwrap(),
            serde_json::to_value(&defaults).unwrap()
        );
    }

    #[test]
    fn defaults_validate_and_bad_values_name_the_field() {
        assert!(GeneratorConfig::default().validate().is_ok());
        let bad = GeneratorConfig {
            vehicles: 0,
            ..GeneratorConfig::default()
        };
        assert_eq!(bad.validate().unwrap_err().field, "vehicles");
    }
}
