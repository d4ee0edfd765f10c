use super::*;
use crate::model::HazardClass;

const DAY: i64 = 86_400_000;

fn regression(
    kind: &str,
    key: &str,
    onset_day: i64,
    hr: f64,
    members: &[&str],
) -> InjectedRegression {
    InjectedRegression {
        key_kind: kind.into(),
        key: key.into(),
        hazard_class: HazardClass::Critical,
        onset_ms: onset_day * DAY,
        true_hr: hr,
        members: members.iter().map(|m| m.to_string()).collect(),
    }
}

fn alert(kind: KeyKind, key: &str, status: AlertStatus, detected_day: f64) -> RegressionAlert {
    RegressionAlert {
        alert_id: format!("{key}/{status:?}/{detected_day}"),
        status,
        key_kind: kind,
        key: key.into(),
        hazard_class: HazardClass::Critical,
        onset_estimate: 0,
        detected_at: (detected_day * DAY as f64) as i64,
        p_regression: 0.99,
        hr_median: 2.0,
        hr_low: 1.6,
        hr_high: 2.5,
        rate_before: 0.01,
        rate_after: 0.02,
        events_before: 10,
        events_after: 20,
        exposure_before: 1000.0,
        exposure_after: 1000.0,
        prior_source: "config".into(),
        sampling_policy: "full".into(),
    }
}

#[test]
fn figures_follow_the_matching_rules() {
    let truth = GroundTruth {
        vehicles: 100,
        days: 61, // 100 * 61 / 30.4375 = 200.41 vehicle-months
        regressions: vec![
            regression("VEHICLE", "v1", 20, 4.0, &[]),
            regression("VEHICLE", "v2", 20, 2.5, &[]),
            regression("VEHICLE", "v3", 20, 6.0, &[]),
            regression("COHORT", "firmware:fw-3", 30, 2.5, &["v7", "v8"]),
        ],
        ..Default::default()
    };
    use AlertStatus::*;
    use KeyKind::*;
    let alerts = vec![
        alert(Vehicle, "v1", Opened, 24.0),  // detects v1 after 4 days
        alert(Vehicle, "v1", Updated, 25.0), // not an opening: ignored
        alert(Vehicle, "v2", Opened, 10.0),  // before the onset: a false alarm
        alert(Vehicle, "v2", Opened, 55.0),  // after the 30-day horizon: true, not sensitive
        alert(Cohort, "firmware:fw-3", Opened, 36.0), // detects the cohort after 6 days
        alert(Vehicle, "v7", Opened, 40.0),  // member of the cohort: true
        alert(Vehicle, "v8", Opened, 12.0),  // member, but before the onset: false
        alert(Vehicle, "v9", Opened, 33.0),  // nothing happened to v9: false
        alert(Vehicle, "v9", Resolved, 40.0), // not an opening: ignored
    ];
    let e = evaluate(&truth, &alerts, 30.0);
    assert_eq!((e.regressions, e.detected), (4, 2));
    assert_eq!(e.sensitivity, Some(0.5));
    assert_eq!((e.alerts_opened, e.true_alerts, e.false_alarms), (7, 4, 3));
    assert_eq!(e.precision, Some(4.0 / 7.0));
    let months = 100.0 * 61.0 / 30.4375;
    assert!((e.vehicle_months - months).abs() < 1e-9);
    assert!((e.false_alarms_per_1000_vehicle_months.unwrap() - 3.0 / months * 1000.0).abs() < 1e-9);
    // Time to detection over detections within the horizon: 4 and 6 days.
    assert_eq!(e.mttd_days_mean, Some(5.0));
    assert_eq!(e.mttd_days_median, Some(5.0));
    let v2 = e.outcomes.iter().find(|o| o.key == "v2").unwrap();
    assert_eq!(
        (v2.detected, v2.time_to_detection_days),
        (false, Some(35.0))
    );
    assert_eq!(e.by_key_kind["COHORT"].detected, 1);
    assert_eq!(e.by_key_kind["VEHICLE"].sensitivity, Some(1.0 / 3.0));
    assert_eq!(e.by_hr_band["2<=hr<3"].regressions, 2);
    // Intervals bracket their point estimates.
    for (value, [low, high]) in [
        (e.sensitivity, e.sensitivity_ci),
        (e.precision, e.precision_ci),
        (
            e.false_alarms_per_1000_vehicle_months,
            e.false_alarms_per_1000_vehicle_months_ci,
        ),
        (e.mttd_days_mean, e.mttd_days_mean_ci),
    ] {
        let (v, l, h) = (value.unwrap(), low.unwrap(), high.unwrap());
        assert!(l <= v && v <= h, "{l} <= {v} <= {h}");
        assert!(l < h, "a real interval: {l} < {h}");
    }
}

#[test]
fn no_alerts_and_no_regressions_give_empty_figures_not_errors() {
    let truth = GroundTruth {
        vehicles: 10,
        days: 30,
        ..Default::default()
    };
    let e = evaluate(&truth, &[], 30.0);
    assert_eq!(e.sensitivity, None);
    assert_eq!(e.precision, None);
    assert_eq!(e.false_alarms_per_1000_vehicle_months, Some(0.0));
    assert_eq!(e.mttd_days_mean, None);
    assert!(e.render().contains("sensitivity"));
}
