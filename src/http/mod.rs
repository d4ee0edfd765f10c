//! The HTTP edge: the dashboard pages, their JSON API and Prometheus metrics, read-only views
//! of the engine's state, the store's alerts and model runs.
//!
//! Pages (see [`crate::dashboard`], served as [`pages::Page`]s): `/`, `/regressions`,
//! `/regressions/episode?id=`, `/rare-events`, `/vehicles?q=`, `/diagnostics`,
//! `/vehicles/{id}`, `/cohorts/{key}`, each with its JSON under `/api/...`.
//! Also `GET /api/vehicles/{id}` (counts, bins and change-point detectors), `GET /api/vehicles`,
//! `GET /api/fleet` (fleet totals and the critical-event rate, Horvitz-Thompson under a review
//! budget), `GET /api/status`, `GET /health/live`, `GET /health/ready` (`GET /health` is
//! readiness too; see [`crate::stream::health`]), `GET /metrics`. Handlers only read shared
//! state; nothing here changes it. While the process cannot vouch for owning the partitions it
//! holds (rejoining its group, or just back from a pause), pages and data answer 503.
//!
//! The server ([`serve`]) accepts at most `http.max_connections` at once, closes a connection
//! that sends no request for `http.idle_timeout_ms`, answers a request that takes longer than
//! `http.request_timeout_ms` with 408, and at shutdown waits for open requests only as long as
//! it is told.

mod pages;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLockReadGuard};

use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Json, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::dashboard::coverage::{Coverage, FromGroupView};
use crate::dashboard::summary::{Fleet, Totals};
use crate::dashboard::{FleetVehicles, Sources};
use crate::engine::detection::{DetectionSettings, Series};
use crate::engine::view::GroupState;
use crate::engine::{BinStats, CohortView, HeldFleet, VehicleState};
use crate::generator::GroundTruth;
use crate::metrics::Metrics;
use crate::model::{ByClass, HazardClass, RegressionAlert};
use crate::store::Store;
use crate::stream::health::{self, HealthInputs, Verdict};
use crate::stream::runner::{RunStatus, StatusBoard};

/// What the handlers read.
#[derive(Clone)]
pub struct AppState {
    pub vehicles: HeldFleet,
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
    /// `/health/ready` is 503 while the consumer is further behind than this.
    pub ready_max_lag_records: i64,
    /// The whole group's state, where `run` reads the group view: pages show the partitions
    /// this process does not hold from it.
    pub group: Option<Arc<crate::engine::view::SharedView>>,
}

pub fn router(state: AppState, request_timeout: Duration) -> Router {
    let owned = pages::add_pages(Router::new())
        .route("/api/vehicles", get(vehicles))
        .route("/api/vehicles/{id}", get(vehicle))
        .route("/api/fleet", get(fleet))
        .route_layer(middleware::from_fn_with_state(state.clone(), only_if_owned));
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(ready))
        .route("/health/ready", get(ready))
        .route("/health/live", get(live))
        .route("/api/status", get(status))
        .merge(owned)
        .layer(middleware::from_fn(move |request, next| {
            within(request_timeout, request, next)
        }))
        .with_state(state)
}

/// A request answered within `limit`, or 408.
async fn within(limit: Duration, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => (
            StatusCode::REQUEST_TIMEOUT,
            Json(json!({"error": format!("not answered within {limit:?}")})),
        )
            .into_response(),
    }
}

/// Pages and data only while the process can vouch for owning what it holds.
async fn only_if_owned(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let heartbeat = state.status.heartbeat_unix_ms();
    let status = state.status.snapshot();
    if health::may_serve(&health_inputs(&state, &status, heartbeat)) {
        return next.run(request).await;
    }
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "5")],
        Json(json!({
            "error": "this process is not in step with its consumer group (rejoining, or just back from a pause): it serves nothing until the group assigns it partitions",
            "rejoining_since_unix_ms": status.rejoining_since_unix_ms,
            "membership_unconfirmed_since_unix_ms": status.membership_unconfirmed_since_unix_ms,
            "loop_heartbeat_unix_ms": heartbeat,
        })),
    )
        .into_response()
}

/// How the server bounds its connections.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    pub max_connections: usize,
    pub idle_timeout: Duration,
    pub request_timeout: Duration,
    /// After `shutdown`, how long open requests may take to finish.
    pub drain: Duration,
}

