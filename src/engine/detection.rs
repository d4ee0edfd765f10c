//! Bin closes and the change-point series they feed (docs/design.md §3).
//!
//! Owns, per hazard class, one [`Series`] (fleet-relative detector + episode) per vehicle and
//! per cohort (`firmware:<version>`, `model:<name>`), when their bins close, what each is
//! compared with, and the alerts their episodes produce.
//!
//! - A vehicle's bin closes when its partition's watermark passes the bin's end plus the allowed
//!   lateness: no record for it can be accepted after that, so what the detector sees does not
//!   depend on timing. It is compared with the fleet: the partition's vehicles' rate per unit of
//!   exposure over its closed bins older than the guard window (but at least the first G; this
//!   one included while there are fewer) ([`FleetSums`], an empirical-Bayes mean with the weak
//!   prior `a0 / b0`), spread by `fleet_shape` (or the refit's measured spread for the
//!   critical class), updated with the vehicle's own bins older than the guard window. Exposure
//!   is risk-adjusted hours for critical events and autonomous hours for disengagements.
//! - The vehicle's expected count of each closed bin is written into the bin; a cohort's bin sums
//!   its members' counts and expected counts ([`super::cohorts`]), so a cohort is compared with
//!   what its members would have done on their own baselines, from its first bin on.
//! - Attribution: a vehicle counts towards its model cohort only while its firmware is
//!   established (run for at least the guard window, or the first it was seen with), so a
//!   firmware rollout's rise is the firmware cohort's and not its models'.
//! - Episodes open when the ln-odds of P(regression) reach the threshold calibrated for the
//!   key's kind and expected count from the false-alarm budget ([`OpeningRules`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::bin_map::BinMap;
pub use super::state::FleetSums;
use super::state::{BinStats, VehicleMeta, VehicleState};
use crate::config::DetectorConfig;
use crate::detect::calibration::{NullModel, OpeningRule};
use crate::detect::fleet_relative::{Baseline, FleetRelativeParams, FleetUpdate};
use crate::detect::{AlertStatus, BinEvidence, Episode, EpisodeParams, HazardRatioSummary};
use crate::model::{ByClass, HazardClass, KeyKind, RegressionAlert, utc_date};

pub use super::series::{
    LastBin, SERIES_FORMAT, Series, decode_series, encode_series, fixed_form as fixed_series_form,
    is_current_series,
};

const DAYS_PER_MONTH: f64 = 30.4375;
const DAY_MS: f64 = 86_400_000.0;
/// Of a vehicle series' false-alarm allowance, the share a cohort series gets: cohort false
/// alarms count against the same vehicle-months, and each cohort has plenty of data.
const COHORT_ALLOWANCE_SHARE: f64 = 5.0;
/// Of the budget, the share spent on vehicle series; the rest covers cohort series (up to one
/// per vehicle series at [`COHORT_ALLOWANCE_SHARE`]).
const VEHICLE_BUDGET_SHARE: f64 = 0.9;

/// P(regression) from which a series' last bin carries its hazard ratio.
pub const HR_SHOWN_FROM_P: f64 = 0.05;

/// The opening thresholds in force, per key kind (and class, for vehicles).
#[derive(Debug, Clone)]
pub struct OpeningRules {
    pub false_alarms_per_1000_vehicle_months: f64,
    pub vehicle: ByClass<Arc<OpeningRule>>,
    pub cohort: Arc<OpeningRule>,
}

impl OpeningRules {
    fn calibrate(
        params: &FleetRelativeParams,
        budget: f64,
        vehicle_shapes: &ByClass<f64>,
        cohort_shape: f64,
        bin_width_ms: i64,
    ) -> OpeningRules {
        let bins_per_month = DAYS_PER_MONTH * DAY_MS / bin_width_ms as f64;
        let classes = HazardClass::COUNT as f64;
        let vehicle_rate = VEHICLE_BUDGET_SHARE * budget / 1000.0 / bins_per_month / classes;
        let rule = |shape: f64, rate: f64| {
            Arc::new(OpeningRule::calibrate(
                params,
                NullModel {
                    shape,
                    false_alarms_per_bin: rate,
                },
            ))
        };
        OpeningRules {
            false_alarms_per_1000_vehicle_months: budget,
            vehicle: vehicle_shapes.map(|_, &shape| rule(shape, vehicle_rate)),
            cohort: rule(cohort_shape, vehicle_rate * COHORT_ALLOWANCE_SHARE),
        }
    }
}

