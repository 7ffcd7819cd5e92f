//! The `gateway` command line: `run` starts the gateway; every other command
//! talks to a running gateway over the admin socket and prints a table (or
//! JSON with `--json`). Bad input is rejected here with a one-line error
//! before anything is sent.

#![forbid(unsafe_code)]

use std::{path::PathBuf, time::Duration};

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use serde::{Serialize, de::DeserializeOwned};

use crate::{
    admin::{
        client,
        protocol::{
            AllowAdded, AllowEntry, AllowRemoved, BlockAdded, ClusterStatus, LimitArg, LimitTable,
            LimitView, Limits, LimitsCleared, ListedBlock, QuotaCleared, QuotaUsage, Reloaded,
            Request, Stats, Unblocked, Upgraded,
        },
    },
    config::DEFAULT_ADMIN_SOCKET,
    net::Net,
};

/// The `gateway` command line.
#[derive(Parser)]
#[command(
    name = "gateway",
    version,
    about = "API gateway with an XDP fast path: blocks and rate limits in the kernel, control from userspace"
)]
pub struct Cli {
    /// Admin socket of the running gateway.
    #[arg(long, global = true, env = "GATEWAY_ADMIN_SOCKET", default_value = DEFAULT_ADMIN_SOCKET)]
    pub socket: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands of `gateway`.
#[derive(Subcommand)]
pub enum Command {
    /// Start the gateway (XDP fast path, proxy, admin socket) in the foreground.
    ///
    /// Signals: SIGHUP reloads the config, SIGUSR1 reopens the access log
    /// file, SIGTERM/SIGINT drain in-flight requests and exit, leaving the
    /// XDP filter attached (pinned) unless --xdp-detach-on-exit. The
    /// application log goes to stderr; the access log where `[log]
    /// access_log` says (stdout by default). `[observability]` serves
    /// /metrics, /healthz and /readyz over HTTP. See docs/operations.md.
    Run(RunArgs),
    /// Check a config file and exit: 0 if valid, 64 with file:line:column if not.
    CheckConfig {
        /// The TOML file to check.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print the embedded default configuration, with every setting.
    PrintDefaultConfig,
    /// Block sources in the kernel: every packet from them is dropped.
    #[command(subcommand)]
    Block(BlockCmd),
    /// Allowlist sources: never dropped by blocks or rate limits.
    #[command(subcommand)]
    Allow(AllowCmd),
    /// Per-source packet and new-connection rate limits on protected ports.
    #[command(subcommand)]
    Limit(LimitCmd),
    /// XDP counters per verdict and the top dropped sources.
    Stats {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// How many top dropped sources to show.
        #[arg(long, default_value_t = 10)]
        top: usize,
    },
    /// Cluster mode: the Redis link, and the cluster blocks this node holds.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Quota usage of a consumer (API key name or token subject), shown or
    /// reset on the running gateway (in Redis too, in cluster mode).
    #[command(subcommand)]
    Quota(QuotaCmd),
    /// Re-read the config file of the running gateway (as SIGHUP does); a
    /// bad file is reported with file:line and the running config is kept.
    Reload,
    /// Replace the running gateway by a new process without refusing a
    /// connection: it starts the binary at its own path (install the new
    /// build there first) with its own arguments, hands over the listening
    /// sockets, and exits once the new one serves, after finishing its
    /// requests in flight. If the new process cannot start (a bad config,
    /// a missing binary), the running one goes on and this command fails
    /// with the reason. `systemctl reload gateway` runs this.
    Upgrade,
    /// The XDP attachment itself, read and changed on bpffs (no running
    /// gateway needed): the filter stays attached while no gateway runs.
    #[command(subcommand)]
    Xdp(XdpCmd),
    /// Version of the gateway and of its eBPF program.
    Version,
    /// Print the SHA-256 hash of an API key read from stdin, for
    /// `[auth.api_keys.NAME]` (one trailing newline is ignored).
    HashKey,
}

/// The options of `gateway run`.
#[derive(Args)]
pub struct RunArgs {
    /// Config file (TOML). Without it the embedded default is used.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Detach the XDP filter when the gateway exits (`[xdp]
    /// detach_on_exit`); by default it stays attached (pinned link).
    #[arg(long)]
    pub xdp_detach_on_exit: bool,
    /// Application log format on stderr: `text` for people, `json` (ECS
    /// field names) for log shippers. The access log is always JSON.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

/// `gateway xdp ...`: the pinned XDP links under the config's `pin_dir`.
#[derive(Debug, clap::Subcommand)]
pub enum XdpCmd {
    /// Which interfaces have the gateway's XDP filter attached (pinned
    /// links), in which mode, and the program's build.
    Status {
        /// Config file whose `[xdp] pin_dir` to read (default: the
        /// embedded default's).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Remove the pinned XDP link(s): traffic is no longer filtered once
    /// no gateway process holds the link (stop the gateway first, or run
    /// it with --xdp-detach-on-exit).
    Detach {
        /// Config file whose `[xdp] pin_dir` to use (default: the embedded
        /// default's).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Only this interface (default: every pinned link).
        #[arg(long)]
        interface: Option<String>,
    },
}

fn net_arg(s: &str) -> Result<Net, crate::net::NetError> {
    s.parse()
}

/// A rate or burst: a whole number >= 0 (negative numbers are accepted by
/// the parser only to be rejected with this message).
fn count_arg(s: &str) -> Result<u32, String> {
    s.trim().parse::<u32>().map_err(|_| {
        format!(
            "'{s}' must be a whole number from 0 to {} (0 = unlimited)",
            u32::MAX
        )
    })
}

fn ttl_arg(s: &str) -> Result<std::time::Duration, String> {
    let d = crate::duration::parse(s).map_err(|e| e.to_string())?;
    if d.as_secs() == 0 {
        return Err("a TTL must be at least 1s; omit --ttl for a permanent block".into());
    }
    Ok(d)
}

/// `default` or an IP/CIDR.
fn target_arg(s: &str) -> Result<String, String> {
    if s == "default" {
        return Ok(s.to_owned());
    }
    s.parse::<Net>()
        .map(|n| n.to_string())
        .map_err(|e| e.to_string())
}

/// `gateway block ...`: the XDP blocklist, through the admin socket.
#[derive(Subcommand)]
pub enum BlockCmd {
    /// Block an address or CIDR (e.g. 203.0.113.7, 198.51.100.0/24, 2001:db8::/48).
    Add {
        /// Address or CIDR to block.
        #[arg(value_parser = net_arg)]
        net: Net,
        /// Remove the block by itself after this long (30s, 10m, 1h, 7d).
        #[arg(long, value_parser = ttl_arg)]
        ttl: Option<std::time::Duration>,
        /// Free text shown by `block list` (48 bytes kept).
        #[arg(long)]
        reason: Option<String>,
        /// Block on every gateway node of the cluster (needs `[cluster]`).
        #[arg(long)]
        cluster: bool,
    },
    /// Remove a block.
    Del {
        /// The address or CIDR the block was added for.
        #[arg(value_parser = net_arg)]
        net: Net,
        /// Remove a cluster-wide block from every node.
        #[arg(long)]
        cluster: bool,
    },
    /// List blocks with source, reason and TTL left.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// `gateway cluster ...`: cluster mode, through the admin socket.
#[derive(Subcommand)]
pub enum ClusterCmd {
    /// Whether Redis is reachable, this node's id, and the last error.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// `gateway quota ...`: quota counts, through the admin socket.
#[derive(Subcommand)]
pub enum QuotaCmd {
    /// Requests counted in the current window of every quota of a consumer.
    Get {
        /// The consumer: an API key's name, a token's `sub`, or the key of
        /// a `[[rate_limit.limits]]` quota.
        consumer: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Forget a consumer's counts, so its quotas are whole again.
    Reset {
        /// The consumer: an API key's name, a token's `sub`, or the key of a
        /// `[[rate_limit.limits]]` quota.
        consumer: String,
        /// Only this quota (`plan:<name>` or `limit:<name>`).
        #[arg(long)]
        quota: Option<String>,
    },
}

/// `gateway allow ...`: the XDP allowlist, through the admin socket.
#[derive(Subcommand)]
pub enum AllowCmd {
    /// Allowlist an address or CIDR.
    Add {
        /// Address or CIDR to allowlist.
        #[arg(value_parser = net_arg)]
        net: Net,
    },
    /// Remove an allowlist entry.
    Del {
        /// The address or CIDR the entry was added for.
        #[arg(value_parser = net_arg)]
        net: Net,
    },
    /// List allowlist entries.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// `gateway limit ...`: the XDP per-source budgets, through the admin socket.
#[derive(Subcommand)]
pub enum LimitCmd {
    /// Set the default limits or a per-source override. A rate of 0 means
    /// unlimited. Omitted values keep their current setting.
    Set {
        /// `default`, or an IP/CIDR for an override.
        #[arg(value_parser = target_arg)]
        target: String,
        /// Packets per second.
        #[arg(long, value_parser = count_arg, allow_negative_numbers = true)]
        pps: Option<u32>,
        /// Packet burst (defaults to --pps).
        #[arg(long, requires = "pps", value_parser = count_arg, allow_negative_numbers = true)]
        burst: Option<u32>,
        /// New TCP connections (SYN) per second.
        #[arg(long, value_parser = count_arg, allow_negative_numbers = true)]
        syn_rate: Option<u32>,
        /// SYN burst (defaults to --syn-rate).
        #[arg(long, requires = "syn_rate", value_parser = count_arg, allow_negative_numbers = true)]
        syn_burst: Option<u32>,
    },
    /// Show the limits that apply to a source (or `default`).
    Get {
        /// `default`, or an IP/CIDR.
        #[arg(value_parser = target_arg)]
        target: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List the default limits and every override.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove one override, or all of them.
    Clear {
        /// The override's IP/CIDR; without it every override is removed.
        #[arg(value_parser = net_arg)]
        net: Option<Net>,
    },
}

/// The SHA-256 hex of a key read from `input` (one trailing `\n` or `\r\n`
/// removed). The key never appears in argv, so it stays out of `ps` and
/// shell history.
pub fn hash_key_from(mut input: impl std::io::Read) -> Result<String> {
    let mut key = Vec::new();
    input.read_to_end(&mut key)?;
    if key.last() == Some(&b'\n') {
        key.pop();
        if key.last() == Some(&b'\r') {
            key.pop();
        }
    }
    anyhow::ensure!(!key.is_empty(), "no key on stdin");
    Ok(crate::auth::hash_key(&key))
}

/// Runs a client command against the admin socket and prints its result.
pub fn run_client(socket: &std::path::Path, command: Command) -> Result<()> {
    match command {
        Command::Block(BlockCmd::Add {
            net,
            ttl,
            reason,
            cluster,
        }) => exec(
            socket,
            Request::BlockAdd {
                net: net.to_string(),
                ttl_secs: ttl.map(|d| d.as_secs()),
                reason,
                cluster,
            },
            false,
            |v: &BlockAdded| {
                format!(
                    "blocked {} ({}){}",
                    v.block.net,
                    ttl_text(v.block.ttl_secs_left),
                    cluster_note(v.published)
                )
            },
        ),
        Command::Block(BlockCmd::Del { net, cluster }) => exec(
            socket,
            Request::BlockDel {
                net: net.to_string(),
                cluster,
            },
            false,
            |v: &Unblocked| format!("unblocked {}{}", v.net, cluster_note(v.published)),
        ),
        Command::Cluster(ClusterCmd::Status { json }) => {
            exec(socket, Request::ClusterStatus, json, render_cluster)
        }
        Command::Block(BlockCmd::List { json }) => {
            exec(socket, Request::BlockList, json, render_blocks)
        }
        Command::Allow(AllowCmd::Add { net }) => exec(
            socket,
            Request::AllowAdd {
                net: net.to_string(),
            },
            false,
            |v: &AllowAdded| format!("allowlisted {}", v.net),
        ),
        Command::Allow(AllowCmd::Del { net }) => exec(
            socket,
            Request::AllowDel {
                net: net.to_string(),
            },
            false,
            |v: &AllowRemoved| format!("removed {} from the allowlist", v.net),
        ),
        Command::Allow(AllowCmd::List { json }) => {
            exec(socket, Request::AllowList, json, render_allow)
        }
        Command::Limit(LimitCmd::Set {
            target,
            pps,
            burst,
            syn_rate,
            syn_burst,
        }) => exec(
            socket,
            Request::LimitSet {
                target,
                pps: pps.map(|rate| LimitArg { rate, burst }),
                syn: syn_rate.map(|rate| LimitArg {
                    rate,
                    burst: syn_burst,
                }),
            },
            false,
            |v: &Limits| {
                format!(
                    "{}: pps {}, syn {}",
                    v.target,
                    limit_text(&v.limits.pps),
                    limit_text(&v.limits.syn)
                )
            },
        ),
        Command::Limit(LimitCmd::Get { target, json }) => {
            exec(socket, Request::LimitGet { target }, json, |v: &Limits| {
                format!(
                    "{} (from {}): pps {}, syn {}",
                    v.target,
                    v.matched.as_deref().unwrap_or("default"),
                    limit_text(&v.limits.pps),
                    limit_text(&v.limits.syn)
                )
            })
        }
        Command::Limit(LimitCmd::List { json }) => {
            exec(socket, Request::LimitList, json, render_limits)
        }
        Command::Limit(LimitCmd::Clear { net }) => exec(
            socket,
            Request::LimitClear {
                target: net.map(|n| n.to_string()),
            },
            false,
            |v: &LimitsCleared| format!("removed {} override(s)", v.removed),
        ),
        Command::Stats { json, top } => exec(socket, Request::Stats { top }, json, render_stats),
        Command::Reload => exec(socket, Request::Reload, false, |_: &Reloaded| {
            "reloaded".to_owned()
        }),
        Command::Upgrade => exec(socket, Request::Upgrade, false, |v: &Upgraded| {
            format!(
                "upgraded: pid {} -> {} ({}, {}, {} sockets handed over); the old process exits after its requests in flight",
                v.old_pid, v.new_pid, v.program, v.version, v.sockets
            )
        }),
        Command::Quota(QuotaCmd::Get { consumer, json }) => {
            exec(socket, Request::QuotaGet { consumer }, json, render_quota)
        }
        Command::Quota(QuotaCmd::Reset { consumer, quota }) => exec(
            socket,
            Request::QuotaReset { consumer, quota },
            false,
            |v: &QuotaCleared| {
                format!(
                    "reset {}: {} count(s) on this node{}",
                    v.consumer,
                    v.removed,
                    if v.cluster {
                        format!(", {} in the cluster", v.cluster_removed)
                    } else {
                        String::new()
                    }
                )
            },
        ),
        Command::Run(_)
        | Command::CheckConfig { .. }
        | Command::PrintDefaultConfig
        | Command::Version
        | Command::Xdp(_)
        | Command::HashKey => {
            unreachable!("not a client command")
        }
    }
}

/// Sends `request`, reads its reply as `T` (the `admin::protocol` payload
/// of that request) and prints it: as JSON (keys in alphabetical order, as
/// the gateway sent them) with `json`, else as `render` says.
fn exec<T: Serialize + DeserializeOwned>(
    socket: &std::path::Path,
    request: Request,
    json: bool,
    render: impl FnOnce(&T) -> String,
) -> Result<()> {
    // An upgrade waits for the new process to start (bounded on the
    // gateway's side by upgrade::READY_TIMEOUT + SERVING_TIMEOUT).
    let timeout = if request == Request::Upgrade {
        crate::upgrade::READY_TIMEOUT + crate::upgrade::SERVING_TIMEOUT + Duration::from_secs(10)
    } else {
        Duration::from_secs(10)
    };
    let data: T = client::call_with_timeout(socket, &request, timeout)?;
    if json {
        // Through a `Value`: its map keeps keys sorted.
        let value = serde_json::to_value(&data)?;
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!("{}", render(&data));
    }
    Ok(())
}

fn ttl_text(secs: Option<u64>) -> String {
    match secs {
        Some(secs) => format!(
            "expires in {}",
            crate::duration::format(std::time::Duration::from_secs(secs))
        ),
        None => "permanent".to_owned(),
    }
}

fn limit_text(l: &LimitView) -> String {
    if l.rate == 0 {
        "unlimited".to_owned()
    } else {
        format!("{}/s burst {}", l.rate, l.burst)
    }
}

/// What a `--cluster` change did beyond this node (`published` is set for
/// `--cluster` changes only).
fn cluster_note(published: Option<bool>) -> &'static str {
    match published {
        Some(true) => "; published to the cluster",
        Some(false) => "; Redis is unreachable: published when it returns",
        None => "",
    }
}

fn render_quota(v: &QuotaUsage) -> String {
    let mut out = if v.quotas.is_empty() {
        format!(
            "{}: no requests counted in any current quota window",
            v.consumer
        )
    } else {
        let mut t = format!(
            "{:<24} {:>10} {:>10} {:>10} {:>12}  SOURCE",
            "QUOTA", "USED", "LIMIT", "REMAINING", "RESETS IN"
        );
        for r in &v.quotas {
            t.push_str(&format!(
                "\n{:<24} {:>10} {:>10} {:>10} {:>11}s  {}",
                r.quota,
                r.used,
                r.limit.map(|l| l.to_string()).unwrap_or("-".into()),
                r.remaining.map(|l| l.to_string()).unwrap_or("-".into()),
                r.resets_in_secs.max(0),
                r.source,
            ));
        }
        t
    };
    if let Some(e) = &v.cluster_error {
        out.push_str(&format!(
            "\ncluster counts unavailable ({e}): showing this node's"
        ));
    }
    out
}

fn render_cluster(v: &ClusterStatus) -> String {
    let Some(link) = v.link.as_ref().filter(|_| v.configured) else {
        return "cluster mode is off (no [cluster] section)".to_owned();
    };
    format!(
        "node {}\nredis {} ({})\ncluster blocks {}{}",
        link.node_id,
        link.redis,
        if link.connected {
            "connected"
        } else {
            "DISCONNECTED: limits are local, blocks queue"
        },
        link.cluster_blocks,
        link.error
            .as_ref()
            .map(|e| format!("\nlast error: {e}"))
            .unwrap_or_default()
    )
}

fn render_blocks(rows: &Vec<ListedBlock>) -> String {
    if rows.is_empty() {
        return "no blocks".to_owned();
    }
    let mut out = format!(
        "{:<40} {:<11} {:>8} {:<20} REASON",
        "SOURCE", "ORIGIN", "OFFENCES", "TTL"
    );
    for r in rows {
        let b = &r.block;
        let ttl = if b.expired {
            "expired".to_owned()
        } else {
            ttl_text(b.ttl_secs_left)
        };
        let source = b.source.name();
        let origin = match &r.origin {
            Some(node) => format!("{source}@{node}"),
            None if b.cluster => format!("{source}@cluster"),
            None => source.to_owned(),
        };
        out.push_str(&format!(
            "\n{:<40} {:<11} {:>8} {:<20} {}",
            b.net, origin, b.offences, ttl, b.reason
        ));
    }
    out
}

fn render_allow(rows: &Vec<AllowEntry>) -> String {
    if rows.is_empty() {
        return "allowlist is empty".to_owned();
    }
    let mut out = format!("{:<40} ORIGIN", "SOURCE");
    for r in rows {
        out.push_str(&format!("\n{:<40} {}", r.net, r.source.name()));
    }
    out
}

fn render_limits(v: &LimitTable) -> String {
    let mut out = format!(
        "{:<40} {:<24} SYN\n{:<40} {:<24} {}",
        "TARGET",
        "PPS",
        "default",
        limit_text(&v.default.pps),
        limit_text(&v.default.syn)
    );
    for r in &v.overrides {
        out.push_str(&format!(
            "\n{:<40} {:<24} {}",
            r.target,
            limit_text(&r.limits.pps),
            limit_text(&r.limits.syn)
        ));
    }
    out
}

fn render_stats(v: &Stats) -> String {
    let mut out = format!("{:<20} {:>16} {:>18}", "VERDICT", "PACKETS", "BYTES");
    for c in &v.counters {
        out.push_str(&format!(
            "\n{:<20} {:>16} {:>18}",
            c.reason, c.packets, c.bytes
        ));
    }
    out.push_str("\n\nTOP DROPPED SOURCES");
    if v.top_dropped.is_empty() {
        out.push_str("\n(none)");
    } else {
        out.push_str(&format!(
            "\n{:<40} {:>14} {:<18} LAST DROP",
            "SOURCE", "PACKETS", "LAST REASON"
        ));
        for t in &v.top_dropped {
            out.push_str(&format!(
                "\n{:<40} {:>14} {:<18} {}s ago",
                t.source, t.packets, t.last_reason, t.last_drop_secs_ago
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn hash_key_reads_stdin_and_ignores_one_newline() {
        let want = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(super::hash_key_from(&b"abc\n"[..]).unwrap(), want);
        assert_eq!(super::hash_key_from(&b"abc\r\n"[..]).unwrap(), want);
        assert_eq!(super::hash_key_from(&b"abc"[..]).unwrap(), want);
        assert!(super::hash_key_from(&b"\n"[..]).is_err());
    }
}
