//! A request head from a client, through every decision the data path
//! takes before forwarding it (validation, limits, hash keys, the rewrite).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| fulcrum_proxy::fuzzing::request_head(data));
