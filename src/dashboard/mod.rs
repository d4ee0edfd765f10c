//! The dashboard: five pages, a page per vehicle and per cohort, and the JSON behind each, built
//! from the engine's live state (and the group view's, for other processes' partitions), the
//! alerts and the last refit. Pure: the HTTP edge gathers [`Sources`] and serves what these
//! functions return. Each page's data is one struct deriving `Serialize` (a renamed field fails
//! to compile, not to show): served as its JSON, and the only thing its HTML is rendered from,
//! every number tied to its place in that JSON, so page and API agree.
//!
//! | page | path | JSON |
//! |---|---|---|
//! | executive summary | `/` | `/api/summary` |
//! | regression analysis | `/regressions`, `/regressions/episode?id=` | `/api/regressions`, `/api/regressions/episode?id=` |
//! | rare event detection | `/rare-events` | `/api/rare-events` |
//! | vehicle performance | `/vehicles?q=` | `/api/vehicle-ranking?q=` |
//! | model diagnostics | `/diagnostics` | `/api/diagnostics` |
//! | one vehicle | `/vehicles/{id}` | `/api/vehicles/{id}/page` |
//! | one cohort | `/cohorts/{key}` | `/api/cohorts/{key}` |
//!
//! Under `run` with the group view, every page answers for the whole consumer group and its
//! JSON's `coverage` says how much of it (see [`crate::engine::view`]).

pub mod coverage;
pub mod diagnostics;
pub mod html;
pub mod keys;
pub mod links;
pub mod rare_events;
pub mod recent;
pub mod regressions;
pub mod summary;
pub mod svg;
pub mod vehicles;

use std::collections::{BTreeMap, HashMap, HashSet};

pub use coverage::Coverage;

use crate::engine::detection::{DetectionSettings, Series, VehicleSet};
use crate::engine::{BinMap, BinStats, HeldFleet, VehicleMeta, VehicleState};
use crate::generator::GroundTruth;
use crate::model::RegressionAlert;

/// The vehicles the pages show: this process's (live), and where it reads the group view, the
/// other processes' (as of their last commit), of the partitions it does not hold.
#[derive(Clone, Copy)]
pub struct FleetVehicles<'a> {
    local: &'a HeldFleet,
    /// Where this process's vehicles' closed bins that left memory are read back from.
    history: Option<&'a dyn recent::VehicleHistory>,
    remote: Option<(
        &'a HashMap<String, VehicleState>,
        &'a HashSet<crate::engine::PartitionId>,
    )>,
}

impl<'a> FleetVehicles<'a> {
    /// This process's vehicles only.
    pub fn local(local: &'a HeldFleet) -> FleetVehicles<'a> {
        FleetVehicles {
            local,
            history: None,
            remote: None,
        }
    }

    /// Reads the closed bins of this process's vehicles that left memory from `history` (else
    /// the vehicles are as the engine holds them).
    pub fn with_history(self, history: &'a dyn recent::VehicleHistory) -> FleetVehicles<'a> {
        FleetVehicles {
            history: Some(history),
            ..self
        }
    }

    /// This process's vehicles, and `remote`'s of partitions not in `held`.
    pub fn with_group(
        local: &'a HeldFleet,
        remote: &'a HashMap<String, VehicleState>,
        held: &'a HashSet<crate::engine::PartitionId>,
    ) -> FleetVehicles<'a> {
        FleetVehicles {
            local,
            history: None,
            remote: Some((remote, held)),
        }
    }

    fn remote(&self) -> impl Iterator<Item = (&'a String, &'a VehicleState)> + 'a {
        let local = self.local;
        self.remote.into_iter().flat_map(move |(remote, held)| {
            remote
                .iter()
                .filter(move |(id, v)| !held.contains(&v.partition) && !local.contains_key(id))
        })
    }

    /// Calls `f` with each vehicle (this process's first), with all the bins it keeps.
    pub fn for_each(&self, f: &mut dyn FnMut(&str, &VehicleState)) {
        // Those with bins in the store are read once the map is let go: no lock of the
        // engine's is held through a read of the store.
        let mut with_stored_bins = Vec::new();
        self.local.for_each(|id, vehicle| {
            if self.history.is_some() && vehicle.stored.count > 0 {
                with_stored_bins.push(id.to_string());
            } else {
                f(id, vehicle);
            }
        });
        for id in with_stored_bins {
            if let Some(vehicle) = self.get(&id) {
                f(&id, &vehicle);
            }
        }
        for (id, vehicle) in self.remote() {
            f(id, vehicle);
        }
    }

    /// Whether any vehicle is such.
    pub fn any(&self, mut test: impl FnMut(&VehicleState) -> bool) -> bool {
        let mut found = false;
        self.for_each(&mut |_, v| found = found || test(v));
        found
    }

    /// The vehicle, with all the bins it keeps.
    pub fn get(&self, id: &str) -> Option<VehicleState> {
        let local = self.local.get(id);
        if let Some(vehicle) = local {
            return Some(match self.history {
                Some(history) if vehicle.stored.count > 0 => with_stored_bins(vehicle, history, id),
                _ => vehicle,
            });
        }
        let (remote, held) = self.remote?;
        remote
            .get(id)
            .filter(|v| !held.contains(&v.partition))
            .cloned()
    }

    pub fn len(&self) -> usize {
        self.local.len() + self.remote().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The vehicles of source partition `partition`.
    pub fn partition(&self, partition: crate::engine::PartitionId) -> impl VehicleSet + '_ {
        PartitionOf(*self, partition)
    }
}

impl VehicleSet for FleetVehicles<'_> {
    fn for_each(&self, f: &mut dyn FnMut(&VehicleMeta, &BinMap)) {
        FleetVehicles::for_each(self, &mut |_, v| f(&v.meta, &v.bins));
    }
}

