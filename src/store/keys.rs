//! Key layouts. Every key starts with the partition's stored number
//! ([`PartitionId::stored`], u32 big-endian: the one place a partition becomes a number) so a
//! partition's state is one contiguous range per column family; times are stored so that byte order is
//! time order; vehicle ids are length-prefixed so no byte in an id can confuse the layout.

use crate::partition_id::{PartitionId, StoredPartition};

pub fn partition_prefix(partition: PartitionId) -> [u8; 4] {
    (partition.stored() as u32).to_be_bytes()
}

/// Where the partition's keys end: the next stored number's prefix.
pub fn partition_end(partition: PartitionId) -> [u8; 4] {
    (partition.stored() as u32 + 1).to_be_bytes()
}

/// An i64 whose big-endian bytes sort like the number.
pub fn sortable_time(t: i64) -> [u8; 8] {
    ((t as u64) ^ (1 << 63)).to_be_bytes()
}

fn time_from(bytes: &[u8]) -> Option<i64> {
    Some((u64::from_be_bytes(bytes.try_into().ok()?) ^ (1 << 63)) as i64)
}

fn push_vehicle(key: &mut Vec<u8>, vehicle_id: &str) {
    key.extend_from_slice(&(vehicle_id.len() as u16).to_be_bytes());
    key.extend_from_slice(vehicle_id.as_bytes());
}

/// partition | vehicle
pub fn vehicle(partition: PartitionId, vehicle_id: &str) -> Vec<u8> {
    let mut key = partition_prefix(partition).to_vec();
    push_vehicle(&mut key, vehicle_id);
    key
}

/// partition | vehicle | bin start
pub fn bin(partition: PartitionId, vehicle_id: &str, bin: i64) -> Vec<u8> {
    let mut key = vehicle(partition, vehicle_id);
    key.extend_from_slice(&sortable_time(bin));
    key
}

/// partition | vehicle | offset of the segment's first record
pub fn fact_segment(partition: PartitionId, vehicle_id: &str, first_offset: i64) -> Vec<u8> {
    let mut key = vehicle(partition, vehicle_id);
    key.extend_from_slice(&sortable_time(first_offset));
    key
}

/// partition | bin start: where the fact segments of a partition's bins from `bin` on begin.
pub fn fact_bin_prefix(partition: PartitionId, bin: i64) -> Vec<u8> {
    let mut key = partition_prefix(partition).to_vec();
    key.extend_from_slice(&sortable_time(bin));
    key
}

/// Splits [`fact_bin_prefix`]'s key into (partition, bin).
pub fn split_fact_bin(key: &[u8]) -> Option<(PartitionId, i64)> {
    (key.len() == 12).then_some((partition_of(key)?, time_from(key.get(4..12)?)?))
}

/// partition | bin of the records' record time | vehicle | offset of the segment's first
/// record. A partition's facts before a bin form one key range.
pub fn fact_segment_by_bin(
    partition: PartitionId,
    bin: i64,
    vehicle_id: &str,
    first_offset: i64,
) -> Vec<u8> {
    let mut key = fact_bin_prefix(partition, bin);
    push_vehicle(&mut key, vehicle_id);
    key.extend_from_slice(&sortable_time(first_offset));
    key
}

/// partition | bin | vehicle: where one vehicle's fact segments of one bin are.
pub fn vehicle_bin_facts_prefix(partition: PartitionId, bin: i64, vehicle_id: &str) -> Vec<u8> {
    let mut key = fact_bin_prefix(partition, bin);
    push_vehicle(&mut key, vehicle_id);
    key
}

/// Splits [`fact_segment_by_bin`]'s key into (partition, bin, vehicle).
pub fn split_fact_by_bin(key: &[u8]) -> Option<(PartitionId, i64, String)> {
    let partition = partition_of(key)?;
    let bin = time_from(key.get(4..12)?)?;
    let len = u16::from_be_bytes(key.get(12..14)?.try_into().ok()?) as usize;
    let id = std::str::from_utf8(key.get(14..14 + len)?)
        .ok()?
        .to_string();
    (key.len() == 14 + len + 8).then_some((partition, bin, id))
}

