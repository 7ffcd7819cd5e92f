//! Host / authority parsing (`proxy::authority::parse`, the Host header or
//! HTTP/2 `:authority` before routing). Any text must give an authority or
//! an error, never a panic. Checked beyond that: parsing is deterministic,
//! and an accepted authority holds no control byte, space, `/`, `?`, `#` or
//! `@` (no path, query, fragment or userinfo smuggled into the Host).

#![no_main]

use gateway::proxy::authority::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let first = format!("{:?}", parse(text));
    let second = format!("{:?}", parse(text));
    assert_eq!(first, second, "parse is not deterministic for {text:?}");
    if parse(text).is_ok() {
        // Whatever the gateway accepts as a Host has no byte a header
        // value cannot carry, and no path, query, fragment or userinfo.
        assert!(
            !text
                .bytes()
                .any(|b| b.is_ascii_control() || matches!(b, b'/' | b'?' | b'#' | b'@' | b' ')),
            "accepted {text:?}"
        );
    }
});
