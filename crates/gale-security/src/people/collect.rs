//! Asking people and gathering their answers: receipts (gsend -r), ping answers
//! (gsend --ping, gwho) and presence notices (gwho --watch), over a connection
//! of the collector's own, subscribed before anything is asked, so that no
//! answer can arrive before anyone listens for it.

use std::time::Duration;

use gale_client::{Client, ClientConfig, ClientError, Delivery, Event, Events, ServerAddr, Verify};
use gale_keys::KeyName;
use gale_proto::fragment::names;
use gale_proto::{Location, Message, MessageId, SubEntry, SubscriptionList, Timestamp};
use tokio::time::Instant;

use super::Status;
use crate::incoming::Opener;

/// Why a collector could not start.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("cannot reach any server within {0:?} to listen for answers{1}")]
    Unreachable(Duration, String),
    #[error("the server refused to listen for answers: {0}")]
    Refused(String),
}

/// What was heard: an answer (receipt or ping answer) or a presence notice.
#[derive(Debug, Clone)]
pub struct Heard {
    /// True for a receipt or ping answer; false for a presence notice.
    pub answer: bool,
    /// Whom it is about: the answering person (`answer.receipt`), or the
    /// person whose notice location it came to.
    pub who: String,
    /// How far its signature is known. An answer signed by someone else than
    /// the person it names is shown as forged.
    pub verify: Verify,
    pub status: Option<Status>,
    /// For an answer: the id of the message it answers.
    pub answers: Option<MessageId>,
    pub time: Timestamp,
    pub encrypted: bool,
    /// `message.sender` (unauthenticated display name).
    pub sender: Option<String>,
}

impl Heard {
    /// True if it may be counted as a real answer: signed by whom it names.
    pub fn genuine(&self) -> bool {
        matches!(
            self.verify,
            Verify::Verified { .. } | Verify::Unverified { from: Some(_), .. }
        )
    }

    /// Reads a delivery already opened: `None` if it is neither an answer nor a
    /// presence notice.
    pub fn from_delivery(d: &Delivery) -> Option<Heard> {
        let f = d.fragments()?;
        let (answer, who) = if let Some(who) = f.text(names::ANSWER_RECEIPT) {
            (true, who.to_string())
        } else {
            let l = d.message.to.first()?;
            let user = l.local().strip_prefix("_gale.notice.")?;
            f.get(names::NOTICE_PRESENCE)?;
            (false, format!("{user}@{}", l.domain()))
        };
        let mut verify = d.verify.clone();
        if let Some(signer) = verify.from() {
            if signer.as_str() != who {
                verify = Verify::Forged {
                    claimed: KeyName::parse(&who).ok(),
                    why: format!("signed by {signer}, not by {who}"),
                };
            }
        }
        Some(Heard {
            answer,
            who,
            verify,
            status: Status::from_fragments(f),
            answers: f
                .text(names::ANSWER_RECEIPT_ID)
                .and_then(|s| s.parse().ok()),
            time: f.time(names::ID_TIME).unwrap_or_else(Timestamp::now),
            encrypted: d.encrypted,
            sender: f.text(names::MESSAGE_SENDER).map(str::to_string),
        })
    }
}

/// A connection listening at a reply location (and maybe notice locations).
pub struct Collector {
    client: Client,
    events: Events,
    opener: Opener,
    /// Presence notices heard while gathering answers, for [`Collector::next`].
    pending: std::collections::VecDeque<Heard>,
    /// Where answers come: put it in `question.receipt`.
    pub reply: Location,
}

