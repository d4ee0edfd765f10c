//! A day of the fleet generated and delivered an hour at a time.
//!
//! The stream is the one a whole day sorted at once gives (every record of the day ordered by
//! event time, then vehicle id, then the order the vehicle's records were generated in), but
//! what is held at once is an hour's records and, per vehicle, where its day stands between
//! trips: its random stream's position, its trips' planned starts, when it is next free. A trip
//! is generated once the hour it starts in comes; its records later than that hour wait for
//! theirs. Records of a trip that runs past midnight go out with the day's last hour, as
//! before (a whole day's records ended the day).

use crate::codec;
use crate::model::TelemetryEvent;

use super::fleet::{DAY_MS, Fleet};

const HOUR_MS: i64 = 3_600_000;
const HOURS: usize = (DAY_MS / HOUR_MS) as usize;

/// One generated record waiting for its hour to be delivered.
pub(super) struct DayRecord {
    pub(super) time_ms: i64,
    /// The vehicle's place in the fleet.
    pub(super) vehicle: u32,
    /// The vehicle's place in the order of ids, and the record's among the vehicle's records of
    /// the day: the delivery order's tie-breaks.
    rank: u32,
    seq: u32,
    pub(super) bytes: Vec<u8>,
}

/// Where one vehicle's day stands between its trips.
#[derive(Clone, Copy, Default)]
struct TripCursor {
    /// Words of the vehicle's random stream used so far today.
    word_pos: u128,
    /// Its planned starts are `starts[first..end]`; `starts[next..end]` not yet driven.
    first: u32,
    next: u32,
    end: u32,
    free_from: i64,
    /// Records generated so far today.
    seq: u32,
}

/// The day being delivered, an hour at a time.
pub(super) struct DayInHours {
    day: u32,
    /// Hours of the day opened so far (`HOURS`: the day is generated).
    hours_open: usize,
    cursors: Vec<TripCursor>,
    starts: Vec<i64>,
    /// Vehicles by the hour their next trip starts in.
    by_hour: Vec<Vec<u32>>,
    /// Records generated and not yet due.
    waiting: Vec<DayRecord>,
    /// The open hour's records, in delivery order, reversed (taken from the back).
    due: Vec<DayRecord>,
    /// Each vehicle's place in the order of ids.
    rank: Vec<u32>,
    events: Vec<TelemetryEvent<'static>>,
}

impl DayInHours {
    pub(super) fn new(fleet: &Fleet) -> DayInHours {
        let mut by_id: Vec<u32> = (0..fleet.vehicles.len() as u32).collect();
        by_id.sort_by(|a, b| {
            fleet.vehicles[*a as usize]
                .id
                .cmp(&fleet.vehicles[*b as usize].id)
        });
        let mut rank = vec![0; by_id.len()];
        for (place, vehicle) in by_id.into_iter().enumerate() {
            rank[vehicle as usize] = place as u32;
        }
        DayInHours {
            day: 0,
            hours_open: HOURS,
            cursors: Vec::new(),
            starts: Vec::new(),
            by_hour: vec![Vec::new(); HOURS],
            waiting: Vec::new(),
            due: Vec::new(),
            rank,
            events: Vec::new(),
        }
    }

    /// True once every hour of the day was opened.
    pub(super) fn day_generated(&self) -> bool {
        self.hours_open == HOURS
    }

    /// Begins `day`: every vehicle's trips planned, none driven.
    pub(super) fn begin(&mut self, fleet: &Fleet, day: u32) {
        self.day = day;
        self.hours_open = 0;
        self.starts.clear();
        self.cursors.clear();
        let day_start = fleet.day_start(day);
        for (at, vehicle) in fleet.vehicles.iter().enumerate() {
            let first = self.starts.len() as u32;
            let rng = fleet.plan_day(vehicle, day, &mut self.starts);
            let cursor = TripCursor {
                word_pos: rng.get_word_pos(),
                first,
                next: first,
                end: self.starts.len() as u32,
                free_from: day_start,
                seq: 0,
            };
            self.cursors.push(cursor);
            self.schedule(fleet, at as u32);
        }
    }

    /// Opens the next hour: drives the trips that start in it, and makes due every record
    /// before its end (every record left, at the day's last hour).
    pub(super) fn open_hour(&mut self, fleet: &Fleet) {
        let hour = self.hours_open;
        self.hours_open += 1;
        let hour_end = fleet.day_start(self.day) + self.hours_open as i64 * HOUR_MS;
        let vehicles = std::mem::take(&mut self.by_hour[hour]);
        for &vehicle in &vehicles {
            self.drive_until(fleet, vehicle, hour_end);
            self.schedule(fleet, vehicle);
        }
        self.by_hour[hour] = vehicles;
        self.by_hour[hour].clear();

        let last = self.day_generated();
        let mut kept = Vec::with_capacity(self.waiting.len());
        for record in self.waiting.drain(..) {
            if last || record.time_ms < hour_end {
                self.due.push(record);
            } else {
                kept.push(record);
            }
        }
        self.waiting = kept;
        // Reversed delivery order: the next record is taken from the back.
        self.due
            .sort_unstable_by_key(|r| std::cmp::Reverse((r.time_ms, r.rank, r.seq)));
    }

    /// The next record of the open hour, if any is left.
    pub(super) fn next_record(&mut self) -> Option<DayRecord> {
        self.due.pop()
    }

    /// True when the open hour has no record left.
    pub(super) fn hour_delivered(&self) -> bool {
        self.due.is_empty()
    }

    /// Drives `vehicle`'s trips that start before `hour_end`.
    fn drive_until(&mut self, fleet: &Fleet, vehicle: u32, hour_end: i64) {
        let who = &fleet.vehicles[vehicle as usize];
        let mut cursor = self.cursors[vehicle as usize];
        let mut rng = fleet.resume_day(who, self.day, cursor.word_pos);
        while let Some(start) = self.next_start(fleet, &cursor)
            && start < hour_end
        {
            self.events.clear();
            let trip = (cursor.next - cursor.first) as usize;
            cursor.free_from = fleet.trip(who, self.day, trip, start, &mut rng, &mut self.events);
            cursor.next += 1;
            for event in &self.events {
                let mut bytes = Vec::new();
                codec::encode(event, &mut bytes);
                self.waiting.push(DayRecord {
                    time_ms: event.event_time_ms,
                    vehicle,
                    rank: self.rank[vehicle as usize],
                    seq: cursor.seq,
                    bytes,
                });
                cursor.seq += 1;
            }
        }
        cursor.word_pos = rng.get_word_pos();
        self.cursors[vehicle as usize] = cursor;
    }

    /// Files `vehicle` under the hour its next trip starts in (nowhere when its day is over).
    fn schedule(&mut self, fleet: &Fleet, vehicle: u32) {
        let cursor = self.cursors[vehicle as usize];
        if let Some(start) = self.next_start(fleet, &cursor) {
            let hour = ((start - fleet.day_start(self.day)) / HOUR_MS) as usize;
            self.by_hour[hour].push(vehicle);
        }
    }

    fn next_start(&self, fleet: &Fleet, cursor: &TripCursor) -> Option<i64> {
        if cursor.next == cursor.end {
            return None;
        }
        let planned = self.starts[cursor.next as usize];
        fleet.trip_start(self.day, planned, cursor.free_from)
    }
}
