//! `safetel evaluate`: scores alerts (JSON lines, as `demo` writes them) against the ground
//! truth `generate` or `demo` wrote.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::evaluate::{Evaluation, evaluate};
use crate::generator::GroundTruth;
use crate::model::RegressionAlert;

#[derive(clap::Args)]
pub struct Args {
    /// Ground truth JSON (from `safetel generate --truth` or `safetel demo`).
    #[arg(long)]
    truth: PathBuf,
    /// Alerts, one JSON object per line (`alerts.jsonl` from `safetel demo`).
    #[arg(long)]
    alerts: PathBuf,
    /// A regression counts as detected when an alert opened within this many days of its onset.
    #[arg(long, default_value_t = crate::evaluate::DEFAULT_HORIZON_DAYS)]
    horizon_days: f64,
    /// Print the figures as one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub fn read_truth(path: &Path) -> anyhow::Result<GroundTruth> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&text)
        .with_context(|| format!("{}: not a ground truth file", path.display()))
}

pub fn read_alerts(path: &Path) -> anyhow::Result<Vec<RegressionAlert>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut alerts = Vec::new();
    for (index, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let alert = serde_json::from_str(&line)
            .with_context(|| format!("{}:{}: not an alert", path.display(), index + 1))?;
        alerts.push(alert);
    }
    Ok(alerts)
}

pub fn execute(args: Args) -> anyhow::Result<()> {
    if !(args.horizon_days.is_finite() && args.horizon_days > 0.0) {
        anyhow::bail!("--horizon-days must be a positive number of days");
    }
    let truth = read_truth(&args.truth)?;
    let alerts = read_alerts(&args.alerts)?;
    let evaluation: Evaluation = evaluate(&truth, &alerts, args.horizon_days);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&evaluation)?);
    } else {
        print!("{}", evaluation.render());
    }
    Ok(())
}
