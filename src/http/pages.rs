//! The dashboard's pages as the HTTP edge serves them. Every page is a [`Page`]: its two routes
//! (the HTML page and its JSON), how its parameters arrive (none, a path segment, a query
//! string), its data (from `dashboard`), what its 404 says, and its HTML rendered from that
//! data, a typed struct from `dashboard` that is also the page's JSON. The pages without
//! parameters are [`Plain`], those of one key [`Keyed`]; [`PAGES`] lists every page and
//! [`add_pages`] registers them in a loop. Adding a page is a static here and an entry in
//! [`PAGES`] (with its module in `src/dashboard/` and its navigation entry).

use axum::Router;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::response::Response;
use axum::routing::get;
use serde::Serialize;

use super::{AppState, ReadError, json_or_404, page_or_404};
use crate::dashboard::diagnostics::DiagnosticsPage;
use crate::dashboard::keys::{CohortPage, VehiclePage};
use crate::dashboard::rare_events::RareEvents;
use crate::dashboard::regressions::{EpisodeDetail, Regressions};
use crate::dashboard::summary::Summary;
use crate::dashboard::vehicles::Ranking as RankingData;
use crate::dashboard::{self, Coverage, Sources};

/// One dashboard page.
pub trait Page: Sync + 'static {
    /// What a request says: `()`, a [`Path`] or a [`Query`].
    type Params: FromRequestParts<AppState> + Send + 'static;

    /// What the page shows, served as its JSON (with its coverage added).
    type Data: Serialize;

    /// Where its HTML is served.
    fn html(&self) -> &'static str;

    /// Where its data is served as JSON.
    fn json(&self) -> &'static str;

    /// Its data, or `None` when what `params` names is not known (a 404).
    fn data(&self, sources: &Sources<'_>, params: &Self::Params) -> Option<Self::Data>;

    /// What the 404 says when [`Page::data`] finds nothing.
    fn missing(&self, params: &Self::Params) -> String;

    /// Its HTML, from its data and how much of the group that covers.
    fn render(&self, data: &Self::Data, coverage: &Coverage, params: &Self::Params) -> String;
}

/// A page without parameters: it always has data.
pub struct Plain<D: 'static> {
    pub html: &'static str,
    pub json: &'static str,
    pub data: fn(&Sources<'_>) -> D,
    pub render: fn(&D, &Coverage) -> String,
}

/// A page of one key named in its path (`{id}`, `{key}`).
pub struct Keyed<D: 'static> {
    pub html: &'static str,
    pub json: &'static str,
    /// What the 404 says of a key not found.
    pub missing: fn(&str) -> String,
    pub data: fn(&Sources<'_>, &str) -> Option<D>,
    pub render: fn(&D, &Coverage) -> String,
}

#[rustfmt::skip]
static SUMMARY: Plain<Summary> = Plain { html: "/", json: "/api/summary", data: dashboard::summary::data, render: dashboard::summary::page };
#[rustfmt::skip]
static REGRESSIONS: Plain<Regressions> = Plain { html: "/regressions", json: "/api/regressions", data: regressions_data, render: dashboard::regressions::page };
#[rustfmt::skip]
static RARE_EVENTS: Plain<RareEvents> = Plain { html: "/rare-events", json: "/api/rare-events", data: dashboard::rare_events::data, render: dashboard::rare_events::page };
#[rustfmt::skip]
static DIAGNOSTICS: Plain<DiagnosticsPage> = Plain { html: "/diagnostics", json: "/api/diagnostics", data: diagnostics_data, render: dashboard::diagnostics::page };
#[rustfmt::skip]
static VEHICLE: Keyed<VehiclePage> = Keyed { html: "/vehicles/{id}", json: "/api/vehicles/{id}/page", missing: no_vehicle, data: dashboard::keys::vehicle_data, render: dashboard::keys::vehicle_page };
#[rustfmt::skip]
static COHORT: Keyed<CohortPage> = Keyed { html: "/cohorts/{key}", json: "/api/cohorts/{key}", missing: no_cohort, data: dashboard::keys::cohort_data, render: dashboard::keys::cohort_page };

