//! `fulcrum ctl`: the admin API from the command line, with tables for
//! people and `--json` for scripts. Exit 1 when the balancer cannot be
//! reached, 2 when it refuses the request (bad input, unknown pool).

use std::process::ExitCode;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

use crate::cli::{CtlArgs, CtlCommand};

/// Runs one `ctl` subcommand.
pub fn run(args: CtlArgs) -> ExitCode {
    let (method, path, body) = request_of(&args.command);
    let answer = crate::run::runtime(1).and_then(|rt| rt.block_on(call(&args, method, &path, body)));
    let (status, value) = match answer {
        Ok(answer) => answer,
        Err(e) => {
            eprintln!("fulcrum ctl: cannot reach the admin API at {}: {e:#}", args.admin);
            return ExitCode::from(1);
        }
    };
    if !status.is_success() {
        let message = value.get("error").and_then(Value::as_str).unwrap_or("no reason given");
        eprintln!("fulcrum ctl: {status}: {message}");
        if let Some(errors) = value.get("errors").and_then(Value::as_array) {
            for error in errors {
                eprintln!("  {}", error.as_str().unwrap_or_default());
            }
        }
        return ExitCode::from(2);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
    } else {
        print!("{}", render(&args.command, &value));
    }
    ExitCode::SUCCESS
}

fn backend_path(pool: &str, id: &str) -> String {
    format!("/api/v1/pools/{pool}/backends/{id}")
}

fn request_of(command: &CtlCommand) -> (Method, String, Option<Value>) {
    match command {
        CtlCommand::Health => (Method::GET, "/health".into(), None),
        CtlCommand::Pools | CtlCommand::Backends { .. } => (Method::GET, "/api/v1/pools".into(), None),
        CtlCommand::Add { pool, address, weight } => (
            Method::POST,
            format!("/api/v1/pools/{pool}/backends"),
            Some(json!({ "address": address, "weight": weight.unwrap_or(1) })),
        ),
        CtlCommand::Remove { pool, id } => (Method::DELETE, backend_path(pool, id), None),
        CtlCommand::Weight { pool, id, weight } => {
            (Method::PATCH, backend_path(pool, id), Some(json!({ "weight": weight })))
        }
        CtlCommand::Drain { pool, id } => {
            (Method::PATCH, backend_path(pool, id), Some(json!({ "state": "draining" })))
        }
        CtlCommand::Enable { pool, id } => {
            (Method::PATCH, backend_path(pool, id), Some(json!({ "state": "active" })))
        }
        CtlCommand::Reload => (Method::POST, "/api/v1/reload".into(), None),
    }
}

async fn call(
    args: &CtlArgs,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<(StatusCode, Value)> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut request =
        Request::builder().method(method).uri(format!("{}{path}", args.admin.trim_end_matches('/')));
    if let Some(token) = &args.token {
        request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let body = match body {
        Some(value) => {
            request = request.header(http::header::CONTENT_TYPE, "application/json");
            Bytes::from(value.to_string())
        }
        None => Bytes::new(),
    };
    let response = client.request(request.body(Full::new(body))?).await?;
    let status = response.status();
    let bytes = response.into_body().collect().await?.to_bytes();
    Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
}

/// A human-readable rendering of the API's answer.
fn render(command: &CtlCommand, value: &Value) -> String {
    let empty = Vec::new();
    let pools = value.get("pools").and_then(Value::as_array).unwrap_or(&empty);
    match command {
        CtlCommand::Health => format!("{}\n", text(&value["status"])),
        CtlCommand::Pools => {
            let rows = pools.iter().map(|p| {
                let backends = p["backends"].as_array().unwrap_or(&empty);
                let healthy =
                    backends.iter().filter(|b| b["health"] != "unhealthy" && b["state"] == "active").count();
                vec![text(&p["name"]), text(&p["algorithm"]), backends.len().to_string(), healthy.to_string()]
            });
            table(&["POOL", "ALGORITHM", "BACKENDS", "SERVING"], rows)
        }
        CtlCommand::Backends { pool } => {
            let Some(found) = pools.iter().find(|p| p["name"] == pool.as_str()) else {
                return format!("no pool named `{pool}`\n");
            };
            let rows = found["backends"].as_array().unwrap_or(&empty).iter().map(|b| {
                vec![
                    text(&b["id"]),
                    text(&b["weight"]),
                    text(&b["state"]),
                    text(&b["health"]),
                    text(&b["circuit"]),
                    text(&b["active_requests"]),
                    text(&b["requests_total"]),
                    text(&b["errors_total"]),
                    format!("{:.1}", b["latency_ewma_ms"].as_f64().unwrap_or(0.0)),
                ]
            });
            table(
                &["ID", "WEIGHT", "STATE", "HEALTH", "CIRCUIT", "ACTIVE", "REQUESTS", "ERRORS", "LATENCY MS"],
                rows,
            )
        }
        CtlCommand::Reload => {
            let changes = value["changes"].as_array().unwrap_or(&empty);
            if changes.is_empty() {
                "reloaded: nothing changed\n".into()
            } else {
                changes.iter().map(|c| format!("reloaded: {}\n", text(c))).collect()
            }
        }
        CtlCommand::Remove { .. } => {
            format!("{}: draining, removed once its requests finish\n", text(&value["id"]))
        }
        _ => {
            format!("{}: weight {}, {}\n", text(&value["id"]), text(&value["weight"]), text(&value["state"]))
        }
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn table(header: &[&str], rows: impl Iterator<Item = Vec<String>>) -> String {
    let rows: Vec<Vec<String>> = rows.collect();
    let widths: Vec<usize> = header
        .iter()
        .enumerate()
        .map(|(i, h)| rows.iter().map(|r| r[i].len()).chain([h.len()]).max().unwrap_or(0))
        .collect();
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        padded.join("  ").trim_end().to_string() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out += &line(row);
    }
    out
}
