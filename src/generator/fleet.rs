//! The simulated fleet: vehicles with their attributes and risks, and one day of their telemetry.
//!
//! Each (vehicle, day) draws from its own RNG stream seeded from (seed, vehicle, day), so a
//! vehicle's data does not depend on fleet size or on what other options consume.

use std::borrow::Cow;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;
use rand_distr::{Distribution, Gamma, LogNormal, Poisson};

use super::config::GeneratorConfig;
use crate::model::*;

pub const DAY_MS: i64 = 86_400_000;
const MINUTE_MS: i64 = 60_000;

/// The random stream of a (vehicle, day): ChaCha12, what `rand`'s `StdRng` is (the same numbers
/// from the same seed), named so that a day generated trip by trip can hold its position
/// ([`Fleet::resume_day`]) instead of the generator.
pub type DayRng = ChaCha12Rng;

/// A regression the generator injected: the ground truth `evaluate` scores against.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct InjectedRegression {
    /// `VEHICLE` or `COHORT`.
    pub key_kind: String,
    /// Vehicle id, or `firmware:<version>` for a cohort.
    pub key: String,
    pub hazard_class: HazardClass,
    pub onset_ms: i64,
    pub true_hr: f64,
    /// For a cohort: the vehicles whose hazard rose with it (their own alerts are true ones).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<String>,
}

/// A vehicle's fixed attributes and risks.
#[derive(Debug, Clone)]
pub struct Vehicle {
    pub index: usize,
    pub id: String,
    pub model: String,
    pub firmware: String,
    pub drivers: u32,
    /// Multiplies every hazard of this vehicle.
    pub frailty: f64,
    /// A fault of its own: (class, onset day, hazard ratio).
    pub fault: Option<(HazardClass, u32, f64)>,
    /// Gets the rolled-out firmware on the rollout day.
    pub in_rollout: bool,
}

pub struct Fleet {
    pub config: GeneratorConfig,
    pub start_ms: i64,
    pub vehicles: Vec<Vehicle>,
    pub truth: Vec<InjectedRegression>,
}

fn stream_rng(seed: u64, a: u64, b: u64) -> DayRng {
    // SplitMix-style mixing so neighbouring (vehicle, day) pairs get unrelated streams.
    let mut x =
        seed ^ a.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ b.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    DayRng::seed_from_u64(x ^ (x >> 31))
}

impl Fleet {
    pub fn new(config: GeneratorConfig, start_ms: i64) -> Fleet {
        let mut rng = stream_rng(config.seed, u64::MAX, 0);
        let frailty = LogNormal::new(0.0, config.vehicle_frailty_sd).expect("sd validated");
        let r = &config.regressions;
        let (third, two_thirds) = (
            config.days / 3,
            (2 * config.days / 3).max(config.days / 3 + 1),
        );
        let mut truth = Vec::new();
        let vehicles: Vec<Vehicle> = (0..config.vehicles)
            .map(|index| {
                let id = format!("veh-{index:05}");
                let fault = (rng.random::<f64>() < r.vehicle_fault_fraction).then(|| {
                    let class = if rng.random::<f64>() < 0.7 {
                        HazardClass::Critical
                    } else {
                        HazardClass::Disengagement
                    };
                    let day = rng.random_range(third..two_thirds);
                    let hr = rng.random_range(r.vehicle_fault_hr_min..=r.vehicle_fault_hr_max);
                    truth.push(InjectedRegression {
                        key_kind: "VEHICLE".into(),
                        key: id.clone(),
                        hazard_class: class,
                        onset_ms: start_ms + i64::from(day) * DAY_MS,
                        true_hr: hr,
                        members: Vec::new(),
                    });
                    (class, day, hr)
                });
                Vehicle {
                    index,
                    model: config.vehicle_models[rng.random_range(0..config.vehicle_models.len())]
                        .clone(),
                    firmware: config.firmware_versions
                        [rng.random_range(0..config.firmware_versions.len())]
                    .clone(),
                    drivers: rng.random_range(1..=3),
                    frailty: frailty.sample(&mut rng),
                    fault,
                    in_rollout: r
                        .firmware_rollout
                        .as_ref()
                        .is_some_and(|f| rng.random::<f64>() < f.share),
                    id,
                }
            })
            .collect();
        if let Some(rollout) = &r.firmware_rollout
            && rollout.day < config.days
            && vehicles.iter().any(|v| v.in_rollout)
        {
            truth.push(InjectedRegression {
                key_kind: "COHORT".into(),
                key: format!("firmware:{}", rollout.version),
                hazard_class: HazardClass::Critical,
                onset_ms: start_ms + i64::from(rollout.day) * DAY_MS,
                true_hr: rollout.hr_critical,
                members: vehicles
                    .iter()
                    .filter(|v| v.in_rollout)
                    .map(|v| v.id.clone())
                    .collect(),
            });
        }
        Fleet {
            config,
            start_ms,
            vehicles,
            truth,
        }
    }

