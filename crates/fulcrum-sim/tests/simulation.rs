//! The simulator against known answers: Linkerd's slow-backend experiment,
//! an M/M/1 queue, determinism, and key movement on membership changes.

use fulcrum_balance::autoscale::Direction;
use fulcrum_sim::{report, run_all, simulate, RunSpec, Scenario};

const SLOW_BACKEND: &str = include_str!("../../../examples/scenarios/slow-backend.toml");

#[test]
fn the_slow_backend_experiment_reproduces_beyond_round_robin() {
    let scenario = Scenario::parse(SLOW_BACKEND).unwrap();
    let rows = report(&run_all(&scenario, &mut |_, _| {})).results;
    let row = |name: &str| rows.iter().find(|r| r.algorithm == name).unwrap().clone();
    let (rr, lc, p2c) = (row("round_robin"), row("least_connections"), row("p2c"));
    eprintln!("{}", report(&run_all(&scenario, &mut |_, _| {})).table());
    // 1/11 of the traffic for half the run goes to the 2 s backend.
    assert!((rr.success_rate * 100.0 - 95.45).abs() <= 0.5, "round robin {:.2}%", rr.success_rate * 100.0);
    assert!(p2c.success_rate >= 0.995, "p2c {:.2}%", p2c.success_rate * 100.0);
    assert!(
        rr.p99_ms > lc.p99_ms && lc.p99_ms > p2c.p99_ms,
        "p99: rr {} lc {} p2c {}",
        rr.p99_ms,
        lc.p99_ms,
        p2c.p99_ms
    );
    assert!((rr.requests as f64 - 60_000.0).abs() < 1_000.0, "{} requests", rr.requests);
}

#[test]
fn an_mm1_queue_at_half_load_spends_twice_the_service_time_in_the_system() {
    let scenario = Scenario::parse(
        r#"
        seed = 5
        duration = "4000s"
        algorithms = ["round_robin"]
        arrivals = { rate = 50 }
        backends = { count = 1, concurrency = 1, service = { distribution = "exponential", mean = "10ms" } }
        "#,
    )
    .unwrap();
    let run = simulate(&scenario, &RunSpec::algorithm("round_robin"), &mut |_| {});
    let mean_ms = run.latency_us.mean() / 1000.0;
    assert!(run.requests > 190_000);
    assert!((mean_ms - 20.0).abs() < 0.6, "mean time in system {mean_ms:.2} ms, M/M/1 says 20 ms");
}

#[test]
fn the_same_seed_gives_the_same_output_and_another_seed_does_not() {
    let text = include_str!("../../../examples/scenarios/hot-keys.toml")
        .replace("duration = \"60s\"", "duration = \"10s\"");
    let json = |text: &str| report(&run_all(&Scenario::parse(text).unwrap(), &mut |_, _| {})).json();
    assert_eq!(json(&text), json(&text));
    assert_ne!(json(&text), json(&text.replace("seed = 7", "seed = 8")));
}

#[test]
fn removing_one_of_twenty_backends_moves_about_a_twentieth_of_the_keys_under_consistent_hashing() {
    let text = include_str!("../../../examples/scenarios/hot-keys.toml")
        .replace("duration = \"60s\"", "duration = \"40s\"")
        .replace("algorithms = [", "algorithms = [\"consistent_hash\", \"maglev\"] # [");
    let scenario = Scenario::parse(&text).unwrap();
    for run in run_all(&scenario, &mut |_, _| {}) {
        let moved = run.keys_moved.unwrap();
        assert!(moved > 0.03 && moved < 0.07, "{}: {:.1}% of keys moved", run.algorithm, moved * 100.0);
    }
}

#[test]
fn invalid_scenarios_say_what_is_wrong() {
    let error = Scenario::parse("duration = \"10s\"\narrivals = { rate = 1 }\nbackends = { count = 2, service = { distribution = \"constant\", value = \"1ms\" } }\nalgorithms = [\"fastest\"]\n")
        .unwrap_err();
    assert!(error.to_string().contains("unknown algorithm `fastest`"), "{error}");
    let error = Scenario::parse("duration = \"10\"\narrivals = { rate = 1 }\nbackends = { count = 2, service = { distribution = \"constant\", value = \"1ms\" } }\n").unwrap_err();
    assert!(error.to_string().contains("is not a duration"), "{error}");
}

const OUTAGE: &str = include_str!("../../../examples/scenarios/outage-with-breakers.toml");

