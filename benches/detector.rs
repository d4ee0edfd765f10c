//! Bin update cost of the change-point detector at steady state (default pruning), and the
//! bytes of state it holds per key and hazard class. Run: cargo bench --bench detector
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Poisson};
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
    for (name, exposure) in [("vehicle_8h_per_bin", 8.0), ("cohort_800h_per_bin", 800.0)] {
        let series = bins(exposure, 4096);
        let mut detector = Detector::new(DetectorParams::default()).unwrap();
        for &(y, e) in &series[..1000] {
            detector.update(y, e);
        }
        eprintln!(
            "detector/{name}: {} bytes of state after 1000 bins",
            detector.state_bytes()
        );
        let mut i = 0;
        group.bench_function(format!("bin_update_{name}"), |b| {
            b.iter(|| {
                let (y, e) = series[i % series.len()];
                i += 1;
                black_box(detector.update(y, e))
            })
        });
        eprintln!(
            "detector/{name}: {} bytes of state after the benchmark",
            detector.state_bytes()
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
