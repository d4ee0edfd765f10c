//! The HTTP edge: the dashboard pages, their JSON API and Prometheus metrics, read-only views
//! of the engine's state, the store's alerts and model runs.
//!
//! Pages (see [`crate::dashboard`]): `/`, `/regressions`, `/regressions/episode?id=`,
//! `/rare-events`, `/vehicles?q=`, `/diagnostics`, each with its JSON under `/api/...`.
//! Also `GET /api/vehicles/{id}` (counts, bins and change-point detectors), `GET /api/vehicles`,
//! `GET /api/fleet` (fleet totals and the critical-event rate, Horvitz-Thompson under a review
//! budget), `GET /api/status`, `GET /health`, `GET /metrics`. Handlers only read shared state;
//! nothing here changes it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Json, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::dashboard::summary::{fleet_json, totals_json};
use crate::dashboard::{self, Sources};
use crate::engine::detection::{DetectionSettings, Series};
use crate::engine::runner::StatusBoard;
use crate::engine::{BinStats, CohortView, VehicleState, Vehicles};
use crate::generator::GroundTruth;
use crate::metrics::Metrics;
use crate::model::{HazardClass, RegressionAlert};
use crate::store::Store;

/// What the handlers read.
#[derive(Clone)]
pub struct AppState {
    pub vehicles: Arc<Vehicles>,
    pub cohorts: Arc<CohortView>,
    /// Each source partition's fleet sums as of the last commit point.
    pub fleet: Arc<crate::engine::FleetView>,
    pub settings: Arc<DetectionSettings>,
    /// Alerts and model runs (RocksDB reads are safe beside the pipeline's writes).
    pub store: Arc<Store>,
    pub metrics: Metrics,
    pub status: Arc<StatusBoard>,
    /// The review policy and budget, when critical events are reviewed under a budget.
    pub sampling: Option<(&'static str, f64)>,
    /// The injected regressions, when the stream is a simulation that knows them (the demo).
    pub truth: Option<Arc<GroundTruth>>,
    /// A regression counts as detected when an alert opened within this many days of onset.
    pub horizon_days: f64,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(summary_page))
        .route("/regressions", get(regressions_page))
        .route("/regressions/episode", get(episode_page))
        .route("/rare-events", get(rare_events_page))
        .route("/vehicles", get(vehicles_page))
        .route("/diagnostics", get(diagnostics_page))
        .route("/api/summary", get(summary))
        .route("/api/regressions", get(regressions))
        .route("/api/regressions/episode", get(episode))
        .route("/api/rare-events", get(rare_events))
        .route("/api/vehicle-ranking", get(vehicle_ranking))
        .route("/api/diagnostics", get(diagnostics))
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/api/status", get(status))
        .route("/api/vehicles", get(vehicles))
        .route("/api/vehicles/{id}", get(vehicle))
        .route("/api/fleet", get(fleet))
        .with_state(state)
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// A failed read of the store, as the API reports it.
struct ReadError(String);

impl IntoResponse for ReadError {
    fn into_response(self) -> Response {
        tracing::error!(error = %self.0, "dashboard read failed");
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": self.0})),
        )
            .into_response()
    }
}

/// What a page's data is built from, read once per request.
struct Snapshot {
    alerts: Vec<RegressionAlert>,
    model_run: Option<Value>,
    cohorts: BTreeMap<String, Vec<Series>>,
    fleet: HashMap<i32, crate::engine::PartitionView>,
}

impl Snapshot {
    fn read(state: &AppState) -> Result<Snapshot, ReadError> {
        let alerts = state
            .store
            .alerts()
            .map_err(|e| ReadError(format!("reading alerts: {e}")))?;
        let model_run = state
            .store
            .last_model_run()
            .map_err(|e| ReadError(format!("reading model runs: {e}")))?;
        let cohorts = state
            .cohorts
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        let fleet = state
            .fleet
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        Ok(Snapshot {
            alerts,
            model_run,
            cohorts,
            fleet,
        })
    }

    fn sources<'a>(&'a self, state: &'a AppState) -> Sources<'a> {
        Sources {
            vehicles: &state.vehicles,
            cohorts: &self.cohorts,
            fleet: &self.fleet,
            settings: &state.settings,
            alerts: &self.alerts,
            model_run: self.model_run.as_ref(),
            sampling: state.sampling,
            truth: state.truth.as_deref(),
            horizon_days: state.horizon_days,
        }
    }
}

