//! The dashboard in a real headless browser: `safetel demo --serve` on a generated fleet (with
//! its refit), then tests/browser/check-pages.cjs drives Debian's chromium through Playwright over
//! every page: each loads without errors, shows its charts with marks drawn, and every number
//! tied to the API equals the API's value. Here the API is also checked against what the demo
//! wrote on its own (its evaluation and totals), so page, API and the batch outputs agree.
#![cfg(feature = "browser-tests")]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{free_port, get_json, http_get};

/// Stops the demo when the test ends, however it ends.
struct Serving(Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the demo and waits (bounded) until it says where the dashboard is.
fn serve_demo(out: &std::path::Path, port: u16) -> Serving {
    let mut child = Command::new(env!("CARGO_BIN_EXE_safetel"))
        .args(["demo", "--vehicles", "200", "--days", "56", "--out"])
        .arg(out)
        .args(["--serve", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let serving = Serving(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("dashboard: http://") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(600))
        .expect("the demo serves its dashboard within 10 minutes");
    serving
}

#[test]
fn every_page_loads_in_chromium_shows_its_charts_and_matches_the_api() {
    let out = tempfile::tempdir().unwrap();
    let port = free_port();
    let _demo = serve_demo(out.path(), port);

    // The API agrees with what the demo computed on its own.
    let summary = get_json(port, "/api/summary").unwrap();
    let evaluation: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("evaluation.json")).unwrap())
            .unwrap();
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("summary.json")).unwrap()).unwrap();
    assert_eq!(
        summary["ground_truth"]["sensitivity"],
        evaluation["sensitivity"]
    );
    assert_eq!(summary["ground_truth"]["detected"], evaluation["detected"]);
    assert_eq!(
        summary["fleet"]["totals"]["critical"],
        written["fleet_totals"]["critical"]
    );
    assert_eq!(
        summary["fleet"]["totals"]["exposure_ms"],
        written["fleet_totals"]["exposure_ms"]
    );
    let opened = std::fs::read_to_string(out.path().join("alerts.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| l.contains(r#""status":"OPENED""#))
        .count();
    assert!(opened > 0, "the demo fleet raises alerts");
    assert_eq!(summary["regressions"]["episodes"], opened);
    // Strata come from the refit's snapshot of the stored trips: every trip is in one.
    let rare = get_json(port, "/api/rare-events").unwrap();
    let strata = rare["by_stratum"].as_array().unwrap();
    assert!(
        strata.len() >= 6,
        "road types x weathers x day/night: {strata:?}"
    );
    let trips: u64 = strata.iter().map(|s| s["trips"].as_u64().unwrap()).sum();
    assert_eq!(trips, summary["fleet"]["totals"]["trips"].as_u64().unwrap());
    let diagnostics = get_json(port, "/api/diagnostics").unwrap();
    assert_eq!(
        diagnostics["available"], true,
        "the demo refits before serving"
    );
    assert_eq!(
        http_get(port, "/regressions/episode?id=no%2Fsuch")
            .unwrap()
            .0,
        404
    );

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/check-pages.cjs");
    let result = Command::new("node")
        .arg(script)
        .arg(format!("http://127.0.0.1:{port}"))
        .output()
        .expect("node runs (scripts/setup --with-browser)");
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(
        result.status.success(),
        "browser check failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let pages: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let paths: Vec<&str> = pages.iter().filter_map(|p| p["path"].as_str()).collect();
    for path in [
        "/",
        "/regressions",
        "/rare-events",
        "/vehicles",
        "/diagnostics",
    ] {
        assert!(paths.contains(&path), "{path} not checked: {paths:?}");
    }
    assert!(
        paths
            .iter()
            .any(|p| p.starts_with("/regressions/episode?id=")),
        "an episode page was checked: {paths:?}"
    );
    // The pages of one vehicle (reached from the ranking and from the summary) and one cohort.
    let vehicle_pages: Vec<&serde_json::Value> = pages
        .iter()
        .filter(|p| {
            p["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("/vehicles/"))
        })
        .collect();
    assert!(vehicle_pages.len() >= 2, "vehicle pages checked: {paths:?}");
    assert!(vehicle_pages.iter().any(|p| p["from"] == "/"), "{paths:?}");
    assert!(
        paths.iter().any(|p| p.starts_with("/cohorts/")),
        "a cohort page was checked: {paths:?}"
    );
    for page in &vehicle_pages {
        assert!(page["charts"].as_u64().unwrap() >= 5, "{page}");
        let api = page["api"].as_str().unwrap();
        let data = get_json(port, api).unwrap();
        assert_eq!(
            data["classes"].as_array().unwrap().len(),
            2,
            "both hazard classes: {api}"
        );
        let id = data["key"].as_str().unwrap();
        let raw = get_json(port, &format!("/api/vehicles/{id}")).unwrap();
        assert_eq!(
            data["totals"], raw["totals"],
            "{api}: the vehicle's own totals"
        );
        assert!(
            data["coverage"]["covered"].as_u64().unwrap() >= 1,
            "{api} says what it covers"
        );
    }
    assert_eq!(http_get(port, "/vehicles/no-such-vehicle").unwrap().0, 404);
    for page in &pages {
        assert!(page["numbers"].as_u64().unwrap() >= 3, "{page}");
        assert!(page["charts"].as_u64().unwrap() >= 1, "{page}");
    }
}
