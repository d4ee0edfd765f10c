//! Drives the engine from a record source to a commit target, with the commit policy.
//!
//! One loop for every mode: poll records, process each, dead-letter the rejected ones, and at
//! each commit point flush the dead-letter sink, publish and flush the alerts raised since the
//! last one, then write the state delta together with the source offsets, then tell the source.
//! A crash between commit points replays from the last one and raises the same alerts again,
//! with the same ids: at-least-once, deduplicable downstream.

use std::collections::{BTreeMap, HashMap};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::dead_letter::Rejection;
use crate::engine::Engine;
use crate::engine::admission::SourceRecord;
use crate::engine::delta::StateDelta;
use crate::model::{RegressionAlert, ReviewRequest};
use crate::partition_id::PartitionId;

/// What a poll produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poll {
    /// Some records were handed over (maybe zero if the wait ran out).
    Records(usize),
    /// A bounded source has nothing more.
    End,
}

/// How far one partition's consumer is behind its end: the topic and partition as the broker
/// names them, and the consumer group.
#[derive(Debug, Clone, PartialEq)]
pub struct Lag {
    /// The engine's partition (a cohort aggregator for the repartition topic).
    pub internal: PartitionId,
    pub topic: String,
    pub group: String,
    pub partition: i32,
    pub behind: i64,
}

/// The most records the engine takes at once ([`Engine::process_batch`]): its tasks run side by
/// side on each batch, and a commit due is seen between batches. Large enough to hold several
/// partitions' records (a Kafka consumer hands over a partition's fetched records together, a
/// few thousand at a time).
const BATCH_RECORDS: usize = 16_384;

/// Records polled, copied out of the source's buffers, for the tasks to process together.
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    records: Vec<BatchRecord>,
    /// The partitions it has records of.
    partitions: Vec<PartitionId>,
}

/// A record of a [`Batch`]: its key and payload are ranges of the batch's bytes.
struct BatchRecord {
    partition: PartitionId,
    offset: i64,
    key: Option<std::ops::Range<usize>>,
    payload: std::ops::Range<usize>,
    timestamp_ms: Option<i64>,
}

impl Batch {
    fn clear(&mut self) {
        self.bytes.clear();
        self.records.clear();
        self.partitions.clear();
    }

    fn len(&self) -> usize {
        self.records.len()
    }

    fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// A batch of copies of `first`, then `then`'s records.
    fn joined(first: &[SourceRecord<'_>], then: &Batch) -> Batch {
        let mut batch = Batch::default();
        batch.extend(first);
        batch.extend(&then.records());
        batch
    }

    fn extend(&mut self, records: &[SourceRecord<'_>]) {
        for record in records {
            self.push(record);
        }
    }

    /// How many partitions the batch has records of.
    fn partitions(&self) -> usize {
        self.partitions.len()
    }

    fn push(&mut self, record: &SourceRecord<'_>) {
        let mut copy = |bytes: &[u8]| {
            let start = self.bytes.len();
            self.bytes.extend_from_slice(bytes);
            start..self.bytes.len()
        };
        if self
            .records
            .last()
            .is_none_or(|last| last.partition != record.partition)
            && !self.partitions.contains(&record.partition)
        {
            self.partitions.push(record.partition);
        }
        let key = record.key.map(&mut copy);
        let payload = copy(record.payload);
        self.records.push(BatchRecord {
            partition: record.partition,
            offset: record.offset,
            key,
            payload,
            timestamp_ms: record.timestamp_ms,
        });
    }

    fn records(&self) -> Vec<SourceRecord<'_>> {
        self.records
            .iter()
            .map(|r| SourceRecord {
                partition: r.partition,
                offset: r.offset,
                key: r.key.clone().map(|key| &self.bytes[key]),
                payload: &self.bytes[r.payload.clone()],
                timestamp_ms: r.timestamp_ms,
            })
            .collect()
    }
}

/// What the engine may let a commit reach while it processes `batch`
/// ([`Engine::process_batch`]): the commit's weight, unless records waiting for other
/// partitions' closes fill a batch already (then every close due goes at once and they all
/// pass).
fn commit_weight(batch: &Batch, policy: CommitPolicy) -> usize {
    match batch.len() > BATCH_RECORDS {
        true => usize::MAX,
        false => policy.max_records,
    }
}

/// Adds to `batch` from `source`: polls until the batch holds records of
/// `partitions` partitions (enough for the tasks to run side by side) or [`BATCH_RECORDS`], or the
/// source has nothing more for now; one poll for one partition. With `discard`, records are read
/// and dropped.
fn poll_batch(
    source: &mut dyn RecordSource,
    batch: &mut Batch,
    partitions: usize,
    discard: bool,
) -> Result<Poll, SourceError> {
    let mut wait = Duration::from_millis(100);
    loop {
        let mut handed = 0;
        let poll = source.poll(wait, &mut |record| {
            handed += 1;
            if !discard {
                batch.push(record);
            }
            if batch.len() >= BATCH_RECORDS {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })?;
        let enough = batch.len() >= BATCH_RECORDS || batch.partitions() >= partitions;
        if poll == Poll::End || handed == 0 || discard || enough {
            return Ok(poll);
        }
        wait = Duration::ZERO;
    }
}

/// What a processed batch's records leave for the run: their latencies, the run's counts, the
/// alerts' triggers, and the rejected records in the dead-letter topic.
struct Settle {
    now_ms: i64,
    wall_clock: bool,
}

impl Settle {
    /// Returns the records the engine left for the next batch.
    fn outcomes<'r>(
        &self,
        engine: &Engine,
        records: &[SourceRecord<'r>],
        processed: crate::engine::Processed,
        committer: &mut Committer,
        dlq: &mut dyn DeadLetterSink,
    ) -> Result<Vec<SourceRecord<'r>>, RunError> {
        for (i, outcome) in processed.outcomes {
            let record = &records[i];
            let produced_ms = record.timestamp_ms.filter(|_| self.wall_clock);
            if let Some(ts) = produced_ms {
                engine
                    .metrics
                    .processing_latency
                    .observe((self.now_ms - ts).max(0) as f64 / 1000.0);
            }
            let summary = &mut committer.summary;
            summary.records += 1;
            let triggers = std::iter::repeat_n(produced_ms, outcome.alerts);
            committer.alert_triggers.extend(triggers);
            match outcome.result {
                Ok(_) => summary.accepted += 1,
                Err(rejection) => {
                    summary.dead_lettered += 1;
                    dlq.send(record, &rejection).map_err(RunError::DeadLetter)?;
                }
            }
        }
        let unattributed = std::iter::repeat_n(None, processed.unattributed_alerts);
        committer.alert_triggers.extend(unattributed);
        Ok(processed.deferred.iter().map(|&i| records[i]).collect())
    }
}

/// Where records come from: Kafka in `run`, the generator in `demo` and experiments.
pub trait RecordSource {
    /// Hands available records to `handle`, waiting at most `max_wait` for the first; a
    /// `Break` from `handle` ends the batch after that record (the next poll goes on from the
    /// record after it).
    fn poll(
        &mut self,
        max_wait: Duration,
        handle: &mut dyn FnMut(&SourceRecord<'_>) -> ControlFlow<()>,
    ) -> Result<Poll, SourceError>;

    /// Whether records' timestamps are when they were really produced (a broker's), so that
    /// latencies from them mean something; a simulation's are simulated.
    fn timestamps_are_wall_clock(&self) -> bool {
        true
    }

    /// Records between each partition's position and its end, where known.
    fn lag(&self, _positions: &HashMap<PartitionId, i64>) -> Vec<Lag> {
        Vec::new()
    }

    /// The source partitions this process reads now (their numbers), each with its end offset
    /// where known; `None` if the source cannot tell (then every partition that delivered a
    /// record counts).
    fn partitions(&self) -> Option<Vec<(i32, Option<i64>)>> {
        None
    }

    /// A change of the partitions this process owns, noted during the last poll. The loop
    /// answers a revocation with [`RecordSource::revoked`] once the state is committed, and an
    /// assignment with [`RecordSource::assign`] once the state is restored.
    fn rebalance(&mut self) -> Option<Rebalance> {
        None
    }

    /// The revoked partitions' state is committed: they may go.
    fn revoked(&mut self) {}

    /// Starts reading the assigned partitions, each at its next offset (`None`: from the start).
    fn assign(&mut self, _positions: &[(PartitionId, Option<i64>)]) -> Result<(), SourceError> {
        Ok(())
    }

    /// How many partitions the input topic has, where known.
    fn partition_count(&self) -> Option<i32> {
        None
    }

    /// How long the group waits for this process before it gives its partitions to another
    /// (`session.timeout.ms`); `None` for a source without a group.
    fn session_timeout(&self) -> Option<Duration> {
        None
    }

    /// What stops the source from consuming, as far as it can tell.
    fn health(&self) -> SourceHealth {
        SourceHealth::default()
    }
}

/// What a source knows is wrong with its input.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct SourceHealth {
    /// Input topics the cluster does not have (a name mistyped, say).
    pub missing_topics: Vec<String>,
    /// The last error the consumer group reported (joining, heartbeats), if not cleared since.
    pub group_error: Option<String>,
}

/// A consumer-group rebalance, as the loop handles it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rebalance {
    /// Partitions taken away. `lost`: the group moved on without us (a session timeout), so
    /// they may already be another process's and nothing more may be committed for them.
    Revoke {
        partitions: Vec<PartitionId>,
        lost: bool,
    },
    /// Partitions given to this process (with eager rebalancing, all it owns from now on).
    Assign(Vec<PartitionId>),
}

