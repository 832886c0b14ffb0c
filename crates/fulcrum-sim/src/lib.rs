//! `fulcrum simulate`: a discrete-event simulator that replays a described
//! workload against Fulcrum's balancing algorithms — the same selection
//! code the proxy runs — and compares them in numbers and charts.
//!
//! [`scenario`] reads the TOML description, [`autoscale`] runs the
//! autoscaling advisor over the simulated pool, [`workload`] draws arrivals,
//! service times and keys from seeded generators, [`engine`] runs the
//! events for one algorithm, [`report`] and [`charts`] present the runs.
//! Latencies go into HdrHistograms, so memory stays bounded however many
//! requests are simulated.

pub mod autoscale;
pub mod charts;
pub mod engine;
pub mod report;
pub mod scenario;
pub mod workload;

pub use engine::{simulate, Run};
pub use report::{Report, Row};
pub use scenario::{LimitSetting, RunSpec, Scenario, ScenarioError};

/// Every run of `scenario` (each algorithm under each admission limit);
/// `progress(run index, simulated nanos)`.
pub fn run_all(scenario: &Scenario, progress: &mut dyn FnMut(usize, u64)) -> Vec<Run> {
    scenario
        .runs()
        .iter()
        .enumerate()
        .map(|(i, spec)| simulate(scenario, spec, &mut |t| progress(i, t)))
        .collect()
}

/// The comparison table of `runs`.
pub fn report(runs: &[Run]) -> Report {
    Report { results: runs.iter().map(Row::of).collect() }
}
