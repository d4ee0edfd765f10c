//! The HTTP edge: JSON API and Prometheus metrics, read-only views of the engine's state.
//!
//! `GET /api/vehicles/{id}` (counts, bins and change-point detectors), `GET /api/vehicles`,
//! `GET /api/fleet` (fleet totals and the critical-event rate, Horvitz-Thompson under a review
//! budget), `GET /api/status`, `GET /health`, `GET /metrics`. Handlers only read shared state; nothing here changes it.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::engine::detection::Series;
use crate::engine::runner::StatusBoard;
use crate::engine::{BinStats, VehicleState, Vehicles};
use crate::metrics::Metrics;
use crate::model::HazardClass;

/// What the handlers read.
#[derive(Clone)]
pub struct AppState {
    pub vehicles: Arc<Vehicles>,
    pub metrics: Metrics,
    pub status: Arc<StatusBoard>,
    /// The review policy and budget, when critical events are reviewed under a budget.
    pub sampling: Option<(&'static str, f64)>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
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

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

async fn health(State(state): State<AppState>) -> Response {
    let status = state.status.snapshot();
    let healthy = status.running && status.last_error.is_none();
    let code = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(
            json!({"healthy": healthy, "running": status.running, "last_error": status.last_error}),
        ),
    )
        .into_response()
}

async fn status(State(state): State<AppState>) -> Json<Value> {
    let m = &state.metrics;
    Json(json!({
        "run": state.status.snapshot(),
        "records_received": m.records_received.get(),
        "records_accepted": m.accepted_total(),
        "records_dead_lettered": m.dlq_total(),
        "vehicles": state.vehicles.len(),
    }))
}

async fn fleet(State(state): State<AppState>) -> Json<Value> {
    Json(fleet_json(
        &crate::engine::fleet_totals(&state.vehicles),
        state.vehicles.len(),
        state.sampling,
    ))
}

/// Fleet totals and the critical-event rate per 1000 exposure hours with a 95% interval. Under
/// a review budget, critical events are known only for reviewed trips: the fleet's total is
/// their Horvitz-Thompson estimate (each reviewed event weighted 1/pi) with its variance, and
/// the interval is normal on it. Exposure is known for every trip.
pub fn fleet_json(totals: &BinStats, vehicles: usize, sampling: Option<(&str, f64)>) -> Value {
    let hours = totals.exposure_hours();
    let (estimate, variance) = match sampling {
        Some(_) => totals.ht_critical(),
        None => (totals.critical as f64, 0.0),
    };
    let per_1000h = |events: f64| (hours > 0.0).then(|| events / hours * 1000.0);
    let se = variance.sqrt();
    json!({
        "vehicles": vehicles,
        "totals": totals_json(totals),
        "sampling": sampling.map(|(policy, budget)| json!({
            "policy": policy,
            "budget": budget,
            "reviewed_trips": totals.reviewed_trips,
            "reviewed_share": (totals.trips > 0).then(|| totals.reviewed_trips as f64 / totals.trips as f64),
            "reviewed_critical": totals.reviewed_critical,
        })),
        "critical": {
            "estimate": estimate,
            "standard_error": se,
            "method": if sampling.is_some() { "horvitz_thompson" } else { "observed" },
            "rate_per_1000h": per_1000h(estimate),
            "rate_per_1000h_ci95": [per_1000h((estimate - 1.96 * se).max(0.0)), per_1000h(estimate + 1.96 * se)],
        },
    })
}

fn totals_json(stats: &BinStats) -> Value {
    json!({
        "trips": stats.trips,
        "exposure_hours": stats.exposure_hours(),
        "exposure_ms": stats.exposure_ms,
        "safety_events": stats.safety_events,
        "critical": stats.critical,
        "disengagements": stats.disengagements,
        "mode_transitions": stats.mode_transitions,
    })
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

/// A change-point series: the last closed bin's conclusions (P(regression), MAP run length and
/// onset, HR with its 95% CrI), the open episode if any, and the run-length posterior.
pub fn series_json(series: &Series) -> Value {
    let posterior: Vec<Value> = series
        .detector
        .run_length_posterior()
        .into_iter()
        .map(|(r, p)| json!([r, p]))
        .collect();
    json!({
        "next_bin_ms": series.next_bin_ms,
        "last_bin": series.last,
        "open_episode": series.episode.open,
        "run_length_posterior": posterior,
    })
}

async fn vehicle(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match state.vehicles.get(&id) {
        Some(vehicle) => Json(vehicle_json(&id, &vehicle)).into_response(),
        None => (
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
