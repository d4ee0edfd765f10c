//! Rounds of partition-task work (`stream.threads`): a round's jobs (a task with its records,
//! or a task closing bins) are split into as many groups of about equal weight as there are
//! threads, and the groups handed to a [`RunGroups`], which the edge provides (threads are not
//! the engine's: [`crate::stream::threads`]); the round ends when every group has run. The tasks
//! touch nothing of each other's, so what they compute does not depend on the number of threads
//! or on their timing (docs/design.md §8).

use std::sync::atomic::{AtomicUsize, Ordering};

use super::admission::SourceRecord;
use super::task::{PartitionTask, TaskContext};
use crate::dead_letter::Rejection;
use crate::model::RecordKind;
use crate::partition_id::PartitionId;

/// A task's record, processed: its index in the batch, what became of it, and how many of the
/// task's alerts and reports were raised by then.
pub type TaskStep = (usize, Result<RecordKind, Rejection>, usize, usize);

/// A task and the indexes of its records in the batch.
pub type Job<'t> = (&'t mut PartitionTask, Vec<usize>);

/// A task's turn at its records: what became of those it processed, and those left when it
/// stopped with bins to close (or before its first, with a close still due).
pub struct TaskRun {
    pub partition: PartitionId,
    pub steps: Vec<TaskStep>,
    pub rest: Vec<usize>,
}

/// Runs a round's groups of work, each touching only its own tasks: one after another on the
/// caller's thread, or at the same time on threads the edge provides
/// ([`crate::stream::threads`]). The engine itself starts no thread.
pub trait RunGroups: Send + Sync {
    /// How many groups may run at the same time.
    fn threads(&self) -> usize;
    /// Runs every group; returns once all have run.
    fn run<'a>(&self, groups: Vec<Box<dyn FnOnce() + Send + 'a>>);
}

/// Every group on the caller's thread, one after another.
pub struct OneThread;

impl RunGroups for OneThread {
    fn threads(&self) -> usize {
        1
    }

    fn run<'a>(&self, groups: Vec<Box<dyn FnOnce() + Send + 'a>>) {
        for group in groups {
            group();
        }
    }
}

/// Where the tasks run, and how many of them ever ran at once.
pub struct Workers {
    /// `None` until the edge chooses (the tasks run on the caller's thread till then).
    groups: Option<Box<dyn RunGroups>>,
    running: AtomicUsize,
    most: AtomicUsize,
}

impl Workers {
    pub fn new(groups: Option<Box<dyn RunGroups>>) -> Workers {
        Workers {
            groups,
            running: AtomicUsize::new(0),
            most: AtomicUsize::new(0),
        }
    }

    /// Whether the edge chose where the tasks run.
    pub fn chosen(&self) -> bool {
        self.groups.is_some()
    }

    pub fn threads(&self) -> usize {
        self.groups
            .as_ref()
            .map_or(1, |groups| groups.threads().max(1))
    }

    /// The most tasks that ever ran at the same time.
    pub fn most_at_once(&self) -> usize {
        self.most.load(Ordering::SeqCst)
    }

    /// Runs each job's task on its records, until a record makes a bin close due.
    pub fn run(
        &self,
        jobs: Vec<Job<'_>>,
        records: &[SourceRecord<'_>],
        ctx: TaskContext<'_>,
    ) -> Vec<TaskRun> {
        self.each(
            jobs,
            |(_, indexes)| indexes.len(),
            |(task, indexes)| run_task(task, indexes, records, ctx),
        )
    }

    /// Closes the due bins of each task.
    pub fn close(&self, tasks: Vec<&mut PartitionTask>, ctx: TaskContext<'_>) {
        self.each(tasks, |task| task.close_weight(), |task| task.close(ctx));
    }

    /// `work` on each job, the jobs in groups of about equal `weight`, the groups run by
    /// [`RunGroups`]; the results in the order of the groups.
    fn each<J: Send, R: Send>(
        &self,
        jobs: Vec<J>,
        weight: impl Fn(&J) -> usize,
        work: impl Fn(J) -> R + Sync,
    ) -> Vec<R> {
        let run_group = |group: Vec<J>| -> Vec<R> {
            group
                .into_iter()
                .map(|job| {
                    let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
                    self.most.fetch_max(now, Ordering::SeqCst);
                    let result = work(job);
                    self.running.fetch_sub(1, Ordering::SeqCst);
                    result
                })
                .collect()
        };
        let threads = self.threads();
        let Some(groups) = self
            .groups
            .as_ref()
            .filter(|_| threads > 1 && jobs.len() > 1)
        else {
            return run_group(jobs);
        };
        let shares = balance(jobs, threads, weight);
        let mut results: Vec<Vec<R>> = shares.iter().map(|_| Vec::new()).collect();
        let run_group = &run_group;
        let work: Vec<Box<dyn FnOnce() + Send + '_>> = shares
            .into_iter()
            .zip(results.iter_mut())
            .map(|(share, result)| {
                Box::new(move || *result = run_group(share)) as Box<dyn FnOnce() + Send + '_>
            })
            .collect();
        groups.run(work);
        results.into_iter().flatten().collect()
    }
}

/// A task at its records: each processed in order, until one makes a bin close due (or a close
/// is due before the first).
fn run_task(
    task: &mut PartitionTask,
    indexes: Vec<usize>,
    records: &[SourceRecord<'_>],
    ctx: TaskContext<'_>,
) -> TaskRun {
    let mut steps = Vec::with_capacity(indexes.len());
    let mut rest = Vec::new();
    for (k, &i) in indexes.iter().enumerate() {
        if task.close_pending() {
            rest = indexes[k..].to_vec();
            break;
        }
        let result = task.process(&records[i], ctx);
        steps.push((i, result, task.alerts.len(), task.reports.len()));
    }
    TaskRun {
        partition: task.partition(),
        steps,
        rest,
    }
}

/// The jobs in at most `threads` groups of about equal weight: each job, the heaviest first,
/// joins the group with the least weight so far.
fn balance<J>(mut jobs: Vec<J>, threads: usize, weight: impl Fn(&J) -> usize) -> Vec<Vec<J>> {
    jobs.sort_by_key(|job| std::cmp::Reverse(weight(job)));
    let mut groups: Vec<(usize, Vec<J>)> = (0..threads.min(jobs.len()))
        .map(|_| (0, Vec::new()))
        .collect();
    for job in jobs {
        let lightest = groups
            .iter_mut()
            .min_by_key(|(load, _)| *load)
            .expect("at least one group");
        lightest.0 += weight(&job);
        lightest.1.push(job);
    }
    groups.into_iter().map(|(_, group)| group).collect()
}