struct PartitionOf<'a>(FleetVehicles<'a>, crate::engine::PartitionId);

impl VehicleSet for PartitionOf<'_> {
    fn for_each(&self, f: &mut dyn FnMut(&VehicleMeta, &BinMap)) {
        self.0.for_each(&mut |_, v| {
            if v.partition == self.1 {
                f(&v.meta, &v.bins);
            }
        });
    }
}

/// `vehicle` with its bins that only the store holds read back from `history` (if they cannot
/// be read, its page shows the bins in memory; its totals count them all the same).
fn with_stored_bins(
    mut vehicle: VehicleState,
    history: &dyn recent::VehicleHistory,
    id: &str,
) -> VehicleState {
    let Some(stored) = history.stored_bins(vehicle.partition, id) else {
        return vehicle;
    };
    for (&bin, stats) in stored.iter() {
        // A bin in memory is the newer.
        if !vehicle.bins.contains_key(&bin) {
            vehicle.bins.insert(bin, *stats);
        }
    }
    vehicle.stored = Default::default();
    vehicle
}

/// What the pages read.
pub struct Sources<'a> {
    pub vehicles: FleetVehicles<'a>,
    /// Cohort key -> one series per hazard class.
    pub cohorts: &'a BTreeMap<String, crate::model::ByClass<Series>>,
    /// Each source partition's fleet sums as of the last commit point.
    pub fleet:
        &'a std::collections::HashMap<crate::engine::PartitionId, crate::engine::PartitionView>,
    pub settings: &'a DetectionSettings,
    /// Every alert published, in any order.
    pub alerts: &'a [RegressionAlert],
    /// The last refit's model run as the store records it.
    pub model_run: Option<&'a crate::refit::run::ModelRun>,
    /// The review policy and budget, when critical events are reviewed under a budget.
    pub sampling: Option<(&'a str, f64)>,
    /// The injected regressions, where the stream is a simulation that knows them.
    pub truth: Option<&'a GroundTruth>,
    /// Where a vehicle page reads the vehicle's latest records (the store's facts).
    pub history: &'a dyn recent::VehicleHistory,
    /// A regression counts as detected when an alert opened within this many days of onset.
    pub horizon_days: f64,
}

/// Days per period of the pages' time charts.
pub const PERIOD_DAYS: i64 = 7;

/// The fleet's bins summed over vehicles and over periods of [`PERIOD_DAYS`], by period start.
pub fn fleet_periods(vehicles: &FleetVehicles<'_>) -> BTreeMap<i64, BinStats> {
    let period_ms = PERIOD_DAYS * 86_400_000;
    let mut periods: BTreeMap<i64, BinStats> = BTreeMap::new();
    vehicles.for_each(&mut |_, vehicle| {
        for (start, stats) in &vehicle.bins {
            periods
                .entry(start.div_euclid(period_ms) * period_ms)
                .or_default()
                .add(stats);
        }
    });
    periods
}

/// The critical-event count of `stats` as the fleet knows it: the Horvitz-Thompson estimate
/// and its variance under a review budget, the observed count (`None`: a Poisson count)
/// otherwise.
pub fn critical_estimate(stats: &BinStats, sampled: bool) -> (f64, Option<f64>) {
    if sampled {
        let (estimate, variance) = stats.ht_critical();
        (estimate, Some(variance))
    } else {
        (stats.critical as f64, None)
    }
}

/// Events per 1000 exposure hours with a 95% interval ([`Rate::of`]).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Rate {
    pub estimate: f64,
    pub standard_error: f64,
    /// `None` without exposure.
    pub rate_per_1000h: Option<f64>,
    pub rate_per_1000h_ci95: [Option<f64>; 2],
}

impl Rate {
    /// The rate of `estimate` events in `hours`: its interval normal on the estimate's
    /// variance (Horvitz-Thompson), or for an observed count k (`variance` `None`) the exact
    /// Poisson (Garwood) interval, Gamma(k, 1) at 2.5% to Gamma(k + 1, 1) at 97.5%.
    pub fn of(estimate: f64, variance: Option<f64>, hours: f64) -> Rate {
        let per_1000h = |events: f64| (hours > 0.0).then(|| events / hours * 1000.0);
        let (se, low, high) = match variance {
            Some(variance) => {
                let se = variance.sqrt();
                (se, (estimate - 1.96 * se).max(0.0), estimate + 1.96 * se)
            }
            None => {
                let quantile = |shape: f64, q: f64| {
                    crate::detect::hazard_ratio::GammaRate { shape, rate: 1.0 }
                        .quantile(q)
                        .unwrap_or(0.0)
                };
                let low = if estimate > 0.0 {
                    quantile(estimate, 0.025)
                } else {
                    0.0
                };
                (estimate.sqrt(), low, quantile(estimate + 1.0, 0.975))
            }
        };
        Rate {
            estimate,
            standard_error: se,
            rate_per_1000h: per_1000h(estimate),
            rate_per_1000h_ci95: [per_1000h(low), per_1000h(high)],
        }
    }

    /// The rate per 1000 h and its interval.
    pub fn per_1000h(&self) -> [Option<f64>; 3] {
        let [low, high] = self.rate_per_1000h_ci95;
        [self.rate_per_1000h, low, high]
    }

    /// `rate [low, high]` of the rate at `at` in the page's JSON.
    pub fn html(&self, at: &str, decimals: usize) -> String {
        html::interval_at(
            self.per_1000h(),
            at,
            [
                "rate_per_1000h",
                "rate_per_1000h_ci95/0",
                "rate_per_1000h_ci95/1",
            ],
            decimals,
        )
    }
}

#[cfg(test)]
mod tests;
