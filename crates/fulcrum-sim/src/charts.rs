//! Charts as self-contained SVG, written by hand (no font files, no
//! native dependencies): the latency CDF of every algorithm on a log
//! axis, each algorithm's per-backend load over time, and the
//! autoscaling advisor's desired against serving backends against load.

use std::fmt::Write;

use crate::engine::Run;

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 500.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 200.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
const COLOURS: [&str; 12] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
    "#17becf", "#393b79", "#637939",
];

fn frame(title: &str, x_label: &str, y_label: &str) -> String {
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"22\" font-size=\"16\" text-anchor=\"middle\">{title}</text>\n\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{x_label}</text>\n\
         <text x=\"16\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {})\">{y_label}</text>\n",
        (LEFT + WIDTH - RIGHT) / 2.0,
        (LEFT + WIDTH - RIGHT) / 2.0,
        HEIGHT - 10.0,
        HEIGHT / 2.0,
        HEIGHT / 2.0
    );
    let _ = writeln!(
        svg,
        "<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#333\"/>",
        WIDTH - LEFT - RIGHT,
        HEIGHT - TOP - BOTTOM
    );
    svg
}

fn plot_x(fraction: f64) -> f64 {
    LEFT + fraction * (WIDTH - LEFT - RIGHT)
}

fn plot_y(fraction: f64) -> f64 {
    HEIGHT - BOTTOM - fraction * (HEIGHT - TOP - BOTTOM)
}

fn legend(svg: &mut String, index: usize, label: &str) {
    let y = TOP + 10.0 + index as f64 * 18.0;
    let x = WIDTH - RIGHT + 15.0;
    let colour = COLOURS[index % COLOURS.len()];
    let _ = writeln!(
        svg,
        "<line x1=\"{x}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"{colour}\" stroke-width=\"3\"/>",
        x + 20.0
    );
    let _ = writeln!(svg, "<text x=\"{}\" y=\"{}\">{label}</text>", x + 26.0, y + 4.0);
}

/// Cumulative share of answered requests against latency (log scale).
pub fn latency_cdf(runs: &[Run]) -> String {
    let mut svg = frame("Latency CDF", "latency (ms, log scale)", "share of requests at or below");
    let low = runs.iter().map(|r| r.latency_us.min().max(1)).min().unwrap_or(1) as f64;
    let high = runs.iter().map(|r| r.latency_us.max().max(2)).max().unwrap_or(2) as f64;
    let (log_low, log_high) = (low.log10(), high.log10().max(low.log10() + 1e-9));
    // 1-2-5 ticks in every decade the data spans (microseconds).
    let mut decade = 10f64.powf(log_low.floor());
    while decade <= high {
        for step in [1.0, 2.0, 5.0] {
            let value = decade * step;
            if value < low || value > high {
                continue;
            }
            let x = plot_x((value.log10() - log_low) / (log_high - log_low));
            let _ = writeln!(
                svg,
                "<line x1=\"{x}\" y1=\"{TOP}\" x2=\"{x}\" y2=\"{}\" stroke=\"#ddd\"/><text x=\"{x}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                HEIGHT - BOTTOM,
                HEIGHT - BOTTOM + 16.0,
                value / 1000.0
            );
        }
        decade *= 10.0;
    }
    for tick in [0.0, 0.25, 0.5, 0.75, 0.9, 1.0] {
        let y = plot_y(tick);
        let _ =
            writeln!(svg, "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{tick}</text>", LEFT - 6.0, y + 4.0);
    }
    for (i, run) in runs.iter().enumerate() {
        let points: Vec<String> = (0..=400)
            .map(|step| {
                let q = step as f64 / 400.0;
                let value = (run.latency_us.value_at_quantile(q).max(1) as f64).log10();
                format!("{:.1},{:.1}", plot_x((value - log_low) / (log_high - log_low)), plot_y(q))
            })
            .collect();
        let _ = writeln!(
            svg,
            "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=\"{}\"/>",
            COLOURS[i % COLOURS.len()],
            points.join(" ")
        );
        legend(&mut svg, i, &run.algorithm);
    }
    svg + "</svg>\n"
}

/// Requests per second each backend received under one algorithm.
pub fn backend_load(run: &Run) -> String {
    let series: Vec<(String, Vec<f64>)> = run
        .per_second
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("backend {i}"), s.iter().map(|&n| f64::from(n)).collect()))
        .collect();
    over_time(&format!("Per-backend load: {}", run.algorithm), "requests per second", &series)
}

/// The autoscaling advisor over one run: the load (as the backends it
/// needs at the target utilization), the backends advised and those
/// taking traffic; `None` without `[autoscale]`.
pub fn autoscale(run: &Run) -> Option<String> {
    let trace = run.autoscale.as_ref()?;
    let series = vec![
        ("load (backends needed)".to_string(), trace.per_second.iter().map(|s| s.needed).collect()),
        ("desired".to_string(), trace.per_second.iter().map(|s| f64::from(s.desired)).collect()),
        ("serving".to_string(), trace.per_second.iter().map(|s| f64::from(s.serving)).collect()),
    ];
    Some(over_time(&format!("Autoscaling: {}", run.algorithm), "backends", &series))
}

/// One line per series over the seconds of a run (the last, partial second left out).
fn over_time(title: &str, y_label: &str, series: &[(String, Vec<f64>)]) -> String {
    let mut svg = frame(title, "time (s)", y_label);
    let seconds = series.first().map_or(1, |(_, s)| s.len()).max(2) - 1;
    let peak = series.iter().flat_map(|(_, s)| s.iter().copied()).fold(1.0_f64, f64::max);
    for tick in 0..=4 {
        let value = peak * f64::from(tick) / 4.0;
        let y = plot_y(f64::from(tick) / 4.0);
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{value:.0}</text>",
            LEFT - 6.0,
            y + 4.0
        );
    }
    for tick in 0..=5 {
        let second = seconds * tick / 5;
        let x = plot_x(second as f64 / seconds as f64);
        let _ = writeln!(
            svg,
            "<text x=\"{x}\" y=\"{}\" text-anchor=\"middle\">{second}</text>",
            HEIGHT - BOTTOM + 16.0
        );
    }
    for (i, (label, values)) in series.iter().enumerate() {
        let points: Vec<String> = values
            .iter()
            .take(seconds)
            .enumerate()
            .map(|(s, &v)| format!("{:.1},{:.1}", plot_x(s as f64 / seconds as f64), plot_y(v / peak)))
            .collect();
        let _ = writeln!(
            svg,
            "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\" points=\"{}\"/>",
            COLOURS[i % COLOURS.len()],
            points.join(" ")
        );
        legend(&mut svg, i, label);
    }
    svg + "</svg>\n"
}
