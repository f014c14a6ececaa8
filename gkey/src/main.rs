//! gkey: make, show, sign, export, import and trust Gale keys. A thin command line
//! over the `gale-keys` library; see docs/security.md.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use gale_keys::key::MAX_KEY_FILE;
use gale_keys::{Dir, KeyName, KeyStore, KeyTemplate, PublicKey, SecretKey, Source};
use gale_proto::Timestamp;
use gkey::cli::{Args, Command};

/// EX_USAGE (sysexits.h): a usage error, the same code in every Gale program.
const EXIT_USAGE: u8 = 64;

/// Writes a line to standard output, as `println!` would, through [`out`].
macro_rules! say {
    () => {
        out(b"\n")
    };
    ($($arg:tt)*) => {
        out(format!("{}\n", format_args!($($arg)*)).as_bytes())
    };
}

/// Writes to standard output. A reader that went away (`gkey gen a@x.org | true`)
/// is not an error: the work is done and only its report is lost, so gkey stops
/// there and exits 0. Any other failure to write is (exit 1).
fn out(bytes: &[u8]) {
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("gkey: error: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { 0 });
        }
    };
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("gkey: error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  because: {cause}");
            }
            // A name or location argument that does not parse is a usage error.
            let usage = e.is::<gale_keys::NameError>() || e.is::<gale_proto::LocationError>();
            ExitCode::from(if usage { EXIT_USAGE } else { 1 })
        }
    }
}

fn run(args: Args) -> Result<ExitCode> {
    let store = KeyStore::from_env()?;
    let now = now();
    match args.command {
        Command::Gen {
            name,
            owner,
            expires,
            member,
            public,
            redirect,
            force,
        } => gen(
            &store, now, &name, owner, expires, member, public, redirect, force,
        ),
        Command::Show { key } => show(&store, now, &key),
        Command::Sign { as_ } => sign(&store, as_),
        Command::Export {
            name,
            secret,
            force,
        } => export(&store, &name, secret, force),
        Command::Import { file } => import(&store, now, file),
        Command::Trust { key, system } => trust(&store, now, &key, system),
    }
}

fn now() -> Timestamp {
    Timestamp {
        secs: Timestamp::now().secs,
        nanos: 0,
    }
}

fn parse_name(s: &str) -> Result<KeyName> {
    Ok(KeyName::parse(s)?)
}