/// What the detection stage needs to know.
#[derive(Debug, Clone)]
pub struct DetectionSettings {
    pub params: FleetRelativeParams,
    pub episodes: EpisodeParams,
    /// Gamma prior of the fleet's mean rate (shape, rate in exposure hours).
    pub fleet_prior: (f64, f64),
    /// Spread of vehicles' rates around the fleet mean (Gamma shape), per class.
    pub fleet_shape: ByClass<f64>,
    /// Where each class's spread came from: `config` or `refit`.
    pub fleet_shape_source: ByClass<&'static str>,
    /// Spread of cohorts' rates around their members' prediction (Gamma shape).
    pub cohort_shape: f64,
    pub rules: OpeningRules,
    pub cohorts: Vec<String>,
    pub bin_width_ms: i64,
    pub allowed_lateness_ms: i64,
    /// Under a review budget the critical class sees reviewed trips only.
    pub reviewed: bool,
    /// The review policy's name, for the alerts (`full` without a budget).
    pub sampling_policy: &'static str,
    /// A vehicle with no record in this long (event time, whole bins) is paused: its series
    /// is not fed the silent bins, and takes up again from its next bin with data
    /// ([`DetectionSettings::paused`]). `None`: every bin is fed.
    pub pause_after_ms: Option<i64>,
}

impl DetectionSettings {
    pub fn new(detector: &DetectorConfig, bin_width_ms: i64, allowed_lateness_ms: i64) -> Self {
        let params = detector.params();
        let fleet_shape = ByClass::splat(detector.fleet_shape);
        let rules = OpeningRules::calibrate(
            &params,
            detector.false_alarms_per_1000_vehicle_months,
            &fleet_shape,
            detector.cohort_shape,
            bin_width_ms,
        );
        DetectionSettings {
            params,
            episodes: detector.episodes(),
            fleet_prior: (detector.a0, detector.b0),
            fleet_shape_source: ByClass::splat("config"),
            fleet_shape,
            cohort_shape: detector.cohort_shape,
            rules,
            cohorts: detector.cohorts.clone(),
            bin_width_ms,
            allowed_lateness_ms,
            reviewed: false,
            sampling_policy: "full",
            pause_after_ms: None,
        }
    }

    /// Whether a vehicle with `bins` is paused at bin `at`: it has no bin in the
    /// `pause_after_ms` ending with `at`. There is no evidence in such bins, and a vehicle that
    /// has left the fleet should not drift towards an alert on empty bins for ever.
    pub fn paused(&self, bins: &BinMap, at: i64) -> bool {
        self.paused_with_stored(bins, None, at)
    }

    /// [`DetectionSettings::paused`] for a vehicle whose bins before those in `bins` left
    /// memory, the last of them starting at `last_stored` (docs/design.md §7): when none in
    /// memory is in the window, that one may be.
    pub fn paused_with_stored(&self, bins: &BinMap, last_stored: Option<i64>, at: i64) -> bool {
        self.pause_after_ms.is_some_and(|pause| {
            let from = at.saturating_sub(pause).saturating_add(self.bin_width_ms);
            // A pause shorter than a bin never pauses (config refuses it).
            from <= at
                && bins.range(from..=at).next().is_none()
                && !last_stored.is_some_and(|last| (from..=at).contains(&last))
        })
    }