impl HttpLimits {
    pub fn of(config: &crate::config::HttpConfig, drain: Duration) -> HttpLimits {
        HttpLimits {
            max_connections: config.max_connections,
            idle_timeout: Duration::from_millis(config.idle_timeout_ms),
            request_timeout: Duration::from_millis(config.request_timeout_ms),
            drain,
        }
    }
}

/// Serves until `shutdown` resolves, then lets open requests finish for at most
/// `limits.drain`; connections still open then are dropped.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    limits: HttpLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;

    let app = router(state, limits.request_timeout);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let (closing, close) = tokio::sync::watch::channel(false);
    let mut at_limit_logged = false;
    tokio::pin!(shutdown);
    loop {
        let permit = match Arc::clone(&permits).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if !at_limit_logged {
                    tracing::warn!(
                        limit = limits.max_connections,
                        "HTTP connection limit reached: new connections wait until one closes (idle ones close after http.idle_timeout_ms)"
                    );
                    at_limit_logged = true;
                }
                tokio::select! {
                    permit = Arc::clone(&permits).acquire_owned() => permit.expect("the semaphore is never closed"),
                    _ = &mut shutdown => break,
                }
            }
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, say: back off rather than spin.
                    tracing::warn!(error = %e, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        if permits.available_permits() > 0 {
            at_limit_logged = false;
        }
        let service = TowerToHyperService::new(app.clone());
        let mut close = close.clone();
        let idle_timeout = limits.idle_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(idle_timeout)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = close.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
    // No more connections; the open ones finish their request in flight, for so long.
    let _ = closing.send(true);
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(limits.drain, permits.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            open = limits.max_connections - permits.available_permits(),
            "HTTP connections still open at the shutdown deadline are dropped"
        );
    }
    Ok(())
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

/// What a page's data is built from, read once per request: this process's state, and where
/// it reads the group view (and the view has caught up), the other processes' partitions.
struct Snapshot<'a> {
    alerts: Vec<RegressionAlert>,
    model_run: Option<crate::refit::run::ModelRun>,
    cohorts: BTreeMap<String, ByClass<Series>>,
    fleet: HashMap<crate::engine::PartitionId, crate::engine::PartitionView>,
    /// Source partitions this process holds.
    held: HashSet<crate::engine::PartitionId>,
    group: Option<RwLockReadGuard<'a, GroupState>>,
    coverage: Coverage,
}

impl<'a> Snapshot<'a> {
    fn read(state: &'a AppState) -> Result<Snapshot<'a>, ReadError> {
        let mut alerts = state
            .store
            .alerts()
            .map_err(|e| ReadError(format!("reading alerts: {e}")))?;
        let model_run = state
            .store
            .last_model_run()
            .map_err(|e| ReadError(format!("reading model runs: {e}")))?;
        let mut cohorts = state
            .cohorts
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        let mut fleet = state
            .fleet
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        let held: HashSet<crate::engine::PartitionId> = fleet.keys().copied().collect();
        let status = state.status.snapshot();
        let progress = state.group.as_ref().map(|view| view.progress());
        let group = match (&state.group, &progress) {
            (Some(view), Some(progress)) if progress.caught_up_at_ms.is_some() => Some(
                view.state
                    .read()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()),
            ),
            _ => None,
        };
        if let Some(view) = &group {
            for (p, sums) in &view.fleet {
                if !held.contains(p) {
                    let departed = view.partitions.get(p).map_or(0, |s| s.departed);
                    let fleet_sums = sums.clone();
                    fleet.insert(
                        *p,
                        crate::engine::PartitionView {
                            fleet: fleet_sums,
                            departed,
                        },
                    );
                }
            }
            for (key, (_, series)) in &view.cohorts {
                cohorts.entry(key.clone()).or_insert_with(|| series.clone());
            }
            let known: HashSet<String> = alerts.iter().map(|a| a.alert_id.clone()).collect();
            alerts.extend(
                view.alerts
                    .values()
                    .filter(|a| !known.contains(&a.alert_id))
                    .cloned(),
            );
        }
        let coverage = coverage_of(&status, &held, group.as_deref(), progress.as_ref());
        Ok(Snapshot {
            alerts,
            model_run,
            cohorts,
            fleet,
            held,
            group,
            coverage,
        })
    }

