//! The dashboard's pages as the HTTP edge serves them. Each page is a [`Page`]: its two routes
//! (the HTML page and its JSON), how its parameters arrive (none, a query string, a path
//! segment), what it shows (its data, from `dashboard`), what a 404 says, and its HTML rendered
//! from that data. [`add_pages`] registers every page; adding one is a type here and a line
//! there (with its module in `src/dashboard/` and its navigation entry).

use axum::Router;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::response::Response;
use axum::routing::get;
use serde_json::Value;

use super::{AppState, ReadError, json_or_404, page_or_404};
use crate::dashboard::{self, Sources};

/// One dashboard page.
pub trait Page: 'static {
    /// Where its HTML is served.
    const HTML: &'static str;
    /// Where its data is served as JSON (what the HTML is rendered from, and its coverage).
    const JSON: &'static str;
    /// What a request says: `()`, a [`Query`] or a [`Path`].
    type Params: FromRequestParts<AppState> + Send;

    /// Its data, or `None` when what `params` names is not known (a 404).
    fn data(sources: &Sources<'_>, params: &Self::Params) -> Option<Value>;

    /// What the 404 says when [`Page::data`] finds nothing.
    fn missing(_params: &Self::Params) -> String {
        format!("nothing at {}", Self::HTML)
    }

    /// Its HTML, from its data.
    fn render(data: &Value, params: &Self::Params) -> String;
}

/// Both routes of every page.
pub fn add_pages(router: Router<AppState>) -> Router<AppState> {
    let router = add::<Summary>(router);
    let router = add::<Regressions>(router);
    let router = add::<Episode>(router);
    let router = add::<RareEvents>(router);
    let router = add::<Ranking>(router);
    let router = add::<Diagnostics>(router);
    let router = add::<VehiclePage>(router);
    add::<CohortPage>(router)
}

fn add<P: Page>(router: Router<AppState>) -> Router<AppState> {
    router
        .route(P::HTML, get(html_of::<P>))
        .route(P::JSON, get(json_of::<P>))
}

async fn json_of<P: Page>(
    State(state): State<AppState>,
    params: P::Params,
) -> Result<Response, ReadError> {
    json_or_404(&state, || P::missing(&params), |s| P::data(s, &params))
}

async fn html_of<P: Page>(
    State(state): State<AppState>,
    params: P::Params,
) -> Result<Response, ReadError> {
    page_or_404(
        &state,
        || P::missing(&params),
        |s| P::data(s, &params),
        |data| P::render(data, &params),
    )
}

struct Summary;

impl Page for Summary {
    const HTML: &'static str = "/";
    const JSON: &'static str = "/api/summary";
    type Params = ();

    fn data(sources: &Sources<'_>, _: &()) -> Option<Value> {
        Some(dashboard::summary::data(sources))
    }

    fn render(data: &Value, _: &()) -> String {
        dashboard::summary::page(data)
    }
}

struct Regressions;

impl Page for Regressions {
    const HTML: &'static str = "/regressions";
    const JSON: &'static str = "/api/regressions";
    type Params = ();

    fn data(sources: &Sources<'_>, _: &()) -> Option<Value> {
        Some(dashboard::regressions::data(
            sources.alerts,
            sources.settings.rules_json(),
        ))
    }

    fn render(data: &Value, _: &()) -> String {
        dashboard::regressions::page(data)
    }
}

#[derive(serde::Deserialize)]
struct EpisodeQuery {
    id: String,
}

struct Episode;

impl Page for Episode {
    const HTML: &'static str = "/regressions/episode";
    const JSON: &'static str = "/api/regressions/episode";
    type Params = Query<EpisodeQuery>;

    fn data(sources: &Sources<'_>, q: &Self::Params) -> Option<Value> {
        dashboard::regressions::episode_data(sources, &q.id)
    }

    fn missing(q: &Self::Params) -> String {
        format!("no episode `{}`", q.id)
    }

    fn render(data: &Value, q: &Self::Params) -> String {
        dashboard::regressions::episode_page(data, &q.id)
    }
}

struct RareEvents;

impl Page for RareEvents {
    const HTML: &'static str = "/rare-events";
    const JSON: &'static str = "/api/rare-events";
    type Params = ();

    fn data(sources: &Sources<'_>, _: &()) -> Option<Value> {
        Some(dashboard::rare_events::data(sources))
    }

    fn render(data: &Value, _: &()) -> String {
        dashboard::rare_events::page(data)
    }
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

/// The vehicle ranking.
struct Ranking;

impl Page for Ranking {
    const HTML: &'static str = "/vehicles";
    const JSON: &'static str = "/api/vehicle-ranking";
    type Params = Query<RankingQuery>;

    fn data(sources: &Sources<'_>, q: &Self::Params) -> Option<Value> {
        Some(dashboard::vehicles::data(sources, &q.q, q.limit()))
    }

    fn render(data: &Value, _: &Self::Params) -> String {
        dashboard::vehicles::page(data)
    }
}

struct Diagnostics;

impl Page for Diagnostics {
    const HTML: &'static str = "/diagnostics";
    const JSON: &'static str = "/api/diagnostics";
    type Params = ();

    fn data(sources: &Sources<'_>, _: &()) -> Option<Value> {
        Some(dashboard::diagnostics::data(sources.model_run))
    }

    fn render(data: &Value, _: &()) -> String {
        dashboard::diagnostics::page(data)
    }
}

/// One vehicle's page.
struct VehiclePage;

impl Page for VehiclePage {
    const HTML: &'static str = "/vehicles/{id}";
    const JSON: &'static str = "/api/vehicles/{id}/page";
    type Params = Path<String>;

    fn data(sources: &Sources<'_>, id: &Self::Params) -> Option<Value> {
        dashboard::keys::vehicle_data(sources, id)
    }

    fn missing(id: &Self::Params) -> String {
        format!("no vehicle `{}` in memory in this consumer group", id.0)
    }

    fn render(data: &Value, _: &Self::Params) -> String {
        dashboard::keys::vehicle_page(data)
    }
}

/// One cohort's page.
struct CohortPage;

impl Page for CohortPage {
    const HTML: &'static str = "/cohorts/{key}";
    const JSON: &'static str = "/api/cohorts/{key}";
    type Params = Path<String>;

    fn data(sources: &Sources<'_>, key: &Self::Params) -> Option<Value> {
        dashboard::keys::cohort_data(sources, key)
    }

    fn missing(key: &Self::Params) -> String {
        format!("no cohort `{}` in this consumer group", key.0)
    }

    fn render(data: &Value, _: &Self::Params) -> String {
        dashboard::keys::cohort_page(data)
    }
}
