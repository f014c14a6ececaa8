//! gsub: subscribe to Gale locations and show each message (for a person), print
//! it as JSON (for a script), or run a program for it. Argument parsing and
//! process plumbing here; the presentation in this crate's `format` (for a
//! person), `json` and `hook` modules; the connection in gale-client; opening
//! messages, key lookups and answers in gale-security.

mod format;
mod hook;
mod inbox;
mod json;
mod people;

use std::collections::HashMap;
use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use gale_client::args::{domain_from_env, parse_locations, parse_subscriptions, ArgError};
use gale_client::compose::sender_from_env;
use gale_client::presence;
use gale_client::server::{servers_from_env, ServerAddrError};
use gale_client::{describe_error, Client, ClientConfig, Delivery, Event};
use gale_keys::{KeyId, KeyName, KeyStore, SecretKey};
use gale_proto::limits::MAX_SUBS_PER_CONNECTION;
use gale_proto::Location;
use gale_security::discovery::{self, Discovery, Outcome};
use gale_security::held::{HeldMessages, Hold};
use gale_security::identity;
use gale_security::incoming::{Opener, Opening};
use gale_security::responder::OwnKeys;
use gsub::cli::Args;

use crate::format::{
    format_delivery, Style, TimeFormat, COLUMNS_ENV, DEFAULT_TIME_FORMAT, TIME_FORMAT_ENV,
};
use crate::hook::{find_program, run_hook};
use crate::json::{gap_json, inbox_gap_json, to_json, utc_ms};
use crate::people::People;
use gale_security::people::answer::Away;
use gale_security::people::control::{valid_state, Command, Incoming, STATE_RULE};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

const AGENT: &str = concat!("gsub/", env!("CARGO_PKG_VERSION"));
const SUBSCRIBE_ENV: &str = "GALE_SUBSCRIBE";
/// EX_USAGE (sysexits.h): a usage error, the same code in every Gale program.
use gale_client::args::EXIT_USAGE;

enum Output {
    Human(Style),
    Json,
    Hook(PathBuf),
}

/// Writes to stdout; `Ok(false)` when the reader has gone away (not an error).
fn write_out(text: &str) -> anyhow::Result<bool> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e).context("writing to standard output"),
    }
}

fn human_style() -> Style {
    let tty = io::stdout().is_terminal();
    let width = std::env::var(COLUMNS_ENV)
        .ok()
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|&w| w >= 20)
        .unwrap_or_else(|| if tty { textwrap::termwidth() } else { 80 });
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let time = match std::env::var(TIME_FORMAT_ENV) {
        Ok(f) => TimeFormat::new(&f, false).unwrap_or_else(|e| {
            eprintln!("gsub: {e}; using {DEFAULT_TIME_FORMAT:?}");
            TimeFormat::default()
        }),
        Err(_) => TimeFormat::default(),
    };
    Style {
        // Leave the last column free: some terminals wrap when it is written.
        width: width.saturating_sub(1).max(20),
        color: tty && !no_color,
        time,
    }
}

/// Shows or hands off one message. `Ok(false)`: stdout is gone, stop.
async fn deliver(output: &Output, d: &Delivery) -> anyhow::Result<bool> {
    match output {
        Output::Human(style) => write_out(&format_delivery(d, style)),
        Output::Json => write_out(&(to_json(d) + "\n")),
        Output::Hook(program) => {
            match run_hook(program, d).await {
                Ok(status) if status.success() => {}
                Ok(status) => eprintln!(
                    "gsub: {} {status} for message {}",
                    program.display(),
                    d.message.id
                ),
                Err(e) => eprintln!("gsub: {e}"),
            }
            Ok(true)
        }
    }
}

