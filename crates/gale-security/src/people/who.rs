//! "Who is around" (gwho, as zlocate and znol): one signed ask per person or
//! domain, all sent at once, and the answers gathered under one deadline, so
//! that an absent person costs no more than the deadline once.

use std::time::Duration;

use gale_keys::SecretKey;
use gale_proto::fragment::names;
use gale_proto::{Fragments, Location, LocationError, Message, MessageId, Timestamp, Value};
use tokio::time::Instant;

use super::collect::{Collector, Heard, Wait, SETTLE};
use super::{ask_location, notice_location_of};
use crate::outgoing;

/// How long gwho waits, at most, for answers.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
/// After the first answer to a whole-domain ask, how long a silence ends it.
pub const DOMAIN_QUIET: Duration = Duration::from_millis(700);

/// The signed ask to `target` (a person or `@domain`), answered at `reply`.
pub fn ask(
    target: &Location,
    reply: &Location,
    key: &SecretKey,
    class: &str,
) -> Result<Message, LocationError> {
    let mut f = Fragments::new();
    f.push_text(names::QUESTION_RECEIPT, reply.as_str());
    f.push(names::ID_TIME, Value::Time(Timestamp::now()));
    f.push_text(names::ID_CLASS, class);
    outgoing::carry_key(&mut f, key);
    Ok(outgoing::signed(vec![ask_location(target)?], &f, key))
}

/// What one lookup found: each answer, and the people named who did not answer.
#[derive(Debug, Default)]
pub struct Found {
    pub heard: Vec<Heard>,
    pub absent: Vec<String>,
    /// Whole domains asked where nobody answered.
    pub silent_domains: Vec<String>,
}

/// Asks every target at once over `collector`, calls `each` on each answer as
/// it comes, and returns what was found by `timeout`.
pub async fn lookup(
    collector: &mut Collector,
    targets: &[Location],
    key: &SecretKey,
    class: &str,
    timeout: Duration,
    each: impl FnMut(&Heard),
) -> Result<Found, crate::people::collect::CollectError> {
    let mut asked: Vec<MessageId> = Vec::new();
    for t in targets {
        let m = ask(t, &collector.reply, key, class).map_err(|e| {
            crate::people::collect::CollectError::Refused(format!("bad location {t}: {e}"))
        })?;
        asked.push(m.id);
        let _ = collector.publish(m);
    }
    let people: Vec<String> = targets
        .iter()
        .filter(|t| !t.local().is_empty())
        .map(|t| t.as_str().to_string())
        .collect();
    let any_domain = targets.iter().any(|t| t.local().is_empty());
    let wait = Wait {
        deadline: Instant::now() + timeout,
        settle: SETTLE,
        expect: if any_domain {
            Vec::new()
        } else {
            people.clone()
        },
        quiet: any_domain.then_some(DOMAIN_QUIET),
    };
    let heard = collector.gather(&asked, &wait, each).await;
    let answered = |p: &str| heard.iter().any(|h| h.genuine() && h.who == p);
    let absent = people.iter().filter(|p| !answered(p)).cloned().collect();
    let silent_domains = targets
        .iter()
        .filter(|t| t.local().is_empty())
        .filter(|t| {
            !heard
                .iter()
                .any(|h| h.genuine() && h.who.ends_with(&format!("@{}", t.domain())))
        })
        .map(|t| t.as_str().to_string())
        .collect();
    Ok(Found {
        heard,
        absent,
        silent_domains,
    })
}

/// The notice locations to watch for `targets` (gwho --watch, znol):
/// `_gale.notice.bob@example.org`, or `_gale.notice@example.org` for a domain.
pub fn watch_locations(targets: &[Location]) -> Result<Vec<Location>, LocationError> {
    targets.iter().map(notice_location_of).collect()
}
