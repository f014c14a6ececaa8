//! gsend: send a Gale message. Argument parsing and process plumbing here, with
//! reading standard input in this crate's `input` module and what it says about
//! the connection in `progress`; the client and composing live in gale-client,
//! signing, sealing and key lookups in gale-security.

mod input;
mod progress;

use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::Parser;
use gale_client::args::{domain_from_env, parse_locations};
use gale_client::compose::{parse_keyword, parse_text_fragment, sender_from_env};
use gale_client::server::servers_from_env;
use gale_client::{Client, ClientConfig, ClientError, Compose, ServerAddr};
use gale_keys::{KeyStore, SecretKey};
use gale_proto::{Location, Message, Timestamp};
use gale_security::discovery::{self, Discovery};
use gale_security::identity;
use gale_security::outgoing::{self, Decision, Notice};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::input::{read_body, spawn_line_reader, Line, MAX_BODY};
use crate::progress::Progress;

const AGENT: &str = concat!("gsend/", env!("CARGO_PKG_VERSION"));

/// --timeout when not given, in seconds.
const DEFAULT_TIMEOUT: u64 = 30;

/// Publishes held at once in --lines mode; past it, reading input waits.
const LINES_QUEUE_LIMIT: usize = 1_000;

const AFTER_HELP: &str = "\
Locations without @domain get $GALE_DOMAIN. Arguments starting with '/' are keywords.
The body is read from standard input until end of file; from a terminal, a line
holding only \".\" also ends it. A body is text: one that is not UTF-8 is refused;
with --lines, bad bytes are replaced (U+FFFD) and gsend says how many lines changed.

Security: every message is signed with your key (GALE_ID, default
$USER@$GALE_DOMAIN), which is made on first use in GALE_DIR (default ~/.gale).
A location whose key has members (a person, a group) is private: the message is
encrypted to every member, with the signature inside. Missing keys are asked for
over Gale (--key-timeout). A location with no key found is refused, never sent in
clear by accident, unless it is public by rule (pub and everything below it) or
--allow-clear is given; a domain declares other public areas with a key whose
members include the world (gkey gen --public). A message to private and public
locations at once is refused unless --allow-clear. -a sends anonymously: no
signature, no name.

Environment: GALE_SERVER (server list), GALE_DOMAIN (default domain), GALE_ID
(who you are), GALE_DIR (your keys), GALE_NAME (your name, sent as
message.sender unless -a), RUST_LOG (the libraries' messages on standard error:
warnings by default; e.g. RUST_LOG=debug).

Limits: a body is at most 1,048,576 bytes (1 MiB; signing and names take a
little of that): gsend stops reading standard input there and refuses the
message, whatever the size of the input. With --lines, a line longer than 64 KiB
is sent in pieces. Every network wait is bounded: a connection or a handshake
that takes more than 5 s fails that attempt (then the next server, or again
with back-off), key lookups end after --key-timeout.

Exit status:
  0   the server accepted every message
  1   refused or bad input: no key found for a location that is not public
      (without --allow-clear), private and public locations mixed, no key with
      --require-private, a body that is not UTF-8 text, a body or message too
      large, who you are is not known; or a server refused gsend for good (an
      ERROR that asking again cannot change, e.g. a protocol version it does
      not speak: sending again will not help)
  2   could not deliver: no server could be reached, or every one was busy or
      did not answer the handshake (a message gives up after about 5 s unless
      --timeout is given), or none confirmed before --timeout: worth trying
      again later
  3   I/O error reading standard input
  64  usage error: an unknown option, a missing argument, or a value that does
      not parse (a location, -t, a keyword, --id, the server list)

Examples:
  echo 'lunch?' | gsend pub.food@example.org /lunch
  tail -F /var/log/syslog | gsend --lines log.syslog@example.org";