/// `--set-presence` / `--set-away`: tell the running gsubs, and exit.
async fn set_remote(args: &Args) -> anyhow::Result<Option<anyhow::Error>> {
    let command = match (&args.set_presence, &args.set_away) {
        (Some(state), _) if !valid_state(state) => {
            return Err(Usage(anyhow!("bad presence {state:?}: {STATE_RULE}")).into())
        }
        (Some(state), _) => Command::Presence(state.clone()),
        (None, Some(t)) if t.trim().is_empty() => Command::Away(None),
        (None, Some(t)) => Command::Away(Some(t.replace('\n', "\\n"))),
        (None, None) => unreachable!("called for --set-presence or --set-away"),
    };
    let store = KeyStore::from_env()?;
    people::set_remote(store.user_dir().to_path_buf(), args.device.clone(), command).await?;
    Ok(None)
}

/// This device's name: --device, else `$GALE_DEVICE`, else the host name.
fn device(args: &Args) -> String {
    args.device
        .clone()
        .unwrap_or_else(gale_security::people::idle::default_device)
}

/// The away message from --away or --away-file.
fn away(args: &Args) -> anyhow::Result<Option<Away>> {
    let text = match (&args.away, &args.away_file) {
        (Some(t), _) => t.clone(),
        (None, Some(f)) => std::fs::read_to_string(f)
            .with_context(|| format!("cannot read the away message in {}", f.display()))?,
        (None, None) => return Ok(None),
    };
    if text.trim().is_empty() {
        return Err(Usage(anyhow!("the away message is empty")).into());
    }
    Ok(Some(Away {
        text,
        period: Duration::from_secs(args.away_period),
    }))
}

/// The next control request, or never without a `People`.
async fn control_request(people: &mut Option<People>) -> Option<Incoming> {
    match people {
        Some(p) => p.request().await,
        None => std::future::pending().await,
    }
}

