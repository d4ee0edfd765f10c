//! The page frame (navigation, styles) and the pieces pages are built from: numbers tied to
//! their place in the page's JSON, tables and key figures.
//!
//! Every number a page shows from its API is written by [`num`] as
//! `<span data-api="/json/pointer">text</span>`, and the page names its API in
//! `<body data-api-url=...>`, so a reader (or a test) can check the page against the API.

use serde_json::Value;

pub use super::svg::escape;

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

/// [`page`] for a page whose JSON is `data`: with the line saying how much of the consumer
/// group the data covers, where it says (`data["coverage"]`, added by the HTTP edge).
pub fn page_with(data: &Value, path: &str, title: &str, api: &str, body: &str) -> String {
    page(path, title, api, &format!("{}{body}", coverage_line(data)))
}

/// "Covers 4 of 4 partitions: 2 held here (live), 2 from the group view (as of ...)".
pub fn coverage_line(data: &Value) -> String {
    let c = &data["coverage"];
    if c.is_null() {
        return String::new();
    }
    let total = match c["partitions"].as_u64() {
        Some(_) => format!(" of {}", num(data, "/coverage/partitions", 0)),
        None => String::new(),
    };
    let here = num(data, "/coverage/held_here_count", 0);
    let mut line = format!(
        r#"<p class="note coverage">Covers {}{total} partitions: {here} held by this process (live)"#,
        num(data, "/coverage/covered", 0)
    );
    if c["scope"] == "group" {
        line += &format!(
            ", {} from the group view (other processes, as of their last commit; the oldest {})",
            num(data, "/coverage/from_group_view_count", 0),
            c["oldest_commit_ms"]
                .as_i64()
                .map_or("—".to_string(), |ms| escape(&crate::model::utc_time(ms))),
        );
    }
    if let Some(note) = c["note"].as_str() {
        line += &format!(". {}", escape(note));
    }
    line + ".</p>"
}

/// `<a href=...>label</a>`; `label` is HTML already.
pub fn link(href: &str, label: &str) -> String {
    format!(r#"<a href="{}">{label}</a>"#, escape(href))
}

/// The alarm rule in force, from the detection settings' JSON at `pointer`
/// ([`crate::engine::detection::DetectionSettings::rules_json`]).
pub fn rule_line(data: &Value, pointer: &str) -> String {
    let Some(rules) = data.pointer(pointer).filter(|r| !r.is_null()) else {
        return String::new();
    };
    let sources: Vec<String> = rules["vehicle"]
        .as_object()
        .map(|classes| {
            classes
                .iter()
                .map(|(class, c)| {
                    format!(
                        "{} from the {}",
                        escape(class),
                        escape(c["fleet_shape_source"].as_str().unwrap_or("?"))
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    format!(
        r#"<p class="note rule">Rule in force: an episode opens when P(a change with hazard ratio above {}) reaches its threshold, set so that false alarms stay within {} per 1000 vehicle-months ({} detector; the fleet's spread of vehicle rates: {}).</p>"#,
        num(data, &format!("{pointer}/threshold_hr"), 2),
        num(
            data,
            &format!("{pointer}/false_alarms_per_1000_vehicle_months"),
            1
        ),
        escape(rules["model"].as_str().unwrap_or("?")),
        sources.join(", "),
    )
}

/// The value at `pointer` in `data`, formatted with `decimals` and tied to the pointer; a
/// missing or null value shows as an em dash.
pub fn num(data: &Value, pointer: &str, decimals: usize) -> String {
    match data.pointer(pointer).and_then(Value::as_f64) {
        Some(v) if v.is_finite() => {
            format!(r#"<span data-api="{pointer}">{v:.decimals$}</span>"#)
        }
        _ => r#"<span class="missing">—</span>"#.into(),
    }
}

/// `mean [low, high]` from three pointers.
pub fn interval(data: &Value, mean: &str, low: &str, high: &str, decimals: usize) -> String {
    format!(
        "{} [{}, {}]",
        num(data, mean, decimals),
        num(data, low, decimals),
        num(data, high, decimals)
    )
}

/// The string at `pointer`, escaped.
pub fn text(data: &Value, pointer: &str) -> String {
    match data.pointer(pointer) {
        Some(Value::String(s)) => escape(s),
        Some(Value::Null) | None => "—".into(),
        Some(other) => escape(&other.to_string()),
    }
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

/// Rows of `data[pointer]`, an array, or none.
pub fn rows<'a>(data: &'a Value, pointer: &str) -> &'a [Value] {
    data.pointer(pointer)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// `(x, y)` pairs from the array at `pointer`, its items' fields `x` and `y`.
pub fn points(data: &Value, pointer: &str, x: &str, y: &str) -> Vec<(f64, f64)> {
    rows(data, pointer)
        .iter()
        .filter_map(|row| Some((row.get(x)?.as_f64()?, row.get(y)?.as_f64()?)))
        .collect()
}

/// Where each row sits on an interval chart's x axis.
pub enum X<'a> {
    /// Its position in the rows, from 1.
    Position,
    /// The number at this pointer in the row.
    Field(&'a str),
}

/// `(x, mean, low, high)` for an interval chart, from the rows' values at the three pointers
/// (relative to a row); rows missing any of them are left out.
pub fn interval_points(
    rows: &[Value],
    x: X<'_>,
    mean: &str,
    low: &str,
    high: &str,
) -> Vec<(f64, f64, f64, f64)> {
    let at = |row: &Value, pointer: &str| row.pointer(pointer).and_then(Value::as_f64);
    rows.iter()
        .enumerate()
        .filter_map(|(i, row)| {
            let x = match x {
                X::Position => i as f64 + 1.0,
                X::Field(pointer) => at(row, pointer)?,
            };
            Some((x, at(row, mean)?, at(row, low)?, at(row, high)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_carry_their_json_pointer_and_missing_ones_show_a_dash() {
        let data = json!({"a": {"b": 12.3456}, "n": null});
        assert_eq!(
            num(&data, "/a/b", 2),
            r#"<span data-api="/a/b">12.35</span>"#
        );
        assert!(num(&data, "/n", 2).contains('—'));
        assert!(num(&data, "/missing", 2).contains('—'));
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