    /// Takes a measured spread of vehicles' rates for `class` (from a refit) and recalibrates
    /// that class's opening rule for it. Values are kept to two significant digits, so that
    /// refits that agree share one calibration.
    pub fn use_fleet_shape(&mut self, class: HazardClass, shape: f64) {
        if !(shape.is_finite() && shape > 0.0) {
            return;
        }
        let digits = 10f64.powf(shape.log10().floor() - 1.0);
        let shape = ((shape / digits).round() * digits).clamp(
            crate::detect::fleet_relative::MIN_FLEET_SHAPE,
            crate::detect::fleet_relative::MAX_FLEET_SHAPE,
        );
        if self.fleet_shape[class] == shape {
            return;
        }
        self.fleet_shape[class] = shape;
        self.fleet_shape_source[class] = "refit";
        let rate = self.rules.vehicle[class].null.false_alarms_per_bin;
        self.rules.vehicle[class] = Arc::new(OpeningRule::calibrate(
            &self.params,
            NullModel {
                shape,
                false_alarms_per_bin: rate,
            },
        ));
    }

    /// The fleet's Gamma distribution of vehicles' rates for `class`, given the partition's
    /// sums over the bins closed so far and the one closing ([`FleetSums`]).
    pub fn vehicle_baseline(&self, class: HazardClass, sums: &FleetSums) -> Baseline {
        let (events, exposure_ms) = sums.basis(self, class);
        let mean = (self.fleet_prior.0 + events as f64)
            / (self.fleet_prior.1 + exposure_ms as f64 / 3_600_000.0);
        let shape = self.fleet_shape[class];
        Baseline {
            shape,
            rate: shape / mean,
        }
    }

    /// What a cohort's count is compared with: its members' prediction, times a Gamma(c, c)
    /// factor of mean 1.
    pub fn cohort_baseline(&self) -> Baseline {
        Baseline {
            shape: self.cohort_shape,
            rate: self.cohort_shape,
        }
    }
}

/// The spread of vehicles' rates (Gamma shape) that a refit's per-vehicle posteriors imply:
/// mean^2 over the total variance, the spread of their means plus their mean variance.
/// `None` with fewer than two vehicles.
pub fn shape_of_priors<'a>(priors: impl Iterator<Item = &'a super::state::Prior>) -> Option<f64> {
    let (mut n, mut sum, mut sum_sq, mut within) = (0.0, 0.0, 0.0, 0.0);
    for p in priors.filter(|p| p.a0 > 0.0 && p.b0 > 0.0) {
        let mean = p.a0 / p.b0;
        n += 1.0;
        sum += mean;
        sum_sq += mean * mean;
        within += p.a0 / (p.b0 * p.b0);
    }
    if n < 2.0 {
        return None;
    }
    let mu = sum / n;
    let variance = (sum_sq / n - mu * mu).max(0.0) + within / n;
    (variance > 0.0).then(|| mu * mu / variance)
}

/// The detector and the opening rules in force, as the API and the pages state them
/// ([`DetectionSettings::rules`]).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Rules {
    pub model: &'static str,
    pub false_alarms_per_1000_vehicle_months: f64,
    pub threshold_hr: f64,
    pub hazard: f64,
    pub guard_bins: usize,
    pub rule: &'static str,
    /// Per hazard class, by its name.
    pub vehicle: BTreeMap<&'static str, VehicleRule>,
    pub cohort: CohortRule,
}

/// A vehicle series' rule for one hazard class.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VehicleRule {
    pub fleet_shape: f64,
    pub fleet_shape_source: &'static str,
    pub false_alarms_per_series_bin: f64,
    pub p_open: Vec<OpenAt>,
}

/// A cohort series' rule.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CohortRule {
    pub cohort_shape: f64,
    pub false_alarms_per_series_bin: f64,
    pub p_open: Vec<OpenAt>,
}

/// The P(regression) an episode opens at, for a series expecting so many events per bin.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct OpenAt {
    pub expected_per_bin: f64,
    pub p_open: f64,
}

