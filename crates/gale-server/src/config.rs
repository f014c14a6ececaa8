//! Server configuration: defaults that need no file, and an optional TOML file.

use std::path::Path;
use std::time::Duration;

use gale_proto::limits::{DEFAULT_MAX_FRAME, MIN_MAX_FRAME};
use serde::Deserialize;

pub use gale_net::DEFAULT_PORT;

/// Where galed listens unless told otherwise: this host only, over IPv4 and IPv6
/// (as Mosquitto 2 does). Serving other hosts takes an explicit `--listen`.
pub const DEFAULT_LISTEN: [&str; 2] = ["127.0.0.1:11512", "[::1]:11512"];

/// galed's settings. Every field has a default, so no file is needed.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Addresses to listen on.
    pub listen: Vec<String>,
    /// This server's name, sent in WELCOME and shown in logs. Defaults to the host
    /// name; galed then adds the port it listens on (`host:port`), so that
    /// servers on one host have different names.
    pub name: String,
    /// Idle time after which the server pings a connection; twice this with no
    /// traffic at all and the connection is closed as dead.
    pub keepalive_ms: u64,
    /// How long a new connection has to complete its HELLO.
    pub handshake_timeout_ms: u64,
    /// Largest frame accepted or sent.
    pub max_frame: u32,
    /// Bytes of frames (length fields included) queued for one client and not yet
    /// written to its socket, past which publishers are held back within the
    /// client's hold budget, then deliveries dropped and reported.
    pub client_queue_bytes: usize,
    /// Frames queued for one client, with the same effect.
    pub client_queue_frames: usize,
    /// Connections served at once; more are refused with an error.
    pub max_connections: usize,
    /// Server links to dial: each entry is `host:port`, or alternates tried in turn,
    /// `a:11512,b:11512`.
    pub links: Vec<String>,
    /// Links to galeds of the original Gale (docs/protocol.md §17.7), as
    /// `links`: `host:port`, or alternates `a:11512,b:11512`.
    pub orig_links: Vec<String>,
    /// Recently seen message ids remembered to drop duplicates (links only).
    pub dedup_cache: usize,
    /// Subscription entries held in all, clients' and links' together; past it
    /// new subscriptions are refused (ERROR 9).
    pub max_subscriptions: usize,
    /// Locations held for one server link (its INTEREST). A peer is told this
    /// when the link comes up and sends coarser locations to keep within it; one
    /// that sends more anyway (an older or broken server) is forwarded every
    /// message instead, which loses none.
    pub max_link_interest: usize,
    /// Bytes galed's work may hold (queues, read buffers of big frames,
    /// subscription tables); past it new work is refused. Default: half the
    /// machine's (or its cgroup's) memory.
    pub memory_limit: Option<usize>,
    /// Bytes of recently routed messages kept for clients that reconnect and
    /// resume (protocol version 2), counted against `memory_limit` too. 0 keeps
    /// none: every resume past the client's last message is then a gap. The
    /// default, 8 MiB, holds some 40,000 messages of a few hundred bytes; a larger
    /// window costs a firehose more memory traffic (see docs/architecture.md §2).
    pub resume_window_bytes: usize,
    /// Seconds a routed message is kept for resuming clients, at most.
    pub resume_window_secs: u64,
    /// Where inboxes are kept (the store file `inboxes.redb`). Default:
    /// `/var/lib/gale` when galed runs as root, else `$XDG_STATE_HOME/gale`
    /// (`~/.local/state/gale`). See [`default_data_dir`].
    pub data_dir: Option<std::path::PathBuf>,
    /// Keep inboxes at all. With `false` galed opens no store and refuses
    /// INBOX_OPEN as unavailable; live delivery is the same either way.
    pub inboxes: bool,
    /// Inboxes this server keeps, at most; past it new ones are refused.
    pub max_inboxes: usize,
    /// Messages held for one inbox; past it the oldest are dropped (and the
    /// owner's devices told how many).
    pub inbox_max_messages: u64,
    /// Payload bytes held for one inbox (same rule).
    pub inbox_max_bytes: u64,
    /// Messages held for all inboxes together (the oldest go first).
    pub store_max_messages: u64,
    /// Payload bytes held for all inboxes together.
    pub store_max_bytes: u64,
    /// A stored message older than this many seconds is dropped.
    pub store_max_age_secs: u64,
    /// The store file may not grow past this many bytes.
    pub store_max_file_bytes: u64,
    /// Group commit: stored messages reach the disk (fsync) at most this many
    /// milliseconds after they arrive. `kill -9` loses at most this window.
    pub store_commit_ms: u64,
    /// Memory the store may use to cache its file's pages.
    pub store_cache_bytes: usize,
    /// Where to serve Prometheus metrics over HTTP (`HOST:PORT`, at `/metrics`);
    /// none by default. Used by the daemon (gale-daemon), not the routing core.
    pub metrics: Option<String>,
}

