//! gsub's command line (clap), kept in the library so that gale-docs can generate
//! its man page and shell completions from it.

use std::path::PathBuf;

use clap::Parser;
use gale_security::people::answer::{Visibility, DEFAULT_AWAY_PERIOD};

pub const AFTER_HELP: &str = "\
Subscriptions are read in order and the latest matching entry wins: a '-' before a
location excludes it, so 'gsub pub@example.org - pub.spam@example.org' takes all of
pub but pub.spam. Locations without @domain get $GALE_DOMAIN. With no locations,
gsub subscribes to $GALE_SUBSCRIBE (white-space separated).

gsub stays in the foreground and does not give up: when the server goes away it
reports it on standard error and reconnects. Status lines on standard error start
with \"gsub: \"; message losses are always reported, even with -q. The libraries'
warnings are printed too (\"gsub: warning: ...\"); RUST_LOG=debug shows more.

Output: by default for a person (wrapped to the terminal or $GALE_COLUMNS, times in
$GALE_TIME_FORMAT, colour only on a terminal and not with $NO_COLOR). --json prints
one object per line; fragment data values are lower-case hex, times RFC 3339.
-f PROGRAM runs PROGRAM instead of printing (a path or a name on $PATH, checked
at startup; run directly, not through a shell: write a script for arguments) once
per message, one at a time, with the body on standard input and GALE_ID, GALE_TO,
GALE_FROM, GALE_VERIFY, GALE_KIND, GALE_ABOUT, GALE_SENDER, GALE_KEYWORDS, GALE_TIME and
GALE_TEXT_<NAME>, GALE_TIME_<NAME>, GALE_NUMBER_<NAME>, GALE_DATA_<NAME> for each
fragment in its environment.

Security: each message shows how far its sender is known: verified (signed by a
key whose chain reaches one of your trust anchors), unverified (signed, but the key
is unknown or cannot be traced to an anchor), anonymous (unsigned) or FORGED (the
signature does not match, or it claims someone whose verified key you hold but is
signed by another key: never trust the claimed sender). A new key for a name you
knew is a loud warning, once (--json: \"key_changed\": true). Messages encrypted to
you are decrypted with your keys in GALE_DIR; others' private messages show as one
line, \"(not for you)\". Keys of unknown signers are asked for over Gale
(--key-timeout). gsub makes your key on first use and answers other people's
requests for it on _gale.query.<your id>, unless -a.

People: with a key, and without -a, gsub answers pings and who-is-around asks
(gwho) with its presence, sends a signed receipt for each message it shows that
asks for one, and with --away an away reply to private messages (once per sender
per --away-period). Its presence changes while it runs: gsub --set-presence STATE
(or --set-away TEXT) tells every running gsub of yours (or the one on --device)
through its socket in $GALE_DIR/run. Presence notices, receipts and pings show as
one line each (* 12:01 in.present bob@example.org (laptop)); --json has \"kind\"
(message, presence, receipt, ping, away), -f programs GALE_KIND.

A server that refuses gsub for good (an ERROR that asking again cannot change,
such as too many subscriptions or a protocol version it does not speak) ends it
with status 1 and the server's reason; one that is busy or shutting down is
retried, with back-off, like a server that is down.

Exit status:
  0   normal end (SIGINT, SIGTERM, or the reader of standard output went away)
  1   error: -f PROGRAM cannot be run, standard output failed, or a server
      refused this gsub for good
  64  usage error: an unknown option, a missing argument, a value that does not
      parse (a location, --id, the server list), or more than 65,536
      subscriptions (the most a server takes on one connection)";

/// Receive Gale messages.
#[derive(Parser, Debug)]
#[command(name = "gsub", version, after_help = AFTER_HELP)]
pub struct Args {
    /// Servers to try in order, as host[:port],host[:port]
    /// [default: $GALE_SERVER, else localhost:11512]
    #[arg(short = 's', long, value_name = "HOST[:PORT],...")]
    pub server: Option<String>,

    /// Print one JSON object per message, one per line
    #[arg(long, conflicts_with = "program")]
    pub json: bool,

    /// Run PROGRAM for each message instead of printing it
    #[arg(short = 'f', value_name = "PROGRAM")]
    pub program: Option<PathBuf>,

    /// Do not report connecting and reconnecting (losses are still reported)
    #[arg(short = 'q', long)]
    pub quiet: bool,

    /// Announce presence STATE (e.g. in.present, out.to.lunch) on
    /// _gale.notice.<id>, and leave a will saying out.disconnected for the server
    /// to publish if this gsub dies without saying goodbye
    #[arg(short = 'p', long, value_name = "STATE")]
    pub presence: Option<String>,

    /// Who this gsub is: your key, and presence [default: $GALE_ID, else
    /// $USER@$GALE_DOMAIN]
    #[arg(long, value_name = "LOCATION")]
    pub id: Option<String>,

    /// Stealth: do not answer requests for your key (others then cannot find it
    /// over Gale)
    #[arg(short = 'a', long)]
    pub stealth: bool,

    /// Change the presence of your running gsubs (all of them, or the one on
    /// --device) to STATE, announced at once, and exit
    #[arg(long, value_name = "STATE", conflicts_with_all = ["presence", "away", "away_file"])]
    pub set_presence: Option<String>,

    /// Set (or with '' end) the away message of your running gsubs, and exit
    #[arg(long, value_name = "TEXT", conflicts_with_all = ["presence", "away", "away_file"])]
    pub set_away: Option<String>,

    /// Answer private messages with TEXT, signed and encrypted, once per sender
    /// per --away-period (never an automatic message, never yourself)
    #[arg(long, value_name = "TEXT", conflicts_with = "away_file")]
    pub away: Option<String>,

    /// Like --away, with the text read from FILE, which may be in zaway's
    /// ~/.away format: '>NAME' starts a section for the sender NAME, '>*' one
    /// for everyone, '>%' one for senders no named section matched
    #[arg(long, value_name = "FILE")]
    pub away_file: Option<PathBuf>,

    /// Seconds between two away replies to the same sender
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_AWAY_PERIOD.as_secs())]
    pub away_period: u64,

    /// Who sees your presence, receipts and away replies: anyone (presence
    /// notices in clear), or verified (only askers whose keys verify; no notices,
    /// every answer encrypted)
    #[arg(long, value_name = "WHO", default_value = "anyone")]
    pub presence_to: Visibility,

    /// Seconds to wait for the key of an unknown signer before showing its message
    /// as unverified (other messages are not held up); 0 does not look keys up
    #[arg(long, value_name = "SECS", default_value_t = 3.0)]
    pub key_timeout: f64,

    /// Keep these LOCATIONs in a durable inbox named NAME on the server: what
    /// arrives while this gsub is away waits there, and is shown (once, in
    /// order) when it comes back. The inbox is bound to your key.
    #[arg(long, value_name = "NAME", conflicts_with = "no_inbox")]
    pub durable: Option<String>,

    /// Do not open your own inbox (by default gsub opens one keeping your own
    /// location, so private messages sent while you are away wait for you)
    #[arg(long)]
    pub no_inbox: bool,

    /// Name of this device: in the inbox (each device gets every message), and
    /// in presence, receipts and gwho, telling your gsubs apart
    /// [default: $GALE_DEVICE, else the host name]
    #[arg(long, value_name = "NAME")]
    pub device: Option<String>,

    /// Print what the inbox holds, then exit (for cron jobs and scripts): no
    /// live messages. Exit status 1 if the inbox cannot be opened.
    #[arg(long, conflicts_with = "no_inbox")]
    pub drain: bool,

    /// Locations to subscribe to; '-' excludes the location after it
    #[arg(value_name = "LOCATION")]
    pub locations: Vec<String>,
}
