//! The binary's broker-free commands: `demo`, `generate --output`, `config`.

use std::process::Command;

fn safetel() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_safetel"));
    cmd.env("RUST_LOG", "warn");
    cmd
}

fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn demo_dead_letters_exactly_the_injected_faults_and_writes_its_reports() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let stdout = ok(safetel().args([
        "demo",
        "--vehicles",
        "60",
        "--days",
        "21",
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(stdout.contains("safetel demo"), "{stdout}");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(
        summary["dead_lettered_by_reason"],
        summary["expected_dead_letters"]
    );
    assert!(
        summary["dead_lettered"].as_u64().unwrap() > 0,
        "the demo injects faults"
    );
    let truth: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("truth.json")).unwrap()).unwrap();
    assert_eq!(truth["records"], summary["records"]);
    assert_eq!(summary["vehicles"], 60);
}

#[test]
fn generate_writes_an_avro_container_file_any_avro_reader_can_read() {
    let dir = tempfile::tempdir().unwrap();
    let (file, truth) = (
        dir.path().join("events.avro"),
        dir.path().join("truth.json"),
    );
    ok(safetel()
        .args([
            "generate",
            "--vehicles",
            "20",
            "--days",
            "7",
            "--duplicate",
            "0.01",
            "--output",
        ])
        .arg(&file)
        .arg("--truth")
        .arg(&truth));
    let truth: serde_json::Value = serde_json::from_slice(&std::fs::read(&truth).unwrap()).unwrap();
    let reader = apache_avro::Reader::new(std::fs::File::open(&file).unwrap()).unwrap();
    let schema_name = reader.writer_schema().name().map(|n| n.fullname(None));
    assert_eq!(schema_name.as_deref(), Some("safetel.v1.TelemetryEvent"));
    let records = reader.map(Result::unwrap).count() as u64;
    assert_eq!(Some(records), truth["records"].as_u64());
    assert!(records > 500);

    let refused = safetel()
        .args(["generate", "--corrupt", "0.1", "--output"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--kafka"),
        "the error says what to do instead"
    );
}

#[test]
fn config_shows_environment_overrides_and_hides_secrets() {
    let stdout = ok(safetel()
        .env("SAFETEL_KAFKA__PROPERTIES__SASL_PASSWORD", "s3cret-value")
        .env("SAFETEL_STATE__COMMIT_INTERVAL_MS", "321")
        .arg("config"));
    assert!(stdout.contains("commit_interval_ms = 321"), "{stdout}");
    assert!(!stdout.contains("s3cret-value"), "{stdout}");
    let bad = safetel()
        .env("SAFETEL_STREAM__BIN_WIDTH", "5")
        .arg("config")
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("bin_width"),
        "the error names the key"
    );
}

