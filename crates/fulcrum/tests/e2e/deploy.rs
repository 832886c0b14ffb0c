//! The deploy files in `deploy/` are checked with the tools that consume
//! them, as far as this machine has them: the systemd unit with
//! `systemd-analyze verify`, the Kubernetes manifests parsed and checked
//! for what a rollout without dropped requests needs (probes on the admin
//! `/health`, a preStop pause, a disruption budget, selectors that match,
//! an embedded config `fulcrum check` accepts), and every Grafana query
//! checked by `promtool` and against the metric names a running balancer
//! exports.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;
use serde::Deserialize;
use serde_json::Value;

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy").join(path)
}

#[test]
fn the_systemd_unit_verifies() {
    let unit = std::fs::read_to_string(deploy("systemd/fulcrum.service")).unwrap();
    for needed in
        ["Type=notify", "NotifyAccess=all", "ExecReload=/bin/kill -HUP $MAINPID", "NoNewPrivileges=true"]
    {
        assert!(unit.contains(needed), "the unit lacks `{needed}`");
    }
    // systemd-analyze checks that the binary exists: point it at this build.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fulcrum.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/fulcrum", env!("CARGO_BIN_EXE_fulcrum"))).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze is installed (scripts/test.sh installs systemd)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "systemd-analyze verify: {stderr}");
}

fn manifests() -> Vec<Value> {
    let text = std::fs::read_to_string(deploy("kubernetes/fulcrum.yaml")).unwrap();
    serde_yaml::Deserializer::from_str(&text).map(|doc| Value::deserialize(doc).unwrap()).collect()
}

fn of_kind<'a>(documents: &'a [Value], kind: &str) -> &'a Value {
    documents.iter().find(|d| d["kind"] == kind).unwrap_or_else(|| panic!("no {kind} in the manifests"))
}

fn labels_match(selector: &Value, labels: &Value) -> bool {
    let selector = selector.as_object().unwrap();
    !selector.is_empty() && selector.iter().all(|(k, v)| labels[k] == *v)
}