    /// The firmware a vehicle runs on `day`, and the critical-event hazard ratio it brings.
    fn firmware_on<'a>(&'a self, vehicle: &'a Vehicle, day: u32) -> (&'a str, f64) {
        match &self.config.regressions.firmware_rollout {
            Some(r) if vehicle.in_rollout && day >= r.day => (&r.version, r.hr_critical),
            _ => (&vehicle.firmware, 1.0),
        }
    }

    /// Where `day` starts (ms since the epoch).
    pub fn day_start(&self, day: u32) -> i64 {
        self.start_ms + i64::from(day) * DAY_MS
    }

    /// All telemetry of one vehicle on one day, in the order generated (not in time order): the
    /// whole day at once, which the hourly stream is checked against.
    #[cfg(test)]
    pub(crate) fn vehicle_day(
        &self,
        vehicle: &Vehicle,
        day: u32,
        out: &mut Vec<TelemetryEvent<'static>>,
    ) {
        let mut starts = Vec::new();
        let mut rng = self.plan_day(vehicle, day, &mut starts);
        let mut free_from = self.day_start(day);
        for (n, planned) in starts.into_iter().enumerate() {
            let Some(start) = self.trip_start(day, planned, free_from) else {
                break;
            };
            free_from = self.trip(vehicle, day, n, start, &mut rng, out);
        }
    }

    /// Begins `vehicle`'s `day`: its random stream, and its trips' planned starts appended to
    /// `starts` in order. The trips follow from the stream where this leaves it
    /// ([`Fleet::trip`], in order, from [`Fleet::trip_start`]).
    pub fn plan_day(&self, vehicle: &Vehicle, day: u32, starts: &mut Vec<i64>) -> DayRng {
        let mut rng = stream_rng(self.config.seed, vehicle.index as u64, u64::from(day));
        let day_start = self.day_start(day);
        let trips = poisson(&mut rng, self.config.trips_per_day);
        let first = starts.len();
        starts.extend((0..trips).map(|_| day_start + rng.random_range(0..DAY_MS)));
        starts[first..].sort_unstable();
        rng
    }

    /// `vehicle`'s random stream on `day`, `word_pos` words in (where [`DayRng::get_word_pos`]
    /// left it): a day generated trip by trip holds a position, not a generator.
    pub fn resume_day(&self, vehicle: &Vehicle, day: u32, word_pos: u128) -> DayRng {
        let mut rng = stream_rng(self.config.seed, vehicle.index as u64, u64::from(day));
        rng.set_word_pos(word_pos);
        rng
    }

    /// When a trip planned at `planned` starts, the vehicle being free from `free_from`; `None`
    /// once that is past the day (the day's later trips are not driven either).
    pub fn trip_start(&self, day: u32, planned: i64, free_from: i64) -> Option<i64> {
        let start = planned.max(free_from);
        (start < self.day_start(day) + DAY_MS).then_some(start)
    }

    /// Generates trip `n` of `vehicle`'s `day`, starting at `start`, into `out`, drawing from
    /// `rng` where the previous trip left it; returns when the vehicle is free again. Every event
    /// of the trip is at or after `start`.
    pub fn trip(
        &self,
        vehicle: &Vehicle,
        day: u32,
        n: usize,
        start: i64,
        rng: &mut DayRng,
        out: &mut Vec<TelemetryEvent<'static>>,
    ) -> i64 {
        let rates = self.day_rates(vehicle, day);
        let minutes = rates.trip_minutes.sample(rng).clamp(2.0, 240.0);
        let duration_ms = (minutes * MINUTE_MS as f64).round() as i64;
        let end = start + duration_ms;
        let trip_id = format!("{}-d{day:03}-t{n}", vehicle.id);
        let hours = duration_ms as f64 / 3_600_000.0;
        let mode = match rng.random::<f64>() {
            u if u < self.config.autonomous_share => DrivingMode::Autonomous,
            u if u < self.config.autonomous_share + self.config.assisted_share => {
                DrivingMode::Assisted
            }
            _ => DrivingMode::Manual,
        };
        let road_type = pick(
            rng,
            &[
                (RoadType::Urban, 0.5),
                (RoadType::Highway, 0.3),
                (RoadType::Rural, 0.2),
            ],
        );
        let weather = pick(
            rng,
            &[
                (Weather::Clear, 0.7),
                (Weather::Rain, 0.18),
                (Weather::Snow, 0.07),
                (Weather::Fog, 0.05),
            ],
        );
        let hour = (start - rates.day_start) / 3_600_000;
        let night = !(6..20).contains(&hour);
        let risk = stratum_relative_risk(road_type, weather, night);
        let at = |rng: &mut DayRng| start + rng.random_range(0..duration_ms.max(1));
        let event = |time: i64, payload: Payload<'static>| TelemetryEvent {
            vehicle_id: Cow::Owned(vehicle.id.clone()),
            event_time_ms: time,
            payload,
        };

        let mut seq = 0;
        let mut next_id = |prefix: char| {
            seq += 1;
            Cow::Owned(format!("{trip_id}-{prefix}{seq}"))
        };
        for _ in 0..poisson(rng, self.config.low_events_per_hour * risk * hours) {
            let event_type = pick(
                rng,
                &[
                    (EventType::HardBrake, 0.4),
                    (EventType::HardAcceleration, 0.25),
                    (EventType::LaneDeparture, 0.2),
                    (EventType::Tailgating, 0.15),
                ],
            );
            let severity = if rng.random::<f64>() < 0.7 {
                Severity::Low
            } else {
                Severity::Medium
            };
            let safety = safety_event(rng, next_id('e'), &trip_id, event_type, severity);
            out.push(event(at(rng), Payload::Safety(safety)));
        }
        for _ in 0..poisson(rng, rates.critical * risk * hours) {
            let (event_type, severity) = pick(
                rng,
                &[
                    ((EventType::NearMiss, Severity::High), 0.7),
                    ((EventType::Collision, Severity::Critical), 0.1),
                    ((EventType::HardBrake, Severity::High), 0.2),
                ],
            );
            let safety = safety_event(rng, next_id('e'), &trip_id, event_type, severity);
            out.push(event(at(rng), Payload::Safety(safety)));
        }
        if mode == DrivingMode::Autonomous {
            let mut transition = |time, from_mode, to_mode, reason| {
                let mode = ModeTransition {
                    transition_id: next_id('m'),
                    trip_id: Cow::Owned(trip_id.clone()),
                    from_mode,
                    to_mode,
                    reason,
                };
                out.push(event(time, Payload::Mode(mode)));
            };
            transition(
                start,
                DrivingMode::Manual,
                DrivingMode::Autonomous,
                TransitionReason::Planned,
            );
            for _ in 0..poisson(rng, rates.disengagement * hours) {
                let time = at(rng);
                let reason = pick(
                    rng,
                    &[
                        (TransitionReason::DriverInitiated, 0.5),
                        (TransitionReason::SystemRequest, 0.3),
                        (TransitionReason::SystemFault, 0.2),
                    ],
                );
                transition(time, DrivingMode::Autonomous, DrivingMode::Manual, reason);
                transition(
                    time + 1,
                    DrivingMode::Manual,
                    DrivingMode::Autonomous,
                    TransitionReason::Planned,
                );
            }
            transition(
                end,
                DrivingMode::Autonomous,
                DrivingMode::Manual,
                TransitionReason::Planned,
            );
        }
        let trip = TripSummary {
            trip_id: Cow::Owned(trip_id.clone()),
            driver_id: Cow::Owned(format!(
                "drv-{:05}-{}",
                vehicle.index,
                rng.random_range(0..vehicle.drivers)
            )),
            start_time_ms: start,
            end_time_ms: end,
            distance_km: (hours * rng.random_range(20.0..90.0) * 1000.0).round() / 1000.0,
            duration_s: duration_ms as f64 / 1000.0,
            mode,
            road_type,
            weather,
            night,
            firmware_version: Cow::Owned(rates.firmware.to_string()),
            vehicle_model: Cow::Owned(vehicle.model.clone()),
        };
        out.push(event(end, Payload::Trip(trip)));
        end + MINUTE_MS
    }

    /// What `vehicle`'s trips on `day` draw on.
    fn day_rates<'a>(&'a self, vehicle: &'a Vehicle, day: u32) -> DayRates<'a> {
        let c = &self.config;
        let (firmware, firmware_hr) = self.firmware_on(vehicle, day);
        let fault_hr = |class: HazardClass| match vehicle.fault {
            Some((fault_class, onset, hr)) if fault_class == class && day >= onset => hr,
            _ => 1.0,
        };
        DayRates {
            day_start: self.day_start(day),
            firmware,
            critical: c.critical_per_hour
                * vehicle.frailty
                * firmware_hr
                * fault_hr(HazardClass::Critical),
            disengagement: c.disengagements_per_autonomous_hour
                * vehicle.frailty
                * fault_hr(HazardClass::Disengagement),
            trip_minutes: Gamma::new(2.0, c.mean_trip_minutes / 2.0).expect("validated"),
        }
    }
}

