//! Helpers shared by the integration tests: the `safetel` binary as a child process, a tiny HTTP
//! client, and totals computed independently of the engine (records decoded by `apache-avro`).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use apache_avro::types::Value;
use serde_json::Value as Json;

/// The broker started by `scripts/test` (see scripts/kafka).
pub fn bootstrap() -> String {
    std::env::var("SAFETEL_TEST_KAFKA")
        .expect("SAFETEL_TEST_KAFKA is unset: run the Kafka tests through scripts/test")
}

/// Topic and group names no other test uses.
#[derive(Clone)]
pub struct Names {
    pub events: String,
    pub dlq: String,
    pub regressions: String,
    pub review_requests: String,
    pub group: String,
}

impl Names {
    pub fn unique(prefix: &str) -> Names {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let tag = format!("{prefix}-{}-{nanos}", std::process::id());
        Names {
            events: format!("{tag}.events"),
            dlq: format!("{tag}.dlq"),
            regressions: format!("{tag}.regressions"),
            review_requests: format!("{tag}.reviews"),
            group: format!("{tag}.group"),
        }
    }
}

/// A plain consumer of `topic` from its beginning, in a group of its own.
pub fn topic_reader(names: &Names, topic: &str) -> rdkafka::consumer::BaseConsumer {
    use rdkafka::consumer::Consumer;
    let consumer: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", format!("{}-reader-{topic}", names.group))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    consumer
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `safetel` with the environment pointing it at the test broker, topics and a state folder.
pub fn safetel(names: &Names, state_dir: &Path, port: u16) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_safetel"));
    cmd.env("SAFETEL_KAFKA__BOOTSTRAP_SERVERS", bootstrap())
        .env("SAFETEL_KAFKA__EVENTS_TOPIC", &names.events)
        .env("SAFETEL_KAFKA__DLQ_TOPIC", &names.dlq)
        .env("SAFETEL_KAFKA__REGRESSIONS_TOPIC", &names.regressions)
        .env(
            "SAFETEL_KAFKA__REVIEW_REQUESTS_TOPIC",
            &names.review_requests,
        )
        .env("SAFETEL_KAFKA__GROUP_ID", &names.group)
        .env("SAFETEL_STATE__DIR", state_dir)
        .env("SAFETEL_HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    cmd
}

pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// GET on 127.0.0.1:port; (status code, body). None while nothing listens.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let code = response.split(' ').nth(1)?.parse().ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        unchunk(body)
    } else {
        body.to_string()
    };
    Some((code, body))
}

fn unchunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

pub fn get_json(port: u16, path: &str) -> Option<Json> {
    let (code, body) = http_get(port, path)?;
    (code == 200)
        .then(|| serde_json::from_str(&body).ok())
        .flatten()
}

/// Polls `check` until it returns Some, or panics after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A running `safetel run`.
pub struct Running {
    pub child: Child,
    pub port: u16,
}

impl Running {
    pub fn start(names: &Names, state_dir: &Path, extra_env: &[(&str, &str)]) -> Running {
        let port = free_port();
        let mut cmd = safetel(names, state_dir, port);
        cmd.arg("run").envs(extra_env.iter().copied());
        let child = cmd.spawn().unwrap();
        let mut running = Running { child, port };
        wait_for("the HTTP API", Duration::from_secs(30), || {
            if let Ok(Some(status)) = running.child.try_wait() {
                panic!("safetel run exited early: {status}");
            }
            http_get(port, "/health").map(|_| ())
        });
        running
    }

    /// Records committed to the state store so far (sum of next offsets; topics start at 0).
    pub fn committed_records(&self) -> Option<i64> {
        get_json(self.port, "/api/status")?["run"]["committed_records"].as_i64()
    }

    pub fn wait_committed(&self, records: i64, timeout: Duration) {
        wait_for(&format!("{records} committed records"), timeout, || {
            (self.committed_records()? >= records).then_some(())
        });
    }

    /// SIGTERM, then expects a clean exit.
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let status = wait_for("shutdown", Duration::from_secs(60), || {
            self.child.try_wait().unwrap()
        });
        assert!(
            status.success(),
            "safetel run exited with {status} after SIGTERM"
        );
    }

    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Per-vehicle totals as the test computes them, with its own reading of the rules.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Totals {
    pub trips: u64,
    pub exposure_ms: u64,
    pub safety_events: u64,
    pub critical: u64,
    pub disengagements: u64,
    pub mode_transitions: u64,
}

pub fn field<'a>(fields: &'a [(String, Value)], name: &str) -> &'a Value {
    &fields
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no field {name}"))
        .1
}