impl DetectionSettings {
    /// The detector and the opening rules in force.
    pub fn rules(&self) -> Rules {
        use crate::detect::calibration::EXPECTED_GRID;
        let table = |rule: &OpeningRule| {
            EXPECTED_GRID
                .iter()
                .map(|&m| OpenAt {
                    expected_per_bin: m,
                    p_open: rule.p_open_at(m),
                })
                .collect::<Vec<_>>()
        };
        Rules {
            model: "fleet-relative",
            false_alarms_per_1000_vehicle_months: self.rules.false_alarms_per_1000_vehicle_months,
            threshold_hr: self.params.threshold,
            hazard: self.params.hazard,
            guard_bins: self.params.guard_bins,
            rule: "an episode opens when P(changed and HR > threshold) reaches p_open, set per key kind and expected events per bin by simulating each kind's null so that false alarms stay within the budget",
            vehicle: self
                .rules
                .vehicle
                .iter()
                .map(|(class, rule)| {
                    let rule = VehicleRule {
                        fleet_shape: self.fleet_shape[class],
                        fleet_shape_source: self.fleet_shape_source[class],
                        false_alarms_per_series_bin: rule.null.false_alarms_per_bin,
                        p_open: table(rule),
                    };
                    (class.name(), rule)
                })
                .collect(),
            cohort: CohortRule {
                cohort_shape: self.cohort_shape,
                false_alarms_per_series_bin: self.rules.cohort.null.false_alarms_per_bin,
                p_open: table(&self.rules.cohort),
            },
        }
    }
}

/// How the detection stage keeps and reads a partition's [`FleetSums`].
impl FleetSums {
    /// Adds the totals of the next closed bin (bins come in order, one push per bin).
    pub fn push(&mut self, settings: &DetectionSettings, totals: BinStats) {
        self.recent.push_back(totals);
        let guard = settings.params.guard_bins;
        let bins = self.basis_bins + self.recent.len();
        let wanted = bins.min(guard).max(bins.saturating_sub(guard));
        while self.basis_bins < wanted {
            let next = self.recent.pop_front().expect("wanted <= bins");
            self.basis.add(&next);
            self.basis_bins += 1;
        }
    }

    /// What the fleet's mean of `class` is taken from: (events, exposure ms).
    fn basis(&self, settings: &DetectionSettings, class: HazardClass) -> (u64, u64) {
        class_exposure(settings, &self.basis, class)
    }

    /// The sums over `vehicles`' bins before `before_ms` (a closed edge: every bin before it is
    /// pushed), bin by bin.
    pub fn of(settings: &DetectionSettings, vehicles: &dyn VehicleSet, before_ms: i64) -> Self {
        let mut per_bin: BTreeMap<i64, BinStats> = BTreeMap::new();
        vehicles.for_each(&mut |_, bins| {
            for (&bin, stats) in bins.range(..before_ms) {
                per_bin.entry(bin).or_default().add(stats);
            }
        });
        let mut sums = FleetSums::default();
        let Some(&first) = per_bin.keys().next() else {
            return sums;
        };
        // One push per bin, empty ones included, from the partition's first bin: as the live
        // engine closes them.
        let mut bin = first;
        while bin < before_ms {
            sums.push(settings, per_bin.get(&bin).copied().unwrap_or_default());
            bin += settings.bin_width_ms;
        }
        sums
    }
}

/// Whose series: for alert fields and ids.
#[derive(Debug, Clone, Copy)]
pub struct SeriesKey<'a> {
    pub kind: KeyKind,
    pub key: &'a str,
    pub class: HazardClass,
    /// Where the baseline's spread came from: `stream`, `refit` (vehicles) or `members`
    /// (cohorts: their members' predictions).
    pub prior_source: &'static str,
}

