//! gsend: send a Gale message. Argument parsing and process plumbing here, with
//! reading standard input in this crate's `input` module and what it says about
//! the connection in `progress`; the client and composing live in gale-client,
//! signing, sealing and key lookups in gale-security.

mod input;
mod progress;
mod receipts;

use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use gale_client::args::{domain_from_env, parse_locations};
use gale_client::compose::{parse_keyword, parse_text_fragment, sender_from_env};
use gale_client::server::servers_from_env;
use gale_client::{Client, ClientConfig, ClientError, Compose, ServerAddr};
use gale_keys::{KeyStore, SecretKey};
use gale_proto::{Location, Message, Timestamp};
use gale_security::discovery::{self, Discovery};
use gale_security::identity;
use gale_security::outgoing::{self, Decision, Notice};
use gsend::cli::Args;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::input::{read_body, spawn_line_reader, Line, MAX_BODY};
use crate::progress::Progress;

const AGENT: &str = concat!("gsend/", env!("CARGO_PKG_VERSION"));

/// --timeout when not given, in seconds.
const DEFAULT_TIMEOUT: u64 = 30;

/// Publishes held at once in --lines mode; past it, reading input waits.
const LINES_QUEUE_LIMIT: usize = 1_000;

/// Refused, or bad input (see AFTER_HELP).
const EXIT_REFUSED: u8 = 1;
/// No server took the message(s) in time.
const EXIT_UNDELIVERED: u8 = 2;
/// Standard input could not be read.
const EXIT_INPUT: u8 = 3;
/// EX_USAGE (sysexits.h): a usage error, the same code in every Gale program.
use gale_client::args::EXIT_USAGE;
/// Sent, but no receipt came (--require-receipt, --ping).
const EXIT_NO_RECEIPT: u8 = 4;

/// A failure and its exit status.
struct Failure {
    code: u8,
    error: anyhow::Error,
}

/// The command line is wrong.
fn usage(error: impl Into<anyhow::Error>) -> Failure {
    Failure {
        code: EXIT_USAGE,
        error: error.into(),
    }
}

/// The command line is right, but this cannot be sent.
fn refused(error: impl Into<anyhow::Error>) -> Failure {
    Failure {
        code: EXIT_REFUSED,
        error: error.into(),
    }
}

fn undelivered(error: impl Into<anyhow::Error>) -> Failure {
    Failure {
        code: EXIT_UNDELIVERED,
        error: error.into(),
    }
}

fn input_error(error: impl Into<anyhow::Error>) -> Failure {
    Failure {
        code: EXIT_INPUT,
        error: error.into().context("reading standard input"),
    }
}

fn publish_error(e: ClientError) -> Failure {
    match e {
        ClientError::TooLarge { .. } => refused(e),
        ClientError::BadLocationCount { .. } => usage(e),
        _ => undelivered(e),
    }
}

/// How every message of this run is signed and sealed.
struct Secure {
    signer: Option<SecretKey>,
    decision: Decision,
    /// Put the signer's key in a message signed in clear (a ping or receipt
    /// request), so the answers can be encrypted to it.
    carry_key: bool,
}

impl Secure {
    fn message(&self, compose: &Compose, to: &[Location]) -> Result<Message, Failure> {
        let mut fragments = compose.fragments(Timestamp::now());
        if let (true, Some(k), Decision::Clear) = (self.carry_key, &self.signer, &self.decision) {
            outgoing::carry_key(&mut fragments, k);
        }
        outgoing::build(
            to.to_vec(),
            &fragments,
            self.signer.as_ref(),
            &self.decision,
        )
        .context("cannot encrypt the message")
        .map_err(refused)
    }
}

/// Sends each line as it comes; a line that is not UTF-8 goes with its bad bytes
/// replaced, and the user is told (the first one, and how many in all).
async fn send_lines(
    client: &Client,
    compose: &mut Compose,
    to: &[Location],
    secure: &Secure,
    mut lines: mpsc::Receiver<io::Result<Line>>,
) -> Result<(), Failure> {
    let (mut read, mut mended) = (0u64, 0u64);
    while let Some(line) = lines.recv().await {
        let line = line.map_err(input_error)?;
        read += 1;
        if line.mended {
            mended += 1;
            if mended == 1 {
                eprintln!(
                    "gsend: warning: line {read} is not UTF-8 text: sending it with the bad \
                     bytes replaced by U+FFFD"
                );
            }
        }
        compose.body = Some(line.text);
        client
            .publish_wait(secure.message(compose, to)?)
            .await
            .map_err(publish_error)?;
    }
    if mended > 0 {
        eprintln!(
            "gsend: replaced bytes that are not UTF-8 in {mended} line{}",
            if mended == 1 { "" } else { "s" }
        );
    }
    Ok(())
}

