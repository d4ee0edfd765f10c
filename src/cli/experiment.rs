//! `safetel experiment`: controlled experiments of the review policies. Each replication
//! generates one fleet with injected regressions (seed + replication) and runs it through the
//! engine once per policy and budget: the same fleets for every policy (common random numbers).
//! Reports, per policy and budget, sensitivity, false alarms per 1000 vehicle-months, MTTD and
//! reviews spent, each with a 95% interval across replications; a table, `experiment.json` and
//! `experiment.svg` (sensitivity and MTTD against budget).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::codec;
use crate::config::Config;
use crate::engine::{Engine, RestoredState, StateDelta};
use crate::evaluate::evaluate;
use crate::generator::{DAY_MS, Generator, GeneratorConfig};
use crate::metrics::Metrics;
use crate::model::Payload;
use crate::sampling::{Policy, SamplingPolicy, Stratum, TripCovariates};
use crate::stream::memory::{MemoryRecord, run_in_memory};
use crate::stream::runner::{CommitError, CommitTarget};

#[derive(clap::Args)]
pub struct Args {
    /// Review budgets, fractions of trips: one or more, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "0.1")]
    budget: Vec<f64>,
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "uniform,stratified,importance,adaptive,full"
    )]
    policies: Vec<String>,
    /// Replications (fleets).
    #[arg(long, default_value_t = 10)]
    reps: u64,
    #[command(flatten)]
    fleet: super::generate::FleetArgs,
    /// A regression counts as detected when an alert opened within this many days of its onset.
    #[arg(long, default_value_t = crate::evaluate::DEFAULT_HORIZON_DAYS)]
    horizon_days: f64,
    #[arg(long, default_value = "experiment-out")]
    out: PathBuf,
}

/// Experiments keep no state between runs.
struct Discard;

impl CommitTarget for Discard {
    fn commit(&mut self, _delta: StateDelta) -> Result<(), CommitError> {
        Ok(())
    }
}

/// One replication of one policy at one budget.
#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Outcome {
    sensitivity: Option<f64>,
    false_alarms_per_1000_vehicle_months: Option<f64>,
    mttd_days_mean: Option<f64>,
    reviews_share: f64,
}

