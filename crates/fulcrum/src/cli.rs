//! Command-line arguments (clap): the commands the README's command table lists.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Fulcrum: a load balancer for HTTP and TCP.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the load balancer from a config file (SIGHUP reloads, SIGTERM drains).
    Run {
        /// Config file.
        #[arg(short, long, default_value = "fulcrum.toml")]
        config: PathBuf,
    },
    /// Validate a config file: exit 0 with a summary, or 2 with every error.
    Check {
        /// Config file.
        #[arg(short, long, default_value = "fulcrum.toml")]
        config: PathBuf,
    },
    /// Start built-in demo backends, a balancer on 127.0.0.1:8080 and the dashboard on 127.0.0.1:9090, with light traffic to watch.
    Demo,
    /// A small test backend: every path answers 200 with its name, /health answers {"status":"ok"}.
    Backend(BackendArgs),
    /// Talk to a running balancer's admin API.
    Ctl(CtlArgs),
    /// Simulate the balancing algorithms over a workload and compare them.
    Simulate {
        /// Scenario file (default: the built-in slow-backend scenario, examples/scenarios/slow-backend.toml).
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// Write charts (SVG) to this directory.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print the results as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Args)]
pub struct BackendArgs {
    /// Address to listen on, e.g. 127.0.0.1:9001.
    #[arg(long)]
    pub listen: std::net::SocketAddr,
    /// Name put in every response body (default: the listen address).
    #[arg(long)]
    pub name: Option<String>,
    /// Added delay before each answer, e.g. 20ms.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub latency: Duration,
    /// Extra random delay, uniform in 0..jitter.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub jitter: Duration,
    /// Fraction of requests answered with 500, 0.0..=1.0.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub error_rate: f64,
}

#[derive(Debug, Clone, Args)]
pub struct CtlArgs {
    /// Admin API base URL.
    #[arg(long, default_value = "http://127.0.0.1:9090")]
    pub admin: String,
    /// Bearer token (default: $FULCRUM_ADMIN_TOKEN).
    #[arg(long, env = "FULCRUM_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum CtlCommand {
    /// Exit 0 when the balancer's admin API answers `/health` (container health checks).
    Health,
    /// List pools.
    Pools,
    /// List a pool's backends with their state and figures.
    Backends { pool: String },
    /// Add a backend to a running pool.
    Add {
        pool: String,
        address: String,
        #[arg(long)]
        weight: Option<u32>,
    },
    /// Drain a backend, then remove it.
    Remove { pool: String, id: String },
    /// Change a backend's weight.
    Weight { pool: String, id: String, weight: u32 },
    /// Stop sending new requests to a backend (in-flight ones finish).
    Drain { pool: String, id: String },
    /// Let a backend take traffic again.
    Enable { pool: String, id: String },
    /// Reload the config file.
    Reload,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    fulcrum_config::parse_duration(text)
}

fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if (0.0..=1.0).contains(&rate) => Ok(rate),
        _ => Err(format!("`{text}` is not a fraction between 0.0 and 1.0")),
    }
}
