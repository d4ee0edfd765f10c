//! Scale-out through a real Apache Kafka broker: two `safetel run` processes in one consumer
//! group share the partitions of a stream that keeps arriving; one is killed (SIGKILL) mid-
//! stream, its partitions move to the other, which restores their state from the compacted
//! changelog (and its facts, which the changelog does not carry, from the input topic) and
//! finishes the stream. The survivor's store must then equal, partition for
//! partition and cohort for cohort, the store of a single process that read the whole stream,
//! and the alerts the pair published must be the single process's, each the same alert.
#![cfg(feature = "kafka-tests")]

mod common;

use std::time::{Duration, Instant};

use common::*;

const TIMEOUT: Duration = Duration::from_secs(300);

#[test]
fn two_processes_share_the_partitions_and_a_killed_ones_move_with_their_state() {
    let dir = tempfile::tempdir().unwrap();
    let pair = Names::unique("pair");
    let single = Names {
        events: pair.events.clone(),
        ..Names::unique("single")
    };
    for names in [&pair, &single] {
        let out = run_ok(safetel(names, &dir.path().join("unused"), 0).args(["topics", "create"]));
        assert!(
            out.contains(&format!("{}: created", names.regressions)),
            "{out}"
        );
    }
    // Vehicle faults and a firmware rollout on day 28 (cohort alerts), arriving over ~40 s.
    // Some copies and damaged records among them: rejected, and so skipped again when the
    // survivor rebuilds the killed one's facts from the input topic.
    let fleet = [
        "--seed",
        "21",
        "--vehicles",
        "600",
        "--days",
        "56",
        "--duplicate",
        "0.01",
        "--corrupt",
        "0.002",
    ];
    let truth_path = dir.path().join("truth.json");
    let mut generator = safetel(&pair, &dir.path().join("unused"), 0)
        .args(["generate", "--kafka", "--rate", "6000", "--truth"])
        .arg(&truth_path)
        .args(fleet)
        .spawn()
        .unwrap();

    // Quick rebalances after the kill; transactions the killed process left open aborted soon.
    let env = [
        ("SAFETEL_KAFKA__PROPERTIES__SESSION_TIMEOUT_MS", "6000"),
        ("SAFETEL_KAFKA__PROPERTIES__HEARTBEAT_INTERVAL_MS", "1000"),
        ("SAFETEL_KAFKA__PROPERTIES__TRANSACTION_TIMEOUT_MS", "5000"),
        ("SAFETEL_STATE__COMMIT_INTERVAL_MS", "200"),
        // Restores are logged (size and time: BENCHMARKS.md).
        ("RUST_LOG", "warn,safetel::kafka::changelog=info"),
    ];
    let a = Running::start(&pair, &dir.path().join("a"), &env);
    wait_for("process A to commit", TIMEOUT, || {
        (a.committed_records()? > 0).then_some(())
    });
    let b = Running::start(&pair, &dir.path().join("b"), &env);
    // The group splits the four source partitions between them, and each consumes its share.
    let (before_a, before_b) = wait_for("both processes to own partitions", TIMEOUT, || {
        let (on_a, on_b) = (assigned_partitions(&a), assigned_partitions(&b));
        let split = !on_a.is_empty() && !on_b.is_empty() && on_a.len() + on_b.len() == 4;
        (split && b.committed_records()? > 0).then_some((on_a, on_b))
    });
    assert!(
        before_a.iter().all(|p| !before_b.contains(p)),
        "no partition on both: {before_a:?} {before_b:?}"
    );
    let committed_by_a = a.committed_records().unwrap();
    assert!(committed_by_a > 0);
    a.kill();
    let kill_time = Instant::now();
    assert!(
        generator.try_wait().unwrap().is_none(),
        "the stream was still arriving when A was killed"
    );
    let generated = generator.wait().unwrap();
    assert!(generated.success(), "generate: {generated}");
    let truth: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&truth_path).unwrap()).unwrap();
    let total = truth["records"].as_i64().unwrap();

    // B takes A's partitions after the session timeout, restores them and reads to the end.
    wait_for("B to own every partition", TIMEOUT, || {
        (assigned_partitions(&b).len() == 4).then_some(())
    });
    b.wait_committed(total, TIMEOUT);
    eprintln!(
        "A owned {before_a:?} and committed {committed_by_a} records; B owned {before_b:?}, then all four; {:.1} s from the kill to the end",
        kill_time.elapsed().as_secs_f64()
    );
    // Then until nothing moves for 15 s: cohort reports held back by a transaction A left open
    // arrive once the broker aborts it (transaction timeout 5 s).
    wait_quiet(&b, Duration::from_secs(15), TIMEOUT);
    // B read A's partitions from where A last committed, with A's state from the changelog,
    // not from their beginning.
    let metrics = http_get(b.port, "/metrics").unwrap().1;
    let metric = |name: &str| metric_value(&metrics, name).unwrap_or(-1.0);
    assert_eq!(metric("safetel_assigned_partitions"), 4.0);
    assert!(
        metric("safetel_partitions_restored_total") >= 2.0,
        "{}",
        metric("safetel_partitions_restored_total")
    );
    assert!(metric("safetel_changelog_records_restored_total") > 0.0);
    // The facts (local to the store that accepted them) came from the input topic again.
    assert!(
        metric("safetel_facts_rebuilt_total") > 0.0,
        "{}",
        metric("safetel_facts_rebuilt_total")
    );
    assert_eq!(metric("safetel_facts_missing_total"), 0.0);
    let read_by_b = metric("safetel_records_received_total");
    assert!(
        read_by_b <= (total - committed_by_a) as f64,
        "B read {read_by_b} records: A's committed {committed_by_a} were read again"
    );
    b.stop();

    let whole = Running::start(&single, &dir.path().join("single"), &env);
    whole.wait_committed(total, TIMEOUT);
    std::thread::sleep(Duration::from_secs(3));
    whole.stop();

    let (expected, survivor) = (
        inspect_state(&single, &dir.path().join("single")),
        inspect_state(&pair, &dir.path().join("b")),
    );
    assert_same_store(&expected, &survivor);

    let (single_alerts, pair_alerts) =
        (alerts_by_id(&single, TIMEOUT), alerts_by_id(&pair, TIMEOUT));
    assert!(
        single_alerts.keys().any(|id| id.starts_with("COHORT/")),
        "the rollout raises cohort alerts: {:?}",
        single_alerts.keys().collect::<Vec<_>>()
    );
    assert_eq!(
        single_alerts.keys().collect::<Vec<_>>(),
        pair_alerts.keys().collect::<Vec<_>>()
    );
    assert_eq!(single_alerts, pair_alerts);
}