impl Series {
    /// Feeds the bin at `next_bin_ms`: `events` against `exposure` under `fleet`, opening by
    /// `rule`. Episode transitions become alerts in `alerts`. Returns the detector's update.
    pub fn feed(
        &mut self,
        settings: &DetectionSettings,
        key: SeriesKey<'_>,
        (events, exposure): (u64, f64),
        fleet: Baseline,
        rule: &OpeningRule,
        alerts: &mut Vec<RegressionAlert>,
    ) -> FleetUpdate {
        let width = settings.bin_width_ms;
        let bin = self.next_bin_ms;
        let update = self.detector.update(events, exposure, fleet);
        let base = self.detector.posterior_baseline(fleet);
        let expected_per_bin = self.detector.mean_exposure_per_bin() * base.shape / base.rate;
        let threshold = rule.ln_odds_at(expected_per_bin);
        let opens = update.ln_odds_regression >= threshold;
        let onset_ms = bin - (i64::from(update.onset_bins.max(1)) - 1) * width;
        let closed_at = bin + width + settings.allowed_lateness_ms;
        // The hazard ratio is dear (three Beta quantiles): only where an episode needs it.
        let hazard_ratio = (opens || self.episode.open.is_some())
            .then(|| self.detector.hazard_ratio(fleet))
            .flatten();
        let evidence = BinEvidence {
            p_regression: update.p_regression,
            opens,
            hr_median: hazard_ratio.map(|h| h.median),
        };
        if let Some((status, episode)) =
            self.episode
                .observe(&settings.episodes, &evidence, onset_ms, closed_at)
        {
            alerts.push(alert(
                settings,
                key,
                status,
                &episode,
                &update,
                hazard_ratio,
                base,
                closed_at,
            ));
            if status == AlertStatus::Resolved {
                // The recursion starts again from the current baseline.
                self.detector.restart();
            }
        }
        self.last = Some(LastBin {
            bin_start_ms: bin,
            p_regression: update.p_regression,
            onset_bins: update.onset_bins,
            onset_ms,
            expected: update.expected,
            events,
            p_open: 1.0 / (1.0 + (-threshold).exp()),
            hazard_ratio: hazard_ratio.map(Box::new),
        });
        self.next_bin_ms += width;
        update
    }

    /// Fills in the last bin's hazard ratio where the episode did not need it (for the API),
    /// once P(regression) reaches [`HR_SHOWN_FROM_P`]: three Beta quantiles cost ~15x a bin
    /// update, and below that there is no rise to size.
    pub fn complete_last(&mut self, fleet: Baseline) {
        if let Some(last) = self.last.as_mut()
            && last.hazard_ratio.is_none()
            && last.onset_bins > 0
            && last.p_regression >= HR_SHOWN_FROM_P
        {
            last.hazard_ratio = self.detector.hazard_ratio(fleet).map(Box::new);
        }
    }
}

/// The alert for an episode transition.
#[allow(clippy::too_many_arguments)]
fn alert(
    settings: &DetectionSettings,
    key: SeriesKey<'_>,
    status: AlertStatus,
    episode: &Episode,
    update: &FleetUpdate,
    hr: Option<HazardRatioSummary>,
    base: Baseline,
    detected_at: i64,
) -> RegressionAlert {
    let suffix = match status {
        AlertStatus::Updated => format!("UPDATED-{}", episode.updates),
        other => other.name().to_string(),
    };
    let alert_id = format!(
        "{}/{}/{}/{}/{suffix}",
        key.kind.name(),
        key.key,
        key.class.name(),
        utc_date(episode.onset_ms)
    );
    // Rates in the key's exposure unit: the baseline's mean, and the mean after the onset.
    let rate_before = base.rate().mean();
    let rate_after =
        |h: HazardRatioSummary| base.after_onset(h.events_after, h.exposure_after).mean();
    RegressionAlert {
        alert_id,
        status,
        key_kind: key.kind,
        key: key.key.to_string(),
        hazard_class: key.class,
        onset_estimate: episode.onset_ms,
        detected_at,
        p_regression: update.p_regression,
        hr_median: hr.map_or(f64::NAN, |h| h.median),
        hr_low: hr.map_or(f64::NAN, |h| h.low),
        hr_high: hr.map_or(f64::NAN, |h| h.high),
        rate_before,
        rate_after: hr.map_or(f64::NAN, rate_after),
        events_before: hr.map_or(0, |h| h.events_before as i64),
        events_after: hr.map_or(0, |h| h.events_after as i64),
        exposure_before: hr.map_or(0.0, |h| h.exposure_before),
        exposure_after: hr.map_or(0.0, |h| h.exposure_after),
        prior_source: key.prior_source.into(),
        sampling_policy: settings.sampling_policy.into(),
    }
}

