//! `[admin]`: where the admin Unix socket is.

#![forbid(unsafe_code)]

use std::path::PathBuf;

use serde::Deserialize;

/// The admin Unix socket the `gateway` CLI talks to.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSection {
    /// Socket path; created with mode 0600 (root only).
    pub socket: PathBuf,
}

impl Default for AdminSection {
    fn default() -> Self {
        Self {
            socket: PathBuf::from(DEFAULT_ADMIN_SOCKET),
        }
    }
}

/// Where the CLI looks for the running gateway unless told otherwise.
pub const DEFAULT_ADMIN_SOCKET: &str = "/run/gateway/admin.sock";