/// Runs `f` on the request's sources; the handlers below differ only in what `f` builds.
fn with_sources<T>(state: &AppState, f: impl FnOnce(&Sources<'_>) -> T) -> Result<T, ReadError> {
    let snapshot = Snapshot::read(state)?;
    Ok(f(&snapshot.sources(state)))
}

async fn summary(State(state): State<AppState>) -> Result<Json<Value>, ReadError> {
    with_sources(&state, dashboard::summary::data).map(Json)
}

async fn summary_page(State(state): State<AppState>) -> Result<Html<String>, ReadError> {
    with_sources(&state, |s| {
        dashboard::summary::page(&dashboard::summary::data(s))
    })
    .map(Html)
}

async fn regressions(State(state): State<AppState>) -> Result<Json<Value>, ReadError> {
    with_sources(&state, |s| dashboard::regressions::data(s.alerts)).map(Json)
}

async fn regressions_page(State(state): State<AppState>) -> Result<Html<String>, ReadError> {
    with_sources(&state, |s| {
        dashboard::regressions::page(&dashboard::regressions::data(s.alerts))
    })
    .map(Html)
}

#[derive(serde::Deserialize)]
struct EpisodeQuery {
    id: String,
}

fn no_episode(id: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": format!("no episode `{id}`")})),
    )
        .into_response()
}

async fn episode(
    State(state): State<AppState>,
    Query(q): Query<EpisodeQuery>,
) -> Result<Response, ReadError> {
    let data = with_sources(&state, |s| dashboard::regressions::episode_data(s, &q.id))?;
    Ok(match data {
        Some(data) => Json(data).into_response(),
        None => no_episode(&q.id),
    })
}

async fn episode_page(
    State(state): State<AppState>,
    Query(q): Query<EpisodeQuery>,
) -> Result<Response, ReadError> {
    let data = with_sources(&state, |s| dashboard::regressions::episode_data(s, &q.id))?;
    Ok(match data {
        Some(data) => Html(dashboard::regressions::episode_page(&data, &q.id)).into_response(),
        None => no_episode(&q.id),
    })
}

async fn rare_events(State(state): State<AppState>) -> Result<Json<Value>, ReadError> {
    with_sources(&state, dashboard::rare_events::data).map(Json)
}

async fn rare_events_page(State(state): State<AppState>) -> Result<Html<String>, ReadError> {
    with_sources(&state, |s| {
        dashboard::rare_events::page(&dashboard::rare_events::data(s))
    })
    .map(Html)
}

#[derive(serde::Deserialize)]
struct RankingQuery {
    #[serde(default)]
    q: String,
    limit: Option<usize>,
}

impl RankingQuery {
    fn limit(&self) -> usize {
        self.limit
            .unwrap_or(dashboard::vehicles::DEFAULT_LIMIT)
            .clamp(1, 10_000)
    }
}

async fn vehicle_ranking(
    State(state): State<AppState>,
    Query(q): Query<RankingQuery>,
) -> Result<Json<Value>, ReadError> {
    with_sources(&state, |s| dashboard::vehicles::data(s, &q.q, q.limit())).map(Json)
}

async fn vehicles_page(
    State(state): State<AppState>,
    Query(q): Query<RankingQuery>,
) -> Result<Html<String>, ReadError> {
    with_sources(&state, |s| {
        dashboard::vehicles::page(&dashboard::vehicles::data(s, &q.q, q.limit()))
    })
    .map(Html)
}

async fn diagnostics(State(state): State<AppState>) -> Result<Json<Value>, ReadError> {
    with_sources(&state, |s| dashboard::diagnostics::data(s.model_run)).map(Json)
}

async fn diagnostics_page(State(state): State<AppState>) -> Result<Html<String>, ReadError> {
    with_sources(&state, |s| {
        dashboard::diagnostics::page(&dashboard::diagnostics::data(s.model_run))
    })
    .map(Html)
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

async fn health(State(state): State<AppState>) -> Response {
    let status = state.status.snapshot();
    let broker_unreachable_since = (state.metrics.source_disconnected.get() == 1)
        .then(|| state.metrics.source_disconnected_since.get());
    let dead_letters = state.metrics.dead_letter_share();
    let commit_failing_since = Some(state.metrics.commit_failing_since.get()).filter(|t| *t > 0.0);
    let healthy = status.running
        && status.last_error.is_none()
        && broker_unreachable_since.is_none()
        && commit_failing_since.is_none()
        && !dead_letters.alarm;
    let code = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(
            json!({"healthy": healthy, "running": status.running, "last_error": status.last_error,
                "broker_unreachable_since_unix_s": broker_unreachable_since,
                "commit_failing_since_unix_s": commit_failing_since,
                "dead_letters": dead_letter_json(&dead_letters)}),
        ),
    )
        .into_response()
}