/// Where inboxes are kept unless `data_dir` says: `/var/lib/gale` for root,
/// `$XDG_STATE_HOME/gale` (else `~/.local/state/gale`) for anyone else.
pub fn default_data_dir() -> std::path::PathBuf {
    if rustix::process::geteuid().is_root() {
        return "/var/lib/gale".into();
    }
    match std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        Some(d) => std::path::PathBuf::from(d).join("gale"),
        None => match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(h) => std::path::PathBuf::from(h).join(".local/state/gale"),
            None => "gale-data".into(),
        },
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: DEFAULT_LISTEN.iter().map(|s| s.to_string()).collect(),
            name: hostname(),
            keepalive_ms: 30_000,
            handshake_timeout_ms: 10_000,
            max_frame: DEFAULT_MAX_FRAME,
            client_queue_bytes: 1024 * 1024,
            client_queue_frames: 65_536,
            max_connections: 100_000,
            links: Vec::new(),
            orig_links: Vec::new(),
            dedup_cache: 65_536,
            max_subscriptions: 4_000_000,
            max_link_interest: gale_proto::limits::DEFAULT_MAX_LINK_INTEREST as usize,
            memory_limit: None,
            resume_window_bytes: 8 << 20,
            resume_window_secs: 300,
            data_dir: None,
            inboxes: true,
            max_inboxes: 100_000,
            inbox_max_messages: gale_store::DEFAULT_INBOX_MESSAGES,
            inbox_max_bytes: gale_store::DEFAULT_INBOX_BYTES,
            store_max_messages: gale_store::DEFAULT_TOTAL_MESSAGES,
            store_max_bytes: gale_store::DEFAULT_TOTAL_BYTES,
            store_max_age_secs: gale_store::DEFAULT_MAX_AGE.as_secs(),
            store_max_file_bytes: gale_store::DEFAULT_FILE_BYTES,
            store_commit_ms: gale_store::DEFAULT_COMMIT_INTERVAL.as_millis() as u64,
            store_cache_bytes: gale_store::DEFAULT_CACHE_BYTES,
            metrics: None,
        }
    }
}

/// A problem with the configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid")]
    Parse {
        path: String,
        source: Box<toml::de::Error>,
    },
    #[error("config value {field} = {value} is not valid: {why}")]
    Invalid {
        field: &'static str,
        value: String,
        why: String,
    },
    #[error("config value {field} = {value} is out of range: {why}")]
    Range {
        field: &'static str,
        value: String,
        why: String,
    },
}

impl Config {
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: p.clone(),
            source,
        })?;
        let cfg: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: p,
            source: Box::new(e),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        for l in &self.listen {
            gale_net::ServerAddr::parse_listen(l).map_err(|e| ConfigError::Invalid {
                field: "listen",
                value: format!("{l:?}"),
                why: e.to_string(),
            })?;
        }
        if let Some(m) = &self.metrics {
            let invalid = |why: String| ConfigError::Invalid {
                field: "metrics",
                value: format!("{m:?}"),
                why,
            };
            let a = gale_net::ServerAddr::parse_listen(m).map_err(|e| invalid(e.to_string()))?;
            // Gale's port is no default here: it is galed's own.
            if !m.ends_with(&format!(":{}", a.port)) {
                return Err(invalid(
                    "no port: write HOST:PORT, e.g. 127.0.0.1:11513".into(),
                ));
            }
        }
        for (field, list) in [("links", &self.links), ("orig_links", &self.orig_links)] {
            for l in list {
                gale_net::parse_server_list(l).map_err(|e| ConfigError::Invalid {
                    field,
                    value: format!("{l:?}"),
                    why: e.to_string(),
                })?;
            }
        }
        if self.max_frame < MIN_MAX_FRAME || self.max_frame > DEFAULT_MAX_FRAME {
            return Err(ConfigError::Range {
                field: "max_frame",
                value: self.max_frame.to_string(),
                why: format!("must be between {MIN_MAX_FRAME} and {DEFAULT_MAX_FRAME}"),
            });
        }
        if self.name.is_empty() || self.name.len() > gale_proto::limits::MAX_SHORT_TEXT {
            return Err(ConfigError::Range {
                field: "name",
                value: format!("{:?}", self.name),
                why: format!("must be 1 to {} bytes", gale_proto::limits::MAX_SHORT_TEXT),
            });
        }
        if self.keepalive_ms < 100 {
            return Err(ConfigError::Range {
                field: "keepalive_ms",
                value: self.keepalive_ms.to_string(),
                why: "must be at least 100".into(),
            });
        }
        if self.client_queue_bytes < self.max_frame as usize {
            return Err(ConfigError::Range {
                field: "client_queue_bytes",
                value: self.client_queue_bytes.to_string(),
                why: "must hold at least one frame of max_frame bytes".into(),
            });
        }
        let positive: [(&'static str, u64); 14] = [
            ("max_inboxes", self.max_inboxes as u64),
            ("inbox_max_messages", self.inbox_max_messages),
            ("inbox_max_bytes", self.inbox_max_bytes),
            ("store_max_messages", self.store_max_messages),
            ("store_max_bytes", self.store_max_bytes),
            ("store_max_age_secs", self.store_max_age_secs),
            ("store_max_file_bytes", self.store_max_file_bytes),
            ("client_queue_frames", self.client_queue_frames as u64),
            ("max_connections", self.max_connections as u64),
            ("dedup_cache", self.dedup_cache as u64),
            ("max_subscriptions", self.max_subscriptions as u64),
            ("max_link_interest", self.max_link_interest as u64),
            ("handshake_timeout_ms", self.handshake_timeout_ms),
            ("memory_limit", self.memory_limit.map_or(1, |m| m as u64)),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(ConfigError::Range {
                    field,
                    value: "0".into(),
                    why: "must be at least 1: 0 would refuse everything".into(),
                });
            }
        }
        if self.store_cache_bytes < 1 << 20 {
            return Err(ConfigError::Range {
                field: "store_cache_bytes",
                value: self.store_cache_bytes.to_string(),
                why: "must be at least 1 MiB (1048576)".into(),
            });
        }
        if self.memory_limit.is_some_and(|m| m < 16 << 20) {
            return Err(ConfigError::Range {
                field: "memory_limit",
                value: format!("{:?}", self.memory_limit),
                why: "must be at least 16 MiB (16777216)".into(),
            });
        }
        Ok(())
    }

    /// The memory budget: `memory_limit`, or half the machine's memory.
    pub fn memory_budget(&self) -> usize {
        self.memory_limit
            .unwrap_or_else(crate::memory::default_limit)
    }

    /// The data directory: `data_dir`, or [`default_data_dir`].
    pub fn data_dir(&self) -> std::path::PathBuf {
        self.data_dir.clone().unwrap_or_else(default_data_dir)
    }

    /// The store's limits, from the `inbox_*` and `store_*` keys.
    pub fn store_limits(&self) -> gale_store::Limits {
        gale_store::Limits {
            inbox_messages: self.inbox_max_messages,
            inbox_bytes: self.inbox_max_bytes,
            total_messages: self.store_max_messages,
            total_bytes: self.store_max_bytes,
            max_age: Duration::from_secs(self.store_max_age_secs),
            file_bytes: self.store_max_file_bytes,
        }
    }

    /// The store's commit policy: the defaults, with `store_commit_ms`.
    pub fn commit_policy(&self) -> gale_store::CommitPolicy {
        gale_store::CommitPolicy {
            interval: Duration::from_millis(self.store_commit_ms),
            cache_bytes: self.store_cache_bytes,
            ..Default::default()
        }
    }

    pub fn keepalive(&self) -> Duration {
        Duration::from_millis(self.keepalive_ms)
    }

    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }
}

