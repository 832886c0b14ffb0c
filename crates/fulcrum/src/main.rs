//! `fulcrum`: the command-line entry point. Each subcommand lives in its
//! own module; this file only parses arguments and maps outcomes to exit
//! codes (0 success, 2 bad usage or invalid config, 1 runtime failure).

mod backend;
mod check;
mod cli;
mod control;
mod ctl;
mod demo;
mod discovery;
mod run;
mod simulate;
mod upgrade;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Sockets a binary upgrade handed on, taken before any thread starts.
    let inherited = fulcrum_proxy::inherit::adopt();
    let cli = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match inherited {
        Ok(0) => {}
        Ok(count) => tracing::info!(count, "binary upgrade: listening sockets inherited"),
        Err(e) => {
            tracing::error!(error = %e, "binary upgrade: cannot take the inherited sockets; binding anew")
        }
    }
    match cli.command {
        cli::Command::Run { config } => run::run(&config),
        cli::Command::Check { config } => check::check(&config),
        cli::Command::Backend(args) => backend::run(args),
        cli::Command::Demo => demo::run(),
        cli::Command::Ctl(args) => ctl::run(args),
        cli::Command::Simulate { scenario, out, json } => {
            simulate::run(scenario.as_deref(), out.as_deref(), json)
        }
    }
}

/// Prints a runtime failure and returns exit code 1.
fn runtime_failure(error: &anyhow::Error) -> ExitCode {
    eprintln!("fulcrum: {error:#}");
    ExitCode::from(1)
}
