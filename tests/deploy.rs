//! The local stack's files (docker-compose.yml, the Prometheus scrape config, Grafana's
//! provisioning and dashboard) agree with the code: every metric a Grafana panel queries is one
//! safetel exposes, every metric safetel exposes is on the dashboard, panels use the provisioned
//! data source, and the compose file mounts files that exist and scrapes the port safetel serves.
//! (No Docker engine runs in CI; the broker itself is tested through scripts/kafka.)

use std::collections::BTreeSet;
use std::path::Path;

fn repo_file(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Metric families `/metrics` exposes, with every labelled family touched once.
fn exposed_families() -> BTreeSet<(String, String)> {
    let metrics = safetel::metrics::Metrics::new();
    metrics.refit_runs.with_label_values(&["converged"]);
    metrics.review_results.with_label_values(&["answered"]);
    metrics.consumer_lag.with_label_values(&["0"]);
    metrics
        .render()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let (name, kind) = l.split_once(' ').unwrap();
            (name.to_string(), kind.to_string())
        })
        .collect()
}

/// `safetel_*` names in a PromQL expression, histogram series mapped to their family.
fn queried(expr: &str) -> Vec<String> {
    expr.match_indices("safetel_")
        .map(|(at, _)| {
            let name: String = expr[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).map(str::to_string))
                .unwrap_or(name)
        })
        .collect()
}

#[test]
fn the_grafana_dashboard_queries_exactly_the_metrics_safetel_exposes() {
    let families = exposed_families();
    let names: BTreeSet<&str> = families.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.len() >= 20, "{names:?}");
    let dashboard: serde_json::Value =
        serde_json::from_str(&repo_file("deploy/grafana/dashboards/safetel.json")).unwrap();
    let datasource = repo_file("deploy/grafana/provisioning/datasources/prometheus.yml");
    let uid = datasource
        .lines()
        .find_map(|l| l.trim().strip_prefix("uid: "))
        .expect("the data source has a uid");
    let mut on_dashboard = BTreeSet::new();
    let panels = dashboard["panels"].as_array().unwrap();
    for panel in panels {
        assert_eq!(panel["datasource"]["uid"], uid, "{}", panel["title"]);
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{}", panel["title"]);
        for target in targets {
            let expr = target["expr"].as_str().unwrap();
            let used = queried(expr);
            assert!(!used.is_empty(), "{expr}");
            for name in used {
                assert!(
                    names.contains(name.as_str()),
                    "{name} in `{expr}` is not exposed"
                );
                if expr.contains(&format!("{name}_bucket")) {
                    assert!(families.contains(&(name.clone(), "histogram".into())));
                }
                on_dashboard.insert(name);
            }
        }
    }
    let missing: Vec<&&str> = names
        .iter()
        .filter(|n| !on_dashboard.contains(**n))
        .collect();
    assert!(missing.is_empty(), "exposed but on no panel: {missing:?}");
    // Panels do not overlap on Grafana's 24-column grid.
    let mut cells = BTreeSet::new();
    for panel in panels {
        let g = &panel["gridPos"];
        let (x, y, w, h) = (
            g["x"].as_u64().unwrap(),
            g["y"].as_u64().unwrap(),
            g["w"].as_u64().unwrap(),
            g["h"].as_u64().unwrap(),
        );
        assert!(x + w <= 24, "{}", panel["title"]);
        for cx in x..x + w {
            for cy in y..y + h {
                assert!(cells.insert((cx, cy)), "{} overlaps", panel["title"]);
            }
        }
    }
}

#[test]
fn the_compose_stack_mounts_files_that_exist_and_scrapes_the_port_safetel_serves() {
    let compose = repo_file("docker-compose.yml");
    let services: Vec<&str> = compose
        .lines()
        .skip_while(|l| *l != "services:")
        .take_while(|l| *l != "volumes:")
        .filter_map(|l| l.strip_prefix("  ")?.strip_suffix(':'))
        .filter(|l| !l.starts_with(' '))
        .collect();
    for service in [
        "kafka",
        "topics",
        "safetel",
        "generator",
        "prometheus",
        "grafana",
    ] {
        assert!(services.contains(&service), "{service} not in {services:?}");
    }
    assert!(
        compose.contains("KAFKA_PROCESS_ROLES: broker,controller"),
        "KRaft mode"
    );
    assert!(
        compose.contains(r#"profiles: ["generator"]"#),
        "the generator is optional"
    );
    for mount in compose
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- ./"))
    {
        let source = mount.split(':').next().unwrap();
        assert!(
            Path::new(env!("CARGO_MANIFEST_DIR")).join(source).exists(),
            "{source} is mounted but not in the repo"
        );
    }
    let listen = compose
        .lines()
        .find_map(|l| l.trim().strip_prefix("SAFETEL_HTTP__LISTEN: "))
        .unwrap();
    let port = listen
        .split_whitespace()
        .next()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap();
    let scrape = repo_file("deploy/prometheus/prometheus.yml");
    assert!(
        scrape.contains(&format!("\"safetel:{port}\"")),
        "Prometheus scrapes safetel:{port}: {scrape}"
    );
    let provider = repo_file("deploy/grafana/provisioning/dashboards/safetel.yml");
    assert!(provider.contains("path: /var/lib/grafana/dashboards"));
    assert!(compose.contains("./deploy/grafana/dashboards:/var/lib/grafana/dashboards"));
}
