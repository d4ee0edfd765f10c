//! The local stack's files (docker-compose.yml, the Prometheus scrape config, Grafana's
//! provisioning and dashboard) agree with the code: every metric a Grafana panel queries is one
//! safetel exposes, every metric safetel exposes is on the dashboard, the dashboard imports into
//! an existing Grafana (a data-source input and variable, an instance variable every query
//! filters on, legends that name the process, rate windows a 60 s scrape fills), and the compose
//! file mounts files that exist and scrapes the port safetel serves.
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
    metrics
        .consumer_lag
        .with_label_values(&["telemetry.events", "safetel", "0"]);
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

/// `safetel_*` and `process_*` names in a PromQL expression, histogram series mapped to their
/// family.
fn queried(expr: &str) -> Vec<String> {
    let names = expr
        .match_indices("safetel_")
        .chain(expr.match_indices("process_"));
    names
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
    // Importable: the data source is an input and a variable (provisioning picks the provisioned
    // one, the default), and the processes are a variable.
    let inputs = dashboard["__inputs"].as_array().unwrap();
    assert!(
        inputs
            .iter()
            .any(|i| i["type"] == "datasource" && i["pluginId"] == "prometheus"),
        "{inputs:?}"
    );
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let variable = |name: &str| {
        variables
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no ${name} variable"))
    };
    assert_eq!(variable("datasource")["type"], "datasource");
    assert_eq!(variable("datasource")["query"], "prometheus");
    assert_eq!(variable("instance")["includeAll"], true);
    let mut on_dashboard = BTreeSet::new();
    let panels = dashboard["panels"].as_array().unwrap();
    for panel in panels {
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "{}",
            panel["title"]
        );
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{}", panel["title"]);
        for target in targets {
            let expr = target["expr"].as_str().unwrap();
            let used = queried(expr);
            assert!(!used.is_empty(), "{expr}");
            // Each series of the chosen processes only, and named by its process.
            assert_eq!(
                expr.matches("{instance=~\"$instance\"").count(),
                used.len(),
                "every selector filters on $instance: {expr}"
            );
            let legend = target["legendFormat"].as_str().unwrap_or_default();
            assert!(legend.contains("{{instance}}"), "{expr}: legend `{legend}`");
            // A rate over fewer than four scrapes of 60 s is empty or jumpy.
            for window in ["[30s]", "[1m]", "[2m]"] {
                assert!(!expr.contains(window), "{expr}: a {window} window");
            }
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

/// The Dockerfile's instructions, continuation lines joined, comments dropped.
fn dockerfile_instructions() -> Vec<(String, String)> {
    let text = repo_file("Dockerfile");
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || trimmed.is_empty() && current.is_empty() {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                joined.push(std::mem::take(&mut current));
            }
        }
    }
    joined
        .into_iter()
        .map(|l| {
            let (op, rest) = l.split_once(' ').unwrap_or((&l, ""));
            (op.to_uppercase(), rest.trim().to_string())
        })
        .collect()
}

