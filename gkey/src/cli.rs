//! gkey's command line (clap), kept in the library so that gale-docs can generate
//! its man page and shell completions from it.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub const EXIT_HELP: &str = "\
Keys live under GALE_DIR (default ~/.gale) and GALE_SYS_DIR (default /etc/gale):
auth/private (your secret keys, 0600), auth/trusted (anchors), auth/local and
auth/cache (other keys, trusted only through a chain of signatures).

Exit status:
  0   success (also when the reader of standard output went away: gkey gen | head)
  1   error (the message says what to do)
  3   `gkey show` found the key but it is not verified
  64  usage error: an unknown option, a missing argument, or a value that does
      not parse (a key name, --member, --redirect)";

/// Make, show, sign, export, import and trust Gale keys.
#[derive(Parser, Debug)]
#[command(name = "gkey", version, after_help = EXIT_HELP)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Make a new key pair and save the secret key (0600) under auth/private.
    ///
    /// The key is signed with its parent's secret key if you hold it (egnor@ofb.net's
    /// parent is ofb.net); otherwise it is saved unsigned and gkey says how to get it
    /// signed.
    Gen {
        /// Key name: a location (you@example.org), a wildcard (pub.*@example.org) or a
        /// domain (example.org).
        name: String,
        /// Owner description shown with the key, e.g. "Dan Egnor".
        #[arg(long)]
        owner: Option<String>,
        /// Expire the key this many days from now.
        #[arg(long, value_name = "DAYS")]
        expires: Option<u32>,
        /// Make a group key with this member (repeatable); messages to the group are
        /// encrypted to its members.
        #[arg(long, value_name = "LOC")]
        member: Vec<String>,
        /// Make the location public: the world is a member, messages go in clear.
        #[arg(long)]
        public: bool,
        /// Forward messages for this key's locations to another location.
        #[arg(long, value_name = "LOC")]
        redirect: Option<String>,
        /// Replace an existing secret key of this name (the old one is lost for good).
        #[arg(long)]
        force: bool,
    },
    /// Show a key: id, fingerprint, owner, times, members, signatures and chain of trust.
    Show {
        /// A key name, or a .gpub/.gpri file.
        key: String,
    },
    /// Sign a public key read from stdin as its parent; write it to stdout.
    ///
    /// Use as a filter: gkey sign < egnor.gpub > egnor.signed.gpub
    Sign {
        /// Sign as this key, which must be the key's parent (default: the parent).
        #[arg(long = "as", value_name = "PARENT")]
        as_: Option<String>,
    },
    /// Write a public key (with its signatures) to stdout.
    Export {
        name: String,
        /// Write the SECRET key instead; needs --force as well.
        #[arg(long)]
        secret: bool,
        /// Confirms --secret.
        #[arg(long)]
        force: bool,
    },
    /// Add a public key to auth/local (or, if it is your own key signed by its
    /// parent, add the signatures to your secret key).
    Import {
        /// A .gpub file; - or nothing for stdin.
        file: Option<PathBuf>,
    },
    /// Install a key as a trust anchor: it and every key it signs become verified.
    Trust {
        /// A key name already in the store, or a .gpub file.
        key: String,
        /// Install it for every user (in GALE_SYS_DIR) instead of only for you.
        #[arg(long)]
        system: bool,
    },
}