/// Every page.
pub static PAGES: [&dyn Routes; 8] = [
    &SUMMARY,
    &REGRESSIONS,
    &Episode,
    &RARE_EVENTS,
    &Ranking,
    &VEHICLE,
    &COHORT,
    &DIAGNOSTICS,
];

/// A page as the router takes it: whatever its parameters and data.
pub trait Routes: Sync {
    /// `router` with both routes of the page.
    fn add_to(&'static self, router: Router<AppState>) -> Router<AppState>;
}

impl<P: Page> Routes for P {
    fn add_to(&'static self, router: Router<AppState>) -> Router<AppState> {
        router
            .route(
                self.html(),
                get(move |state: State<AppState>, params: P::Params| html_of(self, state, params)),
            )
            .route(
                self.json(),
                get(move |state: State<AppState>, params: P::Params| json_of(self, state, params)),
            )
    }
}

/// Both routes of every page.
pub fn add_pages(mut router: Router<AppState>) -> Router<AppState> {
    for page in PAGES {
        router = page.add_to(router);
    }
    router
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
        |data, coverage| page.render(data, coverage, &params),
    )
}

impl<D: Serialize + 'static> Page for Plain<D> {
    type Params = ();
    type Data = D;

    fn html(&self) -> &'static str {
        self.html
    }

    fn json(&self) -> &'static str {
        self.json
    }

    fn data(&self, sources: &Sources<'_>, _: &()) -> Option<D> {
        Some((self.data)(sources))
    }

    fn missing(&self, _: &()) -> String {
        unreachable!("{} always has data", self.html)
    }

    fn render(&self, data: &D, coverage: &Coverage, _: &()) -> String {
        (self.render)(data, coverage)
    }
}

impl<D: Serialize + 'static> Page for Keyed<D> {
    type Params = Path<String>;
    type Data = D;

    fn html(&self) -> &'static str {
        self.html
    }

    fn json(&self) -> &'static str {
        self.json
    }

    fn data(&self, sources: &Sources<'_>, key: &Path<String>) -> Option<D> {
        (self.data)(sources, key)
    }

    fn missing(&self, key: &Path<String>) -> String {
        (self.missing)(key)
    }

    fn render(&self, data: &D, coverage: &Coverage, _: &Path<String>) -> String {
        (self.render)(data, coverage)
    }
}

fn regressions_data(sources: &Sources<'_>) -> Regressions {
    dashboard::regressions::data(sources.alerts, Some(sources.settings.rules()))
}

fn diagnostics_data(sources: &Sources<'_>) -> DiagnosticsPage {
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
    type Data = EpisodeDetail;

    fn html(&self) -> &'static str {
        "/regressions/episode"
    }

    fn json(&self) -> &'static str {
        "/api/regressions/episode"
    }

    fn data(&self, sources: &Sources<'_>, q: &Self::Params) -> Option<EpisodeDetail> {
        dashboard::regressions::episode_data(sources, &q.id)
    }

    fn missing(&self, q: &Self::Params) -> String {
        format!("no episode `{}`", q.id)
    }

    fn render(&self, data: &EpisodeDetail, coverage: &Coverage, q: &Self::Params) -> String {
        dashboard::regressions::episode_page(data, coverage, &q.id)
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
    type Data = RankingData;

    fn html(&self) -> &'static str {
        "/vehicles"
    }

    fn json(&self) -> &'static str {
        "/api/vehicle-ranking"
    }

    fn data(&self, sources: &Sources<'_>, q: &Self::Params) -> Option<RankingData> {
        Some(dashboard::vehicles::data(sources, &q.q, q.limit()))
    }

    fn missing(&self, _: &Self::Params) -> String {
        unreachable!("the ranking always has data")
    }

    fn render(&self, data: &RankingData, coverage: &Coverage, _: &Self::Params) -> String {
        dashboard::vehicles::page(data, coverage)
    }
}
