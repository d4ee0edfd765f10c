//! The worker threads partition tasks run on (`stream.threads`): a round's groups each on a
//! thread of its own, the caller's thread taking the first, the round over when all have
//! joined. The engine splits the work ([`crate::engine::RunGroups`]); this starts the threads.

use crate::engine::RunGroups;

/// Up to `threads` groups at once, on threads started for each round (scoped: they borrow the
/// round's tasks and records). A persistent pool measured the same (BENCHMARKS.md, "Fourth
/// slice").
pub struct ScopedThreads {
    threads: usize,
}

impl ScopedThreads {
    pub fn new(threads: usize) -> ScopedThreads {
        ScopedThreads {
            threads: threads.max(1),
        }
    }
}

impl RunGroups for ScopedThreads {
    fn threads(&self) -> usize {
        self.threads
    }

    fn run<'a>(&self, groups: Vec<Box<dyn FnOnce() + Send + 'a>>) {
        let mut groups = groups.into_iter();
        let Some(first) = groups.next() else {
            return;
        };
        std::thread::scope(|scope| {
            let others: Vec<_> = groups
                .map(|group| {
                    std::thread::Builder::new()
                        .name("task-worker".into())
                        .spawn_scoped(scope, group)
                        .expect("start a task worker")
                })
                .collect();
            first();
            for other in others {
                other.join().expect("a partition task panicked");
            }
        });
    }
}

/// Where an engine's tasks run unless its maker chose: `threads` of them, or the caller's
/// thread alone for one.
pub fn for_config(threads: usize) -> Box<dyn RunGroups> {
    if threads <= 1 {
        Box::new(crate::engine::OneThread)
    } else {
        Box::new(ScopedThreads::new(threads))
    }
}
