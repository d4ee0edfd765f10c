//! The change-point series of one key and hazard class ([`Series`]: its detector, its episode,
//! where it stands, its last closed bin) and their stored form ([`encode_series`],
//! [`decode_series`]). What feeds them is [`super::detection`]'s. Pure.

use serde::Serialize;

use crate::detect::fleet_relative::{FleetDetector, FleetRelativeParams, StateForm, StateReader};
use crate::detect::{Episode, EpisodeTracker, HazardRatioSummary, StateDecodeError};
use crate::model::{ByClass, HazardClass};

/// The last closed bin of a series, as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LastBin {
    pub bin_start_ms: i64,
    pub p_regression: f64,
    /// Bins from the onset estimate to this one, counting it (0: no change in view).
    pub onset_bins: u32,
    /// Start of the onset estimate's bin.
    pub onset_ms: i64,
    /// The fleet's expected count for the bin, and what was seen.
    pub expected: f64,
    pub events: u64,
    /// P(regression) at which an episode opens for this key now.
    pub p_open: f64,
    /// Boxed: most bins have none, and every vehicle holds two last bins.
    pub hazard_ratio: Option<Box<HazardRatioSummary>>,
}

/// The change-point series of one key and hazard class.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Series {
    #[serde(skip)]
    pub detector: FleetDetector,
    pub episode: EpisodeTracker,
    /// Start of the next bin to feed.
    pub next_bin_ms: i64,
    pub last: Option<LastBin>,
}

impl Series {
    pub fn new(params: FleetRelativeParams, first_bin_ms: i64) -> Series {
        Series {
            detector: FleetDetector::new(params).expect("parameters validated with the config"),
            episode: EpisodeTracker::default(),
            next_bin_ms: first_bin_ms,
            last: None,
        }
    }
}

/// The first byte of an encoded series list: the fleet-relative detector's state. Series written
/// by the earlier self-baseline detector start with their count (1 or 2) instead.
/// The detector's state in its compact form ([`StateForm::Compact`], [`FleetDetector::encode`]).
pub const SERIES_FORMAT: u8 = 0xF4;

/// The same, with every guarded exposure an f64 ([`StateForm::Varint`]; what safetel wrote
/// before 0xF4): read.
pub const SERIES_FORMAT_VARINT: u8 = 0xF3;

/// The same, with the detector's counts in fixed width (what safetel wrote before 0xF3): read,
/// and what snapshots digest.
pub const SERIES_FORMAT_FIXED: u8 = 0xF2;

/// Whether `bytes` hold series of a format this safetel reads (else: of the earlier
/// self-baseline detector, not usable).
pub fn is_current_series(bytes: &[u8]) -> bool {
    matches!(
        bytes.first(),
        Some(&SERIES_FORMAT | &SERIES_FORMAT_VARINT | &SERIES_FORMAT_FIXED)
    )
}

/// Appends the series of one key (every class) in a compact binary form.
pub fn encode_series(series: &ByClass<Series>, out: &mut Vec<u8>) {
    encode_series_as(series, StateForm::Compact, out);
}

/// `bytes` (series of either format) in the fixed-width form: what a snapshot digests, so that
/// equal series compare equal whichever form stored them. `None` if they cannot be read.
pub fn fixed_form(bytes: &[u8]) -> Option<Vec<u8>> {
    // No guard is trimmed: the series are read as stored.
    let params = FleetRelativeParams {
        guard_bins: usize::MAX,
        ..FleetRelativeParams::default()
    };
    let series = decode_series(params, bytes).ok()?;
    let mut out = Vec::with_capacity(bytes.len() * 2);
    encode_series_as(&series, StateForm::Fixed, &mut out);
    Some(out)
}

fn encode_series_as(series: &ByClass<Series>, form: StateForm, out: &mut Vec<u8>) {
    out.push(match form {
        StateForm::Fixed => SERIES_FORMAT_FIXED,
        StateForm::Varint => SERIES_FORMAT_VARINT,
        StateForm::Compact => SERIES_FORMAT,
    });
    out.push(HazardClass::COUNT as u8);
    for s in series.values() {
        out.extend_from_slice(&s.next_bin_ms.to_le_bytes());
        match &s.episode.open {
            None => out.push(0),
            Some(e) => {
                out.push(1);
                out.extend_from_slice(&e.onset_ms.to_le_bytes());
                out.extend_from_slice(&e.opened_at_ms.to_le_bytes());
                out.extend_from_slice(&e.updates.to_le_bytes());
                out.extend_from_slice(&e.reported_hr.to_le_bytes());
                out.extend_from_slice(&e.bins_below.to_le_bytes());
            }
        }
        s.detector.encode_as(form, out);
    }
    // Then each series' last closed bin (what the pages show of it until the next closes).
    for s in series.values() {
        encode_last_bin(s.last.as_ref(), out);
    }
}

