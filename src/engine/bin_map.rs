//! [`BinMap`]: one vehicle's bins by start, in a sorted vector. A vehicle has a few bins to a few
//! hundred, nearly always added at the end and retired from the front; a `BTreeMap` of them
//! holds its nodes a third full at a few weeks (about 4.4 KB for 21 daily bins where the
//! vector holds 2.7 KB), and memory per vehicle is what the fleet's size multiplies
//! (docs/design.md §7). The methods are the map's that the code uses, with the same meaning.

use std::ops::RangeBounds;

use serde::{Deserialize, Serialize};

use super::state::BinStats;

/// Bin start (ms since the epoch) -> stats, in order of start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BinMap(Vec<(i64, BinStats)>);

impl BinMap {
    fn find(&self, bin: i64) -> Result<usize, usize> {
        // Most lookups are of the latest bins: look from the end first.
        match self.0.last() {
            Some((last, _)) if *last == bin => Ok(self.0.len() - 1),
            Some((last, _)) if *last < bin => Err(self.0.len()),
            _ => self.0.binary_search_by_key(&bin, |(start, _)| *start),
        }
    }

    pub fn get(&self, bin: &i64) -> Option<&BinStats> {
        self.find(*bin).ok().map(|at| &self.0[at].1)
    }

    pub fn get_mut(&mut self, bin: &i64) -> Option<&mut BinStats> {
        self.find(*bin).ok().map(|at| &mut self.0[at].1)
    }

    pub fn contains_key(&self, bin: &i64) -> bool {
        self.find(*bin).is_ok()
    }

    /// The stats of `bin`, a new empty bin if it had none.
    pub fn entry_or_default(&mut self, bin: i64) -> &mut BinStats {
        let at = match self.find(bin) {
            Ok(at) => at,
            Err(at) => {
                // One more bin a day per vehicle: grow by one, not by doubling.
                self.0.reserve_exact(1);
                self.0.insert(at, (bin, BinStats::default()));
                at
            }
        };
        &mut self.0[at].1
    }

    /// Sets `bin`'s stats; the ones it had, if any.
    pub fn insert(&mut self, bin: i64, stats: BinStats) -> Option<BinStats> {
        match self.find(bin) {
            Ok(at) => Some(std::mem::replace(&mut self.0[at].1, stats)),
            Err(at) => {
                self.0.reserve_exact(1);
                self.0.insert(at, (bin, stats));
                None
            }
        }
    }

    pub fn remove(&mut self, bin: &i64) -> Option<BinStats> {
        self.find(*bin).ok().map(|at| self.0.remove(at).1)
    }

    /// Splits off the bins from `bin` on (returned); those before stay.
    pub fn split_off(&mut self, bin: &i64) -> BinMap {
        let at = self.0.partition_point(|(start, _)| start < bin);
        BinMap(self.0.split_off(at))
    }

    /// The bin starts, in order (the bins let go).
    pub fn into_keys(self) -> impl DoubleEndedIterator<Item = i64> {
        self.0.into_iter().map(|(start, _)| start)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&i64, &BinStats)> + ExactSizeIterator {
        self.0.iter().map(|(start, stats)| (start, stats))
    }

    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &i64> + ExactSizeIterator {
        self.0.iter().map(|(start, _)| start)
    }

    pub fn values(&self) -> impl DoubleEndedIterator<Item = &BinStats> + ExactSizeIterator {
        self.0.iter().map(|(_, stats)| stats)
    }

    pub fn first_key_value(&self) -> Option<(&i64, &BinStats)> {
        self.0.first().map(|(start, stats)| (start, stats))
    }

    pub fn last_key_value(&self) -> Option<(&i64, &BinStats)> {
        self.0.last().map(|(start, stats)| (start, stats))
    }

    /// The bins whose starts are in `range`, in order.
    pub fn range(
        &self,
        range: impl RangeBounds<i64>,
    ) -> impl DoubleEndedIterator<Item = (&i64, &BinStats)> {
        use std::ops::Bound;
        let from = match range.start_bound() {
            Bound::Included(b) => self.0.partition_point(|(s, _)| s < b),
            Bound::Excluded(b) => self.0.partition_point(|(s, _)| s <= b),
            Bound::Unbounded => 0,
        };
        let to = match range.end_bound() {
            Bound::Included(b) => self.0.partition_point(|(s, _)| s <= b),
            Bound::Excluded(b) => self.0.partition_point(|(s, _)| s < b),
            Bound::Unbounded => self.0.len(),
        };
        self.0[from..to.max(from)]
            .iter()
            .map(|(start, stats)| (start, stats))
    }
}

