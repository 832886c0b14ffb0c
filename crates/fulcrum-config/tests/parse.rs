//! The config contract the README documents: defaults, typed values, and errors that
//! name the key path and line:column.

use std::path::Path;
use std::time::Duration;

use fulcrum_config::{diff, parse, Algorithm, Change, HostMatch, Protocol, RouteTarget};

const VALID: &str = r#"
[server]
worker_threads = 2
graceful_timeout = "5s"

[[listeners]]
name = "web"
listen = "127.0.0.1:8080"
pool = "app"

  [[listeners.routes]]
  host = "*.example.com"
  path_prefix = "/api"
  methods = ["get", "POST"]
  headers = { "X-Canary" = "1" }
  split = [{ pool = "app", weight = 90 }, { pool = "api", weight = 10 }]

[pools.app]
algorithm = "weighted_round_robin"
backends = [
  { address = "127.0.0.1:9001", weight = 5 },
  { address = "127.0.0.1:9002", zone = "b" },
]
timeouts = { connect = "250ms" }

[pools.api]
backends = [{ address = "127.0.0.1:9003" }]
"#;

fn errors_of(text: &str) -> Vec<String> {
    let errors = parse(text, "f.toml", Path::new(".")).unwrap_err();
    errors.errors.iter().map(|e| format!("{}:{e}", errors.source)).collect()
}

#[test]
fn a_valid_file_becomes_typed_config_with_defaults() {
    let config = parse(VALID, "f.toml", Path::new(".")).unwrap();
    assert_eq!(config.server.worker_threads, 2);
    assert_eq!(config.server.graceful_timeout, Duration::from_secs(5));
    let web = &config.listeners[0];
    assert_eq!(web.protocol, Protocol::Http);
    let route = &web.routes[0];
    assert_eq!(route.host, Some(HostMatch::Wildcard(".example.com".into())));
    assert_eq!(route.methods, ["GET", "POST"]);
    assert_eq!(route.headers, [("x-canary".to_string(), "1".to_string())]);
    assert_eq!(route.target, RouteTarget::Split(vec![("app".into(), 90), ("api".into(), 10)]));
    let app = &config.pools["app"];
    assert_eq!(app.algorithm, Algorithm::WeightedRoundRobin);
    assert_eq!(app.backends[1].weight, 1);
    assert_eq!(app.backends[1].zone.as_deref(), Some("b"));
    assert_eq!(app.timeouts.connect, Duration::from_millis(250));
    assert_eq!(app.timeouts.response_header, Duration::from_secs(60));
    assert_eq!(config.pools["api"].algorithm, Algorithm::RoundRobin);
}

#[test]
fn unknown_keys_are_errors_with_path_and_position() {
    let errors = errors_of("[pools.app]\nalgoritm = \"round_robin\"\n");
    assert_eq!(errors.len(), 1);
    assert!(errors[0].starts_with("f.toml:2:1: pools.app.algoritm: unknown field `algoritm`"), "{errors:?}");
}

#[test]
fn every_validation_error_is_reported_with_key_path_and_line() {
    let text = r#"
[[listeners]]
name = "web"
listen = "localhost"
pool = "missing"

[pools.api]
algorithm = "fastest"
backends = [
  { address = "127.0.0.1:1" },
  { address = "127.0.0.1:2" },
  { address = "127.0.0.1:3", weight = 0 },
]
timeouts = { idle = "30" }
"#;
    let errors = errors_of(text);
    assert_eq!(
        errors[..4],
        [
            "f.toml:4:10: listeners[0].listen: `localhost` is not an IP:port address (e.g. \"127.0.0.1:8080\")",
            "f.toml:5:8: listeners[0].pool: no pool named `missing` (define it as [pools.missing])",
            "f.toml:8:13: pools.api.algorithm: unknown algorithm `fastest`; expected one of round_robin, weighted_round_robin, least_connections, least_response_time, p2c, random, ip_hash, consistent_hash, maglev, bounded_consistent_hash, adaptive",
            "f.toml:12:39: pools.api.backends[2].weight: must be between 1 and 1000000 (got 0)",
        ]
        .map(String::from),
        "{errors:#?}"
    );
    assert!(
        errors[4].starts_with("f.toml:14:21: pools.api.timeouts.idle: `30` is not a duration"),
        "{errors:#?}"
    );
    assert!(errors[4].ends_with("write it with a unit, e.g. \"250ms\", \"5s\", \"2m\""), "{errors:#?}");
}

