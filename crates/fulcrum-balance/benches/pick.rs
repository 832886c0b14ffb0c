//! One pick per algorithm at 10, 100 and 1000 backends, and the cost of
//! building a Maglev table (the paper: ~1.8 ms for M = 65537, N = 1000).
//! Goal: under 100 ns per pick for round robin, p2c, maglev and the ring
//! at 1000 backends.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use fulcrum_balance::algorithms::{Maglev, DEFAULT_TABLE_SIZE};
use fulcrum_balance::{build_selector, mix64, Algorithm, Load, Member, PickContext, SplitMix64};

fn members(n: usize) -> Vec<Member> {
    (0..n)
        .map(|i| Member {
            key: format!("10.{}.{}.{}:8080", i / 65536, i / 256 % 256, i % 256),
            weight: 1 + (i % 3) as u32,
            load: Arc::new(Load::default()),
        })
        .collect()
}

fn picks(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick");
    for name in fulcrum_balance::Algorithm::NAMES {
        for n in [10, 100, 1000] {
            let m = members(n);
            let selector = build_selector(&Algorithm::from_name(name).unwrap(), &m);
            let mut rng = SplitMix64::new(1);
            let mut key = 0u64;
            group.bench_with_input(BenchmarkId::new(*name, n), &n, |b, _| {
                b.iter(|| {
                    key = key.wrapping_add(1);
                    let mut ctx = PickContext { key: Some(mix64(key)), now_nanos: 1_000, rng: &mut rng };
                    black_box(selector.pick(&mut ctx, &|_| true))
                })
            });
        }
    }
    group.finish();
}

fn maglev_build(c: &mut Criterion) {
    let m = members(1000);
    c.bench_function("maglev_build/M=65537,N=1000", |b| {
        b.iter(|| black_box(Maglev::new(&m, DEFAULT_TABLE_SIZE)))
    });
}

criterion_group!(benches, picks, maglev_build);
criterion_main!(benches);
