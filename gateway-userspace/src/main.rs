//! The `gateway` binary: parses the command line and dispatches. Config is
//! loaded and validated before any socket is bound or program loaded; a bad
//! config exits with code 64 (EX_USAGE) and a `file:line:column: problem`.

#![deny(unsafe_code)]

use std::process::ExitCode;

use clap::Parser as _;

use gateway::{
    cli::{Cli, Command},
    config::Config,
};

/// mimalloc instead of glibc's malloc: the request path makes a few dozen
/// small, short-lived allocations per request (hyper, http, our pipeline),
/// where glibc's free lists and consolidation showed up as ~9% of the
/// proxy's CPU in a profile of the GET benchmark.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long mimalloc keeps a freed page before giving it back to the
/// kernel, in milliseconds. Its default (1,000 ms) is checked only when a
/// thread allocates or collects again, so a gateway that goes quiet after a
/// burst (10,000 keep-alive connections opened, served once and parked)
/// kept the burst's freed buffers resident: about 1.5 KiB per parked
/// connection on top of the ~2.6 KiB it holds. Pages freed and reused
/// within this delay (steady load) are not returned, so the request path
/// does not fault them in again. `MIMALLOC_PURGE_DELAY` in the environment
/// still wins.
const PURGE_DELAY_MS: std::ffi::c_long = 100;

/// How often an idle runtime is woken so that [`release_idle_memory`]
/// runs after the purge delay has passed: a worker that parks right after
/// freeing pages would otherwise keep them until something else wakes it.
const PURGE_TICK: std::time::Duration = std::time::Duration::from_millis(250);

/// `mi_option_purge_delay` in mimalloc v3's `mi_option_t` (libmimalloc-sys
/// does not name it); the test below checks it against its default.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Sets the allocator's purge delay ([`PURGE_DELAY_MS`]) and turns
/// transparent huge pages off for this process (`PR_SET_THP_DISABLE`).
/// mimalloc asks for huge pages on its arenas (`MADV_HUGEPAGE`), and
/// khugepaged then collapses any 2 MiB range with a single page in use
/// into a resident huge page, seconds later and at random: at 10,000
/// parked connections that added ~1 KiB per connection to the RSS, and
/// undid the purges above. Redis advises the same for the same reason;
/// the gateway's heap is many small, short-lived blocks, where huge pages
/// buy little (about 2% CPU per GET on this VM, docs/proxy.md). Called before any thread starts
/// (`mi_option_set` is not thread-safe).
#[allow(
    unsafe_code,
    reason = "mimalloc's options are set through its C API (libmimalloc-sys), THP through prctl(2)"
)]
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: plain integers; no other thread exists yet.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    }
    // SAFETY: prctl with integer arguments only. A failure (an old
    // kernel) leaves THP as it was, which is harmless.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}

/// Runs each time a runtime worker runs out of work (tokio's
/// `on_thread_park`, under load too): at most every [`PURGE_DELAY_MS`] per
/// thread, hands this thread's empty pages back to mimalloc's arena and
/// returns to the kernel the pages freed longer ago than the purge delay
/// (`mi_collect(false)`; blocks in use are not touched). Without it a
/// thread that stops allocating never purges; [`PURGE_TICK`] makes sure an
/// idle runtime parks again after the delay.
#[allow(
    unsafe_code,
    reason = "mimalloc's collection is called through its C API (libmimalloc-sys)"
)]
fn release_idle_memory() {
    use std::{cell::Cell, time::Instant};
    thread_local! {
        static LAST: Cell<Option<Instant>> = const { Cell::new(None) };
    }
    let now = Instant::now();
    let due = LAST.with(|last| match last.get() {
        Some(t) if now.duration_since(t).as_millis() < PURGE_DELAY_MS as u128 => false,
        _ => {
            last.set(Some(now));
            true
        }
    });
    if due {
        // SAFETY: takes no pointers; walks this thread's heap of the
        // global allocator above.
        unsafe { libmimalloc_sys::mi_collect(false) };
    }
}

