//! Configuration: a TOML file, then `SAFETEL_<SECTION>__<KEY>` environment overrides, validated once.
//!
//! Owns every tunable and its default. Unknown keys are errors that name the key; units are in the
//! names. `kafka.properties` is passed to librdkafka as it is (security.protocol, sasl.*, ssl.*),
//! and its values are never logged.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::detect::EpisodeParams;
use crate::detect::fleet_relative::FleetRelativeParams;

/// The default configuration file, also committed as `config/default.toml`.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");
/// Environment variables with this prefix and a `__` between section and key override the file.
pub const ENV_PREFIX: &str = "SAFETEL_";

/// The most a fact or seen-ids segment holds (bytes of its value): each is one record of the
/// state changelog, and a broker refuses records larger than its `message.max.bytes` (1 MB by
/// default), so a commit of many records splits them. A fact segment holds at least one record
/// (at most `stream.max_record_bytes`).
pub const MAX_SEGMENT_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub stream: StreamConfig,
    pub state: StateConfig,
    pub http: HttpConfig,
    #[serde(default)]
    pub detector: DetectorConfig,
    #[serde(default)]
    pub refit: RefitConfig,
    #[serde(default)]
    pub sampling: SamplingConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub retention: RetentionConfig,
    /// A Confluent-API schema registry (README "Schema registry"); absent: the project's fixed
    /// schema ids.
    #[serde(default)]
    pub schema_registry: Option<SchemaRegistryConfig>,
}

/// `[schema_registry]`: where writer schemas come from and where safetel registers its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaRegistryConfig {
    /// Base URL of the Confluent API, e.g. `http://registry:8081` (Apicurio:
    /// `http://registry:8080/apis/ccompat/v7`).
    pub url: String,
    /// `user:password` for HTTP basic authentication (Confluent's `basic.auth.user.info`).
    #[serde(default)]
    pub basic_auth_user_info: Option<String>,
    /// How safetel's schemas are named in the registry.
    #[serde(default)]
    pub subject_name_strategy: SubjectNameStrategy,
    /// How long one registry call may take.
    #[serde(default = "default_registry_timeout_ms")]
    pub timeout_ms: u64,
    /// How many writer schemas (by id) are kept once fetched, and how many ids the registry did
    /// not know are remembered (each for a minute); past it the longest-kept leaves first.
    #[serde(default = "default_registry_cache_capacity")]
    pub cache_capacity: usize,
}

fn default_registry_timeout_ms() -> u64 {
    5_000
}

fn default_registry_cache_capacity() -> usize {
    1_000
}

/// Subject names, as Confluent's serializers name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectNameStrategy {
    /// `<topic>-value` (the default): one record type per topic. Review results share the
    /// events topic with telemetry, so theirs is `<topic>-<record name>`.
    #[default]
    TopicName,
    /// The record's full name, e.g. `safetel.v1.RegressionAlert`.
    RecordName,
    /// `<topic>-<record full name>`.
    TopicRecordName,
}

/// How long state is kept, in event time behind each partition's watermark (README
/// "Retention"). What leaves is deleted from the store and tombstoned in the changelog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// `false` keeps everything for ever.
    pub enabled: bool,
    /// Facts (the accepted records the refit and the warehouse read) are kept for
    /// `refit.window_days` plus this many days.
    pub facts_margin_days: u32,
    /// Days of vehicle bins kept (the dashboard's and the API's history); older bins leave,
    /// their sums stay in the vehicles' totals.
    pub bin_days: u32,
    /// Alerts in the local store are kept this many days of event time (by their detection).
    pub alert_days: u32,
    /// Model runs kept in the local store, newest first.
    pub model_runs_kept: usize,
    /// A vehicle with no record for this many days is paused (its series is not fed the
    /// silent days) and leaves memory, its state staying in the store until it sends again
    /// (0: never).
    pub vehicle_silent_days: u32,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            enabled: true,
            facts_margin_days: 7,
            bin_days: 400,
            alert_days: 730,
            model_runs_kept: 400,
            vehicle_silent_days: 30,
        }
    }
}

/// Longest span any retention setting may take (100 years).
const MAX_RETENTION_DAYS: u32 = 36_500;

/// The review budget (docs/design.md §4). With `budget` < 1, `run` publishes the trips its policy
/// selects to `kafka.review_requests_topic` and counts critical events only from the review
/// service's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplingConfig {
    /// `full`, `uniform`, `stratified`, `importance` or `adaptive`.
    pub policy: String,
    /// Fraction of trips reviewed, in (0, 1]; 1 reviews every trip (no review loop).
    pub budget: f64,
    /// No trip's probability falls below `floor * budget`.
    pub floor: f64,
    /// Selection is a hash of trip id and this seed.
    pub seed: u64,
    /// Extra share an adaptive key with P(regression) = 1 gets (1 = double).
    pub adaptive_boost: f64,
    /// A review not answered when the partition's watermark is this far (event time) past the
    /// trip's start is given up: the trip counts as unreviewed and its bins may close.
    pub review_timeout_s: i64,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig {
            policy: "full".into(),
            budget: 1.0,
            floor: 0.1,
            seed: 0,
            adaptive_boost: 1.0,
            review_timeout_s: 7 * 86_400,
        }
    }
}

impl SamplingConfig {
    /// The policy, if reviews are budgeted (`None`: every trip counts, no review loop).
    pub fn policy(&self) -> Result<Option<crate::sampling::SamplingPolicy>, ConfigError> {
        let invalid = |field, reason: String| ConfigError::Invalid { field, reason };
        let policy = crate::sampling::Policy::from_name(&self.policy).ok_or_else(|| {
            invalid(
                "sampling.policy",
                format!(
                    "`{}` is not one of full, uniform, stratified, importance, adaptive",
                    self.policy
                ),
            )
        })?;
        if !(self.adaptive_boost.is_finite() && self.adaptive_boost >= 0.0) {
            return Err(invalid("sampling.adaptive_boost", "must be >= 0".into()));
        }
        if self.review_timeout_s <= 0 {
            return Err(invalid(
                "sampling.review_timeout_s",
                "must be positive".into(),
            ));
        }
        let mut sampling =
            crate::sampling::SamplingPolicy::new(policy, self.budget, self.floor, self.seed)
                .map_err(|e| invalid("sampling", e.to_string()))?;
        sampling.adaptive_boost = self.adaptive_boost;
        Ok((policy != crate::sampling::Policy::Full && self.budget < 1.0).then_some(sampling))
    }
}

