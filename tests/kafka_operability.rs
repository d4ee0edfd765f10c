//! Operability through a real Apache Kafka broker, as an operator meets it: a mistyped input
//! topic and a session timeout the broker refuses are not ready (with the reason) but live;
//! idle connections up to the HTTP limit do not keep `/health/live` from answering, and hold no
//! more file descriptors than the limit; SIGTERM with a stuck client exits within the shutdown
//! deadline; and commands that talk to Kafka fail within a stated time when no broker answers.
#![cfg(feature = "kafka-tests")]

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

/// A not-ready verdict names its reason within this (the source looks every 5 s).
const REASON_WITHIN: Duration = Duration::from_secs(30);

fn health(port: u16, path: &str) -> Option<(u16, serde_json::Value)> {
    let (code, body) = http_get(port, path)?;
    Some((code, serde_json::from_str(&body).ok()?))
}

/// Waits until `/health/ready` is 503 with a reason containing each of `texts`; then
/// `/health/live` must be 200.
fn not_ready_because(run: &Running, texts: &[&str]) -> String {
    let reasons = wait_for(
        &format!("readiness to say {texts:?}"),
        REASON_WITHIN,
        || {
            let (code, body) = health(run.port, "/health/ready")?;
            let reasons = body["reasons"].to_string();
            (code == 503 && texts.iter().all(|t| reasons.contains(t))).then_some(reasons)
        },
    );
    let (code, live) = health(run.port, "/health/live").unwrap();
    assert_eq!(code, 200, "live all the same: {live}");
    reasons
}

#[test]
fn a_mistyped_topic_and_a_refused_session_timeout_are_not_ready_and_say_why() {
    let dir = tempfile::tempdir().unwrap();
    // No topics made: the events topic's name is one nobody created.
    let typo = Names::unique("typo");
    let run = Running::start(&typo, &dir.path().join("typo"), &[]);
    let reasons = not_ready_because(&run, &[&typo.events, "does not exist"]);
    eprintln!("mistyped topic: {reasons}");
    run.stop();

    // Topics exist, but the broker refuses the session timeout (its minimum is 6 s).
    let short = Names::unique("short-session");
    run_ok(safetel(&short, &dir.path().join("unused"), 0).args(["topics", "create"]));
    let run = Running::start(
        &short,
        &dir.path().join("short"),
        &[("SAFETEL_KAFKA__PROPERTIES__SESSION_TIMEOUT_MS", "1000")],
    );
    // The group's own error is named ("Broker: Invalid session timeout").
    let reasons = not_ready_because(&run, &["assigned no partitions", "session timeout"]);
    eprintln!("refused session timeout: {reasons}");
    run.stop();
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[test]
fn idle_connections_are_bounded_and_a_stuck_client_does_not_hold_up_shutdown() {
    const LIMIT: usize = 16;
    const IDLE_MS: u64 = 2000;
    let dir = tempfile::tempdir().unwrap();
    let names = Names::unique("http-limits");
    run_ok(safetel(&names, &dir.path().join("unused"), 0).args(["topics", "create"]));
    let limit = LIMIT.to_string();
    let idle = IDLE_MS.to_string();
    let run = Running::start(
        &names,
        &dir.path().join("limits"),
        &[
            ("SAFETEL_HTTP__MAX_CONNECTIONS", limit.as_str()),
            ("SAFETEL_HTTP__IDLE_TIMEOUT_MS", idle.as_str()),
        ],
    );
    wait_for("readiness", REASON_WITHIN, || {
        (health(run.port, "/health/ready")?.0 == 200).then_some(())
    });
    let baseline = open_fds(run.child.id());
    // Four times the limit, connected and silent.
    let held: Vec<TcpStream> = (0..4 * LIMIT)
        .map(|_| TcpStream::connect(("127.0.0.1", run.port)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let during = open_fds(run.child.id());
    assert!(
        during <= baseline + LIMIT,
        "{during} descriptors open with {} idle clients, {baseline} before: at most the limit more",
        held.len()
    );
    // The idle ones are closed after the idle timeout, so a probe is answered within it (and
    // the queue of idle ones behind it), not never.
    let asked = Instant::now();
    let (code, _) = http_get(run.port, "/health/live").expect("/health/live answers");
    let waited = asked.elapsed();
    assert_eq!(code, 200);
    assert!(
        waited < Duration::from_millis(4 * IDLE_MS + 3000),
        "/health/live took {waited:?} behind {} idle connections",
        held.len()
    );
    drop(held);
    run.stop();

    // A client that starts a request and never finishes it, with a long idle timeout: SIGTERM
    // still ends the process within the shutdown deadline.
    let deadline_ms = 5000;
    let deadline = deadline_ms.to_string();
    let run = Running::start(
        &names,
        &dir.path().join("stuck"),
        &[
            ("SAFETEL_HTTP__IDLE_TIMEOUT_MS", "600000"),
            ("SAFETEL_HTTP__REQUEST_TIMEOUT_MS", "600000"),
            ("SAFETEL_STATE__SHUTDOWN_DEADLINE_MS", deadline.as_str()),
        ],
    );
    let mut stuck = TcpStream::connect(("127.0.0.1", run.port)).unwrap();
    write!(stuck, "GET /api/fleet HTTP/1.1\r\nHost: 127.0.0.1\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let signalled = Instant::now();
    run.stop();
    let took = signalled.elapsed();
    assert!(
        took < Duration::from_millis(deadline_ms + 2000),
        "exited {took:?} after SIGTERM with a stuck client (deadline {deadline_ms} ms)"
    );
    drop(stuck);
}

#[test]
fn commands_that_talk_to_kafka_fail_fast_when_no_broker_answers() {
    let dir = tempfile::tempdir().unwrap();
    let names = Names::unique("no-broker");
    let nowhere = format!("127.0.0.1:{}", free_port());
    for args in [
        vec!["topics", "create"],
        vec!["generate", "--kafka", "--vehicles", "2", "--days", "1"],
        vec![
            "generate",
            "--kafka",
            "--review-service",
            "--vehicles",
            "2",
            "--days",
            "1",
        ],
    ] {
        let started = Instant::now();
        let out = safetel(&names, &dir.path().join("state"), 0)
            .args(&args)
            .env("SAFETEL_KAFKA__BOOTSTRAP_SERVERS", &nowhere)
            .output()
            .unwrap();
        let took = started.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("no Kafka broker answered at {nowhere}")),
            "{args:?}: {stderr}"
        );
        // safetel::kafka::BROKER_ANSWER_WITHIN (15 s), and a margin for start-up.
        assert!(
            took < safetel::kafka::BROKER_ANSWER_WITHIN + Duration::from_secs(10),
            "{args:?} took {took:?}"
        );
    }
}
