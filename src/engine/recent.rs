//! The outcomes of the last records a process handled: how many went to the dead-letter topic,
//! why, and from which partitions. `/health` turns unhealthy while the share is above
//! `stream.max_dlq_share`, so that a partition whose records are all being dropped (a bad clock,
//! a producer sending another schema) is visible and not only counted.

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;

use super::Rejection;

/// The share is judged once the window holds this many records (or is full, if smaller): a
/// first bad record is not an outage.
const MIN_RECORDS_JUDGED: usize = 100;

/// The last `window` records' outcomes, as a ring.
#[derive(Debug, Clone)]
pub struct RecentOutcomes {
    window: usize,
    max_share: f64,
    /// (reason index + 1, or 0 for accepted; partition), oldest first.
    ring: VecDeque<(u8, i32)>,
    by_reason: [u32; Rejection::REASONS.len()],
    by_partition: BTreeMap<i32, u32>,
}

/// What [`RecentOutcomes`] says at one moment: for `/health` and the metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DeadLetterShare {
    /// Records in the window.
    pub records: u64,
    pub dead_lettered: u64,
    pub share: f64,
    pub max_share: f64,
    /// The share is above `max_share` (with enough records to judge).
    pub alarm: bool,
    /// (reason, records) with any, most first.
    pub reasons: Vec<(&'static str, u64)>,
    /// (partition, dead-lettered records) with any, most first.
    pub partitions: Vec<(i32, u64)>,
}

impl RecentOutcomes {
    pub fn new(window: usize, max_share: f64) -> RecentOutcomes {
        RecentOutcomes {
            window: window.max(1),
            max_share,
            ring: VecDeque::with_capacity(window.max(1)),
            by_reason: [0; Rejection::REASONS.len()],
            by_partition: BTreeMap::new(),
        }
    }

    /// One record of `partition` handled: accepted (`None`) or dead-lettered with `reason`.
    pub fn push(&mut self, partition: i32, reason: Option<&'static str>) {
        if self.ring.len() == self.window {
            let (code, p) = self.ring.pop_front().expect("full");
            if code > 0 {
                self.by_reason[usize::from(code - 1)] -= 1;
                if let Some(count) = self.by_partition.get_mut(&p) {
                    *count -= 1;
                    if *count == 0 {
                        self.by_partition.remove(&p);
                    }
                }
            }
        }
        let code = match reason {
            None => 0,
            Some(reason) => {
                let index = Rejection::REASONS
                    .iter()
                    .position(|r| *r == reason)
                    .unwrap_or(Rejection::REASONS.len() - 1);
                self.by_reason[index] += 1;
                *self.by_partition.entry(partition).or_default() += 1;
                index as u8 + 1
            }
        };
        self.ring.push_back((code, partition));
    }

    pub fn snapshot(&self) -> DeadLetterShare {
        let records = self.ring.len() as u64;
        let dead_lettered: u64 = self.by_reason.iter().map(|&n| u64::from(n)).sum();
        let share = if records == 0 {
            0.0
        } else {
            dead_lettered as f64 / records as f64
        };
        let mut reasons: Vec<(&'static str, u64)> = Rejection::REASONS
            .iter()
            .zip(self.by_reason)
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| (*r, u64::from(n)))
            .collect();
        reasons.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
        let mut partitions: Vec<(i32, u64)> = self
            .by_partition
            .iter()
            .map(|(p, n)| (*p, u64::from(*n)))
            .collect();
        partitions.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
        let judged = self.ring.len() >= MIN_RECORDS_JUDGED.min(self.window);
        DeadLetterShare {
            records,
            dead_lettered,
            share,
            max_share: self.max_share,
            alarm: judged && share > self.max_share,
            reasons,
            partitions,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_counts_only_the_last_window_of_records() {
        let mut recent = RecentOutcomes::new(200, 0.05);
        for _ in 0..150 {
            recent.push(0, None);
        }
        for _ in 0..50 {
            recent.push(3, Some("late"));
        }
        recent.push(1, Some("future"));
        let now = recent.snapshot();
        assert_eq!((now.records, now.dead_lettered), (200, 51));
        assert!(now.alarm, "{now:?}");
        assert_eq!(now.reasons, [("late", 50), ("future", 1)]);
        assert_eq!(now.partitions, [(3, 50), (1, 1)]);
        // 200 good records push every bad one out of the window.
        for _ in 0..200 {
            recent.push(0, None);
        }
        let later = recent.snapshot();
        assert_eq!((later.dead_lettered, later.alarm), (0, false));
        assert!(later.reasons.is_empty() && later.partitions.is_empty());
    }

    #[test]
    fn a_first_bad_record_is_not_judged_an_outage() {
        let mut recent = RecentOutcomes::new(10_000, 0.05);
        recent.push(0, Some("decode"));
        for _ in 0..(MIN_RECORDS_JUDGED - 2) {
            recent.push(0, None);
        }
        assert!(!recent.snapshot().alarm, "99 records: not judged yet");
        recent.push(0, Some("decode"));
        let judged = recent.snapshot();
        assert!(!judged.alarm, "2 of 100 is under 5%: {judged:?}");
        for _ in 0..4 {
            recent.push(0, Some("schema"));
        }
        assert!(recent.snapshot().alarm, "6 of 104 is over 5%");
    }
}