#[allow(clippy::too_many_arguments)]
fn gen(
    store: &KeyStore,
    now: Timestamp,
    name: &str,
    owner: Option<String>,
    expires: Option<u32>,
    mut members: Vec<String>,
    public: bool,
    redirect: Option<String>,
    force: bool,
) -> Result<ExitCode> {
    let name = parse_name(name)?;
    let path = store.secret_path(&name);
    if !force && path.exists() {
        // Say whether the existing file is a usable key: "exists" alone would
        // contradict a `gkey show` that cannot read it.
        if let Err(e) = store.secret(&name) {
            return Err(anyhow::Error::from(e).context(format!(
                "a secret key file for {name} already exists at {}, but it cannot be used; \
                 to replace it with a new key (and lose whatever it held for good) add --force",
                path.display()
            )));
        }
        bail!(
            "a secret key for {name} already exists at {}; to replace it (and lose the old one for good) add --force",
            path.display()
        );
    }
    // A key of this name known here that is not ours: most likely the user's key
    // from another machine, learned from the network.
    let ours = store.secret(&name).ok().flatten().map(|(k, _)| k.id());
    for (src, k) in store.find(&name)? {
        if let (Source::Public(_, p), false) = (&src, Some(k.id()) == ours) {
            eprintln!(
                "gkey: warning: a key for {name} is already known here (id {}, {}). If it is your key from \
                 another machine, copy that secret key here instead of making a new one (on the other machine: \
                 gkey export {name} --secret --force > {}.gpri; install it as {} with mode 0600): with two keys, \
                 your correspondents see a key change",
                k.id(),
                p.display(),
                name.file_stem(),
                path.display()
            );
            break;
        }
    }
    for m in &members {
        gale_proto::Location::parse(m).with_context(|| format!("--member {m:?}"))?;
    }
    if let Some(r) = &redirect {
        gale_proto::Location::parse(r).with_context(|| format!("--redirect {r:?}"))?;
    }
    if public {
        members.push(String::new());
    }
    let group = !members.is_empty() || redirect.is_some();
    let mut t = KeyTemplate::new(name.clone(), now);
    t.owner = owner;
    t.expires = expires.map(|d| Timestamp {
        secs: now.secs + i64::from(d) * 86_400,
        nanos: 0,
    });
    t.members = members;
    t.redirect = redirect;
    t.encryption = !group;
    let mut key = SecretKey::generate(t, &mut rand_core::OsRng);

    let parent = name.parent();
    let signer = match &parent {
        Some(p) => store.secret(p)?.map(|(k, _)| k),
        None => None,
    };
    if let Some(signer) = &signer {
        let mut public = key.public().clone();
        signer.sign_key(&mut public)?;
        key.merge_signatures(&public)?;
    }
    let path = store.write_secret(&key, force)?;
    store.note_seen(&name, key.id())?;

    say!("made key {name}");
    print_key(key.public());
    say!("  secret       {}", path.display());
    let stem = name.file_stem();
    // A domain right under a top-level domain (example.org under org) has, in
    // practice, nobody above it to sign it: users trust it directly.
    let anchor = match &parent {
        None => true,
        Some(p) => name.local().is_none() && p.is_top_level(),
    };
    match (&signer, &parent) {
        (Some(_), _) => {}
        (None, _) if anchor => {
            eprintln!(
                "gkey: note: {name} is a {} key: nobody signs it. Others trust it by installing it:\n  gkey export {name} > {stem}.gpub   then, on their side:   gkey trust {stem}.gpub",
                if parent.is_some() { "domain" } else { "top-level" }
            );
            eprintln!("  (you too: run `gkey trust {name}` so that the keys you sign with it show as verified)");
        }
        (None, None) => {}
        (None, Some(p)) => {
            eprintln!(
                "gkey: warning: {name} is UNSIGNED: you do not hold the secret key of {p}, so nobody can verify it yet.\n  To get it signed, send the public key to the owner of {p}:\n    gkey export {name} > {stem}.gpub\n  they run:\n    gkey sign < {stem}.gpub > {stem}.signed.gpub\n  and you install the result with:\n    gkey import {stem}.signed.gpub"
            );
            if name.local().is_none() {
                eprintln!("  Or, with no parent to sign it, users can trust {name} directly: gkey trust {stem}.gpub\n  (you too: run `gkey trust {name}` so the keys you sign with it show as verified)");
            }
        }
    }
    if group {
        say!("  (a group or redirect key has no encryption key of its own: messages to it are encrypted to its members)");
    }
    Ok(ExitCode::SUCCESS)
}

fn time(t: Timestamp) -> String {
    chrono::DateTime::from_timestamp(t.secs, 0)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| format!("{} seconds after 1970", t.secs))
}

fn print_key(k: &PublicKey) {
    say!("  id           {}", k.id());
    say!("  fingerprint  {}", k.fingerprint());
    if let Some(o) = &k.owner {
        say!("  owner        {o}");
    }
    say!("  created      {}", time(k.created));
    say!(
        "  expires      {}",
        k.expires.map_or("never".to_string(), time)
    );
    let algs = if k.encryption.is_some() {
        "ed25519 signing, x25519 encryption"
    } else {
        "ed25519 signing only"
    };
    say!("  keys         {algs}");
    if !k.members.is_empty() {
        let m: Vec<&str> = k
            .members
            .iter()
            .map(|m| if m.is_empty() { "*everyone*" } else { m })
            .collect();
        say!("  members      {}", m.join(", "));
    }
    if let Some(r) = &k.redirect {
        say!("  redirect     {r}");
    }
    for s in &k.signatures {
        say!("  signed by    {} ({})", s.signer, s.signer_id);
    }
    if k.signatures.is_empty() {
        say!("  signed by    nobody");
    }
}

