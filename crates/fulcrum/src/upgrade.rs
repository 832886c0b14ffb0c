//! Binary upgrade without a dropped connection (`SIGUSR2`), as nginx and
//! HAProxy do it: the running process starts the binary at its own path
//! (read from disk again, so a replaced file is the new version) with the
//! same arguments, handing on every listening socket
//! ([`fulcrum_proxy::inherit`]). The new process serves from those sockets
//! and, once its listeners and admin API are up, tells the old one with
//! `SIGTERM`; the old one then stops accepting, drains in flight requests
//! up to `graceful_timeout` and exits. A new binary that exits or hangs
//! before it is ready leaves the old one serving.
//!
//! Under systemd (`Type=notify`, `NotifyAccess=all`) the new process also
//! reports itself as the service's main process (`MAINPID`).

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use command_fds::{CommandFdExt, FdMapping};

/// Tells the new process which process to signal when it is ready.
const PARENT_VARIABLE: &str = "FULCRUM_UPGRADE_FROM";
/// How long a new process may take to become ready before it is killed.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// The first descriptor of `LISTEN_FDS` (systemd's convention).
const FIRST_FD: i32 = 3;

/// The binary to start on an upgrade: this process's path, as read at
/// start (before the file could be replaced).
pub fn executable() -> Option<PathBuf> {
    std::env::current_exe().ok()
}

/// Starts the new binary at `executable` with `sockets`; the returned task
/// ends with the new process's exit status if it exits (or is killed for
/// hanging) before it tells this one it is ready.
pub fn start(
    executable: &std::path::Path,
    sockets: Vec<(String, OwnedFd)>,
) -> std::io::Result<tokio::task::JoinHandle<std::io::Result<ExitStatus>>> {
    let names: Vec<&str> = sockets.iter().map(|(name, _)| name.as_str()).collect();
    let names = names.join(",");
    let count = sockets.len();
    let mappings: Vec<FdMapping> = sockets
        .into_iter()
        .zip(FIRST_FD..)
        .map(|((_, fd), child_fd)| FdMapping { parent_fd: fd, child_fd })
        .collect();
    let mut command = tokio::process::Command::new(executable);
    command
        .args(std::env::args_os().skip(1))
        .env(fulcrum_proxy::inherit::NAMES_VARIABLE, &names)
        .env("LISTEN_FDS", count.to_string())
        .env_remove("LISTEN_PID")
        .env(PARENT_VARIABLE, std::process::id().to_string())
        .fd_mappings(mappings)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut child = command.spawn()?;
    tracing::info!(pid = child.id(), executable = %executable.display(), sockets = %names, "binary upgrade: new process started");
    Ok(tokio::spawn(async move {
        match tokio::time::timeout(READY_TIMEOUT, child.wait()).await {
            Ok(status) => status,
            Err(_) => {
                tracing::error!(timeout = ?READY_TIMEOUT, "binary upgrade: the new process is not ready in time; killing it");
                child.kill().await?;
                child.wait().await
            }
        }
    }))
}

/// Announces readiness: to systemd (`READY=1`, and `MAINPID` after an
/// upgrade) and, when this process was started by an upgrade, to the old
/// process, which then drains and exits.
pub fn ready() {
    let parent = std::env::var(PARENT_VARIABLE).ok().and_then(|p| p.parse::<i32>().ok());
    let closed = fulcrum_proxy::inherit::close_unused();
    if !closed.is_empty() {
        tracing::info!(sockets = ?closed, "inherited sockets the config no longer uses are closed");
    }
    let mut states = vec![sd_notify::NotifyState::Ready];
    if parent.is_some() {
        states.push(sd_notify::NotifyState::MainPid(std::process::id()));
    }
    if let Err(e) = sd_notify::notify(&states) {
        tracing::warn!(error = %e, "cannot tell systemd the balancer is ready");
    }
    let Some(parent) = parent.and_then(rustix::process::Pid::from_raw) else { return };
    match rustix::process::kill_process(parent, rustix::process::Signal::TERM) {
        Ok(()) => tracing::info!(
            old = parent.as_raw_nonzero().get(),
            "binary upgrade: serving; the old process drains"
        ),
        Err(e) => {
            tracing::warn!(old = parent.as_raw_nonzero().get(), error = %e, "binary upgrade: cannot signal the old process")
        }
    }
}
