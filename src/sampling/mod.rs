//! Review-budget sampling (docs/design.md §4): which trips get their logs reviewed, and how the
//! reviewed ones stand for the rest.
//!
//! Owns the policies (`full`, `uniform`, `stratified`, `importance`, `adaptive`), each giving a
//! trip its inclusion probability from what is known before its outcome (stratum, exposure, the
//! vehicle's rate, the key's P(regression)), scaled so that the probabilities average the budget
//! B, with a floor; the reproducible selection (a hash of trip id and seed against that
//! probability); and Horvitz-Thompson estimates of fleet totals with their variance. Pure: no
//! IO.

mod ht;
mod policy;

pub use ht::{HorvitzThompson, ht_estimate};
pub use policy::{
    Policy, PolicyError, SamplingPolicy, Stratum, TripCovariates, selected, uniform_draw,
};

#[cfg(test)]
mod tests;