async fn run(args: Args) -> anyhow::Result<Option<anyhow::Error>> {
    if args.set_presence.is_some() || args.set_away.is_some() {
        return set_remote(&args).await;
    }
    if let Some(p) = &args.presence {
        if !valid_state(p) {
            return Err(Usage(anyhow!("bad presence {p:?}: {STATE_RULE}")).into());
        }
    }
    let away = away(&args)?;
    let mut locations = args.locations.clone();
    if locations.is_empty() {
        if let Ok(env) = std::env::var(SUBSCRIBE_ENV) {
            locations = env.split_whitespace().map(String::from).collect();
        }
    }
    if locations.is_empty() && !args.drain {
        return Err(Usage(anyhow!(
            "no location given: name what to subscribe to (e.g. gsub pub.test@example.org), \
             or set GALE_SUBSCRIBE"
        ))
        .into());
    }
    let subscriptions = parse_subscriptions(&locations, domain_from_env().as_deref())?;
    if let Some(name) = &args.durable {
        gale_proto::Location::parse(name).map(|_| ()).or_else(|_| {
            if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
                Err(Usage(anyhow!(
                    "--durable {name:?}: an inbox name has no spaces"
                )))
            } else {
                Ok(())
            }
        })?;
    }
    check_subscription_count(subscriptions.entries.len(), 0)?;
    let servers = servers_from_env(args.server.as_deref()).context("bad server list")?;
    let output = match (&args.program, args.json) {
        (Some(p), _) => Output::Hook(find_program(p)?),
        (None, true) => Output::Json,
        (None, false) => Output::Human(human_style()),
    };
    let mut config = ClientConfig::new(servers, AGENT);
    config.subscriptions = subscriptions.clone();
    let store = KeyStore::from_env()?;
    let timeout = Duration::try_from_secs_f64(args.key_timeout.max(0.0))
        .unwrap_or(discovery::DEFAULT_TIMEOUT);
    let discovery = (!timeout.is_zero())
        .then(|| Arc::new(Discovery::new(config.servers.clone(), AGENT, timeout)));
    let before = config.subscriptions.entries.len();
    let gale_dir = store.user_dir().to_path_buf();
    let (mut ours, own_key) = own_keys(&args, &store, &mut config, discovery.as_deref()).await?;
    let inbox_name = if args.no_inbox {
        None
    } else {
        match (
            &own_key,
            identity::key_name(args.id.as_deref(), domain_from_env().as_deref()),
        ) {
            (Some(key), Ok(me)) => {
                let device = device(&args);
                let ib = inbox::config(
                    args.durable.as_deref(),
                    &me,
                    &subscriptions,
                    device,
                    args.drain,
                    key.clone(),
                )
                .map_err(Usage)?;
                let name = ib.name.clone();
                config.inbox = Some(ib);
                Some(name)
            }
            _ if args.durable.is_some() || args.drain => {
                return Err(anyhow!(
                    "an inbox is bound to your key, and there is no key of yours (see above)"
                ))
            }
            _ => None,
        }
    };
    let sender = sender_from_env();
    // Presence notices, receipts and the will are signed, like every message.
    let mut people = match own_key {
        // Draining only shows what the inbox holds: no presence, no answers.
        Some(_) if args.drain => None,
        Some(key) => {
            let opts = people::Options {
                presence: args.presence.clone(),
                device: Some(device(&args)),
                stealth: args.stealth,
                visibility: args.presence_to,
                away,
            };
            let who = presence_id(&args)?;
            Some(People::new(
                who, key, sender.clone(), AGENT, opts, &mut config, &gale_dir,
            )?)
        }
        None if args.presence.is_some() || away.is_some() => {
            return Err(anyhow!("presence notices and away replies are signed, and there is no key of yours to sign them with (see above)"))
        }
        None => None,
    };
    let answering = config.subscriptions.entries.len() - before;
    check_subscription_count(before, answering)?;
    // The domain's "who is around" asks are not a key of yours.
    let key_queries = answering - people.as_ref().map_or(0, People::subscriptions);
    if args.drain {
        // Only what the inbox holds: no live messages, no answering.
        config.subscriptions = Default::default();
    }
    let opener = Arc::new(Opener::new(store)?);
    let mut held = HeldMessages::new();
    let (found_tx, mut found_rx) = mpsc::unbounded_channel::<Lookup>();
    let (client, mut events) = Client::start(config);
    let mut interrupt = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut terminate = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let quiet = args.quiet;
    let mut drain_done = false;
    let status = |line: String| {
        if !quiet {
            eprintln!("gsub: {line}");
        }
    };
    loop {
        let ev = tokio::select! {
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
            Some(request) = control_request(&mut people) => {
                if let Some(p) = people.as_mut() {
                    p.handle(&client, request).await;
                }
                continue;
            }
            Some((name, id, outcomes)) = found_rx.recv() => {
                // A lookup ended: show what waited for it, verified if it can be now.
                for w in opener.learned(&outcomes) {
                    eprintln!("gsub: {w}");
                }
                let mut stop = false;
                for d in held.finish(&name, id, Instant::now()) {
                    let opening = opener.open(d);
                    warn(&opening);
                    match deliver(&output, &opening.delivery).await {
                        Ok(true) => {}
                        Ok(false) => stop = true,
                        Err(e) => return Ok(Some(e)),
                    }
                    if let Some(p) = people.as_mut() {
                        p.shown(&client, opener.store(), &opening);
                    }
                    if let Some(seq) = opening.delivery.inbox_seq {
                        let _ = client.ack(seq).await;
                    }
                }
                if stop || (drain_done && held.is_empty()) {
                    break;
                }
                continue;
            }
            ev = events.next() => ev,
        };
        let Some(ev) = ev else {
            return Ok(Some(anyhow!("the client stopped unexpectedly")));
        };
        match ev {
            Event::Message(d) => {
                if d.message.to.iter().all(discovery::is_akd) {
                    if !args.stealth {
                        answer_query(&client, opener.store(), &mut ours, &d);
                    }
                    if let (Some(p), true) = (people.as_mut(), d.is_sealed()) {
                        // A ping or a "who is around" ask: signed, so opened first.
                        let opening = opener.open(d);
                        if p.ask(&client, opener.store(), &opening) {
                            match deliver(&output, &opening.delivery).await {
                                Ok(true) => {}
                                Ok(false) => break,
                                Err(e) => return Ok(Some(e)),
                            }
                        }
                    }
                    continue;
                }
                let opening = opener.open(d);
                warn(&opening);
                if let (Some((name, id)), Some(disc), Some(sealed)) =
                    (&opening.missing_key, &discovery, &opening.sealed)
                {
                    match held.hold(name, *id, sealed, Instant::now()) {
                        Hold::StartLookup => {
                            let (disc, store, tx, name, id) = (
                                disc.clone(),
                                opener.store().clone(),
                                found_tx.clone(),
                                name.clone(),
                                *id,
                            );
                            tokio::spawn(async move {
                                let outcomes = disc.discover_key(&store, &name, id).await;
                                let _ = tx.send((name, id, outcomes));
                            });
                            continue;
                        }
                        Hold::Queued => continue,
                        Hold::Show => {}
                    }
                }
                match deliver(&output, &opening.delivery).await {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => return Ok(Some(e)),
                }
                if let Some(p) = people.as_mut() {
                    p.shown(&client, opener.store(), &opening);
                }
                if let Some(seq) = opening.delivery.inbox_seq {
                    let _ = client.ack(seq).await;
                }
            }
            Event::InboxOpened {
                server,
                name,
                device,
                created,
                held,
                dropped,
                ..
            } => {
                status(format!(
                    "{} inbox {name} on {server} for device {device}{}",
                    if created { "created" } else { "opened" },
                    match held {
                        0 => String::new(),
                        1 => ": 1 message waiting".to_string(),
                        n => format!(": {n} messages waiting"),
                    }
                ));
                if dropped > 0 {
                    let why = "the inbox dropped them while this device was away (its limits, their age, or a store error)";
                    eprintln!(
                        "gsub: missed {dropped} message{} in inbox {name}: {why}",
                        if dropped == 1 { "" } else { "s" }
                    );
                    if let Output::Json = output {
                        if !write_out(
                            &(inbox_gap_json(&server.to_string(), &name, Some(dropped), why)
                                + "\n"),
                        )? {
                            break;
                        }
                    }
                }
            }
            Event::InboxRefused {
                server,
                name,
                status: st,
                text,
            } => {
                if args.drain {
                    return Ok(Some(anyhow!("inbox {name} not opened on {server}: {text}")));
                }
                eprintln!(
                    "gsub: warning: inbox {name} not opened on {server} ({}): {text}; messages \
                     sent while gsub is away will not wait for it",
                    match st {
                        gale_proto::InboxStatus::Unavailable => "unavailable",
                        gale_proto::InboxStatus::WrongKey => "owned by another key",
                        gale_proto::InboxStatus::BadSignature => "signature refused",
                        _ => "refused",
                    }
                );
            }
            Event::InboxDone { replayed, .. } => {
                if replayed > 0 {
                    status(format!(
                        "inbox: {replayed} message{} kept while away delivered",
                        if replayed == 1 { "" } else { "s" }
                    ));
                }
                if args.drain {
                    // Held messages may still wait for their senders' keys.
                    if held.is_empty() {
                        break;
                    }
                    drain_done = true;
                }
            }
            Event::InboxGap { count, text } => {
                let name = inbox_name.as_deref().unwrap_or("?");
                eprintln!(
                    "gsub: inbox {name} lost {} message{}: {text}",
                    if count == 0 {
                        "some".to_string()
                    } else {
                        count.to_string()
                    },
                    if count == 1 { "" } else { "s" }
                );
                if let Output::Json = output {
                    if !write_out(
                        &(inbox_gap_json("", name, (count > 0).then_some(count), &text) + "\n"),
                    )? {
                        break;
                    }
                }
            }
            Event::Connected { server, name } => status(format!("connected to {server} ({name})")),
            Event::Subscribed { server, entries } => {
                if let Some(p) = people.as_mut() {
                    p.subscribed(&client);
                }
                // Count what the user asked for; the key-query entries come last.
                let own = entries.saturating_sub(answering);
                status(format!(
                    "subscribed to {} on {server}{}",
                    if own == 1 {
                        "1 location".to_string()
                    } else {
                        format!("{own} locations")
                    },
                    match answering {
                        0 => String::new(),
                        _ if key_queries == 0 => String::new(),
                        _ if key_queries == 1 =>
                            " (and answering requests for your key)".to_string(),
                        _ => format!(" (and answering requests for your {key_queries} keys)"),
                    }
                ))
            }
            Event::Disconnected { server, reason } => {
                status(format!("connection to {server} lost ({reason})"))
            }
            Event::Reconnecting { attempt, delay } => status(format!(
                "reconnecting in {} ms (attempt {attempt})",
                delay.as_millis()
            )),
            Event::ConnectFailed { server, error } => {
                status(format!("cannot connect to {server}: {error}"))
            }
            Event::Lossage(n) => eprintln!(
                "gsub: lost {n} message{} (server queue overflowed: this gsub was too slow)",
                if n == 1 { "" } else { "s" }
            ),
            Event::Refused { server, code, text } => {
                return Ok(Some(anyhow!(
                    "{server} refused this client: {} (not retrying: the same request \
                     would be refused again)",
                    describe_error(code, &text)
                )));
            }
            Event::Handshaking { .. } => {}
            Event::Resumed { server, replayed } => {
                if replayed > 0 {
                    status(format!(
                        "resumed on {server}: {replayed} message{} sent while reconnecting \
                         replayed",
                        if replayed == 1 { "" } else { "s" }
                    ))
                }
            }
            Event::Gap {
                server,
                from,
                to,
                count,
                why,
            } => {
                // Never quiet: these messages are gone.
                eprintln!(
                    "gsub: missed messages from {server} between {} and {} ({}): {why}",
                    utc_ms(from),
                    utc_ms(to),
                    match count {
                        Some(1) => "1 message".to_string(),
                        Some(n) => format!("{n} messages"),
                        None => "count unknown".to_string(),
                    }
                );
                if let Output::Json = output {
                    let line = gap_json(&server.to_string(), from, to, count, &why) + "\n";
                    match write_out(&line) {
                        Ok(true) => {}
                        Ok(false) => break,
                        Err(e) => return Ok(Some(e)),
                    }
                }
            }
            Event::Undecodable { id, error } => {
                eprintln!("gsub: dropped message {id}, which could not be decoded: {error}")
            }
            Event::PublishDropped { id, reason } => {
                eprintln!("gsub: message {id} not sent: {reason}")
            }
        }
    }
    if let Some(p) = people.as_mut() {
        // A goodbye in place of the will.
        p.goodbye(&client);
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), client.close(true)).await;
    Ok(None)
}

