//! The admin interface: a Unix socket (mode 0600, root only) on which the
//! running gateway answers the `gateway` CLI. One JSON request per
//! connection, one JSON response back (`protocol`). The `server` applies
//! requests to the XDP maps; the `client` is what the CLI uses.

#![forbid(unsafe_code)]

pub mod client;
pub mod protocol;
pub mod quota;
pub mod server;

use gateway_common::acl::{BlockEntry, REASON_LEN};

/// The reason text stored in a block entry.
pub fn reason_text(entry: &BlockEntry) -> String {
    let end = entry
        .reason
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(REASON_LEN);
    String::from_utf8_lossy(&entry.reason[..end]).into_owned()
}

/// Encodes a reason into the fixed-size field, cut at a char boundary.
pub fn reason_bytes(reason: &str) -> [u8; REASON_LEN] {
    let mut out = [0u8; REASON_LEN];
    let mut end = reason.len().min(REASON_LEN);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    out[..end].copy_from_slice(&reason.as_bytes()[..end]);
    out
}
