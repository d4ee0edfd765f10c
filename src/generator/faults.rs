//! Fault injection: reorders, delays, duplicates and corrupts records, and counts what it did.

use std::collections::VecDeque;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::config::FaultConfig;
use super::{FaultCounts, GeneratedRecord};
use crate::codec::{self, SchemaId};

/// How a record was disturbed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    OutOfOrder,
    Late,
    /// The second copy of a record.
    Duplicate,
    Corrupt(Corruption),
}

/// The kinds of malformed record, each with the DLQ reason it must get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Corruption {
    Truncated,
    BadMagic,
    UnknownSchemaId,
    /// A record framed with another topic's schema (RegressionAlert).
    WrongSchema,
    BadUnionIndex,
    Empty,
    Oversized,
    /// Well-formed Avro with an impossible value (negative speed).
    InvalidValue,
}

impl Corruption {
    const ALL: [Corruption; 8] = [
        Corruption::Truncated,
        Corruption::BadMagic,
        Corruption::UnknownSchemaId,
        Corruption::WrongSchema,
        Corruption::BadUnionIndex,
        Corruption::Empty,
        Corruption::Oversized,
        Corruption::InvalidValue,
    ];

    pub fn dlq_reason(self) -> &'static str {
        match self {
            Corruption::Truncated | Corruption::BadUnionIndex => "decode",
            Corruption::BadMagic
            | Corruption::UnknownSchemaId
            | Corruption::WrongSchema
            | Corruption::Empty => "schema",
            Corruption::Oversized => "oversized",
            Corruption::InvalidValue => "invalid",
        }
    }

    /// Malformed bytes standing in for `good`.
    fn apply(self, good: &[u8], vehicle_id: &str) -> Vec<u8> {
        match self {
            Corruption::Truncated => {
                good[..codec::HEADER_LEN + (good.len() - codec::HEADER_LEN) / 2].to_vec()
            }
            Corruption::BadMagic => [&[0x7b][..], &good[1..]].concat(),
            Corruption::UnknownSchemaId => {
                [&[0, 0, 0, 0, 99][..], &good[codec::HEADER_LEN..]].concat()
            }
            Corruption::WrongSchema => {
                let mut bytes = Vec::new();
                codec::write_header(SchemaId::RegressionAlertV1, &mut bytes);
                bytes.extend_from_slice(&good[codec::HEADER_LEN..]);
                bytes
            }
            Corruption::BadUnionIndex => {
                let mut bytes = Vec::new();
                codec::write_header(SchemaId::CURRENT_TELEMETRY, &mut bytes);
                codec::write_string(vehicle_id, &mut bytes);
                codec::write_long(1_767_571_200_000, &mut bytes);
                codec::write_long(7, &mut bytes);
                bytes
            }
            Corruption::Empty => Vec::new(),
            Corruption::Oversized => {
                let mut bytes = good.to_vec();
                // Past the default 64 KiB limit, yet well within Kafka's 1 MB message limit.
                bytes.resize(200_000, 0xab);
                bytes
            }
            Corruption::InvalidValue => {
                let mut bytes = Vec::new();
                codec::write_header(SchemaId::CURRENT_TELEMETRY, &mut bytes);
                codec::write_string(vehicle_id, &mut bytes);
                codec::write_long(1_767_571_200_000, &mut bytes);
                codec::write_long(1, &mut bytes); // SafetyEvent
                codec::write_string("corrupt-event", &mut bytes);
                codec::write_string("corrupt-trip", &mut bytes);
                codec::write_long(0, &mut bytes);
                codec::write_long(0, &mut bytes);
                codec::write_double(-5.0, &mut bytes);
                bytes
            }
        }
    }
}

/// A record held back: out of order and duplicate copies until the stream passes
/// `release_after_ms`, late ones until the end of `release_day`.
struct Held {
    record: GeneratedRecord,
    release_after_ms: i64,
    release_day: u32,
}

pub(super) struct FaultInjector {
    config: FaultConfig,
    rng: StdRng,
    days: u32,
    /// Out-of-order records and second copies, released by event time: by (release time,
    /// order held), so that what is due is the front, not a scan.
    held: std::collections::BTreeMap<(i64, u64), Held>,
    /// How many records were ever held (the order among those due at once).
    held_count: u64,
    late: Vec<Held>,
    pub(super) counts: FaultCounts,
    pub(super) emitted: u64,
    /// The latest event time pushed: the simulated clock records go out at.
    clock_ms: i64,
}

