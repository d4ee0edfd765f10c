//! Page 5, model diagnostics: the last refit's convergence (R-hat, ESS, divergences, E-BFMI),
//! its parameters, trace plots of alpha, mu and sigma by chain, and the posterior predictive
//! check of per-vehicle event counts.

use std::collections::BTreeMap;

use serde::Serialize;

use super::Coverage;
use super::html::{self, kpi, num};
use super::svg::{Chart, PALETTE};
use crate::refit::result::{Diagnostics, MAX_RHAT, MIN_ESS_BULK, PredictiveCheck};
use crate::refit::run::{ModelRun, RunOutline};

/// The parameters the page shows, as the model run names them.
const PARAMETERS: [&str; 3] = ["alpha", "mu", "sigma"];

/// The diagnostics page's data (`/api/diagnostics`): the limits, and the last run's
/// diagnostics once there is one (`available`).
#[derive(Debug, Clone, Serialize)]
pub struct DiagnosticsPage {
    pub available: bool,
    pub max_rhat_limit: f64,
    pub min_ess_bulk_limit: f64,
    #[serde(flatten)]
    pub run: Option<RunDiagnostics>,
}

/// One refit's convergence, parameters, traces and posterior predictive check.
#[derive(Debug, Clone, Serialize)]
pub struct RunDiagnostics {
    #[serde(flatten)]
    pub outline: RunOutline,
    pub chains: usize,
    pub warmup: u64,
    pub draws: u64,
    pub sampling_s: f64,
    pub total_s: f64,
    pub diagnostics: Option<Diagnostics>,
    pub parameters: Vec<ParameterRow>,
    pub traces: BTreeMap<String, Vec<Vec<f64>>>,
    pub posterior_predictive: Option<Predictive>,
}

/// A population parameter's posterior summary.
#[derive(Debug, Clone, Serialize)]
pub struct ParameterRow {
    pub name: &'static str,
    pub mean: f64,
    pub sd: f64,
    #[serde(rename = "q2.5")]
    pub q2_5: f64,
    #[serde(rename = "q97.5")]
    pub q97_5: f64,
    pub rhat: f64,
    pub ess_bulk: f64,
    pub ess_tail: f64,
}

/// The posterior predictive check, with its coverage in percent where there is one.
#[derive(Debug, Clone, Serialize)]
pub struct Predictive {
    #[serde(flatten)]
    pub check: PredictiveCheck,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coverage_95_percent: Option<f64>,
}

/// The last model run's diagnostics, or only the limits before the first refit.
pub fn data(model_run: Option<&ModelRun>) -> DiagnosticsPage {
    DiagnosticsPage {
        available: model_run.is_some(),
        max_rhat_limit: MAX_RHAT,
        min_ess_bulk_limit: MIN_ESS_BULK,
        run: model_run.map(run_diagnostics),
    }
}

fn run_diagnostics(run: &ModelRun) -> RunDiagnostics {
    let parameters = PARAMETERS
        .iter()
        .filter_map(|name| {
            let p = run.parameter(name)?;
            Some(ParameterRow {
                name,
                mean: p.mean,
                sd: p.sd,
                q2_5: p.q2_5,
                q97_5: p.q97_5,
                rhat: p.rhat,
                ess_bulk: p.ess_bulk,
                ess_tail: p.ess_tail,
            })
        })
        .collect();
    RunDiagnostics {
        outline: run.outline.clone(),
        chains: run.chains,
        warmup: run.warmup,
        draws: run.draws,
        sampling_s: run.sampling_s,
        total_s: run.total_s,
        diagnostics: run.diagnostics.clone(),
        parameters,
        traces: run.traces.clone(),
        posterior_predictive: run.posterior_predictive.clone().map(|check| Predictive {
            coverage_95_percent: check
                .coverage_95
                .is_finite()
                .then_some(check.coverage_95 * 100.0),
            check,
        }),
    }
}