/// Reads what [`encode_series`] wrote (without the last bins, as an earlier safetel wrote it:
/// then they are recomputed at the next bin close). Series are stored in [`HazardClass::ALL`]
/// order; a class added since they were written starts where the first stored one stands.
pub fn decode_series(
    params: FleetRelativeParams,
    bytes: &[u8],
) -> Result<ByClass<Series>, StateDecodeError> {
    let mut reader = StateReader(bytes);
    let form = match reader.take::<1>()?[0] {
        SERIES_FORMAT => StateForm::Compact,
        SERIES_FORMAT_VARINT => StateForm::Varint,
        SERIES_FORMAT_FIXED => StateForm::Fixed,
        _ => return Err(StateDecodeError("series of an earlier detector")),
    };
    let count = reader.take::<1>()?[0];
    if count == 0 || usize::from(count) > HazardClass::COUNT {
        return Err(StateDecodeError("series count"));
    }
    let mut out = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let next_bin_ms = i64::from_le_bytes(reader.take()?);
        let open = match reader.take::<1>()?[0] {
            0 => None,
            1 => Some(Episode {
                onset_ms: i64::from_le_bytes(reader.take()?),
                opened_at_ms: i64::from_le_bytes(reader.take()?),
                updates: u32::from_le_bytes(reader.take()?),
                reported_hr: f64::from_le_bytes(reader.take()?),
                bins_below: u32::from_le_bytes(reader.take()?),
            }),
            _ => return Err(StateDecodeError("episode flag")),
        };
        let (detector, rest) = FleetDetector::decode(params, reader.0, form)?;
        reader.0 = rest;
        out.push(Series {
            detector,
            episode: EpisodeTracker { open },
            next_bin_ms,
            last: None,
        });
    }
    if !reader.0.is_empty() {
        for s in &mut out {
            s.last = decode_last_bin(&mut reader)?;
        }
    }
    if !reader.0.is_empty() {
        return Err(StateDecodeError("trailing bytes"));
    }
    let start = out[0].next_bin_ms;
    let mut stored = out.into_iter();
    Ok(ByClass::from_fn(|_| {
        stored.next().unwrap_or_else(|| Series::new(params, start))
    }))
}

fn encode_last_bin(last: Option<&LastBin>, out: &mut Vec<u8>) {
    let Some(b) = last else {
        out.push(0);
        return;
    };
    out.push(1);
    out.extend_from_slice(&b.bin_start_ms.to_le_bytes());
    out.extend_from_slice(&b.p_regression.to_le_bytes());
    out.extend_from_slice(&b.onset_bins.to_le_bytes());
    out.extend_from_slice(&b.onset_ms.to_le_bytes());
    out.extend_from_slice(&b.expected.to_le_bytes());
    out.extend_from_slice(&b.events.to_le_bytes());
    out.extend_from_slice(&b.p_open.to_le_bytes());
    match &b.hazard_ratio {
        None => out.push(0),
        Some(hr) => {
            out.push(1);
            for v in [
                hr.median,
                hr.low,
                hr.high,
                hr.exposure_after,
                hr.exposure_before,
            ] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&hr.events_after.to_le_bytes());
            out.extend_from_slice(&hr.events_before.to_le_bytes());
        }
    }
}

fn decode_last_bin(reader: &mut StateReader<'_>) -> Result<Option<LastBin>, StateDecodeError> {
    if reader.take::<1>()?[0] == 0 {
        return Ok(None);
    }
    let bin_start_ms = i64::from_le_bytes(reader.take()?);
    let p_regression = f64::from_le_bytes(reader.take()?);
    let onset_bins = u32::from_le_bytes(reader.take()?);
    let onset_ms = i64::from_le_bytes(reader.take()?);
    let expected = f64::from_le_bytes(reader.take()?);
    let events = u64::from_le_bytes(reader.take()?);
    let p_open = f64::from_le_bytes(reader.take()?);
    let hazard_ratio = if reader.take::<1>()?[0] == 0 {
        None
    } else {
        let mut f = [0.0; 5];
        for v in &mut f {
            *v = f64::from_le_bytes(reader.take()?);
        }
        Some(Box::new(HazardRatioSummary {
            median: f[0],
            low: f[1],
            high: f[2],
            exposure_after: f[3],
            exposure_before: f[4],
            events_after: u64::from_le_bytes(reader.take()?),
            events_before: u64::from_le_bytes(reader.take()?),
        }))
    };
    Ok(Some(LastBin {
        bin_start_ms,
        p_regression,
        onset_bins,
        onset_ms,
        expected,
        events,
        p_open,
        hazard_ratio,
    }))
}