/// `safetel run` (with `env`) against a port already taken and no broker: it must stop at once.
fn run_on_a_taken_port(env: &[(&str, &str)]) -> std::process::Output {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    safetel()
        .env("SAFETEL_HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env("SAFETEL_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:1")
        .env("SAFETEL_STATE__DIR", dir.path())
        .envs(env.iter().copied())
        .arg("run")
        .output()
        .unwrap()
}

#[test]
fn run_refuses_to_start_when_its_http_port_is_taken() {
    let out = run_on_a_taken_port(&[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("binding the HTTP server"), "{stderr}");
}

#[test]
fn logs_are_json_lines_when_configured() {
    let out = run_on_a_taken_port(&[("RUST_LOG", "info"), ("SAFETEL_LOG__FORMAT", "json")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Every log line is one JSON object: none in the text format (which starts with the time);
    // the process's final error report follows in plain text.
    assert!(
        !stderr
            .lines()
            .any(|l| l.len() > 20 && l.as_bytes()[4] == b'-' && l.as_bytes()[10] == b'T'),
        "a text log line in {stderr}"
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with('{')).collect();
    let logs: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let started = logs
        .iter()
        .find(|l| l["fields"]["message"] == "starting safetel run")
        .unwrap_or_else(|| panic!("no start line in {stderr}"));
    assert_eq!(started["level"], "INFO");
    assert!(started["timestamp"].is_string() && started["target"].is_string());
    assert!(
        started["fields"]["config"]
            .as_str()
            .unwrap()
            .contains("[kafka]")
    );
}

#[test]
fn detect_backtests_a_csv_series_one_json_object_per_bin() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("series.csv");
    // 800 exposure hours per bin at 0.01 per hour (8 events), tripled from bin 60.
    let mut text = String::from("bin,events,exposure\n");
    for bin in 0..100 {
        let events = if bin < 60 {
            [7, 9, 8, 6, 10][bin % 5]
        } else {
            [22, 26, 25, 23, 24][bin % 5]
        };
        text.push_str(&format!("{bin},{events},800\n"));
    }
    std::fs::write(&csv, text).unwrap();
    let stdout = ok(safetel().args(["detect", "--input"]).arg(&csv).args([
        "--model",
        "self-baseline",
        "--b0",
        "100",
        "--window",
        "30",
    ]));
    let rows: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 100);
    assert_eq!(rows[99]["bin"], 99);
    assert!(
        rows[0].get("hr_median").is_none(),
        "no baseline before the first bin"
    );
    assert!(
        rows[..60]
            .iter()
            .all(|r| r["p_regression"].as_f64().unwrap() < 0.95)
    );
    let last = &rows[99];
    assert!(last["p_regression"].as_f64().unwrap() > 0.99, "{last}");
    let (low, median, high) = (
        last["hr_low"].as_f64().unwrap(),
        last["hr_median"].as_f64().unwrap(),
        last["hr_high"].as_f64().unwrap(),
    );
    assert!(
        low < 3.0 && 3.0 < high && (2.5..3.5).contains(&median),
        "HR {low} {median} {high}"
    );

    // The fleet-relative detector on the same series, the fleet at 0.01 per hour (Gamma(10, 1000)):
    // no alarm while the series runs at the fleet's rate, an alarm soon after it triples.
    let stdout = ok(safetel()
        .args(["detect", "--input"])
        .arg(&csv)
        .args(["--a0", "10", "--b0", "1000"]));
    let rows: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 100);
    assert!(
        rows[..60].iter().all(|r| r["alarm"] == false),
        "no alarm before the rise"
    );
    let first_alarm = rows
        .iter()
        .position(|r| r["alarm"] == true)
        .expect("an alarm");
    assert!(
        (60..63).contains(&first_alarm),
        "alarm at bin {first_alarm}"
    );
    let at = &rows[first_alarm];
    assert!(at["onset_bins"].as_u64().unwrap() <= 3, "{at}");
    let (low, median, high) = (
        at["hr_low"].as_f64().unwrap(),
        at["hr_median"].as_f64().unwrap(),
        at["hr_high"].as_f64().unwrap(),
    );
    assert!(
        low < 3.0 && 3.0 < high && (2.0..4.0).contains(&median),
        "HR {low} {median} {high}"
    );
    assert!(
        (rows[10]["expected"].as_f64().unwrap() - 8.0).abs() < 1.0,
        "{}",
        rows[10]
    );

    std::fs::write(&csv, "bin,events,exposure\n0,3,10\n1,x,10\n").unwrap();
    let bad = safetel()
        .args(["detect", "--input"])
        .arg(&csv)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains(":3: events"),
        "the error names the line"
    );
}

#[test]
fn demo_refuses_a_state_dir_that_already_holds_state() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let args = |out: &str| {
        let mut cmd = safetel();
        cmd.args(["demo", "--vehicles", "10", "--days", "3", "--out"])
            .arg(dir.path().join(out))
            .arg("--state-dir")
            .arg(&state);
        cmd
    };
    ok(&mut args("first"));
    let second = args("second").output().unwrap();
    assert!(
        !second.status.success(),
        "a second demo into the same state must not mix the two"
    );
    assert!(String::from_utf8_lossy(&second.stderr).contains("already holds state"));
}

