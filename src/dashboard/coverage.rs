//! How much of the consumer group a page's data covers ([`Coverage`]): the source partitions
//! this process holds (live), and those the group view adds (as of their owners' last commits).
//! The HTTP edge builds it and adds it to every page's JSON as `coverage`; pages show it as one
//! line ([`Coverage::line`]).

use serde::Serialize;

use super::html::{escape, num};
use crate::engine::PartitionId;

/// A page's coverage of the consumer group.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Coverage {
    /// `group` where the group view adds other processes' partitions, else `process`.
    pub scope: &'static str,
    /// The input topic's partitions, once known.
    pub partitions: Option<i32>,
    pub covered: usize,
    pub held_here: Vec<PartitionId>,
    pub held_here_count: usize,
    pub from_group_view: Vec<FromGroupView>,
    pub from_group_view_count: usize,
    pub oldest_commit_ms: Option<i64>,
    pub view_caught_up_at_ms: Option<i64>,
    pub note: Option<String>,
}

/// A partition the group view adds: its owner and when it last committed.
#[derive(Debug, Clone, Serialize)]
pub struct FromGroupView {
    pub partition: PartitionId,
    pub member: String,
    pub committed_at_ms: i64,
}

impl Coverage {
    /// "Covers 4 of 4 partitions: 2 held here (live), 2 from the group view (as of ...)".
    pub fn line(&self) -> String {
        let total = match self.partitions {
            Some(p) => format!(" of {}", num(p, "/coverage/partitions", 0)),
            None => String::new(),
        };
        let here = num(self.held_here_count, "/coverage/held_here_count", 0);
        let mut line = format!(
            r#"<p class="note coverage">Covers {}{total} partitions: {here} held by this process (live)"#,
            num(self.covered, "/coverage/covered", 0)
        );
        if self.scope == "group" {
            line += &format!(
                ", {} from the group view (other processes, as of their last commit; the oldest {})",
                num(
                    self.from_group_view_count,
                    "/coverage/from_group_view_count",
                    0
                ),
                self.oldest_commit_ms
                    .map_or("—".to_string(), |ms| escape(&crate::model::utc_time(ms))),
            );
        }
        if let Some(note) = &self.note {
            line += &format!(". {}", escape(note));
        }
        line + ".</p>"
    }
}
