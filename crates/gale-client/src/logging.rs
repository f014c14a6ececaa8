//! What the client programs (gsend, gsub, gdomain) print of the libraries'
//! `tracing` events: warnings by default, more with `RUST_LOG`, on standard error
//! in the programs' own style (`gsend: warning: ...`), so that a warning such as a
//! key that could not be cached reaches the person or the script's log.

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// What is printed when `RUST_LOG` is unset or does not parse.
pub const DEFAULT_FILTER: &str = "warn";

/// One line per event: `PROGRAM: LEVEL: message field=value ...`.
struct Line {
    program: &'static str,
}

impl<S, N> FormatEvent<S, N> for Line
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let level = match *event.metadata().level() {
            Level::ERROR => "error",
            Level::WARN => "warning",
            Level::INFO => "info",
            Level::DEBUG => "debug",
            Level::TRACE => "trace",
        };
        write!(w, "{}: {level}: ", self.program)?;
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

/// Prints the libraries' events on standard error as `program: level: ...`,
/// filtered by `RUST_LOG` (default [`DEFAULT_FILTER`]). Call once, first thing in
/// `main`; a second call does nothing.
pub fn init(program: &'static str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .event_format(Line { program })
        .try_init();
}
