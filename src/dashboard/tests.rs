use super::*;
use crate::model::{AlertStatus, HazardClass, KeyKind, RegressionAlert};

fn alert(key: &str, status: AlertStatus, suffix: &str, detected_at: i64) -> RegressionAlert {
    RegressionAlert {
        alert_id: format!("VEHICLE/{key}/critical/2026-01-20/{suffix}"),
        status,
        key_kind: KeyKind::Vehicle,
        key: key.into(),
        hazard_class: HazardClass::Critical,
        onset_estimate: 1_768_867_200_000,
        detected_at,
        p_regression: 0.97,
        hr_median: 2.5,
        hr_low: 1.6,
        hr_high: 4.0,
        rate_before: 0.01,
        rate_after: 0.025,
        events_before: 10,
        events_after: 12,
        exposure_before: 1000.0,
        exposure_after: 480.0,
        prior_source: "config".into(),
        sampling_policy: "full".into(),
    }
}

#[test]
fn alerts_group_into_episodes_whose_latest_status_says_whether_they_are_open() {
    let day = 86_400_000;
    let t = 1_769_000_000_000;
    let alerts = vec![
        alert("veh-1", AlertStatus::Resolved, "RESOLVED", t + 9 * day),
        alert("veh-1", AlertStatus::Opened, "OPENED", t),
        alert("veh-1", AlertStatus::Updated, "UPDATED-1", t + 3 * day),
        alert("veh-2", AlertStatus::Opened, "OPENED", t + day),
    ];
    let episodes = regressions::episodes(&alerts);
    assert_eq!(episodes.len(), 2);
    // Newest opened first.
    assert_eq!(episodes[0].id, "VEHICLE/veh-2/critical/2026-01-20");
    assert!(episodes[0].is_open());
    assert_eq!(episodes[1].alerts.len(), 3);
    assert_eq!(episodes[1].alerts[0].status, AlertStatus::Opened);
    assert!(!episodes[1].is_open(), "resolved");
    let data = regressions::data(&alerts, Value::Null);
    assert_eq!(data["open"], 1);
    assert_eq!(data["episodes"][1]["updates"], 1);
    assert_eq!(data["episodes"][1]["resolved_at_ms"], t + 9 * day);
    assert_eq!(
        data["episodes"][1]["days_to_detection"].as_f64().unwrap(),
        (t - 1_768_867_200_000) as f64 / day as f64
    );
}

#[test]
fn observed_counts_get_exact_poisson_intervals_and_estimates_normal_ones() {
    // Garwood 95% intervals for a count k: k = 0 -> [0, 3.689], k = 10 -> [4.795, 18.390]
    // (tables to 3 decimals, hence the tolerance).
    let zero = rate_json(0.0, None, 1000.0);
    assert_eq!(zero["rate_per_1000h_ci95"][0], 0.0);
    assert!((zero["rate_per_1000h_ci95"][1].as_f64().unwrap() - 3.689).abs() < 1e-3);
    let ten = rate_json(10.0, None, 2000.0);
    assert!((ten["rate_per_1000h"].as_f64().unwrap() - 5.0).abs() < 1e-12);
    assert!((ten["rate_per_1000h_ci95"][0].as_f64().unwrap() - 4.795 / 2.0).abs() < 1e-3);
    assert!((ten["rate_per_1000h_ci95"][1].as_f64().unwrap() - 18.390 / 2.0).abs() < 1e-3);
    // A Horvitz-Thompson estimate: estimate +- 1.96 SE, never below zero.
    let ht = rate_json(10.0, Some(9.0), 1000.0);
    assert!((ht["rate_per_1000h_ci95"][0].as_f64().unwrap() - (10.0 - 1.96 * 3.0)).abs() < 1e-9);
    assert!((ht["rate_per_1000h_ci95"][1].as_f64().unwrap() - (10.0 + 1.96 * 3.0)).abs() < 1e-9);
    let wide = rate_json(1.0, Some(100.0), 1000.0);
    assert_eq!(wide["rate_per_1000h_ci95"][0], 0.0);
    assert!(
        rate_json(3.0, None, 0.0)["rate_per_1000h"].is_null(),
        "no exposure, no rate"
    );
}

#[test]
fn diagnostics_before_any_refit_say_so_and_the_page_still_renders() {
    let data = diagnostics::data(None);
    assert_eq!(data["available"], false);
    let page = diagnostics::page(&data);
    assert!(page.contains("No refit has run yet"));
    assert!(page.contains(r#"data-api-url="/api/diagnostics""#));
}

#[test]
fn an_episode_link_survives_the_query_string() {
    let id = "COHORT/firmware:fw 3.0+rc/critical/2026-01-30";
    let href = super::links::episode_href(id);
    assert_eq!(
        href,
        "/regressions/episode?id=COHORT%2Ffirmware%3Afw%203.0%2Brc%2Fcritical%2F2026-01-30"
    );
}
