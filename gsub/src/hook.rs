//! Running a program per message (gsub `-f`, Gale's gsubrc): the body on standard
//! input, everything else in `GALE_*` environment variables.
//!
//! Variables: `GALE_ID`, `GALE_TO` (space-separated), `GALE_FROM` (the signer when
//! `GALE_VERIFY` is `verified` or `unverified`, else empty: as `from` in JSON),
//! `GALE_VERIFY` (`verified`, `unverified`, `anonymous`, `forged`), `GALE_KIND`
//! (`message`, `presence`, `receipt`, `ping`, `away`: as `kind` in JSON),
//! `GALE_ABOUT` (whom a presence notice, receipt or ping is about),
//! `GALE_CLAIMED_FROM` (who a forged message claims to be from), `GALE_ENCRYPTED`
//! (`1` or `0`), `GALE_UNREADABLE` (empty, or why an encrypted message could not
//! be opened), `GALE_SENDER` (the unverified display name), `GALE_KEYWORDS` (space-separated), `GALE_TIME`, and one
//! per fragment: `GALE_TEXT_<NAME>`, `GALE_TIME_<NAME>`, `GALE_NUMBER_<NAME>`,
//! `GALE_DATA_<NAME>` (always `(data)`). `<NAME>` is the fragment name upper-cased
//! with every other character turned into `_`; fragments inside lists are named
//! `list.child`; a repeated name gets `_2`, `_3`... Times are RFC 3339 in UTC.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use gale_proto::fragment::names;
use gale_proto::{Fragments, Value};
use thiserror::Error;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::format::{message_time, rfc3339};
use gale_client::Delivery;

const PER_FRAGMENT: [&str; 4] = ["GALE_TEXT_", "GALE_TIME_", "GALE_NUMBER_", "GALE_DATA_"];

