//! `safetel detect`: a change-point detector over one series from a CSV file, for backtests.
//! Input columns `bin,events,exposure` (a header line is allowed); one JSON object per bin out.
//!
//! `--model fleet-relative` (the default) is the stream's detector (docs/design.md §3): exposure is
//! the key's risk-adjusted exposure (or, for a cohort, its members' expected count), `--a0`/`--b0`
//! the fleet's Gamma distribution of rates per unit of it, and the opening threshold comes from
//! `--false-alarms-per-1000-months` for this one series. `--model self-baseline` is the earlier
//! run-length detector against the series' own previous bins, with its output unchanged.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;

use anyhow::{Context, bail};
use serde_json::json;

use crate::detect::calibration::{NullModel, OpeningRule};
use crate::detect::fleet_relative::{Baseline, FleetDetector, FleetRelativeParams};
use crate::detect::{Detector, DetectorParams};

/// Which detector runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Model {
    /// Counts against the fleet's predicted rate (the stream's detector).
    FleetRelative,
    /// Run lengths against the series' own previous bins (the first design).
    SelfBaseline,
}

#[derive(clap::Args)]
pub struct Args {
    /// CSV with columns bin,events,exposure (exposure in hours).
    #[arg(long)]
    input: PathBuf,
    /// Gamma prior shape of the rate per exposure hour.
    #[arg(long)]
    a0: Option<f64>,
    /// Gamma prior rate (hours).
    #[arg(long)]
    b0: Option<f64>,
    /// Change-point hazard per bin.
    #[arg(long)]
    hazard: Option<f64>,
    /// Baseline window in bins.
    #[arg(long)]
    window: Option<usize>,
    /// Hazard ratio that counts as a regression.
    #[arg(long)]
    threshold: Option<f64>,
    /// The detector.
    #[arg(long, value_enum, default_value = "fleet-relative")]
    model: Model,
    /// fleet-relative: bins of the series' own history kept out of its baseline.
    #[arg(long)]
    guard: Option<usize>,
    /// fleet-relative: false alarms allowed per 1000 months of this series (1-day bins).
    #[arg(long, default_value_t = 1.0)]
    false_alarms_per_1000_months: f64,
}

/// One bin of the input.
struct Row {
    bin: serde_json::Value,
    events: u64,
    exposure: f64,
}

fn read_rows(path: &std::path::Path) -> anyhow::Result<Vec<Row>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut rows = Vec::new();
    for (index, line) in BufReader::new(file).lines().enumerate() {
        let line = line?;
        let line_no = index + 1;
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if line.trim().is_empty() || (line_no == 1 && fields.first() == Some(&"bin")) {
            continue;
        }
        let [bin, events, exposure] = fields[..] else {
            bail!(
                "{}:{line_no}: expected 3 columns bin,events,exposure, got {}",
                path.display(),
                fields.len()
            );
        };
        let events: u64 = events
            .parse()
            .with_context(|| format!("{}:{line_no}: events `{events}`", path.display()))?;
        let exposure: f64 = exposure
            .parse()
            .with_context(|| format!("{}:{line_no}: exposure `{exposure}`", path.display()))?;
        if !(exposure.is_finite() && exposure >= 0.0) {
            bail!(
                "{}:{line_no}: exposure must be a finite number >= 0, got {exposure}",
                path.display()
            );
        }
        rows.push(Row {
            bin: bin.parse::<i64>().map_or_else(|_| json!(bin), |b| json!(b)),
            events,
            exposure,
        });
    }
    Ok(rows)
}

pub fn execute(args: Args) -> anyhow::Result<()> {
    let rows = read_rows(&args.input)?;
    match args.model {
        Model::SelfBaseline => self_baseline(&args, &rows),
        Model::FleetRelative => fleet_relative(&args, &rows),
    }
}

fn fleet_relative(args: &Args, rows: &[Row]) -> anyhow::Result<()> {
    let config_defaults = DetectorParams::default();
    let defaults = FleetRelativeParams::default();
    let params = FleetRelativeParams {
        hazard: args.hazard.unwrap_or(defaults.hazard),
        guard_bins: args.guard.unwrap_or(defaults.guard_bins),
        threshold: args.threshold.unwrap_or(defaults.threshold),
    };
    let mut detector = FleetDetector::new(params)?;
    let fleet = Baseline {
        shape: args.a0.unwrap_or(config_defaults.a0),
        rate: args.b0.unwrap_or(config_defaults.b0),
    };
    let budget = args.false_alarms_per_1000_months;
    if !fleet.is_proper() || !budget.is_finite() || budget <= 0.0 {
        bail!("--a0, --b0 and --false-alarms-per-1000-months must be positive");
    }
    let rule = OpeningRule::calibrate(
        &params,
        NullModel {
            shape: fleet.shape,
            false_alarms_per_bin: args.false_alarms_per_1000_months / 1000.0 / 30.4375,
        },
    );
    let mean_rate = fleet.shape / fleet.rate;
    let mut out = std::io::stdout().lock();
    for row in rows {
        let expected_per_bin = detector.mean_exposure_per_bin().max(row.exposure) * mean_rate;
        let update = detector.update(row.events, row.exposure, fleet);
        let threshold = rule.ln_odds_at(expected_per_bin);
        let mut record = json!({
            "bin": row.bin,
            "p_regression": update.p_regression,
            "p_changed": update.p_changed,
            "expected": update.expected,
            "onset_bins": update.onset_bins,
            "p_open": rule.p_open_at(expected_per_bin),
            "alarm": update.ln_odds_regression >= threshold,
        });
        if let Some(hr) = detector.hazard_ratio(fleet) {
            record["hr_median"] = json!(hr.median);
            record["hr_low"] = json!(hr.low);
            record["hr_high"] = json!(hr.high);
        }
        writeln!(out, "{record}")?;
    }
    Ok(())
}

fn self_baseline(args: &Args, rows: &[Row]) -> anyhow::Result<()> {
    let defaults = DetectorParams::default();
    let params = DetectorParams {
        a0: args.a0.unwrap_or(defaults.a0),
        b0: args.b0.unwrap_or(defaults.b0),
        hazard: args.hazard.unwrap_or(defaults.hazard),
        window_bins: args.window.unwrap_or(defaults.window_bins),
        threshold: args.threshold.unwrap_or(defaults.threshold),
        ..defaults
    };
    let mut detector = Detector::new(params)?;
    let mut out = std::io::stdout().lock();
    for row in rows {
        let update = detector.update(row.events, row.exposure);
        let mut record = json!({
            "bin": row.bin,
            "p_regression": update.p_regression,
            "map_run_length": update.map_run_length,
        });
        if let Some(hr) = update.hazard_ratio {
            record["hr_median"] = json!(hr.median);
            record["hr_low"] = json!(hr.low);
            record["hr_high"] = json!(hr.high);
        }
        writeln!(out, "{record}")?;
    }
    Ok(())
}
