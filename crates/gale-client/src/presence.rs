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

/// Who this client is: `$GALE_ID` (completed with `domain` if it has no `@`),
/// else `$USER@domain`.
pub fn id_from_env(domain: Option<&str>) -> Option<String> {
    let id = std::env::var(ID_ENV).ok().filter(|s| !s.trim().is_empty());
    let id = id.or_else(|| {
        std::env::var("USER")
            .ok()
            .or_else(|| std::env::var("LOGNAME").ok())
    })?;
    if id.contains('@') {
        Some(id)
    } else {
        domain.map(|d| format!("{id}@{d}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