/// `KEY=value` pairs of the ENV instructions in `instructions`.
fn env_of(instructions: &[(String, String)]) -> Vec<(String, String)> {
    instructions
        .iter()
        .filter(|(op, _)| op == "ENV")
        .flat_map(|(_, rest)| rest.split_whitespace())
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn the_image_caches_dependencies_strips_the_binary_and_runs_unprivileged_on_all_interfaces() {
    let all = dockerfile_instructions();
    let position = |pred: &dyn Fn(&(String, String)) -> bool| all.iter().position(pred);
    // Two stages; the runtime stage is everything after the last FROM.
    let last_from = all.iter().rposition(|(op, _)| op == "FROM").unwrap();
    assert!(last_from > 0, "a build stage and a runtime stage");
    let (build, runtime) = all.split_at(last_from);

    // Dependency layer: the manifest and lock are copied and built before src/ is copied.
    let builds: Vec<usize> = (0..build.len())
        .filter(|&i| build[i].0 == "RUN" && build[i].1.contains("cargo build"))
        .collect();
    assert_eq!(builds.len(), 2, "a dependency build and the real one");
    let copy_manifest = position(&|(op, rest)| {
        op == "COPY" && rest.contains("Cargo.toml") && rest.contains("Cargo.lock")
    })
    .expect("COPY Cargo.toml Cargo.lock");
    let copy_src =
        position(&|(op, rest)| op == "COPY" && rest.starts_with("src ")).expect("COPY src");
    assert!(copy_manifest < builds[0] && builds[0] < copy_src && copy_src < builds[1]);
    assert!(
        build[builds[0]].1.contains("src/main.rs") && build[builds[0]].1.contains("src/lib.rs"),
        "the dependency build uses placeholder sources: {}",
        build[builds[0]].1
    );
    // Every COPY source outside the build stage's output exists in the repo.
    for (op, rest) in &all {
        if op == "COPY" && !rest.starts_with("--from") {
            let parts: Vec<&str> = rest.split_whitespace().collect();
            for source in &parts[..parts.len() - 1] {
                let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(source);
                assert!(path.exists(), "COPY {source}: not in the repo");
            }
        }
    }

    // Stripped, without debug info, set before the first build so both share the profile.
    let build_env = env_of(&build[..builds[0]]);
    let cargo_toml: toml::Table = toml::from_str(&repo_file("Cargo.toml")).unwrap();
    let release = &cargo_toml["profile"]["release"];
    let profile_strip = release.get("strip").map(|v| v.to_string());
    let env_strip = build_env
        .iter()
        .find(|(k, _)| k == "CARGO_PROFILE_RELEASE_STRIP")
        .map(|(_, v)| v.clone());
    let strip = env_strip.or(profile_strip).expect("a strip setting");
    assert!(
        ["symbols", "true", "\"symbols\""].contains(&strip.as_str()),
        "{strip}"
    );
    assert!(
        build_env
            .iter()
            .any(|(k, v)| k == "CARGO_PROFILE_RELEASE_DEBUG" && (v == "false" || v == "0")),
        "no debug info in the image's binary: {build_env:?}"
    );

    // Non-root.
    let user = runtime
        .iter()
        .rfind(|(op, _)| op == "USER")
        .map(|(_, u)| u.clone())
        .expect("a USER in the runtime stage");
    let name = user.split(':').next().unwrap();
    assert!(name != "root" && name != "0", "runs as {user}");
    assert!(
        runtime
            .iter()
            .any(|(op, rest)| op == "RUN" && rest.contains("useradd") && rest.contains(name)),
        "{name} is created"
    );

    // Listens on every interface, on the port it exposes, checks its health there, and the
    // settings are ones safetel's configuration accepts.
    let runtime_env = env_of(runtime);
    let overrides: Vec<(String, String)> = runtime_env
        .iter()
        .filter(|(k, _)| k.contains("__"))
        .cloned()
        .collect();
    let config = safetel::config::Config::load(None, overrides).expect("the image's settings");
    let (host, port) = config.http.listen.rsplit_once(':').unwrap();
    assert_eq!(host, "0.0.0.0", "the published port must reach the server");
    let exposed: Vec<&str> = runtime
        .iter()
        .filter(|(op, _)| op == "EXPOSE")
        .flat_map(|(_, rest)| rest.split_whitespace())
        .collect();
    assert_eq!(exposed, [port]);
    let healthcheck = runtime
        .iter()
        .find(|(op, _)| op == "HEALTHCHECK")
        .map(|(_, rest)| rest.clone())
        .expect("a HEALTHCHECK");
    assert!(
        healthcheck.contains(&format!("127.0.0.1/{port}"))
            && healthcheck.contains("GET /health/live "),
        "{healthcheck}"
    );
    assert!(
        repo_file("src/http/mod.rs").contains(r#".route("/health/live", get(live))"#),
        "the health check asks a route the server has"
    );
    let compose = repo_file("docker-compose.yml");
    assert!(
        compose.contains(&format!("\"127.0.0.1:{port}:{port}\"")),
        "compose publishes the image's port"
    );
}

#[test]
fn the_compose_service_keeps_its_host_name_so_its_transactional_id_is_stable() {
    let compose = repo_file("docker-compose.yml");
    let service: Vec<&str> = compose
        .lines()
        .skip_while(|l| *l != "  safetel:")
        .skip(1)
        .take_while(|l| l.starts_with("    ") || l.trim().is_empty())
        .collect();
    let hostname = service
        .iter()
        .find_map(|l| l.trim().strip_prefix("hostname: "))
        .expect("the safetel service has a fixed hostname");
    assert!(!hostname.trim().is_empty());
    assert!(
        repo_file("src/kafka/changelog.rs").contains("/proc/sys/kernel/hostname"),
        "the default transactional id is built from the host name"
    );
}
