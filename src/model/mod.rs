//! Telemetry event types: what a vehicle publishes, decoded.
//!
//! Owns the in-memory shape of `safetel.v1.TelemetryEvent` and its enums, the hazard classes an
//! event counts towards, and the semantic validation every decoded event passes before it reaches
//! state. Knows nothing of bytes (see `codec`) or of state (see `engine`). Strings are `Cow` so the
//! decoder can borrow from the record buffer and the generator can own its data, with one type.

mod alert;
mod by_class;
mod review;
mod validate;

use std::borrow::Cow;

pub use alert::{AlertStatus, KeyKind, RegressionAlert, utc_date, utc_time};
pub use by_class::ByClass;
pub use review::{ReviewRequest, ReviewResult};
pub use validate::{
    MAX_EVENT_TIME_MS, MAX_REVIEWED_EVENTS, MIN_EVENT_TIME_MS, TRIP_DURATION_TOLERANCE_S,
    TRIP_DURATION_TOLERANCE_SHARE, ValidationError, validate,
};

/// One telemetry record.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryEvent<'a> {
    pub vehicle_id: Cow<'a, str>,
    /// Event time, milliseconds since the Unix epoch (UTC).
    pub event_time_ms: i64,
    pub payload: Payload<'a>,
}

/// The union branch of a telemetry record.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload<'a> {
    Trip(TripSummary<'a>),
    Safety(SafetyEvent<'a>),
    Mode(ModeTransition<'a>),
    /// The review service's answer to a review request (its own schema, id 5).
    Review(ReviewResult<'a>),
}

/// Sent when a trip ends; the trip's duration is the exposure it contributes.
#[derive(Debug, Clone, PartialEq)]
pub struct TripSummary<'a> {
    pub trip_id: Cow<'a, str>,
    pub driver_id: Cow<'a, str>,
    pub start_time_ms: i64,
    pub end_time_ms: i64,
    pub distance_km: f64,
    pub duration_s: f64,
    pub mode: DrivingMode,
    pub road_type: RoadType,
    pub weather: Weather,
    pub night: bool,
    pub firmware_version: Cow<'a, str>,
    pub vehicle_model: Cow<'a, str>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SafetyEvent<'a> {
    pub event_id: Cow<'a, str>,
    pub trip_id: Cow<'a, str>,
    pub event_type: EventType,
    pub severity: Severity,
    pub speed_kph: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModeTransition<'a> {
    pub transition_id: Cow<'a, str>,
    pub trip_id: Cow<'a, str>,
    pub from_mode: DrivingMode,
    pub to_mode: DrivingMode,
    pub reason: TransitionReason,
}

/// Declares a C-like enum whose variants map one to one, in order, to the symbols of an Avro enum.
macro_rules! avro_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $symbol:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        pub enum $name { $(#[serde(rename = $symbol)] $variant),+ }

        impl $name {
            /// Every variant, in the order of the Avro symbols.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The Avro symbol index of this variant.
            pub fn index(self) -> u32 {
                self as u32
            }

            /// The variant at an Avro symbol index, if there is one.
            pub fn from_index(index: u32) -> Option<Self> {
                Self::ALL.get(index as usize).copied()
            }

            /// The Avro symbol.
            pub fn symbol(self) -> &'static str {
                match self { $($name::$variant => $symbol),+ }
            }

            /// The variant with this Avro symbol, if there is one.
            pub fn from_symbol(symbol: &str) -> Option<Self> {
                match symbol { $($symbol => Some($name::$variant),)+ _ => None }
            }
        }
    };
}

avro_enum!(DrivingMode { Manual = "MANUAL", Assisted = "ASSISTED", Autonomous = "AUTONOMOUS" });
avro_enum!(RoadType { Urban = "URBAN", Highway = "HIGHWAY", Rural = "RURAL" });
avro_enum!(Weather { Clear = "CLEAR", Rain = "RAIN", Snow = "SNOW", Fog = "FOG" });
avro_enum!(EventType {
    HardBrake = "HARD_BRAKE",
    HardAcceleration = "HARD_ACCELERATION",
    LaneDeparture = "LANE_DEPARTURE",
    Tailgating = "TAILGATING",
    NearMiss = "NEAR_MISS",
    Collision = "COLLISION",
});
avro_enum!(Severity { Low = "LOW", Medium = "MEDIUM", High = "HIGH", Critical = "CRITICAL" });
avro_enum!(TransitionReason {
    Planned = "PLANNED",
    DriverInitiated = "DRIVER_INITIATED",
    SystemRequest = "SYSTEM_REQUEST",
    SystemFault = "SYSTEM_FAULT",
});

/// The hazard classes whose rates the detector watches (docs/design.md §3).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum HazardClass {
    /// NEAR_MISS or COLLISION, or any event of severity HIGH or above.
    Critical,
    /// An unplanned AUTONOMOUS -> MANUAL transition.
    Disengagement,
}

impl HazardClass {
    pub const ALL: [HazardClass; 2] = [HazardClass::Critical, HazardClass::Disengagement];
    pub const COUNT: usize = HazardClass::ALL.len();

    /// Its place in [`HazardClass::ALL`] (where [`ByClass`] keeps its value): `ALL` lists the
    /// variants in their declared order.
    pub const fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            HazardClass::Critical => "critical",
            HazardClass::Disengagement => "disengagement",
        }
    }
}