/// The key to sign with (none when anonymous), made on first use unless the
/// name already answers over Gale (the key is then on another machine).
async fn own_key(
    args: &Args,
    store: &KeyStore,
    discovery: &Discovery,
    progress: &Progress,
) -> Result<Option<SecretKey>, Failure> {
    if args.anonymous {
        return Ok(None);
    }
    let name = identity::key_name(args.id.as_deref(), domain_from_env().as_deref()).map_err(
        |e| match e {
            identity::IdentityError::BadName { .. } => usage(e),
            identity::IdentityError::Unknown(_) => {
                refused(anyhow!("{e}; or send anonymously with -a"))
            }
            _ => refused(e),
        },
    )?;
    let own = identity::load_or_create_checked(store, &name, sender_from_env(), Some(discovery))
        .await
        .with_context(|| format!("cannot use or make your key for {name}"))
        .map_err(refused)?;
    if let Some(note) = own.notice("gsend") {
        progress.note(&note);
    }
    Ok(Some(own.key))
}

/// Works out the signing key and who the message is encrypted to, telling the
/// user what they need to know on standard error.
async fn prepare(
    args: &Args,
    store: &KeyStore,
    to: &[Location],
    servers: &[ServerAddr],
    progress: &Progress,
) -> Result<Secure, Failure> {
    let timeout = Duration::try_from_secs_f64(args.key_timeout.max(0.0))
        .unwrap_or(discovery::DEFAULT_TIMEOUT);
    let discovery = Discovery::new(servers.to_vec(), AGENT, timeout);
    let signer = own_key(args, store, &discovery, progress).await?;
    let (plan, mut notices) = outgoing::plan(store, to, Some(&discovery))
        .await
        .map_err(refused)?;
    let decision = match outgoing::decide(&plan, args.allow_clear, args.require_private) {
        Ok(d) => d,
        // Keys were looked for, but no server was reached to ask: that is a
        // failure to deliver, not a key known to be missing.
        Err(outgoing::PlanError::NoKey(names)) if !discovery.reached_any() => {
            return Err(undelivered(anyhow!(
                "could not look up the key of {names}: {}",
                progress.unreached()
            )));
        }
        Err(e) => return Err(refused(e)),
    };
    match &decision {
        Decision::Encrypt(keys) => {
            notices.extend(outgoing::key_notices(store, keys, Timestamp::now()));
        }
        Decision::Clear => {
            let private: Vec<&str> = plan
                .iter()
                .filter(|(_, c)| c.is_private())
                .map(|(l, _)| l.as_str())
                .collect();
            if !private.is_empty() {
                eprintln!(
                    "gsend: warning: sending IN CLEAR to private {} because of --allow-clear",
                    private.join(", ")
                );
            }
        }
    }
    let how = if signer.is_some() {
        "signed"
    } else {
        "anonymously"
    };
    for n in notices {
        match n {
            Notice::NoKey(loc) => progress.note_when_connected(format!(
                "gsend: no key for {loc}: sending in clear, {how}, because of --allow-clear"
            )),
            Notice::Changed(c) => eprintln!("gsend: {c}"),
            Notice::OtherKey(w) => eprintln!("gsend: {w}"),
            Notice::Unverified { key, why } => eprintln!(
                "gsend: warning: the key of {key} is not verified, encrypting to it anyway: {why}"
            ),
        }
    }
    Ok(Secure {
        signer,
        decision,
        carry_key: args.wants_receipts(),
    })
}

/// What is sent: `-m`, the whole of standard input, or each of its lines.
enum Body {
    Given(String),
    Reading(JoinHandle<io::Result<Vec<u8>>>),
    Lines(mpsc::Receiver<io::Result<Line>>),
}

