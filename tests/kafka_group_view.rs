//! One dashboard for the whole consumer group, through a real Apache Kafka broker: two `safetel
//! run` processes share the partitions of a stream, and each one's summary, vehicle ranking and
//! vehicle pages (its own vehicles and the other's) equal those of a single process that read
//! the same stream alone, once the group view has caught up; each page says what it covers
//! (its partitions, live; the other's, from the group view). When one is killed, the survivor
//! still answers for the whole group, then holds every partition itself, with the same pages.
#![cfg(feature = "kafka-tests")]

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(300);

/// Whether `a` and `b` are the same JSON but for `coverage`, numbers equal to a relative 1e-9
/// (the same sums, possibly added in another order) — else where they first differ.
fn differs(a: &Value, b: &Value, at: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys = |o: &serde_json::Map<String, Value>| -> Vec<String> {
                o.keys().filter(|k| *k != "coverage").cloned().collect()
            };
            if keys(x) != keys(y) {
                return Some(format!("{at}: keys {:?} and {:?}", keys(x), keys(y)));
            }
            keys(x)
                .iter()
                .find_map(|k| differs(&x[k], &y[k], &format!("{at}/{k}")))
        }
        (Value::Array(x), Value::Array(y)) => {
            if x.len() != y.len() {
                return Some(format!("{at}: {} and {} items", x.len(), y.len()));
            }
            x.iter()
                .zip(y)
                .enumerate()
                .find_map(|(i, (x, y))| differs(x, y, &format!("{at}/{i}")))
        }
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            ((x - y).abs() > 1e-9 * x.abs().max(y.abs())).then(|| format!("{at}: {x} and {y}"))
        }
        _ => (a != b).then(|| format!("{at}: {a} and {b}")),
    }
}

/// The pages' JSON this test compares, for `vehicles`.
fn pages(port: u16, vehicles: &[String]) -> Option<Vec<(String, Value)>> {
    let mut paths = vec![
        "/api/summary".to_string(),
        "/api/vehicle-ranking?limit=10000".to_string(),
        "/api/regressions".to_string(),
    ];
    paths.extend(vehicles.iter().map(|v| format!("/api/vehicles/{v}/page")));
    paths
        .into_iter()
        .map(|path| Some((path.clone(), get_json(port, &path)?)))
        .collect()
}

/// Waits until `run`'s pages equal `expected` (the view has caught up), and returns them.
fn wait_equal(
    run: &Running,
    vehicles: &[String],
    expected: &[(String, Value)],
    what: &str,
) -> Vec<(String, Value)> {
    let mut last = String::new();
    let start = std::time::Instant::now();
    loop {
        if let Some(seen) = pages(run.port, vehicles) {
            let difference = seen
                .iter()
                .zip(expected)
                .find_map(|((path, a), (_, b))| differs(a, b, path));
            match difference {
                None => return seen,
                Some(d) => last = d,
            }
        }
        assert!(
            start.elapsed() < TIMEOUT,
            "{what}: pages still differ from the single process's after {TIMEOUT:?}: {last}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn coverage(page: &Value) -> (Vec<i64>, Vec<i64>, &str) {
    let c = &page["coverage"];
    let list = |v: &Value| -> Vec<i64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_i64().or_else(|| p["partition"].as_i64()).unwrap())
            .collect()
    };
    (
        list(&c["held_here"]),
        list(&c["from_group_view"]),
        c["scope"].as_str().unwrap(),
    )
}

