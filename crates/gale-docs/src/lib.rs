//! gale-docs: the man pages and shell completions of every Gale program, generated
//! from the programs' own clap definitions (each program's `src/cli.rs`), so that
//! they never disagree with `--help`.
//!
//! Module map: this file only. [`generate`] writes, under a directory:
//! - `man/man1/PROGRAM.1` for each program, and `man/man1/gkey-SUBCOMMAND.1` for
//!   each of gkey's subcommands;
//! - `completions/bash/PROGRAM`, `completions/zsh/_PROGRAM`,
//!   `completions/fish/PROGRAM.fish`: the file names the shells look for in their
//!   system directories (see README.md, "Installing the man pages and completions").
//!
//! `cargo run -p gale-docs -- OUTDIR` runs it; CI runs it (`.ci/run`) and the
//! Debian package ships what it writes.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;

/// The programs, each with its command line.
pub fn programs() -> Vec<clap::Command> {
    vec![
        gale_daemon::cli::Args::command(),
        gsend::cli::Args::command(),
        gsub::cli::Args::command(),
        gkey::cli::Args::command(),
        gdomain::cli::Args::command(),
        gwho::cli::Args::command(),
    ]
}

/// The shells completions are written for, and the file name each looks for.
const SHELLS: [(Shell, &str); 3] = [
    (Shell::Bash, "bash"),
    (Shell::Zsh, "zsh"),
    (Shell::Fish, "fish"),
];

/// Writes every man page and completion file under `out`; returns the files
/// written.
pub fn generate(out: &Path) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let man = out.join("man/man1");
    fs::create_dir_all(&man).with_context(|| format!("cannot create {}", man.display()))?;
    for cmd in programs() {
        let name = cmd.get_name().to_string();
        let mut cmd = cmd.bin_name(&name);
        cmd.build();
        written.push(man_page(&man, &name, cmd.clone())?);
        // One page per subcommand too (gkey gen, ...), named as git names them.
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            let page = format!("{name}-{}", sub.get_name());
            let sub = sub
                .clone()
                .name(page.clone())
                .bin_name(format!("{name} {}", sub.get_name()));
            written.push(man_page(&man, &page, sub)?);
        }
        for (shell, dir) in SHELLS {
            let dir = out.join("completions").join(dir);
            fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
            let made = clap_complete::generate_to(shell, &mut cmd, &name, &dir)
                .with_context(|| format!("cannot write {shell} completions for {name}"))?;
            // bash-completion looks up a command's file by the command's name alone.
            let path = if shell == Shell::Bash {
                let plain = dir.join(&name);
                fs::rename(&made, &plain)
                    .with_context(|| format!("cannot rename {}", made.display()))?;
                plain
            } else {
                made
            };
            written.push(path);
        }
    }
    Ok(written)
}

fn man_page(dir: &Path, name: &str, cmd: clap::Command) -> Result<PathBuf> {
    let path = dir.join(format!("{name}.1"));
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd)
        .section("1")
        .manual("Gale")
        .source(format!("Gale {}", env!("CARGO_PKG_VERSION")))
        .render(&mut page)
        .with_context(|| format!("cannot render the man page of {name}"))?;
    fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}
