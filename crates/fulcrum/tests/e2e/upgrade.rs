//! Binary upgrade end to end: `SIGUSR2` under four looping clients starts
//! the binary at the same path with the listening sockets handed on; the
//! new process serves, the old one drains and exits, and no request fails.
//! A broken new binary leaves the old process serving.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;

/// `fulcrum run` started from a copy of the binary in a temp dir, so the
/// test can replace the file as an operator installing a new version does.
struct Installed(Fulcrum);

impl Installed {
    fn start(config: &str, ready: SocketAddr) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let binary = dir.path().join("fulcrum");
        install(&binary, Path::new(env!("CARGO_BIN_EXE_fulcrum")));
        Self(Fulcrum::start_binary(&binary, dir, config, ready))
    }

    fn binary(&self) -> PathBuf {
        self.0.dir.path().join("fulcrum")
    }

    fn wait_for_log(&self, text: &str, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.0.log().matches(text).count() < count {
            assert!(
                Instant::now() < deadline,
                "the log never said `{text}` {count} times:\n{}",
                self.0.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The pid the last upgrade started, from the old process's log.
    fn new_pid(&self) -> u32 {
        let log = self.0.log();
        let line = log.lines().rev().find(|l| l.contains("binary upgrade: new process started")).unwrap();
        let pid = line.split("pid=").nth(1).unwrap().split_whitespace().next().unwrap();
        pid.parse().unwrap()
    }
}

/// Writes `from` to `to` as a new file (a new inode, as package managers
/// install), executable.
fn install(to: &Path, from: &Path) {
    let staging = to.with_extension("new");
    std::fs::copy(from, &staging).unwrap();
    std::fs::rename(&staging, to).unwrap();
}

fn signal(pid: u32, signal: &str) -> bool {
    Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status().unwrap().success()
}

fn alive(pid: u32) -> bool {
    signal(pid, "0")
}

/// Four clients looping GETs until `stop`; returns (answered 200, failed).
fn looping_clients(
    listen: SocketAddr,
    stop: &Arc<AtomicBool>,
) -> (Vec<tokio::task::JoinHandle<()>>, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let tasks = (0..4)
        .map(|_| {
            let (stop, ok, failed) = (Arc::clone(stop), Arc::clone(&ok), Arc::clone(&failed));
            tokio::spawn(async move {
                let client = client();
                while !stop.load(Ordering::SeqCst) {
                    match client.get(format!("http://{listen}/").parse().unwrap()).await {
                        Ok(response) if response.status() == 200 => ok.fetch_add(1, Ordering::SeqCst),
                        other => {
                            eprintln!("failed: {:?}", other.map(|r| r.status()));
                            failed.fetch_add(1, Ordering::SeqCst)
                        }
                    };
                }
            })
        })
        .collect();
    (tasks, ok, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr2_hands_the_sockets_to_the_new_binary_and_fails_nothing() {
    let backend = backend(|_request| async {
        tokio::time::sleep(Duration::from_millis(5)).await;
        text("ok")
    })
    .await;
    let (listen, admin) = (local(free_port()), local(free_port()));
    let config = http_config(listen, "round_robin", &[backend.address], "")
        .replace("[[listeners]]", &format!("[admin]\nlisten = \"{admin}\"\n\n[[listeners]]"));
    let mut old = Installed::start(&config, listen);
    let old_pid = old.0.child.id();

    // A broken "new version" is installed: the old process keeps serving.
    let broken = old.0.dir.path().join("broken.sh");
    std::fs::write(&broken, "#!/bin/sh\nexit 3\n").unwrap();
    std::fs::set_permissions(&broken, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    install(&old.binary(), &broken);
    assert!(signal(old_pid, "USR2"));
    old.wait_for_log("binary upgrade failed: the new process ended before it was ready", 1);
    assert!(old.0.child.try_wait().unwrap().is_none(), "the old process still runs");
    let client = client();
    assert_eq!(get(&client, &format!("http://{listen}/")).await.0, 200);
    assert_eq!(get(&client, &format!("http://{admin}/health")).await.0, 200);

    // The real new version, under four looping clients.
    install(&old.binary(), Path::new(env!("CARGO_BIN_EXE_fulcrum")));
    let stop = Arc::new(AtomicBool::new(false));
    let (clients, ok, failed) = looping_clients(listen, &stop);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = ok.load(Ordering::SeqCst);
    assert!(signal(old_pid, "USR2"));
    old.wait_for_log("binary upgrade: new process started", 2);
    let new_pid = old.new_pid();
    let exited = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = old.0.child.try_wait().unwrap() {
                return (status.code(), old);
            }
            assert!(Instant::now() < deadline, "the old process did not exit:\n{}", old.0.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let (code, old) = exited.await.unwrap();
    let at_exit = ok.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
    println!(
        "upgrade {old_pid} -> {new_pid}: old exited with {code:?}; {ok} requests ({} before the signal, {} after the old one left), {failed} failed",
        before,
        ok - at_exit
    );
    let new_alive = alive(new_pid);
    let health = get(&client, &format!("http://{admin}/health")).await.0;
    let log = old.0.log();
    signal(new_pid, "TERM");
    assert_eq!(code, Some(0), "the old process drained and exited cleanly:\n{log}");
    assert_ne!(new_pid, old_pid);
    assert!(new_alive, "the new process serves");
    assert_eq!(health, 200, "the new process serves the admin API");
    assert_eq!(failed, 0, "no request failed across the upgrade:\n{log}");
    assert!(ok - at_exit > 20, "requests kept flowing after the old process left");
    assert!(log.contains("binary upgrade: listening sockets inherited count=2"), "{log}");
}
