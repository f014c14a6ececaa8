//! gsend: send a Gale message. Argument parsing and process plumbing here, with
//! reading standard input in this crate's `input` module; the client and
//! composing live in gale-client, signing, sealing and key lookups in
//! gale-security.

mod input;

use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::Parser;
use gale_client::args::{domain_from_env, parse_locations};
use gale_client::compose::{parse_keyword, parse_text_fragment, sender_from_env};
use gale_client::server::{display_list, servers_from_env};
use gale_client::{Client, ClientConfig, ClientError, Compose, Event, Events, ServerAddr};
use gale_keys::{KeyStore, SecretKey};
use gale_proto::{Location, Message, Timestamp};
use gale_security::discovery::{self, Discovery};
use gale_security::identity;
use gale_security::outgoing::{self, Decision, Notice};
use tokio::sync::mpsc;

use crate::input::{read_body, read_line_capped, MAX_LINE};

const AGENT: &str = concat!("gsend/", env!("CARGO_PKG_VERSION"));

/// Publishes held at once in --lines mode; past it, reading input waits.
const LINES_QUEUE_LIMIT: usize = 1_000;

const AFTER_HELP: &str = "\
Locations without @domain get $GALE_DOMAIN. Arguments starting with '/' are keywords.
The body is read from standard input until end of file; from a terminal, a line
holding only \".\" also ends it.

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
message.sender unless -a).

Exit status:
  0  the server accepted every message
  1  usage error or bad input (bad location, bad -t, message too large), or
     refused: no key found for a location that is not public (without
     --allow-clear), private and public locations mixed, not private with
     --require-private
  2  could not deliver to a server before the timeout
  3  I/O error reading standard input

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
    /// With --lines, the wait at end of input
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    timeout: u64,

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

/// A failure and its exit status.
struct Failure {
    code: u8,
    error: anyhow::Error,
}

fn usage(error: impl Into<anyhow::Error>) -> Failure {
    Failure {
        code: 1,
        error: error.into(),
    }
}

/// What the connection last did, for the timeout message.
#[derive(Default)]
struct Status {
    connected: Option<String>,
    problem: Option<String>,
}

/// Reports connection trouble on stderr (each distinct problem once) and keeps
/// the latest state for the timeout message.
async fn watch(mut events: Events, status: Arc<Mutex<Status>>) {
    let mut last_printed = String::new();
    while let Some(ev) = events.next().await {
        let line = match ev {
            Event::Connected { server, .. } => {
                let mut s = status.lock().unwrap_or_else(|p| p.into_inner());
                s.connected = Some(server.to_string());
                s.problem = None;
                continue;
            }
            Event::ConnectFailed { server, error } => {
                format!("cannot connect to {server}: {error}")
            }
            Event::Disconnected { server, reason } => {
                format!("connection to {server} lost ({reason})")
            }
            Event::ServerError { code, text } => format!("server error ({code:?}): {text}"),
            Event::PublishDropped { id, reason } => format!("message {id} dropped: {reason}"),
            Event::Reconnecting { .. }
            | Event::Subscribed { .. }
            | Event::Message(_)
            | Event::Undecodable { .. }
            | Event::Lossage(_) => continue,
        };
        {
            let mut s = status.lock().unwrap_or_else(|p| p.into_inner());
            s.connected = None;
            s.problem = Some(line.clone());
        }
        if line != last_printed {
            eprintln!("gsend: {line}");
            last_printed = line;
        }
    }
}

/// Waits for the server to confirm everything published, within `timeout`.
async fn flush(
    client: &Client,
    timeout: u64,
    servers: &str,
    status: &Mutex<Status>,
) -> Result<(), Failure> {
    let result = if timeout == 0 {
        Ok(client.flush().await)
    } else {
        tokio::time::timeout(Duration::from_secs(timeout), client.flush()).await
    };
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Failure {
            code: 2,
            error: anyhow!(e),
        }),
        Err(_) => {
            let s = status.lock().unwrap_or_else(|p| p.into_inner());
            let last = match (&s.connected, &s.problem) {
                (Some(server), _) => format!("connected to {server}, but it did not confirm"),
                (None, Some(p)) => format!("last: {p}"),
                (None, None) => "no answer yet".to_string(),
            };
            Err(Failure {
                code: 2,
                error: anyhow!(
                    "could not deliver to {servers} within {timeout} s ({last}); \
                     is galed running there? Use -s or GALE_SERVER to choose a server, \
                     --timeout to wait longer"
                ),
            })
        }
    }
}

fn publish_error(e: ClientError) -> Failure {
    match e {
        ClientError::TooLarge { .. } | ClientError::BadLocationCount { .. } => usage(e),
        _ => Failure {
            code: 2,
            error: e.into(),
        },
    }
}

