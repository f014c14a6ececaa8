//! People: presence that changes live, receipts, pings, "who is around" and
//! away replies (docs/protocol.md "People", docs/security.md "People").
//!
//! Everything here is an ordinary signed Gale message at an ordinary location,
//! as in the original Gale: no server frames. Where each goes:
//! - presence notices: `_gale.notice.<who>` (see [`crate::presence`]), now with
//!   the device ([`names::NOTICE_DEVICE`]) and idle time ([`names::STATUS_IDLE`]);
//! - pings and "who is around" asks: `_gale.query.<who>` for a person (Gale's
//!   ping location, which every gsub that answers key queries takes), and
//!   `_gale.query._who@<domain>` for a whole domain ([`who_location`]);
//! - the answers, and receipts: to the location named in the ask's
//!   `question.receipt`, which must lie under the asker's own signed name
//!   ([`reply_allowed`]), e.g. `alice.receipt.5f2c@example.org`.
//!
//! Module map:
//! - [`status`]: [`Status`] (presence, device, idle) to and from fragments.
//! - [`answer`]: [`answer::Answerer`], what a gsub answers (receipts, pings,
//!   away replies) and what it never answers.
//! - [`collect`]: [`collect::Collector`], asking and gathering answers over a
//!   connection of its own (gsend -r, gsend --ping, gwho).
//! - [`control`]: the Unix socket through which a running gsub's presence is
//!   changed (`gsub --set-presence`).
//! - [`idle`]: terminal idle time, from the tty's access time.
//! - [`who`]: "who is around" (gwho): asking many people at once.

pub mod answer;
pub mod collect;
pub mod control;
pub mod idle;
pub mod status;
pub mod who;

use gale_keys::KeyName;
use gale_proto::fragment::names;
use gale_proto::{Fragments, Location, LocationError};

pub use status::Status;

/// The local part under `_gale.query` where whole-domain asks go: a gsub that
/// answers takes `_gale.query._who@<its domain>` as well as its own
/// `_gale.query.<id>` (key names never start with `_`).
pub const WHO_SEGMENT: &str = "_who";
/// The segment of reply locations for receipts and pings (shown by the asker's
/// gsubs, which take the asker's own location).
pub const RECEIPT_SEGMENT: &str = "receipt";
/// The segment of reply locations for gwho (not shown by gsub: a lookup, not
/// a receipt).
pub const WHO_REPLY_SEGMENT: &str = "who";
/// `message.auto` in away replies.
pub const AUTO_AWAY: &str = "away";
/// `message.auto` in receipts and ping answers.
pub const AUTO_RECEIPT: &str = "receipt";

/// Where a ping (or a "who is around" ask) to `who` goes: a person
/// (`bob@example.org` -> `_gale.query.bob@example.org`), or a whole domain
/// (`@example.org` -> `_gale.query._who@example.org`).
pub fn ask_location(who: &Location) -> Result<Location, LocationError> {
    if who.local().is_empty() {
        return who_location(who.domain());
    }
    Location::parse(&format!("_gale.query.{}@{}", who.local(), who.domain()))
}

/// Where `who`'s presence notices go: `_gale.notice.bob@example.org`, or for
/// a whole domain (`@example.org`) `_gale.notice@example.org`, which covers them
/// all.
pub fn notice_location_of(who: &Location) -> Result<Location, LocationError> {
    if who.local().is_empty() {
        return Location::parse(&format!("_gale.notice@{}", who.domain()));
    }
    Location::parse(&format!("_gale.notice.{}@{}", who.local(), who.domain()))
}

/// The whole-domain ask location of `domain`.
pub fn who_location(domain: &str) -> Result<Location, LocationError> {
    Location::parse(&format!("_gale.query.{WHO_SEGMENT}@{domain}"))
}

/// A fresh reply location under `me` (`alice.receipt.<token>@example.org`),
/// `segment` being [`RECEIPT_SEGMENT`] or [`WHO_REPLY_SEGMENT`].
pub fn reply_location(me: &Location, segment: &str) -> Result<Location, LocationError> {
    let token = gale_proto::MessageId::generate().to_string();
    let token = &token[token.len().saturating_sub(12)..];
    Location::parse(&format!("{}.{segment}.{token}@{}", me.local(), me.domain()))
}

/// True if a reply location belongs to a gwho lookup rather than a receipt.
pub fn is_who_reply(reply: &Location) -> bool {
    let mut segs = reply.segments().collect::<Vec<_>>();
    segs.pop();
    segs.last() == Some(&WHO_REPLY_SEGMENT)
}