/// Feeds a vehicle's series the bins up to and including the one starting at `bin` (creating
/// them at its first bin) and writes the fleet's expected counts into those bins. Returns the
/// bins fed per class and whether any of the vehicle's bins changed.
pub fn close_vehicle_bin(
    settings: &DetectionSettings,
    vehicle_id: &str,
    vehicle: &mut VehicleState,
    fleet: &FleetSums,
    bin: i64,
    alerts: &mut Vec<RegressionAlert>,
) -> (u64, bool) {
    if vehicle.series.is_none() {
        match vehicle.bins.keys().next() {
            Some(&first) if first <= bin => {
                let start = first.max(bin);
                vehicle.series = Some(Box::new(ByClass::from_fn(|_| {
                    Series::new(settings.params, start)
                })));
            }
            _ => return (0, false),
        }
    }
    let mut fed = 0;
    let mut changed = false;
    let last_stored = (vehicle.stored.count > 0).then_some(vehicle.stored.last_ms);
    let VehicleState { series, bins, .. } = vehicle;
    let Some(series) = series else {
        return (0, false);
    };
    for (class, series) in series.iter_mut() {
        let baseline = settings.vehicle_baseline(class, fleet);
        let rule = &settings.rules.vehicle[class];
        let key = vehicle_key(vehicle_id, class, settings);
        while series.next_bin_ms <= bin {
            let at = series.next_bin_ms;
            if settings.paused_with_stored(bins, last_stored, at) {
                if settings.paused_with_stored(bins, last_stored, bin) {
                    // Still silent: the series waits where the silence began.
                    break;
                }
                // Back: the silent bins are passed over.
                series.next_bin_ms += settings.bin_width_ms;
                continue;
            }
            let seen = stats_of(settings, bins.get(&at), class);
            let update = series.feed(settings, key, seen, baseline, rule, alerts);
            if let Some(stats) = bins.get_mut(&at) {
                let before = stats.expected(class);
                stats.set_expected(class, update.expected);
                changed |= stats.expected(class) != before;
            }
            fed += 1;
        }
        series.complete_last(baseline);
    }
    (fed / HazardClass::COUNT as u64, changed)
}

fn vehicle_key<'a>(
    vehicle_id: &'a str,
    class: HazardClass,
    settings: &DetectionSettings,
) -> SeriesKey<'a> {
    SeriesKey {
        kind: KeyKind::Vehicle,
        key: vehicle_id,
        class,
        prior_source: if settings.fleet_shape_source[class] == "refit" {
            "refit"
        } else {
            "stream"
        },
    }
}

/// A bin's count and exposure for `class` as the detectors see it: (events, exposure ms).
/// Critical events against risk-adjusted exposure (under a review budget: reviewed trips only),
/// disengagements against autonomous time.
pub fn class_exposure(
    settings: &DetectionSettings,
    stats: &BinStats,
    class: HazardClass,
) -> (u64, u64) {
    match class {
        HazardClass::Critical if settings.reviewed => {
            (stats.reviewed_critical, stats.reviewed_risk_exposure_ms)
        }
        HazardClass::Critical => (stats.critical, stats.risk_exposure_ms),
        HazardClass::Disengagement => (stats.disengagements, stats.autonomous_exposure_ms),
    }
}

/// What a vehicle series of `class` sees of a bin: (events, exposure hours).
pub fn stats_of(
    settings: &DetectionSettings,
    stats: Option<&BinStats>,
    class: HazardClass,
) -> (u64, f64) {
    stats.map_or((0, 0.0), |s| {
        let (events, ms) = class_exposure(settings, s, class);
        (events, ms as f64 / 3_600_000.0)
    })
}

/// What a cohort series of `class` sees of a bin: its members' events against their expected
/// count.
pub fn cohort_stats_of(
    settings: &DetectionSettings,
    stats: Option<&BinStats>,
    class: HazardClass,
) -> (u64, f64) {
    stats.map_or((0, 0.0), |s| {
        let (events, _) = class_exposure(settings, s, class);
        (events, s.expected(class))
    })
}

