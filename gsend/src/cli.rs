//! gsend's command line (clap), kept in the library so that gale-docs can generate
//! its man page and shell completions from it.

use clap::Parser;

pub const AFTER_HELP: &str = "\
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

Receipts and pings: -r asks each gsub that shows the message for a signed receipt
carrying its person's presence and device (encrypted to you for a private
message); they are printed on standard output as they come (received:
in.present bob@example.org (laptop)), until everyone named has answered or
--receipt-timeout. --ping bob sends bob's gsubs a receipt request without a body.

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
  4   sent, but no receipt came within --receipt-timeout (--require-receipt), or
      nobody answered a --ping
  64  usage error: an unknown option, a missing argument, or a value that does
      not parse (a location, -t, a keyword, --id, the server list)

Examples:
  echo 'lunch?' | gsend pub.food@example.org /lunch
  tail -F /var/log/syslog | gsend --lines log.syslog@example.org";

/// Send a Gale message.
#[derive(Parser, Debug)]
#[command(name = "gsend", version, after_help = AFTER_HELP)]
pub struct Args {
    /// Servers to try in order, as host[:port],host[:port]
    /// [default: $GALE_SERVER, else localhost:11512]
    #[arg(short = 's', long, value_name = "HOST[:PORT],...")]
    pub server: Option<String>,

    /// Send TEXT as the body instead of reading standard input
    #[arg(
        short = 'm',
        long = "message",
        value_name = "TEXT",
        conflicts_with = "lines"
    )]
    pub message: Option<String>,

    /// Add a text fragment (repeatable), e.g. -t message.subject=hello
    #[arg(short = 't', long = "text", value_name = "NAME=VALUE")]
    pub text: Vec<String>,

    /// Send each line of standard input as its own message as soon as it is read;
    /// at end of input wait for the server to accept them all, then exit
    #[arg(long)]
    pub lines: bool,

    /// Seconds to wait for the server to accept the message(s); 0 waits forever.
    /// With --lines, the wait at end of input [default: 30; without --timeout
    /// and --lines, gsend gives up after about 5 s if no server can be reached]
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,

    /// Quiet: no notes (a new key, sending in clear, connection trouble);
    /// warnings and errors are still printed
    #[arg(short = 'q', long)]
    pub quiet: bool,

    /// Anonymous: do not sign, and do not send your name (message.sender)
    #[arg(short = 'a', long)]
    pub anonymous: bool,

    /// Sign as this id [default: $GALE_ID, else $USER@$GALE_DOMAIN]
    #[arg(long, value_name = "LOCATION")]
    pub id: Option<String>,

    /// Seconds to wait for the keys of new correspondents to be found over Gale
    #[arg(long, value_name = "SECS", default_value_t = 3.0)]
    pub key_timeout: f64,

    /// Send in clear where no key was found for a location that is not public,
    /// and to private and public locations at once (both otherwise refused)
    #[arg(long)]
    pub allow_clear: bool,

    /// Refuse to send unless every location is private (encrypted)
    #[arg(long, conflicts_with = "allow_clear")]
    pub require_private: bool,

    /// Ask for receipts: each gsub that shows the message answers with its
    /// person's presence and device; gsend prints them as they come
    #[arg(short = 'r', long, conflicts_with = "lines")]
    pub receipt: bool,

    /// Like -r, and exit 4 if no receipt came within --receipt-timeout
    #[arg(long, conflicts_with = "lines")]
    pub require_receipt: bool,

    /// Ping the people named (a receipt request without a body): print each of
    /// their gsubs' presence; exit 4 if none answered
    #[arg(long, conflicts_with_all = ["lines", "message"])]
    pub ping: bool,

    /// Seconds to wait for receipts (less once everyone named has answered)
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub receipt_timeout: f64,

    /// Recipients (name@domain, or name with $GALE_DOMAIN), then /keywords
    #[arg(value_name = "LOCATION|/KEYWORD", required = true)]
    pub targets: Vec<String>,
}

impl Args {
    /// True when receipts are asked for (-r, --require-receipt, --ping).
    pub fn wants_receipts(&self) -> bool {
        self.receipt || self.require_receipt || self.ping
    }
}
