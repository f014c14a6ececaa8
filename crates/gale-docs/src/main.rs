//! `gale-docs OUTDIR`: writes the Gale programs' man pages and shell completions
//! under OUTDIR (see the library's documentation for the layout).

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(out), None) = (args.next(), args.next()) else {
        eprintln!(
            "usage: gale-docs OUTDIR\n\
             writes OUTDIR/man/man1/*.1 and OUTDIR/completions/{{bash,zsh,fish}}/*"
        );
        return ExitCode::from(64);
    };
    match gale_docs::generate(&PathBuf::from(out)) {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gale-docs: {e:#}");
            ExitCode::from(1)
        }
    }
}