/// When `safetel run` refits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RefitSchedule {
    /// Every day at this many minutes after midnight UTC.
    Daily { minutes: u32 },
    /// Every this many seconds after the previous refit ended (the first after start-up).
    Every { seconds: u64 },
}

/// The nightly survival refit (docs/design.md §5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RefitConfig {
    pub chains: usize,
    pub warmup: u64,
    pub draws: u64,
    pub seed: u64,
    /// Days of event time, back from the latest event stored, that the refit reads.
    pub window_days: u32,
    /// `HH:MM` (UTC) at which `safetel run` refits every day; empty: never (run `safetel refit`).
    pub schedule_utc: String,
    /// Instead of daily: `safetel run` refits every this many seconds, the first this long after
    /// it starts (0: off). For fleets that want fresher priors, and for tests.
    pub interval_s: u64,
    /// Where the star-schema snapshots go, one folder per snapshot date.
    pub warehouse_dir: PathBuf,
}

impl Default for RefitConfig {
    fn default() -> Self {
        RefitConfig {
            chains: 4,
            warmup: 1000,
            draws: 1000,
            seed: 1,
            window_days: 90,
            schedule_utc: String::new(),
            interval_s: 0,
            warehouse_dir: PathBuf::from("./safetel-warehouse"),
        }
    }
}

impl RefitConfig {
    /// The sampler's settings from these (target acceptance and tree depth at their defaults).
    pub fn sampler_settings(&self) -> crate::refit::sampler::SamplerSettings {
        crate::refit::sampler::SamplerSettings {
            chains: self.chains,
            warmup: self.warmup,
            draws: self.draws,
            seed: self.seed,
            ..Default::default()
        }
    }

    /// When `safetel run` refits on its own, if it does.
    pub fn schedule(&self) -> Result<Option<RefitSchedule>, ConfigError> {
        match (self.schedule_minutes()?, self.interval_s) {
            (None, 0) => Ok(None),
            (Some(minutes), 0) => Ok(Some(RefitSchedule::Daily { minutes })),
            (None, seconds) => Ok(Some(RefitSchedule::Every { seconds })),
            (Some(_), _) => Err(ConfigError::Invalid {
                field: "refit.interval_s",
                reason: "set either refit.schedule_utc (daily) or refit.interval_s, not both"
                    .into(),
            }),
        }
    }

