//! An affinity cookie value from a client: never opens unless sealed with
//! the pool's secret, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| fulcrum_proxy::fuzzing::affinity_cookie(data));
