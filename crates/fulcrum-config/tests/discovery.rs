//! `[pools.NAME.discovery]`: defaults, and errors with key path and line.

use std::path::Path;
use std::time::Duration;

use fulcrum_config::{parse, DiscoveryRecords};

fn pool(discovery: &str) -> String {
    format!(
        "[[listeners]]\nname = \"web\"\nlisten = \"127.0.0.1:8080\"\npool = \"app\"\n\n[pools.app]\ndiscovery = {discovery}\n"
    )
}

fn errors_of(text: &str) -> String {
    let errors = parse(text, "f.toml", Path::new(".")).unwrap_err();
    errors.errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
}

#[test]
fn a_records_need_a_port_and_take_the_defaults() {
    let config =
        parse(&pool(r#"{ dns = "app.service.internal", port = 8080 }"#), "f.toml", Path::new(".")).unwrap();
    let discovery = config.pools["app"].discovery.clone().unwrap();
    assert_eq!(discovery.name, "app.service.internal");
    assert_eq!(discovery.records, DiscoveryRecords::Address { port: 8080 });
    assert_eq!(discovery.resolver, None);
    assert_eq!(discovery.interval, Duration::from_secs(5));
    assert!(config.pools["app"].backends.is_empty(), "a discovered pool needs no static backend");
}

#[test]
fn srv_records_and_a_resolver_without_a_port() {
    let text =
        pool(r#"{ dns = "_app._tcp.svc.test.", type = "SRV", resolver = "127.0.0.1", interval = "1s" }"#);
    let discovery = parse(&text, "f.toml", Path::new(".")).unwrap().pools["app"].discovery.clone().unwrap();
    assert_eq!(discovery.records, DiscoveryRecords::Service);
    assert_eq!(discovery.name, "_app._tcp.svc.test");
    assert_eq!(discovery.resolver, Some("127.0.0.1:53".parse().unwrap()));
    assert_eq!(discovery.interval, Duration::from_secs(1));
}

#[test]
fn mistakes_name_the_key_and_line() {
    let errors = errors_of(&pool(r#"{ dns = "app.internal" }"#));
    assert!(errors.contains("7:13: pools.app.discovery: A records carry no port"), "{errors}");
    let errors = errors_of(&pool(r#"{ dns = "app.internal", type = "SRV", port = 80 }"#));
    assert!(errors.contains("pools.app.discovery.port: SRV records carry their own ports"), "{errors}");
    let errors = errors_of(&pool(r#"{ dns = "app.internal", type = "MX" }"#));
    assert!(errors.contains("pools.app.discovery.type: unknown record type `MX`"), "{errors}");
    let errors = errors_of(&pool(r#"{ dns = "bad name!", port = 80 }"#));
    assert!(errors.contains("pools.app.discovery.dns: `bad name!` is not a DNS name"), "{errors}");
    let errors = errors_of(&pool(r#"{ dns = "a.b", port = 80, resolver = "dns.example" }"#));
    assert!(errors.contains("pools.app.discovery.resolver: `dns.example` is not an IP:port"), "{errors}");
    let errors = errors_of(&pool(r#"{ dns = "a.b", port = 80, interval = "0s" }"#));
    assert!(errors.contains("pools.app.discovery.interval: must be longer than zero"), "{errors}");
}