#[test]
fn environment_variables_are_substituted_and_missing_ones_named() {
    std::env::set_var("FULCRUM_TEST_PORT", "9011");
    let text = "[pools.a]\nbackends = [{ address = \"127.0.0.1:${FULCRUM_TEST_PORT}\" }]\n";
    let config = parse(text, "f.toml", Path::new(".")).unwrap();
    assert_eq!(config.pools["a"].backends[0].address.port(), 9011);
    let errors = errors_of("[pools.a]\nbackends = [{ address = \"${FULCRUM_TEST_UNSET}:1\" }]\n");
    assert_eq!(
        errors,
        ["f.toml:2:25: pools.a.backends[0].address: environment variable `FULCRUM_TEST_UNSET` is not set"]
    );
}

#[test]
fn non_loopback_admin_needs_a_token() {
    let errors = errors_of("[admin]\nlisten = \"0.0.0.0:9090\"\n");
    assert!(
        errors[0].contains("admin.listen: a non-loopback admin address needs `admin.token`"),
        "{errors:?}"
    );
    assert!(parse("[admin]\nlisten = \"0.0.0.0:9090\"\ntoken = \"t\"\n", "f", Path::new(".")).is_ok());
}

#[test]
fn https_needs_existing_certificates() {
    let text = "[[listeners]]\nname = \"s\"\nlisten = \"127.0.0.1:8443\"\nprotocol = \"https\"\npool = \"p\"\ntls = { certificates = [{ cert = \"nope.pem\", key = \"nope.key\" }] }\n[pools.p]\n";
    let errors = errors_of(text);
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].contains("listeners[0].tls.certificates[0].cert: no such file"), "{errors:?}");
}

#[test]
fn syntax_errors_point_at_the_line() {
    let errors = errors_of("[server]\nworker_threads = = 2\n");
    assert!(errors[0].starts_with("f.toml:2:"), "{errors:?}");
}

#[test]
fn diff_names_what_changed() {
    let old = parse(VALID, "f", Path::new(".")).unwrap();
    let changed = VALID.replace("weight = 5", "weight = 6").replace("name = \"web\"", "name = \"www\"");
    let new = parse(&changed, "f", Path::new(".")).unwrap();
    assert_eq!(
        diff(&old, &new),
        [
            Change::ListenerRemoved("web".into()),
            Change::ListenerAdded("www".into()),
            Change::PoolChanged("app".into())
        ]
    );
    assert!(diff(&old, &old).is_empty());
}

#[test]
fn grpc_health_checks_name_a_service_and_only_they_do() {
    let config = parse(
        "[pools.g]\nprotocol = \"h2c\"\nhealth_check = { kind = \"grpc\", service = \"echo.Echo\" }\n",
        "f.toml",
        Path::new("."),
    )
    .unwrap();
    let check = config.pools["g"].health_check.as_ref().unwrap();
    assert_eq!((check.kind, check.service.as_str()), (fulcrum_config::ProbeKind::Grpc, "echo.Echo"));
    let errors = errors_of("[pools.g]\nhealth_check = { kind = \"http\", service = \"echo.Echo\" }\n");
    assert_eq!(
        errors,
        ["f.toml:2:43: pools.g.health_check.service: only gRPC probes (`kind = \"grpc\"`) ask for a service"]
    );
}
