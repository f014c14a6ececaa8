//! gwho: who is around (Zephyr's zlocate and znol, over Gale). Asks each person
//! (or a whole domain) at once with one signed ask, prints each of their gsubs'
//! presence, device and idle time, "no answer" for the absent, and with
//! --watch keeps printing presence changes. The asking is
//! `gale_security::people::who`'s; argument parsing and printing here.

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context};
use gale_client::args::{domain_from_env, parse_locations};
use gale_client::compose::sender_from_env;
use gale_client::server::servers_from_env;
use gale_keys::KeyStore;
use gale_proto::{Location, Timestamp};
use gale_security::identity;
use gale_security::incoming::Opener;
use gale_security::people::collect::{Collector, Heard};
use gale_security::people::{reply_location, who, WHO_REPLY_SEGMENT};
use gwho::cli::Args;
use serde_json::json;

const AGENT: &str = concat!("gwho/", env!("CARGO_PKG_VERSION"));
use gale_client::args::EXIT_USAGE;
/// Nobody answered (as zlocate: 0 if anyone was found).
const EXIT_NOBODY: u8 = 1;
/// No server could be reached, or your key could not be used.
const EXIT_TROUBLE: u8 = 2;

fn print(line: &str) {
    let mut out = io::stdout().lock();
    if out
        .write_all(line.as_bytes())
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush())
        .is_err()
    {
        // The reader went away: nothing more to say.
        std::process::exit(0);
    }
}

fn json_line(h: &Heard, change: bool) -> String {
    let s = h.status.as_ref();
    let mut v = json!({
        "type": "presence",
        "who": h.who,
        "device": s.and_then(|s| s.device.as_deref()),
        "presence": s.map(|s| s.presence.as_str()),
        "idle": s.and_then(|s| s.idle_secs(Timestamp::now())),
        "verify": h.verify.as_str(),
        "time": h.time.secs,
    });
    if change {
        v["change"] = json!(true);
    }
    v.to_string()
}

async fn run(args: Args) -> Result<ExitCode, (u8, anyhow::Error)> {
    let usage = |e: anyhow::Error| (EXIT_USAGE, e);
    let trouble = |e: anyhow::Error| (EXIT_TROUBLE, e);
    let domain = domain_from_env();
    let targets: Vec<Location> = if args.locations.is_empty() {
        let d = domain.clone().ok_or_else(|| {
            usage(anyhow!(
                "name someone (gwho bob@example.org), or set GALE_DOMAIN"
            ))
        })?;
        vec![Location::parse(&format!("@{d}")).map_err(|e| usage(e.into()))?]
    } else {
        parse_locations(&args.locations, domain.as_deref()).map_err(|e| usage(e.into()))?
    };
    let servers = servers_from_env(args.server.as_deref())
        .context("bad server list")
        .map_err(usage)?;
    let timeout = Duration::try_from_secs_f64(args.timeout.max(0.0))
        .map_err(|e| usage(anyhow!("bad --timeout: {e}")))?;
    let store = KeyStore::from_env().map_err(|e| trouble(e.into()))?;
    let name =
        identity::key_name(args.id.as_deref(), domain.as_deref()).map_err(|e| usage(e.into()))?;
    let own = identity::load_or_create_checked(&store, &name, sender_from_env(), None)
        .await
        .with_context(|| format!("cannot use or make your key for {name}"))
        .map_err(trouble)?;
    if let Some(note) = own.notice("gwho") {
        eprintln!("{note}");
    }
    let me = Location::parse(name.as_str())
        .map_err(|e| usage(anyhow!("{name} cannot sign asks: {e}")))?;
    let reply = reply_location(&me, WHO_REPLY_SEGMENT).map_err(|e| usage(e.into()))?;
    let watch = if args.watch {
        who::watch_locations(&targets).map_err(|e| usage(e.into()))?
    } else {
        Vec::new()
    };
    let opener = Opener::new(store.clone()).map_err(|e| trouble(e.into()))?;
    let connect = timeout.max(Duration::from_secs(5));
    let mut collector = Collector::start(servers, AGENT, reply, &watch, opener, connect)
        .await
        .map_err(|e| trouble(e.into()))?;
    let json = args.json;
    let found = who::lookup(&mut collector, &targets, &own.key, AGENT, timeout, |h| {
        print(&if json {
            json_line(h, false)
        } else {
            h.describe()
        })
    })
    .await
    .map_err(|e| trouble(e.into()))?;
    for who in found.absent.iter().chain(&found.silent_domains) {
        print(&if json {
            json!({"type": "no_answer", "who": who}).to_string()
        } else {
            format!("{who} no answer")
        });
    }
    let anyone = found.heard.iter().any(|h| h.genuine());
    if !args.watch {
        collector.close().await;
        return Ok(if anyone {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(EXIT_NOBODY)
        });
    }
    let far = || tokio::time::Instant::now() + Duration::from_secs(86_400);
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            h = collector.next(far()) => {
                let Some(h) = h else { continue };
                if h.answer {
                    continue;
                }
                print(&if json {
                    json_line(&h, true)
                } else {
                    format!("* {}", h.describe())
                });
            }
        }
    }
    collector.close().await;
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let args = match gale_client::args::parse_args::<Args>() {
        Ok(a) => a,
        Err(code) => return code,
    };
    gale_client::logging::init("gwho");
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("gwho: cannot start: {e}");
            return ExitCode::from(EXIT_TROUBLE);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(code) => code,
        Err((code, e)) => {
            eprintln!("gwho: {e:#}");
            ExitCode::from(code)
        }
    }
}