impl SafetyEvent<'_> {
    pub fn is_critical(&self) -> bool {
        matches!(self.event_type, EventType::NearMiss | EventType::Collision)
            || self.severity >= Severity::High
    }
}

impl ModeTransition<'_> {
    pub fn is_disengagement(&self) -> bool {
        self.from_mode == DrivingMode::Autonomous
            && self.to_mode == DrivingMode::Manual
            && self.reason != TransitionReason::Planned
    }
}

impl<'a> TelemetryEvent<'a> {
    /// The hazard class this event counts towards, if any.
    pub fn hazard_class(&self) -> Option<HazardClass> {
        match &self.payload {
            Payload::Safety(e) if e.is_critical() => Some(HazardClass::Critical),
            Payload::Mode(m) if m.is_disengagement() => Some(HazardClass::Disengagement),
            // Several events: the engine counts them one by one.
            _ => None,
        }
    }

    /// The id duplicates are recognised by: trip id, safety event id or transition id.
    pub fn record_id(&self) -> &str {
        match &self.payload {
            Payload::Trip(t) => &t.trip_id,
            Payload::Safety(e) => &e.event_id,
            Payload::Mode(m) => &m.transition_id,
            Payload::Review(r) => &r.trip_id,
        }
    }

    pub fn kind(&self) -> RecordKind {
        match self.payload {
            Payload::Trip(_) => RecordKind::Trip,
            Payload::Safety(_) => RecordKind::Safety,
            Payload::Mode(_) => RecordKind::Mode,
            Payload::Review(_) => RecordKind::Review,
        }
    }

    /// A copy that owns all its strings.
    pub fn into_owned(self) -> TelemetryEvent<'static> {
        fn own(s: Cow<'_, str>) -> Cow<'static, str> {
            Cow::Owned(s.into_owned())
        }
        let payload = match self.payload {
            Payload::Trip(t) => Payload::Trip(TripSummary {
                trip_id: own(t.trip_id),
                driver_id: own(t.driver_id),
                firmware_version: own(t.firmware_version),
                vehicle_model: own(t.vehicle_model),
                ..t
            }),
            Payload::Safety(e) => Payload::Safety(SafetyEvent {
                event_id: own(e.event_id),
                trip_id: own(e.trip_id),
                ..e
            }),
            Payload::Mode(m) => Payload::Mode(ModeTransition {
                transition_id: own(m.transition_id),
                trip_id: own(m.trip_id),
                ..m
            }),
            Payload::Review(r) => Payload::Review(ReviewResult {
                trip_id: own(r.trip_id),
                events: r
                    .events
                    .into_iter()
                    .map(|(time, e)| {
                        let e = SafetyEvent {
                            event_id: own(e.event_id),
                            trip_id: own(e.trip_id),
                            ..e
                        };
                        (time, e)
                    })
                    .collect(),
            }),
        };
        TelemetryEvent {
            vehicle_id: own(self.vehicle_id),
            event_time_ms: self.event_time_ms,
            payload,
        }
    }
}

/// The kinds of record on the telemetry topic, for metrics and facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    Trip,
    Safety,
    Mode,
    Review,
    /// Not telemetry: a source partition's cohort report on the repartition topic.
    CohortReport,
}

impl RecordKind {
    /// The telemetry kinds.
    pub const ALL: [RecordKind; 4] = [
        RecordKind::Trip,
        RecordKind::Safety,
        RecordKind::Mode,
        RecordKind::Review,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RecordKind::Trip => "trip",
            RecordKind::Safety => "safety_event",
            RecordKind::Mode => "mode_transition",
            RecordKind::Review => "review_result",
            RecordKind::CohortReport => "cohort_report",
        }
    }
}

/// Exposure in whole milliseconds of driving, so sums are exact and independent of order.
pub fn exposure_ms(duration_s: f64) -> u64 {
    (duration_s * 1000.0).round() as u64
}
