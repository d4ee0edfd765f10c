//! The guard window of a fleet-relative detector: a key's last `guard_bins` bins, oldest first,
//! held in memory in the compact form its stored state uses (docs/design.md §7): per bin, the
//! events as a varint tagged in its low bit, then the exposure as whole milliseconds (a varint)
//! where it is one, else the f64's 8 bytes. A vehicle's 30 daily bins take ~5 bytes each
//! instead of 12, and the window is written to the store as it is held.
//!
//! The bytes are canonical (one encoding per bin), so two windows are equal when their bins are.

use std::fmt;

use super::fleet_relative::{EXPOSURE_UNITS_PER_HOUR, StateReader, put_varint, whole_units};
use super::run_length::StateDecodeError;

/// The longest encoding of one bin: a tagged 64-bit varint and an f64.
const MAX_BIN_BYTES: usize = 10 + 8;

#[derive(Clone, Default)]
pub struct GuardWindow {
    /// The bins from `head` on; what is before `head` has been popped and is reused on a push.
    bytes: Vec<u8>,
    head: u32,
    len: u32,
}

impl GuardWindow {
    pub fn new() -> GuardWindow {
        GuardWindow::default()
    }

    /// Bins held.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Bytes on the heap.
    pub fn heap_bytes(&self) -> usize {
        self.bytes.capacity()
    }

    /// Appends a bin: `events` (held in 32 bits: a key's events in a bin stay far below 2^32)
    /// against `exposure`.
    pub fn push_back(&mut self, events: u32, exposure: f64) {
        if self.bytes.capacity() - self.bytes.len() < MAX_BIN_BYTES {
            // Reuse the popped front before growing; grow by a quarter of what is held.
            self.bytes.drain(..self.head as usize);
            self.head = 0;
            if self.bytes.capacity() - self.bytes.len() < MAX_BIN_BYTES {
                self.bytes
                    .reserve_exact(MAX_BIN_BYTES + self.bytes.len() / 4);
            }
        }
        encode_bin(events, exposure, &mut self.bytes);
        self.len += 1;
    }

    /// Removes and returns the oldest bin.
    pub fn pop_front(&mut self) -> Option<(u32, f64)> {
        let live = &self.bytes[self.head as usize..];
        let mut reader = StateReader(live);
        let bin = read_bin(&mut reader).ok()?;
        self.head += (live.len() - reader.0.len()) as u32;
        self.len -= 1;
        if self.len == 0 {
            self.bytes.clear();
            self.head = 0;
        }
        Some(bin)
    }

    /// The bins, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = (u32, f64)> + '_ {
        let mut reader = StateReader(&self.bytes[self.head as usize..]);
        std::iter::from_fn(move || read_bin(&mut reader).ok())
    }

    /// The bins as stored: the count, then each bin's compact form.
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_varint(u64::from(self.len), out);
        out.extend_from_slice(&self.bytes[self.head as usize..]);
    }

    /// Reads what [`GuardWindow::encode`] wrote off the front of `reader`.
    pub fn decode(reader: &mut StateReader<'_>) -> Result<GuardWindow, StateDecodeError> {
        let count = reader.varint()?;
        if count > reader.0.len() as u64 {
            return Err(StateDecodeError("guard count"));
        }
        let mut window = GuardWindow::new();
        for _ in 0..count {
            let (events, exposure) = read_bin(reader)?;
            window.push_back(events, exposure);
        }
        Ok(window)
    }
}

/// One bin in the compact form: the events shifted left, their low bit saying which form the
/// exposure takes.
fn encode_bin(events: u32, exposure: f64, out: &mut Vec<u8>) {
    match whole_units(exposure) {
        Some(units) => {
            put_varint(u64::from(events) << 1 | 1, out);
            put_varint(units, out);
        }
        None => {
            put_varint(u64::from(events) << 1, out);
            out.extend_from_slice(&exposure.to_le_bytes());
        }
    }
}

/// Reads one bin [`encode_bin`] wrote.
fn read_bin(reader: &mut StateReader<'_>) -> Result<(u32, f64), StateDecodeError> {
    let tagged = reader.varint()?;
    let exposure = if tagged & 1 == 1 {
        reader.varint()? as f64 / EXPOSURE_UNITS_PER_HOUR
    } else {
        f64::from_le_bytes(reader.take()?)
    };
    let events = u32::try_from(tagged >> 1).unwrap_or(u32::MAX);
    Ok((events, exposure))
}

impl PartialEq for GuardWindow {
    fn eq(&self, other: &GuardWindow) -> bool {
        self.len == other.len
            && self.bytes[self.head as usize..] == other.bytes[other.head as usize..]
    }
}

impl fmt::Debug for GuardWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bins(window: &GuardWindow) -> Vec<(u32, f64)> {
        window.iter().collect()
    }

    #[test]
    fn bins_come_back_in_order_exactly_whatever_their_exposure() {
        let exposures = [7.25, 0.1 + 0.2, 1.0 / 3.0, 0.0, 23.999, f64::MAX / 2.0];
        let mut window = GuardWindow::new();
        let mut expected = std::collections::VecDeque::new();
        for (i, &x) in exposures.iter().cycle().take(200).enumerate() {
            let events = (i as u32 * 7919) % 1000 + if i == 13 { u32::MAX - 1000 } else { 0 };
            window.push_back(events, x);
            expected.push_back((events, x));
            if window.len() > 30 {
                assert_eq!(window.pop_front(), expected.pop_front());
            }
            assert_eq!(bins(&window), Vec::from(expected.clone()));
        }
        let mut stored = Vec::new();
        window.encode(&mut stored);
        let mut reader = StateReader(&stored);
        assert_eq!(GuardWindow::decode(&mut reader).unwrap(), window);
        assert!(reader.0.is_empty());
    }

    #[test]
    fn a_window_of_daily_vehicle_bins_stays_small_as_bins_pass_through() {
        let mut window = GuardWindow::new();
        for day in 0..400u32 {
            // A vehicle's day: up to 20 hours driven, in whole milliseconds.
            let ms = 3_600_000 * (day % 20) as u64 + 12_345;
            window.push_back(day % 3, ms as f64 / EXPOSURE_UNITS_PER_HOUR);
            if window.len() > 30 {
                window.pop_front();
            }
        }
        // 30 bins of at most 5 bytes, a quarter more to grow into and 8 bytes of slack: a
        // VecDeque of 12-byte bins took 384.
        assert!(
            window.heap_bytes() <= 30 * 5 * 5 / 4 + 8 + MAX_BIN_BYTES,
            "{}",
            window.heap_bytes()
        );
        assert_eq!(window.len(), 30);
    }

    #[test]
    fn a_count_past_the_bytes_is_refused() {
        let mut stored = Vec::new();
        put_varint(1_000, &mut stored);
        stored.extend_from_slice(&[3, 1]);
        assert!(GuardWindow::decode(&mut StateReader(&stored)).is_err());
    }

    #[test]
    fn emptied_windows_equal_new_ones() {
        let mut window = GuardWindow::new();
        window.push_back(1, 2.0);
        window.pop_front();
        assert_eq!(window, GuardWindow::new());
        assert_eq!(window.pop_front(), None);
    }
}
