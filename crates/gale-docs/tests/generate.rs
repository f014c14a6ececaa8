//! The generated man pages and completions cover every program and option.

use std::fs;

#[test]
fn every_program_gets_a_man_page_and_completions_naming_its_options() {
    let dir = tempfile::tempdir().unwrap();
    let files = gale_docs::generate(dir.path()).unwrap();
    for name in ["galed", "gsend", "gsub", "gkey", "gdomain", "gwho"] {
        let page = fs::read_to_string(dir.path().join(format!("man/man1/{name}.1"))).unwrap();
        assert!(page.starts_with(".ie \\n(.g .ds Aq"), "roff: {name}");
        assert!(page.contains(&format!(".TH {name} 1")), "{name}: {page}");
        let bash = fs::read_to_string(dir.path().join(format!("completions/bash/{name}"))).unwrap();
        assert!(
            bash.contains(&format!("complete -F _{name}")),
            "{name}: {bash}"
        );
        assert!(dir
            .path()
            .join(format!("completions/zsh/_{name}"))
            .is_file());
        assert!(dir
            .path()
            .join(format!("completions/fish/{name}.fish"))
            .is_file());
    }
    // Options and the exit-status text from --help reach the pages.
    let gsend = fs::read_to_string(dir.path().join("man/man1/gsend.1")).unwrap();
    assert!(gsend.contains("\\-\\-lines"), "{gsend}");
    assert!(gsend.contains("Exit status"), "{gsend}");
    let galed = fs::read_to_string(dir.path().join("man/man1/galed.1")).unwrap();
    assert!(galed.contains("\\-\\-link"), "{galed}");
    let fish = fs::read_to_string(dir.path().join("completions/fish/gsub.fish")).unwrap();
    assert!(fish.contains("-l presence"), "{fish}");
    // gkey's subcommands have pages of their own.
    for sub in ["gen", "show", "sign", "export", "import", "trust"] {
        let page = fs::read_to_string(dir.path().join(format!("man/man1/gkey-{sub}.1"))).unwrap();
        assert!(page.contains(&format!(".TH gkey-{sub} 1")), "{page}");
    }
    // Six programs, each a man page and three completions; six gkey subcommands.
    assert_eq!(files.len(), 6 * 4 + 6);
}