pub fn page(data: &DiagnosticsPage, coverage: &Coverage) -> String {
    let Some(run) = &data.run else {
        let body = "<p>No refit has run yet: the detectors use the configured prior. \
            The nightly refit (<code>[refit] schedule_utc</code>) or <code>safetel refit</code> fills this page.</p>";
        return html::page_with(
            coverage,
            "/diagnostics",
            "Model diagnostics",
            "/api/diagnostics",
            body,
        );
    };
    let verdict = if run.outline.converged {
        r#"<span class="good">converged: priors in use</span>"#
    } else {
        r#"<span class="bad">not converged: previous priors kept</span>"#
    };
    let mut body = format!(
        "<p>Run {} · {} vehicles, {} intervals, {} events · {} chains × {} draws ({} warm-up) · {}</p>",
        num(run.outline.run_id, "/run_id", 0),
        num(run.outline.vehicles, "/vehicles", 0),
        num(run.outline.intervals, "/intervals", 0),
        num(run.outline.events, "/events", 0),
        num(run.chains, "/chains", 0),
        num(run.draws, "/draws", 0),
        num(run.warmup, "/warmup", 0),
        verdict
    );
    body += &kpis_html(data, run);
    body += &parameters_html(&run.parameters);
    body += "<h2>Trace plots</h2>";
    for name in PARAMETERS {
        let mut chart = Chart::new(
            &format!("trace-{name}"),
            &format!("Trace of {name} by chain (thinned)"),
            "draw",
            name,
        )
        .free_y();
        let chains = run.traces.get(name).map_or(&[][..], Vec::as_slice);
        for (c, chain) in chains.iter().enumerate() {
            let points = chain
                .iter()
                .enumerate()
                .filter(|(_, v)| v.is_finite())
                .map(|(i, v)| (i as f64, *v))
                .collect();
            chart.line(&format!("chain {c}"), PALETTE[c % PALETTE.len()], points);
        }
        body += &chart.render();
    }
    body += "<h2>Posterior predictive check</h2>";
    let buckets = run
        .posterior_predictive
        .as_ref()
        .map_or(&[][..], |p| p.check.count_histogram.as_slice());
    let finite = |v: f64| v.is_finite().then_some(v);
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
            buckets,
            |b| Some(b.events as f64),
            |b| Some(b.observed as f64),
        ),
        0.8,
    );
    ppc.intervals(
        "replicated",
        PALETTE[1],
        html::interval_points(
            buckets,
            |_, b| Some(b.events as f64),
            |b| {
                [
                    finite(b.replicated_mean),
                    finite(b.replicated_low),
                    finite(b.replicated_high),
                ]
            },
        ),
    );
    body += &ppc.render();
    html::page_with(
        coverage,
        "/diagnostics",
        "Model diagnostics",
        "/api/diagnostics",
        &body,
    )
}

fn kpis_html(data: &DiagnosticsPage, run: &RunDiagnostics) -> String {
    let d = run.diagnostics.as_ref();
    let check = run.posterior_predictive.as_ref();
    let mut body = String::from(r#"<div class="kpis">"#);
    body += &kpi(
        "Max R-hat",
        &num(d.map(|d| d.max_rhat), "/diagnostics/max_rhat", 4),
        &format!("limit {}", num(data.max_rhat_limit, "/max_rhat_limit", 2)),
    );
    body += &kpi(
        "Min bulk ESS",
        &num(d.map(|d| d.min_ess_bulk), "/diagnostics/min_ess_bulk", 0),
        &format!(
            "limit {}; min tail ESS {}",
            num(data.min_ess_bulk_limit, "/min_ess_bulk_limit", 0),
            num(d.map(|d| d.min_ess_tail), "/diagnostics/min_ess_tail", 0)
        ),
    );
    body += &kpi(
        "Divergences",
        &num(d.map(|d| d.divergences), "/diagnostics/divergences", 0),
        &format!(
            "tree-depth hits {}; min E-BFMI {}",
            num(
                d.map(|d| d.tree_depth_hits),
                "/diagnostics/tree_depth_hits",
                0
            ),
            num(d.map(|d| d.ebfmi), "/diagnostics/ebfmi", 2)
        ),
    );
    body += &kpi(
        "Posterior predictive p-value",
        &num(
            check.map(|c| c.check.p_value),
            "/posterior_predictive/p_value",
            3,
        ),
        &format!(
            "{}% of vehicles inside their 95% predictive interval",
            num(
                check.and_then(|c| c.coverage_95_percent),
                "/posterior_predictive/coverage_95_percent",
                1
            )
        ),
    );
    body + "</div>"
}

fn parameters_html(parameters: &[ParameterRow]) -> String {
    let rows: Vec<Vec<String>> = parameters
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let at = |f: &str| format!("/parameters/{i}/{f}");
            vec![
                html::escape(p.name),
                num(p.mean, &at("mean"), 4),
                num(p.sd, &at("sd"), 4),
                num(p.q2_5, &at("q2.5"), 4),
                num(p.q97_5, &at("q97.5"), 4),
                num(p.rhat, &at("rhat"), 4),
                num(p.ess_bulk, &at("ess_bulk"), 0),
                num(p.ess_tail, &at("ess_tail"), 0),
            ]
        })
        .collect();
    html::table(
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
    )
}