/// True if an answer may be sent to `reply` for an ask signed by `signer`: the
/// reply location lies under the signer's own name, so that nobody can make
/// gsubs send answers to someone else's location (or to a public one).
pub fn reply_allowed(signer: &KeyName, reply: &Location) -> bool {
    match Location::parse(signer.as_str()) {
        Ok(own) => !own.local().is_empty() && own.covers(reply),
        Err(_) => false,
    }
}

/// The location named by `question.receipt`, if any and valid.
pub fn receipt_request(f: &Fragments) -> Option<Location> {
    f.text(names::QUESTION_RECEIPT)
        .and_then(|s| Location::parse(s).ok())
}

/// True for a message sent by a program (`message.auto`): never answered.
pub fn is_automatic(f: &Fragments) -> bool {
    f.get(names::MESSAGE_AUTO).is_some()
}

/// What a delivery is, for display, `--json` (`kind`) and hooks (`GALE_KIND`):
/// `presence` (a notice), `receipt` (a receipt or ping answer), `ping`, `away`
/// (an automatic reply) or `message`.
pub fn kind(to: &[Location], f: Option<&Fragments>) -> &'static str {
    let Some(f) = f else { return "message" };
    if f.get(names::ANSWER_RECEIPT).is_some() {
        "receipt"
    } else if is_ask(to, f) {
        "ping"
    } else if f.get(names::NOTICE_PRESENCE).is_some()
        && to.iter().all(|l| l.local().starts_with("_gale.notice."))
    {
        "presence"
    } else if f.text(names::MESSAGE_AUTO) == Some(AUTO_AWAY) {
        "away"
    } else {
        "message"
    }
}

/// True for a delivery to a ping / ask location (`_gale.query.*` carrying a
/// receipt request and no key question).
pub fn is_ask(to: &[Location], f: &Fragments) -> bool {
    !to.is_empty()
        && to
            .iter()
            .all(|l| l.local().starts_with("_gale.query.") || l.local() == "_gale.query")
        && f.get(names::QUESTION_KEY).is_none()
        && f.get(names::QUESTION_RECEIPT).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(s: &str) -> Location {
        Location::parse(s).unwrap()
    }

    #[test]
    fn locations() {
        assert_eq!(
            ask_location(&loc("bob@x.org")).unwrap().as_str(),
            "_gale.query.bob@x.org"
        );
        assert_eq!(
            ask_location(&loc("@x.org")).unwrap().as_str(),
            "_gale.query._who@x.org"
        );
        let me = loc("alice@x.org");
        let r = reply_location(&me, RECEIPT_SEGMENT).unwrap();
        assert!(r.as_str().starts_with("alice.receipt."), "{r}");
        assert!(!is_who_reply(&r));
        let w = reply_location(&me, WHO_REPLY_SEGMENT).unwrap();
        assert!(is_who_reply(&w), "{w}");
        assert_ne!(reply_location(&me, "receipt").unwrap(), r, "fresh");
    }

    #[test]
    fn replies_only_go_under_the_askers_name() {
        let alice = KeyName::parse("alice@x.org").unwrap();
        assert!(reply_allowed(&alice, &loc("alice.receipt.abc@x.org")));
        assert!(reply_allowed(&alice, &loc("alice@x.org")));
        assert!(!reply_allowed(&alice, &loc("bob.receipt.abc@x.org")));
        assert!(!reply_allowed(&alice, &loc("pub.spam@x.org")));
        assert!(!reply_allowed(&alice, &loc("alice.receipt@y.org")));
        assert!(!reply_allowed(&alice, &loc("alicex@x.org")));
        let domain = KeyName::parse("x.org").unwrap();
        assert!(!reply_allowed(&domain, &loc("pub@x.org")), "not a person");
    }

    #[test]
    fn asks_are_receipt_requests_on_query_locations() {
        let mut f = Fragments::new();
        f.push_text(names::QUESTION_RECEIPT, "alice.receipt.1@x.org");
        assert!(is_ask(&[loc("_gale.query.bob@x.org")], &f));
        assert!(!is_ask(&[loc("bob@x.org")], &f));
        f.push_text(names::QUESTION_KEY, "bob@x.org");
        assert!(!is_ask(&[loc("_gale.query.bob@x.org")], &f));
    }
}