impl Collector {
    /// Connects, subscribes to `reply` and `watch`, and waits (at most
    /// `timeout`) until the server confirms the subscription.
    pub async fn start(
        servers: Vec<ServerAddr>,
        agent: &str,
        reply: Location,
        watch: &[Location],
        opener: Opener,
        timeout: Duration,
    ) -> Result<Collector, CollectError> {
        let mut config = ClientConfig::new(servers, agent);
        let mut entries = vec![SubEntry::include(reply.clone())];
        entries.extend(watch.iter().cloned().map(SubEntry::include));
        config.subscriptions = SubscriptionList::new(entries);
        let (client, mut events) = Client::start(config);
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        loop {
            match tokio::time::timeout_at(deadline, events.next()).await {
                Ok(Some(Event::Subscribed { .. })) => break,
                Ok(Some(Event::ConnectFailed { server, error })) => {
                    last = format!(" (last: {server}: {error})")
                }
                Ok(Some(Event::Refused { code, text, .. })) => {
                    return Err(CollectError::Refused(gale_client::describe_error(
                        code, &text,
                    )))
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return Err(CollectError::Unreachable(timeout, last)),
            }
        }
        Ok(Collector {
            client,
            events,
            opener,
            pending: Default::default(),
            reply,
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Publishes an ask (or a message asking for receipts) on this connection.
    pub fn publish(&self, m: Message) -> Result<(), ClientError> {
        self.client.publish(m)
    }

    /// The next answer or notice heard before `until`; `None` at `until` (or if
    /// the connection ended).
    pub async fn next(&mut self, until: Instant) -> Option<Heard> {
        if let Some(h) = self.pending.pop_front() {
            return Some(h);
        }
        self.heard(until).await
    }

    /// The next answer or notice off the connection (not the pending ones).
    async fn heard(&mut self, until: Instant) -> Option<Heard> {
        loop {
            let ev = tokio::time::timeout_at(until, self.events.next())
                .await
                .ok()??;
            if let Event::Message(d) = ev {
                let opening = self.opener.open(d);
                if let Some(h) = Heard::from_delivery(&opening.delivery) {
                    return Some(h);
                }
            }
        }
    }

    /// Says goodbye to the server (briefly: answers are all in).
    pub async fn close(&self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.client.close(true)).await;
    }
}

impl Heard {
    /// One line for a person: `in.present bob@example.org (laptop) idle 5m`,
    /// with `[*unverified*]` or `[*FORGED*]` when its signature says so.
    pub fn describe(&self) -> String {
        let clean = |s: &str| -> String {
            s.chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .collect()
        };
        let mut line = format!(
            "{} {}",
            clean(self.status.as_ref().map_or("?", |s| s.presence.as_str())),
            clean(&self.who)
        );
        if let Some(d) = self.status.as_ref().and_then(|s| s.device.as_deref()) {
            line.push_str(&format!(" ({})", clean(d)));
        }
        let idle = self
            .status
            .as_ref()
            .and_then(|s| s.idle_secs(Timestamp::now()));
        if let Some(secs) = idle.filter(|&s| s >= 60) {
            line.push_str(&format!(" idle {}", super::status::idle_text(secs)));
        }
        match &self.verify {
            Verify::Verified { .. } => {}
            Verify::Unverified { .. } => line.push_str(" [*unverified*]"),
            Verify::Anonymous => line.push_str(" [*unsigned*]"),
            Verify::Forged { why, .. } => line.push_str(&format!(" [*FORGED*: {}]", clean(why))),
        }
        line
    }
}

/// When to stop waiting for answers.
#[derive(Debug, Clone)]
pub struct Wait {
    /// The overall deadline.
    pub deadline: Instant,
    /// Once every expected person has answered, stop after this long without
    /// another answer (their other devices answer within it).
    pub settle: Duration,
    /// People (`bob@example.org`) whose answers are expected; empty when it
    /// cannot be known (a group, a whole domain): then wait until the deadline.
    pub expect: Vec<String>,
    /// When set: once anything was heard, stop after this long without another
    /// answer (for whole-domain asks, whose answerers cannot be known).
    pub quiet: Option<Duration>,
}

/// Most notices kept while answers are gathered.
const MAX_PENDING: usize = 1024;

/// Default [`Wait::settle`].
pub const SETTLE: Duration = Duration::from_millis(300);

impl Collector {
    /// Gathers answers to the messages `asked` (every answer if empty) until
    /// `wait` says stop, calling `each` on each genuine or forged answer as it
    /// comes. Returns them all.
    pub async fn gather(
        &mut self,
        asked: &[MessageId],
        wait: &Wait,
        mut each: impl FnMut(&Heard),
    ) -> Vec<Heard> {
        let mut heard: Vec<Heard> = Vec::new();
        let mut until = wait.deadline;
        loop {
            let Some(h) = self.heard(until).await else {
                return heard;
            };
            let ours =
                h.answer && (asked.is_empty() || h.answers.is_some_and(|id| asked.contains(&id)));
            if !h.answer {
                // A notice (gwho --watch): kept for the caller's next().
                if self.pending.len() < MAX_PENDING {
                    self.pending.push_back(h);
                }
                continue;
            }
            if !ours {
                continue;
            }
            each(&h);
            heard.push(h);
            let all_in = !wait.expect.is_empty()
                && wait
                    .expect
                    .iter()
                    .all(|p| heard.iter().any(|h| h.genuine() && h.who == *p));
            if all_in {
                until = wait.deadline.min(Instant::now() + wait.settle);
            } else if let Some(q) = wait.quiet {
                until = wait.deadline.min(Instant::now() + q);
            }
        }
    }
}
