//! `safetel generate`: a seeded, deterministic fleet simulator.
//!
//! Owns the simulated fleet ([`fleet`]), the injected regressions (ground truth), and the fault
//! injection that turns clean telemetry into a realistic stream ([`faults`]): out of order, late,
//! duplicated and corrupt records; and the review service ([`review`]) that holds critical events
//! back until a trip's review is requested. Produces framed Avro records; where they go (Kafka, a file,
//! the in-process demo source) is the caller's business.

pub mod config;
mod faults;
pub mod fleet;
pub mod review;

use serde::Serialize;

pub use config::{
    FaultConfig, FirmwareRollout, GeneratorConfig, GeneratorConfigError, RegressionConfig,
};
pub use faults::{Corruption, Fault};
pub use fleet::{DAY_MS, Fleet, InjectedRegression};
pub use review::ReviewDesk;

use crate::codec;
use crate::model::TelemetryEvent;

/// One record as it goes on the wire.
#[derive(Debug, Clone)]
pub struct GeneratedRecord {
    /// The Kafka key: the vehicle id.
    pub key: String,
    pub bytes: Vec<u8>,
    /// How the record was disturbed, if it was.
    pub fault: Option<Fault>,
    /// When the simulated fleet produced it (ms since the epoch): the latest event time the
    /// stream had reached when the record went out, so never before its own times, and later
    /// for records held back (late, reordered, second copies). In-process runs use it as the
    /// record's Kafka timestamp; `generate --kafka` leaves that to the broker (now).
    pub produced_ms: i64,
}

/// What `safetel generate` writes next to the records.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct GroundTruth {
    pub seed: u64,
    pub vehicles: usize,
    pub days: u32,
    pub start_ms: i64,
    pub regressions: Vec<InjectedRegression>,
    /// Records written, including duplicates and corrupt ones.
    pub records: u64,
    /// Disturbed records by fault, and the DLQ reason each kind must get.
    pub faults: FaultCounts,
}

#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct FaultCounts {
    pub out_of_order: u64,
    pub late: u64,
    pub duplicate: u64,
    pub corrupt: u64,
    /// DLQ reason -> number of records that must land in the DLQ with it.
    pub expected_dlq: std::collections::BTreeMap<String, u64>,
}

/// Generates the stream day by day; iterate it for the records, then take the truth.
pub struct Generator {
    fleet: Fleet,
    day: u32,
    faults: faults::FaultInjector,
    ready: std::collections::VecDeque<GeneratedRecord>,
    /// The day being delivered, in delivery order.
    today: DayRecords,
    /// One vehicle's events of a day, as generated (reused).
    scratch: Vec<TelemetryEvent<'static>>,
}

/// A day of the fleet's records, encoded as they are generated and delivered in order: the
/// records' bytes in one buffer and a small entry each to sort, instead of every event decoded
/// (about 130 bytes a record held instead of about 400).
#[derive(Default)]
struct DayRecords {
    bytes: Vec<u8>,
    entries: Vec<DayEntry>,
    /// The next entry to deliver.
    next: usize,
}

/// Where one record of the day is, and what orders it.
struct DayEntry {
    time_ms: i64,
    vehicle: u32,
    start: usize,
    len: u32,
}

impl DayRecords {
    fn clear(&mut self) {
        self.bytes.clear();
        self.entries.clear();
        self.next = 0;
    }

    fn push(&mut self, vehicle: usize, event: &TelemetryEvent<'_>) {
        let start = self.bytes.len();
        codec::encode(event, &mut self.bytes);
        self.entries.push(DayEntry {
            time_ms: event.event_time_ms,
            vehicle: vehicle as u32,
            start,
            len: (self.bytes.len() - start) as u32,
        });
    }
}

impl Generator {
    pub fn new(config: GeneratorConfig) -> Result<Generator, GeneratorConfigError> {
        let start_ms = config.validate()?;
        let faults = faults::FaultInjector::new(config.faults.clone(), config.seed, config.days);
        Ok(Generator {
            fleet: Fleet::new(config, start_ms),
            day: 0,
            faults,
            ready: Default::default(),
            today: DayRecords::default(),
            scratch: Vec::new(),
        })
    }

    pub fn fleet(&self) -> &Fleet {
        &self.fleet
    }

    /// Days generated so far.
    pub fn days_done(&self) -> u32 {
        self.day
    }

    /// The ground truth; complete once the iterator is exhausted.
    pub fn truth(&self) -> GroundTruth {
        let c = &self.fleet.config;
        GroundTruth {
            seed: c.seed,
            vehicles: c.vehicles,
            days: c.days,
            start_ms: self.fleet.start_ms,
            regressions: self.fleet.truth.clone(),
            records: self.faults.emitted,
            faults: self.faults.counts.clone(),
        }
    }

    /// Generates the next day into `today`, in delivery order; false when all days are done.
    fn next_day(&mut self) -> bool {
        if self.day >= self.fleet.config.days {
            return false;
        }
        self.today.clear();
        for (at, vehicle) in self.fleet.vehicles.iter().enumerate() {
            self.scratch.clear();
            self.fleet.vehicle_day(vehicle, self.day, &mut self.scratch);
            for event in &self.scratch {
                self.today.push(at, event);
            }
        }
        // Delivery order: event time, then vehicle, then the order generated (a stable sort).
        let vehicles = &self.fleet.vehicles;
        self.today.entries.sort_by(|a, b| {
            a.time_ms.cmp(&b.time_ms).then_with(|| {
                vehicles[a.vehicle as usize]
                    .id
                    .cmp(&vehicles[b.vehicle as usize].id)
            })
        });
        self.day += 1;
        if self.today.entries.is_empty() {
            // A day without a record still ends (what was held back may be due).
            let last = self.day == self.fleet.config.days;
            self.faults.end_of_day(self.day - 1, last, &mut self.ready);
        }
        true
    }

    /// Hands the next record of the day to the fault injector (and, after the day's last,
    /// the end of the day); false when the day is delivered.
    fn deliver_next(&mut self) -> bool {
        let Some(entry) = self.today.entries.get(self.today.next) else {
            return false;
        };
        // Entries exist only once a day was generated.
        let day = self.day - 1;
        self.today.next += 1;
        let record = GeneratedRecord {
            key: self.fleet.vehicles[entry.vehicle as usize].id.clone(),
            bytes: self.today.bytes[entry.start..entry.start + entry.len as usize].to_vec(),
            fault: None,
            produced_ms: entry.time_ms,
        };
        self.faults
            .push(record, entry.time_ms, day, &mut self.ready);
        if self.today.next == self.today.entries.len() {
            self.faults
                .end_of_day(day, self.day == self.fleet.config.days, &mut self.ready);
        }
        true
    }
}

impl Iterator for Generator {
    type Item = GeneratedRecord;

    fn next(&mut self) -> Option<GeneratedRecord> {
        loop {
            if let Some(record) = self.ready.pop_front() {
                return Some(record);
            }
            if !self.deliver_next() && !self.next_day() {
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests;
