//! The files of an upgrade fixture (`tests/fixtures/upgrade/<release>/`), shared by the example
//! that writes them (`examples/upgrade_fixture.rs`) and the test that reads them
//! (`tests/upgrade.rs`):
//! - `input.bin`: the stream, in order: per record its key, produce time and bytes;
//! - `changelog.bin`: every changelog record the run wrote, in order: per record the store format
//!   it was written in, the changelog partition (its stored number), key and value (none: a
//!   tombstone);
//! - `store/`: the RocksDB store the run left (flushed, so its write-ahead log is empty);
//! - `snapshot.json`: that store's logical dump ([`safetel::store::Store::snapshot`]), as the
//!   release that wrote it made it.
//!
//! Integers are little-endian; lengths are u32, a tombstone's length is u32::MAX.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::sync::Arc;

use safetel::config::Config;
use safetel::engine::{Engine, RestoredState, VehicleArchive};
use safetel::metrics::Metrics;
use safetel::store::Store;
use safetel::stream::memory::{MemoryRecord, run_in_memory};
use safetel::stream::runner::CommitTarget;

/// One input record: key, produce time (ms), bytes.
pub type InputRecord = (String, i64, Vec<u8>);

/// One changelog record: store format, changelog partition (stored number), key, value.
pub type ChangelogRecord = (u8, i32, Vec<u8>, Option<Vec<u8>>);

const TOMBSTONE: u32 = u32::MAX;

fn put_bytes(out: &mut impl Write, bytes: Option<&[u8]>) -> io::Result<()> {
    match bytes {
        Some(b) => {
            out.write_all(&(b.len() as u32).to_le_bytes())?;
            out.write_all(b)
        }
        None => out.write_all(&TOMBSTONE.to_le_bytes()),
    }
}

fn take<const N: usize>(input: &mut impl Read) -> io::Result<[u8; N]> {
    let mut buf = [0u8; N];
    input.read_exact(&mut buf)?;
    Ok(buf)
}

fn take_bytes(input: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let len = u32::from_le_bytes(take(input)?);
    if len == TOMBSTONE {
        return Ok(None);
    }
    let mut buf = vec![0u8; len as usize];
    input.read_exact(&mut buf)?;
    Ok(Some(buf))
}

fn required(bytes: Option<Vec<u8>>) -> io::Result<Vec<u8>> {
    bytes.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "a missing field"))
}

pub fn write_input(out: &mut impl Write, records: &[InputRecord]) -> io::Result<()> {
    for (key, time, bytes) in records {
        put_bytes(out, Some(key.as_bytes()))?;
        out.write_all(&time.to_le_bytes())?;
        put_bytes(out, Some(bytes))?;
    }
    Ok(())
}

pub fn read_input(bytes: &[u8]) -> io::Result<Vec<InputRecord>> {
    let mut input = bytes;
    let mut records = Vec::new();
    while !input.is_empty() {
        let key = String::from_utf8(required(take_bytes(&mut input)?)?)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let time = i64::from_le_bytes(take(&mut input)?);
        records.push((key, time, required(take_bytes(&mut input)?)?));
    }
    Ok(records)
}

pub fn write_changelog(out: &mut impl Write, records: &[ChangelogRecord]) -> io::Result<()> {
    for (format, partition, key, value) in records {
        out.write_all(&[*format])?;
        out.write_all(&partition.to_le_bytes())?;
        put_bytes(out, Some(key))?;
        put_bytes(out, value.as_deref())?;
    }
    Ok(())
}

pub fn read_changelog(bytes: &[u8]) -> io::Result<Vec<ChangelogRecord>> {
    let mut input = bytes;
    let mut records = Vec::new();
    while !input.is_empty() {
        let [format] = take(&mut input)?;
        let partition = i32::from_le_bytes(take(&mut input)?);
        let key = required(take_bytes(&mut input)?)?;
        records.push((format, partition, key, take_bytes(&mut input)?));
    }
    Ok(records)
}

/// Runs the fixture's `input` through this release's engine with the fixture's [`settings`],
/// silent vehicles leaving memory for `store`, committing to `target`. Returns how many records
/// were dead-lettered and how many alerts were raised.
pub fn run_stream(
    input: Vec<InputRecord>,
    store: &Arc<Store>,
    target: &mut dyn CommitTarget,
) -> (usize, usize) {
    let config = Config::default_config();
    let mut engine = Engine::new(
        config.stream.clone(),
        &config.detector,
        RestoredState::default(),
        Metrics::new(),
    )
    .expect("the default configuration is valid")
    .with_retention(settings::RETENTION)
    .with_archive(Arc::clone(store) as Arc<dyn VehicleArchive>);
    let records = input.into_iter().map(|(key, time, bytes)| MemoryRecord {
        key,
        bytes,
        timestamp_ms: Some(time),
    });
    let (dead_letters, alerts) = run_in_memory(
        &mut engine,
        records,
        settings::PARTITIONS,
        target,
        settings::COMMIT_EVERY,
    )
    .expect("the fixture's stream runs");
    (dead_letters.records.len(), alerts.alerts.len())
}

/// How the fixture's run was configured: the test replays the input the same way.
pub mod settings {
    use safetel::engine::Retention;

    const DAY: i64 = 86_400_000;
    /// Partitions the input is spread over (as `demo` spreads it, by key).
    pub const PARTITIONS: i32 = 2;
    /// Records per commit: many commits, so that values are rewritten and tombstoned.
    pub const COMMIT_EVERY: usize = 300;
    /// Short horizons, so that bins retire, facts expire and silent vehicles leave memory.
    pub const RETENTION: Retention = Retention {
        facts_ms: Some(6 * DAY),
        bins_ms: Some(5 * DAY),
        silent_ms: Some(3 * DAY),
    };
    /// The fleet: small (the files are committed), with the default regressions and every
    /// fault (rejected records enter the ledger).
    pub fn fleet() -> safetel::generator::GeneratorConfig {
        safetel::generator::GeneratorConfig {
            seed: 31,
            vehicles: 14,
            days: 12,
            faults: safetel::generator::FaultConfig {
                out_of_order: 0.02,
                late: 0.01,
                duplicate: 0.01,
                corrupt: 0.01,
            },
            ..Default::default()
        }
    }
}
