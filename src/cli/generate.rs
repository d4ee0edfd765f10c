//! `safetel generate`: the simulator's records to Kafka or to an Avro container file.

use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::signal::unix::{SignalKind, signal};

use crate::codec;
use crate::config::Config;
use crate::generator::{GeneratedRecord, Generator, GeneratorConfig, ReviewDesk};
use crate::kafka::{RecordProducer, serve_reviews};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    fleet: FleetArgs,
    /// First day, YYYY-MM-DD.
    #[arg(long)]
    start_date: Option<String>,
    /// Shares of records to disturb.
    #[arg(long)]
    out_of_order: Option<f64>,
    #[arg(long)]
    late: Option<f64>,
    #[arg(long)]
    duplicate: Option<f64>,
    #[arg(long)]
    corrupt: Option<f64>,
    /// Send to the events topic of the configured Kafka cluster.
    #[arg(long, conflicts_with = "output")]
    kafka: bool,
    /// Write an Avro object container file instead.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Act as the review service too (with --kafka): hold critical events back from the stream
    /// and, after sending the rest, answer review requests with them (`run` with a review
    /// budget asks), until interrupted or --review-idle-exit-s passes without a request.
    #[arg(long, requires = "kafka")]
    review_service: bool,
    /// Stop serving reviews after this many seconds without a request.
    #[arg(long, requires = "review_service")]
    review_idle_exit_s: Option<f64>,
    /// With --kafka: send at most this many records per second (a steady load, for load tests);
    /// default as fast as the broker takes them.
    #[arg(long, requires = "kafka", value_parser = positive_rate)]
    rate: Option<f64>,
    /// Where to write the ground truth (injected regressions, faults).
    #[arg(long, default_value = "truth.json")]
    truth: PathBuf,
}

/// The fleet to simulate, shared by `generate`, `demo` and `experiment`.
#[derive(clap::Args)]
pub struct FleetArgs {
    /// Generator settings (TOML, keys of `GeneratorConfig`; default `config/fleet.toml`'s); the
    /// flags below override them.
    #[arg(long)]
    fleet: Option<PathBuf>,
    /// Default: the fleet's (42). `experiment` uses seed + r for replication r.
    #[arg(long)]
    seed: Option<u64>,
    /// Default: the fleet's (300).
    #[arg(long)]
    vehicles: Option<usize>,
    /// Default: the fleet's (56).
    #[arg(long)]
    days: Option<u32>,
}

impl FleetArgs {
    /// The file's settings (or the defaults), then the flags. Not yet validated.
    pub fn load(&self) -> anyhow::Result<GeneratorConfig> {
        let mut config: GeneratorConfig = match &self.fleet {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
            }
            None => GeneratorConfig::default(),
        };
        config.seed = self.seed.unwrap_or(config.seed);
        config.vehicles = self.vehicles.unwrap_or(config.vehicles);
        config.days = self.days.unwrap_or(config.days);
        Ok(config)
    }
}

impl Args {
    /// The generator settings: file, then flags.
    pub fn generator_config(&self) -> anyhow::Result<GeneratorConfig> {
        let mut config = self.fleet.load()?;
        macro_rules! set {
            ($($flag:ident => $($field:ident).+),* $(,)?) => {$(
                if let Some(value) = self.$flag.clone() { config.$($field).+ = value; }
            )*};
        }
        set!(start_date => start_date, out_of_order => faults.out_of_order, late => faults.late,
            duplicate => faults.duplicate, corrupt => faults.corrupt);
        config.validate()?;
        Ok(config)
    }
}

