//! `safetel refit`: the survival model fitted with NUTS to intervals from a CSV file
//! (`vehicle_id,duration,event`), with a progress bar per chain; the result as JSON.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::json;

use crate::refit::model::SurvivalData;
use crate::refit::result::summarise_fit;
use crate::refit::sampler::{SamplerSettings, sample};

#[derive(clap::Args)]
pub struct Args {
    /// Intervals: CSV `vehicle_id,duration,event` (duration in exposure hours, event 1 or 0).
    #[arg(long)]
    input: PathBuf,
    /// Where to write the result (JSON).
    #[arg(long, default_value = "refit.json")]
    output: PathBuf,
    #[arg(long, default_value_t = 4)]
    chains: usize,
    #[arg(long, default_value_t = 1000)]
    warmup: u64,
    #[arg(long, default_value_t = 1000)]
    draws: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Reads `vehicle_id,duration,event` rows; a header line is allowed.
pub fn read_intervals(path: &Path) -> anyhow::Result<Vec<(String, f64, bool)>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut rows = Vec::new();
    for (index, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line?;
        let line_no = index + 1;
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if line.trim().is_empty() || (line_no == 1 && fields.first() == Some(&"vehicle_id")) {
            continue;
        }
        let [vehicle, duration, event] = fields[..] else {
            bail!(
                "{}:{line_no}: expected 3 columns vehicle_id,duration,event, got {}",
                path.display(),
                fields.len()
            );
        };
        let duration: f64 = duration
            .parse()
            .with_context(|| format!("{}:{line_no}: duration `{duration}`", path.display()))?;
        let event = match event {
            "1" | "true" => true,
            "0" | "false" => false,
            other => bail!(
                "{}:{line_no}: event must be 1 or 0, got `{other}`",
                path.display()
            ),
        };
        rows.push((vehicle.to_string(), duration, event));
    }
    Ok(rows)
}

pub fn execute(args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let rows = read_intervals(&args.input)?;
    let data = SurvivalData::new(&rows).with_context(|| format!("{}", args.input.display()))?;
    let settings = SamplerSettings {
        chains: args.chains,
        warmup: args.warmup,
        draws: args.draws,
        seed: args.seed,
        ..SamplerSettings::default()
    };
    eprintln!(
        "refit: {} vehicles, {} intervals; {} chains x ({} warm-up + {} draws), seed {}",
        data.vehicle_count(),
        data.interval_count(),
        settings.chains,
        settings.warmup,
        settings.draws,
        settings.seed
    );
    let bars = MultiProgress::new();
    let style = ProgressStyle::with_template("chain {prefix} {bar:40} {pos}/{len} {msg}")
        .expect("valid template");
    let chains: Vec<ProgressBar> = (0..settings.chains)
        .map(|c| {
            let bar = bars.add(ProgressBar::new(settings.warmup + settings.draws));
            bar.set_style(style.clone());
            bar.set_prefix(c.to_string());
            bar.set_message("warm-up");
            bar
        })
        .collect();
    let fit = sample(&data, &settings, &|chain, warming_up| {
        let bar = &chains[chain];
        bar.inc(1);
        if !warming_up && bar.position() == settings.warmup + 1 {
            bar.set_message("sampling");
        }
    })?;
    for bar in &chains {
        bar.finish_with_message("done");
    }
    let result = summarise_fit(&data, &fit, settings.seed);
    let d = &result.diagnostics;
    eprintln!(
        "refit: {} (max R-hat {:.4}, min bulk ESS {:.0}, {} divergences, E-BFMI {:.2}); sampling {:.1} s",
        if d.converged {
            "converged"
        } else {
            "NOT converged"
        },
        d.max_rhat,
        d.min_ess_bulk,
        d.divergences,
        d.ebfmi,
        fit.sampling_s
    );
    let mut out = serde_json::to_value(&result)?;
    out["timing"] =
        json!({"sampling_s": fit.sampling_s, "total_s": started.elapsed().as_secs_f64()});
    std::fs::write(&args.output, serde_json::to_vec_pretty(&out)?)
        .with_context(|| format!("writing {}", args.output.display()))?;
    eprintln!("refit: wrote {}", args.output.display());
    Ok(())
}