/// A vehicle's rates on one day: what its trips draw on.
struct DayRates<'a> {
    day_start: i64,
    firmware: &'a str,
    /// Critical events per hour of driving, before the stratum's risk.
    critical: f64,
    /// Disengagements per autonomous hour.
    disengagement: f64,
    trip_minutes: Gamma<f64>,
}

/// A safety event of a trip: its speed is drawn from `rng` (before the event's time is).
fn safety_event(
    rng: &mut DayRng,
    event_id: Cow<'static, str>,
    trip_id: &str,
    event_type: EventType,
    severity: Severity,
) -> SafetyEvent<'static> {
    SafetyEvent {
        event_id,
        trip_id: Cow::Owned(trip_id.to_string()),
        event_type,
        severity,
        speed_kph: rng.random_range(10.0..120.0),
    }
}

/// Relative risk of a stratum (road type x weather x night) against clear daytime rural roads.
pub fn stratum_relative_risk(road: RoadType, weather: Weather, night: bool) -> f64 {
    let road = match road {
        RoadType::Urban => 1.5,
        RoadType::Highway => 0.7,
        RoadType::Rural => 1.0,
    };
    let weather = match weather {
        Weather::Clear => 1.0,
        Weather::Rain => 1.5,
        Weather::Snow => 2.5,
        Weather::Fog => 2.0,
    };
    road * weather * if night { 1.4 } else { 1.0 }
}

fn poisson(rng: &mut DayRng, mean: f64) -> u64 {
    if mean <= 0.0 {
        return 0;
    }
    Poisson::new(mean)
        .map(|p| p.sample(rng) as u64)
        .unwrap_or(0)
}

fn pick<T: Copy>(rng: &mut DayRng, choices: &[(T, f64)]) -> T {
    let mut u = rng.random::<f64>() * choices.iter().map(|(_, w)| w).sum::<f64>();
    for (value, weight) in choices {
        if u < *weight {
            return *value;
        }
        u -= weight;
    }
    choices.last().expect("choices are not empty").0
}
