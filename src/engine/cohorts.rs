//! Cohort aggregation across partitions (docs/design.md §3, §8).
//!
//! Owns the path from vehicle bins to cohort series. A cohort (`firmware:<v>`, `model:<m>`)
//! spans source partitions, so no partition can close its bins alone. Each source partition,
//! when it closes bins, reports per cohort the sums of its own vehicles' bins
//! ([`PartitionReport`]); a [`CohortAggregator`] adds up the reports of every source partition
//! and closes a cohort bin once all of them have passed it, feeding the cohort's change-point
//! series. In `run` the reports travel over the repartition topic, partitioned by cohort
//! ([`cohort_partition`]), so the aggregators of N processes split the cohorts between them; in
//! `demo` and the experiments one aggregator takes them in process. Either way the series see
//! the same sums in the same bin order, so the alerts are the same.
//!
//! A cohort's bin carries its members' counts and the counts the fleet predicted for them (set
//! when each vehicle's bin closed), so a cohort that appears mid-stream (a new firmware) is
//! compared with what its members would have done from its first bin on: no warm-up. Pure: no
//! IO.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::detection::{
    DetectionSettings, Series, SeriesKey, VehicleSet, cohort_stats_of, for_each_cohort_key,
};
use super::state::{BinStats, id_hash};
use crate::model::{ByClass, HazardClass, KeyKind, RegressionAlert};

/// The aggregator partition a cohort belongs to, of `partitions`: stable across builds.
pub fn cohort_partition(cohort: &str, partitions: i32) -> i32 {
    (id_hash(&[cohort.as_bytes()]) % partitions.max(1) as u64) as i32
}

/// What one source partition tells the cohort aggregators when it closes bins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionReport {
    pub source: i32,
    /// The partition has no record and is at its end: nothing to wait for until it reports bins.
    #[serde(default)]
    pub empty: bool,
    /// Bins in `[from_ms, through_ms)` are closed on the source partition.
    pub from_ms: i64,
    pub through_ms: i64,
    /// (bin start, cohort, sum over the partition's vehicles in the cohort at that bin)
    pub sums: Vec<(i64, String, BinStats)>,
}

impl PartitionReport {
    /// A partition that has nothing: the aggregators need not wait for it.
    pub fn empty(source: i32) -> PartitionReport {
        PartitionReport {
            source,
            empty: true,
            from_ms: i64::MIN,
            through_ms: i64::MIN,
            sums: Vec::new(),
        }
    }

    /// The report of `source` closing its bins in `[from_ms, through_ms)`; `vehicles` are the
    /// partition's own.
    pub fn build(
        settings: &DetectionSettings,
        source: i32,
        vehicles: &dyn VehicleSet,
        from_ms: i64,
        through_ms: i64,
    ) -> PartitionReport {
        let width = settings.bin_width_ms;
        let mut sums: BTreeMap<(i64, String), BinStats> = BTreeMap::new();
        let mut key = String::new();
        vehicles.for_each(&mut |meta, bins| {
            for (&bin, stats) in bins.range(from_ms..through_ms) {
                for_each_cohort_key(settings, meta, bin + width, &mut key, |k| {
                    sums.entry((bin, k.to_string())).or_default().add(stats)
                });
            }
        });
        PartitionReport {
            source,
            empty: false,
            from_ms,
            through_ms,
            sums: sums.into_iter().map(|((bin, k), s)| (bin, k, s)).collect(),
        }
    }

    /// One report per aggregator partition (of `partitions`), each with the cohorts that belong
    /// there and the same range: every aggregator learns how far the source has closed.
    pub fn split(self, partitions: i32) -> Vec<(i32, PartitionReport)> {
        let mut parts: Vec<(i32, PartitionReport)> = (0..partitions.max(1))
            .map(|q| {
                let part = PartitionReport {
                    sums: Vec::new(),
                    ..self.clone()
                };
                (q, part)
            })
            .collect();
        for entry in self.sums {
            parts[cohort_partition(&entry.1, partitions) as usize]
                .1
                .sums
                .push(entry);
        }
        parts
    }
}

