//! The dashboard's pages as the HTTP edge serves them. Every page is a [`Page`]: its two routes
//! (the HTML page and its JSON), how its parameters arrive (none, a path segment, a query
//! string), its data (from `dashboard`), what its 404 says, and its HTML rendered from that
//! data. The pages without parameters ([`PLAIN`]) and those of one key ([`KEYED`]) are tables;
//! [`add_pages`] registers every page in a loop. Adding a page is a row here (with its module in
//! `src/dashboard/` and its navigation entry).

use axum::Router;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::response::Response;
use axum::routing::get;
use serde_json::Value;

use super::{AppState, ReadError, json_or_404, page_or_404};
use crate::dashboard::{self, Sources};

/// One dashboard page.
pub trait Page: Sync + 'static {
    /// What a request says: `()`, a [`Path`] or a [`Query`].
    type Params: FromRequestParts<AppState> + Send + 'static;

    /// Where its HTML is served.
    fn html(&self) -> &'static str;

    /// Where its data is served as JSON (what the HTML is rendered from, and its coverage).
    fn json(&self) -> &'static str;

    /// Its data, or `None` when what `params` names is not known (a 404).
    fn data(&self, sources: &Sources<'_>, params: &Self::Params) -> Option<Value>;

    /// What the 404 says when [`Page::data`] finds nothing.
    fn missing(&self, params: &Self::Params) -> String;

    /// Its HTML, from its data.
    fn render(&self, data: &Value, params: &Self::Params) -> String;
}

/// A page without parameters: it always has data.
pub struct Plain {
    pub html: &'static str,
    pub json: &'static str,
    pub data: fn(&Sources<'_>) -> Value,
    pub render: fn(&Value) -> String,
}

/// The pages without parameters.
#[rustfmt::skip]
pub static PLAIN: [Plain; 4] = [
    Plain { html: "/", json: "/api/summary", data: dashboard::summary::data, render: dashboard::summary::page },
    Plain { html: "/regressions", json: "/api/regressions", data: regressions_data, render: dashboard::regressions::page },
    Plain { html: "/rare-events", json: "/api/rare-events", data: dashboard::rare_events::data, render: dashboard::rare_events::page },
    Plain { html: "/diagnostics", json: "/api/diagnostics", data: diagnostics_data, render: dashboard::diagnostics::page },
];

/// A page of one key named in its path (`{id}`, `{key}`).
pub struct Keyed {
    pub html: &'static str,
    pub json: &'static str,
    /// What the 404 says of a key not found.
    pub missing: fn(&str) -> String,
    pub data: fn(&Sources<'_>, &str) -> Option<Value>,
    pub render: fn(&Value) -> String,
}

/// The vehicle and cohort pages.
#[rustfmt::skip]
pub static KEYED: [Keyed; 2] = [
    Keyed { html: "/vehicles/{id}", json: "/api/vehicles/{id}/page", missing: no_vehicle, data: dashboard::keys::vehicle_data, render: dashboard::keys::vehicle_page },
    Keyed { html: "/cohorts/{key}", json: "/api/cohorts/{key}", missing: no_cohort, data: dashboard::keys::cohort_data, render: dashboard::keys::cohort_page },
];

/// Both routes of every page.
pub fn add_pages(mut router: Router<AppState>) -> Router<AppState> {
    for page in &PLAIN {
        router = add(router, page);
    }
    for page in &KEYED {
        router = add(router, page);
    }
    let router = add(router, &Episode);
    add(router, &Ranking)
}

fn add<P: Page>(router: Router<AppState>, page: &'static P) -> Router<AppState> {
    router
        .route(
            page.html(),
            get(move |state: State<AppState>, params: P::Params| html_of(page, state, params)),
        )
        .route(
            page.json(),
            get(move |state: State<AppState>, params: P::Params| json_of(page, state, params)),
        )
}

async fn json_of<P: Page>(
    page: &'static P,
    State(state): State<AppState>,
    params: P::Params,
) -> Result<Response, ReadError> {
    json_or_404(&state, || page.missing(&params), |s| page.data(s, &params))
}

async fn html_of<P: Page>(
    page: &'static P,
    State(state): State<AppState>,
    params: P::Params,
) -> Result<Response, ReadError> {
    page_or_404(
        &state,
        || page.missing(&params),
        |s| page.data(s, &params),
        |data| page.render(data, &params),
    )
}

impl Page for Plain {
    type Params = ();

    fn html(&self) -> &'static str {
        self.html
    }

    fn json(&self) -> &'static str {
        self.json
    }

    fn data(&self, sources: &Sources<'_>, _: &()) -> Option<Value> {
        Some((self.data)(sources))
    }

    fn missing(&self, _: &()) -> String {
        unreachable!("{} always has data", self.html)
    }

    fn render(&self, data: &Value, _: &()) -> String {
        (self.render)(data)
    }
}

impl Page for Keyed {
    type Params = Path<String>;

    fn html(&self) -> &'static str {
        self.html
    }

    fn json(&self) -> &'static str {
        self.json
    }

    fn data(&self, sources: &Sources<'_>, key: &Path<String>) -> Option<Value> {
        (self.data)(sources, key)
    }

    fn missing(&self, key: &Path<String>) -> String {
        (self.missing)(key)
    }

    fn render(&self, data: &Value, _: &Path<String>) -> String {
        (self.render)(data)
    }
}

fn regressions_data(sources: &Sources<'_>) -> Value {
    dashboard::regressions::data(sources.alerts, sources.settings.rules_json())
}

fn diagnostics_data(sources: &Sources<'_>) -> Value {
    dashboard::diagnostics::data(sources.model_run)
}

fn no_vehicle(id: &str) -> String {
    format!("no vehicle `{id}` in memory in this consumer group")
}

fn no_cohort(key: &str) -> String {
    format!("no cohort `{key}` in this consumer group")
}

#[derive(serde::Deserialize)]
pub struct EpisodeQuery {
    id: String,
}

/// One regression episode's page (`?id=`).
pub struct Episode;

impl Page for Episode {
    type Params = Query<EpisodeQuery>;

    fn html(&self) -> &'static str {
        "/regressions/episode"
    }

    fn json(&self) -> &'static str {
        "/api/regressions/episode"
    }

    fn data(&self, sources: &Sources<'_>, q: &Self::Params) -> Option<Value> {
        dashboard::regressions::episode_data(sources, &q.id)
    }

    fn missing(&self, q: &Self::Params) -> String {
        format!("no episode `{}`", q.id)
    }

    fn render(&self, data: &Value, q: &Self::Params) -> String {
        dashboard::regressions::episode_page(data, &q.id)
    }
}

#[derive(serde::Deserialize)]
pub struct RankingQuery {
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

/// The vehicle ranking (`?q=`, `&limit=`).
pub struct Ranking;

impl Page for Ranking {
    type Params = Query<RankingQuery>;

    fn html(&self) -> &'static str {
        "/vehicles"
    }

    fn json(&self) -> &'static str {
        "/api/vehicle-ranking"
    }

    fn data(&self, sources: &Sources<'_>, q: &Self::Params) -> Option<Value> {
        Some(dashboard::vehicles::data(sources, &q.q, q.limit()))
    }

    fn missing(&self, _: &Self::Params) -> String {
        unreachable!("the ranking always has data")
    }

    fn render(&self, data: &Value, _: &Self::Params) -> String {
        dashboard::vehicles::page(data)
    }
}