/// The proxy's breaker and outlier decisions, in virtual time: an outage of
/// one backend in three costs a third of 30 s of traffic without them, and
/// a few dozen requests with them (ejection after 5 failures, probes every
/// ejection or breaker wait).
#[test]
fn breakers_and_ejection_contain_an_outage() {
    let with = Scenario::parse(OUTAGE).unwrap();
    let mut without = with.clone();
    without.resilience = Default::default();
    for algorithm in ["round_robin", "p2c"] {
        let guarded = simulate(&with, &RunSpec::algorithm(algorithm), &mut |_| {});
        let bare = simulate(&without, &RunSpec::algorithm(algorithm), &mut |_| {});
        let failed = |run: &fulcrum_sim::Run| run.requests - run.successes;
        eprintln!(
            "{algorithm}: failed {} without, {} with resilience ({} ejections, {} breaker openings)",
            failed(&bare),
            failed(&guarded),
            guarded.ejections.iter().sum::<u32>(),
            guarded.breaker_opens.iter().sum::<u32>()
        );
        assert!(guarded.ejections[0] >= 1, "{algorithm}: backend 0 was never ejected");
        assert_eq!(
            guarded.ejections[1] + guarded.ejections[2],
            0,
            "{algorithm}: a healthy backend was ejected"
        );
        assert!(failed(&guarded) < 100, "{algorithm}: {} failed with resilience", failed(&guarded));
        assert!(failed(&guarded) * 10 < failed(&bare), "{algorithm}: resilience must cut failures tenfold");
    }
}

#[test]
fn the_adaptive_limit_keeps_served_requests_fast_when_every_backend_slows_down() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/scenarios/slowdown-admission.toml"
    ))
    .unwrap();
    let scenario = Scenario::parse(&text).unwrap();
    let rows = report(&run_all(&scenario, &mut |_, _| {})).results;
    let row = |label: &str| rows.iter().find(|r| r.algorithm == label).unwrap().clone();
    let (fixed, adaptive) = (row("p2c, limit 1000"), row("p2c, adaptive"));
    assert!(adaptive.success_rate > fixed.success_rate + 0.1, "{adaptive:?} vs {fixed:?}");
    assert!(adaptive.p99_ms < 600.0 && fixed.p99_ms > 2000.0, "{adaptive:?} vs {fixed:?}");
    assert!(adaptive.shed > 0, "the overload's excess is shed at the deadline");
}

#[test]
fn the_autoscaling_advisor_follows_a_days_ramp_ahead_of_it_and_never_flaps() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/scenarios/daily-ramp-autoscale.toml"
    ))
    .unwrap();
    let mut scenario = Scenario::parse(&text).unwrap();
    scenario.algorithms = Some(vec!["p2c".into()]);
    let settings = scenario.autoscale.clone().unwrap();
    let run = run_all(&scenario, &mut |_, _| {}).pop().unwrap();
    let trace = run.autoscale.as_ref().expect("an autoscale trace");
    let ups: Vec<_> = trace.decisions.iter().filter(|(_, d)| d.direction == Direction::Up).collect();
    let downs: Vec<_> = trace.decisions.iter().filter(|(_, d)| d.direction == Direction::Down).collect();
    assert!(ups.len() >= 4 && !downs.is_empty(), "{:?}", trace.decisions);
    // Ahead of the load: the first scale-up comes while utilization is below the target, on the forecast.
    let first = &ups[0].1;
    assert!(
        first.utilization < settings.target_utilization
            && first.predicted_utilization > settings.target_utilization,
        "{first:?}"
    );
    // Cooldowns: decisions are spaced, and every direction change waits the cooldown of the new direction.
    for pair in trace.decisions.windows(2) {
        let ((t0, _), (t1, d1)) = (&pair[0], &pair[1]);
        let cooldown = match d1.direction {
            Direction::Up => settings.scale_up_cooldown,
            _ => settings.scale_down_cooldown,
        };
        assert!(t1 - t0 >= cooldown.as_secs(), "{t0}s then {t1}s: {:?}", trace.decisions);
    }
    // The advice is carried out: a scale-up's backends serve after the provision delay.
    let (at, decision) = ups[0];
    let joined = trace.per_second[(*at + settings.provision_delay.as_secs() + 1) as usize].serving;
    assert!(
        joined >= decision.desired,
        "{joined} serving {}s after advising {}",
        settings.provision_delay.as_secs(),
        decision.desired
    );
    // At the peak the pool carries the load at about the target; after the fall it is back to min.
    let peak = trace.per_second.iter().map(|s| s.serving).max().unwrap();
    assert!((7..=10).contains(&peak), "2000 req/s × 20 ms over 8 × 0.7 per backend needs 8: {peak}");
    assert_eq!(trace.per_second.last().unwrap().serving, settings.min);
    assert!(run.successes as f64 / run.requests as f64 > 0.99);
}
