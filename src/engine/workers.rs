//! The worker threads the partition tasks run on (`stream.threads`): the one place of the
//! engine with threads. A batch's tasks are split into as many groups of about equal records as
//! there are threads; each group runs on its own thread (the caller's is one of them), and the
//! batch ends when every group has. The tasks touch nothing of each other's, so what they
//! compute does not depend on the number of threads or on their timing (docs/design.md §8).

use std::sync::atomic::{AtomicUsize, Ordering};

use super::admission::SourceRecord;
use super::task::{PartitionTask, TaskContext};
use crate::dead_letter::Rejection;
use crate::model::RecordKind;

/// A task's record, processed: its index in the batch, what became of it, and how many of the
/// task's alerts and reports were raised by then.
pub type TaskStep = (usize, Result<RecordKind, Rejection>, usize, usize);

/// A task and the indexes of its records in the batch.
pub type Job<'t> = (&'t mut PartitionTask, Vec<usize>);

/// Threads for the tasks, and how many of them ever ran at once.
pub struct Workers {
    threads: usize,
    running: AtomicUsize,
    most: AtomicUsize,
}

impl Workers {
    pub fn new(threads: usize) -> Workers {
        Workers {
            threads: threads.max(1),
            running: AtomicUsize::new(0),
            most: AtomicUsize::new(0),
        }
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The most tasks that ever ran at the same time.
    pub fn most_at_once(&self) -> usize {
        self.most.load(Ordering::SeqCst)
    }

    /// Runs each job's task on its records, on up to the workers' threads at once; returns what
    /// became of each record, job by job (in no particular order of jobs).
    pub fn run(
        &self,
        jobs: Vec<Job<'_>>,
        records: &[SourceRecord<'_>],
        ctx: TaskContext<'_>,
    ) -> Vec<Vec<TaskStep>> {
        let run_group = |group: Vec<Job<'_>>| -> Vec<Vec<TaskStep>> {
            group
                .into_iter()
                .map(|(task, indexes)| self.run_task(task, indexes, records, ctx))
                .collect()
        };
        if self.threads <= 1 || jobs.len() <= 1 {
            return run_group(jobs);
        }
        let mut groups = balance(jobs, self.threads).into_iter();
        let first = groups.next().expect("at least one group");
        std::thread::scope(|scope| {
            let others: Vec<_> = groups
                .map(|group| scope.spawn(|| run_group(group)))
                .collect();
            let mut steps = run_group(first);
            for other in others {
                steps.extend(other.join().expect("a partition task panicked"));
            }
            steps
        })
    }

    fn run_task(
        &self,
        task: &mut PartitionTask,
        indexes: Vec<usize>,
        records: &[SourceRecord<'_>],
        ctx: TaskContext<'_>,
    ) -> Vec<TaskStep> {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        let steps = indexes
            .into_iter()
            .map(|i| {
                let result = task.process(&records[i], ctx);
                (i, result, task.alerts.len(), task.reports.len())
            })
            .collect();
        self.running.fetch_sub(1, Ordering::SeqCst);
        steps
    }
}

/// The jobs in at most `threads` groups of about equal records: each job, the largest first,
/// joins the group with the fewest records so far.
fn balance(mut jobs: Vec<Job<'_>>, threads: usize) -> Vec<Vec<Job<'_>>> {
    jobs.sort_by_key(|(_, indexes)| std::cmp::Reverse(indexes.len()));
    let mut groups: Vec<(usize, Vec<Job<'_>>)> = (0..threads.min(jobs.len()))
        .map(|_| (0, Vec::new()))
        .collect();
    for job in jobs {
        let lightest = groups
            .iter_mut()
            .min_by_key(|(records, _)| *records)
            .expect("at least one group");
        lightest.0 += job.1.len();
        lightest.1.push(job);
    }
    groups.into_iter().map(|(_, group)| group).collect()
}