/// The dead-letter share of the last records, with its top reasons and partitions.
fn dead_letter_json(now: &crate::engine::recent::DeadLetterShare) -> Value {
    let top = |pairs: Vec<Value>| pairs.into_iter().take(5).collect::<Vec<Value>>();
    json!({
        "records": now.records,
        "dead_lettered": now.dead_lettered,
        "share": now.share,
        "max_share": now.max_share,
        "above_max": now.alarm,
        "top_reasons": top(now.reasons.iter().map(|(r, n)| json!({"reason": r, "records": n})).collect()),
        "top_partitions": top(now.partitions.iter().map(|(p, n)| json!({"partition": p, "records": n})).collect()),
    })
}

async fn status(State(state): State<AppState>) -> Json<Value> {
    let m = &state.metrics;
    Json(json!({
        "run": state.status.snapshot(),
        "records_received": m.records_received.get(),
        "records_accepted": m.accepted_total(),
        "records_dead_lettered": m.dlq_total(),
        "vehicles": state.vehicles.len(),
        "detection": state.settings.rules_json(),
    }))
}

async fn fleet(State(state): State<AppState>) -> Json<Value> {
    Json(fleet_json(
        &crate::engine::fleet_totals(&state.vehicles),
        state.vehicles.len(),
        state.sampling,
    ))
}

/// A vehicle's statistics: totals, per hazard class rates, and per-bin counts and exposure.
pub fn vehicle_json(id: &str, vehicle: &VehicleState) -> Value {
    let totals = vehicle.totals();
    let classes: serde_json::Map<String, Value> = HazardClass::ALL
        .iter()
        .map(|class| {
            let events = totals.count(*class);
            let hours = totals.exposure_hours();
            let rate = if hours > 0.0 {
                Some(events as f64 / hours * 1000.0)
            } else {
                None
            };
            (
                class.name().to_string(),
                json!({"events": events, "exposure_hours": hours, "rate_per_1000h": rate}),
            )
        })
        .collect();
    let bins: Vec<Value> = vehicle
        .bins
        .iter()
        .map(|(start, stats)| {
            let mut bin = totals_json(stats);
            bin["start_ms"] = json!(start);
            bin
        })
        .collect();
    let detectors: serde_json::Map<String, Value> = vehicle
        .series
        .iter()
        .zip(HazardClass::ALL)
        .map(|(series, class)| (class.name().to_string(), series_json(series)))
        .collect();
    json!({
        "vehicle_id": id,
        "partition": vehicle.partition,
        "vehicle_model": vehicle.meta.vehicle_model,
        "firmware_version": vehicle.meta.firmware_version,
        "last_event_time_ms": vehicle.meta.last_event_time_ms,
        "totals": totals_json(&totals),
        "hazard_classes": classes,
        "detectors": detectors,
        "bins": bins,
    })
}

/// A change-point series: the last closed bin's conclusions (P(regression), the threshold it
/// opens at, onset estimate, expected and seen events, HR with its 95% CrI), the open episode
/// if any, and the key's own history behind its baseline.
pub fn series_json(series: &Series) -> Value {
    let ((old_events, old_exposure), (guarded_events, guarded_exposure)) =
        series.detector.own_sums();
    json!({
        "next_bin_ms": series.next_bin_ms,
        "last_bin": series.last,
        "open_episode": series.episode.open,
        "own_history": {
            "in_baseline": {"events": old_events, "exposure": old_exposure},
            "in_guard_window": {"events": guarded_events, "exposure": guarded_exposure},
        },
    })
}

async fn vehicle(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    if let Some(vehicle) = state.vehicles.get(&id) {
        return Json(vehicle_json(&id, &vehicle)).into_response();
    }
    // A vehicle silent long enough has left memory (README "Retention"): the store has it, if
    // its partition is one this process holds (the store may keep partitions it held before).
    let held = |partition: i32| {
        state
            .fleet
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .contains_key(&partition)
    };
    match state.store.find_vehicle(&id) {
        Ok(Some((mut vehicle, series))) if held(vehicle.partition) => {
            if let Some(bytes) = series {
                vehicle.series =
                    crate::engine::detection::decode_series(state.settings.params, &bytes)
                        .unwrap_or_default();
            }
            let mut body = vehicle_json(&id, &vehicle);
            body["departed"] = json!(true);
            Json(body).into_response()
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": format!("reading vehicle `{id}` from the store: {e}")})),
        )
            .into_response(),
        Ok(_) => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no vehicle `{id}`")})),
        )
            .into_response(),
    }
}

async fn vehicles(State(state): State<AppState>) -> Json<Value> {
    let mut list: Vec<(String, BinStats)> = state
        .vehicles
        .iter()
        .map(|v| (v.key().clone(), v.totals()))
        .collect();
    list.sort_by(|a, b| a.0.cmp(&b.0));
    let list: Vec<Value> = list
        .iter()
        .map(|(id, totals)| json!({"vehicle_id": id, "totals": totals_json(totals)}))
        .collect();
    Json(json!({"vehicles": list}))
}
