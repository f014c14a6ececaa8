//! What a gsub answers: a receipt for each message it shows that asks for one,
//! its presence for each ping (and "who is around" ask), and one away reply per
//! sender per period to private messages. Rules (docs/security.md "People"):
//! - only signed asks are answered, never forged ones, and with
//!   [`Visibility::Verified`] only asks whose signer is verified;
//! - an answer goes only to a location under the asker's own name
//!   ([`super::reply_allowed`]);
//! - an answer to an encrypted message, or to an asker whose key is known, is
//!   encrypted to the asker; an answer to a private message is never sent in
//!   clear;
//! - nothing answers a message marked automatic (`message.auto`), and away
//!   replies never go to the gsub's own person.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use gale_client::{Delivery, Verify};
use gale_keys::{KeyName, KeyStore, SecretKey};
use gale_proto::fragment::names;
use gale_proto::{Fragments, Location, Message, Timestamp, Value};

use super::{is_ask, is_automatic, is_who_reply, receipt_request, reply_allowed, Status};
use crate::outgoing::{self, Class, Decision};

/// Default time between two away replies to the same sender.
pub const DEFAULT_AWAY_PERIOD: Duration = Duration::from_secs(3600);
/// Most senders remembered for away replies before the oldest are forgotten.
const AWAY_MEMORY: usize = 10_000;

/// Who may see this gsub's presence and receipts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Visibility {
    /// Anyone who signs an ask; presence notices are published in clear.
    #[default]
    Anyone,
    /// Only askers whose keys verify here; no presence notices or will are
    /// published (they would be readable by all), and every answer is
    /// encrypted to the asker.
    Verified,
}

impl std::str::FromStr for Visibility {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "anyone" => Ok(Visibility::Anyone),
            "verified" => Ok(Visibility::Verified),
            _ => Err(format!("{s:?}: write anyone or verified")),
        }
    }
}

/// An away message and how often one sender may get it.
///
/// The text may be in zaway's format (`~/.away`): lines `>NAME` start a section
/// for the sender NAME (`alice` or `alice@example.org`; several names may share
/// a section, one `>` line each), `>*` one for every sender, and `>%` one for
/// senders no named section matched. A sender gets the sections meant for them,
/// in order; a text without `>` lines is for everyone. A sender for whom no
/// section is meant gets no reply.
#[derive(Debug, Clone)]
pub struct Away {
    pub text: String,
    pub period: Duration,
}

impl Away {
    /// The reply for `sender` (`alice@example.org`), if any.
    pub fn text_for(&self, sender: &str) -> Option<String> {
        if !self.text.lines().any(|l| l.starts_with('>')) {
            return Some(self.text.clone()).filter(|t| !t.trim().is_empty());
        }
        let local = sender.split('@').next().unwrap_or(sender);
        let mut sections: Vec<(Vec<&str>, String)> = Vec::new();
        let mut in_header = false;
        for line in self.text.lines() {
            if let Some(name) = line.strip_prefix('>') {
                if !in_header {
                    sections.push((Vec::new(), String::new()));
                }
                in_header = true;
                if let Some(s) = sections.last_mut() {
                    s.0.push(name.trim());
                }
            } else {
                in_header = false;
                if let Some(s) = sections.last_mut() {
                    s.1.push_str(line);
                    s.1.push('\n');
                }
            }
        }
        let named = |n: &&str| *n == sender || *n == local;
        let matched = sections.iter().any(|(names, _)| names.iter().any(named));
        let out: String = sections
            .iter()
            .filter(|(names, _)| {
                names
                    .iter()
                    .any(|n| named(n) || *n == "*" || (*n == "%" && !matched))
            })
            .map(|(_, body)| body.as_str())
            .collect();
        Some(out).filter(|t| !t.trim().is_empty())
    }
}

/// What was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A receipt for a message shown.
    Receipt,
    /// A ping (a receipt request without a body, to this person).
    Ping,
    /// A "who is around" lookup (gwho): answered without showing it.
    Who,
    /// An automatic away reply.
    Away,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Receipt => "receipt",
            Kind::Ping => "ping",
            Kind::Who => "who",
            Kind::Away => "away",
        }
    }
}

/// One answer to send.
#[derive(Debug)]
pub struct Answer {
    pub kind: Kind,
    /// Who asked (or whom the away reply is for).
    pub to: KeyName,
    pub message: Message,
}

/// Decides and builds a gsub's answers.
#[derive(Debug)]
pub struct Answerer {
    /// Who this gsub is (`bob@example.org`).
    pub me: Location,
    key: SecretKey,
    sender: Option<String>,
    class: String,
    pub visibility: Visibility,
    pub away: Option<Away>,
    away_sent: HashMap<KeyName, Instant>,
}

