//! Route names, `query`, `split_key`, `canary`, `mirror`, rewrites,
//! header rules, `redirect` and `hsts`: defaults, errors with key path
//! and line, and blue-green switches layered from the runtime overlay.

use std::path::Path;
use std::time::Duration;

use fulcrum_config::{parse, HashKey, Overlay, RouteSwitch, RouteTarget, Source, SplitPart, Template};

const VALID: &str = r#"
[[listeners]]
name = "web"
listen = "127.0.0.1:8080"
pool = "v1"

  [[listeners.routes]]
  name = "api"
  path_prefix = "/api"
  query = { "v" = "2" }
  split = [{ pool = "v2", weight = 10 }, { pool = "v1", weight = 90 }]
  split_key = "cookie:uid"
  mirror = { pool = "shadow", percent = 10 }
  strip_prefix = "/api"
  rewrite_prefix = "/v1"
  request_headers = { set = { "x-env" = "prod" }, add = { "x-client" = "${client_ip}" }, remove = ["x-debug"] }
  response_headers = { set = { "cache-control" = "no-store" }, remove = ["server"] }

  [[listeners.routes]]
  name = "rollout"
  path_prefix = "/shop"
  canary = { pool = "v2", baseline = "v1", steps = [1, 5, 25, 50, 100], interval = "30s", min_requests = 100, max_error_rate = 1.0, max_p99_ratio = 1.5 }

  [[listeners.routes]]
  host = "old.example"
  redirect = { to = "https://${host}${path}", status = 301 }

[pools.v1]
backends = [{ address = "127.0.0.1:9001" }]

[pools.v2]
backends = [{ address = "127.0.0.1:9002" }]

[pools.shadow]
backends = [{ address = "127.0.0.1:9003" }]
"#;

fn errors_of(text: &str) -> String {
    let errors = parse(text, "f.toml", Path::new(".")).unwrap_err();
    errors.errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
}

#[test]
fn every_release_key_parses_with_its_defaults() {
    let config = parse(VALID, "f.toml", Path::new(".")).unwrap();
    let routes = &config.listeners[0].routes;
    let api = &routes[0];
    assert_eq!(api.name, "api");
    assert_eq!(api.query, [("v".to_string(), "2".to_string())]);
    assert_eq!(api.split_key, Some(HashKey::Cookie("uid".into())));
    let mirror = api.mirror.as_ref().unwrap();
    assert_eq!((mirror.pool.as_str(), mirror.percent, mirror.max_in_flight), ("shadow", 10.0, 100));
    assert_eq!((api.strip_prefix.as_deref(), api.rewrite_prefix.as_deref()), (Some("/api"), Some("/v1")));
    assert_eq!(api.request_headers.set, [("x-env".to_string(), Template::parse("prod").unwrap())]);
    assert_eq!(api.request_headers.remove, ["x-debug"]);
    assert_eq!(api.response_headers.remove, ["server"]);
    let RouteTarget::Canary(canary) = &routes[1].target else { panic!("{:?}", routes[1].target) };
    assert_eq!(canary.steps, [1.0, 5.0, 25.0, 50.0, 100.0]);
    assert_eq!((canary.interval, canary.min_requests), (Duration::from_secs(30), 100));
    let RouteTarget::Redirect(redirect) = &routes[2].target else { panic!() };
    assert_eq!(redirect.status, 301);
    assert_eq!(routes[2].name, "2", "an unnamed route is named by its index");

    let defaults = VALID.replace(", steps = [1, 5, 25, 50, 100], interval = \"30s\", min_requests = 100, max_error_rate = 1.0, max_p99_ratio = 1.5", "");
    let config = parse(&defaults, "f.toml", Path::new(".")).unwrap();
    let RouteTarget::Canary(canary) = &config.listeners[0].routes[1].target else { panic!() };
    assert_eq!(canary.steps, fulcrum_config::DEFAULT_CANARY_STEPS);
    assert_eq!((canary.interval, canary.max_p99_ratio), (Duration::from_secs(60), 1.5));
}

