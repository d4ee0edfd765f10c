//! Bin closes and the change-point series they feed (DESIGN §3).
//!
//! Owns, per hazard class, one [`Series`] (detector + episode) per vehicle and per cohort
//! (`firmware:<version>`, `model:<name>`), when their bins close, and the alerts their episodes
//! produce. A vehicle's bin closes when its partition's watermark passes the bin's end plus the
//! allowed lateness: no record for it can be accepted after that, so what the detector sees does
//! not depend on timing. A cohort's bin closes when every partition has closed it, and sums the
//! bins of the vehicles that ran that firmware (or are that model) then. A cohort that appears
//! mid-stream, such as a new firmware version, starts from its members' own earlier bins, so its
//! detector compares the vehicles after the change with themselves before it. Cohort bins are
//! summed and closed by [`super::cohorts`].

use std::collections::BTreeMap;

use serde::Serialize;

use super::state::{BinStats, Prior, VehicleMeta, VehicleState};
use crate::config::DetectorConfig;
use crate::detect::{
    AlertStatus, BinUpdate, Detector, DetectorParams, Episode, EpisodeParams, EpisodeTracker,
    HazardRatioSummary, StateDecodeError,
};
use crate::model::{HazardClass, KeyKind, RegressionAlert, utc_date};

/// What the detection stage needs to know.
#[derive(Debug, Clone)]
pub struct DetectionSettings {
    pub params: DetectorParams,
    pub episodes: EpisodeParams,
    pub cohorts: Vec<String>,
    pub bin_width_ms: i64,
    pub allowed_lateness_ms: i64,
    /// Under a review budget the critical class sees reviewed trips only.
    pub reviewed: bool,
    /// The review policy's name, for the alerts (`full` without a budget).
    pub sampling_policy: &'static str,
}

impl DetectionSettings {
    pub fn new(detector: &DetectorConfig, bin_width_ms: i64, allowed_lateness_ms: i64) -> Self {
        DetectionSettings {
            params: detector.params(),
            episodes: detector.episodes(),
            cohorts: detector.cohorts.clone(),
            bin_width_ms,
            allowed_lateness_ms,
            reviewed: false,
            sampling_policy: "full",
        }
    }

    /// Bins a series keeps: a series silent for longer restarts from this far back.
    fn history_bins(&self) -> i64 {
        (self.params.max_run_length + self.params.window_bins) as i64
    }
}

/// The last closed bin of a series, as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LastBin {
    pub bin_start_ms: i64,
    pub p_regression: f64,
    pub map_run_length: usize,
    /// Start of the MAP segment.
    pub onset_ms: i64,
    pub hazard_ratio: Option<HazardRatioSummary>,
}

/// The change-point series of one key and hazard class.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Series {
    #[serde(skip)]
    pub detector: Detector,
    pub episode: EpisodeTracker,
    /// Start of the next bin to feed.
    pub next_bin_ms: i64,
    pub last: Option<LastBin>,
}

/// Whose series: for alert fields and ids.
#[derive(Debug, Clone, Copy)]
pub struct SeriesKey<'a> {
    pub kind: KeyKind,
    pub key: &'a str,
    pub class: HazardClass,
    /// `config` or `refit`: where the series' Gamma prior came from.
    pub prior_source: &'static str,
}

impl Series {
    pub fn new(params: DetectorParams, first_bin_ms: i64) -> Series {
        Series {
            detector: Detector::new(params).expect("parameters validated with the config"),
            episode: EpisodeTracker::default(),
            next_bin_ms: first_bin_ms,
            last: None,
        }
    }

    /// Feeds the bins from `next_bin_ms` up to (not including) `through_ms`; `stats_at` gives a
    /// bin's (events, exposure hours). Episode transitions become alerts in `alerts`, unless
    /// `alerts` is `None` (warming up on history). Returns the number of bins fed.
    pub fn advance(
        &mut self,
        settings: &DetectionSettings,
        key: SeriesKey<'_>,
        through_ms: i64,
        mut stats_at: impl FnMut(i64) -> (u64, f64),
        mut alerts: Option<&mut Vec<RegressionAlert>>,
    ) -> u64 {
        let width = settings.bin_width_ms;
        let oldest_useful = through_ms - settings.history_bins() * width;
        if self.next_bin_ms < oldest_useful {
            // Silent longer than the history kept: what came before no longer matters.
            self.detector = Detector::new(*self.detector.params()).expect("validated");
            self.next_bin_ms = oldest_useful;
        }
        let mut fed = 0;
        while self.next_bin_ms < through_ms {
            let bin = self.next_bin_ms;
            let (events, exposure) = stats_at(bin);
            let update = self.detector.update(events, exposure);
            let onset_ms = bin - (update.map_run_length as i64 - 1) * width;
            let closed_at = bin + width + settings.allowed_lateness_ms;
            if let Some(alerts) = alerts.as_deref_mut()
                && let Some((status, episode)) =
                    self.episode
                        .observe(&settings.episodes, &update, onset_ms, closed_at)
            {
                let params = self.detector.params();
                alerts.push(alert(
                    settings, params, key, status, &episode, &update, closed_at,
                ));
            }
            self.last = Some(LastBin {
                bin_start_ms: bin,
                p_regression: update.p_regression,
                map_run_length: update.map_run_length,
                onset_ms,
                hazard_ratio: update.hazard_ratio,
            });
            self.next_bin_ms += width;
            fed += 1;
        }
        fed
    }
}