/// Mean and 95% interval (normal, across replications) of the values present, the interval
/// kept within `range`.
fn summary(values: impl Iterator<Item = Option<f64>>, range: (f64, f64)) -> serde_json::Value {
    let v: Vec<f64> = values.flatten().collect();
    if v.is_empty() {
        return json!({"mean": null, "low": null, "high": null, "n": 0});
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let sd = if v.len() > 1 {
        (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    let half = 1.96 * sd / n.sqrt();
    let (low, high) = ((mean - half).max(range.0), (mean + half).min(range.1));
    json!({"mean": mean, "low": low, "high": high, "n": v.len()})
}

pub fn execute(config: &Config, args: Args) -> anyhow::Result<()> {
    let policies: Vec<Policy> = args
        .policies
        .iter()
        .map(|p| Policy::from_name(p).with_context(|| format!("unknown policy `{p}`")))
        .collect::<anyhow::Result<_>>()?;
    if args.budget.iter().any(|b| !(*b > 0.0 && *b <= 1.0)) {
        bail!("every --budget must be within (0, 1]");
    }
    if args.reps == 0 {
        bail!("--reps must be at least 1");
    }
    let fleet = args.fleet.load()?;
    let seed = fleet.seed;
    let runs = args.reps * (args.budget.len() * policies.len()) as u64;
    let bar = ProgressBar::new(runs).with_style(
        ProgressStyle::with_template("experiment {bar:40} {pos}/{len} runs {msg} ({eta} left)")
            .expect("valid template"),
    );
    let mut results: BTreeMap<(String, String), Vec<Outcome>> = BTreeMap::new();
    for rep in 0..args.reps {
        let fleet = GeneratorConfig {
            seed: seed + rep,
            ..fleet.clone()
        };
        let mut generator = Generator::new(fleet.clone())?;
        let records: Vec<MemoryRecord> = generator.by_ref().map(MemoryRecord::from).collect();
        let truth = generator.truth();
        // Calibrate on the first day's trips: what a fleet knows before the experiment starts.
        let first_day = truth.start_ms + DAY_MS;
        let reference: Vec<(String, f64, Stratum)> = records
            .iter()
            .filter_map(|r| match codec::decode(&r.bytes).ok()?.payload {
                Payload::Trip(t) if t.end_time_ms < first_day => Some((
                    t.trip_id.to_string(),
                    t.duration_s / 3600.0,
                    Stratum {
                        road: t.road_type,
                        weather: t.weather,
                        night: t.night,
                    },
                )),
                _ => None,
            })
            .collect();
        let rate = config.detector.a0 / config.detector.b0;
        let reference: Vec<TripCovariates<'_>> = reference
            .iter()
            .map(|(id, e, s)| TripCovariates {
                trip_id: id,
                exposure_hours: *e,
                stratum: *s,
                vehicle_rate: rate,
                p_regression: 0.0,
            })
            .collect();
        let trips = records
            .iter()
            .filter(|r| {
                matches!(
                    codec::decode(&r.bytes).map(|e| e.payload),
                    Ok(Payload::Trip(_))
                )
            })
            .count() as f64;
        for (i, &budget) in args.budget.iter().enumerate() {
            for &policy in &policies {
                if policy == Policy::Full && i > 0 {
                    // No budget: once per fleet.
                    bar.inc(1);
                    continue;
                }
                bar.set_message(format!("fleet {} {} at {budget}", rep + 1, policy.name()));
                let budget = if policy == Policy::Full { 1.0 } else { budget };
                let mut sampling = SamplingPolicy::new(policy, budget, 0.1, seed)?;
                sampling.calibrate(&reference);
                let metrics = Metrics::new();
                let mut engine = Engine::new(
                    config.stream.clone(),
                    &config.detector,
                    RestoredState::default(),
                    metrics.clone(),
                )?
                .with_sampling(sampling);
                let (_, alerts) = run_in_memory(
                    &mut engine,
                    records.iter().cloned(),
                    4,
                    &mut Discard,
                    usize::MAX,
                )?;
                let e = evaluate(&truth, &alerts.alerts, args.horizon_days);
                results
                    .entry((format!("{budget}"), policy.name().to_string()))
                    .or_default()
                    .push(Outcome {
                        sensitivity: e.sensitivity,
                        false_alarms_per_1000_vehicle_months: e
                            .false_alarms_per_1000_vehicle_months,
                        mttd_days_mean: e.mttd_days_mean,
                        reviews_share: metrics.reviews.get() as f64 / trips,
                    });
                bar.inc(1);
            }
        }
    }
    bar.finish_and_clear();

    let mut rows = Vec::new();
    println!(
        "{:<8} {:<11} {:>24} {:>26} {:>24} {:>22}",
        "budget",
        "policy",
        "sensitivity [95%]",
        "false alarms/1000 vm",
        "MTTD days [95%]",
        "reviews spent [95%]"
    );
    let show = |s: &serde_json::Value, scale: f64, digits: usize| match s["mean"].as_f64() {
        Some(m) => format!(
            "{:.*} [{:.*}, {:.*}]",
            digits,
            m * scale,
            digits,
            s["low"].as_f64().unwrap_or(m) * scale,
            digits,
            s["high"].as_f64().unwrap_or(m) * scale
        ),
        None => "-".into(),
    };
    for ((budget, policy), outcomes) in &results {
        let (unit, positive) = ((0.0, 1.0), (0.0, f64::INFINITY));
        let sens = summary(outcomes.iter().map(|o| o.sensitivity), unit);
        let fa = summary(
            outcomes
                .iter()
                .map(|o| o.false_alarms_per_1000_vehicle_months),
            positive,
        );
        let mttd = summary(outcomes.iter().map(|o| o.mttd_days_mean), positive);
        let reviews = summary(outcomes.iter().map(|o| Some(o.reviews_share)), unit);
        println!(
            "{budget:<8} {policy:<11} {:>24} {:>26} {:>24} {:>22}",
            show(&sens, 100.0, 0) + " %",
            show(&fa, 1.0, 2),
            show(&mttd, 1.0, 1),
            show(&reviews, 100.0, 1) + " %"
        );
        rows.push(
            json!({"budget": budget.parse::<f64>().unwrap_or(1.0), "policy": policy,
            "sensitivity": sens, "false_alarms_per_1000_vehicle_months": fa,
            "mttd_days_mean": mttd, "reviews_share": reviews, "replications": outcomes}),
        );
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let report = json!({"reps": args.reps, "seed": seed, "vehicles": fleet.vehicles,
        "days": fleet.days, "horizon_days": args.horizon_days, "results": rows});
    std::fs::write(
        args.out.join("experiment.json"),
        serde_json::to_vec_pretty(&report)?,
    )?;
    std::fs::write(args.out.join("experiment.svg"), chart(&rows))?;
    println!(
        "wrote experiment.json and experiment.svg to {}/",
        args.out.display()
    );
    Ok(())
}

/// Two panels, sensitivity and MTTD against budget, a line per policy with 95% whiskers.
fn chart(rows: &[serde_json::Value]) -> String {
    let colours = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e"];
    let mut by_policy: BTreeMap<&str, Vec<(f64, &serde_json::Value)>> = BTreeMap::new();
    for row in rows {
        by_policy
            .entry(row["policy"].as_str().unwrap_or(""))
            .or_default()
            .push((row["budget"].as_f64().unwrap_or(1.0), row));
    }
    let max_mttd = rows
        .iter()
        .filter_map(|r| r["mttd_days_mean"]["high"].as_f64())
        .fold(1.0f64, f64::max);
    let (w, h, pad) = (360.0, 240.0, 40.0);
    let x = |b: f64, panel: f64| panel + pad + b * (w - 2.0 * pad);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"11\">",
        2.0 * w,
        h + 40.0
    );
    for (panel, title, key, top) in [
        (0.0, "sensitivity", "sensitivity", 1.0),
        (w, "MTTD (days)", "mttd_days_mean", max_mttd),
    ] {
        let y = |v: f64| h - pad - v / top * (h - 2.0 * pad);
        svg += &format!(
            "<text x=\"{}\" y=\"16\">{title} against review budget</text><line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/><line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/><text x=\"{}\" y=\"{}\">0</text><text x=\"{}\" y=\"{}\">budget 1</text><text x=\"{}\" y=\"{}\">{top:.2}</text>",
            panel + pad,
            x(0.0, panel),
            y(0.0),
            x(1.0, panel),
            y(0.0),
            x(0.0, panel),
            y(0.0),
            x(0.0, panel),
            y(top),
            x(0.0, panel) - 12.0,
            y(0.0) + 14.0,
            x(1.0, panel) - 30.0,
            y(0.0) + 14.0,
            panel + 4.0,
            y(top) + 4.0
        );
        for (i, (policy, points)) in by_policy.iter().enumerate() {
            let colour = colours[i % colours.len()];
            let mut path = String::new();
            for (b, row) in points {
                let s = &row[key];
                let Some(mean) = s["mean"].as_f64() else {
                    continue;
                };
                let (lo, hi) = (
                    s["low"].as_f64().unwrap_or(mean),
                    s["high"].as_f64().unwrap_or(mean),
                );
                path += &format!(
                    "{} {:.1} {:.1} ",
                    if path.is_empty() { "M" } else { "L" },
                    x(*b, panel),
                    y(mean)
                );
                svg += &format!(
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{colour}\"><title>{policy} at {b}: {mean:.3} [{lo:.3}, {hi:.3}]</title></circle><line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"{colour}\"/>",
                    x(*b, panel),
                    y(mean),
                    x(*b, panel),
                    y(lo.max(0.0)),
                    x(*b, panel),
                    y(hi.min(top))
                );
            }
            svg += &format!("<path d=\"{path}\" fill=\"none\" stroke=\"{colour}\"/>");
            svg += &format!(
                "<text x=\"{}\" y=\"{}\" fill=\"{colour}\">{policy}</text>",
                panel + w - 90.0,
                30.0 + 14.0 * i as f64
            );
        }
    }
    svg + "</svg>\n"
}