#[test]
fn bad_release_keys_name_the_key_and_line() {
    let both = VALID.replace("  split_key = \"cookie:uid\"", "  pool = \"v1\"\n  split_key = \"cookie:uid\"");
    assert!(
        errors_of(&both).contains(
            "listeners[0].routes[0]: a route needs exactly one of `pool`, `split`, `canary` or `redirect`"
        ),
        "{}",
        errors_of(&both)
    );
    let cases = [
        (
            "${client_ip}",
            "${client}",
            "listeners[0].routes[0].request_headers.add.x-client",
            "unknown variable `${client}`",
        ),
        (
            "split_key = \"cookie:uid\"",
            "split_key = \"path\"",
            "listeners[0].routes[0].split_key",
            "not a split key",
        ),
        (
            "steps = [1, 5, 25, 50, 100]",
            "steps = [5, 1]",
            "listeners[0].routes[1].canary.steps[1]",
            "steps must increase",
        ),
        (
            "baseline = \"v1\"",
            "baseline = \"v9\"",
            "listeners[0].routes[1].canary.baseline",
            "no pool named `v9`",
        ),
        ("status = 301", "status = 200", "listeners[0].routes[2].redirect.status", "200 is not a redirect"),
        (
            "name = \"rollout\"",
            "name = \"api\"",
            "listeners[0].routes[1].name",
            "another route of this listener is named `api`",
        ),
        (
            "\"x-env\" = \"prod\"",
            "\"content-length\" = \"5\"",
            "listeners[0].routes[0].request_headers.set.content-length",
            "frames the message",
        ),
        ("percent = 10 }", "percent = 0 }", "listeners[0].routes[0].mirror.percent", "above 0"),
        (
            "rewrite_prefix = \"/v1\"",
            "rewrite_prefix = \"v1\"",
            "listeners[0].routes[0].rewrite_prefix",
            "must start with `/`",
        ),
    ];
    for (from, to, path, message) in cases {
        let errors = errors_of(&VALID.replace(from, to));
        let line = errors
            .lines()
            .find(|l| l.contains(path))
            .unwrap_or_else(|| panic!("no error at {path}: {errors}"));
        assert!(line.contains(message) && line.starts_with(|c: char| c.is_ascii_digit()), "{line}");
    }
    let redirect_with_mirror =
        VALID.replace("  redirect = {", "  mirror = { pool = \"shadow\" }\n  redirect = {");
    assert!(errors_of(&redirect_with_mirror)
        .contains("listeners[0].routes[2].mirror: a redirect forwards nothing"));
    let plain_split_key = VALID.replace("  redirect = {", "  split_key = \"client_ip\"\n  redirect = {");
    assert!(errors_of(&plain_split_key).contains("only a route with `split` or `canary`"));
    let hsts = VALID.replace(
        "pool = \"v1\"\n\n  [[listeners.routes]]\n  name = \"api\"",
        "pool = \"v1\"\nhsts = \"max-age=60\"\n\n  [[listeners.routes]]\n  name = \"api\"",
    );
    assert!(errors_of(&hsts).contains("listeners[0].hsts: only an https listener"), "{}", errors_of(&hsts));
}

#[test]
fn a_route_switch_replaces_the_action_through_the_validator() {
    let source = Source::inline(VALID, "f.toml");
    let mut overlay = Overlay::default();
    overlay.switch_route("web", "rollout", RouteSwitch::Pool("v2".into()));
    overlay.switch_route(
        "web",
        "api",
        RouteSwitch::Split(vec![
            SplitPart { pool: "v2".into(), weight: 30 },
            SplitPart { pool: "v1".into(), weight: 70 },
        ]),
    );
    let (config, warnings) = source.config(&overlay).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let routes = &config.listeners[0].routes;
    assert_eq!(routes[1].target, RouteTarget::Pool("v2".into()), "the canary is replaced");
    assert_eq!(routes[0].target, RouteTarget::Split(vec![("v2".into(), 30), ("v1".into(), 70)]));
    let json = serde_json::to_string(&overlay).unwrap();
    assert_eq!(serde_json::from_str::<Overlay>(&json).unwrap(), overlay);

    overlay.switch_route("web", "rollout", RouteSwitch::Pool("green".into()));
    let errors = source.config(&overlay).unwrap_err().to_string();
    assert!(
        errors.contains("listeners[0].routes[1].pool") && errors.contains("no pool named `green`"),
        "{errors}"
    );
    let mut stale = Overlay::default();
    stale.switch_route("web", "gone", RouteSwitch::Pool("v2".into()));
    let (_, warnings) = source.config(&stale).unwrap();
    assert!(warnings[0].contains("route `gone`"), "{warnings:?}");
}
