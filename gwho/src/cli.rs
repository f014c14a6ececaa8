//! gwho's command line (clap), kept in the library so that gale-docs can generate
//! its man page and shell completions from it.

use clap::Parser;
use gale_security::people::who;

pub const AFTER_HELP: &str = "\
Each LOCATION is a person (bob, bob@example.org) or a whole domain (@example.org);
with none, your own domain ($GALE_DOMAIN). gwho asks them all at once, signed with
your key, and prints one line per gsub that answers (a person with a laptop and a
desktop answers twice, told apart by device):

  in.present bob@example.org (laptop) idle 5m
  out.to.lunch bob@example.org (desktop)
  carol@example.org no answer

It stops as soon as everyone named has answered (and their other devices had
300 ms), after 700 ms of quiet for a domain, or at --timeout. Answers are signed;
one that does not verify is marked [*unverified*], a forgery [*FORGED*] (and not
counted). People who run gsub -a (stealth) never answer; gsub --presence-to
verified answers only those whose keys it can verify.

--watch then keeps printing presence changes (as znol), one line each:
  * 12:01 out.to.lunch bob@example.org (laptop)

--json prints one object per line: {\"type\": \"presence\", \"who\", \"device\",
\"presence\", \"idle\" (seconds or null), \"verify\", \"time\"} for an answer or a
change (\"change\": true), {\"type\": \"no_answer\", \"who\"} for the absent.

Exit status: 0 someone answered (or --watch ended by a signal), 1 nobody did,
2 no server could be reached or your key cannot be used, 64 usage error.";

/// Ask who is around on Gale.
#[derive(Parser, Debug)]
#[command(name = "gwho", version, after_help = AFTER_HELP)]
pub struct Args {
    /// Servers to try in order, as host[:port],host[:port]
    /// [default: $GALE_SERVER, else localhost:11512]
    #[arg(short = 's', long, value_name = "HOST[:PORT],...")]
    pub server: Option<String>,

    /// Keep printing presence changes after the answers
    #[arg(short = 'w', long)]
    pub watch: bool,

    /// One JSON object per line
    #[arg(long)]
    pub json: bool,

    /// Seconds to wait for answers, at most
    #[arg(long, value_name = "SECS", default_value_t = who::DEFAULT_TIMEOUT.as_secs_f64())]
    pub timeout: f64,

    /// Who you are: the key that signs the asks [default: $GALE_ID, else
    /// $USER@$GALE_DOMAIN]
    #[arg(long, value_name = "LOCATION")]
    pub id: Option<String>,

    /// People (bob@example.org) or whole domains (@example.org)
    #[arg(value_name = "LOCATION")]
    pub locations: Vec<String>,
}
