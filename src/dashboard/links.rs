//! Where the pages link to: an episode's, a vehicle's and a cohort's page, and the query-string
//! encoding their ids travel in.

use super::html;
use crate::model::KeyKind;

/// `text` safe as a query-string value.
pub fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The link to an episode's page.
pub fn episode_href(id: &str) -> String {
    format!("/regressions/episode?id={}", percent_encode(id))
}

/// `label` (HTML) linked to the page of episode `id`.
pub fn episode_link(id: &str, label: &str) -> String {
    html::link(&episode_href(id), label)
}

/// A vehicle's page.
pub fn vehicle_href(id: &str) -> String {
    format!("/vehicles/{}", percent_encode(id))
}

/// A cohort's page.
pub fn cohort_href(key: &str) -> String {
    format!("/cohorts/{}", percent_encode(key))
}

/// The page of the key an alert or episode names.
pub fn key_href(kind: &str, key: &str) -> String {
    if kind == KeyKind::Cohort.name() {
        cohort_href(key)
    } else {
        vehicle_href(key)
    }
}

/// `label` (HTML) linked to the page of the key of this kind (an alert's `key_kind`).
pub fn key_link(kind: &str, key: &str, label: &str) -> String {
    html::link(&key_href(kind, key), label)
}
