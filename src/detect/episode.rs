//! Regression episodes of one series: when P(regression) opens one, when it is worth an update,
//! and when it resolves (docs/design.md §3). Pure: the caller turns transitions into alerts.

use serde::{Deserialize, Serialize};

/// When episodes update and resolve (when they open is the caller's rule: see [`BinEvidence`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EpisodeParams {
    /// Count a bin towards resolution when P(regression) falls below this.
    pub p_close: f64,
    /// Resolve after this many bins in a row below `p_close`.
    pub resolve_after_bins: u32,
    /// Publish an update when the HR median moved by this fraction since the last alert.
    pub update_hr_change: f64,
}

impl Default for EpisodeParams {
    fn default() -> Self {
        EpisodeParams {
            p_close: 0.5,
            resolve_after_bins: 3,
            update_hr_change: 0.25,
        }
    }
}

/// A transition of an episode, in the alert's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AlertStatus {
    Opened,
    Updated,
    Resolved,
}

impl AlertStatus {
    pub const ALL: [AlertStatus; 3] = [
        AlertStatus::Opened,
        AlertStatus::Updated,
        AlertStatus::Resolved,
    ];

    pub fn name(self) -> &'static str {
        match self {
            AlertStatus::Opened => "OPENED",
            AlertStatus::Updated => "UPDATED",
            AlertStatus::Resolved => "RESOLVED",
        }
    }
}

/// An open episode.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Episode {
    /// Start of the segment the episode was opened on (its identity).
    pub onset_ms: i64,
    /// When it opened (end of the bin that opened it, plus lateness).
    pub opened_at_ms: i64,
    /// Updates published so far.
    pub updates: u32,
    /// HR median of the last alert.
    pub reported_hr: f64,
    /// Bins in a row with P(regression) below `p_close`.
    pub bins_below: u32,
}

/// What an episode needs of one bin's conclusions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BinEvidence {
    pub p_regression: f64,
    /// The bin meets the opening rule (a false-alarm-calibrated threshold).
    pub opens: bool,
    /// Hazard ratio median, where there is one.
    pub hr_median: Option<f64>,
}

/// At most one open episode per series.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EpisodeTracker {
    pub open: Option<Episode>,
}

impl EpisodeTracker {
    /// Takes one bin's conclusions; `onset_ms` is the start of its onset estimate and `at_ms`
    /// the time the bin closed. Returns the transition, with the episode as it stands after it.
    pub fn observe(
        &mut self,
        params: &EpisodeParams,
        update: &BinEvidence,
        onset_ms: i64,
        at_ms: i64,
    ) -> Option<(AlertStatus, Episode)> {
        let hr_median = update.hr_median;
        match self.open.as_mut() {
            None => {
                let hr = hr_median.filter(|_| update.opens)?;
                let episode = Episode {
                    onset_ms,
                    opened_at_ms: at_ms,
                    updates: 0,
                    reported_hr: hr,
                    bins_below: 0,
                };
                self.open = Some(episode);
                Some((AlertStatus::Opened, episode))
            }
            Some(episode) if update.p_regression < params.p_close => {
                episode.bins_below += 1;
                if episode.bins_below < params.resolve_after_bins {
                    return None;
                }
                let closed = *episode;
                self.open = None;
                Some((AlertStatus::Resolved, closed))
            }
            Some(episode) => {
                episode.bins_below = 0;
                let hr = hr_median?;
                let moved = (hr / episode.reported_hr).ln().abs();
                if moved.is_nan() || moved < params.update_hr_change.ln_1p() {
                    return None;
                }
                episode.updates += 1;
                episode.reported_hr = hr;
                Some((AlertStatus::Updated, *episode))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rule opens at P(regression) >= 0.95 in this test.
    fn update(p: f64, hr: Option<f64>) -> BinEvidence {
        BinEvidence {
            p_regression: p,
            opens: p >= 0.95,
            hr_median: hr,
        }
    }

    #[test]
    fn an_episode_opens_updates_on_material_moves_and_resolves_after_quiet_bins() {
        let params = EpisodeParams::default();
        let mut tracker = EpisodeTracker::default();
        let mut seen = Vec::new();
        let steps = [
            (0.5, Some(1.2)),  // below p_open: nothing
            (0.96, None),      // no baseline, no HR: cannot open
            (0.97, Some(2.0)), // opens
            (0.98, Some(2.3)), // +15%: not material
            (0.99, Some(2.6)), // +30% from 2.0: update
            (0.4, Some(1.1)),  // quiet 1
            (0.6, Some(2.4)),  // back above p_close: the count restarts; HR within 25%
            (0.4, Some(1.1)),  // quiet 1
            (0.3, Some(1.0)),  // quiet 2
            (0.2, Some(1.0)),  // quiet 3: resolves
            (0.2, Some(1.0)),  // nothing open
        ];
        for (t, (p, hr)) in steps.iter().enumerate() {
            if let Some((status, episode)) =
                tracker.observe(&params, &update(*p, *hr), 100 + t as i64, 1000 + t as i64)
            {
                seen.push((t, status, episode.onset_ms, episode.updates));
            }
        }
        assert_eq!(
            seen,
            vec![
                (2, AlertStatus::Opened, 102, 0),
                (4, AlertStatus::Updated, 102, 1),
                (9, AlertStatus::Resolved, 102, 1),
            ]
        );
        assert_eq!(tracker.open, None);
    }
}