/// Send a Gale message.
#[derive(Parser, Debug)]
#[command(name = "gsend", version, after_help = AFTER_HELP)]
struct Args {
    /// Servers to try in order, as host[:port],host[:port]
    /// [default: $GALE_SERVER, else localhost:11512]
    #[arg(short = 's', long, value_name = "HOST[:PORT],...")]
    server: Option<String>,

    /// Send TEXT as the body instead of reading standard input
    #[arg(
        short = 'm',
        long = "message",
        value_name = "TEXT",
        conflicts_with = "lines"
    )]
    message: Option<String>,

    /// Add a text fragment (repeatable), e.g. -t message.subject=hello
    #[arg(short = 't', long = "text", value_name = "NAME=VALUE")]
    text: Vec<String>,

    /// Send each line of standard input as its own message as soon as it is read;
    /// at end of input wait for the server to accept them all, then exit
    #[arg(long)]
    lines: bool,

    /// Seconds to wait for the server to accept the message(s); 0 waits forever.
    /// With --lines, the wait at end of input [default: 30; without --timeout
    /// and --lines, gsend gives up after about 5 s if no server can be reached]
    #[arg(long, value_name = "SECS")]
    timeout: Option<u64>,

    /// Quiet: no notes (a new key, sending in clear, connection trouble);
    /// warnings and errors are still printed
    #[arg(short = 'q', long)]
    quiet: bool,

    /// Anonymous: do not sign, and do not send your name (message.sender)
    #[arg(short = 'a', long)]
    anonymous: bool,

    /// Sign as this id [default: $GALE_ID, else $USER@$GALE_DOMAIN]
    #[arg(long, value_name = "LOCATION")]
    id: Option<String>,

    /// Seconds to wait for the keys of new correspondents to be found over Gale
    #[arg(long, value_name = "SECS", default_value_t = 3.0)]
    key_timeout: f64,

    /// Send in clear where no key was found for a location that is not public,
    /// and to private and public locations at once (both otherwise refused)
    #[arg(long)]
    allow_clear: bool,

    /// Refuse to send unless every location is private (encrypted)
    #[arg(long, conflicts_with = "allow_clear")]
    require_private: bool,

    /// Recipients (name@domain, or name with $GALE_DOMAIN), then /keywords
    #[arg(value_name = "LOCATION|/KEYWORD", required = true)]
    targets: Vec<String>,
}

/// Refused, or bad input (see AFTER_HELP).
const EXIT_REFUSED: u8 = 1;
/// No server took the message(s) in time.
const EXIT_UNDELIVERED: u8 = 2;
/// Standard input could not be read.
const EXIT_INPUT: u8 = 3;
/// EX_USAGE (sysexits.h): a usage error, the same code in every Gale program.
const EXIT_USAGE: u8 = 64;

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
}

impl Secure {
    fn message(&self, compose: &Compose, to: &[Location]) -> Result<Message, Failure> {
        let fragments = compose.fragments(Timestamp::now());
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
    Ok(Secure { signer, decision })
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
    let to = parse_locations(&locations, domain_from_env().as_deref()).map_err(usage)?;
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
    let result = send(&args, &store, &to, &servers, compose, &client, &progress).await;
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
async fn send(
    args: &Args,
    store: &KeyStore,
    to: &[Location],
    servers: &[ServerAddr],
    mut compose: Compose,
    client: &Client,
    progress: &Progress,
) -> Result<(), Failure> {
    let interactive = args.message.is_none() && !args.lines && io::stdin().is_terminal();
    let body = match &args.message {
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
    if let Some((secure, text)) = text {
        compose.body = Some(text);
        client
            .publish(secure.message(&compose, to)?)
            .map_err(publish_error)?;
    }
    progress
        .flush(client, args.timeout.unwrap_or(DEFAULT_TIMEOUT), fail_fast)
        .await
        .map_err(undelivered)?;
    let _ = tokio::time::timeout(Duration::from_secs(2), client.close(false)).await;
    Ok(())
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { 0 });
        }
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