fn symbol(value: &Value) -> &str {
    match value {
        Value::Enum(_, s) => s,
        other => panic!("expected an enum, got {other:?}"),
    }
}

/// Decodes framed records with `apache-avro` (not safetel's decoder) and sums them per vehicle.
pub fn independent_totals<'a>(
    records: impl IntoIterator<Item = &'a [u8]>,
) -> BTreeMap<String, Totals> {
    let schema =
        apache_avro::Schema::parse_str(include_str!("../../schemas/telemetry_event.avsc")).unwrap();
    let mut totals: BTreeMap<String, Totals> = BTreeMap::new();
    for bytes in records {
        assert_eq!(&bytes[..5], &[0, 0, 0, 0, 2]);
        let mut datum = &bytes[5..];
        let Value::Record(top) = apache_avro::from_avro_datum(&schema, &mut datum, None).unwrap()
        else {
            panic!()
        };
        let Value::String(vehicle) = field(&top, "vehicle_id") else {
            panic!()
        };
        let t = totals.entry(vehicle.clone()).or_default();
        let Value::Union(branch, inner) = field(&top, "payload") else {
            panic!()
        };
        let Value::Record(f) = inner.as_ref() else {
            panic!()
        };
        match branch {
            0 => {
                let Value::Double(duration_s) = field(f, "duration_s") else {
                    panic!()
                };
                t.trips += 1;
                t.exposure_ms += (duration_s * 1000.0).round() as u64;
            }
            1 => {
                t.safety_events += 1;
                let kind = symbol(field(f, "event_type"));
                let severity = symbol(field(f, "severity"));
                if matches!(kind, "NEAR_MISS" | "COLLISION")
                    || matches!(severity, "HIGH" | "CRITICAL")
                {
                    t.critical += 1;
                }
            }
            _ => {
                t.mode_transitions += 1;
                let (from, to, reason) = (
                    symbol(field(f, "from_mode")),
                    symbol(field(f, "to_mode")),
                    symbol(field(f, "reason")),
                );
                if from == "AUTONOMOUS" && to == "MANUAL" && reason != "PLANNED" {
                    t.disengagements += 1;
                }
            }
        }
    }
    totals
}

/// The same totals as `safetel run` serves them on /api/vehicles/{id}.
pub fn served_totals(port: u16, vehicle: &str) -> Totals {
    let v = get_json(port, &format!("/api/vehicles/{vehicle}"))
        .unwrap_or_else(|| panic!("no vehicle {vehicle}"));
    let t = &v["totals"];
    let n = |k: &str| t[k].as_u64().unwrap();
    Totals {
        trips: n("trips"),
        exposure_ms: n("exposure_ms"),
        safety_events: n("safety_events"),
        critical: n("critical"),
        disengagements: n("disengagements"),
        mode_transitions: n("mode_transitions"),
    }
}

/// One alert as JSON, read field by field from the Avro datum.
pub fn decode_alert(bytes: &[u8], schema: &apache_avro::Schema) -> serde_json::Value {
    decode_alert_framed_with(bytes, schema, 3)
}

/// An alert framed with schema id `id` (the registry's, where there is one).
pub fn decode_alert_framed_with(
    bytes: &[u8],
    schema: &apache_avro::Schema,
    id: u32,
) -> serde_json::Value {
    let mut header = vec![0];
    header.extend(id.to_be_bytes());
    assert_eq!(
        &bytes[..5],
        &header[..],
        "Confluent framing, schema id {id}"
    );
    let mut datum = &bytes[5..];
    let Value::Record(f) = apache_avro::from_avro_datum(schema, &mut datum, None).unwrap() else {
        panic!("not a record")
    };
    assert!(datum.is_empty(), "nothing after the datum");
    let text = |name| match field(&f, name) {
        Value::String(s) => serde_json::json!(s),
        Value::Enum(_, s) => serde_json::json!(s),
        other => panic!("{name}: {other:?}"),
    };
    let number = |name| match field(&f, name) {
        Value::Double(d) => serde_json::json!(d),
        Value::Long(l) | Value::TimestampMillis(l) => serde_json::json!(l),
        other => panic!("{name}: {other:?}"),
    };
    let mut out = serde_json::Map::new();
    for name in [
        "alert_id",
        "status",
        "key_kind",
        "key",
        "hazard_class",
        "prior_source",
        "sampling_policy",
    ] {
        out.insert(name.into(), text(name));
    }
    for name in [
        "onset_estimate",
        "detected_at",
        "p_regression",
        "hr_median",
        "hr_low",
        "hr_high",
        "rate_before",
        "rate_after",
        "events_before",
        "events_after",
        "exposure_before",
        "exposure_after",
    ] {
        out.insert(name.into(), number(name));
    }
    serde_json::Value::Object(out)
}