impl Answerer {
    pub fn new(
        me: Location,
        key: SecretKey,
        sender: Option<String>,
        class: String,
        visibility: Visibility,
    ) -> Answerer {
        Answerer {
            me,
            key,
            sender,
            class,
            visibility,
            away: None,
            away_sent: HashMap::new(),
        }
    }

    /// Who signed `d`, if its asks may be answered under the visibility rule.
    fn asker<'a>(&self, d: &'a Delivery) -> Option<&'a KeyName> {
        match (&d.verify, self.visibility) {
            (Verify::Verified { from }, _) => Some(from),
            (Verify::Unverified { from: Some(n), .. }, Visibility::Anyone) => Some(n),
            _ => None,
        }
    }

    fn base(&self, status: &Status) -> Fragments {
        let mut f = Fragments::new();
        status.push_to(&mut f);
        if let Some(s) = &self.sender {
            f.push_text(names::MESSAGE_SENDER, s.as_str());
        }
        f.push(names::ID_TIME, Value::Time(Timestamp::now()));
        f.push_text(names::ID_CLASS, self.class.as_str());
        f
    }

    /// How to send to `to`: encrypted to its keys if known; in clear only if
    /// `clear_ok` (and the visibility allows it); else not at all.
    fn decision(&self, store: &KeyStore, to: &Location, clear_ok: bool) -> Option<Decision> {
        match outgoing::classify(store, to, Timestamp::now()) {
            Ok(Class::Private(keys)) => Some(Decision::Encrypt(keys)),
            Ok(_) if clear_ok && self.visibility == Visibility::Anyone => Some(Decision::Clear),
            _ => None,
        }
    }

    fn build(&self, to: Location, f: &Fragments, decision: &Decision) -> Option<Message> {
        let mut f = f.clone();
        if *decision == Decision::Clear {
            outgoing::carry_key(&mut f, &self.key);
        }
        match outgoing::build(vec![to], &f, Some(&self.key), decision) {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::warn!("cannot build an answer: {e}");
                None
            }
        }
    }

    /// The answers to `d` (shown by this gsub, or a ping it took), with the
    /// gsub's presence `status`. `checked`: the signature was checked (the
    /// signer's key was known or carried); an unchecked claim is never answered.
    pub fn answer(
        &mut self,
        store: &KeyStore,
        d: &Delivery,
        checked: bool,
        status: &Status,
        now: Instant,
    ) -> Vec<Answer> {
        if !checked {
            return Vec::new();
        }
        let Some(f) = d.fragments().filter(|_| d.unreadable.is_none()) else {
            return Vec::new();
        };
        if is_automatic(f) {
            return Vec::new();
        }
        let Some(asker) = self.asker(d).cloned() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let ask = is_ask(&d.message.to, f);
        if let Some(reply) = receipt_request(f).filter(|r| reply_allowed(&asker, r)) {
            let kind = match ask {
                true if is_who_reply(&reply) => Kind::Who,
                true => Kind::Ping,
                false => Kind::Receipt,
            };
            let mut a = self.base(status);
            a.push_text(names::ANSWER_RECEIPT, self.me.as_str());
            a.push_text(names::ANSWER_RECEIPT_ID, d.message.id.to_string());
            a.push_text(names::MESSAGE_AUTO, super::AUTO_RECEIPT);
            // Encrypted to the asker's own key (the reply location is under
            // their name), when it is known here.
            let asker_loc = Location::parse(asker.as_str()).ok();
            let dec = asker_loc.and_then(|l| self.decision(store, &l, !d.encrypted));
            if let Some(dec) = dec {
                if let Some(message) = self.build(reply, &a, &dec) {
                    out.push(Answer {
                        kind,
                        to: asker.clone(),
                        message,
                    });
                }
            }
        }
        if let Some(m) = self.away_reply(store, d, f, &asker, status, now) {
            out.push(Answer {
                kind: Kind::Away,
                to: asker,
                message: m,
            });
        }
        out
    }

    /// An away reply to a private message to this person, once per period.
    fn away_reply(
        &mut self,
        store: &KeyStore,
        d: &Delivery,
        f: &Fragments,
        asker: &KeyName,
        status: &Status,
        now: Instant,
    ) -> Option<Message> {
        let away = self.away.as_ref()?;
        let to_me = d.message.to.iter().any(|l| self.me.covers(l));
        let own = asker.as_str() == self.me.as_str() || asker == self.key.name();
        if !d.encrypted || !to_me || own || f.get(names::QUESTION_KEY).is_some() {
            return None;
        }
        if is_ask(&d.message.to, f) {
            return None;
        }
        if let Some(at) = self.away_sent.get(asker) {
            if now.duration_since(*at) < away.period {
                return None;
            }
        }
        let text = away.text_for(asker.as_str())?;
        let reply_to = Location::parse(asker.as_str()).ok()?;
        let mut a = self.base(status);
        a.push_text(names::MESSAGE_BODY, text);
        a.push_text(names::MESSAGE_AUTO, super::AUTO_AWAY);
        let dec = self.decision(store, &reply_to, false)?;
        let m = self.build(reply_to, &a, &dec)?;
        if self.away_sent.len() >= AWAY_MEMORY {
            let period = away.period;
            self.away_sent
                .retain(|_, at| now.duration_since(*at) < period);
        }
        self.away_sent.insert(asker.clone(), now);
        Some(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gale_keys::{open, KeyStore};
    use gale_proto::Payload;

    fn loc(s: &str) -> Location {
        Location::parse(s).unwrap()
    }

    struct World {
        _dir: tempfile::TempDir,
        store: KeyStore,
        bob: Answerer,
        alice: SecretKey,
        bob_key: SecretKey,
    }

    /// bob answers; he knows alice's key.
    fn world(visibility: Visibility) -> World {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::new(dir.path(), None);
        let alice = crate::test_key("alice@x.org");
        let bob_key = crate::test_key("bob@x.org");
        store
            .write_public(gale_keys::Dir::Local, alice.public(), false)
            .unwrap();
        let bob = Answerer::new(
            loc("bob@x.org"),
            bob_key.clone(),
            None,
            "test".into(),
            visibility,
        );
        World {
            _dir: dir,
            store,
            bob,
            alice,
            bob_key,
        }
    }

    fn status() -> Status {
        Status {
            presence: "in.present".into(),
            device: Some("laptop".into()),
            active_at: None,
        }
    }

    /// A delivery from `from` (as verified or not), opened, with `f`.
    fn delivery(to: &str, f: Fragments, verify: Verify, encrypted: bool) -> Delivery {
        let m = Message::new(vec![loc(to)], Payload::Plain(f.clone()).encode().unwrap());
        let mut d = Delivery::open(m).unwrap();
        d.verify = verify;
        d.encrypted = encrypted;
        d
    }

    fn asking(reply: &str) -> Fragments {
        let mut f = Fragments::new();
        f.push_text(names::QUESTION_RECEIPT, reply);
        f.push_text(names::MESSAGE_BODY, "hi");
        f
    }

    fn from_alice() -> Verify {
        Verify::Verified {
            from: KeyName::parse("alice@x.org").unwrap(),
        }
    }

    #[test]
    fn a_receipt_is_signed_encrypted_to_the_asker_and_carries_presence() {
        let mut w = world(Visibility::Anyone);
        let d = delivery(
            "bob@x.org",
            asking("alice.receipt.1@x.org"),
            from_alice(),
            true,
        );
        let out = w.bob.answer(&w.store, &d, true, &status(), Instant::now());
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].kind, Kind::Receipt);
        let m = &out[0].message;
        assert_eq!(m.to, vec![loc("alice.receipt.1@x.org")]);
        let bob_pub = w.bob_key.public().clone();
        let look = move |_: &KeyName, _| Some(bob_pub.clone());
        let o = open(m, &[&w.alice], &look).unwrap();
        assert!(o.encrypted);
        assert_eq!(o.signature, gale_keys::SigState::Valid);
        assert_eq!(o.fragments.text(names::ANSWER_RECEIPT), Some("bob@x.org"));
        assert_eq!(
            o.fragments.text(names::ANSWER_RECEIPT_ID),
            Some(d.message.id.to_string().as_str())
        );
        assert_eq!(o.fragments.text(names::NOTICE_DEVICE), Some("laptop"));
        assert_eq!(o.fragments.text(names::MESSAGE_AUTO), Some("receipt"));
    }

    #[test]
    fn what_is_never_answered() {
        let mut w = world(Visibility::Anyone);
        let now = Instant::now();
        let none = |w: &mut World, d: &Delivery| w.bob.answer(&w.store, d, true, &status(), now);
        // Forged and anonymous asks.
        let forged = Verify::Forged {
            claimed: KeyName::parse("alice@x.org").ok(),
            why: "bad".into(),
        };
        let d = delivery("bob@x.org", asking("alice.receipt.1@x.org"), forged, false);
        assert!(none(&mut w, &d).is_empty());
        let d = delivery(
            "bob@x.org",
            asking("alice.r@x.org"),
            Verify::Anonymous,
            false,
        );
        assert!(none(&mut w, &d).is_empty());
        // A reply location that is not the asker's.
        let d = delivery("bob@x.org", asking("pub.spam@x.org"), from_alice(), false);
        assert!(none(&mut w, &d).is_empty());
        // An automatic message.
        let mut f = asking("alice.receipt.1@x.org");
        f.push_text(names::MESSAGE_AUTO, "away");
        let d = delivery("bob@x.org", f, from_alice(), true);
        assert!(none(&mut w, &d).is_empty());
        // A private message is never answered in clear: eve's key is unknown.
        let eve = Verify::Unverified {
            from: KeyName::parse("eve@x.org").ok(),
            why: "unknown".into(),
        };
        let d = delivery(
            "bob@x.org",
            asking("eve.receipt.1@x.org"),
            eve.clone(),
            true,
        );
        assert!(none(&mut w, &d).is_empty());
        // In clear, an unverified asker gets a clear answer, unless only the
        // verified may see.
        let d = delivery("pub.x@x.org", asking("eve.receipt.1@x.org"), eve, false);
        assert_eq!(none(&mut w, &d).len(), 1);
        // ... but not when its signature could not be checked (unknown key).
        assert!(w.bob.answer(&w.store, &d, false, &status(), now).is_empty());
        w.bob.visibility = Visibility::Verified;
        assert!(none(&mut w, &d).is_empty());
    }

    #[test]
    fn zaway_sections() {
        let away = |text: &str| Away {
            text: text.into(),
            period: DEFAULT_AWAY_PERIOD,
        };
        assert_eq!(away("plain\n").text_for("a@x.org").unwrap(), "plain\n");
        let a = away(">alice\n>carol@x.org\nHi friend.\n>*\nBack at 3.\n>%\nWho are you?\n");
        assert_eq!(
            a.text_for("alice@x.org").unwrap(),
            "Hi friend.\nBack at 3.\n"
        );
        assert_eq!(
            a.text_for("carol@x.org").unwrap(),
            "Hi friend.\nBack at 3.\n"
        );
        assert_eq!(
            a.text_for("eve@x.org").unwrap(),
            "Back at 3.\nWho are you?\n"
        );
        let only_alice = away(">alice\nHi.\n");
        assert_eq!(only_alice.text_for("eve@x.org"), None, "no section for eve");
        assert_eq!(away("  \n").text_for("eve@x.org"), None);
    }

    #[test]
    fn away_replies_go_once_per_period_and_never_to_oneself() {
        let mut w = world(Visibility::Anyone);
        w.bob.away = Some(Away {
            text: "gone fishing".into(),
            period: Duration::from_secs(60),
        });
        let mut f = Fragments::new();
        f.push_text(names::MESSAGE_BODY, "hi");
        let t0 = Instant::now();
        let d = delivery("bob@x.org", f.clone(), from_alice(), true);
        let out = w.bob.answer(&w.store, &d, true, &status(), t0);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].kind, Kind::Away);
        assert_eq!(out[0].message.to, vec![loc("alice@x.org")]);
        let o = open(&out[0].message, &[&w.alice], &|_, _| None).unwrap();
        assert!(o.encrypted);
        assert_eq!(o.fragments.text(names::MESSAGE_BODY), Some("gone fishing"));
        assert_eq!(o.fragments.text(names::MESSAGE_AUTO), Some("away"));
        let again = w
            .bob
            .answer(&w.store, &d, true, &status(), t0 + Duration::from_secs(59));
        assert!(again.is_empty(), "once per period");
        let later = w
            .bob
            .answer(&w.store, &d, true, &status(), t0 + Duration::from_secs(61));
        assert_eq!(later.len(), 1, "again after the period");
        // Not for a message in clear, to a public location, or from bob himself.
        let d = delivery("bob@x.org", f.clone(), from_alice(), false);
        assert!(w.bob.answer(&w.store, &d, true, &status(), t0).is_empty());
        let d = delivery("pub.x@x.org", f.clone(), from_alice(), true);
        assert!(w.bob.answer(&w.store, &d, true, &status(), t0).is_empty());
        let me = Verify::Verified {
            from: KeyName::parse("bob@x.org").unwrap(),
        };
        let d = delivery("bob@x.org", f, me, true);
        assert!(w.bob.answer(&w.store, &d, true, &status(), t0).is_empty());
    }
}
