//! `[rate_limits.NAME]`, `rate_limit` / `class` references and
//! `[pools.NAME.admission]`: defaults, and errors with key path and line.

use std::path::Path;
use std::time::Duration;

use fulcrum_config::{parse, ConcurrencyLimit, LimitKey, LimitStore};

const VALID: &str = r#"
[[listeners]]
name = "web"
listen = "127.0.0.1:8080"
pool = "app"
rate_limit = "per_client"

  [[listeners.routes]]
  path_prefix = "/checkout"
  pool = "app"
  class = "critical"
  rate_limit = "checkout"

[rate_limits.per_client]
rate = 100

[rate_limits.checkout]
key = "header:X-User"
rate = 5
per = "1m"
burst = 2

[pools.app]
backends = [{ address = "127.0.0.1:9001" }]
admission = { max_concurrent = "adaptive", classes = { critical = { priority = 0, deadline = "2s" }, default = { priority = 1, deadline = "500ms" } } }
"#;

fn errors_of(text: &str) -> String {
    let errors = parse(text, "f.toml", Path::new(".")).unwrap_err();
    errors.errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
}

#[test]
fn limits_and_admission_with_their_defaults() {
    let config = parse(VALID, "f.toml", Path::new(".")).unwrap();
    let per_client = &config.rate_limits["per_client"];
    assert_eq!(
        (&per_client.key, per_client.per, per_client.burst, per_client.store),
        (&LimitKey::ClientIp, Duration::from_secs(1), 0, LimitStore::Local)
    );
    assert_eq!(config.rate_limits["checkout"].key, LimitKey::Header("x-user".into()));
    assert_eq!(config.listeners[0].rate_limit.as_deref(), Some("per_client"));
    let route = &config.listeners[0].routes[0];
    assert_eq!((route.class.as_str(), route.rate_limit.as_deref()), ("critical", Some("checkout")));
    let admission = config.pools["app"].admission.as_ref().unwrap();
    assert_eq!((admission.max_concurrent, admission.queue), (ConcurrencyLimit::Adaptive, 1000));
    assert_eq!(admission.classes["default"].deadline, Duration::from_millis(500));

    let plain = VALID.replace("  class = \"critical\"\n", "").replace(
        "admission = { max_concurrent = \"adaptive\", classes = { critical = { priority = 0, deadline = \"2s\" }, default = { priority = 1, deadline = \"500ms\" } } }",
        "admission = { max_concurrent = 64 }",
    );
    let config = parse(&plain, "f.toml", Path::new(".")).unwrap();
    let admission = config.pools["app"].admission.as_ref().unwrap();
    assert_eq!(admission.max_concurrent, ConcurrencyLimit::Fixed(64));
    assert_eq!(admission.classes["default"].deadline, Duration::from_secs(1), "one default class");
    assert_eq!(config.listeners[0].routes[0].class, "default");
}

#[test]
fn bad_limits_and_classes_are_errors_with_key_and_line() {
    let errors = errors_of(&VALID.replace("rate = 100", "rate = 0"));
    assert!(errors.contains("15:8: rate_limits.per_client.rate: must be at least 1"), "{errors}");

    let errors = errors_of(&VALID.replace("rate_limit = \"per_client\"", "rate_limit = \"per_cleint\""));
    assert!(errors.contains("6:14: listeners[0].rate_limit: no rate limit named `per_cleint`"), "{errors}");

    let errors = errors_of(&VALID.replace("deadline = \"2s\"", "deadline = \"0s\""));
    assert!(
        errors.contains("pools.app.admission.classes.critical.deadline")
            && errors.contains("longer than zero"),
        "{errors}"
    );

    let errors = errors_of(&VALID.replace("class = \"critical\"", "class = \"gold\""));
    assert!(
        errors.contains("listeners[0].routes[0].class") && errors.contains("no traffic class `gold`"),
        "{errors}"
    );

    let errors = errors_of(&VALID.replace("max_concurrent = \"adaptive\"", "max_concurrent = 0"));
    assert!(errors.contains("pools.app.admission.max_concurrent"), "{errors}");

    let errors = errors_of(&VALID.replace(", default = { priority = 1, deadline = \"500ms\" }", ""));
    assert!(
        errors.contains("pools.app.admission.classes") && errors.contains("needs a `default` class"),
        "{errors}"
    );

    let errors = errors_of(&VALID.replace("rate = 5", "rate = 5\nstore = \"redis\""));
    assert!(errors.contains("rate_limits.checkout.store") && errors.contains("[redis]"), "{errors}");
}