pub fn execute(config: &Config, args: Args) -> anyhow::Result<()> {
    if args.kafka {
        crate::kafka::check_broker(config, crate::kafka::BROKER_ANSWER_WITHIN)?;
        // With a registry, the records are framed with the ids it gives (before any is made).
        crate::registry::install(
            config,
            &[
                crate::codec::SchemaId::TelemetryEventV2,
                crate::codec::SchemaId::ReviewResultV1,
                crate::codec::SchemaId::ReviewRequestV1,
            ],
        )
        .context("schema registry")?;
    }
    let fleet = args.generator_config()?;
    let mut generator = Generator::new(fleet.clone())?;
    let progress = ProgressBar::new(u64::from(fleet.days)).with_style(
        ProgressStyle::with_template(
            "{msg:>10} [{bar:40}] {pos}/{len} days, {per_sec} ({eta} left)",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    progress.set_message("generating");
    let mut sent = 0u64;
    let mut tick = |generator: &Generator| progress.set_position(u64::from(generator.days_done()));
    let mut desk = ReviewDesk::default();
    if args.kafka {
        // The broker stamps the records now: any later than that (plus the allowed skew) are
        // refused by `run` as `future`.
        let end_ms = generator.fleet().start_ms + i64::from(fleet.days) * crate::generator::DAY_MS;
        let now_ms = crate::stream::runner::unix_ms();
        if end_ms > now_ms + config.stream.max_clock_skew_s * 1000 {
            let future_days = (end_ms - now_ms) / crate::generator::DAY_MS + 1;
            tracing::warn!(
                future_days,
                "the fleet's last {future_days} days lie in the future: `run` will refuse those records as `future` (an earlier --start-date keeps them)"
            );
        }
        let producer = RecordProducer::new(config, &config.kafka.events_topic)?;
        let started = std::time::Instant::now();
        while let Some(record) = generator.next() {
            if !(args.review_service && desk.withhold(&record.bytes)) {
                producer.send(record.key.as_bytes(), &record.bytes)?;
                sent += 1;
                if let Some(rate) = args.rate
                    && sent.is_multiple_of(1000)
                {
                    // Ahead of the schedule: wait until it catches up.
                    let due = Duration::from_secs_f64(sent as f64 / rate);
                    if let Some(ahead) = due.checked_sub(started.elapsed()) {
                        std::thread::sleep(ahead);
                    }
                }
            }
            tick(&generator);
        }
        producer.flush(Duration::from_secs(120))?;
    } else if let Some(path) = &args.output {
        if fleet.faults.corrupt > 0.0 {
            bail!(
                "corrupt records cannot be stored in an Avro container file; send them with --kafka"
            );
        }
        sent = write_container(path, &mut generator, &mut tick)?;
    } else {
        bail!("say where the records go: --kafka or --output FILE");
    }
    progress.finish_and_clear();
    let truth = generator.truth();
    std::fs::write(&args.truth, serde_json::to_vec_pretty(&truth)?)
        .with_context(|| format!("writing {}", args.truth.display()))?;
    eprintln!(
        "generated {sent} records for {} vehicles over {} days; {} injected regressions; truth in {}",
        fleet.vehicles,
        fleet.days,
        truth.regressions.len(),
        args.truth.display()
    );
    if args.review_service {
        eprintln!(
            "review service: {} critical events held back; answering requests on {}",
            desk.withheld_events(),
            config.kafka.review_requests_topic
        );
        let stop = Arc::new(AtomicBool::new(false));
        // A runtime thread turns SIGINT/SIGTERM into a stop flag: the service finishes its
        // batch, flushes and commits.
        let signals = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let flag = Arc::clone(&stop);
        let mut term = signals.block_on(async { signal(SignalKind::terminate()) })?;
        let mut interrupt = signals.block_on(async { signal(SignalKind::interrupt()) })?;
        signals.spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = interrupt.recv() => {}
            }
            flag.store(true, Ordering::Relaxed);
        });
        let idle = args.review_idle_exit_s.map(Duration::from_secs_f64);
        let summary = serve_reviews(config, &mut desk, idle, &stop)?;
        eprintln!(
            "review service: {} requests, {} answered ({} trips), {} malformed",
            summary.requests,
            summary.answered,
            desk.trips_requested(),
            summary.malformed
        );
    }
    Ok(())
}

/// Writes the records as an Avro object container file with the current schema.
fn write_container(
    path: &PathBuf,
    records: &mut Generator,
    tick: &mut dyn FnMut(&Generator),
) -> anyhow::Result<u64> {
    let schema = codec::parse_schema(codec::SchemaId::CURRENT_TELEMETRY);
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut writer = apache_avro::Writer::new(&schema, BufWriter::new(file));
    let mut count = 0;
    while let Some(GeneratedRecord { bytes, .. }) = records.next() {
        let mut datum = &bytes[codec::HEADER_LEN..];
        let value = apache_avro::from_avro_datum(&schema, &mut datum, None)?;
        writer.append(value)?;
        count += 1;
        tick(records);
    }
    writer.flush()?;
    Ok(count)
}

fn positive_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!(
            "`{text}` is not a positive number of records per second"
        )),
    }
}
