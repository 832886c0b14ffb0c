//! `fulcrum simulate`: run a scenario over the algorithms, print the
//! comparison (table or JSON) and optionally write charts.

use std::path::Path;
use std::process::ExitCode;

use fulcrum_sim::{charts, report, run_all, Scenario};
use indicatif::{ProgressBar, ProgressStyle};

const DEFAULT_SCENARIO: &str = include_str!("../../../examples/scenarios/slow-backend.toml");

/// Runs the simulation; exit 2 for a bad scenario, 1 when charts cannot be written.
pub fn run(scenario_path: Option<&Path>, out: Option<&Path>, json: bool) -> ExitCode {
    let (text, name) = match scenario_path {
        None => (DEFAULT_SCENARIO.to_string(), "built-in slow-backend scenario".to_string()),
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => (text, path.display().to_string()),
            Err(e) => {
                eprintln!("fulcrum: cannot read the scenario {}: {e}", path.display());
                return ExitCode::from(2);
            }
        },
    };
    let scenario = match Scenario::parse(&text) {
        Ok(scenario) => scenario,
        Err(e) => {
            eprintln!("fulcrum: {name}: {e}");
            return ExitCode::from(2);
        }
    };
    let names: Vec<String> = scenario.runs().iter().map(|run| run.label()).collect();
    let algorithms = names.len() as u64;
    let seconds = scenario.duration.as_secs().max(1);
    let bar = ProgressBar::new(algorithms * seconds);
    bar.set_style(
        ProgressStyle::with_template("{spinner} simulating [{bar:30}] {percent}% {msg}")
            .expect("a valid progress template")
            .progress_chars("=> "),
    );
    let runs = run_all(&scenario, &mut |algorithm, nanos| {
        bar.set_message(names[algorithm].clone());
        bar.set_position(algorithm as u64 * seconds + nanos / 1_000_000_000);
    });
    bar.finish_and_clear();
    let results = report(&runs);
    if json {
        println!("{}", results.json());
    } else {
        println!("{name}: seed {}, {} s simulated\n", scenario.seed, seconds);
        print!("{}", results.table());
        for run in &runs {
            print!("{}", autoscale_decisions(run));
        }
    }
    if let Some(dir) = out {
        if let Err(e) = write_charts(dir, &runs) {
            eprintln!("fulcrum: cannot write charts to {}: {e}", dir.display());
            return ExitCode::from(1);
        }
        if !json {
            println!("\ncharts written to {}", dir.display());
        }
    }
    ExitCode::SUCCESS
}

fn write_charts(dir: &Path, runs: &[fulcrum_sim::Run]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("latency-cdf.svg"), charts::latency_cdf(runs))?;
    for run in runs {
        std::fs::write(dir.join(format!("load-{}.svg", run.algorithm)), charts::backend_load(run))?;
        if let Some(chart) = charts::autoscale(run) {
            std::fs::write(dir.join(format!("autoscale-{}.svg", run.algorithm)), chart)?;
        }
    }
    Ok(())
}

/// The advisor's changes of advice in one run, a line each.
fn autoscale_decisions(run: &fulcrum_sim::Run) -> String {
    let Some(trace) = &run.autoscale else { return String::new() };
    let mut text = format!("\nautoscale decisions, {}:\n", run.algorithm);
    for (second, decision) in &trace.decisions {
        text.push_str(&format!("  {second:>5}s  {}\n", decision.reason));
    }
    text
}
