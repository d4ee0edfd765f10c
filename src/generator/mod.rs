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
mod hourly;
pub mod review;

use serde::Serialize;

pub use config::{
    FaultConfig, FirmwareRollout, GeneratorConfig, GeneratorConfigError, RegressionConfig,
};
pub use faults::{Corruption, Fault};
pub use fleet::{DAY_MS, Fleet, InjectedRegression};
pub use review::ReviewDesk;

use hourly::DayInHours;

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

/// Generates the stream day by day, an hour at a time; iterate it for the records, then take
/// the truth.
pub struct Generator {
    fleet: Fleet,
    /// Days begun.
    day: u32,
    faults: faults::FaultInjector,
    ready: std::collections::VecDeque<GeneratedRecord>,
    /// The day being delivered.
    today: DayInHours,
}

impl Generator {
    pub fn new(config: GeneratorConfig) -> Result<Generator, GeneratorConfigError> {
        let start_ms = config.validate()?;
        let faults = faults::FaultInjector::new(config.faults.clone(), config.seed, config.days);
        let fleet = Fleet::new(config, start_ms);
        Ok(Generator {
            today: DayInHours::new(&fleet),
            fleet,
            day: 0,
            faults,
            ready: Default::default(),
        })
    }

    pub fn fleet(&self) -> &Fleet {
        &self.fleet
    }

    /// Days begun so far.
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

    /// Opens the next hour of the day (beginning the next day after the last hour); false when
    /// every day is delivered.
    fn next_hour(&mut self) -> bool {
        if self.today.day_generated() {
            if self.day >= self.fleet.config.days {
                return false;
            }
            self.today.begin(&self.fleet, self.day);
            self.day += 1;
        }
        self.today.open_hour(&self.fleet);
        self.end_day_once_delivered();
        true
    }

    /// Hands the open hour's next record to the fault injector; false when the hour is
    /// delivered.
    fn deliver_next(&mut self) -> bool {
        let Some(next) = self.today.next_record() else {
            return false;
        };
        let record = GeneratedRecord {
            key: self.fleet.vehicles[next.vehicle as usize].id.clone(),
            bytes: next.bytes,
            fault: None,
            produced_ms: next.time_ms,
        };
        // Records exist only once a day was begun.
        self.faults
            .push(record, next.time_ms, self.day - 1, &mut self.ready);
        self.end_day_once_delivered();
        true
    }

    /// Ends the day (what the fault injector held for it may be due) once its last hour is
    /// delivered.
    fn end_day_once_delivered(&mut self) {
        if self.today.day_generated() && self.today.hour_delivered() {
            let day = self.day - 1;
            self.faults
                .end_of_day(day, self.day == self.fleet.config.days, &mut self.ready);
        }
    }
}

impl Iterator for Generator {
    type Item = GeneratedRecord;

    fn next(&mut self) -> Option<GeneratedRecord> {
        loop {
            if let Some(record) = self.ready.pop_front() {
                return Some(record);
            }
            if !self.deliver_next() && !self.next_hour() {
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests;
