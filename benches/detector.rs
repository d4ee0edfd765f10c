//! Bin update cost of the change-point detectors at steady state, and the bytes of state each
//! holds per key and hazard class: the fleet-relative detector the stream runs (with the
//! opening rule's threshold lookup and the hazard ratio an open episode needs), and the earlier
//! self-baseline one. Run: cargo bench --bench detector
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Poisson};
use safetel::detect::calibration::{NullModel, OpeningRule};
use safetel::detect::fleet_relative::{Baseline, FleetDetector, FleetRelativeParams};
use safetel::detect::{Detector, DetectorParams};

fn bins(exposure_hours: f64, n: usize) -> Vec<(u64, f64)> {
    let mut rng = StdRng::seed_from_u64(3);
    (0..n)
        .map(|_| {
            let e = exposure_hours * rng.random_range(0.7..1.3);
            (Poisson::new(0.01 * e).unwrap().sample(&mut rng) as u64, e)
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("detector");
    let params = FleetRelativeParams::default();
    let rule = OpeningRule::calibrate(
        &params,
        NullModel {
            shape: 8.0,
            false_alarms_per_bin: 1.6e-5,
        },
    );
    let fleet = Baseline {
        shape: 8.0,
        rate: 800.0,
    };
    for (name, exposure) in [("vehicle_8h_per_bin", 8.0), ("cohort_800h_per_bin", 800.0)] {
        let series = bins(exposure, 4096);
        let mut detector = FleetDetector::new(params).unwrap();
        for &(y, e) in &series[..1000] {
            detector.update(y, e, fleet);
        }
        eprintln!(
            "detector/fleet_relative/{name}: {} bytes of state",
            detector.state_bytes()
        );
        let mut i = 0;
        group.bench_function(format!("fleet_relative_bin_update_{name}"), |b| {
            b.iter(|| {
                let (y, e) = series[i % series.len()];
                i += 1;
                let update = detector.update(y, e, fleet);
                let m = detector.mean_exposure_per_bin() * 0.01;
                black_box(update.ln_odds_regression >= rule.ln_odds_at(m))
            })
        });
        group.bench_function(format!("fleet_relative_hazard_ratio_{name}"), |b| {
            b.iter(|| black_box(detector.hazard_ratio(fleet)))
        });
        let mut old = Detector::new(DetectorParams::default()).unwrap();
        for &(y, e) in &series[..1000] {
            old.update(y, e);
        }
        group.bench_function(format!("self_baseline_bin_update_{name}"), |b| {
            b.iter(|| {
                let (y, e) = series[i % series.len()];
                i += 1;
                black_box(old.update(y, e))
            })
        });
        eprintln!(
            "detector/self_baseline/{name}: {} bytes of state",
            old.state_bytes()
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