impl PartitionReport {
    /// This report as consecutive reports of at most `max_bytes` each as JSON (the repartition
    /// topic's encoding), cut between bins: the first covers `[from_ms, b)`, the next `[b, ..)`
    /// and so on, the last ending at `through_ms`. An aggregator applying them in order ends as
    /// with the whole ([`CohortAggregator::apply`]). One bin's sums always travel together.
    pub fn split_by_size(self, max_bytes: usize) -> Vec<PartitionReport> {
        let size = |r: &PartitionReport| serde_json::to_vec(r).map_or(usize::MAX, |v| v.len());
        if self.empty || size(&self) <= max_bytes {
            return vec![self];
        }
        let mut parts: Vec<PartitionReport> = Vec::new();
        let PartitionReport {
            source,
            through_ms,
            sums,
            ..
        } = self;
        let part = |from_ms| PartitionReport {
            source,
            empty: false,
            from_ms,
            through_ms,
            sums: Vec::new(),
        };
        let mut current = part(self.from_ms);
        let mut bytes = size(&current);
        // Whole bins: (bin, its entries, their JSON bytes with separators).
        type Bin = (i64, Vec<(i64, String, BinStats)>, usize);
        let mut bins: Vec<Bin> = Vec::new();
        for entry in sums {
            let entry_bytes = serde_json::to_vec(&entry).map_or(0, |v| v.len()) + 1;
            match bins.last_mut() {
                Some((bin, entries, b)) if *bin == entry.0 => {
                    entries.push(entry);
                    *b += entry_bytes;
                }
                _ => bins.push((entry.0, vec![entry], entry_bytes)),
            }
        }
        for (bin, entries, bin_bytes) in bins {
            if !current.sums.is_empty() && bytes + bin_bytes > max_bytes {
                let mut done = std::mem::replace(&mut current, part(bin));
                done.through_ms = bin;
                parts.push(done);
                bytes = size(&current);
            }
            bytes += bin_bytes;
            current.sums.extend(entries);
        }
        parts.push(current);
        parts
    }
}

/// What an aggregator holds of one source partition: how far it has closed, and its sums for
/// the bins the aggregator has not closed yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceProgress {
    pub empty: bool,
    /// The first bin the source ever reported.
    pub first_bin_ms: Option<i64>,
    pub closed_through_ms: i64,
    /// bin -> cohort -> sum
    pub sums: BTreeMap<i64, BTreeMap<String, BinStats>>,
}

impl Default for SourceProgress {
    fn default() -> Self {
        SourceProgress {
            empty: false,
            first_bin_ms: None,
            closed_through_ms: i64::MIN,
            sums: BTreeMap::new(),
        }
    }
}

/// The persisted part of an aggregator besides its series.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AggregatorProgress {
    pub closed_through_ms: Option<i64>,
    pub sources: BTreeMap<i32, SourceProgress>,
}

/// The cohort series of one aggregator partition and the reports they wait on.
#[derive(Debug, Clone)]
pub struct CohortAggregator {
    /// Cohort key -> one series per hazard class.
    pub series: BTreeMap<String, ByClass<Series>>,
    /// Bins before this are closed for every cohort here (`i64::MIN`: none yet).
    pub closed_through_ms: i64,
    pub sources: BTreeMap<i32, SourceProgress>,
}

impl Default for CohortAggregator {
    fn default() -> Self {
        CohortAggregator {
            series: BTreeMap::new(),
            closed_through_ms: i64::MIN,
            sources: BTreeMap::new(),
        }
    }
}

impl CohortAggregator {
    pub fn progress(&self) -> AggregatorProgress {
        AggregatorProgress {
            closed_through_ms: (self.closed_through_ms != i64::MIN)
                .then_some(self.closed_through_ms),
            sources: self.sources.clone(),
        }
    }

    pub fn with_progress(mut self, progress: AggregatorProgress) -> Self {
        self.closed_through_ms = progress.closed_through_ms.unwrap_or(i64::MIN);
        self.sources = progress.sources;
        self
    }

    /// Takes a source's report. A report the aggregator has seen (a source replaying after a
    /// crash) changes nothing; returns whether this one did.
    pub fn apply(&mut self, report: PartitionReport) -> bool {
        let source = self.sources.entry(report.source).or_default();
        if report.empty {
            let was = source.empty;
            source.empty = source.closed_through_ms == i64::MIN;
            return was != source.empty;
        }
        if report.through_ms <= source.closed_through_ms {
            return false;
        }
        source.empty = false;
        source.first_bin_ms.get_or_insert(report.from_ms);
        let floor = source.closed_through_ms.max(self.closed_through_ms);
        for (bin, key, stats) in report.sums {
            if bin >= floor {
                source
                    .sums
                    .entry(bin)
                    .or_default()
                    .entry(key)
                    .or_default()
                    .add(&stats);
            }
        }
        source.closed_through_ms = report.through_ms;
        true
    }

    /// Where every source in `waiting_for` has closed through (`i64::MIN` if one has not
    /// reported yet or the list is empty).
    fn sources_closed_through(&self, waiting_for: &[i32]) -> i64 {
        waiting_for
            .iter()
            .map(|p| {
                self.sources
                    .get(p)
                    .map_or(i64::MIN, |s| s.closed_through_ms)
            })
            .min()
            .unwrap_or(i64::MIN)
    }

