//! The TOML config: parse + validate (`Config::parse`, the code behind
//! `gateway run --config` and `gateway check-config`). Any text must give a
//! config or an error, never a panic; an error's message must name the
//! origin, as every config error does (`fuzz.toml:LINE:COL: ...` or
//! `fuzz.toml: ...`). Config::parse reads no files (key, schema and
//! certificate files are read later, when providers are built).

#![no_main]

use gateway::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = Config::parse(text, "fuzz.toml") {
        let message = e.to_string();
        assert!(
            message.starts_with("fuzz.toml"),
            "config error without its origin: {message}"
        );
    }
});
