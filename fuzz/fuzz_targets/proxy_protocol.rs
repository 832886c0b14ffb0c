//! The first bytes of a connection to a `proxy_protocol` listener: parsed
//! as a PROXY header of either version, never panics, and what it carries
//! round-trips through the headers Fulcrum writes upstream.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| fulcrum_proxy::fuzzing::proxy_header(data));
