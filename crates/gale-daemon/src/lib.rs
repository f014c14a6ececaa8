//! galed as a daemon, around the routing core (gale-server): everything an
//! operator touches. galed's `main` parses [`cli::Args`] and calls [`main`].
//!
//! Module map:
//! - [`cli`]: the command line (also read by gale-docs for the man page).
//! - [`logging`]: text or JSON log lines; no timestamps under systemd.
//! - [`settings`]: the configuration from file and options; `--check-config`;
//!   what a reload (SIGHUP) may change and how it is applied.
//! - [`daemon`]: listening, signals, readiness (sd_notify), reloading, shutdown.
//! - [`metrics`]: Prometheus text over HTTP, built from the status snapshot.
//! - [`view`]: `galed --status` as tables for a person.

#![forbid(unsafe_code)]

pub mod cli;
pub mod daemon;
pub mod logging;
pub mod metrics;
pub mod settings;
pub mod view;

use std::process::ExitCode;

pub use cli::{Args, LogFormat};

/// Exit codes (see [`cli::AFTER_HELP`]).
pub const EXIT_CONFIG: u8 = 1;
pub const EXIT_LISTEN: u8 = 2;
pub const EXIT_STATUS: u8 = 3;
pub const EXIT_USAGE: u8 = 64;

/// Runs galed with parsed arguments, to its exit code.
pub fn main(args: Args) -> ExitCode {
    if let Some(addr) = &args.status {
        return match runtime().and_then(|rt| rt.block_on(view::print(addr, args.json))) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("galed: {e:#}");
                ExitCode::from(EXIT_STATUS)
            }
        };
    }
    if let Some(path) = &args.check_config {
        return match settings::check(path, &args) {
            Ok(summary) => {
                println!("{summary}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("galed: {e:#}");
                ExitCode::from(EXIT_CONFIG)
            }
        };
    }
    let settings = match settings::Settings::load(&args) {
        Ok(s) if args.drop_inbox.is_some() => {
            let name = args.drop_inbox.as_deref().expect("checked");
            return match gale_server::inbox::drop_inbox(&s.config, name) {
                Ok(done) => {
                    eprintln!("galed: {done}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("galed: {e}");
                    ExitCode::from(EXIT_CONFIG)
                }
            };
        }
        Ok(s) => s,
        Err(e) => {
            eprintln!("galed: {e:#}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("galed: {e:#}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match rt.block_on(daemon::serve(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("galed: {e:#}");
            ExitCode::from(EXIT_LISTEN)
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new().map_err(|e| anyhow::anyhow!("cannot start the runtime: {e}"))
}
