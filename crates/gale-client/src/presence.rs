//! Presence notices and the will that announces a client's disappearance, as in
//! Gale: a notice on `_gale.notice.<who>` carrying `notice.presence`, and a will of
//! the same shape saying `out.disconnected`, which the server publishes if the
//! connection dies without a goodbye. This module says where they go and what
//! they hold; `gale_security::presence` signs them, like every other message, so
//! that nobody can announce someone else.

use gale_proto::fragment::names;
use gale_proto::{Fragments, Location, LocationError, Timestamp, Value};

/// Presence announced when none is given (Gale's default).
pub const DEFAULT_PRESENCE: &str = "in.present";
/// Presence in the will: the connection died.
pub const DISCONNECTED: &str = "out.disconnected";
/// Presence announced on a clean exit.
pub const QUIT: &str = "out.quit";
/// Environment variable naming who this client is (`egnor@ofb.net`).
pub const ID_ENV: &str = "GALE_ID";

/// The notice location for `who`: `egnor@ofb.net` -> `_gale.notice.egnor@ofb.net`.
pub fn notice_location(who: &Location) -> Result<Location, LocationError> {
    Location::parse(&format!("_gale.notice.{}@{}", who.local(), who.domain()))
}

/// The fragments of a presence notice saying `presence`, made now.
pub fn notice_fragments(presence: &str, sender: Option<&str>, class: &str) -> Fragments {
    let mut f = Fragments::new();
    f.push_text(names::NOTICE_PRESENCE, presence);
    if let Some(s) = sender {
        f.push_text(names::MESSAGE_SENDER, s);
    }
    f.push(names::ID_TIME, Value::Time(Timestamp::now()));
    f.push_text(names::ID_CLASS, class);
    f
}

/// Why the user's id cannot be worked out. Each message names only what is
/// missing: never a variable that is already set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnknownId {
    /// The login name is known, but not the domain to put after it.
    #[error("your login name is {login}, but GALE_DOMAIN is not set: set GALE_DOMAIN (e.g. example.org), or GALE_ID (e.g. {login}@example.org)")]
    NoDomain { login: String },
    /// An id without `@domain` (`what` is `GALE_ID` or `--id`), and no domain.
    #[error("{what} {id:?} has no @domain and GALE_DOMAIN is not set: write {id}@example.org, or set GALE_DOMAIN")]
    IdWithoutDomain { what: &'static str, id: String },
    /// No `GALE_ID`, no `USER` or `LOGNAME`, and no name in the password database.
    #[error("USER and LOGNAME are not set and the password database has no name for this user ({why}): set GALE_ID (e.g. you@example.org)")]
    NoLogin { why: String },
}

/// The login name: `$USER`, else `$LOGNAME`, else the password database's name
/// for this process's user (cron, systemd, containers and the like often set
/// neither variable). `Err` says why the database had none.
pub fn login_name() -> Result<String, String> {
    let var = |k| {
        std::env::var(k)
            .ok()
            .filter(|v: &String| !v.trim().is_empty())
    };
    match var("USER").or_else(|| var("LOGNAME")) {
        Some(name) => Ok(name),
        None => whoami::username().map_err(|e| e.to_string()),
    }
}

/// Who this client is: `$GALE_ID` (completed with `domain` if it has no `@`),
/// else the [`login_name`] at `domain`.
pub fn id_from_env(domain: Option<&str>) -> Result<String, UnknownId> {
    let (id, explicit) = match std::env::var(ID_ENV).ok().filter(|s| !s.trim().is_empty()) {
        Some(id) => (id, true),
        None => (
            login_name().map_err(|why| UnknownId::NoLogin { why })?,
            false,
        ),
    };
    complete_id(id, domain, explicit)
}

/// `id`, with `@domain` appended if it has none. `explicit`: it came from
/// `GALE_ID` rather than the login name.
fn complete_id(id: String, domain: Option<&str>, explicit: bool) -> Result<String, UnknownId> {
    if id.contains('@') {
        return Ok(id);
    }
    match domain {
        Some(d) => Ok(format!("{id}@{d}")),
        None if explicit => Err(UnknownId::IdWithoutDomain { what: ID_ENV, id }),
        None => Err(UnknownId::NoDomain { login: id }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_what_is_missing() {
        let id = |s: &str, d, explicit| complete_id(s.into(), d, explicit);
        assert_eq!(id("bob", Some("x.org"), false).unwrap(), "bob@x.org");
        assert_eq!(id("bob@y.org", None, true).unwrap(), "bob@y.org");
        let e = id("bob", None, false).unwrap_err();
        assert!(e.to_string().contains("login name is bob"), "{e}");
        let e = id("bob", None, true).unwrap_err().to_string();
        assert!(e.contains("GALE_ID \"bob\" has no @domain"), "{e}");
        // With GALE_DOMAIN set, the only thing to ask for is GALE_ID.
        let e = UnknownId::NoLogin {
            why: "no record".into(),
        }
        .to_string();
        assert!(
            e.contains("set GALE_ID") && !e.contains("GALE_DOMAIN"),
            "{e}"
        );
    }

    #[test]
    fn the_login_name_is_found_without_user_or_logname() {
        // The database's answer for this process; the variables only override it.
        assert!(!whoami::username().unwrap().is_empty());
    }

    #[test]
    fn notice_goes_to_the_notice_location() {
        let who = Location::parse("egnor@ofb.net").unwrap();
        assert_eq!(
            notice_location(&who).unwrap().as_str(),
            "_gale.notice.egnor@ofb.net"
        );
        let f = notice_fragments("in.present", Some("Dan"), "gsub/1");
        assert_eq!(f.text(names::NOTICE_PRESENCE), Some("in.present"));
        assert_eq!(f.text(names::MESSAGE_SENDER), Some("Dan"));
    }
}
