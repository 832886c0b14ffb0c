//! A backend's response (head and body) as the upstream HTTP/1.1 client
//! decodes it: a backend is trusted with its answers, not with its bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| fulcrum_proxy::fuzzing::backend_response(data));