/// Every message (key, payload) of the consumer's topic, read until it stays quiet for
/// `quiet` (or `timeout` passes).
pub fn read_until_quiet(
    consumer: &rdkafka::consumer::BaseConsumer,
    quiet: Duration,
    timeout: Duration,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    use rdkafka::message::Message;
    let deadline = Instant::now() + timeout;
    let mut quiet_since = Instant::now();
    let mut out = Vec::new();
    while quiet_since.elapsed() < quiet && Instant::now() < deadline {
        if let Some(message) = consumer.poll(Duration::from_millis(500)) {
            let message = message.unwrap();
            out.push((
                message.key().unwrap_or_default().to_vec(),
                message.payload().unwrap_or_default().to_vec(),
            ));
            quiet_since = Instant::now();
        }
    }
    out
}

/// The same fleet through the engine in process: the alerts `run` must publish.
pub fn in_process_alerts(fleet: safetel::generator::GeneratorConfig) -> Vec<serde_json::Value> {
    let config = safetel::config::Config::default_config();
    let dir = tempfile::tempdir().unwrap();
    let mut store = safetel::store::Store::open(dir.path()).unwrap();
    let mut engine = safetel::engine::Engine::new(
        config.stream.clone(),
        &config.detector,
        safetel::engine::RestoredState::default(),
        safetel::metrics::Metrics::new(),
    )
    .unwrap();
    let records = safetel::generator::Generator::new(fleet)
        .unwrap()
        .map(|r| (r.key, r.bytes));
    let (_, alerts) =
        safetel::stream::memory::run_in_memory(&mut engine, records, 4, &mut store, 20_000)
            .unwrap();
    alerts
        .alerts
        .iter()
        .map(|a| serde_json::to_value(a).unwrap())
        .collect()
}

/// A broker of a test's own, started with the project's script in its own folder (so it can be
/// stopped and restarted without touching the shared one); stopped, storage deleted, on drop.
pub struct OwnBroker {
    pub home: std::path::PathBuf,
    pub bootstrap: String,
    env: Vec<(String, String)>,
}

impl OwnBroker {
    fn script(home: &Path, env: &[(String, String)], args: &[&str]) -> String {
        let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka"))
            .args(args)
            .env("SAFETEL_KAFKA_HOME", home)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "scripts/kafka {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        stdout.trim().lines().last().unwrap_or_default().to_string()
    }

    /// Starts it in `home` with `env` for scripts/kafka (such as `SAFETEL_KAFKA_SASL_USERS`).
    pub fn start(home: &Path, env: &[(&str, &str)]) -> OwnBroker {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let bootstrap = OwnBroker::script(home, &env, &["start"]);
        OwnBroker {
            home: home.to_path_buf(),
            bootstrap,
            env,
        }
    }

    /// Stops the broker and keeps its port and storage for [`OwnBroker::restart`].
    pub fn stop_keeping_storage(&self) {
        OwnBroker::script(&self.home, &self.env, &["stop", "--keep"]);
    }

    pub fn restart(&self) {
        let bootstrap = OwnBroker::script(&self.home, &self.env, &["start"]);
        assert_eq!(bootstrap, self.bootstrap, "same port");
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka"))
            .arg("stop")
            .env("SAFETEL_KAFKA_HOME", &self.home)
            .output();
    }
}