    fn sources(&'a self, state: &'a AppState) -> Sources<'a> {
        let vehicles = match &self.group {
            Some(view) => FleetVehicles::with_group(&state.vehicles, &view.vehicles, &self.held),
            None => FleetVehicles::local(&state.vehicles),
        }
        .with_history(state.store.as_ref());
        Sources {
            vehicles,
            cohorts: &self.cohorts,
            fleet: &self.fleet,
            settings: &state.settings,
            alerts: &self.alerts,
            model_run: self.model_run.as_ref(),
            sampling: state.sampling,
            truth: state.truth.as_deref(),
            horizon_days: state.horizon_days,
            history: state.store.as_ref(),
        }
    }
}

/// How much of the consumer group a page's data covers.
fn coverage_of(
    status: &RunStatus,
    held: &HashSet<crate::engine::PartitionId>,
    group: Option<&GroupState>,
    progress: Option<&crate::engine::view::ViewProgress>,
) -> Coverage {
    let mut held_here: Vec<crate::engine::PartitionId> = held.iter().copied().collect();
    held_here.sort_unstable();
    let from_view: Vec<FromGroupView> = group
        .map(|view| {
            view.partitions
                .values()
                .filter(|s| s.partition.is_source())
                .filter(|s| !held.contains(&s.partition))
                .map(|s| FromGroupView {
                    partition: s.partition,
                    member: s.member.clone(),
                    committed_at_ms: s.committed_at_ms,
                })
                .collect()
        })
        .unwrap_or_default();
    let note = match (progress, group) {
        (None, _) => None,
        (Some(p), None) => Some(match &p.error {
            Some(e) => format!("The group view cannot be read ({e}): this process's partitions only"),
            None => "The group view is still being read: this process's partitions only, until it has caught up".to_string(),
        }),
        (Some(p), Some(_)) => p
            .error
            .as_ref()
            .map(|e| format!("The group view's reader reports: {e}")),
    };
    Coverage {
        scope: if group.is_some() { "group" } else { "process" },
        partitions: status.source_partitions,
        covered: held_here.len() + from_view.len(),
        held_here_count: held.len(),
        held_here,
        from_group_view_count: from_view.len(),
        oldest_commit_ms: from_view.iter().map(|s| s.committed_at_ms).min(),
        from_group_view: from_view,
        view_caught_up_at_ms: progress.and_then(|p| p.caught_up_at_ms),
        note,
    }
}

/// A page's JSON (its data with its coverage), or 404 naming what `missing` says when `f`
/// finds nothing.
fn json_or_404<D: serde::Serialize>(
    state: &AppState,
    missing: impl FnOnce() -> String,
    f: impl FnOnce(&Sources<'_>) -> Option<D>,
) -> Result<Response, ReadError> {
    let snapshot = Snapshot::read(state)?;
    let Some(data) = f(&snapshot.sources(state)) else {
        return Ok(not_found(missing()));
    };
    let mut json = json!(data);
    json["coverage"] = json!(snapshot.coverage);
    Ok(Json(json).into_response())
}

/// A page rendered from its data and coverage, or 404 naming what `missing` says when `f`
/// finds nothing.
fn page_or_404<D>(
    state: &AppState,
    missing: impl FnOnce() -> String,
    f: impl FnOnce(&Sources<'_>) -> Option<D>,
    render: impl FnOnce(&D, &Coverage) -> String,
) -> Result<Response, ReadError> {
    let snapshot = Snapshot::read(state)?;
    Ok(match f(&snapshot.sources(state)) {
        Some(data) => Html(render(&data, &snapshot.coverage)).into_response(),
        None => not_found(missing()),
    })
}

fn not_found(what: String) -> Response {
    (StatusCode::NOT_FOUND, Json(json!({"error": what}))).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

/// `/health/live` or `/health/ready`: 200 or 503, the verdict's reasons in the body.
/// `heartbeat` read before `status` (see [`StatusBoard::heartbeat_unix_ms`]).
fn health_inputs<'a>(
    state: &AppState,
    status: &'a RunStatus,
    heartbeat: Option<i64>,
) -> HealthInputs<'a> {
    HealthInputs {
        status,
        now_unix_ms: crate::stream::runner::unix_ms(),
        heartbeat_unix_ms: heartbeat,
        broker_unreachable_since_unix_s: (state.metrics.source_disconnected.get() == 1)
            .then(|| state.metrics.source_disconnected_since.get()),
        commit_failing_since_unix_s: Some(state.metrics.commit_failing_since.get())
            .filter(|t| *t > 0.0),
        dead_letters_above_max: state.metrics.dead_letter_share().alarm,
        max_lag_records: state.ready_max_lag_records,
    }
}

fn health(state: &AppState, verdict: fn(&HealthInputs<'_>) -> Verdict) -> Response {
    let heartbeat = state.status.heartbeat_unix_ms();
    let status = state.status.snapshot();
    let dead_letters = state.metrics.dead_letter_share();
    let inputs = health_inputs(state, &status, heartbeat);
    let (broker_unreachable_since, commit_failing_since) = (
        inputs.broker_unreachable_since_unix_s,
        inputs.commit_failing_since_unix_s,
    );
    let verdict = verdict(&inputs);
    let code = if verdict.ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(json!({
            "healthy": verdict.ok,
            "reasons": verdict.reasons,
            "running": status.running,
            "last_error": status.last_error,
            "assigned_partitions": status.assigned_partitions,
            "assignments": status.assignments,
            "loop_heartbeat_unix_ms": inputs.heartbeat_unix_ms,
            "broker_unreachable_since_unix_s": broker_unreachable_since,
            "commit_failing_since_unix_s": commit_failing_since,
            "dead_letters": dead_letter_json(&dead_letters),
        })),
    )
        .into_response()
}

async fn ready(State(state): State<AppState>) -> Response {
    health(&state, health::readiness)
}

async fn live(State(state): State<AppState>) -> Response {
    health(&state, health::liveness)
}

/// The dead-letter share of the last records, with its top reasons and partitions.
fn dead_letter_json(now: &crate::dead_letter::DeadLetterShare) -> Value {
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
        "detection": state.settings.rules(),
    }))
}

