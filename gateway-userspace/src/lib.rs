//! The gateway: an XDP fast path in the kernel and its userspace control
//! plane. `xdp` loads the program and owns its maps; `admin` is the Unix
//! socket the CLI talks to; `config` parses the TOML file; `run` ties them
//! together in the `gateway run` process; `cli` is the command line;
//! `validate` checks requests against per-route rules (JSON Schema, OpenAPI).

pub mod admin;
pub mod cli;
pub mod config;
pub mod duration;
pub mod net;
pub mod run;
pub mod validate;
pub mod xdp;