/// Where rejected records go: the DLQ topic in `run`, memory in `demo`.
pub trait DeadLetterSink {
    fn send(&mut self, record: &SourceRecord<'_>, rejection: &Rejection) -> Result<(), SinkError>;
    /// Returns once everything sent is durable.
    fn flush(&mut self) -> Result<(), SinkError>;
}

/// Where the engine's messages go: regression alerts (the regressions topic in `run`, memory in
/// `demo`) and review requests (the `review.requests` topic).
pub trait OutputSink {
    fn alert(&mut self, alert: &RegressionAlert) -> Result<(), SinkError>;
    fn review_request(&mut self, request: &ReviewRequest) -> Result<(), SinkError>;
    /// Returns once everything sent is durable.
    fn flush(&mut self) -> Result<(), SinkError>;
}

/// The sinks of one run: dead letters, and alerts and review requests.
pub struct Sinks<'a> {
    pub dead_letters: &'a mut dyn DeadLetterSink,
    pub outputs: &'a mut dyn OutputSink,
}

/// Where state deltas go: RocksDB (behind a changelog in `run`). Written from a thread of its
/// own, hence `Send`.
pub trait CommitTarget: Send {
    /// Makes `delta` durable, all of it or nothing.
    fn commit(&mut self, delta: StateDelta) -> Result<(), CommitError>;

    /// The committed state of partitions this process has just been given, brought up to date
    /// with whatever another process committed for them.
    fn load_partitions(
        &mut self,
        _partitions: &[PartitionId],
    ) -> Result<crate::engine::restored::RestoredState, CommitError> {
        Err(CommitError::Unsupported(
            "this state store cannot take over partitions (no changelog)",
        ))
    }
}

/// Why a commit (or a load of assigned partitions) failed. Only
/// [`is_recoverable`](CommitError::is_recoverable) ones let the run go on.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The consumer group moved on without this process (it missed its session timeout: a
    /// long pause), so its partitions may be another's: nothing of the commit was written, and
    /// nothing may be committed for them until the group assigns partitions again.
    #[error("the consumer group moved on without this process: {0}")]
    GroupMoved(String),
    /// Another process took over this one's identity (its transactional id): nothing more may
    /// be committed by this process.
    #[error("{0}")]
    Fenced(String),
    /// The local state store failed (its own error, as the edge that has a store gives it).
    #[error("state store: {0}")]
    Store(Box<dyn std::error::Error + Send + Sync>),
    /// The target cannot do what was asked.
    #[error("{0}")]
    Unsupported(&'static str),
    /// Anything else (the changelog, the broker): the run stops.
    #[error("{0}")]
    Failed(String),
}

impl CommitError {
    /// Whether the run may go on after it (rejoining its group), rather than stop.
    pub fn is_recoverable(&self) -> bool {
        matches!(self, CommitError::GroupMoved(_))
    }
}

/// Why a source cannot go on reading.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// An assigned partition cannot be read from its committed position.
    #[error("source cannot read {topic} [{partition}] from {offset}: {detail}")]
    Position {
        topic: String,
        partition: i32,
        offset: String,
        detail: String,
    },
    /// The consumer refused the assignment.
    #[error("source refused the assignment: {0}")]
    Assign(String),
}