/// The value of one series (`name{labels}` exactly as exposed) in Prometheus' text format.
pub fn metric_value(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

/// Produces `records` (key, bytes) to `topic` with a client made from `client` settings,
/// waiting for room when the queue is full, and waits until all are delivered.
pub fn produce(client: &[(&str, &str)], topic: &str, records: &[(String, Vec<u8>)]) {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let mut config = rdkafka::ClientConfig::new();
    for (k, v) in client {
        config.set(*k, *v);
    }
    let producer: BaseProducer = config.create().unwrap();
    for (key, bytes) in records {
        let mut record = BaseRecord::to(topic).key(key).payload(bytes);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((e, back)) => {
                    assert_eq!(
                        e.rdkafka_error_code(),
                        Some(rdkafka::types::RDKafkaErrorCode::QueueFull),
                        "{e}"
                    );
                    record = back;
                    producer.poll(Duration::from_millis(50));
                }
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(60)).unwrap();
}

/// Alerts on `names.regressions` (read until quiet for 5 s), by id: every copy of an id must be
/// the same alert.
pub fn alerts_by_id(
    names: &Names,
    timeout: Duration,
) -> std::collections::BTreeMap<String, serde_json::Value> {
    let schema =
        apache_avro::Schema::parse_str(include_str!("../../schemas/regression_alert.avsc"))
            .unwrap();
    let consumer = topic_reader(names, &names.regressions);
    let mut by_id = std::collections::BTreeMap::new();
    for (_, payload) in read_until_quiet(&consumer, Duration::from_secs(5), timeout) {
        let alert = decode_alert(&payload, &schema);
        let id = alert["alert_id"].as_str().unwrap().to_string();
        if let Some(earlier) = by_id.get(&id) {
            assert_eq!(earlier, &alert, "a duplicate of {id} differs");
        }
        by_id.insert(id, alert);
    }
    by_id
}

/// The schema registry `scripts/test` starts (`scripts/registry start`, with authentication):
/// its URL and the `user:password` it asks for.
pub struct TestRegistry {
    pub url: String,
    pub user_info: String,
}

impl TestRegistry {
    pub fn from_env() -> TestRegistry {
        TestRegistry {
            url: std::env::var("SAFETEL_TEST_REGISTRY").expect(
                "SAFETEL_TEST_REGISTRY: the registry's URL (scripts/test starts one: scripts/registry start)",
            ),
            user_info: std::env::var("SAFETEL_TEST_REGISTRY_USER_INFO").expect(
                "SAFETEL_TEST_REGISTRY_USER_INFO: the user:password the registry asks for (scripts/test sets it and starts the registry with it)",
            ),
        }
    }

    /// The environment that points `safetel` at it.
    pub fn env(&self) -> [(&'static str, &str); 2] {
        [
            ("SAFETEL_SCHEMA_REGISTRY__URL", self.url.as_str()),
            (
                "SAFETEL_SCHEMA_REGISTRY__BASIC_AUTH_USER_INFO",
                self.user_info.as_str(),
            ),
        ]
    }

    pub fn client(&self) -> safetel::registry::RegistryClient {
        safetel::registry::RegistryClient::new(&safetel::config::SchemaRegistryConfig {
            url: self.url.clone(),
            basic_auth_user_info: Some(self.user_info.clone()),
            subject_name_strategy: Default::default(),
            timeout_ms: 5000,
            cache_capacity: 1000,
        })
    }
}

/// A state folder's store as `safetel inspect` shows it, less what depends on how commits fell
/// rather than on the state: how far the aggregators read the repartition topic, and the alerts
/// each process's store keeps of those it published (compare the topic instead).
pub fn inspect_state(names: &Names, state: &Path) -> Json {
    let mut snapshot: Json = serde_json::from_str(&run_ok(safetel(names, state, 0).args([
        "inspect",
        "--state-dir",
        state.to_str().unwrap(),
    ])))
    .unwrap();
    let fields = snapshot.as_object_mut().unwrap();
    fields.remove("cohort_report_offsets");
    fields.remove("alerts");
    snapshot
}

/// `/api/status`'s `run`.
pub fn run_status(run: &Running) -> Json {
    get_json(run.port, "/api/status").unwrap_or_default()["run"].clone()
}

/// The source partitions the group assigned `run`.
pub fn assigned_partitions(run: &Running) -> Vec<i64> {
    run_status(run)["assigned_partitions"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p.as_i64()).collect())
        .unwrap_or_default()
}

/// Until `run` has committed nothing new for `quiet`.
pub fn wait_quiet(run: &Running, quiet: Duration, timeout: Duration) {
    let mut last = (run_status(run)["commits"].clone(), Instant::now());
    wait_for("the process to go quiet", timeout, || {
        let commits = run_status(run)["commits"].clone();
        if commits != last.0 {
            last = (commits, Instant::now());
        }
        (last.1.elapsed() > quiet).then_some(())
    });
}

/// Two stores (as [`inspect_state`] shows them) are equal: part by part first, so that a
/// difference says where it is, then whole.
pub fn assert_same_store(expected: &Json, got: &Json) {
    for (part, what) in [
        ("facts", "same facts"),
        ("partitions", "same offsets, watermarks and seen ids"),
        ("vehicles", "same per-vehicle bins"),
        ("cohort_aggregators", "same cohort aggregation progress"),
        ("series", "same change-point state, vehicles and cohorts"),
    ] {
        assert_eq!(expected[part], got[part], "{what}");
    }
    assert_eq!(expected, got, "the whole store");
}
