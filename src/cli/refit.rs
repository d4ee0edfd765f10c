//! `safetel refit`: the survival model fitted with NUTS, with a progress bar per chain; the
//! result as JSON. With `--input`, to intervals from a CSV file (`vehicle_id,duration,event`).
//! Without, the nightly job on the state store (`state.dir`, while `run` is not using it): its
//! facts become intervals, and a converged fit's priors go back into the store for the detectors,
//! together with the model-run record.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::json;

use crate::config::{Config, RefitConfig};
use crate::refit::model::SurvivalData;
use crate::refit::result::{RefitResult, summarise_fit};
use crate::refit::sampler::{SamplerSettings, sample};
use crate::store::Store;

#[derive(clap::Args)]
pub struct Args {
    /// Intervals: CSV `vehicle_id,duration,event` (duration in exposure hours, event 1 or 0).
    /// Without it: the nightly job on the state store.
    #[arg(long)]
    input: Option<PathBuf>,
    /// Where to write the result (JSON).
    #[arg(long, default_value = "refit.json")]
    output: PathBuf,
    /// Default: `refit.chains` (4).
    #[arg(long)]
    chains: Option<usize>,
    /// Default: `refit.warmup` (1000).
    #[arg(long)]
    warmup: Option<u64>,
    /// Default: `refit.draws` (1000).
    #[arg(long)]
    draws: Option<u64>,
    /// Default: `refit.seed` (1).
    #[arg(long)]
    seed: Option<u64>,
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

/// One progress bar per chain, for `sample`'s callback.
pub struct ChainBars {
    bars: Vec<ProgressBar>,
    warmup: u64,
}

impl ChainBars {
    pub fn new(settings: &SamplerSettings) -> ChainBars {
        let all = MultiProgress::new();
        let style = ProgressStyle::with_template("chain {prefix} {bar:40} {pos}/{len} {msg}")
            .expect("valid template");
        let bars = (0..settings.chains)
            .map(|c| {
                let bar = all.add(ProgressBar::new(settings.warmup + settings.draws));
                bar.set_style(style.clone());
                bar.set_prefix(c.to_string());
                bar.set_message("warm-up");
                bar
            })
            .collect();
        ChainBars {
            bars,
            warmup: settings.warmup,
        }
    }

    pub fn on_draw(&self, chain: usize, warming_up: bool) {
        let bar = &self.bars[chain];
        bar.inc(1);
        if !warming_up && bar.position() == self.warmup + 1 {
            bar.set_message("sampling");
        }
    }

    pub fn finish(&self) {
        for bar in &self.bars {
            bar.finish_with_message("done");
        }
    }
}

fn report(result: &RefitResult, sampling_s: f64) {
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
        sampling_s
    );
}

pub fn execute(config: &Config, args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut refit = config.refit.clone();
    refit.chains = args.chains.unwrap_or(refit.chains);
    refit.warmup = args.warmup.unwrap_or(refit.warmup);
    refit.draws = args.draws.unwrap_or(refit.draws);
    refit.seed = args.seed.unwrap_or(refit.seed);
    let settings = refit.sampler_settings();
    let mut out = match &args.input {
        Some(input) => fit_csv(input, &settings)?,
        None => nightly(config, &refit, &settings)?,
    };
    out["timing"]["total_s"] = json!(started.elapsed().as_secs_f64());
    std::fs::write(&args.output, serde_json::to_vec_pretty(&out)?)
        .with_context(|| format!("writing {}", args.output.display()))?;
    eprintln!("refit: wrote {}", args.output.display());
    Ok(())
}

fn fit_csv(input: &Path, settings: &SamplerSettings) -> anyhow::Result<serde_json::Value> {
    let rows = read_intervals(input)?;
    let data = SurvivalData::new(&rows).with_context(|| format!("{}", input.display()))?;
    eprintln!(
        "refit: {} vehicles, {} intervals; {} chains x ({} warm-up + {} draws), seed {}",
        data.vehicle_count(),
        data.interval_count(),
        settings.chains,
        settings.warmup,
        settings.draws,
        settings.seed
    );
    let bars = ChainBars::new(settings);
    let fit = sample(&data, settings, &|c, w| bars.on_draw(c, w))?;
    bars.finish();
    let result = summarise_fit(&data, &fit, settings.seed);
    report(&result, fit.sampling_s);
    let mut out = serde_json::to_value(&result)?;
    out["timing"] = json!({"sampling_s": fit.sampling_s});
    Ok(out)
}

fn nightly(
    config: &Config,
    refit: &RefitConfig,
    settings: &SamplerSettings,
) -> anyhow::Result<serde_json::Value> {
    let store = Store::open(&config.state.dir).with_context(|| {
        format!(
            "opening the state store {} (if `safetel run` is using it, set refit.schedule_utc and let run refit)",
            config.state.dir.display()
        )
    })?;
    eprintln!(
        "refit: facts from {}, last {} days; {} chains x ({} warm-up + {} draws), seed {}",
        config.state.dir.display(),
        refit.window_days,
        settings.chains,
        settings.warmup,
        settings.draws,
        settings.seed
    );
    let bars = ChainBars::new(settings);
    let outcome = crate::nightly::refit_from_store(&store, refit, &|c, w| bars.on_draw(c, w))?;
    bars.finish();
    report(&outcome.result, outcome.run.sampling_s);
    let (snapshot, priors) = crate::nightly::record(
        &store,
        refit,
        &config.retention,
        &outcome,
        &crate::metrics::Metrics::new(),
    )?;
    if priors.is_empty() {
        eprintln!("refit: did not converge; the detectors keep their previous priors");
    } else {
        eprintln!(
            "refit: priors for {} vehicles written to the state store",
            priors.len()
        );
    }
    eprintln!(
        "refit: star-schema snapshot in {} {:?}",
        snapshot.dir.display(),
        snapshot.rows
    );
    let mut out = serde_json::to_value(&outcome.result)?;
    out["model_run"] = serde_json::to_value(&outcome.run)?;
    out["snapshot"] = serde_json::to_value(&snapshot)?;
    out["timing"] = json!({"sampling_s": outcome.run.sampling_s});
    Ok(out)
}