/// Reads lines on a thread (stdin is blocking) into a small bounded channel, so at
/// most a few lines wait here while the client's queue is full.
fn spawn_line_reader() -> mpsc::Receiver<io::Result<String>> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        let stdin = io::stdin();
        let mut input = stdin.lock();
        let mut buf = Vec::new();
        loop {
            let item = match read_line_capped(&mut input, &mut buf, MAX_LINE) {
                Ok(false) => return,
                Ok(true) => Ok(String::from_utf8_lossy(&buf).into_owned() + "\n"),
                Err(e) => Err(e),
            };
            let stop = item.is_err();
            if tx.blocking_send(item).is_err() || stop {
                return;
            }
        }
    });
    rx
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
        .map_err(usage)
    }
}

async fn send_lines(
    client: &Client,
    compose: &mut Compose,
    to: &[Location],
    secure: &Secure,
) -> Result<(), Failure> {
    let mut lines = spawn_line_reader();
    while let Some(line) = lines.recv().await {
        let line = line
            .context("reading standard input")
            .map_err(|error| Failure { code: 3, error })?;
        compose.body = Some(line);
        client
            .publish_wait(secure.message(compose, to)?)
            .await
            .map_err(publish_error)?;
    }
    Ok(())
}

/// Works out the signing key and who the message is encrypted to, telling the
/// user what they need to know on standard error.
async fn prepare(args: &Args, to: &[Location], servers: &[ServerAddr]) -> Result<Secure, Failure> {
    let store = KeyStore::from_env().map_err(usage)?;
    let timeout = Duration::try_from_secs_f64(args.key_timeout.max(0.0))
        .unwrap_or(discovery::DEFAULT_TIMEOUT);
    let discovery = Discovery::new(servers.to_vec(), AGENT, timeout);
    let signer = if args.anonymous {
        None
    } else {
        let name =
            identity::key_name(args.id.as_deref(), domain_from_env().as_deref()).map_err(usage)?;
        let own =
            identity::load_or_create_checked(&store, &name, sender_from_env(), Some(&discovery))
                .await
                .with_context(|| format!("cannot use or make your key for {name}"))
                .map_err(usage)?;
        if let Some(note) = own.notice("gsend") {
            eprintln!("{note}");
        }
        Some(own.key)
    };
    let (plan, mut notices) = outgoing::plan(&store, to, Some(&discovery))
        .await
        .map_err(usage)?;
    let decision =
        outgoing::decide(&plan, args.allow_clear, args.require_private).map_err(usage)?;
    match &decision {
        Decision::Encrypt(keys) => {
            notices.extend(outgoing::key_notices(&store, keys, Timestamp::now()));
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
            Notice::NoKey(loc) => {
                eprintln!(
                    "gsend: no key for {loc}: sending in clear, {how}, because of --allow-clear"
                )
            }
            Notice::Changed(c) => eprintln!("gsend: {c}"),
            Notice::OtherKey(w) => eprintln!("gsend: {w}"),
            Notice::Unverified { key, why } => eprintln!(
                "gsend: warning: the key of {key} is not verified, encrypting to it anyway: {why}"
            ),
        }
    }
    Ok(Secure { signer, decision })
}

async fn read_whole_body(to: &[Location], keywords: &[String]) -> Result<String, Failure> {
    let interactive = io::stdin().is_terminal();
    if interactive {
        let mut to: Vec<String> = to.iter().map(|l| l.to_string()).collect();
        to.extend(keywords.iter().map(|k| format!("/{k}")));
        eprintln!("To: {}", to.join(" "));
        eprintln!("(End your message with EOF or a solitary dot.)");
    }
    tokio::task::spawn_blocking(move || read_body(&mut io::stdin().lock(), interactive))
        .await
        .map_err(|e| Failure {
            code: 3,
            error: anyhow!("reading standard input: {e}"),
        })?
        .context("reading standard input")
        .map_err(|error| Failure { code: 3, error })
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
    let server_names = display_list(&servers);
    let mut compose = Compose {
        body: None,
        sender: if args.anonymous {
            None
        } else {
            sender_from_env()
        },
        keywords: keywords.clone(),
        extra,
        class: Some(AGENT.to_string()),
    };

    let mut config = ClientConfig::new(servers, AGENT);
    if args.lines {
        // Lines can be MAX_LINE long: keep the worst case to tens of megabytes.
        config.queue_limit = LINES_QUEUE_LIMIT;
    }
    // Connect while keys are looked up and the user types.
    let servers = config.servers.clone();
    let (client, events) = Client::start(config);
    let status = Arc::new(Mutex::new(Status::default()));
    tokio::spawn(watch(events, status.clone()));
    let secure = prepare(&args, &to, &servers).await?;

    if args.lines {
        send_lines(&client, &mut compose, &to, &secure).await?;
    } else {
        let body = match args.message {
            Some(mut text) => {
                if !text.ends_with('\n') {
                    text.push('\n');
                }
                text
            }
            None => read_whole_body(&to, &keywords).await?,
        };
        compose.body = Some(body);
        client
            .publish(secure.message(&compose, &to)?)
            .map_err(publish_error)?;
    }
    flush(&client, args.timeout, &server_names, &status).await?;
    let _ = tokio::time::timeout(Duration::from_secs(2), client.close(false)).await;
    Ok(())
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 1 } else { 0 });
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("gsend: cannot start: {e}");
            return ExitCode::from(3);
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