/// An error in the command line found after clap: exit [`EXIT_USAGE`].
#[derive(Debug, thiserror::Error)]
#[error("{0:#}")]
struct Usage(anyhow::Error);

/// True if `e` is about the command line: a value that does not parse.
fn is_usage(e: &anyhow::Error) -> bool {
    e.is::<Usage>() || e.is::<ArgError>() || e.is::<ServerAddrError>()
}

/// Refuses, before connecting, a subscription list no server would take: more
/// than [`MAX_SUBS_PER_CONNECTION`] entries on one connection (the server would
/// answer ERROR 6). `answering` entries are gsub's own, for requests for the
/// user's keys (-a drops them).
fn check_subscription_count(given: usize, answering: usize) -> anyhow::Result<()> {
    let max = MAX_SUBS_PER_CONNECTION;
    if given + answering <= max {
        return Ok(());
    }
    let why = if answering == 0 {
        format!("{given} subscriptions given; a server takes at most {max} on one connection")
    } else {
        format!(
            "{given} subscriptions given, and {answering} more to answer requests for your \
             keys; a server takes at most {max} on one connection (-a drops the {answering})"
        )
    };
    Err(Usage(anyhow!(
        "{why}: subscribe to a location above several of them (pub@example.org takes \
         everything under pub), or split them between several gsubs"
    ))
    .into())
}