/// EX_USAGE: the config or the command line is wrong.
const EX_USAGE: u8 = 64;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    if !matches!(cli.command, Command::Run(_)) {
        restore_sigpipe();
    }
    if matches!(cli.command, Command::Run(_)) {
        // Before anything could change the working directory: `gateway
        // upgrade` starts this binary path with these arguments.
        gateway::upgrade::remember_command();
    }
    match cli.command {
        Command::Run(args) => {
            let config = match &args.config {
                Some(path) => Config::load(path),
                None => Ok(Config::embedded_default()),
            };
            let mut config = match config {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("gateway: config error: {e}");
                    gateway::upgrade::successor::report_failure(&format!("config error: {e}"));
                    return ExitCode::from(EX_USAGE);
                }
            };
            if args.xdp_detach_on_exit {
                config.xdp.detach_on_exit = true;
            }
            init_logging(&args.log_format);
            tune_allocator();
            let runtime = config.runtime.build_with_idle_hook(release_idle_memory);
            let result = runtime.map_err(anyhow::Error::from).and_then(|rt| {
                // Wakes the idle runtime so the park hook purges what the
                // last burst freed (see PURGE_TICK).
                rt.spawn(async {
                    let mut tick = tokio::time::interval(PURGE_TICK);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        tick.tick().await;
                    }
                });
                rt.block_on(gateway::run::run(args.config.clone(), config))
                    .map_err(anyhow::Error::from)
            });
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("gateway: error: {e:#}");
                    gateway::upgrade::successor::report_failure(&format!("{e:#}"));
                    ExitCode::FAILURE
                }
            }
        }
        Command::CheckConfig { config } => match Config::load(&config)
            .map_err(|e| e.to_string())
            .and_then(|c| {
                // Config::load checks the shape of [validation]; compiling its
                // schemas, regexes and OpenAPI documents finds the rest.
                let base_dir = config.parent().unwrap_or(std::path::Path::new("."));
                gateway::validate::Validators::from_config(&c.validation, base_dir)
                    .map_err(|e| e.to_string())?;
                // Upstream TLS files (CA, client certificate and key) are
                // read as `run` reads them, so a missing or unusable file
                // fails here, not at the next start.
                for u in &c.upstreams {
                    gateway::proxy::upstream::client::Connector::new(u)
                        .map_err(|e| format!("upstream '{}': {e}", u.name.get_ref()))?;
                }
                // Listener certificates and keys, as `run` loads them.
                if c.listeners.iter().any(|l| l.tls) {
                    gateway::proxy::tls::acceptor(&c.tls).map_err(|e| e.to_string())?;
                }
                // The dashboard's token file, as `run` reads it: missing,
                // unreadable or too short is an error naming the file
                // (never its content).
                if let Some(token_file) = c.observability.dashboard_token_file() {
                    gateway::admin_http::dashboard::read_token(&base_dir.join(token_file))
                        .map_err(|e| e.to_string())?;
                }
                Ok(())
            }) {
            Ok(_) => {
                println!("{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("gateway: config error: {e}");
                ExitCode::from(EX_USAGE)
            }
        },
        Command::PrintDefaultConfig => {
            print!("{}", gateway::config::DEFAULT_TOML);
            ExitCode::SUCCESS
        }
        Command::HashKey => match gateway::cli::hash_key_from(std::io::stdin().lock()) {
            Ok(hash) => {
                println!("{hash}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("gateway: error: {e:#}");
                ExitCode::from(EX_USAGE)
            }
        },
        Command::Xdp(cmd) => xdp_command(cmd),
        Command::Version => {
            println!("gateway {}", env!("CARGO_PKG_VERSION"));
            println!("ebpf build id {}", gateway::xdp::build_id());
            ExitCode::SUCCESS
        }
        command => match gateway::cli::run_client(&cli.socket, command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("gateway: error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

/// `gateway xdp status|detach`: works on bpffs directly, gateway running or not.
fn xdp_command(cmd: gateway::cli::XdpCmd) -> ExitCode {
    use gateway::cli::XdpCmd;
    let config_of = |path: &Option<std::path::PathBuf>| match path {
        Some(p) => Config::load(p).map_err(|e| e.to_string()),
        None => Ok(Config::embedded_default()),
    };
    let (config, detach) = match &cmd {
        XdpCmd::Status { config } => (config_of(config), None),
        XdpCmd::Detach { config, interface } => (config_of(config), Some(interface.clone())),
    };
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gateway: config error: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let pin_dir = &config.xdp.pin_dir;
    match detach {
        None => {
            let links = gateway::xdp::pinned_links(pin_dir);
            if links.is_empty() {
                println!(
                    "no XDP filter attached by the gateway (no pinned link under {})",
                    pin_dir.display()
                );
            }
            for l in links {
                let program = match l.program {
                    Some((id, tag, loaded)) => format!(
                        "program id {id} tag {tag:016x}, loaded {}",
                        loaded.map_or("at an unknown time".into(), |t| {
                            humantime::format_rfc3339_seconds(t).to_string()
                        })
                    ),
                    None => "program unknown (the pin cannot be read)".into(),
                };
                println!(
                    "{}: attached ({} mode), {program}, pinned at {}",
                    l.interface,
                    l.mode,
                    l.pin.display()
                );
            }
            println!("this binary's eBPF build id {}", gateway::xdp::build_id());
            ExitCode::SUCCESS
        }
        Some(interface) => match gateway::xdp::detach_pinned(pin_dir, interface.as_deref()) {
            Ok(removed) if removed.is_empty() => {
                println!(
                    "nothing to detach (no pinned link under {})",
                    pin_dir.display()
                );
                ExitCode::SUCCESS
            }
            Ok(removed) => {
                for r in removed {
                    println!("detached {r} (a running gateway keeps filtering until it exits)");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("gateway: error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

/// Help and version go out as clap renders them; a usage error is one line
/// naming the problem, exit code 2.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => e.exit(),
        _ => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid command line");
            eprintln!("gateway: {first} (see --help)");
            ExitCode::from(2)
        }
    }
}

fn init_logging(format: &str) {
    use tracing_subscriber::{EnvFilter, fmt};
    let filter = EnvFilter::try_from_env("GATEWAY_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // stderr: stdout carries the access log when `[log] access_log = "stdout"`.
    if format == "json" {
        fmt()
            .event_format(gateway::observe::app_log::EcsJson)
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    } else {
        fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
}

/// CLI commands (everything but `run`) die quietly on a closed stdout, as
/// Unix tools do (`gateway print-default-config | head` exits by SIGPIPE),
/// instead of Rust's default: SIGPIPE ignored, so `println!` panics on
/// EPIPE. `run` keeps SIGPIPE ignored: a write to a socket whose peer went
/// away must be an error for that connection, not the end of the process.
#[allow(
    unsafe_code,
    reason = "signal(2) through libc: neither std nor rustix's enabled features set a signal disposition"
)]
fn restore_sigpipe() {
    // SAFETY: called before any thread is started; SIG_DFL is a valid
    // disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(test)]
mod tests {
    #[allow(unsafe_code, reason = "reads a mimalloc option through its C API")]
    #[test]
    fn the_purge_delay_option_index_is_mimallocs() {
        // SAFETY: reads an integer option.
        let default = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert_eq!(
            default, 1000,
            "not mimalloc v3's purge_delay (1,000 ms by default)"
        );
    }
}
