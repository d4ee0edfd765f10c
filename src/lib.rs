//! safetel: a streaming safety-telemetry processor for vehicle fleets.
//!
//! Vehicles publish telemetry to Kafka; safetel decodes and validates it, keeps per-vehicle
//! event-time bins of counts and exposure in RocksDB (atomically with the source offsets), sends
//! bad records to a dead-letter topic, and serves its state over HTTP. See docs/design.md.
//!
//! # Layout
//! - [`model`]: event types, hazard classes, validation. Pure.
//! - [`codec`]: Avro with Confluent framing; fast path and schema resolution; the table of
//!   writer schemas by id ([`codec::writers`]). Pure, but for the schema source the edge installs.
//! - [`registry`]: the schema registry's REST API (IO edge).
//! - [`generator`]: the seeded fleet simulator and fault injection. Pure.
//! - [`detect`]: change-point detection for one series against what the fleet predicts, its
//!   false-alarm-calibrated thresholds, hazard ratios; the earlier self-baseline detector. Pure.
//! - [`hashing`]: stable id hashes and FNV hashers. Pure.
//! - [`partition_id`]: which input partition (a source partition or a cohort aggregator), and
//!   the one number it is written down under. Pure.
//! - [`dead_letter`]: why a record is dead-lettered, and the recent dead-letter share. Pure.
//! - [`engine`]: per-record processing and hot state, a coordinator of parts with one job each:
//!   [`engine::admission`] (size, decode, validity, claimed times, lateness, duplicates,
//!   watermark) with [`engine::clocks`], the vehicles' bins and partitions' positions
//!   ([`engine::state`]), [`engine::reviews`] (the review desk), [`engine::cohort_router`] and
//!   [`engine::cohorts`] (cohort reports and aggregation), [`engine::detection`] (bin closes)
//!   feeding [`engine::series`] (a key's change-point series and their stored form),
//!   [`engine::outbox`] (what the next commit writes) handed over as an [`engine::delta`],
//!   [`engine::restored`] (what a store hands back), [`engine::retention`] with
//!   [`engine::departures`] (vehicles out of memory), [`engine::ledger`]
//!   (rebuilding facts from the input); [`engine::view`] the group view's records and the
//!   state a reader builds from them. No IO, threads or clocks of its own; no two of its
//!   modules import each other.
//! - [`stream`]: the edge that runs the engine: [`stream::runner`] drives it from any source to
//!   any sink with the commit protocol, [`stream::health`] judges the run, [`stream::memory`]
//!   is the in-process source and sinks.
//! - [`sampling`]: review-budget policies and Horvitz-Thompson estimates. Pure.
//! - [`evaluate`]: scoring alerts against the generator's ground truth. Pure.
//! - [`refit`]: the Weibull survival model, NUTS, diagnostics, the posterior predictive check,
//!   and the model run's record. Pure.
//! - [`dashboard`]: the pages' data (one `Serialize` struct per page, which is its JSON), HTML
//!   rendered from it, SVG charts, and [`dashboard::coverage`] (how much of the group a page
//!   covers). Pure.
//! - [`nightly`]: the refit job on the store: priors, the model run, the snapshot (IO edge).
//! - [`warehouse`]: star-schema Parquet snapshots (IO edge).
//! - [`store`]: RocksDB state store (IO edge): [`store::codec`] how each column family's values
//!   are stored (one `Family` each, with its version byte), [`store::keys`] their keys.
//! - [`kafka`]: consumer, producers, admin, the group view's reader (IO edge).
//! - [`http`]: API and metrics server, the dashboard's pages as routes (IO edge).
//! - [`metrics`]: Prometheus metric names in one place.
//! - [`config`]: TOML + environment configuration.
//! - `cli`: one module per subcommand.

pub mod codec;
pub mod config;
pub mod dashboard;
pub mod dead_letter;
pub mod detect;
pub mod engine;
pub mod evaluate;
pub mod generator;
pub mod hashing;
pub mod http;
pub mod kafka;
pub mod metrics;
pub mod model;
pub mod nightly;
pub mod partition_id;
pub mod refit;
pub mod registry;
pub mod sampling;
pub mod store;
pub mod stream;
pub mod warehouse;

mod cli;

pub use cli::main as cli_main;
