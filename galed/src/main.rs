//! galed: the Gale server. Argument parsing, logging and signals; the routing core
//! is the gale-server library.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};

/// jemalloc, with its background threads purging freed pages, gives memory back
/// to the system after clients leave: with glibc's allocator galed kept the peak
/// of a subscription churn (284 MB after 250,000 subscriptions came and went five
/// times) although its tables were empty.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
use clap::Parser;
use gale_net::{RawClient, ServerAddr};
use gale_server::{Config, Router};
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

const AFTER_HELP: &str = "\
With no options galed listens on this host only, 127.0.0.1:11512 and [::1]:11512
(Gale's port), with built-in defaults. To serve other hosts, say where:
--listen 0.0.0.0:11512 (every IPv4 address), --listen [::]:11512, or one address.

Config file (TOML), every key optional:
  listen = [\"127.0.0.1:11512\", \"[::1]:11512\"]     name = \"host:port\"
  keepalive_ms = 30000           handshake_timeout_ms = 10000
  max_frame = 1048576            client_queue_bytes = 1048576
  client_queue_frames = 65536    max_connections = 100000
  links = [\"a.example.org:11512,b.example.org:11512\"]   dedup_cache = 65536
  orig_links = [\"old.example.org:11512\"] (links to original C Gale galeds)
  max_subscriptions = 4000000    max_link_interest = 65536 (locations held per link)
  resume_window_bytes = 8388608  resume_window_secs = 300
Command-line options override the file.

Links: --link HOST:PORT[,ALT:PORT] (repeatable, or links = [...] in the file) dials
another galed; alternates are tried in turn. --orig-link HOST:PORT[,ALT:PORT] links
to a galed of the original C Gale. Clients of the original protocol are served
on every listener, told apart by their first bytes (docs/protocol.md §17).
`galed --status HOST:PORT` prints a
running galed's state (clients, links, interest, queues, counters) as JSON.

Signals: SIGTERM or SIGINT shut down cleanly (clients are told and reconnect
elsewhere); SIGUSR1 logs a status report (connections, subscriptions, queue
depths, counters). Logging: RUST_LOG (default \"info\"), on standard error.

Exit codes: 0 clean shutdown; 1 bad configuration (file or values); 2 cannot
listen; 3 --status could not reach or read the galed; 64 usage error (unknown
option, missing value).";

/// Exit codes (see AFTER_HELP).
const EXIT_CONFIG: u8 = 1;
const EXIT_LISTEN: u8 = 2;
const EXIT_STATUS: u8 = 3;
const EXIT_USAGE: u8 = 64;

/// The Gale server: routes messages from gsend to gsub by location.
#[derive(Parser, Debug)]
#[command(version, about, after_help = AFTER_HELP)]
struct Args {
    /// Address to listen on, HOST:PORT (repeatable). Default: this host only,
    /// 127.0.0.1:11512 and [::1]:11512; 0.0.0.0:11512 serves every IPv4 address.
    #[arg(short, long = "listen", value_name = "ADDR")]
    listen: Vec<String>,
    /// TOML configuration file.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Server name announced to clients and linked servers (default: the host
    /// name and the port galed listens on, HOST:PORT).
    #[arg(long)]
    name: Option<String>,
    /// Keepalive period in milliseconds: idle connections are pinged after this
    /// and closed after twice this with no traffic.
    #[arg(long, value_name = "MS")]
    keepalive_ms: Option<u64>,
    /// Per-client queue limit in bytes before deliveries are dropped and counted.
    #[arg(long, value_name = "BYTES")]
    client_queue_bytes: Option<usize>,
    /// Link to another galed, HOST:PORT; list alternates to try in turn as
    /// HOST:PORT,HOST:PORT (repeatable, one option per link).
    #[arg(long = "link", value_name = "HOST:PORT[,...]")]
    links: Vec<String>,
    /// Link to a galed of the original (C) Gale, HOST:PORT[,ALT:PORT]
    /// (repeatable): public traffic both ways (docs/protocol.md §17.7).
    #[arg(long = "orig-link", value_name = "HOST:PORT[,...]")]
    orig_links: Vec<String>,
    /// Print the status of the galed at ADDR (HOST:PORT) as JSON, and exit.
    #[arg(long, value_name = "ADDR", exclusive = true)]
    status: Option<String>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    // Purge freed pages in the background (after jemalloc's decay, 10 s), also
    // when galed is idle.
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::warn!("cannot start the allocator's background threads: {e}");
    }
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            // --help and --version are not errors.
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { 0 });
        }
    };
    if let Some(addr) = &args.status {
        return match tokio::runtime::Runtime::new()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(print_status(addr)))
        {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("galed: {e:#}");
                ExitCode::from(EXIT_STATUS)
            }
        };
    }
    let defaults = args.listen.is_empty() && args.config.is_none();
    let config = match load_config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("galed: {e:#}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("galed: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match rt.block_on(serve(config, defaults)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("galed: {e:#}");
            ExitCode::from(EXIT_LISTEN)
        }
    }
}