/// Starts reading the whole body on a thread, so that keys are looked up while a
/// person types; on a terminal, shows the prompt first, at once.
fn start_reading_body(to: &[Location], keywords: &[String], interactive: bool) -> Body {
    if interactive {
        let mut to: Vec<String> = to.iter().map(|l| l.to_string()).collect();
        to.extend(keywords.iter().map(|k| format!("/{k}")));
        eprintln!("To: {}", to.join(" "));
        eprintln!("(End your message with EOF or a solitary dot.)");
    }
    Body::Reading(tokio::task::spawn_blocking(move || {
        read_body(&mut io::stdin().lock(), interactive, MAX_BODY)
    }))
}

/// The body once read: it must fit in a message, and be UTF-8 text.
fn body_text(read: Result<io::Result<Vec<u8>>, tokio::task::JoinError>) -> Result<String, Failure> {
    let bytes = read.map_err(input_error)?.map_err(input_error)?;
    let bytes = input::check_len(bytes, MAX_BODY).map_err(refused)?;
    input::text(bytes).map_err(refused)
}

async fn run(args: Args) -> Result<(), Failure> {
    let (keywords, locations): (Vec<&String>, Vec<&String>) =
        args.targets.iter().partition(|t| t.starts_with('/'));
    if locations.is_empty() {
        return Err(usage(anyhow!(
            "no location given: write who to send to, e.g. gsend pub.test@example.org"
        )));
    }
    let mut to = parse_locations(&locations, domain_from_env().as_deref()).map_err(usage)?;
    // Who should answer: the people named (pinged, or sent to with -r).
    let expect = receipts::expected(&to);
    if args.ping {
        if !keywords.is_empty() {
            return Err(usage(anyhow!("a ping has no keywords")));
        }
        to = to
            .iter()
            .map(gale_security::people::ask_location)
            .collect::<Result<_, _>>()
            .map_err(usage)?;
    }
    if args.anonymous && args.wants_receipts() {
        return Err(usage(anyhow!(
            "receipts and pings are answered only to signed asks: drop -a"
        )));
    }
    let keywords: Vec<String> = keywords
        .iter()
        .map(|k| parse_keyword(k))
        .collect::<Result<_, _>>()
        .map_err(usage)?;
    let extra = args
        .text
        .iter()
        .map(|t| parse_text_fragment(t))
        .collect::<Result<_, _>>()
        .map_err(usage)?;
    let servers = servers_from_env(args.server.as_deref())
        .context("bad server list")
        .map_err(usage)?;
    let store = KeyStore::from_env().map_err(refused)?;
    let compose = Compose {
        body: None,
        sender: if args.anonymous {
            None
        } else {
            sender_from_env()
        },
        keywords,
        extra,
        class: Some(AGENT.to_string()),
    };

    let mut config = ClientConfig::new(servers, AGENT);
    if args.lines {
        // Lines can be MAX_LINE long: keep the worst case to tens of megabytes.
        config.queue_limit = LINES_QUEUE_LIMIT;
    }
    // Connect, and read what to send, while keys are looked up.
    let servers = config.servers.clone();
    let progress = Arc::new(Progress::new(&servers, args.quiet));
    let (client, events) = Client::start(config);
    let watching = tokio::spawn({
        let progress = progress.clone();
        async move { progress.watch(events).await }
    });
    let result = send(
        &args, &store, &to, &expect, &servers, compose, &client, &progress,
    )
    .await;
    match result {
        // A server refused for good, which stopped the client: whatever failed
        // then, that is why. Its event is the last, so the watcher ends at once.
        Err(_) if client.is_stopped() => {
            let _ = tokio::time::timeout(Duration::from_secs(1), watching).await;
            match progress.refusal() {
                Some(why) => Err(refused(anyhow!(why))),
                None => result,
            }
        }
        Ok(()) => {
            // The client has closed, so its events end: what the server said
            // before the end (such as a notice that a private message was not
            // offered to original-Gale clients) is printed before exiting.
            let _ = tokio::time::timeout(Duration::from_secs(1), watching).await;
            Ok(())
        }
        r => r,
    }
}

