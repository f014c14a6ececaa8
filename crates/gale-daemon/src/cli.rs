//! galed's command line (clap). It lives in this library, not in galed's main.rs,
//! so that gale-docs can generate galed's man page and completions from it.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

pub const AFTER_HELP: &str = "\
With no options galed listens on this host only, 127.0.0.1:11512 and [::1]:11512
(Gale's port), with built-in defaults. To serve other hosts, say where:
--listen 0.0.0.0:11512 (every IPv4 address), --listen [::]:11512, or one address.

Config file (TOML), every key optional (commented examples for a leaf host and a
hub: contrib/galed-leaf.toml, contrib/galed-hub.toml; check one with
galed --check-config FILE):
  listen = [\"127.0.0.1:11512\", \"[::1]:11512\"]     name = \"host:port\"
  keepalive_ms = 30000           handshake_timeout_ms = 10000
  max_frame = 1048576            client_queue_bytes = 1048576
  client_queue_frames = 65536    max_connections = 100000
  links = [\"a.example.org:11512,b.example.org:11512\"]   dedup_cache = 65536
  orig_links = [\"old.example.org:11512\"] (links to original C Gale galeds)
  max_subscriptions = 4000000    max_link_interest = 65536 (locations held per link)
  resume_window_bytes = 8388608  resume_window_secs = 300
  metrics = \"127.0.0.1:11513\"  (Prometheus text at http://ADDR/metrics)
  data_dir = \"/var/lib/gale\"     inboxes = true    max_inboxes = 100000
  inbox_max_messages = 10000     inbox_max_bytes = 67108864
  store_max_messages = 1000000   store_max_bytes = 1073741824
  store_max_age_secs = 604800    store_max_file_bytes = 4294967296
  store_commit_ms = 5            store_cache_bytes = 16777216
Command-line options override the file.

Inboxes: galed keeps durable subscriptions (gsub --durable, and each person's own
location by default) in an embedded store under the data directory: --data-dir
DIR, default /var/lib/gale as root, else $XDG_STATE_HOME/gale. Stored messages
reach the disk within store_commit_ms (5 ms); kill -9 loses at most that window.
`galed --drop-inbox NAME` (galed stopped) removes an inbox and what it holds.

Links: --link HOST:PORT[,ALT:PORT] (repeatable, or links = [...] in the file) dials
another galed; alternates are tried in turn. --orig-link HOST:PORT[,ALT:PORT] links
to a galed of the original C Gale. Clients of the original protocol are served
on every listener, told apart by their first bytes (docs/protocol.md §17).
`galed --status [HOST:PORT]` prints a
running galed's state as tables (links, busiest clients); add --json for the whole
report (clients, links, interest, queues, counters) as JSON.

Signals: SIGTERM or SIGINT shut down cleanly (clients are told and reconnect
elsewhere); SIGHUP re-reads the config file: links are added and removed, and
limits changed, without dropping clients (a bad file is logged and the running
configuration kept); SIGUSR1 logs a status report (connections, subscriptions,
queue depths, counters). Logging: RUST_LOG (default \"info\"), on standard error,
as text or JSON (--log-format); without timestamps under systemd (the journal
adds its own). Under systemd (Type=notify) galed reports READY=1 once it listens.

Exit codes: 0 clean shutdown (and a good --check-config); 1 bad configuration
(file or values); 2 cannot listen; 3 --status could not reach or read the galed;
64 usage error (unknown option, missing value).";

/// How galed writes its log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    /// One line of text per event.
    #[default]
    Text,
    /// One JSON object per event (for log shippers).
    Json,
}

/// The Gale server: routes messages from gsend to gsub by location.
#[derive(Parser, Debug)]
#[command(
    name = "galed",
    version,
    about = "The Gale server: routes messages from gsend to gsub by location.",
    after_help = AFTER_HELP
)]
pub struct Args {
    /// Address to listen on, HOST:PORT (repeatable). Default: this host only,
    /// 127.0.0.1:11512 and [::1]:11512; 0.0.0.0:11512 serves every IPv4 address.
    #[arg(short, long = "listen", value_name = "ADDR")]
    pub listen: Vec<String>,
    /// TOML configuration file (SIGHUP re-reads it).
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Server name announced to clients and linked servers (default: the host
    /// name and the port galed listens on, HOST:PORT).
    #[arg(long)]
    pub name: Option<String>,
    /// Keepalive period in milliseconds: idle connections are pinged after this
    /// and closed after twice this with no traffic.
    #[arg(long, value_name = "MS")]
    pub keepalive_ms: Option<u64>,
    /// Per-client queue limit in bytes before deliveries are dropped and counted.
    #[arg(long, value_name = "BYTES")]
    pub client_queue_bytes: Option<usize>,
    /// Link to another galed, HOST:PORT; list alternates to try in turn as
    /// HOST:PORT,HOST:PORT (repeatable, one option per link).
    #[arg(long = "link", value_name = "HOST:PORT[,...]")]
    pub links: Vec<String>,
    /// Directory of the inbox store (default: /var/lib/gale as root, else
    /// $XDG_STATE_HOME/gale, i.e. ~/.local/state/gale).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Keep no inboxes (durable subscriptions are refused as unavailable).
    #[arg(long)]
    pub no_inboxes: bool,
    /// Remove the inbox NAME and what it holds from the data directory, and
    /// exit (galed must not be running there). For an inbox whose owner lost
    /// their key, or that someone else took first.
    #[arg(long, value_name = "NAME", conflicts_with_all = ["status", "check_config"])]
    pub drop_inbox: Option<String>,
    /// Link to a galed of the original (C) Gale, HOST:PORT[,ALT:PORT]
    /// (repeatable): public traffic both ways (docs/protocol.md §17.7).
    #[arg(long = "orig-link", value_name = "HOST:PORT[,...]")]
    pub orig_links: Vec<String>,
    /// Serve Prometheus metrics over HTTP on ADDR (HOST:PORT), at /metrics.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// Log format on standard error.
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Check the configuration FILE (with any other options given) and exit: 0
    /// and a summary if galed would start with it, 1 and the reason if not.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["config", "status"])]
    pub check_config: Option<PathBuf>,
    /// Print the status of the galed at ADDR (HOST:PORT, default
    /// localhost:11512) as tables, and exit.
    #[arg(
        long,
        value_name = "ADDR",
        num_args = 0..=1,
        default_missing_value = "localhost:11512",
        conflicts_with_all = ["listen", "config", "name", "keepalive_ms", "client_queue_bytes", "links", "orig_links", "metrics"]
    )]
    pub status: Option<String>,
    /// With --status: print the whole report as JSON instead of tables.
    #[arg(long, requires = "status")]
    pub json: bool,
}
