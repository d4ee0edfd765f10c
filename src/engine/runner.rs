//! Drives the engine from a record source to a commit target, with the commit policy.
//!
//! One loop for every mode: poll records, process each, dead-letter the rejected ones, and at
//! each commit point flush the dead-letter sink, then write the state delta together with the
//! source offsets, then tell the source. A crash between commit points replays from the last one.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::{Engine, Rejection, SourceRecord, StateDelta};

/// What a poll produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poll {
    /// Some records were handed over (maybe zero if the wait ran out).
    Records(usize),
    /// A bounded source has nothing more.
    End,
}

/// Where records come from: Kafka in `run`, the generator in `demo` and experiments.
pub trait RecordSource {
    /// Hands available records to `handle`, waiting at most `max_wait` for the first.
    fn poll(
        &mut self,
        max_wait: Duration,
        handle: &mut dyn FnMut(&SourceRecord<'_>),
    ) -> Result<Poll, SourceError>;

    /// Called once state up to these positions (next offset per partition) is durable.
    fn committed(&mut self, _positions: &HashMap<i32, i64>) {}

    /// Records between each partition's position and its end, where known.
    fn lag(&self, _positions: &HashMap<i32, i64>) -> Vec<(i32, i64)> {
        Vec::new()
    }
}

/// Where rejected records go: the DLQ topic in `run`, memory in `demo`.
pub trait DeadLetterSink {
    fn send(&mut self, record: &SourceRecord<'_>, rejection: &Rejection) -> Result<(), SinkError>;
    /// Returns once everything sent is durable.
    fn flush(&mut self) -> Result<(), SinkError>;
}

/// Where state deltas go: RocksDB.
pub trait CommitTarget {
    fn commit(&mut self, delta: StateDelta) -> Result<(), String>;
}

#[derive(Debug, thiserror::Error)]
#[error("source failed: {0}")]
pub struct SourceError(pub String);

#[derive(Debug, thiserror::Error)]
#[error("sink failed: {0}")]
pub struct SinkError(pub String);

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("dead-letter sink failed, state not committed: {0}")]
    DeadLetter(#[from] SinkError),
    #[error("state commit failed: {0}")]
    Commit(String),
}

/// When to commit.
#[derive(Debug, Clone, Copy)]
pub struct CommitPolicy {
    pub interval: Duration,
    pub max_records: usize,
}

/// What the HTTP API shows about the loop; updated at each commit.
#[derive(Debug, Default, Serialize, Clone)]
pub struct RunStatus {
    pub running: bool,
    pub commits: u64,
    pub last_commit_unix_ms: Option<i64>,
    /// Next offset per partition, as of the last commit.
    pub committed_offsets: BTreeMap<i32, i64>,
    pub committed_records: i64,
    pub lag: BTreeMap<i32, i64>,
    pub last_error: Option<String>,
}

/// Shared, lock-protected run status.
#[derive(Debug, Default)]
pub struct StatusBoard(Mutex<RunStatus>);

impl StatusBoard {
    pub fn snapshot(&self) -> RunStatus {
        self.0.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn update(&self, f: impl FnOnce(&mut RunStatus)) {
        if let Ok(mut status) = self.0.lock() {
            f(&mut status);
        }
    }
}

/// Totals of one run of the loop.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct RunSummary {
    pub records: u64,
    pub accepted: u64,
    pub dead_lettered: u64,
    pub commits: u64,
    /// Time spent in commits (DLQ flush and state write).
    pub commit_seconds: f64,
}

impl RunSummary {
    fn add_commit(&mut self, seconds: f64) {
        self.commits += 1;
        self.commit_seconds += seconds;
    }
}

/// Runs until the source ends or `shutdown` is set, then commits once more.
pub fn run(
    engine: &mut Engine,
    source: &mut dyn RecordSource,
    dlq: &mut dyn DeadLetterSink,
    target: &mut dyn CommitTarget,
    policy: CommitPolicy,
    shutdown: &AtomicBool,
    status: &StatusBoard,
) -> Result<RunSummary, RunError> {
    let mut summary = RunSummary::default();
    let mut last_commit = Instant::now();
    status.update(|s| s.running = true);
    let result = loop {
        if shutdown.load(Ordering::Relaxed) {
            break Ok(());
        }
        let now_ms = unix_ms();
        let mut failure = None;
        let poll = source.poll(Duration::from_millis(100), &mut |record| {
            if failure.is_some() {
                return;
            }
            if let Some(ts) = record.timestamp_ms {
                engine
                    .metrics
                    .processing_latency
                    .observe((now_ms - ts).max(0) as f64 / 1000.0);
            }
            summary.records += 1;
            match engine.process(record) {
                Ok(_) => summary.accepted += 1,
                Err(rejection) => {
                    summary.dead_lettered += 1;
                    if let Err(e) = dlq.send(record, &rejection) {
                        failure = Some(e);
                    }
                }
            }
        });
        if let Some(e) = failure {
            break Err(RunError::DeadLetter(e));
        }
        let poll = match poll {
            Ok(poll) => poll,
            Err(e) => break Err(RunError::Source(e)),
        };
        if poll == Poll::End {
            break Ok(());
        }
        if engine.pending_records() >= policy.max_records
            || (engine.pending_records() > 0 && last_commit.elapsed() >= policy.interval)
        {
            match commit(engine, source, dlq, target, status) {
                Ok(seconds) => summary.add_commit(seconds),
                Err(e) => break Err(e),
            }
            last_commit = Instant::now();
        }
    };
    let result = result.and_then(|()| {
        summary.add_commit(commit(engine, source, dlq, target, status)?);
        Ok(summary)
    });
    status.update(|s| {
        s.running = false;
        if let Err(e) = &result {
            s.last_error = Some(e.to_string());
        }
    });
    result
}

/// One commit point: DLQ durable first, then state with offsets, then the source is told.
/// Returns how long it took, in seconds.
fn commit(
    engine: &mut Engine,
    source: &mut dyn RecordSource,
    dlq: &mut dyn DeadLetterSink,
    target: &mut dyn CommitTarget,
    status: &StatusBoard,
) -> Result<f64, RunError> {
    let started = Instant::now();
    dlq.flush()?;
    let delta = engine.take_delta();
    target.commit(delta).map_err(RunError::Commit)?;
    let positions = engine.positions();
    source.committed(&positions);
    let lag = source.lag(&positions);
    for (partition, behind) in &lag {
        engine
            .metrics
            .consumer_lag
            .with_label_values(&[&partition.to_string()])
            .set(*behind);
    }
    engine.metrics.commits.inc();
    let seconds = started.elapsed().as_secs_f64();
    engine.metrics.commit_duration.observe(seconds);
    status.update(|s| {
        s.commits += 1;
        s.last_commit_unix_ms = Some(unix_ms());
        s.committed_offsets = positions.iter().map(|(p, o)| (*p, *o)).collect();
        s.committed_records = positions.values().sum();
        s.lag = lag.into_iter().collect();
        s.last_error = None;
    });
    Ok(seconds)
}

pub fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
