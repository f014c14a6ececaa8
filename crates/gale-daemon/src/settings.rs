//! galed's configuration as the daemon handles it: the file (if any) with the
//! command-line options over it, checked (`--check-config`), and read again on
//! SIGHUP, when only what can change without a restart is applied.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use gale_server::{Config, Router};

use crate::cli::{Args, LogFormat};

/// What galed runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config: Config,
    /// The file, read again on SIGHUP.
    pub path: Option<PathBuf>,
    /// The command-line options, applied over the file each time it is read.
    pub overrides: Overrides,
    /// True when nothing said where to listen: a host without IPv6 loopback is
    /// then served on 127.0.0.1 alone.
    pub default_listen: bool,
    pub log_format: LogFormat,
}

/// The options that override the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Vec<String>,
    pub name: Option<String>,
    pub keepalive_ms: Option<u64>,
    pub client_queue_bytes: Option<usize>,
    pub links: Vec<String>,
    pub orig_links: Vec<String>,
    pub metrics: Option<String>,
    pub data_dir: Option<std::path::PathBuf>,
    pub no_inboxes: bool,
}

impl Overrides {
    fn from_args(args: &Args) -> Overrides {
        Overrides {
            listen: args.listen.clone(),
            name: args.name.clone(),
            keepalive_ms: args.keepalive_ms,
            client_queue_bytes: args.client_queue_bytes,
            links: args.links.clone(),
            orig_links: args.orig_links.clone(),
            metrics: args.metrics.clone(),
            data_dir: args.data_dir.clone(),
            no_inboxes: args.no_inboxes,
        }
    }

    /// `path`'s configuration (or the defaults) with these options over it,
    /// validated.
    pub fn read(&self, path: Option<&Path>) -> Result<Config> {
        let mut config = match path {
            Some(p) => Config::from_file(p)?,
            None => Config::default(),
        };
        if !self.listen.is_empty() {
            config.listen = self.listen.clone();
        }
        if let Some(n) = &self.name {
            config.name = n.clone();
        }
        if let Some(k) = self.keepalive_ms {
            config.keepalive_ms = k;
        }
        if let Some(q) = self.client_queue_bytes {
            config.client_queue_bytes = q;
        }
        if let Some(m) = &self.metrics {
            config.metrics = Some(m.clone());
        }
        config.links.extend(self.links.iter().cloned());
        config.orig_links.extend(self.orig_links.iter().cloned());
        if let Some(d) = &self.data_dir {
            config.data_dir = Some(d.clone());
        }
        if self.no_inboxes {
            config.inboxes = false;
        }
        config.validate()?;
        Ok(config)
    }
}

impl Settings {
    pub fn load(args: &Args) -> Result<Settings> {
        let overrides = Overrides::from_args(args);
        let config = overrides.read(args.config.as_deref())?;
        Ok(Settings {
            config,
            path: args.config.clone(),
            default_listen: args.listen.is_empty() && args.config.is_none(),
            overrides,
            log_format: args.log_format,
        })
    }
}

/// `galed --check-config FILE`: the summary printed when galed would start with
/// FILE (and the other options given), or why not.
pub fn check(path: &Path, args: &Args) -> Result<String> {
    let config = Overrides::from_args(args).read(Some(path))?;
    let links = if config.links.is_empty() {
        "no links".to_string()
    } else {
        format!("links to {}", config.links.join("; "))
    };
    Ok(format!(
        "galed: {} is valid: listens on {}, {links}, metrics {}, at most {} \
         connections and {} subscriptions",
        path.display(),
        config.listen.join(" "),
        config
            .metrics
            .as_deref()
            .map_or("off".to_string(), |m| format!("on {m}")),
        config.max_connections,
        config.max_subscriptions,
    ))
}

/// What a reload did.
#[derive(Debug, Default)]
pub struct Reloaded {
    /// Lines for the log: links added and removed, limits changed, and settings
    /// that changed in the file but take a restart.
    pub notes: Vec<String>,
}

/// Re-reads the configuration and applies what can change while running: the
/// links, and the limits in [`gale_server::live`] and the memory budget. On a
/// bad file nothing changes and the error says why.
pub fn reload(settings: &Settings, router: &Arc<Router>) -> Result<Reloaded> {
    let path = settings.path.as_deref();
    let mut new = settings
        .overrides
        .read(path)
        .with_context(|| "keeping the running configuration")?;
    if let Some(note) = gale_server::host::fit_descriptors(&mut new) {
        tracing::warn!("{note}");
    }
    let mut out = Reloaded::default();
    let links = router.dials.set(router, &new.links);
    for l in links.added {
        out.notes.push(format!("link added: {l}"));
    }
    for l in links.removed {
        out.notes.push(format!("link removed: {l}"));
    }
    out.notes.extend(router.limits.set(&new));
    let budget = new.memory_budget();
    let old_budget = router.memory.limit();
    if budget != old_budget {
        router.memory.set_limit(budget);
        out.notes
            .push(format!("memory_limit: {old_budget} -> {budget}"));
    }
    let old = &router.config;
    let fixed: [(&str, bool); 20] = [
        (
            "listen",
            new.listen != old.listen && !settings.default_listen,
        ),
        (
            "name",
            new.name != old.name
                && settings.overrides.name.is_none()
                && new.name != Config::default().name,
        ),
        ("max_frame", new.max_frame != old.max_frame),
        ("dedup_cache", new.dedup_cache != old.dedup_cache),
        (
            "max_link_interest",
            new.max_link_interest != old.max_link_interest,
        ),
        (
            "resume_window_bytes",
            new.resume_window_bytes != old.resume_window_bytes,
        ),
        (
            "resume_window_secs",
            new.resume_window_secs != old.resume_window_secs,
        ),
        ("metrics", new.metrics != old.metrics),
        ("orig_links", new.orig_links != old.orig_links),
        // The inbox store is opened once, at start.
        ("data_dir", new.data_dir != old.data_dir),
        ("inboxes", new.inboxes != old.inboxes),
        ("max_inboxes", new.max_inboxes != old.max_inboxes),
        (
            "inbox_max_messages",
            new.inbox_max_messages != old.inbox_max_messages,
        ),
        (
            "inbox_max_bytes",
            new.inbox_max_bytes != old.inbox_max_bytes,
        ),
        (
            "store_max_messages",
            new.store_max_messages != old.store_max_messages,
        ),
        (
            "store_max_bytes",
            new.store_max_bytes != old.store_max_bytes,
        ),
        (
            "store_max_age_secs",
            new.store_max_age_secs != old.store_max_age_secs,
        ),
        (
            "store_max_file_bytes",
            new.store_max_file_bytes != old.store_max_file_bytes,
        ),
        (
            "store_commit_ms",
            new.store_commit_ms != old.store_commit_ms,
        ),
        (
            "store_cache_bytes",
            new.store_cache_bytes != old.store_cache_bytes,
        ),
    ];
    for (field, changed) in fixed {
        if changed {
            out.notes.push(format!(
                "{field} changed in the file: it takes effect at the next restart"
            ));
        }
    }
    Ok(out)
}