/// The alert for an episode transition; `params` are the series' own (its prior may be a
/// refit's), so that the posterior mean rates match the hazard ratio.
fn alert(
    settings: &DetectionSettings,
    p: &DetectorParams,
    key: SeriesKey<'_>,
    status: AlertStatus,
    episode: &Episode,
    update: &BinUpdate,
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
    let hr = update.hazard_ratio;
    let rate = |events: u64, exposure: f64| (p.a0 + events as f64) / (p.b0 + exposure);
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
        rate_before: hr.map_or(f64::NAN, |h| rate(h.events_before, h.exposure_before)),
        rate_after: hr.map_or(f64::NAN, |h| rate(h.events_after, h.exposure_after)),
        events_before: hr.map_or(0, |h| h.events_before as i64),
        events_after: hr.map_or(0, |h| h.events_after as i64),
        exposure_before: hr.map_or(0.0, |h| h.exposure_before),
        exposure_after: hr.map_or(0.0, |h| h.exposure_after),
        prior_source: key.prior_source.into(),
        sampling_policy: settings.sampling_policy.into(),
    }
}

/// The detector settings of a vehicle: the refit's prior where there is one.
pub fn vehicle_params(settings: &DetectionSettings, prior: Option<&Prior>) -> DetectorParams {
    match prior {
        Some(p) => DetectorParams {
            a0: p.a0,
            b0: p.b0,
            ..settings.params
        },
        None => settings.params,
    }
}

/// Closes a vehicle's bins up to `through_ms`; returns the number of bin updates.
pub fn close_vehicle(
    settings: &DetectionSettings,
    vehicle_id: &str,
    vehicle: &mut VehicleState,
    prior: Option<&Prior>,
    through_ms: i64,
    alerts: &mut Vec<RegressionAlert>,
) -> u64 {
    let params = vehicle_params(settings, prior);
    if vehicle.series.is_empty() {
        match vehicle.bins.keys().next() {
            Some(&first) if first < through_ms => {
                vehicle.series = HazardClass::ALL
                    .iter()
                    .map(|_| Series::new(params, first))
                    .collect();
            }
            _ => return 0,
        }
    }
    for series in vehicle.series.iter_mut() {
        let current = series.detector.params();
        if (current.a0, current.b0) != (params.a0, params.b0) {
            // A refit moved the prior: it applies from the next bin on.
            let _ = series.detector.set_prior(params.a0, params.b0);
        }
    }
    let bins = &vehicle.bins;
    let mut fed = 0;
    for (series, class) in vehicle.series.iter_mut().zip(HazardClass::ALL) {
        let key = SeriesKey {
            kind: KeyKind::Vehicle,
            key: vehicle_id,
            class,
            prior_source: if prior.is_some() { "refit" } else { "config" },
        };
        fed += series.advance(
            settings,
            key,
            through_ms,
            |bin| stats_of(settings, bins.get(&bin), class),
            Some(alerts),
        );
    }
    fed
}

/// What a series of `class` sees of a bin: (events, exposure hours); under a review budget the
/// critical class sees reviewed trips only, with their risk-scaled exposure.
pub fn stats_of(
    settings: &DetectionSettings,
    stats: Option<&BinStats>,
    class: HazardClass,
) -> (u64, f64) {
    match (stats, class) {
        (None, _) => (0, 0.0),
        (Some(s), HazardClass::Critical) if settings.reviewed => {
            (s.reviewed_critical, s.reviewed_risk_exposure_hours())
        }
        (Some(s), _) => (s.count(class), s.exposure_hours()),
    }
}

/// The firmware a vehicle ran at the end of the bin starting at `bin_ms`.
pub fn firmware_at(meta: &VehicleMeta, bin_end_ms: i64) -> &str {
    meta.firmware_history
        .iter()
        .rev()
        .find(|(since, _)| *since < bin_end_ms)
        .or(meta.firmware_history.first())
        .map_or(meta.firmware_version.as_str(), |(_, fw)| fw.as_str())
}

/// Calls `f` with each cohort key a vehicle's bin counts towards (`firmware:<v>`, `model:<m>`),
/// built in one reused buffer.
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
            "model" => meta.vehicle_model.as_str(),
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
    fn for_each(&self, f: &mut dyn FnMut(&VehicleMeta, &BTreeMap<i64, BinStats>));
}