fn read_input(path: Option<&Path>) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    let limit = MAX_KEY_FILE as u64 + 1;
    match path {
        None => {
            std::io::stdin()
                .take(limit)
                .read_to_end(&mut buf)
                .context("cannot read standard input")?;
        }
        Some(p) if p == Path::new("-") => return read_input(None),
        Some(p) => {
            std::fs::File::open(p)
                .and_then(|f| f.take(limit).read_to_end(&mut buf))
                .with_context(|| format!("cannot read {}", p.display()))?;
        }
    }
    Ok(buf)
}

/// A key from a file (public or secret), or the store's copies of a name.
fn load(store: &KeyStore, what: &str) -> Result<Vec<(String, PublicKey)>> {
    let path = Path::new(what);
    if path.is_file() {
        let buf = read_input(Some(path))?;
        let key = match PublicKey::decode(&buf) {
            Err(gale_keys::KeyError::IsSecretKey) => SecretKey::decode(&buf)?.public().clone(),
            r => r.with_context(|| format!("{what} is not a usable key file"))?,
        };
        return Ok(vec![(format!("file {what}"), key)]);
    }
    // Not a usage error (exit 1, not 64): this may well be a key file that is missing.
    let name = KeyName::parse(what)
        .map_err(|e| anyhow!("{what:?} is neither a key file nor a key name ({e})"))?;
    let mut out: Vec<(String, PublicKey)> = Vec::new();
    for (src, k) in store.find(&name)? {
        if out
            .iter()
            .any(|(_, o)| o.body() == k.body() && o.signatures == k.signatures)
        {
            continue;
        }
        let src = match src {
            Source::Secret(p) => format!("your secret key {}", p.display()),
            Source::Public(_, p) => p.display().to_string(),
            Source::Memory => "(held in memory)".to_string(),
        };
        out.push((src, k));
    }
    if out.is_empty() {
        bail!(
            "no key named {name} in {} or the system directory; import it with `gkey import FILE`, or make it with `gkey gen {name}`",
            store.user_dir().display()
        );
    }
    Ok(out)
}

