//! The `portico` command line: parses arguments and hands over to [`app`] (the
//! process supervisor that wires the lb, gss and shared crates), [`demo`] or the
//! admin client. Everything with real logic lives in the library crates.

mod app;
mod demo;
mod logging;
mod notify;
mod upgrade;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

/// mimalloc instead of glibc malloc: the proxy paths allocate small short-lived
/// objects (request heads, hyper's per-request state) across tasks, where glibc's
/// arena bookkeeping showed up in profiles (~5 % of the CPU per proxied request).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Portico: health-checking load balancer and DNS global site selector for mail.
#[derive(Parser, Debug)]
#[command(name = "portico", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

/// Log line format.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable text.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run every role the config file configures until SIGTERM/SIGINT.
    Run {
        /// Config file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Log format.
        #[arg(long, value_enum, default_value = "text")]
        log_format: LogFormat,
        /// Take over from the running Portico whose upgrade socket this is
        /// (`ADMIN_SOCKET.upgrade`): receive its listening sockets and state, probe,
        /// then take over without refusing a connection (SIGUSR2 to the running
        /// process does this with the binary on disk).
        #[arg(long, value_name = "SOCKET")]
        upgrade_from: Option<PathBuf>,
    },
    /// Validate a config file; prints FILE:LINE:COL: message per error.
    Check {
        /// Config file (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Send one command to a running Portico's admin socket.
    Ctl {
        /// Admin socket path.
        #[arg(long, short)]
        socket: PathBuf,
        /// The command, e.g. `show backends` or `drain smtp/mx1`.
        #[arg(required = true, trailing_var_arg = true)]
        command: Vec<String>,
    },
    /// Start a complete two-site demo on loopback, needing nothing installed.
    Demo {
        /// Log format.
        #[arg(long, value_enum, default_value = "text")]
        log_format: LogFormat,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Write the manual pages (portico.1 and one per subcommand) into DIR; the
    /// package build uses it, so the pages always match the command line.
    #[command(hide = true)]
    Man {
        /// Output directory (must exist).
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Check { config } => check(&config),
        Cmd::Ctl { socket, command } => ctl(&socket, &command.join(" ")),
        Cmd::Run {
            config,
            log_format,
            upgrade_from,
        } => {
            logging::init(log_format);
            let config = match shared::config::load(&config) {
                Ok(c) => c,
                Err(errors) => {
                    eprintln!("{errors}");
                    return ExitCode::from(1);
                }
            };
            let cpus = cpus();
            let opts = app::RunOptions {
                upgrade_from,
                log_json: log_format == LogFormat::Json,
                workers: data_workers(cpus),
                ..app::RunOptions::default()
            };
            exit(runtime(cpus).and_then(|rt| rt.block_on(app::run_with(config, opts))))
        }
        Cmd::Demo { log_format } => {
            logging::init(log_format);
            exit(runtime(cpus()).and_then(|rt| rt.block_on(demo::run())))
        }
        Cmd::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "portico",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
        Cmd::Man { dir } => match clap_mangen::generate_to(Cli::command(), &dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("portico man {}: {e}", dir.display());
                ExitCode::from(1)
            }
        },
    }
}

/// The CPUs this process may use: `TOKIO_WORKER_THREADS` when set (tokio's own
/// knob), else the CPUs its affinity mask and cgroup quota allow.
fn cpus() -> usize {
    std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1)
}

/// The lb's data-path workers (each a thread with a single-threaded runtime and its
/// own listening socket per VIP): `PORTICO_WORKERS` when set to a positive number,
/// else one per usable CPU. One means none: the lb runs on the main runtime, as a
/// process pinned to one core always did.
fn data_workers(cpus: usize) -> usize {
    match std::env::var("PORTICO_WORKERS") {
        Ok(v) => match v.trim().parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => {
                tracing::warn!("PORTICO_WORKERS={v:?} is not a positive number; using {cpus}");
                cpus
            }
        },
        Err(_) => cpus,
    }
}

/// The main async runtime (the control plane: probes, admin, status, BGP, the gss;
/// and the lb's data path when it has no workers), `threads` wide. With one CPU (a proxy pinned to a core, as operators and the benchmarks run
/// it) the scheduler is single-threaded: a work-stealing pool of one worker still
/// pays for its cross-thread machinery, and measured behind `taskset -c 1` it made
/// the proxied clients and backends context-switch about three times as often per
/// request (they were woken for smaller bursts), which cost both sides CPU.
fn runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let rt = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    tracing::info!(
        threads,
        scheduler = if threads == 1 {
            "single-threaded"
        } else {
            "work-stealing"
        },
        "runtime started"
    );
    Ok(rt)
}

fn exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let text = describe(&e);
            tracing::error!("{text}");
            eprintln!("portico: {text}");
            ExitCode::from(1)
        }
    }
}

/// The error and its causes on one line, skipping a cause whose text its parent
/// already quotes (library errors name their source in their own message).
fn describe(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn check(path: &std::path::Path) -> ExitCode {
    match shared::config::load(path) {
        Ok(cfg) => {
            println!(
                "{}: ok ({} VIPs{})",
                path.display(),
                cfg.vips.len(),
                if cfg.gss.is_some() { ", gss" } else { "" }
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::from(1)
        }
    }
}

fn ctl(socket: &std::path::Path, command: &str) -> ExitCode {
    let reply = runtime(cpus()).and_then(|rt| {
        rt.block_on(shared::admin::server::request(socket, command))
            .map_err(|e| {
                anyhow::anyhow!(
                    "admin socket {}: {e}; is portico running with this admin.socket?",
                    socket.display()
                )
            })
    });
    match reply {
        Ok(text) => {
            print!("{text}");
            if text.starts_with("error: ") {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("portico: {e:#}");
            ExitCode::from(1)
        }
    }
}