/// Per cohort, the sum of the vehicles' stats in the bin starting at `bin`. With
/// `members_at = Some((key, later_bin))`, only vehicles in cohort `key` at `later_bin` count.
fn cohort_sums(
    settings: &DetectionSettings,
    vehicles: &dyn VehicleSet,
    bin: i64,
    members_at: Option<(&str, i64)>,
) -> BTreeMap<String, BinStats> {
    let width = settings.bin_width_ms;
    let mut sums: BTreeMap<String, BinStats> = BTreeMap::new();
    let mut key = String::new();
    vehicles.for_each(&mut |meta, bins| {
        let Some(stats) = bins.get(&bin) else {
            return;
        };
        let mut add = |k: &str| match sums.get_mut(k) {
            Some(sum) => sum.add(stats),
            None => {
                sums.insert(k.to_string(), *stats);
            }
        };
        match members_at {
            Some((cohort, later)) => {
                let mut member = false;
                for_each_cohort_key(settings, meta, later + width, &mut key, |k| {
                    member |= k == cohort
                });
                if member {
                    add(cohort);
                }
            }
            None => for_each_cohort_key(settings, meta, bin + width, &mut key, add),
        }
    });
    sums
}

/// A series' conclusions bin by bin, recomputed from `bins` with `params` by a fresh detector
/// fed from `first_bin_ms` up to (not including) `through_ms`: what P(regression), the MAP run
/// length and the hazard ratio were after each bin. Fed the bins the live series was fed, from
/// where it started, with the prior it used, it reproduces the live series exactly.
pub fn replay(
    settings: &DetectionSettings,
    params: DetectorParams,
    class: HazardClass,
    bins: &BTreeMap<i64, BinStats>,
    first_bin_ms: i64,
    through_ms: i64,
) -> Vec<LastBin> {
    let mut series = Series::new(params, first_bin_ms);
    let key = SeriesKey {
        kind: KeyKind::Vehicle,
        key: "",
        class,
        prior_source: "config",
    };
    let width = settings.bin_width_ms;
    let mut out = Vec::new();
    let mut bin = first_bin_ms;
    while bin < through_ms {
        series.advance(
            settings,
            key,
            bin + width,
            |b| stats_of(settings, bins.get(&b), class),
            None,
        );
        out.extend(series.last);
        bin += width;
    }
    out
}

/// The bins a cohort's live series was fed, up to `through_ms`, and the bin it started from
/// (as [`Cohorts::close`] builds them): a cohort present from the fleet's first bin starts
/// there; one that appears later (a new firmware) starts `window_bins` earlier, on the bins of
/// the vehicles in it when it appeared; from then on each bin sums the vehicles in it at that
/// bin. `None` if the cohort never had a member.
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
        if let Some(sum) = cohort_sums(settings, vehicles, bin, None).remove(cohort) {
            bins.insert(bin, sum);
        }
        bin += width;
    }
    let appeared = *bins.keys().next()?;
    if Some(appeared) == fleet_first {
        return Some((appeared, bins));
    }
    let warm_from = appeared - settings.params.window_bins as i64 * width;
    let mut b = warm_from;
    while b < appeared {
        let members = cohort_sums(settings, vehicles, b, Some((cohort, appeared)));
        bins.insert(b, members.get(cohort).copied().unwrap_or_default());
        b += width;
    }
    Some((warm_from, bins))
}

/// Appends the series of one key (both classes) in a compact binary form.
pub fn encode_series(series: &[Series], out: &mut Vec<u8>) {
    out.push(series.len() as u8);
    for s in series {
        out.extend_from_slice(&s.next_bin_ms.to_le_bytes());
        match &s.episode.open {
            None => out.push(0),
            Some(e) => {
                out.push(1);
                out.extend_from_slice(&e.onset_ms.to_le_bytes());
                out.extend_from_slice(&e.opened_at_ms.to_le_bytes());
                out.extend_from_slice(&e.updates.to_le_bytes());
                out.extend_from_slice(&e.reported_hr.to_le_bytes());
                out.extend_from_slice(&e.bins_below.to_le_bytes());
            }
        }
        s.detector.encode(out);
    }
}

/// Reads what [`encode_series`] wrote. The last bin's summary is not stored: it is recomputed
/// at the next bin close.
pub fn decode_series(
    params: DetectorParams,
    bytes: &[u8],
) -> Result<Vec<Series>, StateDecodeError> {
    let mut reader = Fields(bytes);
    let count = reader.take::<1>()?[0];
    let mut out = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let next_bin_ms = i64::from_le_bytes(reader.take()?);
        let open = match reader.take::<1>()?[0] {
            0 => None,
            1 => Some(Episode {
                onset_ms: i64::from_le_bytes(reader.take()?),
                opened_at_ms: i64::from_le_bytes(reader.take()?),
                updates: u32::from_le_bytes(reader.take()?),
                reported_hr: f64::from_le_bytes(reader.take()?),
                bins_below: u32::from_le_bytes(reader.take()?),
            }),
            _ => return Err(StateDecodeError("episode flag")),
        };
        let (detector, rest) = Detector::decode(params, reader.0)?;
        reader.0 = rest;
        out.push(Series {
            detector,
            episode: EpisodeTracker { open },
            next_bin_ms,
            last: None,
        });
    }
    if !reader.0.is_empty() {
        return Err(StateDecodeError("trailing bytes"));
    }
    Ok(out)
}

struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], StateDecodeError> {
        let chunk = self.0.get(..N).ok_or(StateDecodeError("ends early"))?;
        self.0 = &self.0[N..];
        Ok(chunk.try_into().expect("N bytes"))
    }
}