    /// Minutes after midnight UTC of the daily refit, if scheduled.
    pub fn schedule_minutes(&self) -> Result<Option<u32>, ConfigError> {
        if self.schedule_utc.is_empty() {
            return Ok(None);
        }
        let invalid = || ConfigError::Invalid {
            field: "refit.schedule_utc",
            reason: format!("`{}` is not HH:MM (UTC) or empty", self.schedule_utc),
        };
        let (h, m) = self.schedule_utc.split_once(':').ok_or_else(invalid)?;
        let (h, m): (u32, u32) = (
            h.parse().map_err(|_| invalid())?,
            m.parse().map_err(|_| invalid())?,
        );
        if h > 23 || m > 59 {
            return Err(invalid());
        }
        Ok(Some(h * 60 + m))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    pub bootstrap_servers: String,
    pub group_id: String,
    pub events_topic: String,
    pub dlq_topic: String,
    pub regressions_topic: String,
    /// Where `run` asks for trip reviews under a review budget (`[sampling]`).
    #[serde(default = "default_review_requests_topic")]
    pub review_requests_topic: String,
    /// Partition counts used by `safetel topics create`.
    pub events_partitions: i32,
    pub dlq_partitions: i32,
    pub regressions_partitions: i32,
    pub replication_factor: i32,
    /// Partitions of the repartition topic that carries cohort reports (`<group_id>.cohort-reports`):
    /// how many ways cohort aggregation can be split between `run` processes.
    #[serde(default = "default_cohort_partitions")]
    pub cohort_partitions: i32,
    /// The transactional id of this process's state commits: unique per `run` process, the same
    /// across its restarts (a restart then aborts what its predecessor left open). Default:
    /// `<group_id>-<host name>-<hash of state.dir>`.
    #[serde(default)]
    pub transactional_id: Option<String>,
    /// Passed to librdkafka unchanged, for both consumer and producer.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

impl KafkaConfig {
    /// The compacted topic each source partition's state is logged to (one partition each).
    pub fn state_changelog_topic(&self) -> String {
        format!("{}.state-changelog", self.group_id)
    }

    /// The repartition topic: source partitions' cohort reports, partitioned by cohort.
    pub fn cohort_topic(&self) -> String {
        format!("{}.cohort-reports", self.group_id)
    }

    /// The compacted topic each cohort aggregator's state is logged to.
    pub fn cohort_changelog_topic(&self) -> String {
        format!("{}.cohort-changelog", self.group_id)
    }

    /// The compacted topic (one partition) every `run` process of the group publishes its
    /// commits' changes to and reads whole: the group view the pages show
    /// (the engine's view module).
    pub fn group_view_topic(&self) -> String {
        format!("{}.group-view", self.group_id)
    }
}

fn default_cohort_partitions() -> i32 {
    4
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    /// Width of an event-time bin.
    pub bin_width_s: i64,
    /// Records whose event time is more than this behind the partition's watermark go to the DLQ.
    pub allowed_lateness_s: i64,
    /// Larger records go to the DLQ unread.
    pub max_record_bytes: usize,
    /// A record whose event time (or trip start or end) is more than this ahead of its Kafka
    /// record timestamp goes to the DLQ as `future`. 15 minutes: far above what synchronised
    /// clocks (GPS, NTP: well under a second) and producer batching add, below the smallest
    /// time-zone mistake (30 minutes).
    #[serde(default = "default_max_clock_skew_s")]
    pub max_clock_skew_s: i64,
    /// How many of a partition's vehicles must have reached an event time before its watermark
    /// does: one vehicle's clock cannot make another's records late. A partition with fewer
    /// vehicles than this closes no bin: set 1 for a fleet that small.
    #[serde(default = "default_watermark_quorum")]
    pub watermark_quorum: usize,
    /// `/health` reports the pipeline unhealthy while more than this share of the last
    /// `dlq_window_records` records went to the dead-letter topic.
    #[serde(default = "default_max_dlq_share")]
    pub max_dlq_share: f64,
    #[serde(default = "default_dlq_window_records")]
    pub dlq_window_records: usize,
    /// Worker threads the partition tasks run on (docs/design.md §8); default: the machine's
    /// cores. More threads than partitions held leave the extra threads idle.
    #[serde(default = "default_stream_threads")]
    pub threads: usize,
}

/// Most `stream.threads` accepted.
const MAX_STREAM_THREADS: usize = 256;

fn default_stream_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Smallest `message.max.bytes` for safetel's clients: a state changelog record (a segment of
/// at most 256 KiB, plus its key) must fit.
const MIN_MESSAGE_MAX_BYTES: u64 = 300_000;

/// Largest `stream.max_clock_skew_s` accepted: a year.
const MAX_CLOCK_SKEW_S: i64 = 31_536_000;

fn default_max_clock_skew_s() -> i64 {
    900
}

fn default_watermark_quorum() -> usize {
    3
}

fn default_max_dlq_share() -> f64 {
    0.05
}

fn default_dlq_window_records() -> usize {
    10_000
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// RocksDB directory.
    pub dir: PathBuf,
    /// State and source offsets are written together at most this far apart...
    pub commit_interval_ms: u64,
    /// ...or after this many records, whichever comes first.
    pub commit_max_records: usize,
    /// How long shutdown may take to drain, flush and commit before it gives up.
    pub shutdown_deadline_ms: u64,
    /// What the history cache may hold (MiB): vehicles' closed bins, which leave the engine's
    /// memory for the store, read back for the pages (docs/design.md §7).
    pub cache_mb: u32,
}

impl StateConfig {
    /// [`StateConfig::cache_mb`] in bytes.
    pub fn cache_bytes(&self) -> usize {
        self.cache_mb as usize * (1 << 20)
    }
}

/// The change-point detector and its episodes (docs/design.md §3). Bin width and lateness are in
/// `[stream]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorConfig {
    /// Gamma prior of the fleet's mean rate per unit of exposure (shape, rate in hours): the
    /// stream's estimate is (a0 + events) / (b0 + exposure) over the partition's closed bins;
    /// weak (one hour) by default, so that a partition's first day already speaks for itself.
    pub a0: f64,
    pub b0: f64,
    /// How much vehicles' baseline rates vary around the fleet's (Gamma shape: coefficient of
    /// variation 1 / sqrt(shape)), until a refit measures it.
    pub fleet_shape: f64,
    /// How much a cohort's rate may differ from its members' prediction (Gamma shape).
    pub cohort_shape: f64,
    /// Prior probability of a change per bin.
    pub hazard: f64,
    /// A key's own bins enter its baseline only once they are this many bins old.
    pub guard_bins: usize,
    /// Hazard ratio that counts as a regression.
    pub threshold: f64,
    /// The false alarms you can afford: the opening threshold of every series is calibrated to
    /// this many per 1000 vehicle-months (vehicle and cohort alarms together).
    pub false_alarms_per_1000_vehicle_months: f64,
    /// An open episode resolves after `resolve_after_bins` bins in a row below `p_close`.
    pub p_close: f64,
    pub resolve_after_bins: u32,
    /// An open episode publishes an update when its HR median moves by this fraction.
    pub update_hr_change: f64,
    /// Cohort series besides the per-vehicle ones: `firmware` (version) and/or `model`.
    pub cohorts: Vec<String>,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        let p = FleetRelativeParams::default();
        let e = EpisodeParams::default();
        DetectorConfig {
            a0: 0.01,
            b0: 1.0,
            fleet_shape: 8.0,
            cohort_shape: 100.0,
            hazard: p.hazard,
            guard_bins: p.guard_bins,
            threshold: p.threshold,
            false_alarms_per_1000_vehicle_months: 1.0,
            p_close: e.p_close,
            resolve_after_bins: e.resolve_after_bins,
            update_hr_change: e.update_hr_change,
            cohorts: vec!["firmware".into(), "model".into()],
        }
    }
}