/// The firmware a vehicle ran at the end of the bin starting at `bin_ms`.
pub fn firmware_at(meta: &VehicleMeta, bin_end_ms: i64) -> &str {
    firmware_entry(meta, bin_end_ms).map_or(meta.firmware_version.as_str(), |(_, fw)| fw.as_str())
}

fn firmware_entry(meta: &VehicleMeta, bin_end_ms: i64) -> Option<&(i64, String)> {
    meta.firmware_history
        .iter()
        .rev()
        .find(|(since, _)| *since < bin_end_ms)
        .or(meta.firmware_history.first())
}

/// Whether the vehicle's firmware at the end of a bin is established: the first it was seen
/// with, or run for at least the guard window by then. Only then does the vehicle count towards
/// its model cohort (attribution: a new firmware's rise belongs to the firmware cohort).
fn firmware_established(settings: &DetectionSettings, meta: &VehicleMeta, bin_end_ms: i64) -> bool {
    let history = &meta.firmware_history;
    let guard_ms = settings.params.guard_bins as i64 * settings.bin_width_ms;
    match firmware_entry(meta, bin_end_ms) {
        None => true,
        Some(entry) => {
            let first_seen =
                std::ptr::eq(entry, &history[0]) && history.len() < VehicleMeta::FIRMWARE_HISTORY;
            first_seen || bin_end_ms - entry.0 >= guard_ms
        }
    }
}

/// Calls `f` with each cohort key a vehicle's bin counts towards (`firmware:<v>`, `model:<m>`;
/// `model:` only on established firmware), built in one reused buffer.
pub(super) fn for_each_cohort_key(
    settings: &DetectionSettings,
    meta: &VehicleMeta,
    bin_end_ms: i64,
    key: &mut String,
    mut f: impl FnMut(&str),
) {
    for kind in &settings.cohorts {
        let value = match kind.as_str() {
            "firmware" => firmware_at(meta, bin_end_ms),
            "model" if firmware_established(settings, meta, bin_end_ms) => {
                meta.vehicle_model.as_str()
            }
            _ => "",
        };
        if !value.is_empty() {
            key.clear();
            key.push_str(kind);
            key.push(':');
            key.push_str(value);
            f(key);
        }
    }
}

/// Every vehicle's attributes and bins, for the cohort sums.
pub trait VehicleSet {
    fn for_each(&self, f: &mut dyn FnMut(&VehicleMeta, &BinMap));
}

/// Per cohort, the sum of the vehicles' stats in the bin starting at `bin`.
fn cohort_sums(
    settings: &DetectionSettings,
    vehicles: &dyn VehicleSet,
    bin: i64,
) -> BTreeMap<String, BinStats> {
    let width = settings.bin_width_ms;
    let mut sums: BTreeMap<String, BinStats> = BTreeMap::new();
    let mut key = String::new();
    vehicles.for_each(&mut |meta, bins| {
        let Some(stats) = bins.get(&bin) else {
            return;
        };
        for_each_cohort_key(settings, meta, bin + width, &mut key, |k| {
            match sums.get_mut(k) {
                Some(sum) => sum.add(stats),
                None => {
                    sums.insert(k.to_string(), *stats);
                }
            }
        });
    });
    sums
}

