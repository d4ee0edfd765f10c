//! Writes intervals simulated from the refit's model as `vehicle_id,duration,event` CSV: the
//! fixed data set of the sampling benchmark (`scripts/bench-refit`).
//!
//!   cargo run --release --example simulate_survival -- VEHICLES HOURS SEED > survival.csv
//!
//! True values: alpha = 1.3, mu = log 300, sigma = 0.5 (each vehicle sees ~HOURS/277 events).
use std::io::Write;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let number =
        |i: usize, default: f64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (vehicles, hours, seed) = (
        number(1, 1000.0) as usize,
        number(2, 5000.0),
        number(3, 1.0) as u64,
    );
    let rows = safetel::refit::result::simulate(vehicles, hours, 1.3, 300f64.ln(), 0.5, seed);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    writeln!(out, "vehicle_id,duration,event").unwrap();
    for (vehicle, duration, event) in rows {
        writeln!(out, "{vehicle},{duration},{}", u8::from(event)).unwrap();
    }
}