impl DetectorConfig {
    pub const COHORT_KINDS: [&'static str; 2] = ["firmware", "model"];

    pub fn params(&self) -> FleetRelativeParams {
        FleetRelativeParams {
            hazard: self.hazard,
            guard_bins: self.guard_bins,
            threshold: self.threshold,
        }
    }

    pub fn episodes(&self) -> EpisodeParams {
        EpisodeParams {
            p_close: self.p_close,
            resolve_after_bins: self.resolve_after_bins,
            update_hr_change: self.update_hr_change,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, reason: String| Err(ConfigError::Invalid { field, reason });
        if let Err(e) = self.params().validate() {
            return invalid("detector", e.to_string());
        }
        let positive = |v: f64| v.is_finite() && v > 0.0;
        for (field, value) in [
            ("detector.a0", self.a0),
            ("detector.b0", self.b0),
            ("detector.cohort_shape", self.cohort_shape),
            (
                "detector.false_alarms_per_1000_vehicle_months",
                self.false_alarms_per_1000_vehicle_months,
            ),
        ] {
            if !positive(value) {
                return invalid(field, format!("must be a positive number, got {value}"));
            }
        }
        let (low, high) = (
            crate::detect::fleet_relative::MIN_FLEET_SHAPE,
            crate::detect::fleet_relative::MAX_FLEET_SHAPE,
        );
        if !(low..=high).contains(&self.fleet_shape) {
            return invalid(
                "detector.fleet_shape",
                format!("must be within [{low}, {high}], got {}", self.fleet_shape),
            );
        }
        if !(self.p_close >= 0.0 && self.p_close < 1.0) {
            return invalid("detector.p_close", "must be within [0, 1)".into());
        }
        if self.resolve_after_bins == 0 {
            return invalid("detector.resolve_after_bins", "must be at least 1".into());
        }
        if !(self.update_hr_change.is_finite() && self.update_hr_change > 0.0) {
            return invalid("detector.update_hr_change", "must be positive".into());
        }
        if let Some(bad) = self
            .cohorts
            .iter()
            .find(|c| !Self::COHORT_KINDS.contains(&c.as_str()))
        {
            return invalid(
                "detector.cohorts",
                format!("`{bad}` is not one of {:?}", Self::COHORT_KINDS),
            );
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address of the API and metrics server; loopback unless you mean otherwise.
    pub listen: String,
    /// `/health/ready` is 503 while the consumer is further behind its input than this.
    #[serde(default = "default_ready_max_lag_records")]
    pub ready_max_lag_records: i64,
    /// How long one request may take before it is answered 408.
    #[serde(default = "default_http_timeout_ms")]
    pub request_timeout_ms: u64,
    /// A connection that sends no request (a first one, or the next on a kept-alive
    /// connection) for this long is closed.
    #[serde(default = "default_http_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// Most connections served at once; more wait to be accepted.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// `run`: pages answer for the whole consumer group, this process's partitions live and
    /// the others' as of their last commit, read from `<group_id>.group-view`
    /// (the engine's view module). Off: each process's pages show only its own partitions.
    #[serde(default = "default_group_view")]
    pub group_view: bool,
}

fn default_group_view() -> bool {
    true
}

fn default_ready_max_lag_records() -> i64 {
    100_000
}

fn default_http_timeout_ms() -> u64 {
    10_000
}

fn default_max_connections() -> usize {
    256
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`.
    #[serde(default)]
    pub format: LogFormat,
    /// A tracing filter such as `info` or `safetel=debug`; `RUST_LOG` wins when set.
    #[serde(default = "default_log_level")]
    pub level: String,
}

fn default_review_requests_topic() -> String {
    "review.requests".into()
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The levels a `log.level` directive may name.
const LOG_LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Whether `filter` is a tracing filter whose every directive names a level: `info`,
/// `safetel=debug,rdkafka=warn` (a bare word that is not a level, such as `verbose`, would be
/// read as a target and silently log nothing of it).
fn is_log_filter(filter: &str) -> bool {
    let level = |l: &str| LOG_LEVELS.contains(&l.trim().to_ascii_lowercase().as_str());
    !filter.trim().is_empty()
        && filter
            .split(',')
            .all(|directive| match directive.rsplit_once('=') {
                Some((target, l)) => !target.trim().is_empty() && level(l),
                None => level(directive),
            })
}

fn default_log_level() -> String {
    "info".into()
}

/// Why a configuration was refused; every variant names the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config is not valid TOML: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("environment variable {var}: {reason}")]
    Env { var: String, reason: String },
    #[error("config field `{field}`: {reason}")]
    Invalid { field: &'static str, reason: String },
}

impl Config {
    /// Loads `path` (or the built-in default), applies `SAFETEL_*__*` overrides from `env`, and
    /// validates the result.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let text = match path {
            Some(path) => std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?,
            None => DEFAULT_TOML.to_string(),
        };
        let mut table: toml::Table = toml::from_str(&text)?;
        for (var, value) in env {
            apply_env_override(&mut table, &var, &value)?;
        }
        let config: Config = table.try_into()?;
        config.validate()?;
        Ok(config)
    }

    /// The built-in default configuration.
    pub fn default_config() -> Config {
        Config::load(None, std::iter::empty()).expect("config/default.toml is valid")
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, reason: &str| {
            Err(ConfigError::Invalid {
                field,
                reason: reason.into(),
            })
        };
        if self.stream.bin_width_s <= 0 {
            return invalid("stream.bin_width_s", "must be positive");
        }
        if let Some(registry) = &self.schema_registry {
            if !(registry.url.starts_with("http://") || registry.url.starts_with("https://")) {
                return invalid("schema_registry.url", "must be an http:// or https:// URL");
            }
            if !(1..=600_000).contains(&registry.timeout_ms) {
                return invalid("schema_registry.timeout_ms", "must be 1..=600000");
            }
            if !(1..=1_000_000).contains(&registry.cache_capacity) {
                return invalid("schema_registry.cache_capacity", "must be 1..=1000000");
            }
            if registry
                .basic_auth_user_info
                .as_deref()
                .is_some_and(|u| !u.contains(':'))
            {
                return invalid(
                    "schema_registry.basic_auth_user_info",
                    "must be user:password",
                );
            }
        }
        self.sampling.policy()?;
        if self.stream.allowed_lateness_s < 0 {
            return invalid("stream.allowed_lateness_s", "must not be negative");
        }
        if !(0..=MAX_CLOCK_SKEW_S).contains(&self.stream.max_clock_skew_s) {
            return invalid(
                "stream.max_clock_skew_s",
                "must be between 0 and 31536000 (a year)",
            );
        }
        if !(1..=1000).contains(&self.stream.watermark_quorum) {
            return invalid("stream.watermark_quorum", "must be between 1 and 1000");
        }
        if !(self.stream.max_dlq_share > 0.0 && self.stream.max_dlq_share <= 1.0) {
            return invalid("stream.max_dlq_share", "must be in (0, 1]");
        }
        if !(1..=10_000_000).contains(&self.stream.dlq_window_records) {
            return invalid(
                "stream.dlq_window_records",
                "must be between 1 and 10000000",
            );
        }
        if !(1..=MAX_STREAM_THREADS).contains(&self.stream.threads) {
            return invalid("stream.threads", "must be between 1 and 256");
        }
        if self.stream.max_record_bytes > MAX_SEGMENT_BYTES {
            return invalid(
                "stream.max_record_bytes",
                "must be at most 262144: a record's bytes travel in one state changelog record",
            );
        }
        if let Some(value) = self.kafka.properties.get("message.max.bytes")
            && value
                .trim()
                .parse::<u64>()
                .is_ok_and(|n| n < MIN_MESSAGE_MAX_BYTES)
        {
            return invalid(
                "kafka.properties.message.max.bytes",
                "must be at least 300000: state changelog records are up to 256 KiB plus their key",
            );
        }
        if self.stream.max_record_bytes < crate::codec::HEADER_LEN {
            return invalid(
                "stream.max_record_bytes",
                "must hold at least the 5-byte header",
            );
        }
        if self.state.commit_interval_ms == 0 {
            return invalid("state.commit_interval_ms", "must be positive");
        }
        if self.state.commit_max_records == 0 {
            return invalid("state.commit_max_records", "must be positive");
        }
        for (field, n) in [
            ("kafka.events_partitions", self.kafka.events_partitions),
            ("kafka.dlq_partitions", self.kafka.dlq_partitions),
            (
                "kafka.regressions_partitions",
                self.kafka.regressions_partitions,
            ),
            ("kafka.replication_factor", self.kafka.replication_factor),
            ("kafka.cohort_partitions", self.kafka.cohort_partitions),
        ] {
            if n < 1 {
                return invalid(field, "must be at least 1");
            }
        }
        if self.http.listen.parse::<SocketAddr>().is_err() {
            return invalid("http.listen", "must be an address such as 127.0.0.1:9464");
        }
        if !is_log_filter(&self.log.level) {
            return invalid(
                "log.level",
                "must be a level (off, error, warn, info, debug, trace) or directives such as `safetel=debug,rdkafka=warn`",
            );
        }
        self.check_ranges()?;
        if self.refit.chains < 2 || self.refit.draws < 4 {
            return invalid("refit.chains", "at least 2 chains and 4 draws");
        }
        self.refit.schedule()?;
        if !(1..=MAX_RETENTION_DAYS).contains(&self.refit.window_days) {
            return invalid("refit.window_days", "must be between 1 and 36500");
        }
        let r = &self.retention;
        for (field, days) in [
            ("retention.vehicle_silent_days", r.vehicle_silent_days),
            ("retention.facts_margin_days", r.facts_margin_days),
            ("retention.bin_days", r.bin_days),
            ("retention.alert_days", r.alert_days),
        ] {
            if days > MAX_RETENTION_DAYS {
                return invalid(field, "must be at most 36500 (100 years)");
            }
        }
        if r.facts_margin_days < 1 {
            return invalid(
                "retention.facts_margin_days",
                "must be at least 1: a trip's record time (its end) may lie a day past events the refit reads",
            );
        }
        if i64::from(r.bin_days) * 86_400 < self.stream.bin_width_s.saturating_mul(2) {
            return invalid(
                "retention.bin_days",
                "must span at least two of stream.bin_width_s",
            );
        }
        if r.vehicle_silent_days > 0
            && i64::from(r.vehicle_silent_days) * 86_400 < self.stream.bin_width_s
        {
            return invalid(
                "retention.vehicle_silent_days",
                "must span at least one of stream.bin_width_s (or be 0: never)",
            );
        }
        if r.vehicle_silent_days > 0
            && (i64::from(r.vehicle_silent_days) * 86_400)
                .saturating_add(self.stream.bin_width_s.saturating_mul(2))
                .saturating_add(self.stream.allowed_lateness_s)
                > i64::from(r.bin_days) * 86_400
        {
            return invalid(
                "retention.vehicle_silent_days",
                "must leave room within retention.bin_days for two bins and stream.allowed_lateness_s (the pause is judged on the bins kept)",
            );
        }
        if r.alert_days < 1 {
            return invalid("retention.alert_days", "must be at least 1");
        }
        if r.model_runs_kept < 1 {
            return invalid("retention.model_runs_kept", "must be at least 1");
        }
        self.detector.validate()
    }

    /// Every numeric setting within a range its unit conversions cannot overflow and the
    /// engine can work with.
    fn check_ranges(&self) -> Result<(), ConfigError> {
        const DAY_S: i64 = 86_400;
        const HOUR_MS: u64 = 3_600_000;
        let within = |field: &'static str, value: i128, low: i128, high: i128| {
            if (low..=high).contains(&value) {
                Ok(())
            } else {
                Err(ConfigError::Invalid {
                    field,
                    reason: format!("{value} is not within {low}..={high}"),
                })
            }
        };
        let (st, state, http, refit, sampling, k) = (
            &self.stream,
            &self.state,
            &self.http,
            &self.refit,
            &self.sampling,
            &self.kafka,
        );
        within(
            "stream.bin_width_s",
            st.bin_width_s.into(),
            1,
            (30 * DAY_S).into(),
        )?;
        within(
            "stream.allowed_lateness_s",
            st.allowed_lateness_s.into(),
            0,
            (365 * DAY_S).into(),
        )?;
        within(
            "state.commit_interval_ms",
            state.commit_interval_ms.into(),
            1,
            HOUR_MS.into(),
        )?;
        within(
            "state.commit_max_records",
            state.commit_max_records as i128,
            1,
            100_000_000,
        )?;
        within("state.cache_mb", state.cache_mb.into(), 1, 1 << 20)?;
        within(
            "state.shutdown_deadline_ms",
            state.shutdown_deadline_ms.into(),
            1,
            HOUR_MS.into(),
        )?;
        within(
            "http.ready_max_lag_records",
            http.ready_max_lag_records.into(),
            0,
            i64::MAX.into(),
        )?;
        within(
            "http.request_timeout_ms",
            http.request_timeout_ms.into(),
            1,
            HOUR_MS.into(),
        )?;
        within(
            "http.idle_timeout_ms",
            http.idle_timeout_ms.into(),
            1,
            HOUR_MS.into(),
        )?;
        within(
            "http.max_connections",
            http.max_connections as i128,
            1,
            65_536,
        )?;
        within("refit.chains", refit.chains as i128, 2, 64)?;
        within("refit.warmup", refit.warmup.into(), 0, 1_000_000)?;
        within("refit.draws", refit.draws.into(), 4, 1_000_000)?;
        within(
            "refit.interval_s",
            refit.interval_s.into(),
            0,
            (366 * DAY_S).into(),
        )?;
        within(
            "sampling.review_timeout_s",
            sampling.review_timeout_s.into(),
            1,
            (100 * 366 * DAY_S).into(),
        )?;
        for (field, n) in [
            ("kafka.events_partitions", k.events_partitions),
            ("kafka.dlq_partitions", k.dlq_partitions),
            ("kafka.regressions_partitions", k.regressions_partitions),
            ("kafka.replication_factor", k.replication_factor),
            ("kafka.cohort_partitions", k.cohort_partitions),
        ] {
            within(field, n.into(), 1, 10_000)?;
        }
        Ok(())
    }

    /// librdkafka settings shared by every client: bootstrap servers plus the pass-through table.
    pub fn client_properties(&self) -> Vec<(String, String)> {
        let mut props = vec![(
            "bootstrap.servers".to_string(),
            self.kafka.bootstrap_servers.clone(),
        )];
        props.extend(
            self.kafka
                .properties
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        props
    }

    /// The configuration as TOML with the values of librdkafka properties that may hold secrets
    /// replaced, for logs and `safetel config`.
    pub fn redacted_toml(&self) -> String {
        let mut shown = self.clone();
        for (key, value) in shown.kafka.properties.iter_mut() {
            if is_secret_property(key) {
                *value = "<redacted>".into();
            }
        }
        // The registry's password; the user stays visible.
        if let Some(registry) = shown.schema_registry.as_mut()
            && let Some(user_info) = registry.basic_auth_user_info.as_mut()
        {
            let user = user_info.split(':').next().unwrap_or_default().to_string();
            *user_info = format!("{user}:<redacted>");
        }
        toml::to_string(&shown).unwrap_or_default()
    }
}

/// Whether a librdkafka property may carry a secret (passwords, keys, tokens).
pub fn is_secret_property(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "secret", "key", "token", "jaas"]
        .iter()
        .any(|word| key.contains(word))
}

/// `SAFETEL_STATE__COMMIT_INTERVAL_MS=500` sets `state.commit_interval_ms`;
/// `SAFETEL_KAFKA__PROPERTIES__SASL_USERNAME=x` sets `kafka.properties."sasl.username"`.
fn apply_env_override(table: &mut toml::Table, var: &str, value: &str) -> Result<(), ConfigError> {
    let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
        return Ok(());
    };
    if !rest.contains("__") {
        return Ok(());
    }
    let env_err = |reason: &str| ConfigError::Env {
        var: var.to_string(),
        reason: reason.to_string(),
    };
    let parts: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
    let (path, key) = match parts.as_slice() {
        [section, key] => (vec![section.clone()], key.clone()),
        [kafka, props, key] if kafka == "kafka" && props == "properties" => {
            (vec![kafka.clone(), props.clone()], key.replace('_', "."))
        }
        _ => return Err(env_err("expected SAFETEL_<SECTION>__<KEY>")),
    };
    let mut node = table;
    for name in &path {
        node = node
            .entry(name.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| env_err("does not name a section"))?;
    }
    let is_property = path.len() == 2;
    let parsed = if is_property {
        toml::Value::String(value.to_string())
    } else if let Ok(v) = value.parse::<i64>() {
        toml::Value::Integer(v)
    } else if let Ok(v) = value.parse::<f64>() {
        toml::Value::Float(v)
    } else if let Ok(v) = value.parse::<bool>() {
        toml::Value::Boolean(v)
    } else {
        toml::Value::String(value.to_string())
    };
    node.insert(key, parsed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn refits_run_daily_or_on_an_interval_but_not_both() {
        let load = |pairs: &[(&str, &str)]| Config::load(None, env(pairs));
        assert_eq!(load(&[]).unwrap().refit.schedule().unwrap(), None);
        let daily = load(&[("SAFETEL_REFIT__SCHEDULE_UTC", "02:30")]).unwrap();
        assert_eq!(
            daily.refit.schedule().unwrap(),
            Some(RefitSchedule::Daily { minutes: 150 })
        );
        let every = load(&[("SAFETEL_REFIT__INTERVAL_S", "3600")]).unwrap();
        assert_eq!(
            every.refit.schedule().unwrap(),
            Some(RefitSchedule::Every { seconds: 3600 })
        );
        let both = load(&[
            ("SAFETEL_REFIT__SCHEDULE_UTC", "02:30"),
            ("SAFETEL_REFIT__INTERVAL_S", "3600"),
        ]);
        assert!(both.unwrap_err().to_string().contains("refit.interval_s"));
    }

    #[test]
    fn default_config_is_valid_and_binds_loopback() {
        let config = Config::default_config();
        let addr: SocketAddr = config.http.listen.parse().unwrap();
        assert!(addr.ip().is_loopback());
        assert_eq!(config.stream.bin_width_s, 86_400);
    }

    #[test]
    fn environment_overrides_file_values_and_properties() {
        let config = Config::load(
            None,
            env(&[
                ("SAFETEL_STATE__COMMIT_INTERVAL_MS", "250"),
                ("SAFETEL_KAFKA__BOOTSTRAP_SERVERS", "broker:9093"),
                ("SAFETEL_KAFKA__PROPERTIES__SASL_PASSWORD", "hunter2"),
                ("SAFETEL_UNRELATED", "ignored: no section separator"),
            ]),
        )
        .unwrap();
        assert_eq!(config.state.commit_interval_ms, 250);
        assert_eq!(config.kafka.bootstrap_servers, "broker:9093");
        assert_eq!(config.kafka.properties["sasl.password"], "hunter2");
        let shown = config.redacted_toml();
        assert!(!shown.contains("hunter2"), "secrets are redacted: {shown}");
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn the_time_rules_and_the_dead_letter_share_are_checked_and_default_when_absent() {
        for (var, value, field) in [
            (
                "SAFETEL_STREAM__MAX_CLOCK_SKEW_S",
                "-1",
                "stream.max_clock_skew_s",
            ),
            (
                "SAFETEL_STREAM__MAX_CLOCK_SKEW_S",
                "99999999999",
                "stream.max_clock_skew_s",
            ),
            (
                "SAFETEL_STREAM__WATERMARK_QUORUM",
                "0",
                "stream.watermark_quorum",
            ),
            ("SAFETEL_STREAM__MAX_DLQ_SHARE", "0", "stream.max_dlq_share"),
            (
                "SAFETEL_STREAM__MAX_DLQ_SHARE",
                "1.5",
                "stream.max_dlq_share",
            ),
            (
                "SAFETEL_STREAM__DLQ_WINDOW_RECORDS",
                "0",
                "stream.dlq_window_records",
            ),
            ("SAFETEL_STREAM__THREADS", "0", "stream.threads"),
            ("SAFETEL_STREAM__THREADS", "257", "stream.threads"),
            (
                "SAFETEL_STREAM__MAX_RECORD_BYTES",
                "1000000",
                "stream.max_record_bytes",
            ),
            (
                "SAFETEL_KAFKA__PROPERTIES__MESSAGE_MAX_BYTES",
                "100000",
                "kafka.properties.message.max.bytes",
            ),
        ] {
            let err = Config::load(None, env(&[(var, value)])).unwrap_err();
            assert!(err.to_string().contains(field), "{var}={value}: {err}");
        }
        // A configuration file from before these keys existed still loads, with the defaults.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.toml");
        let old = DEFAULT_TOML
            .lines()
            .filter(|l| {
                ![
                    "max_clock_skew_s",
                    "watermark_quorum",
                    "max_dlq_share",
                    "dlq_window_records",
                ]
                .iter()
                .any(|k| l.starts_with(k))
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(&path, old).unwrap();
        let stream = Config::load(Some(&path), env(&[])).unwrap().stream;
        assert_eq!(
            (
                stream.max_clock_skew_s,
                stream.watermark_quorum,
                stream.dlq_window_records
            ),
            (900, 3, 10_000)
        );
        assert_eq!(stream.max_dlq_share, 0.05);
        // Without `stream.threads`, the tasks run on as many threads as the machine has cores.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(stream.threads, cores);
    }

    #[test]
    fn retention_settings_are_checked_and_default_as_documented() {
        for (vars, field) in [
            (
                vec![("SAFETEL_RETENTION__FACTS_MARGIN_DAYS", "0")],
                "retention.facts_margin_days",
            ),
            (
                vec![("SAFETEL_RETENTION__BIN_DAYS", "1")],
                "retention.bin_days",
            ),
            (
                vec![("SAFETEL_RETENTION__BIN_DAYS", "99999999")],
                "retention.bin_days",
            ),
            // The pause is judged on the bins kept, and on whole bins.
            (
                vec![("SAFETEL_RETENTION__VEHICLE_SILENT_DAYS", "399")],
                "retention.vehicle_silent_days",
            ),
            (
                vec![
                    ("SAFETEL_STREAM__BIN_WIDTH_S", "604800"),
                    ("SAFETEL_RETENTION__VEHICLE_SILENT_DAYS", "3"),
                ],
                "retention.vehicle_silent_days",
            ),
            (
                vec![
                    ("SAFETEL_STREAM__ALLOWED_LATENESS_S", "31536000"),
                    ("SAFETEL_RETENTION__BIN_DAYS", "100"),
                ],
                "retention.vehicle_silent_days",
            ),
            (
                vec![("SAFETEL_RETENTION__MODEL_RUNS_KEPT", "0")],
                "retention.model_runs_kept",
            ),
        ] {
            let err = Config::load(None, env(&vars)).unwrap_err();
            assert!(err.to_string().contains(field), "{vars:?}: {err}");
        }
        // (What the settings give the engine: `engine::retention`'s tests.)
    }

    #[test]
    fn a_schema_registry_is_optional_and_its_settings_are_checked() {
        assert_eq!(
            Config::default_config().schema_registry,
            None,
            "fixed ids by default"
        );
        let url = ("SAFETEL_SCHEMA_REGISTRY__URL", "https://registry:8081");
        let config = Config::load(None, env(&[url])).unwrap();
        let registry = config.schema_registry.unwrap();
        assert_eq!(
            registry.subject_name_strategy,
            SubjectNameStrategy::TopicName
        );
        assert_eq!(registry.timeout_ms, 5000);
        assert_eq!(registry.cache_capacity, 1000);
        assert_eq!(registry.basic_auth_user_info, None);
        let config = Config::load(
            None,
            env(&[
                url,
                (
                    "SAFETEL_SCHEMA_REGISTRY__SUBJECT_NAME_STRATEGY",
                    "topic_record_name",
                ),
                (
                    "SAFETEL_SCHEMA_REGISTRY__BASIC_AUTH_USER_INFO",
                    "team:secret",
                ),
            ]),
        )
        .unwrap();
        let registry = config.schema_registry.clone().unwrap();
        assert_eq!(
            registry.subject_name_strategy,
            SubjectNameStrategy::TopicRecordName
        );
        assert_eq!(
            registry.basic_auth_user_info.as_deref(),
            Some("team:secret")
        );
        let shown = config.redacted_toml();
        assert!(
            shown.contains("team:<redacted>") && !shown.contains("secret"),
            "{shown}"
        );
        for (vars, field) in [
            (
                vec![("SAFETEL_SCHEMA_REGISTRY__URL", "registry:8081")],
                "schema_registry.url",
            ),
            (
                vec![url, ("SAFETEL_SCHEMA_REGISTRY__TIMEOUT_MS", "0")],
                "schema_registry.timeout_ms",
            ),
            (
                vec![url, ("SAFETEL_SCHEMA_REGISTRY__CACHE_CAPACITY", "0")],
                "schema_registry.cache_capacity",
            ),
            (
                vec![
                    url,
                    (
                        "SAFETEL_SCHEMA_REGISTRY__BASIC_AUTH_USER_INFO",
                        "nopassword",
                    ),
                ],
                "schema_registry.basic_auth_user_info",
            ),
            (
                vec![
                    url,
                    ("SAFETEL_SCHEMA_REGISTRY__SUBJECT_NAME_STRATEGY", "by_topic"),
                ],
                "subject_name_strategy",
            ),
        ] {
            let err = Config::load(None, env(&vars)).unwrap_err();
            assert!(err.to_string().contains(field), "{vars:?}: {err}");
        }
    }

    #[test]
    fn numbers_out_of_range_and_unknown_names_are_errors_that_name_the_field() {
        // The operator's cases: each once overflowed, panicked or was taken silently.
        for (var, value, field) in [
            (
                "SAFETEL_STREAM__ALLOWED_LATENESS_S",
                "10000000000000000",
                "stream.allowed_lateness_s",
            ),
            (
                "SAFETEL_STREAM__BIN_WIDTH_S",
                "10000000000000000",
                "stream.bin_width_s",
            ),
            ("SAFETEL_LOG__LEVEL", "verbose", "log.level"),
            ("SAFETEL_LOG__LEVEL", "safetel=loud", "log.level"),
            ("SAFETEL_LOG__FORMAT", "xml", "format"),
            ("SAFETEL_SAMPLING__POLICY", "random", "sampling.policy"),
            (
                "SAFETEL_STATE__SHUTDOWN_DEADLINE_MS",
                "0",
                "state.shutdown_deadline_ms",
            ),
            (
                "SAFETEL_STATE__COMMIT_INTERVAL_MS",
                "99999999999",
                "state.commit_interval_ms",
            ),
            ("SAFETEL_HTTP__MAX_CONNECTIONS", "0", "http.max_connections"),
            ("SAFETEL_HTTP__IDLE_TIMEOUT_MS", "0", "http.idle_timeout_ms"),
            (
                "SAFETEL_HTTP__READY_MAX_LAG_RECORDS",
                "-1",
                "http.ready_max_lag_records",
            ),
            (
                "SAFETEL_SAMPLING__REVIEW_TIMEOUT_S",
                "9000000000000000",
                "sampling.review_timeout_s",
            ),
            ("SAFETEL_REFIT__CHAINS", "100000", "refit.chains"),
            (
                "SAFETEL_KAFKA__EVENTS_PARTITIONS",
                "2000000",
                "kafka.events_partitions",
            ),
        ] {
            let err = Config::load(None, env(&[(var, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(field), "{var}={value}: {err}");
        }
        // What is fine stays fine.
        for (var, value) in [
            ("SAFETEL_LOG__LEVEL", "warn"),
            ("SAFETEL_LOG__LEVEL", "safetel=debug,rdkafka=WARN"),
            ("SAFETEL_LOG__FORMAT", "json"),
            ("SAFETEL_STREAM__ALLOWED_LATENESS_S", "31536000"),
        ] {
            Config::load(None, env(&[(var, value)]))
                .unwrap_or_else(|e| panic!("{var}={value}: {e}"));
        }
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_field() {
        let err = Config::load(None, env(&[("SAFETEL_STATE__COMMIT_INTERVAL", "5")])).unwrap_err();
        assert!(err.to_string().contains("commit_interval"), "{err}");
        let err = Config::load(None, env(&[("SAFETEL_STREAM__BIN_WIDTH_S", "0")])).unwrap_err();
        assert!(err.to_string().contains("stream.bin_width_s"), "{err}");
        let err = Config::load(None, env(&[("SAFETEL_HTTP__LISTEN", "nowhere")])).unwrap_err();
        assert!(err.to_string().contains("http.listen"), "{err}");
        let err = Config::load(None, env(&[("SAFETEL_DETECTOR__HAZARD", "1.5")])).unwrap_err();
        assert!(err.to_string().contains("`hazard`"), "{err}");
        let err = Config::load(None, env(&[("SAFETEL_DETECTOR__P_CLOSE", "1.5")])).unwrap_err();
        assert!(err.to_string().contains("detector.p_close"), "{err}");
        let err = Config::load(None, env(&[("SAFETEL_DETECTOR__FLEET_SHAPE", "0")])).unwrap_err();
        assert!(err.to_string().contains("detector.fleet_shape"), "{err}");
        // The opening probability is no longer a setting: it follows from the budget.
        let err = Config::load(None, env(&[("SAFETEL_DETECTOR__P_OPEN", "0.9")])).unwrap_err();
        assert!(err.to_string().contains("p_open"), "{err}");
        let config = Config::load(
            None,
            env(&[(
                "SAFETEL_DETECTOR__FALSE_ALARMS_PER_1000_VEHICLE_MONTHS",
                "2",
            )]),
        )
        .unwrap();
        assert_eq!(config.detector.false_alarms_per_1000_vehicle_months, 2.0);
    }
}
