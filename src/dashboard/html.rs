//! The page frame (navigation, styles) and the pieces pages are built from: numbers tied to
//! their place in the page's JSON, tables and key figures.
//!
//! Every number a page shows from its API is written by [`num`] as
//! `<span data-api="/json/pointer">text</span>`, and the page names its API in
//! `<body data-api-url=...>`, so a reader (or a test) can check the page against the API.

pub use super::coverage::Coverage;
pub use super::svg::escape;
use crate::engine::detection::Rules;

/// The pages, in navigation order: (path, title).
pub const PAGES: [(&str, &str); 5] = [
    ("/", "Executive summary"),
    ("/regressions", "Regression analysis"),
    ("/rare-events", "Rare event detection"),
    ("/vehicles", "Vehicle performance"),
    ("/diagnostics", "Model diagnostics"),
];

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#222;background:#fafafa}\
nav{background:#1d2b3a;padding:0 16px}nav a{color:#cfe0f0;display:inline-block;padding:12px 10px;text-decoration:none}\
nav a.here{color:#fff;border-bottom:3px solid #6cb4ff}main{padding:12px 24px;max-width:1100px}\
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:28px}.kpis{display:flex;flex-wrap:wrap;gap:12px}\
.kpi{background:#fff;border:1px solid #ddd;border-radius:6px;padding:10px 14px;min-width:170px}\
.kpi .label{font-size:.8em;color:#666}.kpi .value{font-size:1.5em;font-weight:600}.kpi .sub{font-size:.8em;color:#555}\
table{border-collapse:collapse;background:#fff;font-size:.9em}td,th{border:1px solid #ddd;padding:4px 8px;text-align:right}\
td:first-child,th:first-child{text-align:left}svg.chart{background:#fff;border:1px solid #ddd;border-radius:6px;margin:8px 0;max-width:100%}\
.chart-title{font-size:13px;font-weight:600}.tick,.legend,.rule-label{font-size:11px;fill:#444}.axis-label{font-size:11px;fill:#222}\
.chart-empty{font-size:14px;fill:#888}.note{color:#555;font-size:.9em}.bad{color:#b00020}.good{color:#1b7a1b}";

/// A full page: navigation, title, and `body`; `api` is the JSON the page shows.
pub fn page(path: &str, title: &str, api: &str, body: &str) -> String {
    let nav: String = PAGES
        .iter()
        .map(|(href, name)| {
            let here = if *href == path {
                r#" class="here""#
            } else {
                ""
            };
            format!(r#"<a href="{href}"{here}>{name}</a>"#)
        })
        .collect();
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><link rel="icon" href="data:,"><title>{t} · safetel</title><style>{STYLE}</style></head><body data-api-url="{api}"><nav>{nav}</nav><main><h1>{t}</h1>{body}<p class="note">JSON: <a href="{api}">{api}</a></p></main></body></html>"#,
        t = escape(title),
        api = escape(api),
    )
}

/// [`page`] for a page whose JSON is the data it was rendered from, with the line saying how
/// much of the consumer group that data covers.
pub fn page_with(coverage: &Coverage, path: &str, title: &str, api: &str, body: &str) -> String {
    page(path, title, api, &format!("{}{body}", coverage.line()))
}

/// `<a href=...>label</a>`; `label` is HTML already.
pub fn link(href: &str, label: &str) -> String {
    format!(r#"<a href="{}">{label}</a>"#, escape(href))
}

/// The alarm rule in force, from the rules at `pointer` in the page's JSON.
pub fn rule_line(rules: Option<&Rules>, pointer: &str) -> String {
    let Some(rules) = rules else {
        return String::new();
    };
    let sources: Vec<String> = rules
        .vehicle
        .iter()
        .map(|(class, c)| {
            format!(
                "{} from the {}",
                escape(class),
                escape(c.fleet_shape_source)
            )
        })
        .collect();
    format!(
        r#"<p class="note rule">Rule in force: an episode opens when P(a change with hazard ratio above {}) reaches its threshold, set so that false alarms stay within {} per 1000 vehicle-months ({} detector; the fleet's spread of vehicle rates: {}).</p>"#,
        num(rules.threshold_hr, &format!("{pointer}/threshold_hr"), 2),
        num(
            rules.false_alarms_per_1000_vehicle_months,
            &format!("{pointer}/false_alarms_per_1000_vehicle_months"),
            1
        ),
        escape(rules.model),
        sources.join(", "),
    )
}

/// A number a page shows: `None`, NaN and infinities show as missing.
pub trait Figure {
    fn figure(&self) -> Option<f64>;
}

macro_rules! figure_as_f64 {
    ($($t:ty),*) => {$(
        impl Figure for $t {
            fn figure(&self) -> Option<f64> {
                Some(*self as f64)
            }
        }
    )*};
}
figure_as_f64!(f64, u64, i64, usize, i32, u32);

impl<T: Figure> Figure for Option<T> {
    fn figure(&self) -> Option<f64> {
        self.as_ref().and_then(Figure::figure)
    }
}

impl<T: Figure + ?Sized> Figure for &T {
    fn figure(&self) -> Option<f64> {
        (**self).figure()
    }
}

/// `value`, formatted with `decimals` and tied to where it is in the page's JSON (`pointer`);
/// a missing or non-finite value shows as an em dash.
pub fn num(value: impl Figure, pointer: &str, decimals: usize) -> String {
    match value.figure() {
        Some(v) if v.is_finite() => {
            format!(r#"<span data-api="{pointer}">{v:.decimals$}</span>"#)
        }
        _ => r#"<span class="missing">—</span>"#.into(),
    }
}

/// `mean [low, high]`, each tied to its pointer.
pub fn interval(values: [Option<f64>; 3], pointers: [&str; 3], decimals: usize) -> String {
    format!(
        "{} [{}, {}]",
        num(values[0], pointers[0], decimals),
        num(values[1], pointers[1], decimals),
        num(values[2], pointers[2], decimals)
    )
}

/// `mean [low, high]` of the fields `mean`, `low`, `high` under `prefix` (`/episodes/3`).
pub fn interval_at(
    values: [Option<f64>; 3],
    prefix: &str,
    fields: [&str; 3],
    decimals: usize,
) -> String {
    let [m, l, h] = fields.map(|f| format!("{prefix}/{f}"));
    interval(values, [&m, &l, &h], decimals)
}

/// A date (UTC) of a time in ms, or an em dash.
pub fn date(ms: Option<i64>) -> String {
    ms.map_or("—".into(), crate::model::utc_date)
}

/// A key figure box.
pub fn kpi(label: &str, value: &str, sub: &str) -> String {
    format!(
        r#"<div class="kpi"><div class="label">{}</div><div class="value">{value}</div><div class="sub">{sub}</div></div>"#,
        escape(label)
    )
}

/// A table with a header row; cells are HTML already.
pub fn table(name: &str, header: &[&str], rows: &[Vec<String>]) -> String {
    let mut html = format!(r#"<table data-table="{name}"><thead><tr>"#);
    for h in header {
        html.push_str(&format!("<th>{}</th>", escape(h)));
    }
    html.push_str("</tr></thead><tbody>");
    for row in rows {
        html.push_str("<tr>");
        for cell in row {
            html.push_str(&format!("<td>{cell}</td>"));
        }
        html.push_str("</tr>");
    }
    html.push_str("</tbody></table>");
    html
}

/// `(x, y)` pairs of `rows`, leaving out the rows where either is missing.
pub fn points<R>(
    rows: &[R],
    x: impl Fn(&R) -> Option<f64>,
    y: impl Fn(&R) -> Option<f64>,
) -> Vec<(f64, f64)> {
    rows.iter()
        .filter_map(|row| Some((x(row)?, y(row)?)))
        .collect()
}

/// `(x, mean, low, high)` for an interval chart: `x` at each row's position (from 1) or from
/// the row; rows missing any value are left out.
pub fn interval_points<R>(
    rows: &[R],
    x: impl Fn(usize, &R) -> Option<f64>,
    values: impl Fn(&R) -> [Option<f64>; 3],
) -> Vec<(f64, f64, f64, f64)> {
    rows.iter()
        .enumerate()
        .filter_map(|(i, row)| {
            let [mean, low, high] = values(row);
            Some((x(i, row)?, mean?, low?, high?))
        })
        .collect()
}

/// An interval chart's x: the row's position, from 1.
pub fn position<R>(i: usize, _: &R) -> Option<f64> {
    Some(i as f64 + 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_carry_their_json_pointer_and_missing_ones_show_a_dash() {
        assert_eq!(
            num(12.3456, "/a/b", 2),
            r#"<span data-api="/a/b">12.35</span>"#
        );
        assert!(num(None::<f64>, "/n", 2).contains('—'));
        assert!(num(f64::NAN, "/missing", 2).contains('—'));
    }

    #[test]
    fn the_page_names_its_api_and_marks_where_the_reader_is() {
        let html = page(
            "/vehicles",
            "Vehicles <x>",
            "/api/vehicle-ranking",
            "<p>body</p>",
        );
        assert!(html.contains(r#"data-api-url="/api/vehicle-ranking""#));
        assert!(html.contains(r#"<a href="/vehicles" class="here">"#));
        assert!(html.contains("Vehicles &lt;x&gt;"));
    }
}
