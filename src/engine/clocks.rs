//! [`VehicleClocks`]: a partition's most advanced vehicles, whose latest record times give its
//! watermark ([`super::admission`] moves them). Pure.

/// The most advanced vehicles of a partition: the `quorum` largest latest record times, for a
/// watermark no single vehicle can move alone. A vehicle's latest time only grows, so one not
/// among them can only join by its own record: keeping the few is exact. Rebuilt from the
/// vehicles' `last_event_time_ms` on restore (and when a vehicle moves to another partition).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VehicleClocks {
    /// (latest record time, vehicle id), least advanced first; at most `quorum` of them.
    pub(super) top: Vec<(i64, String)>,
}

impl VehicleClocks {
    /// A record of `vehicle` at record time `time` was accepted.
    pub fn observe(&mut self, vehicle: &str, time: i64, quorum: usize) {
        // Most often the record's vehicle is already the most advanced.
        if let Some((latest, v)) = self.top.last_mut()
            && v == vehicle
        {
            *latest = (*latest).max(time);
            return;
        }
        let at = match self.top.iter().position(|(_, v)| v == vehicle) {
            Some(at) if time > self.top[at].0 => at,
            Some(_) => return,
            None if self.top.len() < quorum => {
                self.top.insert(0, (time, vehicle.to_string()));
                0
            }
            // Displaces the least advanced of the few (reusing its id's buffer).
            None if self.top.first().is_some_and(|(least, _)| time > *least) => {
                let (least, id) = &mut self.top[0];
                id.clear();
                id.push_str(vehicle);
                *least = time;
                0
            }
            None => return,
        };
        self.top[at].0 = time;
        // Back in order: the one that moved goes up past those now behind it.
        let mut i = at;
        while i + 1 < self.top.len() && self.top[i].0 > self.top[i + 1].0 {
            self.top.swap(i, i + 1);
            i += 1;
        }
        while i > 0 && self.top[i - 1].0 > self.top[i].0 {
            self.top.swap(i - 1, i);
            i -= 1;
        }
    }

    /// The latest time `quorum` vehicles have reached; `i64::MIN` while fewer than `quorum`
    /// vehicles are here (with one vehicle, nothing tells its clock is wrong).
    pub fn watermark(&self, quorum: usize) -> i64 {
        match self.top.len() {
            n if n >= quorum.max(1) => self.top[n - quorum.max(1)].0,
            _ => i64::MIN,
        }
    }

    /// No record accepted on the partition yet.
    pub fn is_empty(&self) -> bool {
        self.top.is_empty()
    }

    /// Whether `vehicle` is among the few most advanced.
    pub fn holds(&self, vehicle: &str) -> bool {
        self.top.iter().any(|(_, v)| v == vehicle)
    }

    /// The clocks of these (vehicle id, latest record time), from scratch.
    pub fn of<'a>(vehicles: impl IntoIterator<Item = (&'a str, i64)>, quorum: usize) -> Self {
        let mut clocks = VehicleClocks::default();
        for (vehicle, time) in vehicles {
            clocks.observe(vehicle, time, quorum);
        }
        clocks
    }
}
