//! `fulcrum run`: serve from a config file until SIGTERM/SIGINT (graceful
//! drain, exit 0); SIGHUP reloads the file through a diff and keeps the
//! running config when the new one has errors.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use fulcrum_admin::Control;
use fulcrum_config::{Config, Overlay, Source};
use fulcrum_proxy::Proxy;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use crate::control::Controller;

/// Runs the balancer from `path`.
pub fn run(path: &Path) -> ExitCode {
    let source = match Source::read(path) {
        Ok(source) => source,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(2);
        }
    };
    let (config, overlay) = match Controller::load(Some(path), &source) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let executable = crate::upgrade::executable();
    let served = runtime(config.server.worker_threads)
        .and_then(|rt| rt.block_on(serve(path.to_path_buf(), executable, source, overlay, config)));
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => crate::runtime_failure(&e),
    }
}

/// A tokio runtime with `worker_threads` workers (0 = one per core). A
/// single worker runs on the current thread: no work stealing to pay for.
/// A worker going idle drops its pooled backend connections that closed
/// or idled out.
pub fn runtime(worker_threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = if worker_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        if worker_threads > 1 {
            b.worker_threads(worker_threads);
        }
        b
    };
    builder
        .on_thread_park(fulcrum_proxy::sweep_when_idle)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Serves until a stop signal; SIGHUP re-reads `path` (runtime changes stay
/// layered over it); SIGUSR2 starts `executable` with the listening sockets
/// (a binary upgrade), which stops this process once it serves.
async fn serve(
    path: PathBuf,
    executable: Option<PathBuf>,
    source: Source,
    overlay: Overlay,
    config: Config,
) -> anyhow::Result<()> {
    let mut hangup = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;
    let mut upgrade_signal = signal(SignalKind::user_defined2()).context("cannot listen for SIGUSR2")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    let graceful_timeout = config.server.graceful_timeout;
    let watch = config.admin.as_ref().is_some_and(|a| a.watch_config);
    let (config, overlay) = crate::discovery::resolve_at_start(&source, config, overlay)
        .await
        .map_err(|e| anyhow::anyhow!("the discovered backends do not fit the config: {e}"))?;
    let (controller, proxy, admin) = start(Some(path.clone()), source, overlay, config).await?;
    controller.sync_discovery();
    crate::upgrade::ready();
    let mut upgrading = None;
    if watch {
        tokio::spawn(watch_config(path.clone(), controller.clone()));
    }
    loop {
        tokio::select! {
            _ = hangup.recv() => {
                tracing::info!(config = %path.display(), "SIGHUP: reloading");
                log_reload(controller.reload());
            }
            _ = upgrade_signal.recv() => {
                if upgrading.is_some() {
                    tracing::warn!("SIGUSR2: a binary upgrade is already under way");
                    continue;
                }
                let Some(executable) = &executable else {
                    tracing::error!("SIGUSR2: cannot upgrade: this process does not know its binary's path");
                    continue;
                };
                let sockets = proxy.handoff().and_then(|mut sockets| {
                    sockets.extend(admin.handoff()?);
                    Ok(sockets)
                });
                match sockets.and_then(|sockets| crate::upgrade::start(executable, sockets)) {
                    Ok(watch) => upgrading = Some(watch),
                    Err(e) => tracing::error!(error = %e, "SIGUSR2: cannot start the new binary; still serving"),
                }
            }
            exit = async { upgrading.as_mut().expect("guarded").await }, if upgrading.is_some() => {
                upgrading = None;
                let status = match exit {
                    Ok(Ok(status)) => status.to_string(),
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                };
                tracing::error!(%status, "binary upgrade failed: the new process ended before it was ready; this one keeps serving");
            }
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    if upgrading.is_some() {
        // The new process serves the admin API now.
        admin.stop.cancel();
    }
    tracing::info!(timeout = ?graceful_timeout, "stopping: draining in-flight requests");
    let drained = proxy.shutdown(graceful_timeout).await;
    admin.stop.cancel();
    if drained {
        tracing::info!("all connections finished; bye");
    } else {
        tracing::warn!("graceful timeout reached with connections still open; closing them");
    }
    Ok(())
}

/// The running admin API: how to stop it, and its socket for a binary upgrade.
pub struct AdminApi {
    /// Stops accepting.
    pub stop: CancellationToken,
    /// `(address, a duplicate of the listening socket)`, when there is an admin API.
    socket: Option<(std::net::SocketAddr, std::os::fd::OwnedFd)>,
}

impl AdminApi {
    /// The admin socket, named, to hand on at a binary upgrade.
    fn handoff(&self) -> std::io::Result<Option<(String, std::os::fd::OwnedFd)>> {
        self.socket
            .as_ref()
            .map(|(address, fd)| Ok((fulcrum_proxy::inherit::name(false, *address), fd.try_clone()?)))
            .transpose()
    }
}

/// Starts the proxy on `config` (`source` with `overlay` applied) and,
/// when configured, the admin API.
pub async fn start(
    path: Option<PathBuf>,
    source: Source,
    overlay: Overlay,
    config: Config,
) -> anyhow::Result<(Controller, Arc<Proxy>, AdminApi)> {
    let admin = config.admin.clone();
    let proxy = Proxy::start(config)?;
    let controller = Controller::new(path, source, overlay, Arc::clone(&proxy));
    let mut api = AdminApi { stop: CancellationToken::new(), socket: None };
    if let Some(admin) = admin {
        let (control, stop) =
            (Arc::new(controller.clone()) as Arc<dyn fulcrum_admin::Control>, api.stop.clone());
        let listener = match fulcrum_proxy::inherit::tcp(admin.listen) {
            Some(inherited) => {
                inherited.set_nonblocking(true)?;
                tokio::net::TcpListener::from_std(inherited)?
            }
            None => tokio::net::TcpListener::bind(admin.listen)
                .await
                .with_context(|| format!("admin API cannot listen on {}", admin.listen))?,
        };
        api.socket = Some((admin.listen, std::os::fd::AsFd::as_fd(&listener).try_clone_to_owned()?));
        tokio::spawn(async move {
            if let Err(e) = fulcrum_admin::serve(
                listener,
                fulcrum_admin::Access::new(admin.token, admin.allow),
                control,
                stop,
            )
            .await
            {
                tracing::error!(error = %e, "admin API stopped");
            }
        });
    }
    Ok((controller, proxy, api))
}

/// Reloads whenever the config file's content changes (`[admin]
/// watch_config = true`). Polling the content once a second is simple and
/// survives editors that replace the file instead of writing it.
async fn watch_config(path: PathBuf, controller: Controller) {
    let mut last = std::fs::read(&path).ok();
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
        let now = std::fs::read(&path).ok();
        if now.is_some() && now != last {
            tracing::info!(config = %path.display(), "config file changed: reloading");
            log_reload(controller.reload());
            last = now;
        }
    }
}

fn log_reload(result: Result<Vec<String>, Vec<String>>) {
    match result {
        Ok(changes) if changes.is_empty() => tracing::info!("reload applied: nothing changed"),
        Ok(changes) => {
            for change in changes {
                tracing::info!("reload applied: {change}");
            }
        }
        Err(errors) => tracing::error!("reload refused, the running config stays:\n{}", errors.join("\n")),
    }
}
