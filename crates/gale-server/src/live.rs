//! The limits a running galed may be given anew (SIGHUP re-reads the config
//! file): the connection and subscription limits and the memory budget apply at
//! once; keepalive, handshake timeout and client queue sizes apply to
//! connections made from then on (a live connection keeps what its handshake
//! announced). Everything else in [`Config`] is fixed for the process's life,
//! and the links are changed through [`crate::dials`].

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crate::config::Config;

/// See the module documentation. Read with `Relaxed` loads: a limit seen a
/// moment late is harmless.
#[derive(Debug)]
pub struct Limits {
    max_connections: AtomicUsize,
    max_subscriptions: AtomicUsize,
    keepalive_ms: AtomicU64,
    handshake_timeout_ms: AtomicU64,
    client_queue_bytes: AtomicUsize,
    client_queue_frames: AtomicUsize,
}

impl Limits {
    pub fn new(config: &Config) -> Limits {
        Limits {
            max_connections: AtomicUsize::new(config.max_connections),
            max_subscriptions: AtomicUsize::new(config.max_subscriptions),
            keepalive_ms: AtomicU64::new(config.keepalive_ms),
            handshake_timeout_ms: AtomicU64::new(config.handshake_timeout_ms),
            client_queue_bytes: AtomicUsize::new(config.client_queue_bytes),
            client_queue_frames: AtomicUsize::new(config.client_queue_frames),
        }
    }

    /// Takes `config`'s values (already validated); returns what changed, as
    /// `name: old -> new`, for the log.
    pub fn set(&self, config: &Config) -> Vec<String> {
        let mut changed = Vec::new();
        let mut usize_field = |name: &str, slot: &AtomicUsize, new: usize| {
            let old = slot.swap(new, Ordering::Relaxed);
            if old != new {
                changed.push(format!("{name}: {old} -> {new}"));
            }
        };
        usize_field(
            "max_connections",
            &self.max_connections,
            config.max_connections,
        );
        usize_field(
            "max_subscriptions",
            &self.max_subscriptions,
            config.max_subscriptions,
        );
        usize_field(
            "client_queue_bytes",
            &self.client_queue_bytes,
            config.client_queue_bytes,
        );
        usize_field(
            "client_queue_frames",
            &self.client_queue_frames,
            config.client_queue_frames,
        );
        for (name, slot, new) in [
            ("keepalive_ms", &self.keepalive_ms, config.keepalive_ms),
            (
                "handshake_timeout_ms",
                &self.handshake_timeout_ms,
                config.handshake_timeout_ms,
            ),
        ] {
            let old = slot.swap(new, Ordering::Relaxed);
            if old != new {
                changed.push(format!("{name}: {old} -> {new}"));
            }
        }
        changed
    }

    pub fn max_connections(&self) -> usize {
        self.max_connections.load(Ordering::Relaxed)
    }
    pub fn max_subscriptions(&self) -> usize {
        self.max_subscriptions.load(Ordering::Relaxed)
    }
    pub fn keepalive_ms(&self) -> u64 {
        self.keepalive_ms.load(Ordering::Relaxed)
    }
    pub fn keepalive(&self) -> Duration {
        Duration::from_millis(self.keepalive_ms())
    }
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms.load(Ordering::Relaxed))
    }
    pub fn client_queue_bytes(&self) -> usize {
        self.client_queue_bytes.load(Ordering::Relaxed)
    }
    pub fn client_queue_frames(&self) -> usize {
        self.client_queue_frames.load(Ordering::Relaxed)
    }
}
