//! Where the client stands on its server, so that after a reconnect it can ask
//! for what it missed (RESUME, protocol version 2), and what to tell the user
//! when the answer is a gap. No pause in the connection goes unreported: a server
//! that cannot say what was missed (it restarted, it is another server, it
//! speaks version 1) is reported as a gap of unknown size.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gale_proto::resume::{Outcome, Resume, Resumed};
use gale_proto::MessageId;

use crate::event::Event;
use crate::server::ServerAddr;

/// Where the client stood on the last connection that went live.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Spot {
    /// The server's name (WELCOME).
    name: String,
    /// None: a version 1 server, which has no epoch.
    epoch: Option<u64>,
    position: u64,
    last_id: Option<MessageId>,
    /// When the client last heard from that server.
    heard: SystemTime,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct Resumption {
    at: Option<Spot>,
    /// The current connection has gone live (its RESUMED came, or it is a
    /// version 1 connection): what arrives now advances `at`.
    live: bool,
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn time(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

impl Resumption {
    /// A new connection: not live until it says where it stands.
    pub fn connecting(&mut self) {
        self.live = false;
    }

    /// Whether the current connection has gone live.
    pub fn is_live(&self) -> bool {
        self.live
    }

    /// The RESUME to send on a version 2 connection.
    pub fn request(&self) -> Resume {
        match &self.at {
            Some(Spot {
                epoch: Some(epoch),
                position,
                last_id,
                ..
            }) => Resume {
                epoch: *epoch,
                position: *position,
                last_id: *last_id,
            },
            _ => Resume::default(),
        }
    }

    /// A frame arrived on the current connection.
    pub fn heard(&mut self) {
        if let (true, Some(at)) = (self.live, &mut self.at) {
            at.heard = SystemTime::now();
        }
    }

    /// A message arrived (live or replayed): the position moves past it.
    pub fn delivered(&mut self, id: MessageId) {
        if let Some(at) = &mut self.at {
            at.last_id = Some(id);
        }
    }

    /// A version 1 server subscribed us: it cannot replay, so a pause before it
    /// is a gap of unknown size.
    pub fn version1(&mut self, server: &ServerAddr, name: &str) -> Option<Event> {
        let gap = self.at.as_ref().map(|at| Event::Gap {
            server: server.clone(),
            from: at.heard,
            to: SystemTime::now(),
            count: None,
            why: format!("{name} speaks protocol version 1, which cannot replay what was missed"),
        });
        self.went_live(name, None, 0);
        gap
    }

    /// The server's answer to our RESUME: what to tell the user.
    pub fn resumed(&mut self, server: &ServerAddr, name: &str, r: &Resumed) -> Option<Event> {
        let now = SystemTime::now();
        let ev = match (&self.at, r.outcome) {
            (None, _) => None,
            (Some(at), Outcome::Fresh) => Some(Event::Gap {
                server: server.clone(),
                from: at.heard,
                to: now,
                count: None,
                why: format!(
                    "{} did not say where to resume (protocol version 1, or the connection \
                     ended first)",
                    at.name
                ),
            }),
            (Some(_), Outcome::Complete) => Some(Event::Resumed {
                server: server.clone(),
                replayed: r.replayed,
            }),
            (Some(at), Outcome::UnknownEpoch) => Some(Event::Gap {
                server: server.clone(),
                from: at.heard,
                to: if r.to_ms == 0 { now } else { time(r.to_ms) },
                count: None,
                why: if at.name == name {
                    format!("{name} restarted and no longer holds what was sent meanwhile")
                } else {
                    format!(
                        "failed over from {} to {name}, which does not hold what was sent \
                         meanwhile",
                        at.name
                    )
                },
            }),
            (Some(at), Outcome::WindowPassed) => Some(Event::Gap {
                server: server.clone(),
                from: if r.from_ms == 0 {
                    at.heard
                } else {
                    time(r.from_ms)
                },
                to: if r.to_ms == 0 { now } else { time(r.to_ms) },
                count: r.lost,
                why: format!(
                    "{name} no longer holds them (older than its resume window); {} later \
                     message{} replayed",
                    r.replayed,
                    if r.replayed == 1 { " was" } else { "s were" }
                ),
            }),
        };
        self.went_live(name, Some(r.epoch), r.position);
        ev
    }

    fn went_live(&mut self, name: &str, epoch: Option<u64>, position: u64) {
        self.at = Some(Spot {
            name: name.to_string(),
            epoch,
            position,
            last_id: None,
            heard: SystemTime::now(),
        });
        self.live = true;
    }
}

/// Milliseconds since the Unix epoch, for JSON and display.
pub fn unix_ms(t: SystemTime) -> u64 {
    ms(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resumed(epoch: u64, outcome: Outcome) -> Resumed {
        Resumed {
            epoch,
            position: 10,
            outcome,
            replayed: 2,
            lost: Some(3),
            from_ms: 1_000,
            to_ms: 2_000,
        }
    }

    #[test]
    fn tracks_the_position_and_reports_every_gap() {
        let s = ServerAddr::parse("a:1").unwrap();
        let mut r = Resumption::default();
        assert_eq!(r.request(), Resume::default(), "nothing to resume yet");
        assert_eq!(r.resumed(&s, "a", &resumed(7, Outcome::Fresh)), None);
        assert_eq!(
            r.request(),
            Resume {
                epoch: 7,
                position: 10,
                last_id: None
            }
        );
        r.delivered(MessageId([1; 16]));
        assert_eq!(r.request().last_id, Some(MessageId([1; 16])));
        r.connecting();
        match r.resumed(&s, "a", &resumed(7, Outcome::Complete)) {
            Some(Event::Resumed { replayed: 2, .. }) => {}
            e => panic!("{e:?}"),
        }
        assert_eq!(
            r.request().last_id,
            None,
            "live again from the new position"
        );
        match r.resumed(&s, "a", &resumed(8, Outcome::UnknownEpoch)) {
            Some(Event::Gap {
                count: None, why, ..
            }) => assert!(why.contains("restarted"), "{why}"),
            e => panic!("{e:?}"),
        }
        match r.resumed(&s, "b", &resumed(9, Outcome::UnknownEpoch)) {
            Some(Event::Gap { why, .. }) => {
                assert!(why.contains("failed over from a to b"), "{why}")
            }
            e => panic!("{e:?}"),
        }
        match r.resumed(&s, "b", &resumed(9, Outcome::WindowPassed)) {
            Some(Event::Gap {
                count: Some(3),
                from,
                to,
                ..
            }) => assert_eq!((ms(from), ms(to)), (1_000, 2_000)),
            e => panic!("{e:?}"),
        }
        assert!(matches!(
            r.version1(&s, "c"),
            Some(Event::Gap { count: None, .. })
        ));
        assert_eq!(
            r.request(),
            Resume::default(),
            "a version 1 server has no epoch"
        );
        match r.resumed(&s, "d", &resumed(5, Outcome::Fresh)) {
            Some(Event::Gap { why, .. }) => assert!(why.contains("c did not say"), "{why}"),
            e => panic!("{e:?}"),
        }
    }
}