#[cfg(test)]
mod series_codec_tests {
    use super::*;

    fn fresh(start_ms: i64) -> Series {
        Series::new(FleetRelativeParams::default(), start_ms)
    }

    /// Series fed a few weeks of bins are stored compactly, read back the same from every
    /// form safetel has written, and digest alike ([`fixed_form`]) whichever form stored them.
    #[test]
    fn series_in_the_compact_form_read_as_the_fixed_form_did() {
        let mut series = ByClass::from_fn(|class| fresh(1_000 * class.index() as i64));
        let fleet = crate::detect::fleet_relative::Baseline {
            shape: 2.0,
            rate: 200.0,
        };
        for day in 0..40_u64 {
            for (_, s) in series.iter_mut() {
                s.detector
                    .update(day % 3, 2.0 + (day % 5) as f64 * 0.25, fleet);
            }
        }
        let mut compact = Vec::new();
        encode_series(&series, &mut compact);
        let (mut varint, mut fixed) = (Vec::new(), Vec::new());
        encode_series_as(&series, StateForm::Varint, &mut varint);
        encode_series_as(&series, StateForm::Fixed, &mut fixed);
        assert_eq!(
            [compact[0], varint[0], fixed[0]],
            [SERIES_FORMAT, SERIES_FORMAT_VARINT, SERIES_FORMAT_FIXED]
        );
        assert!(compact.len() < varint.len() && varint.len() < fixed.len());
        assert!(
            compact.len() * 4 < fixed.len() * 3,
            "{} vs {} bytes",
            compact.len(),
            fixed.len()
        );
        let params = FleetRelativeParams::default();
        for bytes in [&compact, &varint, &fixed] {
            assert!(is_current_series(bytes));
            let read = decode_series(params, bytes).unwrap();
            for (class, s) in read.iter() {
                assert_eq!(s.detector, series[class].detector, "{class:?}");
            }
            assert_eq!(fixed_form(bytes).as_ref(), Some(&fixed));
        }
    }

    #[test]
    fn series_of_every_class_read_back_as_written() {
        let mut series = ByClass::from_fn(|class| fresh(1_000 * class.index() as i64));
        series[HazardClass::Disengagement].episode.open = Some(Episode {
            onset_ms: 5,
            opened_at_ms: 9,
            updates: 2,
            reported_hr: 2.5,
            bins_below: 1,
        });
        let mut bytes = Vec::new();
        encode_series(&series, &mut bytes);
        let read = decode_series(FleetRelativeParams::default(), &bytes).unwrap();
        assert_eq!(read, series);
    }

    #[test]
    fn a_class_added_since_the_series_were_written_starts_where_they_stand() {
        // Two identical series, so each body is half of what sits between the header and the
        // two one-byte "no last bin" markers; one body alone is what a safetel with one class
        // wrote (without the last bins, as before they were stored).
        let series = ByClass::splat(fresh(86_400_000));
        let mut two = Vec::new();
        encode_series(&series, &mut two);
        let body = (two.len() - 2 - HazardClass::COUNT) / HazardClass::COUNT;
        let mut one = vec![SERIES_FORMAT, 1];
        one.extend_from_slice(&two[2..2 + body]);
        let read = decode_series(FleetRelativeParams::default(), &one).unwrap();
        for (class, s) in read.iter() {
            assert_eq!(s, &fresh(86_400_000), "{class:?}");
        }
    }

    #[test]
    fn series_counts_no_class_stands_for_are_refused() {
        for count in [0, HazardClass::COUNT as u8 + 1] {
            let bytes = [SERIES_FORMAT, count];
            assert_eq!(
                decode_series(FleetRelativeParams::default(), &bytes).unwrap_err(),
                StateDecodeError("series count"),
                "count {count}"
            );
        }
    }
}