#[derive(Debug, thiserror::Error)]
#[error("sink failed: {0}")]
pub struct SinkError(pub String);

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("dead-letter sink failed, state not committed: {0}")]
    DeadLetter(#[from] SinkError),
    #[error("alert sink failed, state not committed: {0}")]
    Alerts(SinkError),
    #[error("state commit failed: {0}")]
    Commit(#[from] CommitError),
    #[error("restoring assigned partitions: {0}")]
    Restore(#[from] crate::engine::restored::RestoreError),
    #[error("the state writer thread stopped")]
    WriterStopped,
    #[error(
        "lost the consumer group's partitions and was not given any back within {0:?}; exiting so that a supervisor restarts the process"
    )]
    NoRejoin(Duration),
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
    /// Next offset per source partition, as of the last commit.
    pub committed_offsets: BTreeMap<i32, i64>,
    /// Records of the source partitions committed (the sum of their next offsets).
    pub committed_records: i64,
    /// Next offset per partition of the cohort repartition topic, as of the last commit.
    pub cohort_report_offsets: BTreeMap<i32, i64>,
    /// With a consumer group: the source partitions and repartition-topic partitions this
    /// process was last assigned.
    pub assigned_partitions: Option<Vec<i32>>,
    pub assigned_cohort_partitions: Option<Vec<i32>>,
    pub lag: BTreeMap<PartitionId, i64>,
    pub last_error: Option<String>,
    /// Assignments received from the consumer group so far.
    pub assignments: u64,
    /// Partitions are being restored (from the store and changelogs) before consuming.
    pub restoring: bool,
    /// The group moved on without this process: it holds nothing and waits to be assigned
    /// partitions again.
    pub rejoining_since_unix_ms: Option<i64>,
    /// The loop stood still for longer than the session timeout (a pause): until the group
    /// assigns again or confirms the membership, the process may not own what it holds.
    pub membership_unconfirmed_since_unix_ms: Option<i64>,
    /// The source's view of its input.
    pub source: SourceHealth,
    /// The group's session timeout, where there is a group: standing still for that long may
    /// cost the membership.
    pub session_timeout_ms: Option<u64>,
    /// The input topic's partitions, once known.
    pub source_partitions: Option<i32>,
}

impl RunStatus {
    /// The committed next offsets: source partitions' and the repartition topic's.
    fn set_committed(&mut self, positions: &HashMap<PartitionId, i64>) {
        self.committed_offsets = positions
            .iter()
            .filter_map(|(p, o)| Some((p.source()?, *o)))
            .collect();
        self.committed_records = self.committed_offsets.values().sum();
        self.cohort_report_offsets = positions
            .iter()
            .filter_map(|(p, o)| Some((p.cohort()?, *o)))
            .collect();
    }

    /// Whether this process can vouch for owning the partitions it serves.
    pub fn owns_what_it_holds(&self) -> bool {
        self.rejoining_since_unix_ms.is_none()
            && self.membership_unconfirmed_since_unix_ms.is_none()
    }
}

/// Shared, lock-protected run status, and the loop's heartbeat.
#[derive(Debug, Default)]
pub struct StatusBoard {
    status: Mutex<RunStatus>,
    /// When the loop last turned (unix ms), 0 before it first did.
    heartbeat_unix_ms: std::sync::atomic::AtomicI64,
}

impl StatusBoard {
    pub fn snapshot(&self) -> RunStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// When the loop last turned (unix ms), if it has. Read it before [`StatusBoard::snapshot`]:
    /// the loop updates the status before the heartbeat.
    pub fn heartbeat_unix_ms(&self) -> Option<i64> {
        Some(self.heartbeat_unix_ms.load(Ordering::Acquire)).filter(|t| *t > 0)
    }

    fn beat(&self) {
        self.heartbeat_unix_ms.store(unix_ms(), Ordering::Release);
    }

    fn update(&self, f: impl FnOnce(&mut RunStatus)) {
        if let Ok(mut status) = self.status.lock() {
            f(&mut status);
        }
    }
}

/// How long an unconfirmed membership (after a pause) stays unconfirmed when the group says
/// nothing: heartbeats go every few seconds, so a lost membership is reported well within it.
const UNCONFIRMED_FOR: Duration = Duration::from_secs(15);

/// Totals of one run of the loop.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct RunSummary {
    pub records: u64,
    pub accepted: u64,
    pub dead_lettered: u64,
    pub alerts: u64,
    pub commits: u64,
    /// Time spent in commits, from the DLQ flush to the state being durable (overlaps processing).
    pub commit_seconds: f64,
}

impl RunSummary {
    fn add_commit(&mut self, seconds: f64) {
        self.commits += 1;
        self.commit_seconds += seconds;
    }
}

/// Work for the writer thread.
enum WriterJob {
    Commit(Box<PendingCommit>),
    Load(Vec<PartitionId>),
}

/// A commit handed to the writer thread.
struct PendingCommit {
    delta: StateDelta,
    positions: HashMap<PartitionId, i64>,
    started: Instant,
}

/// What the writer thread reports back: the positions now durable and the commit's duration.
type CommitDone = Result<(HashMap<PartitionId, i64>, f64), CommitError>;