#[test]
fn every_process_answers_for_the_whole_group_as_one_process_would() {
    let dir = tempfile::tempdir().unwrap();
    let pair = Names::unique("view");
    let single = Names {
        events: pair.events.clone(),
        ..Names::unique("viewsingle")
    };
    for names in [&pair, &single] {
        let out = run_ok(safetel(names, &dir.path().join("unused"), 0).args(["topics", "create"]));
        assert!(
            out.contains(&format!("{}.group-view: created", names.group)),
            "{out}"
        );
    }
    let truth_path = dir.path().join("truth.json");
    run_ok(
        safetel(&pair, &dir.path().join("unused"), 0)
            .args(["generate", "--kafka", "--truth"])
            .arg(&truth_path)
            .args(["--seed", "8", "--vehicles", "240", "--days", "42"]),
    );
    let truth: Value = serde_json::from_slice(&std::fs::read(&truth_path).unwrap()).unwrap();
    let total = truth["records"].as_i64().unwrap();

    let env = [
        ("SAFETEL_KAFKA__PROPERTIES__SESSION_TIMEOUT_MS", "6000"),
        ("SAFETEL_KAFKA__PROPERTIES__HEARTBEAT_INTERVAL_MS", "1000"),
        ("SAFETEL_KAFKA__PROPERTIES__TRANSACTION_TIMEOUT_MS", "5000"),
        ("SAFETEL_STATE__COMMIT_INTERVAL_MS", "200"),
        ("RUST_LOG", "warn"),
    ];
    let whole = Running::start(&single, &dir.path().join("single"), &env);
    whole.wait_committed(total, TIMEOUT);
    wait_quiet(&whole, Duration::from_secs(5), TIMEOUT);

    let a = Running::start(&pair, &dir.path().join("a"), &env);
    let b = Running::start(&pair, &dir.path().join("b"), &env);
    let (on_a, on_b) = wait_for(
        "the pair to split the partitions and read all",
        TIMEOUT,
        || {
            let (on_a, on_b) = (assigned_partitions(&a), assigned_partitions(&b));
            let split = !on_a.is_empty() && !on_b.is_empty() && on_a.len() + on_b.len() == 4;
            let read = a.committed_records()? + b.committed_records()? >= total;
            (split && read).then_some((on_a, on_b))
        },
    );
    wait_quiet(&a, Duration::from_secs(5), TIMEOUT);
    wait_quiet(&b, Duration::from_secs(5), TIMEOUT);

    // A vehicle of each process, with the most critical events (an alert among them).
    let ranking = get_json(whole.port, "/api/vehicle-ranking?limit=10000").unwrap();
    let owner = |id: &str| {
        get_json(whole.port, &format!("/api/vehicles/{id}")).unwrap()["partition"]
            .as_i64()
            .unwrap()
    };
    let ids: Vec<String> = ranking["ranking"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["vehicle_id"].as_str().unwrap().to_string())
        .collect();
    let of_a = ids
        .iter()
        .find(|id| on_a.contains(&owner(id)))
        .unwrap()
        .clone();
    let of_b = ids
        .iter()
        .find(|id| on_b.contains(&owner(id)))
        .unwrap()
        .clone();
    let vehicles = vec![of_a, of_b];
    let expected = pages(whole.port, &vehicles).unwrap();
    let episodes = expected[2].1["episodes"].as_array().unwrap().len();
    assert!(episodes > 0, "the fleet raises alerts");
    assert_eq!(
        coverage(&expected[0].1),
        ((0..4).collect(), vec![], "group")
    );

    for (run, mine, theirs, name) in [(&a, &on_a, &on_b, "A"), (&b, &on_b, &on_a, "B")] {
        let seen = wait_equal(run, &vehicles, &expected, name);
        for (path, page) in &seen {
            let (here, from_view, scope) = coverage(page);
            assert_eq!(scope, "group", "{name} {path}");
            assert_eq!(&here, mine, "{name} {path}: held here");
            assert_eq!(&from_view, theirs, "{name} {path}: from the group view");
            assert_eq!(page["coverage"]["covered"], 4, "{name} {path}");
        }
        // Its own vehicle live, the other's from the group view; the pages render them.
        for id in &vehicles {
            let (code, html) = http_get(run.port, &format!("/vehicles/{id}")).unwrap();
            assert_eq!(code, 200, "{name} /vehicles/{id}");
            assert!(html.contains("Covers"), "the page says what it covers");
        }
        let listed = get_json(run.port, "/api/vehicle-ranking?limit=10000").unwrap();
        assert_eq!(
            listed["vehicles"], ranking["vehicles"],
            "{name}: the whole fleet"
        );
    }

    // B is killed: A still answers for the whole group (B's share as of B's last commit), and
    // once B's partitions move to A it holds them all, with the same pages.
    b.kill();
    let (_, from_view, _) = coverage(&pages(a.port, &vehicles).unwrap()[0].1);
    let (here, _, _) = coverage(&pages(a.port, &vehicles).unwrap()[0].1);
    assert_eq!(
        from_view.len() + here.len(),
        4,
        "B's share stays in the view"
    );
    wait_for("A to own every partition", TIMEOUT, || {
        (assigned_partitions(&a).len() == 4).then_some(())
    });
    let seen = wait_equal(&a, &vehicles, &expected, "A after B's partitions moved");
    let (here, from_view, _) = coverage(&seen[0].1);
    assert_eq!((here, from_view), ((0..4).collect(), vec![]));
    a.stop();
    whole.stop();
}