#[derive(Debug, Error)]
pub enum HookError {
    #[error("cannot run {program}: {why}")]
    NotRunnable { program: PathBuf, why: &'static str },
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("waiting for {program}: {source}")]
    Wait {
        program: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// `GALE_<KIND>_` + the fragment name upper-cased, other characters as `_`.
pub fn env_name(prefix: &str, fragment: &str) -> String {
    let mut s = String::from(prefix);
    s.extend(fragment.chars().map(|c| {
        if c.is_ascii_alphanumeric() {
            c.to_ascii_uppercase()
        } else {
            '_'
        }
    }));
    s
}

// Environment values cannot hold NUL bytes.
fn clean(v: &str) -> String {
    v.replace('\0', "")
}

fn add_fragments(
    f: &Fragments,
    path: &str,
    seen: &mut HashMap<String, u32>,
    out: &mut Vec<(String, String)>,
) {
    for frag in f.iter() {
        let name = if path.is_empty() {
            frag.name.clone()
        } else {
            format!("{path}.{}", frag.name)
        };
        let (prefix, value) = match &frag.value {
            Value::Text(t) => ("GALE_TEXT_", clean(t)),
            Value::Time(t) => ("GALE_TIME_", rfc3339(*t).unwrap_or_default()),
            Value::Number(n) => ("GALE_NUMBER_", n.to_string()),
            Value::Data(_) | Value::Unknown { .. } => ("GALE_DATA_", "(data)".to_string()),
            Value::List(l) => {
                add_fragments(l, &name, seen, out);
                continue;
            }
        };
        let mut var = env_name(prefix, &name);
        let n = seen.entry(var.clone()).or_insert(0);
        *n += 1;
        if *n > 1 {
            var = format!("{var}_{n}");
        }
        out.push((var, value));
    }
}

/// The environment for a hook run on `d`.
pub fn hook_env(d: &Delivery) -> Vec<(String, String)> {
    let f = d.fragments();
    let to: Vec<&str> = d.message.to.iter().map(|l| l.as_str()).collect();
    let keywords: Vec<&str> = f
        .map(|f| f.texts(names::MESSAGE_KEYWORD).collect())
        .unwrap_or_default();
    let mut env = vec![
        ("GALE_ID".to_string(), d.message.id.to_string()),
        ("GALE_TO".to_string(), to.join(" ")),
        (
            "GALE_FROM".to_string(),
            d.verify.from().map(|n| n.to_string()).unwrap_or_default(),
        ),
        ("GALE_VERIFY".to_string(), d.verify.as_str().to_string()),
        (
            "GALE_KIND".to_string(),
            gale_security::people::kind(&d.message.to, f).to_string(),
        ),
        (
            "GALE_ABOUT".to_string(),
            clean(&crate::format::about(d).unwrap_or_default()),
        ),
        (
            "GALE_CLAIMED_FROM".to_string(),
            d.verify
                .claimed_from()
                .map(|n| n.to_string())
                .unwrap_or_default(),
        ),
        (
            "GALE_ENCRYPTED".to_string(),
            if d.encrypted { "1" } else { "0" }.to_string(),
        ),
        (
            "GALE_UNREADABLE".to_string(),
            d.unreadable
                .as_ref()
                .map(|u| u.as_str().to_string())
                .unwrap_or_default(),
        ),
        (
            "GALE_INBOX_SEQ".to_string(),
            d.inbox_seq.map(|s| s.to_string()).unwrap_or_default(),
        ),
        (
            "GALE_SENDER".to_string(),
            clean(f.and_then(|f| f.text(names::MESSAGE_SENDER)).unwrap_or("")),
        ),
        ("GALE_KEYWORDS".to_string(), clean(&keywords.join(" "))),
        (
            "GALE_TIME".to_string(),
            rfc3339(message_time(d)).unwrap_or_default(),
        ),
    ];
    if let Some(f) = f {
        add_fragments(f, "", &mut HashMap::new(), &mut env);
    }
    env
}

/// The text a hook reads on standard input: the body, or nothing.
pub fn hook_stdin(d: &Delivery) -> String {
    d.fragments()
        .and_then(|f| f.text(names::MESSAGE_BODY))
        .unwrap_or("")
        .to_string()
}

/// Finds `program` as it will be run: a path (with a `/`) as it is, a bare name on
/// `PATH`; and checks that it is an executable file. gsub does this at startup,
/// so that a mistyped program fails at once instead of losing every message.
pub fn find_program(program: &Path) -> Result<PathBuf, HookError> {
    which::which(program).map_err(|_| {
        let why = if program.components().count() == 1 && !program.is_absolute() {
            "not found on PATH (or not executable there)"
        } else if !program.exists() {
            "no such file"
        } else if program.is_dir() {
            "it is a directory"
        } else {
            "it is not executable (chmod +x it)"
        };
        HookError::NotRunnable {
            program: program.to_path_buf(),
            why,
        }
    })
}

/// Runs `program` (a path, run directly, not through a shell) for `d` and waits for
/// it to exit. Per-fragment variables inherited from our own environment are
/// removed, so a hook sees only this message's.
pub async fn run_hook(program: &Path, d: &Delivery) -> Result<ExitStatus, HookError> {
    let mut cmd = Command::new(program);
    for (k, _) in std::env::vars_os() {
        if let Some(k) = k.to_str() {
            if PER_FRAGMENT.iter().any(|p| k.starts_with(p)) {
                cmd.env_remove(k);
            }
        }
    }
    cmd.envs(hook_env(d))
        .stdin(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|source| HookError::Spawn {
        program: program.to_path_buf(),
        source,
    })?;
    if let Some(mut stdin) = child.stdin.take() {
        let body = hook_stdin(d);
        // A hook need not read its input: write alongside waiting, ignore EPIPE.
        tokio::spawn(async move {
            let _ = stdin.write_all(body.as_bytes()).await;
        });
    }
    child.wait().await.map_err(|source| HookError::Wait {
        program: program.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use gale_proto::{Location, Message, MessageId, Payload, Timestamp};

    fn delivery() -> Delivery {
        let mut f = Fragments::new();
        f.push_text("message.body", "hi\n");
        f.push_text("message.keyword", "a");
        f.push_text("message.keyword", "b");
        f.push_text("x-y.z", "v\0w");
        f.push("id.time", Value::Time(Timestamp { secs: 0, nanos: 0 }));
        f.push("n", Value::Number(3));
        f.push("d", Value::Data(bytes::Bytes::from_static(&[1])));
        let mut inner = Fragments::new();
        inner.push_text("c", "deep");
        f.push("l", Value::List(inner));
        Delivery::open(Message {
            id: MessageId([0xab; 16]),
            hops: 0,
            to: vec![
                Location::parse("a@x.org").unwrap(),
                Location::parse("b@x.org").unwrap(),
            ],
            payload: Payload::Plain(f).encode().unwrap(),
        })
        .unwrap()
    }

    #[test]
    fn names() {
        assert_eq!(
            env_name("GALE_TEXT_", "message.body"),
            "GALE_TEXT_MESSAGE_BODY"
        );
        assert_eq!(env_name("GALE_TEXT_", "a-b/c9é"), "GALE_TEXT_A_B_C9_");
    }

    #[test]
    fn environment() {
        let env: HashMap<String, String> = hook_env(&delivery()).into_iter().collect();
        let get = |k: &str| env.get(k).map(String::as_str);
        assert_eq!(get("GALE_ID"), Some("abababababababababababababababab"));
        assert_eq!(get("GALE_TO"), Some("a@x.org b@x.org"));
        assert_eq!(get("GALE_FROM"), Some(""));
        assert_eq!(get("GALE_VERIFY"), Some("anonymous"));
        assert_eq!(get("GALE_KIND"), Some("message"));
        assert_eq!(get("GALE_ABOUT"), Some(""));
        assert_eq!(get("GALE_KEYWORDS"), Some("a b"));
        assert_eq!(get("GALE_TIME"), Some("1970-01-01T00:00:00Z"));
        assert_eq!(get("GALE_TEXT_MESSAGE_BODY"), Some("hi\n"));
        assert_eq!(get("GALE_TEXT_MESSAGE_KEYWORD"), Some("a"));
        assert_eq!(get("GALE_TEXT_MESSAGE_KEYWORD_2"), Some("b"));
        assert_eq!(get("GALE_TEXT_X_Y_Z"), Some("vw"));
        assert_eq!(get("GALE_TIME_ID_TIME"), Some("1970-01-01T00:00:00Z"));
        assert_eq!(get("GALE_NUMBER_N"), Some("3"));
        assert_eq!(get("GALE_DATA_D"), Some("(data)"));
        assert_eq!(get("GALE_TEXT_L_C"), Some("deep"));
    }

    #[tokio::test]
    async fn runs_a_program_with_body_and_env() {
        let dir = std::env::temp_dir().join(format!("gale-hook-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("out");
        let script = dir.join("hook.sh");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\n{{ echo \"$GALE_TO\"; cat; }} > '{}'\nexit 3\n",
                out.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let status = run_hook(&script, &delivery()).await.unwrap();
        assert_eq!(status.code(), Some(3));
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "a@x.org b@x.org\nhi\n"
        );
        let missing = run_hook(&dir.join("nope"), &delivery()).await.unwrap_err();
        assert!(missing.to_string().starts_with("cannot run "));
        assert_eq!(find_program(&script).unwrap(), script);
        let why = |p: &Path| find_program(p).unwrap_err().to_string();
        assert!(why(&dir.join("nope")).ends_with("no such file"));
        assert!(why(&dir).ends_with("it is a directory"));
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(why(&script).contains("not executable"));
        assert!(why(Path::new("no-such-gale-hook")).contains("not found on PATH"));
        assert!(find_program(Path::new("sh")).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
