//! PROXY protocol v1 (text) and v2 (binary) headers
//! (`proxy::proxy_protocol::read_header`), read from the fuzz bytes as the
//! start of a connection. Checked beyond "no panic": the header is read
//! exactly, never past its end, so what follows it reaches TLS or HTTP
//! untouched: a v1 header ends at its first CRLF within 107 bytes, a v2
//! header is 16 bytes plus its length field.

#![no_main]

use std::sync::LazyLock;

use gateway::proxy::proxy_protocol::read_header;
use libfuzzer_sys::fuzz_target;

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// A byte slice never makes a read wait, so one current-thread runtime
/// without I/O or timers is enough to drive the async reader.
static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
});

fuzz_target!(|data: &[u8]| {
    let mut rest: &[u8] = data;
    let result = RUNTIME.block_on(read_header(&mut rest));
    let consumed = data.len() - rest.len();
    if result.is_err() {
        return;
    }
    if data.starts_with(V2_SIGNATURE) {
        let len = u16::from_be_bytes([data[14], data[15]]) as usize;
        assert_eq!(consumed, 16 + len, "v2 header read to the wrong end");
    } else {
        assert!(data.starts_with(b"PROXY "), "accepted without a signature");
        assert!(consumed <= 107, "v1 header longer than 107 bytes accepted");
        let line = &data[..consumed];
        assert!(line.ends_with(b"\r\n"), "v1 header read past its end");
        assert_eq!(
            line.windows(2).position(|w| w == b"\r\n"),
            Some(consumed - 2),
            "v1 header read past its first CRLF"
        );
    }
});
