//! The command line contract: `fulcrum check` exit codes and messages.

use std::process::Command;

fn check(config: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fulcrum.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fulcrum")).args(["check", "-c"]).arg(&path).output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn check_accepts_a_valid_config_with_a_summary() {
    let (code, out, _) = check(
        "[[listeners]]\nname = \"web\"\nlisten = \"127.0.0.1:8080\"\npool = \"app\"\n\
         [pools.app]\nbackends = [{ address = \"127.0.0.1:9001\" }, { address = \"127.0.0.1:9002\" }]\n",
    );
    assert_eq!(code, 0);
    assert!(out.contains("ok — 1 listeners (1 http, 0 https, 0 tcp, 0 udp), 1 pools, 2 backends"), "{out}");
}

#[test]
fn check_lists_every_error_with_key_path_and_line_and_exits_2() {
    let (code, _, err) = check(
        "[[listeners]]\nname = \"web\"\nlisten = \"127.0.0.1:8080\"\npool = \"api\"\n\
         [pools.api]\nbackends = [\n  { address = \"127.0.0.1:9001\" },\n  { address = \"127.0.0.1:9002\", weight = -1 },\n]\n",
    );
    assert_eq!(code, 2);
    assert!(err.contains(":8:"), "{err}");
    assert!(err.contains("pools.api.backends[1].weight"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn run_refuses_an_invalid_config_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fulcrum.toml");
    std::fs::write(&path, "[pools.a]\nalgorithm = \"nope\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fulcrum")).args(["run", "-c"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pools.a.algorithm: unknown algorithm `nope`"));
}

#[test]
fn a_missing_config_file_is_named() {
    let out = Command::new(env!("CARGO_BIN_EXE_fulcrum"))
        .args(["check", "-c", "/nonexistent/f.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/f.toml"));
}

#[test]
fn simulate_prints_json_results_and_writes_charts() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("s.toml");
    std::fs::write(
        &scenario,
        "seed = 3\nduration = \"5s\"\ntimeout = \"100ms\"\nalgorithms = [\"round_robin\", \"p2c\"]\n\
         arrivals = { rate = 200 }\nbackends = { count = 3, service = { distribution = \"exponential\", mean = \"5ms\" } }\n",
    )
    .unwrap();
    let charts = dir.path().join("charts");
    let out = Command::new(env!("CARGO_BIN_EXE_fulcrum"))
        .args(["simulate", "--json", "--scenario"])
        .arg(&scenario)
        .arg("--out")
        .arg(&charts)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let results = json["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    for key in [
        "algorithm",
        "requests",
        "success_rate",
        "p50_ms",
        "p90_ms",
        "p99_ms",
        "p999_ms",
        "max_over_mean_load",
    ] {
        assert!(results[0].get(key).is_some(), "missing {key}");
    }
    assert_eq!(results[1]["algorithm"], "p2c");
    for chart in ["latency-cdf.svg", "load-round_robin.svg", "load-p2c.svg"] {
        let svg = std::fs::read_to_string(charts.join(chart)).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("polyline"), "{chart}");
    }
}

#[test]
fn simulate_refuses_a_bad_scenario_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("s.toml");
    std::fs::write(&scenario, "duration = \"5s\"\narrivals = { rate = 0 }\nbackends = { count = 3, service = { distribution = \"constant\", value = \"1ms\" } }\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fulcrum"))
        .args(["simulate", "--scenario"])
        .arg(&scenario)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("arrivals.rate must be above 0"));
}