#[test]
fn demo_alerts_score_the_same_through_evaluate_and_bad_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let stdout = ok(safetel().args(["demo", "--out", out.to_str().unwrap()]));
    // The default fleet's firmware rollout (HR 2.5 on ~90 vehicles) is found and printed.
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("firmware:fw-3.0.0") && l.contains("injected HR 2.5")),
        "{stdout}"
    );
    assert!(stdout.contains("sensitivity"), "{stdout}");
    let alerts = std::fs::read_to_string(out.join("alerts.jsonl")).unwrap();
    assert!(alerts.lines().count() >= 1);
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("evaluation.json")).unwrap()).unwrap();
    let (truth, alerts_path) = (out.join("truth.json"), out.join("alerts.jsonl"));
    let args = |extra: &[&str]| {
        let mut a = vec![
            "evaluate",
            "--truth",
            truth.to_str().unwrap(),
            "--alerts",
            alerts_path.to_str().unwrap(),
        ];
        a.extend_from_slice(extra);
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let json: serde_json::Value =
        serde_json::from_str(&ok(safetel().args(args(&["--json"])))).unwrap();
    assert_eq!(json, written, "evaluate reproduces the demo's evaluation");
    for name in [
        "sensitivity",
        "false_alarms_per_1000_vehicle_months",
        "precision",
        "mttd_days_mean",
        "mttd_days_median",
    ] {
        assert!(json.get(name).is_some(), "{name}");
    }
    // A shorter horizon can only detect fewer.
    let short: serde_json::Value = serde_json::from_str(&ok(safetel().args(args(&[
        "--json",
        "--horizon-days",
        "3",
    ]))))
    .unwrap();
    assert!(short["detected"].as_u64() <= json["detected"].as_u64());

    std::fs::write(&alerts_path, "{\"alert_id\": 1}\n").unwrap();
    let failed = safetel().args(args(&[])).output().unwrap();
    assert!(!failed.status.success());
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        stderr.contains("alerts.jsonl:1"),
        "names the file and line: {stderr}"
    );
}

#[test]
fn refit_fits_a_csv_and_writes_the_documented_json() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("survival.csv");
    let rows = safetel::refit::result::simulate(12, 3000.0, 1.2, 250f64.ln(), 0.4, 3);
    let mut csv = String::from("vehicle_id,duration,event\n");
    for (v, t, d) in &rows {
        csv += &format!("{v},{t},{}\n", u8::from(*d));
    }
    std::fs::write(&input, csv).unwrap();
    let output = dir.path().join("result.json");
    let run = |extra: &[&str]| {
        let mut cmd = safetel();
        cmd.args(["refit", "--input", input.to_str().unwrap(), "--output"])
            .arg(&output)
            .args([
                "--chains", "2", "--warmup", "200", "--draws", "200", "--seed", "7",
            ])
            .args(extra);
        cmd
    };
    ok(&mut run(&[]));
    let result: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&output).unwrap()).unwrap();
    let fields = [
        "mean", "sd", "q2.5", "q50", "q97.5", "ess_bulk", "ess_tail", "rhat",
    ];
    for name in [
        "alpha",
        "mu",
        "sigma",
        "lambda[veh-00000]",
        "lambda[veh-00011]",
    ] {
        for field in fields {
            assert!(
                result["parameters"][name][field].is_number(),
                "parameters.{name}.{field}"
            );
        }
    }
    let alpha = &result["parameters"]["alpha"];
    assert!(
        alpha["q2.5"].as_f64() < Some(1.2) && alpha["q97.5"].as_f64() > Some(1.2),
        "{alpha}"
    );
    for field in ["divergences", "max_rhat", "min_ess_bulk", "ebfmi"] {
        assert!(
            result["diagnostics"][field].is_number(),
            "diagnostics.{field}"
        );
    }
    assert!(result["diagnostics"]["converged"].is_boolean());
    assert!(result["timing"]["sampling_s"].as_f64().unwrap() > 0.0);
    assert!(result["timing"]["total_s"].as_f64() >= result["timing"]["sampling_s"].as_f64());
    // The same seed gives the same numbers.
    let first = result["parameters"]["mu"]["mean"].clone();
    ok(&mut run(&[]));
    let again: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&output).unwrap()).unwrap();
    assert_eq!(again["parameters"]["mu"]["mean"], first);

    std::fs::write(&input, "vehicle_id,duration,event\nv1,12.5,1\nv1,-3,0\n").unwrap();
    let failed = run(&[]).output().unwrap();
    assert!(!failed.status.success());
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        stderr.contains("duration -3"),
        "names the bad value: {stderr}"
    );
}

