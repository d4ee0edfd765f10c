//! Security basics against a broker of the test's own whose client listener takes only
//! SASL_PLAINTEXT with PLAIN (scripts/kafka with SAFETEL_KAFKA_SASL_USERS): the SASL settings in
//! `[kafka.properties]` (here from the environment) reach librdkafka, so `topics create` and `run`
//! work with the right password; with a wrong one `run` keeps its state, says why in its log and
//! answers 503 on /health; and neither password appears in any log line or in `safetel config`.
//! Likewise for TLS: against a broker whose client listener takes only TLS (a certificate from a
//! throwaway CA), `ssl.*` settings reach librdkafka and `run` consumes; without them, nothing.
#![cfg(feature = "kafka-tests")]

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use safetel::generator::{Generator, GeneratorConfig};

const TIMEOUT: Duration = Duration::from_secs(180);

/// The environment that points safetel at the SASL listener as `user` with `password`.
fn sasl_env<'a>(bootstrap: &'a str, user: &'a str, password: &'a str) -> [(&'a str, &'a str); 5] {
    [
        ("SAFETEL_KAFKA__BOOTSTRAP_SERVERS", bootstrap),
        (
            "SAFETEL_KAFKA__PROPERTIES__SECURITY_PROTOCOL",
            "SASL_PLAINTEXT",
        ),
        ("SAFETEL_KAFKA__PROPERTIES__SASL_MECHANISM", "PLAIN"),
        ("SAFETEL_KAFKA__PROPERTIES__SASL_USERNAME", user),
        ("SAFETEL_KAFKA__PROPERTIES__SASL_PASSWORD", password),
    ]
}

/// `safetel run` with its log (debug level) going to `log`.
fn run_logged(names: &Names, state: &Path, port: u16, env: &[(&str, &str)], log: &Path) -> Child {
    safetel(names, state, port)
        .envs(env.iter().copied())
        .env("RUST_LOG", "debug")
        .arg("run")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

#[test]
fn sasl_settings_reach_librdkafka_and_passwords_never_reach_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let password = format!("pw-{}-Secret", std::process::id());
    let users = format!("safetel:{password}");
    let broker = OwnBroker::start(
        &dir.path().join("kafka"),
        &[("SAFETEL_KAFKA_SASL_USERS", users.as_str())],
    );
    let names = Names::unique("sasl");
    let env = sasl_env(&broker.bootstrap, "safetel", &password);

    // Without the SASL settings the broker does not answer us; with them, topics are created.
    let mut plain = safetel(&names, &dir.path().join("unused"), 0);
    plain.env("SAFETEL_KAFKA__BOOTSTRAP_SERVERS", &broker.bootstrap);
    let out = plain.args(["topics", "create"]).output().unwrap();
    assert!(!out.status.success(), "PLAINTEXT against a SASL listener");
    assert!(String::from_utf8_lossy(&out.stderr).contains("security.protocol"));
    let created = run_ok(
        safetel(&names, &dir.path().join("unused"), 0)
            .envs(env)
            .args(["topics", "create"]),
    );
    assert!(
        created.contains(&format!("{}: created", names.events)),
        "{created}"
    );

    let shown = run_ok(
        safetel(&names, &dir.path().join("unused"), 0)
            .envs(env)
            .arg("config"),
    );
    assert!(shown.contains("\"sasl.username\" = \"safetel\""), "{shown}");
    assert!(
        shown.contains("<redacted>") && !shown.contains(&password),
        "{shown}"
    );

    let records = produce_small_fleet(
        &names.events,
        &[
            ("bootstrap.servers", broker.bootstrap.as_str()),
            ("security.protocol", "SASL_PLAINTEXT"),
            ("sasl.mechanism", "PLAIN"),
            ("sasl.username", "safetel"),
            ("sasl.password", password.as_str()),
        ],
        3,
    );

    // The right password: everything is consumed and counted.
    let port = free_port();
    let log = dir.path().join("run.log");
    let mut run = run_logged(&names, &dir.path().join("state"), port, &env, &log);
    wait_for("all records committed", TIMEOUT, || {
        let status = get_json(port, "/api/status")?;
        (status["run"]["committed_records"].as_i64()? >= records.len() as i64).then_some(())
    });
    let expected = independent_totals(records.iter().map(|(_, b)| b.as_slice()));
    for (vehicle, totals) in &expected {
        assert_eq!(&served_totals(port, vehicle), totals, "{vehicle}");
    }
    assert_eq!(http_get(port, "/health").unwrap().0, 200);
    Command::new("kill")
        .args(["-TERM", &run.id().to_string()])
        .status()
        .unwrap();
    assert!(run.wait().unwrap().success());

    // A wrong password: run stays up with its state, logs why, and is unhealthy.
    let wrong = format!("wrong-{password}");
    let bad_env = sasl_env(&broker.bootstrap, "safetel", &wrong);
    let bad_port = free_port();
    let bad_log = dir.path().join("bad.log");
    let mut bad = run_logged(
        &names,
        &dir.path().join("state"),
        bad_port,
        &bad_env,
        &bad_log,
    );
    // Not ready from the start (nothing assigned), and then with the broker's refusal named.
    let mut last_answer = None;
    let started = std::time::Instant::now();
    while !last_answer
        .as_ref()
        .is_some_and(|(code, body): &(u16, String)| *code == 503 && body.contains("uthentication"))
    {
        assert!(
            started.elapsed() < TIMEOUT,
            "readiness did not name the refused authentication within {TIMEOUT:?}; it last answered {last_answer:?}; the log ends: {}",
            log_tail(&bad_log)
        );
        std::thread::sleep(Duration::from_millis(100));
        last_answer = http_get(bad_port, "/health/ready").or(last_answer);
    }
    let served = get_json(bad_port, "/api/vehicles").unwrap();
    assert_eq!(
        served["vehicles"].as_array().unwrap().len(),
        expected.len(),
        "the state restored from disk is served while the broker refuses us"
    );
    bad.kill().unwrap();
    bad.wait().unwrap();

    let (good_log, bad_log) = (
        std::fs::read_to_string(&log).unwrap(),
        std::fs::read_to_string(&bad_log).unwrap(),
    );
    assert!(
        bad_log.contains("Authentication failed"),
        "the log says why: {bad_log}"
    );
    for text in [&good_log, &bad_log] {
        assert!(
            text.contains("<redacted>"),
            "the configuration is logged, redacted"
        );
        assert!(!text.contains(&password), "a password in the log");
    }
    assert!(!bad_log.contains(&wrong));
    drop(broker);
}

