//! [`PartitionId`]: which input partition a record, a partition's state or an offset belongs
//! to: a source partition of the events topic, or a cohort aggregator (a partition of the
//! repartition topic).
//!
//! The engine and its edges pass this type, never a bare number that might be either. It is
//! turned into one number only where state is written down (the store's keys and the group
//! view's records: [`PartitionId::stored`], read back by [`PartitionId::from_stored`]), and
//! into a topic and partition only at the Kafka edge (`kafka::changelog::Topics`).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Stored numbers of cohort aggregators start here, above any source partition.
const STORED_COHORT_BASE: i32 = 1 << 20;

/// Where cohort state lived before cohorts were aggregated per repartition partition.
const STORED_LEGACY_COHORTS: i32 = -1;

/// One input partition of the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PartitionId {
    /// Partition `n` of the events topic: vehicles, their bins and records.
    Source(i32),
    /// Cohort aggregator `q`: partition `q` of the repartition topic.
    Cohort(i32),
}

/// What a stored partition number stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredPartition {
    Partition(PartitionId),
    /// Cohort state of a safetel from before cohorts were aggregated per repartition
    /// partition: not used (the cohorts' series start again).
    LegacyCohorts,
}

impl Default for PartitionId {
    /// Source partition 0 (a vehicle not yet placed: the view's readers, tests).
    fn default() -> Self {
        PartitionId::Source(0)
    }
}

impl PartitionId {
    /// The source partition's number, if it is one.
    pub fn source(self) -> Option<i32> {
        match self {
            PartitionId::Source(n) => Some(n),
            PartitionId::Cohort(_) => None,
        }
    }

    /// The cohort aggregator's number, if it is one.
    pub fn cohort(self) -> Option<i32> {
        match self {
            PartitionId::Cohort(q) => Some(q),
            PartitionId::Source(_) => None,
        }
    }

    pub fn is_source(self) -> bool {
        matches!(self, PartitionId::Source(_))
    }

    /// The number it is written down under (store keys, group view records).
    pub fn stored(self) -> i32 {
        match self {
            PartitionId::Source(n) => n,
            PartitionId::Cohort(q) => STORED_COHORT_BASE + q,
        }
    }

    /// Reads a number [`PartitionId::stored`] wrote (or an earlier safetel's).
    pub fn from_stored(number: i32) -> Option<StoredPartition> {
        match number {
            STORED_LEGACY_COHORTS => Some(StoredPartition::LegacyCohorts),
            n if n >= STORED_COHORT_BASE => Some(StoredPartition::Partition(PartitionId::Cohort(
                n - STORED_COHORT_BASE,
            ))),
            n if n >= 0 => Some(StoredPartition::Partition(PartitionId::Source(n))),
            _ => None,
        }
    }
}

impl fmt::Display for PartitionId {
    /// `3` for a source partition, `cohort 2` for an aggregator.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PartitionId::Source(n) => write!(f, "{n}"),
            PartitionId::Cohort(q) => write!(f, "cohort {q}"),
        }
    }
}

/// As its stored number (what the API's JSON has always shown).
impl Serialize for PartitionId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_i32(self.stored())
    }
}

/// From its stored number (an earlier safetel's legacy cohort number refused).
impl<'de> Deserialize<'de> for PartitionId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let number = i32::deserialize(deserializer)?;
        match PartitionId::from_stored(number) {
            Some(StoredPartition::Partition(id)) => Ok(id),
            _ => Err(serde::de::Error::custom(format!(
                "{number} is not a partition number"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_numbers_read_back_as_the_same_partition() {
        for id in [
            PartitionId::Source(0),
            PartitionId::Source(STORED_COHORT_BASE - 1),
            PartitionId::Cohort(0),
            PartitionId::Cohort(7),
        ] {
            assert_eq!(
                PartitionId::from_stored(id.stored()),
                Some(StoredPartition::Partition(id)),
                "{id}"
            );
        }
        assert_eq!(
            PartitionId::from_stored(-1),
            Some(StoredPartition::LegacyCohorts)
        );
        assert_eq!(PartitionId::from_stored(-2), None);
    }

    #[test]
    fn sources_order_before_aggregators() {
        let mut ids = vec![
            PartitionId::Cohort(0),
            PartitionId::Source(5),
            PartitionId::Source(1),
        ];
        ids.sort();
        assert_eq!(
            ids,
            [
                PartitionId::Source(1),
                PartitionId::Source(5),
                PartitionId::Cohort(0)
            ]
        );
        assert_eq!(PartitionId::Cohort(2).to_string(), "cohort 2");
    }
}