/// A signer's key lookup that ended: the key, and what was found.
type Lookup = (KeyName, KeyId, HashMap<KeyName, Outcome>);

/// Prints a changed key loudly, and any problem met opening the message.
fn warn(opening: &Opening) {
    if let Some(c) = &opening.changed {
        eprintln!("gsub: {c}");
    }
    for w in &opening.warnings {
        eprintln!("gsub: warning: {w}");
    }
}

/// Answers a key query for one of our keys with that key, signed by itself.
fn answer_query(client: &Client, store: &KeyStore, ours: &mut OwnKeys, d: &Delivery) {
    let now = Instant::now();
    match ours.answer(store, d, now) {
        Ok(Some((name, m))) => {
            if client.publish(m).is_ok() {
                ours.sent(name, now);
            }
        }
        Ok(None) => {}
        Err(e) => eprintln!("gsub: {:#}", anyhow::Error::from(e)),
    }
}

/// Finds (or makes) the user's key, and unless stealthy subscribes to the queries
/// for every key the user holds. Returns what answers those queries, and the
/// user's key if there is one.
async fn own_keys(
    args: &Args,
    store: &KeyStore,
    config: &mut ClientConfig,
    discovery: Option<&Discovery>,
) -> anyhow::Result<(OwnKeys, Option<SecretKey>)> {
    let mut key = None;
    match identity::key_name(args.id.as_deref(), domain_from_env().as_deref()) {
        Ok(name) => {
            match identity::load_or_create_checked(store, &name, sender_from_env(), discovery).await
            {
                Ok(own) => {
                    if let Some(note) = own.notice("gsub") {
                        eprintln!("{note}");
                    }
                    key = Some(own.key);
                }
                Err(e) => eprintln!(
                    "gsub: warning: cannot use or make your key for {name}: {:#}",
                    anyhow::Error::from(e)
                ),
            }
        }
        Err(e) => eprintln!("gsub: warning: {e}; messages encrypted to you cannot be read"),
    }
    let ours = OwnKeys::new(store.own_key_names()?);
    if !args.stealth {
        config.subscriptions.entries.extend(ours.subscriptions());
    }
    Ok((ours, key))
}