fn show(store: &KeyStore, now: Timestamp, what: &str) -> Result<ExitCode> {
    let keys = load(store, what)?;
    let mut ids: Vec<_> = keys.iter().map(|(_, k)| k.id()).collect();
    ids.dedup();
    let mut all_verified = true;
    for (src, k) in &keys {
        say!("key {}", k.name);
        say!("  from         {src}");
        print_key(k);
        let chain = store.verify_chain(k, now);
        let links: Vec<String> = chain
            .links
            .iter()
            .map(|l| format!("{} ({})", l.name, l.id()))
            .collect();
        say!("  chain        {}", links.join(" <- "));
        say!("  trust        {}", chain.trust);
        all_verified &= chain.trust.is_verified();
        say!();
    }
    if ids.len() > 1 {
        eprintln!("gkey: warning: there are {} different keys named {}; compare their fingerprints with the owner", ids.len(), keys[0].1.name);
    }
    Ok(if all_verified {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

fn sign(store: &KeyStore, as_: Option<String>) -> Result<ExitCode> {
    if std::io::stdin().is_terminal() || std::io::stdout().is_terminal() {
        bail!("gkey sign is a filter and will not read a key from, or write one to, a terminal; run: gkey sign < key.gpub > key.signed.gpub");
    }
    let buf = read_input(None)?;
    let mut key = PublicKey::decode(&buf).context("standard input is not a public key")?;
    let Some(parent) = key.name.parent() else {
        bail!(
            "{} is a top-level key: nobody signs it; users install it with `gkey trust`",
            key.name
        );
    };
    if let Some(a) = as_ {
        let a = parse_name(&a)?;
        if a != parent {
            bail!("{a} cannot sign {}: only its parent {parent} can (a signature by any other key would not make it verifiable)", key.name);
        }
    }
    let Some((signer, path)) = store.secret(&parent)? else {
        bail!(
            "you hold no secret key for {parent} (looked in {}); only the owner of {parent} can sign {}",
            store.secret_path(&parent).display(),
            key.name
        );
    };
    signer.sign_key(&mut key)?;
    out(&key.encode());
    eprintln!(
        "gkey: signed {} (id {}, owner {}) as {parent} (id {}, {})\n  fingerprint {}\n  check this fingerprint with the key's owner before handing the signed key back",
        key.name,
        key.id(),
        key.owner.as_deref().unwrap_or("not given"),
        signer.id(),
        path.display(),
        key.fingerprint()
    );
    Ok(ExitCode::SUCCESS)
}

fn export(store: &KeyStore, name: &str, secret: bool, force: bool) -> Result<ExitCode> {
    let name = parse_name(name)?;
    if std::io::stdout().is_terminal() {
        bail!(
            "key files are binary; redirect the output: gkey export {name} > {}.gpub",
            name.file_stem()
        );
    }
    let bytes = if secret {
        if !force {
            bail!("--secret writes your SECRET key, which lets anyone read your messages and sign as you; add --force if that is what you mean");
        }
        let Some((k, _)) = store.secret(&name)? else {
            bail!("you hold no secret key for {name}");
        };
        k.encode().to_vec()
    } else {
        let keys = load(store, name.as_str())?;
        keys[0].1.encode()
    };
    out(&bytes);
    Ok(ExitCode::SUCCESS)
}

fn import(store: &KeyStore, now: Timestamp, file: Option<PathBuf>) -> Result<ExitCode> {
    let buf = read_input(file.as_deref())?;
    let key = match PublicKey::decode(&buf) {
        Err(gale_keys::KeyError::IsSecretKey) => bail!(
            "this is a secret key; gkey imports only public keys. To install a secret key, copy it into {} with mode 0600",
            store.private_dir().display()
        ),
        r => r.context("not a public key file")?,
    };
    let done = store.import(&key, Dir::Local)?;
    if let Some(changed) = &done.changed {
        eprintln!("gkey: {changed}");
    }
    if done.into_secret {
        say!(
            "added {} signature(s) to your own key {} in {}",
            done.new_signatures,
            key.name,
            done.path.display()
        );
    } else {
        say!(
            "imported {} ({}) into {}",
            key.name,
            key.id(),
            done.path.display()
        );
    }
    say!("  trust        {}", store.verify(&key, now));
    Ok(ExitCode::SUCCESS)
}

fn trust(store: &KeyStore, now: Timestamp, what: &str, system: bool) -> Result<ExitCode> {
    let keys = load(store, what)?;
    if keys.len() > 1 && keys.iter().any(|(_, k)| k.id() != keys[0].1.id()) {
        bail!("there are several different keys named {what}; trust one by giving its file");
    }
    let key = &keys[0].1;
    if key.is_expired(now) {
        bail!(
            "{} expired on {}; an expired key cannot be an anchor",
            key.name,
            time(key.expires.unwrap_or(now))
        );
    }
    let path = store.write_public(Dir::Trusted, key, system)?;
    if let Some(changed) = store.note_seen(&key.name, key.id())? {
        eprintln!("gkey: {changed}");
    }
    say!(
        "TRUSTED: {} is now a trust anchor{}.",
        key.name,
        if system {
            " for every user of this system"
        } else {
            ""
        }
    );
    say!("  id           {}", key.id());
    say!("  fingerprint  {}", key.fingerprint());
    say!("  file         {}", path.display());
    say!(
        "Every key that {} signs, and every key below those, now shows as verified.",
        key.name
    );
    say!("Make sure this fingerprint is right (ask the key's owner over another channel);");
    say!("to undo, delete {}", path.display());
    Ok(ExitCode::SUCCESS)
}