/// Runs until the source ends or `shutdown` is set, then commits once more.
///
/// State deltas are written by a second thread while the loop goes on with the next records, at
/// most one commit in flight; the source and the status learn of a commit only once it is durable.
pub fn run(
    engine: &mut Engine,
    source: &mut dyn RecordSource,
    sinks: Sinks<'_>,
    target: &mut dyn CommitTarget,
    policy: CommitPolicy,
    shutdown: &AtomicBool,
    status: &StatusBoard,
) -> Result<RunSummary, RunError> {
    status.update(|s| s.running = true);
    if !engine.task_threads_chosen() {
        let threads = engine.stream_config().threads;
        engine.set_task_threads(super::threads::for_config(threads));
    }
    let result = std::thread::scope(|scope| {
        let (to_writer, for_writer) = mpsc::sync_channel::<WriterJob>(1);
        let (from_writer, done) = mpsc::channel::<CommitDone>();
        let (loaded_tx, loaded) =
            mpsc::channel::<Result<crate::engine::restored::RestoredState, CommitError>>();
        std::thread::Builder::new()
            .name("state-writer".into())
            .spawn_scoped(scope, move || {
                for job in for_writer {
                    match job {
                        WriterJob::Commit(commit) => {
                            let commit = *commit;
                            let result = target.commit(commit.delta).map(|()| {
                                (commit.positions, commit.started.elapsed().as_secs_f64())
                            });
                            // The run goes on after a lost membership (it rejoins).
                            let failed = result.as_ref().is_err_and(|e| !e.is_recoverable());
                            if from_writer.send(result).is_err() || failed {
                                break;
                            }
                        }
                        WriterJob::Load(partitions) => {
                            if loaded_tx.send(target.load_partitions(&partitions)).is_err() {
                                break;
                            }
                        }
                    }
                }
            })
            .expect("spawn the state writer");
        let mut committer = Committer {
            to_writer,
            done,
            loaded,
            in_flight: false,
            summary: RunSummary::default(),
            alert_triggers: Vec::new(),
            rejoining: None,
            committed: HashMap::new(),
            lag_published: Instant::now(),
        };
        let Sinks {
            dead_letters: dlq,
            outputs: alerts,
        } = sinks;
        let outcome = consume(
            engine,
            source,
            dlq,
            alerts,
            &mut committer,
            policy,
            shutdown,
            status,
        );
        // Whatever happened, wait for the commit in flight; then, if all went well, commit the rest.
        let outcome = outcome.and(committer.wait(engine, source, status));
        let outcome = outcome.and_then(|()| {
            committer.start(engine, dlq, alerts)?;
            committer.wait(engine, source, status)
        });
        outcome.map(|()| committer.summary)
    });
    status.update(|s| {
        s.running = false;
        if let Err(e) = &result {
            s.last_error = Some(e.to_string());
        }
    });
    result
}

/// Refits' priors sent from their thread: what [`Engine::receive_priors`] takes.
impl crate::engine::PriorsInbox for mpsc::Receiver<Vec<(String, crate::engine::Prior)>> {
    fn take_arrived(&mut self) -> Vec<Vec<(String, crate::engine::Prior)>> {
        self.try_iter().collect()
    }
}