/// The host's name (uname's node name), or "galed" if it has none.
fn hostname() -> String {
    let uname = rustix::system::uname();
    match uname.nodename().to_str() {
        Ok(s) if !s.is_empty() => s.to_string(),
        _ => "galed".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_overrides_defaults_and_rejects_unknowns() {
        let dir = std::env::temp_dir().join(format!("galed-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.toml");
        std::fs::write(&good, "listen = [\"127.0.0.1:0\"]\nkeepalive_ms = 500\n").unwrap();
        let cfg = Config::from_file(&good).unwrap();
        assert_eq!(cfg.listen, ["127.0.0.1:0"]);
        assert_eq!(cfg.keepalive_ms, 500);
        assert_eq!(cfg.max_frame, DEFAULT_MAX_FRAME);
        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "lisen = []\n").unwrap();
        let err = chain(&Config::from_file(&bad).unwrap_err());
        assert!(err.contains("unknown field `lisen`"), "{err}");
        assert_eq!(err.matches("unknown field").count(), 1, "said once: {err}");
        std::fs::write(&bad, "max_frame = 10\n").unwrap();
        let err = Config::from_file(&bad).unwrap_err().to_string();
        assert!(err.contains("max_frame = 10 is out of range"), "{err}");
        for zero in [
            "max_connections",
            "client_queue_frames",
            "max_subscriptions",
            "max_link_interest",
            "dedup_cache",
        ] {
            std::fs::write(&bad, format!("{zero} = 0\n")).unwrap();
            let err = Config::from_file(&bad).unwrap_err().to_string();
            assert!(
                err.contains(&format!("{zero} = 0 is out of range")),
                "{err}"
            );
        }
        std::fs::write(&bad, "links = [\"x:y\"]\n").unwrap();
        let err = chain(&Config::from_file(&bad).unwrap_err());
        assert!(err.contains("bad port \"y\""), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The error and its sources, as `galed` prints them (anyhow's `{:#}`).
    fn chain(e: &dyn std::error::Error) -> String {
        let mut s = e.to_string();
        let mut src = e.source();
        while let Some(x) = src {
            s += &format!(": {x}");
            src = x.source();
        }
        s
    }

    #[test]
    fn by_default_only_this_host_is_served() {
        let cfg = Config::default();
        assert_eq!(cfg.listen, ["127.0.0.1:11512", "[::1]:11512"]);
        for l in &cfg.listen {
            let a = gale_net::ServerAddr::parse_listen(l).unwrap();
            let ip: std::net::IpAddr = a.host.parse().unwrap();
            assert!(ip.is_loopback(), "{l}");
        }
    }
}
