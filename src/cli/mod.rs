//! Command-line entry: parses flags, loads config, sets up logging, and hands off to one module
//! per subcommand. The only place that uses `anyhow`.

mod demo;
mod demo_report;
mod detect;
mod evaluate;
mod experiment;
mod generate;
mod inspect;
mod refit;
mod run;
mod topics;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::Config;

#[derive(Parser)]
#[command(
    name = "safetel",
    version,
    about = "Streaming safety-telemetry processor for vehicle fleets"
)]
struct Cli {
    /// Configuration file (TOML); defaults built in. SAFETEL_<SECTION>__<KEY> variables override it.
    #[arg(long, global = true, env = "SAFETEL_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Simulate a fleet: telemetry to Kafka or an Avro file, ground truth to JSON.
    Generate(generate::Args),
    /// Process telemetry from Kafka: state in RocksDB, bad records to the DLQ, API and metrics.
    Run,
    /// The whole pipeline in process, no broker: a generated fleet through the engine.
    Demo(demo::Args),
    /// Manage the Kafka topics.
    Topics {
        #[command(subcommand)]
        action: topics::Action,
    },
    /// Run the change-point detector over one series (CSV bin,events,exposure): JSON per bin.
    Detect(detect::Args),
    /// Controlled experiments of the review-budget policies on generated fleets.
    Experiment(experiment::Args),
    /// Score alerts against ground truth: sensitivity, false alarms, precision, MTTD.
    Evaluate(evaluate::Args),
    /// Fit the Weibull survival model (NUTS): to a CSV of intervals, or nightly to the state store's facts.
    Refit(refit::Args),
    /// Print the state store as canonical JSON (the process must not be running on it).
    Inspect(inspect::Args),
    /// Print the effective configuration, secrets redacted.
    Config,
}

/// Runs the command line; the binary's `main` calls this.
pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config =
        Config::load(cli.config.as_deref(), std::env::vars()).context("loading configuration")?;
    init_logging(&config);
    match cli.command {
        Command::Generate(args) => generate::execute(&config, args),
        Command::Run => run::execute(&config),
        Command::Demo(args) => demo::execute(&config, args),
        Command::Topics { action } => topics::execute(&config, action),
        Command::Detect(args) => detect::execute(args),
        Command::Evaluate(args) => evaluate::execute(args),
        Command::Experiment(args) => experiment::execute(&config, args),
        Command::Inspect(args) => inspect::execute(args),
        Command::Refit(args) => refit::execute(&config, args),
        Command::Config => {
            print!("{}", config.redacted_toml());
            Ok(())
        }
    }
}

fn init_logging(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log.level));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if config.log.format == crate::config::LogFormat::Json {
        builder.json().init();
    } else {
        builder.init();
    }
}
