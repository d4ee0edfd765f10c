//! `safetel detect`: the change-point detector over one series from a CSV file, for backtests.
//! Input columns `bin,events,exposure` (a header line is allowed); one JSON object per bin out.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;

use anyhow::{Context, bail};
use serde_json::json;

use crate::detect::{Detector, DetectorParams};

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
}

pub fn execute(args: Args) -> anyhow::Result<()> {
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
    let file = std::fs::File::open(&args.input)
        .with_context(|| format!("opening {}", args.input.display()))?;
    let mut out = std::io::stdout().lock();
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
                args.input.display(),
                fields.len()
            );
        };
        let events: u64 = events
            .parse()
            .with_context(|| format!("{}:{line_no}: events `{events}`", args.input.display()))?;
        let exposure: f64 = exposure.parse().with_context(|| {
            format!("{}:{line_no}: exposure `{exposure}`", args.input.display())
        })?;
        if !(exposure.is_finite() && exposure >= 0.0) {
            bail!(
                "{}:{line_no}: exposure must be a finite number >= 0, got {exposure}",
                args.input.display()
            );
        }
        let update = detector.update(events, exposure);
        let mut record = json!({
            "bin": bin.parse::<i64>().map_or_else(|_| json!(bin), |b| json!(b)),
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