/// A series' conclusions bin by bin, recomputed by a fresh series fed from `first_bin_ms` up
/// to (not including) `through_ms`: `seen(bin)` and `baseline(bin)` give what the live series
/// was fed, and bins where `paused(bin)` are passed over as the live series passed them.
/// Episodes run as live (their resolutions restart the recursion); the alerts are dropped. Fed
/// what the live series was fed, it reproduces it exactly.
#[allow(clippy::too_many_arguments)]
fn replay(
    settings: &DetectionSettings,
    key: SeriesKey<'_>,
    rule: &OpeningRule,
    first_bin_ms: i64,
    through_ms: i64,
    paused: impl Fn(i64) -> bool,
    mut seen: impl FnMut(i64) -> (u64, f64),
    mut baseline: impl FnMut(i64) -> Baseline,
) -> Vec<LastBin> {
    let mut series = Series::new(settings.params, first_bin_ms);
    let mut out = Vec::new();
    let mut dropped = Vec::new();
    while series.next_bin_ms < through_ms {
        let bin = series.next_bin_ms;
        if paused(bin) {
            series.next_bin_ms += settings.bin_width_ms;
            continue;
        }
        let fleet = baseline(bin);
        series.feed(settings, key, seen(bin), fleet, rule, &mut dropped);
        series.complete_last(fleet);
        out.extend(series.last.clone());
    }
    out
}

/// The vehicle's series of `class` bin by bin ([`replay`]): its own bins against the fleet
/// sums of its partition's vehicles (`partition`, the vehicle among them) through each bin.
pub fn replay_vehicle(
    settings: &DetectionSettings,
    class: HazardClass,
    partition: &dyn VehicleSet,
    bins: &BinMap,
    through_ms: i64,
) -> Vec<LastBin> {
    let Some(&first) = bins.keys().next() else {
        return Vec::new();
    };
    let mut per_bin: BTreeMap<i64, BinStats> = BTreeMap::new();
    partition.for_each(&mut |_, vehicle_bins| {
        for (&bin, stats) in vehicle_bins.range(..through_ms) {
            per_bin.entry(bin).or_default().add(stats);
        }
    });
    let mut fleet = FleetSums::default();
    let mut next_push = per_bin.keys().next().copied().unwrap_or(first);
    let key = vehicle_key("", class, settings);
    replay(
        settings,
        key,
        &settings.rules.vehicle[class],
        first,
        through_ms,
        |bin| settings.paused(bins, bin),
        |bin| stats_of(settings, bins.get(&bin), class),
        |bin| {
            while next_push <= bin {
                fleet.push(
                    settings,
                    per_bin.get(&next_push).copied().unwrap_or_default(),
                );
                next_push += settings.bin_width_ms;
            }
            settings.vehicle_baseline(class, &fleet)
        },
    )
}

/// The cohort's series of `class` bin by bin ([`replay`]), from [`cohort_history`].
pub fn replay_cohort(
    settings: &DetectionSettings,
    class: HazardClass,
    history: &(i64, BTreeMap<i64, BinStats>),
    through_ms: i64,
) -> Vec<LastBin> {
    let (first, bins) = history;
    let key = SeriesKey {
        kind: KeyKind::Cohort,
        key: "",
        class,
        prior_source: "members",
    };
    replay(
        settings,
        key,
        &settings.rules.cohort,
        *first,
        through_ms,
        |_| false,
        |bin| cohort_stats_of(settings, bins.get(&bin), class),
        |_| settings.cohort_baseline(),
    )
}

/// The bins a cohort's live series was fed, up to `through_ms`, and the bin it started from (as
/// [`super::cohorts::CohortAggregator::close`] builds them): from the first bin with a member
/// on, each bin sums the vehicles in the cohort at that bin. `None` if it never had a member.
pub fn cohort_history(
    settings: &DetectionSettings,
    vehicles: &dyn VehicleSet,
    cohort: &str,
    through_ms: i64,
) -> Option<(i64, BTreeMap<i64, BinStats>)> {
    let width = settings.bin_width_ms;
    let mut fleet_first: Option<i64> = None;
    vehicles.for_each(&mut |_, bins| {
        if let Some(&b) = bins.keys().next() {
            fleet_first = Some(fleet_first.map_or(b, |f| f.min(b)));
        }
    });
    let mut bins = BTreeMap::new();
    let mut bin = fleet_first?;
    while bin < through_ms {
        if let Some(sum) = cohort_sums(settings, vehicles, bin).remove(cohort) {
            bins.insert(bin, sum);
        }
        bin += width;
    }
    let first = *bins.keys().next()?;
    Some((first, bins))
}