    /// Closes the cohort bins every source in `waiting_for` has passed, bin by bin: sums the
    /// sources' reports, starts the series of cohorts new in the bin, and feeds every series. Returns the cohorts fed and the bin updates made.
    pub fn close(
        &mut self,
        settings: &DetectionSettings,
        waiting_for: &[i32],
        alerts: &mut Vec<RegressionAlert>,
    ) -> (Vec<String>, u64) {
        let through = self.sources_closed_through(waiting_for);
        if through == i64::MIN || through <= self.closed_through_ms {
            return (Vec::new(), 0);
        }
        let width = settings.bin_width_ms;
        let first_ever = self.closed_through_ms == i64::MIN;
        let start = if first_ever {
            match self.sources.values().filter_map(|s| s.first_bin_ms).min() {
                Some(first) => first,
                None => return (Vec::new(), 0),
            }
        } else {
            self.closed_through_ms
        };
        let mut fed = std::collections::BTreeSet::new();
        let mut updates = 0;
        let mut bin = start;
        while bin < through {
            let mut sums: BTreeMap<&str, BinStats> = BTreeMap::new();
            for source in self.sources.values() {
                for (key, stats) in source.sums.get(&bin).into_iter().flatten() {
                    sums.entry(key.as_str()).or_default().add(stats);
                }
            }
            for &key in sums.keys() {
                if !self.series.contains_key(key) {
                    // A cohort new in this bin starts here, against its members' prediction.
                    let series = ByClass::from_fn(|_| Series::new(settings.params, bin));
                    self.series.insert(key.to_string(), series);
                }
            }
            let baseline = settings.cohort_baseline();
            for (key, series) in self.series.iter_mut() {
                for (class, s) in series.iter_mut() {
                    let seen = cohort_stats_of(settings, sums.get(key.as_str()), class);
                    s.feed(
                        settings,
                        cohort_key(key, class),
                        seen,
                        baseline,
                        &settings.rules.cohort,
                        alerts,
                    );
                    s.complete_last(baseline);
                    updates += 1;
                }
                fed.insert(key.clone());
            }
            bin += width;
        }
        self.closed_through_ms = through;
        for source in self.sources.values_mut() {
            source.sums = source.sums.split_off(&through);
        }
        (fed.into_iter().collect(), updates)
    }
}

fn cohort_key(key: &str, class: HazardClass) -> SeriesKey<'_> {
    SeriesKey {
        kind: KeyKind::Cohort,
        key,
        class,
        prior_source: "members",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    #[test]
    fn a_large_report_travels_in_parts_that_add_up_to_it() {
        // 30 bins x 12 cohorts (~120 kB of JSON), split at 16 KiB.
        let sums: Vec<(i64, String, BinStats)> = (0..30)
            .flat_map(|day| {
                (0..12).map(move |c| {
                    let stats = BinStats {
                        trips: 10 + c,
                        exposure_ms: 3_600_000 * (1 + day as u64),
                        critical: c % 3,
                        ..Default::default()
                    };
                    (day * DAY, format!("firmware:v{c}"), stats)
                })
            })
            .collect();
        let whole = PartitionReport {
            source: 2,
            empty: false,
            from_ms: 0,
            through_ms: 30 * DAY,
            sums,
        };
        let max = 16 * 1024;
        let parts = whole.clone().split_by_size(max);
        assert!(parts.len() >= 6, "{} parts", parts.len());
        assert_eq!(parts[0].from_ms, whole.from_ms);
        assert_eq!(parts.last().unwrap().through_ms, whole.through_ms);
        for (part, next) in parts.iter().zip(&parts[1..]) {
            assert_eq!(part.through_ms, next.from_ms, "consecutive ranges");
        }
        for part in &parts {
            let len = serde_json::to_vec(part).unwrap().len();
            assert!(len <= max, "{len} bytes, {} sums", part.sums.len());
            assert!(
                part.sums
                    .iter()
                    .all(|s| (part.from_ms..part.through_ms).contains(&s.0))
            );
        }
        let (mut one, mut many) = (CohortAggregator::default(), CohortAggregator::default());
        assert!(one.apply(whole.clone()));
        for part in parts {
            assert!(many.apply(part));
        }
        assert_eq!(one.progress(), many.progress());
        assert_eq!(
            whole.clone().split_by_size(usize::MAX),
            vec![whole],
            "a small report stays whole"
        );
    }
}
