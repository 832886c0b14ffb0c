//! Placement rules end to end: priority levels, the local zone, the
//! client's nearest region, and slow start of an added backend.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::common::*;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;

async fn tally(
    client: &Client<HttpConnector, Body>,
    listen: SocketAddr,
    requests: usize,
) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for _ in 0..requests {
        let (status, body) = get(client, &format!("http://{listen}/")).await;
        assert_eq!(status, 200);
        *seen.entry(body).or_insert(0) += 1;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_one_and_remote_zones_idle_while_the_first_choice_is_healthy() {
    let [a, b, backup, remote] = [
        named_backend("a").await,
        named_backend("b").await,
        named_backend("backup").await,
        named_backend("remote").await,
    ];
    let listen = local(free_port());
    let config = format!(
        "[[listeners]]\nname = \"web\"\nlisten = \"{listen}\"\npool = \"app\"\n\
         [pools.app]\nalgorithm = \"round_robin\"\nlocality = {{ zone = \"z1\" }}\nbackends = [\
         {{ address = \"{}\", zone = \"z1\" }}, {{ address = \"{}\", zone = \"z1\" }}, \
         {{ address = \"{}\", zone = \"z2\" }}, {{ address = \"{}\", zone = \"z1\", priority = 1 }}]\n",
        a.address, b.address, remote.address, backup.address
    );
    let _lb = Fulcrum::start(&config, listen);
    let seen = tally(&client(), listen, 40).await;
    assert_eq!(seen, HashMap::from([("a".to_string(), 20), ("b".to_string(), 20)]), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_go_to_their_nearest_region() {
    let [eu, us] = [named_backend("eu").await, named_backend("us").await];
    let listen = local(free_port());
    let config = format!(
        "[geo]\nnetworks = [{{ cidr = \"127.0.0.1/32\", region = \"eu\" }}, {{ cidr = \"127.0.0.2/32\", region = \"us-east\" }}]\n\
         latency = {{ eu = {{ us = 90 }}, us-east = {{ us = 10, eu = 80 }} }}\n\
         [[listeners]]\nname = \"web\"\nlisten = \"{listen}\"\npool = \"app\"\n\
         [pools.app]\ngeo = true\nbackends = [{{ address = \"{}\", region = \"eu\" }}, {{ address = \"{}\", region = \"us\" }}]\n",
        eu.address, us.address
    );
    let _lb = Fulcrum::start(&config, listen);
    assert_eq!(
        tally(&client_from("127.0.0.1".parse().unwrap()), listen, 10).await,
        HashMap::from([("eu".into(), 10)])
    );
    assert_eq!(
        tally(&client_from("127.0.0.2".parse().unwrap()), listen, 10).await,
        HashMap::from([("us".into(), 10)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_added_backend_ramps_up_over_slow_start() {
    let [old, new] = [named_backend("old").await, named_backend("new").await];
    let listen = local(free_port());
    let extra = "slow_start = \"4s\"";
    let lb = Fulcrum::start(&http_config(listen, "weighted_round_robin", &[old.address], extra), listen);
    lb.write_config(&http_config(listen, "weighted_round_robin", &[old.address, new.address], extra));
    lb.signal("HUP");
    lb.wait_for_log("reload applied: pool `app` changed");
    let added = Instant::now();
    let client = client();
    let early = tally(&client, listen, 100).await;
    assert!(added.elapsed() < Duration::from_secs(1), "the early sample took too long to mean anything");
    let early_new = early.get("new").copied().unwrap_or(0);
    assert!(
        early_new < 20,
        "in its first second the new backend took {early_new}% (ramping from 0 to 50% over 4 s)"
    );
    // The ramp is time-based: wait it out, then the shares are equal.
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(added.elapsed())).await;
    let late = tally(&client, listen, 100).await;
    assert_eq!(late.get("new"), Some(&50), "{late:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_fails_over_to_priority_one_and_spills_out_of_a_dead_zone() {
    let [backup, remote] = [named_backend("backup").await, named_backend("remote").await];
    let dead = local(free_port());
    let (listen, zoned) = (local(free_port()), local(free_port()));
    let check =
        "health_check = { path = \"/\", interval = \"100ms\", timeout = \"100ms\", fall = 1, rise = 1 }";
    let config = format!(
        "[[listeners]]\nname = \"web\"\nlisten = \"{listen}\"\npool = \"prio\"\n\
         [[listeners]]\nname = \"zoned\"\nlisten = \"{zoned}\"\npool = \"zone\"\n\
         [pools.prio]\n{check}\nbackends = [{{ address = \"{dead}\" }}, {{ address = \"{}\", priority = 1 }}]\n\
         [pools.zone]\n{check}\nlocality = {{ zone = \"z1\" }}\n\
         backends = [{{ address = \"{dead}\", zone = \"z1\" }}, {{ address = \"{}\", zone = \"z2\" }}]\n",
        backup.address, remote.address
    );
    let lb = Fulcrum::start(&config, zoned);
    // Once the probes mark the priority-0 / local backend down, the
    // fallback level and the remote zone take everything.
    lb.wait_for_log("backend is down");
    let deadline = Instant::now() + Duration::from_secs(5);
    while lb.log().matches("backend is down").count() < 2 {
        assert!(Instant::now() < deadline, "both pools' dead backend should be marked down:\n{}", lb.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let client = client();
    assert_eq!(tally(&client, listen, 20).await, HashMap::from([("backup".to_string(), 20)]));
    assert_eq!(tally(&client, zoned, 20).await, HashMap::from([("remote".to_string(), 20)]));
}