/// The loop proper: poll, process, dead-letter, and start commits at the commit points.
#[allow(clippy::too_many_arguments)]
fn consume(
    engine: &mut Engine,
    source: &mut dyn RecordSource,
    dlq: &mut dyn DeadLetterSink,
    alerts: &mut dyn OutputSink,
    committer: &mut Committer,
    policy: CommitPolicy,
    shutdown: &AtomicBool,
    status: &StatusBoard,
) -> Result<(), RunError> {
    let mut last_commit = Instant::now();
    let session_timeout = source.session_timeout();
    status.update(|s| s.session_timeout_ms = session_timeout.map(|t| t.as_millis() as u64));
    let mut turned = Instant::now();
    let mut unconfirmed: Option<Instant> = None;
    let mut source_checked = Instant::now();
    // Records polled and not yet processed; with more than one thread, a batch is processed
    // while the next is polled.
    let (mut ready, mut incoming) = (Batch::default(), Batch::default());
    let threads = engine.threads();
    let pipelined = threads > 1;
    while !shutdown.load(Ordering::Relaxed) {
        // The membership first, then the heartbeat: whoever sees the new heartbeat sees what
        // the pause made of the membership (the HTTP edge reads them in the other order).
        watch_membership(
            session_timeout,
            std::mem::replace(&mut turned, Instant::now()).elapsed(),
            &mut unconfirmed,
            committer.rejoining,
            status,
        )?;
        status.beat();
        if source_checked.elapsed() >= Duration::from_secs(1) {
            source_checked = Instant::now();
            let health = source.health();
            status.update(|s| s.source = health);
        }
        // Rejoining: records of partitions that may be another's are not processed; they are
        // read again, from the committed offsets, once partitions are assigned.
        let discard = committer.rejoining.is_some();
        if discard {
            ready.clear();
        }
        let settled = Settle {
            now_ms: unix_ms(),
            wall_clock: source.timestamps_are_wall_clock(),
        };
        // Each batch: the records that waited for another partition's close first, then those
        // polled (polled the same way whatever waited, so the batches do not depend on the
        // threads).
        incoming.clear();
        let poll = if pipelined && !ready.is_empty() {
            let records = ready.records();
            let limit = commit_weight(&ready, policy);
            let (poll, processed) = std::thread::scope(|scope| {
                let work = std::thread::Builder::new()
                    .name("pipeline-tasks".into())
                    .spawn_scoped(scope, || engine.process_batch(&records, limit))
                    .expect("start the batch's thread");
                let poll = poll_batch(source, &mut incoming, threads, discard);
                (poll, work.join().expect("the batch's tasks panicked"))
            });
            let waiting = settled.outcomes(engine, &records, processed, committer, dlq)?;
            let next = (!waiting.is_empty()).then(|| Batch::joined(&waiting, &incoming));
            drop(records);
            match next {
                Some(next) => ready = next,
                None => std::mem::swap(&mut ready, &mut incoming),
            }
            poll
        } else if ready.is_empty() {
            poll_batch(source, &mut ready, threads, discard)
        } else {
            // Polled as into an empty batch, then after what waits.
            let poll = poll_batch(source, &mut incoming, threads, discard);
            ready.extend(&incoming.records());
            poll
        };
        // What follows sees the batch just polled processed: always on one thread, and all of it
        // before a rebalance. (At a bounded source's end the loop goes on until nothing is
        // left: a batch processed, then a commit due, each turn, as on one thread.)
        let mut first_change = source.rebalance();
        if !pipelined || first_change.is_some() {
            let limit = match first_change {
                Some(_) => usize::MAX,
                None => commit_weight(&ready, policy),
            };
            let records = ready.records();
            let processed = engine.process_batch(&records, limit);
            let waiting = settled.outcomes(engine, &records, processed, committer, dlq)?;
            let next = Batch::joined(&waiting, &Batch::default());
            drop(records);
            ready = next;
        }
        while let Some(change) = first_change.take().or_else(|| source.rebalance()) {
            rebalance(engine, source, dlq, alerts, committer, status, change)?;
            // Restoring takes the time it takes: not a pause.
            turned = Instant::now();
        }
        if let Some(inputs) = source.partitions() {
            engine.set_input_partitions(&inputs);
        }
        engine.apply_received_priors();
        // A bounded source's end: once what waited for its partition's close is processed too.
        if poll? == Poll::End && ready.is_empty() {
            return Ok(());
        }
        committer.reap(engine, source, status)?;
        if engine.pending_weight() >= policy.max_records
            || (engine.has_pending_changes() && last_commit.elapsed() >= policy.interval)
        {
            committer.wait(engine, source, status)?;
            committer.start(engine, dlq, alerts)?;
            last_commit = Instant::now();
            // A commit waited on past the session timeout counts as standing still: the group
            // may have moved on meanwhile.
        } else if committer.lag_published.elapsed() >= policy.interval {
            // Nothing to commit: the lag behind the last commit still moves with the broker.
            committer.publish_lag(engine, source, status);
        }
    }
    Ok(())
}

/// After a pause (the loop stood still past the session timeout, as under SIGSTOP or a long VM
/// pause), the group has most likely given this process's partitions to another: until it
/// assigns again, or says nothing for [`UNCONFIRMED_FOR`], the membership is unconfirmed (not
/// ready, nothing served). Rejoining that takes longer than twice the session timeout plus a
/// minute ends the run, so that a supervisor restarts the process.
fn watch_membership(
    session_timeout: Option<Duration>,
    stood_still: Duration,
    unconfirmed: &mut Option<Instant>,
    rejoining: Option<Instant>,
    status: &StatusBoard,
) -> Result<(), RunError> {
    let Some(session_timeout) = session_timeout else {
        return Ok(());
    };
    if stood_still > session_timeout {
        tracing::warn!(
            paused_s = stood_still.as_secs_f64(),
            session_timeout_s = session_timeout.as_secs_f64(),
            "the loop stood still past the session timeout: membership unconfirmed until the group answers"
        );
        *unconfirmed = Some(Instant::now());
        status.update(|s| s.membership_unconfirmed_since_unix_ms = Some(unix_ms()));
    } else if unconfirmed.is_some_and(|since| since.elapsed() > UNCONFIRMED_FOR) {
        *unconfirmed = None;
        status.update(|s| s.membership_unconfirmed_since_unix_ms = None);
    }
    let rejoin_deadline = session_timeout * 2 + Duration::from_secs(60);
    if rejoining.is_some_and(|since| since.elapsed() > rejoin_deadline) {
        return Err(RunError::NoRejoin(rejoin_deadline));
    }
    Ok(())
}

