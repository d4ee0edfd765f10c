//! Page 5, model diagnostics: the last refit's convergence (R-hat, ESS, divergences, E-BFMI),
//! its parameters, trace plots of alpha, mu and sigma by chain, and the posterior predictive
//! check of per-vehicle event counts.

use serde_json::{Value, json};

use super::html::{self, kpi, num, text};
use super::svg::{Chart, PALETTE};
use crate::refit::result::{MAX_RHAT, MIN_ESS_BULK};
use crate::refit::run::ModelRun;

/// The parameters the page shows, as the model run names them.
const PARAMETERS: [&str; 3] = ["alpha", "mu", "sigma"];

/// The last model run's diagnostics, or `{"available": false}` before the first refit.
pub fn data(model_run: Option<&ModelRun>) -> Value {
    let Some(run) = model_run else {
        return json!({"available": false, "max_rhat_limit": MAX_RHAT, "min_ess_bulk_limit": MIN_ESS_BULK});
    };
    let parameters: Vec<Value> = PARAMETERS
        .iter()
        .filter_map(|name| {
            let p = run.parameter(name)?;
            Some(json!({
                "name": name, "mean": p.mean, "sd": p.sd, "q2.5": p.q2_5,
                "q97.5": p.q97_5, "rhat": p.rhat, "ess_bulk": p.ess_bulk,
                "ess_tail": p.ess_tail,
            }))
        })
        .collect();
    let mut posterior_predictive = json!(run.posterior_predictive);
    if let Some(check) = &run.posterior_predictive
        && check.coverage_95.is_finite()
    {
        posterior_predictive["coverage_95_percent"] = json!(check.coverage_95 * 100.0);
    }
    json!({
        "available": true,
        "run_id": run.run_id,
        "converged": run.converged,
        "priors_applied": run.priors_applied,
        "vehicles": run.vehicles,
        "intervals": run.intervals,
        "events": run.events,
        "chains": run.chains,
        "warmup": run.warmup,
        "draws": run.draws,
        "sampling_s": run.sampling_s,
        "total_s": run.total_s,
        "diagnostics": run.diagnostics,
        "max_rhat_limit": MAX_RHAT,
        "min_ess_bulk_limit": MIN_ESS_BULK,
        "parameters": parameters,
        "traces": run.traces,
        "posterior_predictive": posterior_predictive,
    })
}

pub fn page(data: &Value) -> String {
    if data["available"] != json!(true) {
        let body = "<p>No refit has run yet: the detectors use the configured prior. \
            The nightly refit (<code>[refit] schedule_utc</code>) or <code>safetel refit</code> fills this page.</p>";
        return html::page_with(
            data,
            "/diagnostics",
            "Model diagnostics",
            "/api/diagnostics",
            body,
        );
    }
    let verdict = if data["converged"] == json!(true) {
        r#"<span class="good">converged: priors in use</span>"#
    } else {
        r#"<span class="bad">not converged: previous priors kept</span>"#
    };
    let mut body = format!(
        "<p>Run {} · {} vehicles, {} intervals, {} events · {} chains × {} draws ({} warm-up) · {}</p>",
        num(data, "/run_id", 0),
        num(data, "/vehicles", 0),
        num(data, "/intervals", 0),
        num(data, "/events", 0),
        num(data, "/chains", 0),
        num(data, "/draws", 0),
        num(data, "/warmup", 0),
        verdict
    );
    body += r#"<div class="kpis">"#;
    body += &kpi(
        "Max R-hat",
        &num(data, "/diagnostics/max_rhat", 4),
        &format!("limit {}", num(data, "/max_rhat_limit", 2)),
    );
    body += &kpi(
        "Min bulk ESS",
        &num(data, "/diagnostics/min_ess_bulk", 0),
        &format!(
            "limit {}; min tail ESS {}",
            num(data, "/min_ess_bulk_limit", 0),
            num(data, "/diagnostics/min_ess_tail", 0)
        ),
    );
    body += &kpi(
        "Divergences",
        &num(data, "/diagnostics/divergences", 0),
        &format!(
            "tree-depth hits {}; min E-BFMI {}",
            num(data, "/diagnostics/tree_depth_hits", 0),
            num(data, "/diagnostics/ebfmi", 2)
        ),
    );
    body += &kpi(
        "Posterior predictive p-value",
        &num(data, "/posterior_predictive/p_value", 3),
        &format!(
            "{}% of vehicles inside their 95% predictive interval",
            num(data, "/posterior_predictive/coverage_95_percent", 1)
        ),
    );
    body += "</div>";
    let rows: Vec<Vec<String>> = (0..html::rows(data, "/parameters").len())
        .map(|i| {
            let at = |f: &str| format!("/parameters/{i}/{f}");
            vec![
                text(data, &at("name")),
                num(data, &at("mean"), 4),
                num(data, &at("sd"), 4),
                num(data, &at("q2.5"), 4),
                num(data, &at("q97.5"), 4),
                num(data, &at("rhat"), 4),
                num(data, &at("ess_bulk"), 0),
                num(data, &at("ess_tail"), 0),
            ]
        })
        .collect();
    body += &html::table(
        "parameters",
        &[
            "parameter",
            "mean",
            "sd",
            "2.5%",
            "97.5%",
            "R-hat",
            "bulk ESS",
            "tail ESS",
        ],
        &rows,
    );
    body += "<h2>Trace plots</h2>";
    for name in PARAMETERS {
        let mut chart = Chart::new(
            &format!("trace-{name}"),
            &format!("Trace of {name} by chain (thinned)"),
            "draw",
            name,
        )
        .free_y();
        let chains = data
            .pointer(&format!("/traces/{name}"))
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice);
        for (c, chain) in chains.iter().enumerate() {
            let points = chain
                .as_array()
                .map_or(&[][..], Vec::as_slice)
                .iter()
                .enumerate()
                .filter_map(|(i, v)| Some((i as f64, v.as_f64()?)))
                .collect();
            chart.line(&format!("chain {c}"), PALETTE[c % PALETTE.len()], points);
        }
        body += &chart.render();
    }
    body += "<h2>Posterior predictive check</h2>";
    let buckets = html::rows(data, "/posterior_predictive/count_histogram");
    let mut ppc = Chart::new(
        "posterior-predictive",
        "Vehicles by event count, observed and replicated (95%)",
        "events per vehicle (last bucket: at least)",
        "vehicles",
    );
    ppc.bars(
        "observed",
        PALETTE[2],
        html::points(
            data,
            "/posterior_predictive/count_histogram",
            "events",
            "observed",
        ),
        0.8,
    );
    ppc.intervals(
        "replicated",
        PALETTE[1],
        html::interval_points(
            buckets,
            html::X::Field("/events"),
            "/replicated_mean",
            "/replicated_low",
            "/replicated_high",
        ),
    );
    body += &ppc.render();
    html::page_with(
        data,
        "/diagnostics",
        "Model diagnostics",
        "/api/diagnostics",
        &body,
    )
}
