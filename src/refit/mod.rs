//! The nightly survival refit (docs/design.md §5): a Weibull model with vehicle random effects,
//! sampled with NUTS, checked with convergence diagnostics and a posterior predictive check, turned
//! into priors for the stream. Pure: no IO; `safetel refit` reads and writes.

pub mod diagnostics;
pub mod intervals;
pub mod model;
pub mod result;
pub mod run;
pub mod sampler;

#[cfg(test)]
mod tests;