impl std::ops::Index<&i64> for BinMap {
    type Output = BinStats;

    /// The stats of a bin the map has (panics otherwise, as a map's index does).
    fn index(&self, bin: &i64) -> &BinStats {
        self.get(bin).expect("a bin the map has")
    }
}

impl<'a> IntoIterator for &'a BinMap {
    type Item = (&'a i64, &'a BinStats);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (i64, BinStats)>,
        fn(&'a (i64, BinStats)) -> (&'a i64, &'a BinStats),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(start, stats)| (start, stats))
    }
}

impl IntoIterator for BinMap {
    type Item = (i64, BinStats);
    type IntoIter = std::vec::IntoIter<(i64, BinStats)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl FromIterator<(i64, BinStats)> for BinMap {
    fn from_iter<I: IntoIterator<Item = (i64, BinStats)>>(bins: I) -> BinMap {
        let mut map = BinMap::default();
        for (start, stats) in bins {
            map.insert(start, stats);
        }
        map.0.shrink_to_fit();
        map
    }
}

/// As a map from bin start to stats (what a `BTreeMap` gave).
impl Serialize for BinMap {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for BinMap {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<BinMap, D::Error> {
        let map = std::collections::BTreeMap::<i64, BinStats>::deserialize(deserializer)?;
        Ok(map.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn stats(trips: u64) -> BinStats {
        BinStats {
            trips,
            ..BinStats::default()
        }
    }

    /// The same operations on a `BTreeMap` and on a `BinMap` leave the same bins, and every
    /// read answers the same.
    #[test]
    fn a_bin_map_answers_as_an_ordered_map_would() {
        let mut map = BinMap::default();
        let mut model = BTreeMap::new();
        // Bins added at the end, late ones before it, some twice.
        for (n, bin) in [5, 6, 7, 3, 9, 7, 1, 12, 10].into_iter().enumerate() {
            map.entry_or_default(bin).trips += n as u64;
            model.entry(bin).or_insert_with(BinStats::default).trips += n as u64;
        }
        assert_eq!(map.insert(9, stats(90)), model.insert(9, stats(90)));
        assert_eq!(map.insert(11, stats(11)), model.insert(11, stats(11)));
        assert_eq!(map.remove(&6), model.remove(&6));
        assert_eq!(map.remove(&8), model.remove(&8));
        let same = |map: &BinMap, model: &BTreeMap<i64, BinStats>| {
            assert_eq!(
                map.iter().collect::<Vec<_>>(),
                model.iter().collect::<Vec<_>>()
            );
            assert_eq!(map.len(), model.len());
            assert_eq!(map.first_key_value(), model.first_key_value());
            assert_eq!(map.last_key_value(), model.last_key_value());
            for bin in 0..14 {
                assert_eq!(map.get(&bin), model.get(&bin), "bin {bin}");
                assert_eq!(
                    map.range(bin..).collect::<Vec<_>>(),
                    model.range(bin..).collect::<Vec<_>>()
                );
                assert_eq!(
                    map.range(..=bin).collect::<Vec<_>>(),
                    model.range(..=bin).collect::<Vec<_>>()
                );
                assert_eq!(
                    map.range(bin..bin + 3).collect::<Vec<_>>(),
                    model.range(bin..bin + 3).collect::<Vec<_>>()
                );
            }
        };
        same(&map, &model);
        let (later, model_later) = (map.split_off(&7), model.split_off(&7));
        same(&map, &model);
        same(&later, &model_later);
        // Serialised as the map was.
        assert_eq!(
            serde_json::to_string(&later).unwrap(),
            serde_json::to_string(&model_later).unwrap()
        );
        let read: BinMap = serde_json::from_str(&serde_json::to_string(&later).unwrap()).unwrap();
        assert_eq!(read, later);
    }
}