#[test]
fn experiment_compares_policies_on_the_same_fleets_and_writes_table_json_and_chart() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("exp");
    let stdout = ok(safetel().args([
        "experiment",
        "--budget",
        "0.1,0.3",
        "--policies",
        "uniform,importance,full",
        "--reps",
        "2",
        "--vehicles",
        "60",
        "--days",
        "21",
        "--out",
        out.to_str().unwrap(),
    ]));
    for policy in ["uniform", "importance", "full"] {
        assert!(stdout.contains(policy), "{stdout}");
    }
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("experiment.json")).unwrap()).unwrap();
    let rows = report["results"].as_array().unwrap();
    // full runs once per fleet at budget 1, the others at each budget.
    assert_eq!(rows.len(), 5, "{rows:?}");
    for row in rows {
        for figure in [
            "sensitivity",
            "false_alarms_per_1000_vehicle_months",
            "mttd_days_mean",
            "reviews_share",
        ] {
            assert!(row[figure].get("mean").is_some(), "{figure} in {row}");
        }
        assert_eq!(row["replications"].as_array().unwrap().len(), 2);
        let spent = row["reviews_share"]["mean"].as_f64().unwrap();
        let budget = row["budget"].as_f64().unwrap();
        // Reviews spent follow the budget (within 3 points at a few thousand trips per fleet).
        assert!(
            (spent - budget).abs() < 0.03,
            "{} at {budget}: spent {spent}",
            row["policy"]
        );
    }
    let svg = std::fs::read_to_string(out.join("experiment.svg")).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.matches("<path").count() >= 6,
        "a line per policy and panel"
    );
    let bad = safetel()
        .args(["experiment", "--policies", "nope", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        !bad.status.success()
            && String::from_utf8_lossy(&bad.stderr).contains("unknown policy `nope`")
    );
}

#[test]
fn on_a_fleet_without_regressions_false_alarms_stay_within_the_budget() {
    // 2000 vehicles x 56 days of the default fleet with no fault and no rollout: 3680
    // vehicle-months, so the default budget (1 per 1000) allows ~3.7 false alarms. Measured
    // with `scripts/detection-quality 4 --fleet config/fleet-null.toml --vehicles 3000`: 0.54
    // per 1000 [0.28, 0.95]. Tolerance: at most 8 (2.2 per 1000): a rule exactly at its budget
    // exceeds that in about 1% of fleets, one 3x too loose in most.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    ok(safetel()
        .args(["demo", "--fleet"])
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/fleet-null.toml"))
        .args(["--vehicles", "2000", "--seed", "3", "--out"])
        .arg(&out));
    let evaluation: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("evaluation.json")).unwrap()).unwrap();
    assert_eq!(evaluation["regressions"], 0, "a fleet without regressions");
    let false_alarms = evaluation["false_alarms"].as_u64().unwrap();
    let months = evaluation["vehicle_months"].as_f64().unwrap();
    assert!((3600.0..3760.0).contains(&months), "{months}");
    assert!(
        false_alarms <= 8,
        "{false_alarms} false alarms in {months:.0} vehicle-months"
    );
}