async fn fleet(State(state): State<AppState>) -> Json<Value> {
    Json(json!(Fleet::of(
        &crate::engine::fleet_totals(&state.vehicles),
        state.vehicles.len(),
        state.sampling,
    )))
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
            let mut bin = json!(Totals::of(stats));
            bin["start_ms"] = json!(start);
            bin
        })
        .collect();
    let detectors: serde_json::Map<String, Value> = vehicle
        .series
        .iter()
        .flat_map(|series| series.iter())
        .map(|(class, series)| (class.name().to_string(), series_json(series)))
        .collect();
    json!({
        "vehicle_id": id,
        "partition": vehicle.partition,
        "vehicle_model": vehicle.meta.vehicle_model,
        "firmware_version": vehicle.meta.firmware_version,
        "last_event_time_ms": vehicle.meta.last_event_time_ms,
        "totals": Totals::of(&totals),
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
    let held_here = crate::dashboard::FleetVehicles::local(&state.vehicles)
        .with_history(state.store.as_ref())
        .get(&id);
    if let Some(vehicle) = held_here {
        return Json(vehicle_json(&id, &vehicle)).into_response();
    }
    // A vehicle silent long enough has left memory (README "Retention"): the store has it, if
    // its partition is one this process holds (the store may keep partitions it held before).
    let held = |partition: crate::engine::PartitionId| {
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
                        .ok()
                        .map(Box::new);
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
        Ok(_) => {
            // Another process's vehicle, as of that process's last commit.
            let from_group = state.group.as_ref().and_then(|view| {
                let group = view.state.read().unwrap_or_else(|p| p.into_inner());
                let vehicle = group.vehicles.get(&id).filter(|v| !held(v.partition))?;
                let mut body = vehicle_json(&id, vehicle);
                body["from_group_view"] = json!(true);
                Some(body)
            });
            match from_group {
                Some(body) => Json(body).into_response(),
                None => not_found(format!("no vehicle `{id}`")),
            }
        }
    }
}

async fn vehicles(State(state): State<AppState>) -> Json<Value> {
    let mut list: Vec<(String, BinStats)> = Vec::new();
    state
        .vehicles
        .for_each(|id, v| list.push((id.to_string(), v.totals())));
    list.sort_by(|a, b| a.0.cmp(&b.0));
    let list: Vec<Value> = list
        .iter()
        .map(|(id, totals)| json!({"vehicle_id": id, "totals": Totals::of(totals)}))
        .collect();
    Json(json!({"vehicles": list}))
}
