//! gdomain: answers key queries (`_gale.query.*@DOMAIN`) for one domain, from the
//! key store, signed with the domain's key. The logic is
//! `gale_security::responder`; this is argument parsing, the connection and logging.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use gale_client::server::servers_from_env;
use gale_client::{describe_error, Client, ClientConfig, Event};
use gale_keys::{KeyName, KeyStore};
use gale_proto::Timestamp;
use gale_security::responder::{Reply, Responder};
use gdomain::cli::Args;
use tokio::signal::unix::{signal, SignalKind};

/// EX_USAGE (sysexits.h): a usage error, the same code in every Gale program.
use gale_client::args::EXIT_USAGE;

/// The command line is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{0:#}")]
struct Usage(anyhow::Error);

async fn run(args: Args) -> Result<()> {
    let domain = args
        .domain
        .or_else(gale_client::args::domain_from_env)
        .ok_or_else(|| {
            Usage(anyhow!(
                "which domain? give it as an argument or set GALE_DOMAIN"
            ))
        })?;
    let name = KeyName::parse(&domain)
        .with_context(|| format!("{domain:?} is not a domain"))
        .map_err(Usage)?;
    let servers = servers_from_env(args.server.as_deref())
        .context("bad server list")
        .map_err(Usage)?;
    let store = KeyStore::from_env()?;
    let (signer, path) = store.secret(&name)?.ok_or_else(|| {
        anyhow!(
            "no secret key for {name} in the key store: create it with `gkey gen {name}` \
             (as the user that runs gdomain), then publish its public key to your users"
        )
    })?;
    eprintln!(
        "gdomain: serving keys for {name}, signing with {} ({})",
        signer.id(),
        path.display()
    );
    let responder = Responder::new(signer, store);
    let mut config = ClientConfig::new(servers, concat!("gdomain/", env!("CARGO_PKG_VERSION")));
    config.subscriptions = responder.subscription()?;
    let (client, mut events) = Client::start(config);
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    loop {
        let ev = tokio::select! {
            _ = int.recv() => break,
            _ = term.recv() => break,
            ev = events.next() => ev,
        };
        let Some(ev) = ev else {
            return Err(anyhow!("the client stopped unexpectedly"));
        };
        match ev {
            Event::Message(d) => match responder.answer(&d.message, Timestamp::now()) {
                Reply::Key(m, key) => {
                    if !args.quiet {
                        eprintln!("gdomain: answered for {} (key {})", key.name, key.id());
                    }
                    client.publish(m)?;
                }
                Reply::NotFound(m, asked) => {
                    if !args.quiet {
                        eprintln!("gdomain: no key for {asked}; sent a signed \"not found\"");
                    }
                    client.publish(m)?;
                }
                Reply::Unusable(why) => eprintln!("gdomain: {why}"),
                Reply::Ignored(_) => {}
            },
            Event::Subscribed { server, .. } => eprintln!("gdomain: listening on {server}"),
            Event::Disconnected { server, reason } => {
                eprintln!("gdomain: connection to {server} lost ({reason})")
            }
            Event::ConnectFailed { server, error } => {
                eprintln!("gdomain: cannot connect to {server}: {error}")
            }
            Event::Refused { server, code, text } => {
                return Err(anyhow!(
                    "{server} refused this gdomain: {} (not retrying: the same request \
                     would be refused again)",
                    describe_error(code, &text)
                ));
            }
            Event::Lossage(n) => eprintln!("gdomain: lost {n} queries (too slow)"),
            Event::Gap {
                server, count, why, ..
            } => eprintln!(
                "gdomain: may have missed {} queries while reconnecting to {server}: {why}",
                count.map_or("some".to_string(), |n| n.to_string())
            ),
            _ => {}
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), client.close(true)).await;
    Ok(())
}

fn main() -> ExitCode {
    let args = match gale_client::args::parse_args::<Args>() {
        Ok(a) => a,
        Err(code) => return code,
    };
    gale_client::logging::init("gdomain");
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gdomain: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gdomain: {e:#}");
            ExitCode::from(if e.is::<Usage>() { EXIT_USAGE } else { 1 })
        }
    }
}