impl FaultInjector {
    pub(super) fn new(config: FaultConfig, seed: u64, days: u32) -> Self {
        FaultInjector {
            config,
            rng: StdRng::seed_from_u64(seed ^ 0x5afe_7e1e),
            days,
            held: Default::default(),
            held_count: 0,
            late: Vec::new(),
            counts: FaultCounts::default(),
            emitted: 0,
            clock_ms: i64::MIN,
        }
    }

    fn hold(&mut self, held: Held) {
        self.held
            .insert((held.release_after_ms, self.held_count), held);
        self.held_count += 1;
    }

    fn emit(&mut self, mut record: GeneratedRecord, out: &mut VecDeque<GeneratedRecord>) {
        self.emitted += 1;
        record.produced_ms = record.produced_ms.max(self.clock_ms);
        out.push_back(record);
    }

    fn expect_dlq(&mut self, reason: &str) {
        *self
            .counts
            .expected_dlq
            .entry(reason.to_string())
            .or_default() += 1;
    }

    /// Takes the next clean record of `day` (event time `time_ms`) and emits whatever is due.
    pub(super) fn push(
        &mut self,
        mut record: GeneratedRecord,
        time_ms: i64,
        day: u32,
        out: &mut VecDeque<GeneratedRecord>,
    ) {
        self.clock_ms = self.clock_ms.max(time_ms);
        if self
            .held
            .first_key_value()
            .is_some_and(|((release, _), _)| time_ms >= *release)
        {
            let kept = self.held.split_off(&(time_ms.saturating_add(1), 0));
            let due = std::mem::replace(&mut self.held, kept);
            // Those due go out in the order they were held.
            let mut due: Vec<((i64, u64), Held)> = due.into_iter().collect();
            due.sort_by_key(|((_, order), _)| *order);
            for (_, h) in due {
                self.emit(h.record, out);
            }
        }

        let c = &self.config;
        let u: f64 = self.rng.random();
        // Late records must stay late under any partitioning: only days with two more after them.
        let can_be_late = day + 2 < self.days;
        if u < c.corrupt {
            let kind = Corruption::ALL[self.rng.random_range(0..Corruption::ALL.len())];
            record.bytes = kind.apply(&record.bytes, &record.key);
            record.fault = Some(Fault::Corrupt(kind));
            self.counts.corrupt += 1;
            self.expect_dlq(kind.dlq_reason());
            self.emit(record, out);
        } else if u < c.corrupt + c.late && can_be_late {
            record.fault = Some(Fault::Late);
            self.counts.late += 1;
            self.expect_dlq("late");
            self.late.push(Held {
                record,
                release_after_ms: i64::MAX,
                release_day: day + 2,
            });
        } else if u < c.corrupt + c.late + c.duplicate {
            let mut copy = record.clone();
            copy.fault = Some(Fault::Duplicate);
            self.counts.duplicate += 1;
            self.expect_dlq("duplicate");
            self.emit(record, out);
            let delay_ms = self.rng.random_range(1_000..1_800_000);
            self.hold(Held {
                record: copy,
                release_after_ms: time_ms + delay_ms,
                release_day: day,
            });
        } else if u < c.corrupt + c.late + c.duplicate + c.out_of_order {
            record.fault = Some(Fault::OutOfOrder);
            self.counts.out_of_order += 1;
            let delay_ms = self.rng.random_range(60_000..3_600_000);
            self.hold(Held {
                record,
                release_after_ms: time_ms + delay_ms,
                release_day: day,
            });
        } else {
            self.emit(record, out);
        }
    }

    /// Emits what is due at the end of `day`; at the end of the stream, everything held.
    pub(super) fn end_of_day(&mut self, day: u32, last: bool, out: &mut VecDeque<GeneratedRecord>) {
        let held = std::mem::take(&mut self.late);
        let (due, kept): (Vec<Held>, Vec<Held>) =
            held.into_iter().partition(|h| last || h.release_day <= day);
        self.late = kept;
        for h in due {
            self.emit(h.record, out);
        }
        if last {
            let mut held: Vec<((i64, u64), Held)> =
                std::mem::take(&mut self.held).into_iter().collect();
            held.sort_by_key(|((_, order), _)| *order);
            for (_, h) in held {
                self.emit(h.record, out);
            }
        }
    }
}
