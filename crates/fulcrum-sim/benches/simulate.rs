//! Simulator speed: wall time to simulate 100 000 requests of a simple
//! scenario (goal: at least a million simulated requests per second).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fulcrum_sim::{simulate, RunSpec, Scenario};

const SIMPLE: &str = r#"
seed = 7
duration = "100s"
timeout = "1s"
arrivals = { rate = 1000 }
backends = { count = 10, service = { distribution = "exponential", mean = "5ms" } }
"#;

fn bench(c: &mut Criterion) {
    let scenario = Scenario::parse(SIMPLE).unwrap();
    let mut group = c.benchmark_group("simulate_100k_requests");
    group.throughput(Throughput::Elements(100_000));
    group.sample_size(10);
    for algorithm in ["round_robin", "p2c", "maglev"] {
        group.bench_function(algorithm, |b| {
            b.iter(|| black_box(simulate(&scenario, &RunSpec::algorithm(algorithm), &mut |_| {})))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
