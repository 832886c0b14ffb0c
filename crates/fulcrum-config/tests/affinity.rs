//! `[redis]` and `[pools.NAME.affinity]`: defaults, and the errors that
//! keep a sticky pool from starting half-configured.

use std::path::Path;
use std::time::Duration;

use fulcrum_config::{parse, AffinityKind, AffinityMode, SessionStore};

fn config(pool_extra: &str, tail: &str) -> String {
    format!(
        "[[listeners]]\nname = \"web\"\nlisten = \"127.0.0.1:8080\"\npool = \"app\"\n\n\
         [pools.app]\nbackends = [{{ address = \"127.0.0.1:9001\" }}]\n{pool_extra}\n{tail}"
    )
}

fn errors_of(text: &str) -> Vec<String> {
    let errors = parse(text, "f.toml", Path::new(".")).unwrap_err();
    errors.errors.iter().map(ToString::to_string).collect()
}

#[test]
fn affinity_and_redis_defaults() {
    let text = config(
        "affinity = { kind = \"cookie\", secrets = [\"0123456789abcdef\"] }",
        "[redis]\nurl = \"redis://127.0.0.1:6379/0\"\n",
    );
    let parsed = parse(&text, "f.toml", Path::new(".")).unwrap();
    let affinity = parsed.pools["app"].affinity.clone().unwrap();
    assert_eq!(affinity.kind, AffinityKind::Cookie("fulcrum_sid".into()));
    assert_eq!(affinity.ttl, Duration::from_secs(1800));
    assert_eq!(affinity.mode, AffinityMode::Soft);
    assert_eq!(affinity.max_sessions, 1_000_000);
    assert_eq!(affinity.store, SessionStore::Local);
    assert!(affinity.drain_keeps_sessions);
    let redis = parsed.redis.unwrap();
    assert_eq!((redis.key_prefix.as_str(), redis.timeout), ("fulcrum:", Duration::from_millis(50)));

    let ip = parse(&config("affinity = { kind = \"client_ip\", subnet_mask = 24 }", ""), "f", Path::new("."))
        .unwrap();
    assert_eq!(ip.pools["app"].affinity.as_ref().unwrap().kind, AffinityKind::ClientIp { v4: 24, v6: 64 });
}

#[test]
fn secrets_come_from_the_environment() {
    std::env::set_var("FULCRUM_TEST_AFFINITY_KEY", "a-secret-from-the-environment");
    let text =
        config("affinity = { secrets = [\"${FULCRUM_TEST_AFFINITY_KEY}\", \"old-secret-still-valid\"] }", "");
    let parsed = parse(&text, "f.toml", Path::new(".")).unwrap();
    assert_eq!(
        parsed.pools["app"].affinity.as_ref().unwrap().secrets,
        ["a-secret-from-the-environment", "old-secret-still-valid"]
    );
}

#[test]
fn a_sticky_pool_that_cannot_work_is_an_error_naming_the_key() {
    let errors = errors_of(&config("affinity = { kind = \"cookie\" }", ""));
    assert!(
        errors[0].contains("pools.app.affinity.secrets") && errors[0].contains("at least one secret"),
        "{errors:?}"
    );

    let errors = errors_of(&config("affinity = { secrets = [\"short\"] }", ""));
    assert!(
        errors[0].contains("pools.app.affinity.secrets[0]") && errors[0].contains("16 bytes"),
        "{errors:?}"
    );

    let errors = errors_of(&config("affinity = { kind = \"header\", store = \"redis\" }", ""));
    assert!(errors[0].contains("pools.app.affinity.store") && errors[0].contains("[redis]"), "{errors:?}");

    let errors = errors_of(&config(
        "affinity = { kind = \"header\", mode = \"sticky\", ttl = \"500ms\", cookie = \"x\" }",
        "[redis]\nurl = \"http://127.0.0.1:6379\"\n",
    ));
    let all = errors.join("\n");
    for expected in ["affinity.mode", "affinity.ttl", "affinity.cookie", "redis.url"] {
        assert!(all.contains(expected), "no error for {expected}:\n{all}");
    }

    let tcp =
        "[[listeners]]\nname = \"db\"\nlisten = \"127.0.0.1:5432\"\nprotocol = \"tcp\"\npool = \"app\"\n";
    let errors = errors_of(&config("affinity = { kind = \"header\" }", tcp));
    assert!(errors[0].contains("listeners[1].pool") && errors[0].contains("client_ip"), "{errors:?}");
}