/// Settles a rebalance. Revoked partitions: everything processed is committed first (unless
/// the partitions are lost already), then they go. Assigned partitions: the engine lets go of
/// what it holds and takes the assigned partitions' committed state, brought up to date from
/// their changelogs, and reading starts at their committed offsets.
#[allow(clippy::too_many_arguments)]
fn rebalance(
    engine: &mut Engine,
    source: &mut dyn RecordSource,
    dlq: &mut dyn DeadLetterSink,
    alerts: &mut dyn OutputSink,
    committer: &mut Committer,
    status: &StatusBoard,
    change: Rebalance,
) -> Result<(), RunError> {
    match change {
        Rebalance::Revoke { partitions, lost } => {
            if lost {
                committer.wait(engine, source, status)?;
                committer.lose_membership(
                    engine,
                    status,
                    &format!("partitions {partitions:?} lost (the session timed out)"),
                );
            } else {
                committer.wait(engine, source, status)?;
                committer.start(engine, dlq, alerts)?;
                committer.wait(engine, source, status)?;
            }
            source.revoked();
        }
        Rebalance::Assign(partitions) => {
            committer.wait(engine, source, status)?;
            status.update(|s| s.restoring = true);
            let restored = committer.load(partitions.clone());
            status.update(|s| s.restoring = false);
            let restored = restored?;
            engine.release(&engine.held_partitions());
            engine.adopt(restored)?;
            engine.republish_view();
            let positions = engine.positions();
            let starts: Vec<(PartitionId, Option<i64>)> = partitions
                .iter()
                .map(|p| (*p, positions.get(p).copied()))
                .collect();
            tracing::info!(?starts, "partitions restored");
            status.update(|s| {
                let source: Vec<i32> = partitions.iter().filter_map(|p| p.source()).collect();
                engine.metrics.assigned_partitions.set(source.len() as i64);
                s.assigned_partitions = Some(source);
                s.assigned_cohort_partitions =
                    Some(partitions.iter().filter_map(|p| p.cohort()).collect());
                // What is committed for them now: the restored positions.
                s.set_committed(&positions);
                s.assignments += 1;
                s.rejoining_since_unix_ms = None;
                s.membership_unconfirmed_since_unix_ms = None;
            });
            if committer.rejoining.take().is_some() {
                tracing::info!(?partitions, "rejoined the consumer group");
            }
            source.assign(&starts)?;
            if let Some(count) = source.partition_count() {
                engine.set_source_partitions(count);
                status.update(|s| s.source_partitions = Some(count));
            }
        }
    }
    Ok(())
}

/// Starts commits on the writer thread and finishes them when they are durable.
struct Committer {
    to_writer: mpsc::SyncSender<WriterJob>,
    done: mpsc::Receiver<CommitDone>,
    loaded: mpsc::Receiver<Result<crate::engine::restored::RestoredState, CommitError>>,
    in_flight: bool,
    summary: RunSummary,
    /// For each alert raised since the last commit point, the produce timestamp of the record
    /// whose processing raised it (for `safetel_alert_latency_seconds`).
    alert_triggers: Vec<Option<i64>>,
    /// Since when the group has moved on without this process (until it assigns again).
    rejoining: Option<Instant>,
    /// The offsets of the last commit that finished, and when the lag behind them was last
    /// published: an idle process keeps reporting its lag as the broker's marks move on.
    committed: HashMap<PartitionId, i64>,
    lag_published: Instant,
}

impl Committer {
    /// A commit point: the DLQ and the alerts durable first, then the state delta with its
    /// offsets goes to the writer.
    fn start(
        &mut self,
        engine: &mut Engine,
        dlq: &mut dyn DeadLetterSink,
        alerts: &mut dyn OutputSink,
    ) -> Result<(), RunError> {
        let started = Instant::now();
        dlq.flush()?;
        let raised = engine.take_alerts();
        for alert in &raised {
            alerts.alert(alert).map_err(RunError::Alerts)?;
        }
        for request in engine.take_review_requests() {
            alerts.review_request(&request).map_err(RunError::Alerts)?;
        }
        alerts.flush().map_err(RunError::Alerts)?;
        let flushed_ms = unix_ms();
        for produced_ms in self.alert_triggers.drain(..).flatten() {
            engine
                .metrics
                .alert_latency
                .observe((flushed_ms - produced_ms).max(0) as f64 / 1000.0);
        }
        self.summary.alerts += raised.len() as u64;
        let commit = PendingCommit {
            delta: engine.take_delta(),
            positions: engine.positions(),
            started,
        };
        self.to_writer
            .send(WriterJob::Commit(Box::new(commit)))
            .map_err(|_| RunError::WriterStopped)?;
        self.in_flight = true;
        Ok(())
    }