/// The last lines of a log that are not librdkafka's configuration warnings.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.contains("CONFWARN")).collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// A small fleet produced with `client` settings (the same the safetel side gets).
fn produce_small_fleet(topic: &str, client: &[(&str, &str)], seed: u64) -> Vec<(String, Vec<u8>)> {
    let fleet = GeneratorConfig {
        seed,
        vehicles: 40,
        days: 7,
        ..Default::default()
    };
    let records: Vec<(String, Vec<u8>)> = Generator::new(fleet)
        .unwrap()
        .map(|r| (r.key, r.bytes))
        .collect();
    produce(client, topic, &records);
    records
}

#[test]
fn tls_settings_reach_librdkafka() {
    let dir = tempfile::tempdir().unwrap();
    let certificates = dir.path().join("certificates");
    let broker = OwnBroker::start(
        &dir.path().join("kafka"),
        &[("SAFETEL_KAFKA_TLS_DIR", certificates.to_str().unwrap())],
    );
    let ca = certificates.join("ca.pem");
    let names = Names::unique("tls");
    let env = [
        (
            "SAFETEL_KAFKA__BOOTSTRAP_SERVERS",
            broker.bootstrap.as_str(),
        ),
        ("SAFETEL_KAFKA__PROPERTIES__SECURITY_PROTOCOL", "SSL"),
        (
            "SAFETEL_KAFKA__PROPERTIES__SSL_CA_LOCATION",
            ca.to_str().unwrap(),
        ),
    ];
    let out = safetel(&names, &dir.path().join("unused"), 0)
        .env("SAFETEL_KAFKA__BOOTSTRAP_SERVERS", &broker.bootstrap)
        .args(["topics", "create"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "PLAINTEXT against a TLS listener");
    run_ok(
        safetel(&names, &dir.path().join("unused"), 0)
            .envs(env)
            .args(["topics", "create"]),
    );
    let records = produce_small_fleet(
        &names.events,
        &[
            ("bootstrap.servers", broker.bootstrap.as_str()),
            ("security.protocol", "SSL"),
            ("ssl.ca.location", ca.to_str().unwrap()),
        ],
        4,
    );
    let port = free_port();
    let mut run = run_logged(
        &names,
        &dir.path().join("state"),
        port,
        &env,
        &dir.path().join("run.log"),
    );
    wait_for("all records committed over TLS", TIMEOUT, || {
        let status = get_json(port, "/api/status")?;
        (status["run"]["committed_records"].as_i64()? >= records.len() as i64).then_some(())
    });
    let expected = independent_totals(records.iter().map(|(_, b)| b.as_slice()));
    for (vehicle, totals) in &expected {
        assert_eq!(&served_totals(port, vehicle), totals, "{vehicle}");
    }
    run.kill().unwrap();
    run.wait().unwrap();
    drop(broker);
}
