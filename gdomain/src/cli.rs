//! gdomain's command line (clap), kept in the library so that gale-docs can generate
//! its man page and shell completions from it.

use clap::Parser;

pub const AFTER_HELP: &str = "\
gdomain serves the keys in its key store (GALE_DIR, default ~/.gale, and
GALE_SYS_DIR): put users' signed public keys there with `gkey import`. It needs the
domain's secret key (`gkey gen DOMAIN`) to sign its answers, including the signed
\"no such key\" answers that let clients stop waiting.

It reconnects by itself when the server goes away or is busy, as gsub does; a
server that refuses it for good (an ERROR that asking again cannot change, such as
a protocol version it does not speak) ends it with status 1 and the reason. The libraries'
warnings go to standard error (\"gdomain: warning: ...\"); RUST_LOG=debug shows more.

Exit status:
  0   stopped by SIGINT or SIGTERM
  1   error: no secret key for the domain, the key store cannot be read, or
      a server refused gdomain for good
  64  usage error: an unknown option, no domain given, or a value that does not
      parse (the domain, the server list)";

/// Answer key queries for a Gale domain.
#[derive(Parser, Debug)]
#[command(name = "gdomain", version, about, after_help = AFTER_HELP)]
pub struct Args {
    /// The domain to serve [default: $GALE_DOMAIN]
    pub domain: Option<String>,
    /// Servers to try in order, host[:port],... [default: $GALE_SERVER, else localhost:11512]
    #[arg(short = 's', long, value_name = "HOST[:PORT],...")]
    pub server: Option<String>,
    /// Say nothing about each answer
    #[arg(short = 'q', long)]
    pub quiet: bool,
}
