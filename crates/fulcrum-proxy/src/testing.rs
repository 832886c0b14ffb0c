//! Helpers for the proxy's paused-time unit tests.

use crate::pool::Pool;

/// The pool `app` built from a config with `backends` and the pool keys
/// in `extra` (TOML lines of `[pools.app]`).
pub fn pool(backends: &[&str], extra: &str) -> Pool {
    let list: Vec<String> = backends.iter().map(|b| format!("{{ address = \"{b}\" }}")).collect();
    let text = format!(
        "[[listeners]]\nname = \"web\"\nlisten = \"127.0.0.1:1\"\npool = \"app\"\n\n\
         [pools.app]\nalgorithm = \"round_robin\"\nbackends = [{}]\n{extra}\n",
        list.join(", ")
    );
    let config =
        fulcrum_config::parse(&text, "test", std::path::Path::new(".")).expect("a valid test config");
    Pool::build("app", &config.pools["app"], None, &Default::default())
}