fn load_config(args: &Args) -> Result<Config> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if !args.listen.is_empty() {
        config.listen = args.listen.clone();
    }
    if let Some(n) = &args.name {
        config.name = n.clone();
    }
    if let Some(k) = args.keepalive_ms {
        config.keepalive_ms = k;
    }
    if let Some(q) = args.client_queue_bytes {
        config.client_queue_bytes = q;
    }
    config.links.extend(args.links.iter().cloned());
    config.orig_links.extend(args.orig_links.iter().cloned());
    config.validate()?;
    Ok(config)
}

/// How long `galed --status` waits for an answer, all told.
const STATUS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Asks a running galed for its status and prints the JSON it returns.
async fn print_status(addr: &str) -> Result<()> {
    let addr = ServerAddr::parse(addr)?;
    tokio::time::timeout(STATUS_TIMEOUT, ask_status(&addr))
        .await
        .map_err(|_| {
            anyhow::anyhow!("no status from {addr} within {}s", STATUS_TIMEOUT.as_secs())
        })?
}

async fn ask_status(addr: &ServerAddr) -> Result<()> {
    let mut c = RawClient::connect((addr.host.as_str(), addr.port), "galed --status")
        .await
        .with_context(|| format!("cannot talk to galed at {addr}"))?;
    let json = c
        .status()
        .await
        .with_context(|| format!("galed at {addr} gave no status"))?;
    println!("{json}");
    Ok(())
}

/// Serves `config` until a signal. With the built-in `defaults`, a host without
/// IPv6 loopback is served on 127.0.0.1 alone; addresses given explicitly must
/// all work.
async fn serve(mut config: Config, defaults: bool) -> Result<()> {
    if let Some(note) = gale_server::host::fit_descriptors(&mut config) {
        tracing::warn!("{note}");
    }
    let mut listeners = Vec::new();
    for addr in &config.listen {
        let addr = ServerAddr::parse_listen(addr)?;
        let l = match gale_server::host::listen(&addr).await {
            Ok(l) => l,
            Err(e) if defaults && addr.host.contains(':') && listeners.len() == 1 => {
                tracing::warn!("not listening on {addr} (no IPv6 here?): {e}");
                continue;
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "cannot listen on {addr} (is another galed running there? choose \
                         another with --listen)"
                    )
                })
            }
        };
        // A stable line on stderr, for people and for tests that listen on port 0.
        eprintln!("galed: listening on {}", l.local_addr()?);
        listeners.push(l);
    }
    // Server names must differ between linked servers; the host name alone does
    // not when several run on one host, so the default adds the port.
    if config.name == Config::default().name {
        if let Some(l) = listeners.first() {
            config.name = format!("{}:{}", config.name, l.local_addr()?.port());
        }
    }
    let shutdown = CancellationToken::new();
    let router = Arc::new(Router::new(config));
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let server = tokio::spawn(gale_server::serve(
        listeners,
        router.clone(),
        shutdown.clone(),
    ));
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: shutting down"); break; }
            _ = usr1.recv() => {
                for line in gale_server::status::report(&router).lines() {
                    tracing::info!("{line}");
                }
            }
        }
    }
    shutdown.cancel();
    server.await.context("server task failed")?;
    eprintln!("galed: shut down cleanly");
    Ok(())
}