    /// The group moved on without this process: everything it holds is dropped (not committed;
    /// the partitions' next owner redoes it from the committed state), nothing is served, and
    /// records are not processed until the group assigns partitions again.
    fn lose_membership(&mut self, engine: &mut Engine, status: &StatusBoard, why: &str) {
        let held = engine.held_partitions();
        tracing::warn!(
            error = why,
            ?held,
            "the consumer group moved on without this process: dropping what was not committed and rejoining"
        );
        engine.release(&held);
        engine.metrics.assigned_partitions.set(0);
        engine.metrics.group_rejoins.inc();
        self.alert_triggers.clear();
        self.rejoining.get_or_insert_with(Instant::now);
        status.update(|s| {
            s.rejoining_since_unix_ms.get_or_insert_with(unix_ms);
            s.assigned_partitions = Some(Vec::new());
            s.assigned_cohort_partitions = Some(Vec::new());
            s.committed_offsets.clear();
            s.cohort_report_offsets.clear();
            s.committed_records = 0;
            s.lag.clear();
        });
    }

    /// The committed state of `partitions`, from the writer thread (no commit in flight).
    fn load(
        &mut self,
        partitions: Vec<PartitionId>,
    ) -> Result<crate::engine::restored::RestoredState, RunError> {
        self.to_writer
            .send(WriterJob::Load(partitions))
            .map_err(|_| RunError::WriterStopped)?;
        Ok(self.loaded.recv().map_err(|_| RunError::WriterStopped)??)
    }

    /// Waits for the commit in flight, if any; then tells the source, metrics and status.
    fn wait(
        &mut self,
        engine: &mut Engine,
        source: &mut dyn RecordSource,
        status: &StatusBoard,
    ) -> Result<(), RunError> {
        if !std::mem::take(&mut self.in_flight) {
            return Ok(());
        }
        let done = self.done.recv().map_err(|_| RunError::WriterStopped)?;
        self.finish(done, engine, source, status)
    }

    /// Finishes the commit in flight if it is durable already, without waiting.
    fn reap(
        &mut self,
        engine: &mut Engine,
        source: &mut dyn RecordSource,
        status: &StatusBoard,
    ) -> Result<(), RunError> {
        match self.done.try_recv() {
            Ok(done) if self.in_flight => {
                self.in_flight = false;
                self.finish(done, engine, source, status)
            }
            Err(mpsc::TryRecvError::Disconnected) if self.in_flight => Err(RunError::WriterStopped),
            _ => Ok(()),
        }
    }

    fn finish(
        &mut self,
        done: CommitDone,
        engine: &mut Engine,
        source: &mut dyn RecordSource,
        status: &StatusBoard,
    ) -> Result<(), RunError> {
        let (positions, seconds) = match done {
            Ok(done) => done,
            Err(CommitError::GroupMoved(why)) => {
                self.lose_membership(engine, status, &why);
                return Ok(());
            }
            Err(error) => return Err(RunError::Commit(error)),
        };
        self.committed = positions.clone();
        self.publish_lag(engine, source, status);
        engine.metrics.commits.inc();
        engine.metrics.commit_duration.observe(seconds);
        self.summary.add_commit(seconds);
        status.update(|s| {
            s.commits += 1;
            s.last_commit_unix_ms = Some(unix_ms());
            s.set_committed(&positions);
            s.last_error = None;
        });
        Ok(())
    }

    /// The lag behind the last commit's offsets, as the source's latest marks say, into the
    /// metrics and the status.
    fn publish_lag(&mut self, engine: &Engine, source: &dyn RecordSource, status: &StatusBoard) {
        self.lag_published = Instant::now();
        let lag = source.lag(&self.committed);
        for lag in &lag {
            engine
                .metrics
                .consumer_lag
                .with_label_values(&[&lag.topic, &lag.group, &lag.partition.to_string()])
                .set(lag.behind);
        }
        status.update(|s| s.lag = lag.iter().map(|l| (l.internal, l.behind)).collect());
    }
}

pub fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