/// Who this gsub announces itself as.
fn presence_id(args: &Args) -> anyhow::Result<Location> {
    let domain = domain_from_env();
    let id = match &args.id {
        Some(id) => id.clone(),
        None => presence::id_from_env(domain.as_deref())
            .context("presence needs to know who you are (or give --id you@example.org)")?,
    };
    let loc = parse_locations(&[id.as_str()], domain.as_deref())?;
    Ok(loc.into_iter().next().expect("one location"))
}

fn main() -> ExitCode {
    let args = match gale_client::args::parse_args::<Args>() {
        Ok(a) => a,
        Err(code) => return code,
    };
    gale_client::logging::init("gsub");
    // One thread: gsub is a pipeline (socket -> client task -> display), and on a
    // multi-threaded runtime every message bounced between threads (16% of gsub's
    // CPU in context switches, measured with perf on 50,000 signed messages).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("gsub: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some(e)) | Err(e) => {
            eprintln!("gsub: {e:#}");
            ExitCode::from(if is_usage(&e) { EXIT_USAGE } else { 1 })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("gsub").chain(args.iter().copied()))
    }

    #[test]
    fn dash_is_a_location_separator_not_an_option() {
        let a = parse(&["a@x.org", "-", "a.b@x.org"]).unwrap();
        assert_eq!(a.locations, ["a@x.org", "-", "a.b@x.org"]);
        let subs = parse_subscriptions(&a.locations, None).unwrap();
        assert!(subs.entries[0].positive && !subs.entries[1].positive);
        let a = parse(&["-q", "--json", "-", "a@x.org", "b@x.org"]).unwrap();
        assert!(a.quiet && a.json);
        assert_eq!(a.locations, ["-", "a@x.org", "b@x.org"]);
        // Other words starting with '-' are options, and unknown ones are errors.
        assert!(parse(&["a@x.org", "-x"]).is_err());
        assert!(parse(&["--json", "-f", "prog", "a@x.org"]).is_err());
    }
}
