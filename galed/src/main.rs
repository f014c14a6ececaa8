//! galed: the Gale server. It parses its arguments and hands over to gale-daemon
//! (logging, configuration, signals, metrics, the status view), which runs the
//! routing core, gale-server.

use std::process::ExitCode;

use clap::Parser;
use gale_daemon::{Args, EXIT_USAGE};

/// jemalloc, with its background threads purging freed pages, gives memory back
/// to the system after clients leave: with glibc's allocator galed kept the peak
/// of a subscription churn (284 MB after 250,000 subscriptions came and went five
/// times) although its tables were empty.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            // --help and --version are not errors.
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { 0 });
        }
    };
    gale_daemon::logging::init(args.log_format);
    // Purge freed pages in the background (after jemalloc's decay, 10 s), also
    // when galed is idle.
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::warn!("cannot start the allocator's background threads: {e}");
    }
    gale_daemon::main(args)
}