#[test]
fn the_kubernetes_manifests_have_what_a_safe_rollout_needs() {
    let documents = manifests();
    for document in &documents {
        assert!(document["apiVersion"].is_string() && document["metadata"]["name"].is_string(), "{document}");
    }
    let deployment = of_kind(&documents, "Deployment");
    let pod = &deployment["spec"]["template"];
    let pod_labels = &pod["metadata"]["labels"];
    assert!(labels_match(&deployment["spec"]["selector"]["matchLabels"], pod_labels));
    assert_eq!(deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], 0);
    let container = &pod["spec"]["containers"][0];
    let ports: Vec<&str> =
        container["ports"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(container[probe]["httpGet"]["path"], "/health", "{probe}");
        let port = container[probe]["httpGet"]["port"].as_str().unwrap();
        assert!(ports.contains(&port), "{probe} names port `{port}`, not one of {ports:?}");
    }
    assert!(container["lifecycle"]["preStop"].is_object(), "a preStop pause before SIGTERM");
    assert!(
        pod["spec"]["terminationGracePeriodSeconds"].as_u64().unwrap() > 30,
        "longer than graceful_timeout"
    );
    assert_eq!(pod["spec"]["securityContext"]["runAsNonRoot"], true);
    assert_eq!(container["securityContext"]["allowPrivilegeEscalation"], false);

    let service = of_kind(&documents, "Service");
    assert!(labels_match(&service["spec"]["selector"], pod_labels));
    let target = service["spec"]["ports"][0]["targetPort"].as_str().unwrap();
    assert!(ports.contains(&target));
    let budget = of_kind(&documents, "PodDisruptionBudget");
    assert!(labels_match(&budget["spec"]["selector"]["matchLabels"], pod_labels));
    assert!(budget["spec"]["minAvailable"].as_u64().unwrap() >= 1);

    // The config the pods run is one `fulcrum check` accepts, at the path they read.
    let config_map = of_kind(&documents, "ConfigMap");
    let mounts = container["volumeMounts"].as_array().unwrap();
    let mount = mounts.iter().find(|m| m["subPath"] == "fulcrum.toml").unwrap();
    let args: Vec<&str> = container["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(args, ["run", "-c", mount["mountPath"].as_str().unwrap()]);
    let volume =
        pod["spec"]["volumes"].as_array().unwrap().iter().find(|v| v["name"] == mount["name"]).unwrap();
    assert_eq!(volume["configMap"]["name"], config_map["metadata"]["name"]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("fulcrum.toml");
    std::fs::write(&config, config_map["data"]["fulcrum.toml"].as_str().unwrap()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fulcrum"))
        .args(["check", "-c"])
        .arg(&config)
        .env("FULCRUM_ADMIN_TOKEN", "secret")
        .output()
        .unwrap();
    assert!(out.status.success(), "fulcrum check: {}", String::from_utf8_lossy(&out.stderr));
}

/// Every metric name `/metrics` declares, with a histogram's series names.
fn exported_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else { continue };
        let mut parts = rest.split_whitespace();
        let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
        if kind == "histogram" {
            names.extend(["_bucket", "_sum", "_count"].map(|suffix| format!("{name}{suffix}")));
        }
        names.insert(name.to_string());
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_parses_and_names_only_exported_metrics() {
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(deploy("grafana/fulcrum.json")).unwrap()).unwrap();
    let expressions: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            p["targets"].as_array().unwrap().iter().map(|t| t["expr"].as_str().unwrap().to_string())
        })
        .collect();
    assert!(expressions.len() >= 10, "{expressions:?}");

    // PromQL syntax: each query as a recording rule, checked by promtool.
    let dir = tempfile::tempdir().unwrap();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expression) in expressions.iter().enumerate() {
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {}\n",
            serde_json::to_string(expression).unwrap()
        ));
    }
    let rules_path = dir.path().join("rules.yml");
    std::fs::write(&rules_path, rules).unwrap();
    let out = Command::new("promtool").args(["check", "rules"]).arg(&rules_path).output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Metric names: a balancer using every feature the dashboard shows.
    let redis = RedisServer::start();
    let (v1, v2) = (named_backend("v1").await, named_backend("v2").await);
    let (listen, admin) = (local(free_port()), local(free_port()));
    let config = format!(
        r#"
[admin]
listen = "{admin}"

[redis]
url = "{redis}"

[rate_limits.per_client]
rate = 1000
burst = 100

[[listeners]]
name = "web"
listen = "{listen}"
pool = "v1"
rate_limit = "per_client"

  [[listeners.routes]]
  name = "api"
  path_prefix = "/api"
  canary = {{ pool = "v2", baseline = "v1", steps = [10, 100], interval = "1h" }}

  [[listeners.routes]]
  name = "copied"
  path_prefix = "/copied"
  pool = "v1"
  mirror = {{ pool = "v2", percent = 100 }}

[pools.v1]
backends = [{{ address = "{v1}" }}]
affinity = {{ kind = "client_ip", store = "redis" }}
admission = {{ max_concurrent = 100 }}
circuit_breaker = {{ max_requests = 100 }}
retries = {{ attempts = 2 }}
autoscale = {{ max = 4 }}

[pools.v2]
backends = [{{ address = "{v2}" }}]
"#,
        redis = redis.url(),
        v1 = v1.address,
        v2 = v2.address,
    );
    let _lb = Fulcrum::start(&config, admin);
    let client = client();
    for path in ["/", "/api/x", "/copied"] {
        assert_eq!(get(&client, &format!("http://{listen}{path}")).await.0, 200);
    }
    let (_, metrics) = get(&client, &format!("http://{admin}/metrics")).await;
    let exported = exported_names(&metrics);
    let mut named = BTreeSet::new();
    for expression in &expressions {
        let mut rest = expression.as_str();
        while let Some(start) = rest.find("lb_") {
            let name: String =
                rest[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            rest = &rest[start + name.len()..];
            named.insert(name);
        }
    }
    let unknown: Vec<&String> = named.iter().filter(|n| !exported.contains(*n)).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard names metrics nothing exports: {unknown:?}\nexported: {exported:?}"
    );
    println!("{} dashboard queries name {} metrics, all exported", expressions.len(), named.len());
}

#[test]
fn systemd_hears_ready_once_the_listeners_are_bound() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    notify.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let listen = local(free_port());
    let config = dir.path().join("fulcrum.toml");
    std::fs::write(
        &config,
        format!("[[listeners]]\nname = \"web\"\nlisten = \"{listen}\"\npool = \"app\"\n\n[pools.app]\n"),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_fulcrum"))
        .args(["run", "-c"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &socket_path)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut message = [0u8; 256];
    let received = notify.recv(&mut message);
    let accepting = std::net::TcpStream::connect(listen).is_ok();
    let _ = child.kill();
    let _ = child.wait();
    let message =
        String::from_utf8_lossy(&message[..received.expect("systemd was told nothing")]).to_string();
    assert_eq!(message.trim(), "READY=1");
    assert!(accepting, "READY=1 came before the listener accepted");
}