/// Reads what to send, works out keys, publishes, and waits for the server.
#[allow(clippy::too_many_arguments)]
async fn send(
    args: &Args,
    store: &KeyStore,
    to: &[Location],
    expect: &[String],
    servers: &[ServerAddr],
    mut compose: Compose,
    client: &Client,
    progress: &Progress,
) -> Result<(), Failure> {
    let interactive = args.message.is_none() && !args.lines && io::stdin().is_terminal();
    let body = match &args.message {
        _ if args.ping => Body::Given(String::new()),
        _ if args.lines => Body::Lines(spawn_line_reader()),
        Some(text) => {
            let mut text = text.clone();
            if !text.ends_with('\n') {
                text.push('\n');
            }
            Body::Given(text)
        }
        None => start_reading_body(to, &compose.keywords, interactive),
    };
    // A message (not --lines) with no --timeout gives up soon when no server can
    // be reached at all; not while a person is still typing it.
    let fail_fast = args.timeout.is_none() && !args.lines;
    let prepared = progress.unless_unreachable(
        fail_fast && !interactive,
        prepare(args, store, to, servers, progress),
    );
    tokio::pin!(prepared);
    let text = match body {
        Body::Lines(lines) => {
            let secure = prepared.await.map_err(undelivered)??;
            send_lines(client, &mut compose, to, &secure, lines).await?;
            None
        }
        Body::Given(text) => Some((prepared.await.map_err(undelivered)??, text)),
        // Whichever ends first: a body that cannot be sent (too long, not text)
        // is refused at once, without waiting for keys to be looked up.
        Body::Reading(mut reading) => tokio::select! {
            read = &mut reading => {
                let text = body_text(read)?;
                Some((prepared.await.map_err(undelivered)??, text))
            }
            secure = &mut prepared => {
                let secure = secure.map_err(undelivered)??;
                Some((secure, body_text(reading.await)?))
            }
        },
    };
    let mut asked = None;
    if let Some((secure, text)) = text {
        compose.body = (!args.ping).then_some(text);
        let mut collector = None;
        if args.wants_receipts() {
            let signer = secure.signer.as_ref().ok_or_else(|| {
                usage(anyhow!(
                    "receipts and pings are answered only to signed asks"
                ))
            })?;
            let c = receipts::listen(
                servers.to_vec(),
                AGENT,
                store,
                signer,
                Duration::from_secs(args.timeout.unwrap_or(progress::FAIL_FAST.as_secs())),
            )
            .await
            .map_err(undelivered)?;
            compose.extra.push((
                gale_proto::fragment::names::QUESTION_RECEIPT.to_string(),
                c.reply.to_string(),
            ));
            collector = Some(c);
        }
        let m = secure.message(&compose, to)?;
        asked = collector.map(|c| (c, m.id));
        client.publish(m).map_err(publish_error)?;
    }
    progress
        .flush(client, args.timeout.unwrap_or(DEFAULT_TIMEOUT), fail_fast)
        .await
        .map_err(undelivered)?;
    if let Some((mut collector, id)) = asked {
        let timeout = Duration::try_from_secs_f64(args.receipt_timeout.max(0.0))
            .unwrap_or(Duration::from_secs(5));
        let n = receipts::report(&mut collector, id, expect.to_vec(), timeout).await;
        if n == 0 && (args.require_receipt || args.ping) {
            let _ = tokio::time::timeout(Duration::from_secs(2), client.close(false)).await;
            return Err(Failure {
                code: EXIT_NO_RECEIPT,
                error: anyhow!(
                    "no {} within {} s",
                    if args.ping { "answer" } else { "receipt" },
                    timeout.as_secs_f64()
                ),
            });
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), client.close(false)).await;
    Ok(())
}

fn main() -> ExitCode {
    let args = match gale_client::args::parse_args::<Args>() {
        Ok(a) => a,
        Err(code) => return code,
    };
    gale_client::logging::init("gsend");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("gsend: cannot start: {e}");
            return ExitCode::from(EXIT_REFUSED);
        }
    };
    let code = match runtime.block_on(run(args)) {
        Ok(()) => 0,
        Err(f) => {
            eprintln!("gsend: {:#}", f.error);
            f.code
        }
    };
    let _ = io::stderr().flush();
    // The stdin reader thread may still be blocked in read(); don't wait for it.
    std::process::exit(i32::from(code));
}
