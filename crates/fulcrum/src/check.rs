//! `fulcrum check`: validate a config without running it.

use std::path::Path;
use std::process::ExitCode;

use fulcrum_config::Protocol;

/// Exit 0 and a one-line summary, or 2 and every error.
pub fn check(path: &Path) -> ExitCode {
    match fulcrum_config::load(path) {
        Ok(config) => {
            let backends: usize = config.pools.values().map(|p| p.backends.len()).sum();
            let count = |p: Protocol| config.listeners.iter().filter(|l| l.protocol == p).count();
            println!(
                "{}: ok — {} listeners ({} http, {} https, {} tcp, {} udp), {} pools, {} backends",
                path.display(),
                config.listeners.len(),
                count(Protocol::Http),
                count(Protocol::Https),
                count(Protocol::Tcp),
                count(Protocol::Udp),
                config.pools.len(),
                backends
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{} error(s); fix them and run `fulcrum check` again", errors.errors.len());
            ExitCode::from(2)
        }
    }
}
