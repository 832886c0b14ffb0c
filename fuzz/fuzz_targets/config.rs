//! The config parser and validator: any text gives a config or errors
//! that name a key, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(errors) = fulcrum_config::parse(text, "fuzz.toml", std::path::Path::new("/nonexistent")) {
            assert!(!errors.errors.is_empty());
            for error in &errors.errors {
                let _ = error.to_string();
            }
        }
    }
});
