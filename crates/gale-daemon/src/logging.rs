//! galed's log lines: text (default) or JSON, on standard error, filtered by
//! `RUST_LOG` (default `info`). Under systemd the journal stamps every line
//! itself, so galed leaves its own timestamps out there.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

use crate::cli::LogFormat;

/// Whether galed runs as a systemd service: systemd sets `INVOCATION_ID` for
/// every unit it starts, and `JOURNAL_STREAM` when standard error goes to the
/// journal.
pub fn under_systemd() -> bool {
    ["JOURNAL_STREAM", "INVOCATION_ID"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
}

/// Installs the global subscriber.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let stamped = !under_systemd();
    let base = fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(stamped && std::io::stderr().is_terminal());
    let layer = match (format, stamped) {
        (LogFormat::Text, true) => base.boxed(),
        (LogFormat::Text, false) => base.without_time().boxed(),
        (LogFormat::Json, true) => base.json().boxed(),
        (LogFormat::Json, false) => base.json().without_time().boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(layer)
        .init();
}