/// partition | largest event time in the segment | offset of the commit interval's first record.
/// Segments whose largest time is below a cutoff form one key range.
pub fn seen_segment(partition: PartitionId, max_time_ms: i64, first_offset: i64) -> Vec<u8> {
    let mut key = partition_prefix(partition).to_vec();
    key.extend_from_slice(&sortable_time(max_time_ms));
    key.extend_from_slice(&sortable_time(first_offset));
    key
}

/// Splits `partition | vehicle | rest`.
pub fn split_vehicle(key: &[u8]) -> Option<(PartitionId, String, &[u8])> {
    let partition = partition_of(key)?;
    let len = u16::from_be_bytes(key.get(4..6)?.try_into().ok()?) as usize;
    let id = std::str::from_utf8(key.get(6..6 + len)?).ok()?.to_string();
    Some((partition, id, &key[6 + len..]))
}

/// Splits `partition | vehicle | bin start`.
pub fn split_bin(key: &[u8]) -> Option<(PartitionId, String, i64)> {
    let (partition, id, rest) = split_vehicle(key)?;
    Some((partition, id, time_from(rest)?))
}

/// The partition a key belongs to (`None` for an earlier safetel's legacy cohort keys).
pub fn partition_of(key: &[u8]) -> Option<PartitionId> {
    match stored_partition_of(key)? {
        StoredPartition::Partition(partition) => Some(partition),
        StoredPartition::LegacyCohorts => None,
    }
}

/// What a key's partition number stands for, legacy cohort keys included.
pub fn stored_partition_of(key: &[u8]) -> Option<StoredPartition> {
    PartitionId::from_stored(i32::from_be_bytes(key.get(..4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_sort_as_bytes() {
        let times = [i64::MIN, -5, -1, 0, 1, 86_400_000, i64::MAX];
        for pair in times.windows(2) {
            assert!(sortable_time(pair[0]) < sortable_time(pair[1]), "{pair:?}");
        }
    }

    #[test]
    fn keys_split_back() {
        let source = PartitionId::Source;
        assert_eq!(
            split_bin(&bin(source(3), "veh-\u{0}x", -86_400_000)),
            Some((source(3), "veh-\u{0}x".into(), -86_400_000))
        );
        assert_eq!(
            partition_of(&seen_segment(source(7), 123, 9)),
            Some(source(7))
        );
        assert!(
            seen_segment(source(7), 122, 1_000) < seen_segment(source(7), 123, 0),
            "time orders segments first"
        );
        assert_eq!(
            split_fact_by_bin(&fact_segment_by_bin(source(4), -86_400_000, "veh-1", 77)),
            Some((source(4), -86_400_000, "veh-1".into()))
        );
        assert!(
            fact_segment_by_bin(source(4), 86_400_000, "zzz", 9)
                < fact_bin_prefix(source(4), 2 * 86_400_000),
            "a partition's facts before a bin are one range"
        );
        let key = fact_segment(source(2), "v", 5);
        let (partition, id, rest) = split_vehicle(&key).unwrap();
        assert_eq!((partition, id.as_str(), rest.len()), (source(2), "v", 8));
        let cohort = vehicle(PartitionId::Cohort(2), "firmware:1");
        assert_eq!(
            split_vehicle(&cohort).map(|(p, id, _)| (p, id)),
            Some((PartitionId::Cohort(2), "firmware:1".into()))
        );
        assert!(
            partition_prefix(source(i32::from(u16::MAX)))
                < partition_prefix(PartitionId::Cohort(0)),
            "aggregators' keys follow every source partition's"
        );
        // An earlier safetel kept cohort state under partition -1.
        let legacy = [0xFF, 0xFF, 0xFF, 0xFF, 0, 1, b'c'];
        assert_eq!(
            stored_partition_of(&legacy),
            Some(StoredPartition::LegacyCohorts)
        );
        assert_eq!(partition_of(&legacy), None);
    }
}
