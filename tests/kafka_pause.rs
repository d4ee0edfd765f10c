//! A paused process, through a real Apache Kafka broker: two `safetel run` processes share a
//! stream; one is stopped (SIGSTOP) past the session timeout, as a long GC or VM pause would,
//! while the other takes its partitions; then it is continued (SIGCONT). It must rejoin (or
//! exit non-zero) within a stated time, never say it is ready, nor serve data, for the
//! partitions it lost, and never retry a commit that cannot succeed; the group's final store
//! must equal a single process's over the same stream, and so must its alerts.
#![cfg(feature = "kafka-tests")]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const TIMEOUT: Duration = Duration::from_secs(300);
/// The session timeout the processes run with (the broker's minimum is 6 s).
const SESSION_TIMEOUT: Duration = Duration::from_secs(6);
/// After SIGCONT, the paused process is back in the group (or gone) within this.
const REJOIN_WITHIN: Duration = Duration::from_secs(60);

fn signal(run: &Running, name: &str) {
    let pid = run.child.id().to_string();
    assert!(
        Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .unwrap()
            .success()
    );
}

/// The survivor's logged lines that say a commit was retried.
fn commit_retries(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("sending it again") || l.contains("starting over with a new"))
        .count()
}

#[test]
fn a_paused_process_rejoins_never_serves_what_it_lost_and_the_group_stays_exact() {
    let dir = tempfile::tempdir().unwrap();
    let pair = Names::unique("paused");
    let single = Names {
        events: pair.events.clone(),
        ..Names::unique("unpaused")
    };
    for names in [&pair, &single] {
        run_ok(safetel(names, &dir.path().join("unused"), 0).args(["topics", "create"]));
    }
    let truth_path = dir.path().join("truth.json");
    let mut generator = safetel(&pair, &dir.path().join("unused"), 0)
        .args(["generate", "--kafka", "--rate", "5000", "--truth"])
        .arg(&truth_path)
        .args(["--seed", "33", "--vehicles", "600", "--days", "56"])
        .spawn()
        .unwrap();
    let session_ms = SESSION_TIMEOUT.as_millis().to_string();
    let env = [
        (
            "SAFETEL_KAFKA__PROPERTIES__SESSION_TIMEOUT_MS",
            session_ms.as_str(),
        ),
        ("SAFETEL_KAFKA__PROPERTIES__HEARTBEAT_INTERVAL_MS", "1000"),
        ("SAFETEL_KAFKA__PROPERTIES__TRANSACTION_TIMEOUT_MS", "5000"),
        ("SAFETEL_STATE__COMMIT_INTERVAL_MS", "200"),
        ("RUST_LOG", "warn"),
    ];
    let log_a = dir.path().join("a.log");
    let mut a = {
        let port = free_port();
        let mut command = safetel(&pair, &dir.path().join("a"), port);
        command
            .arg("run")
            .envs(env)
            .stderr(std::fs::File::create(&log_a).unwrap());
        let running = Running {
            child: command.spawn().unwrap(),
            port,
        };
        wait_for("A's API", Duration::from_secs(30), || {
            http_get(port, "/health/live").map(|_| ())
        });
        running
    };
    wait_for("A to commit", TIMEOUT, || {
        (a.committed_records()? > 0).then_some(())
    });
    let b = Running::start(&pair, &dir.path().join("b"), &env);
    wait_for("both processes to own partitions", TIMEOUT, || {
        let (on_a, on_b) = (assigned_partitions(&a), assigned_partitions(&b));
        (!on_a.is_empty() && !on_b.is_empty() && on_a.len() + on_b.len() == 4).then_some(())
    });
    let ready_a = get_json(a.port, "/health/ready").unwrap();
    assert_eq!(
        ready_a["healthy"], true,
        "A ready before the pause: {ready_a}"
    );
    let assignments_before = run_status(&a)["assignments"].as_u64().unwrap();

    // The pause: past the session timeout, so the group gives A's partitions to B.
    signal(&a, "STOP");
    let paused_at = Instant::now();
    wait_for("B to own every partition", TIMEOUT, || {
        (assigned_partitions(&b).len() == 4).then_some(())
    });
    std::thread::sleep(
        (SESSION_TIMEOUT + Duration::from_secs(2)).saturating_sub(paused_at.elapsed()),
    );
    assert!(
        generator.try_wait().unwrap().is_none(),
        "the stream still arrives when A comes back"
    );
    signal(&a, "CONT");
    let continued = Instant::now();

    // From now on A is ready only with a new assignment, and serves data only then.
    let mut not_ready_reasons = Vec::new();
    let mut data_refused = 0;
    let mut rejoined = None;
    let mut exited = None;
    while continued.elapsed() < REJOIN_WITHIN {
        if let Some(status) = a.child.try_wait().unwrap() {
            exited = Some(status);
            break;
        }
        let Some((code, body)) = http_get(a.port, "/health/ready") else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        let assignments = body["assignments"].as_u64().unwrap_or(0);
        let fleet = http_get(a.port, "/api/fleet").map(|(code, _)| code);
        if code == 200 {
            assert!(
                assignments > assignments_before,
                "A said it was ready on its old assignment ({} s after SIGCONT): {body}",
                continued.elapsed().as_secs_f64()
            );
            rejoined = Some(continued.elapsed());
            break;
        }
        not_ready_reasons.push(body["reasons"].to_string());
        if fleet != Some(200) {
            data_refused += 1;
        } else if assignments <= assignments_before {
            panic!("A served /api/fleet ({fleet:?}) while not ready on its old assignment: {body}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    match (rejoined, exited) {
        (Some(after), _) => {
            assert!(
                !not_ready_reasons.is_empty() && data_refused > 0,
                "A was seen not ready, and refusing data, after SIGCONT"
            );
            eprintln!(
                "A rejoined {:.1} s after SIGCONT; not ready {} times, first because {}",
                after.as_secs_f64(),
                not_ready_reasons.len(),
                not_ready_reasons[0]
            );
            let metrics_a = http_get(a.port, "/metrics").unwrap().1;
            assert!(
                metric_value(&metrics_a, "safetel_group_rejoins_total").unwrap_or(0.0) >= 1.0,
                "A counted its rejoin"
            );
        }
        (None, Some(status)) => {
            assert!(!status.success(), "A exited, and said so: {status}");
            eprintln!(
                "A exited ({status}) {:.1} s after SIGCONT",
                continued.elapsed().as_secs_f64()
            );
        }
        (None, None) => panic!(
            "A neither rejoined nor exited within {REJOIN_WITHIN:?} of SIGCONT; it said: {not_ready_reasons:#?}"
        ),
    }
    let a_alive = exited.is_none();

    // The stream ends; the pair reads it all between them.
    let generated = generator.wait().unwrap();
    assert!(generated.success(), "generate: {generated}");
    let truth: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&truth_path).unwrap()).unwrap();
    let total = truth["records"].as_i64().unwrap();
    wait_for("the pair to commit the whole stream", TIMEOUT, || {
        let on_a = if a_alive { a.committed_records()? } else { 0 };
        (on_a + b.committed_records()? >= total).then_some(())
    });
    // No commit that could not succeed was retried: A gave the doomed one up at once.
    let log = std::fs::read_to_string(&log_a).unwrap();
    assert!(
        commit_retries(&log) <= 2,
        "A retried commits {} times:\n{log}",
        commit_retries(&log)
    );
    // It said why it rejoined, or why it exited (a pause past `transaction.timeout.ms` in the
    // middle of a commit: the broker aborted the transaction and fenced its producer).
    let why = if a_alive {
        "moved on without this process"
    } else {
        "pipeline failed"
    };
    assert!(log.contains(why), "A said {why:?}:\n{log}");

    // A leaves; B takes everything (from the changelog) and holds the group's whole state.
    if a_alive {
        a.stop();
    }
    wait_for("B to own every partition again", TIMEOUT, || {
        (assigned_partitions(&b).len() == 4).then_some(())
    });
    b.wait_committed(total, TIMEOUT);
    wait_quiet(&b, Duration::from_secs(10), TIMEOUT);
    b.stop();

    let whole = Running::start(&single, &dir.path().join("single"), &env);
    whole.wait_committed(total, TIMEOUT);
    std::thread::sleep(Duration::from_secs(3));
    whole.stop();
    let (expected, group) = (
        inspect_state(&single, &dir.path().join("single")),
        inspect_state(&pair, &dir.path().join("b")),
    );
    assert_same_store(&expected, &group);
    assert_eq!(alerts_by_id(&single, TIMEOUT), alerts_by_id(&pair, TIMEOUT));
}
