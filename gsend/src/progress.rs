//! What gsend says while it works, and when it gives up waiting for a server.
//!
//! [`Progress`] follows the client's events: it prints connection trouble as it
//! happens (a note), keeps the notes that only matter once a message really goes
//! out ("no key for ...: sending in clear") until a server is reached, and tells
//! when no server can be reached at all, so that a one-shot gsend fails within
//! seconds instead of waiting out its whole `--timeout`.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::time::Duration;

use anyhow::anyhow;
use gale_client::{describe_error, Client, Event, Events, ServerAddr};
use gale_proto::{names, Reserved};
use tokio::sync::watch;
use tokio::time::{sleep_until, Instant};

/// A gsend that has reached no server may give up this long after it started,
/// once every server has failed (unless `--timeout` was given, or `--lines`).
pub const FAIL_FAST: Duration = Duration::from_secs(5);

/// What the connection has done so far.
#[derive(Debug, Default)]
struct State {
    /// The server connected to now.
    connected: Option<String>,
    /// Each server's latest failure to connect: when, and why.
    failures: HashMap<String, (Instant, String)>,
    /// The latest trouble, for the timeout message.
    problem: Option<String>,
    /// Notes printed once a server is reached.
    waiting: Vec<String>,
    /// A server whose TCP connection is open, whose handshake is not answered yet.
    handshaking: Option<String>,
    /// Why the client stopped: a server refused it for good.
    refused: Option<String>,
}

/// The connection's state as gsend reports it; shared by the task that reads the
/// client's events ([`Progress::watch`]) and the code that waits on them.
pub struct Progress {
    quiet: bool,
    servers: Vec<String>,
    started: Instant,
    state: watch::Sender<State>,
}

/// Every server has failed to connect since `since`, and it is at least
/// [`FAIL_FAST`] after `started`, with no connection now: the line that says so,
/// naming each server and its error.
fn unreachable(
    state: &State,
    servers: &[String],
    started: Instant,
    since: Instant,
    now: Instant,
) -> Option<String> {
    if state.connected.is_some() || now < started + FAIL_FAST {
        return None;
    }
    let each: Option<Vec<String>> = servers
        .iter()
        .map(|s| match state.failures.get(s) {
            Some((at, why)) if *at >= since => Some(format!("{s} ({why})")),
            _ => None,
        })
        .collect();
    Some(cannot_reach(&each?))
}

/// The line for a gsend that reached no server: `each` names a server and why.
fn cannot_reach(each: &[String]) -> String {
    format!(
        "cannot reach any server: {}; is galed running there? Use -s or GALE_SERVER to \
         choose a server, or --timeout SECS to keep trying that long",
        each.join(", ")
    )
}

impl Progress {
    pub fn new(servers: &[ServerAddr], quiet: bool) -> Progress {
        Progress {
            quiet,
            servers: servers.iter().map(ToString::to_string).collect(),
            started: Instant::now(),
            state: watch::channel(State::default()).0,
        }
    }

    /// A note for a person: printed now, unless quiet.
    pub fn note(&self, line: &str) {
        if !self.quiet {
            eprintln!("{line}");
        }
    }

    /// A note that only matters if the message goes out: printed once a server
    /// is reached (at once if one is), never if none is.
    pub fn note_when_connected(&self, line: String) {
        if self.quiet {
            return;
        }
        self.state.send_modify(|s| {
            if s.connected.is_some() {
                eprintln!("{line}");
            } else {
                s.waiting.push(line);
            }
        });
    }

    /// Follows the client's events until they end: notes connection trouble
    /// (each distinct problem once between connections), always reports messages
    /// the server dropped.
    pub async fn watch(&self, mut events: Events) {
        let mut printed = HashSet::new();
        while let Some(ev) = events.next().await {
            let (line, note, lost) = match ev {
                Event::Handshaking { server } => {
                    self.state
                        .send_modify(|s| s.handshaking = Some(server.to_string()));
                    continue;
                }
                Event::Connected { server, .. } => {
                    printed.clear();
                    self.state.send_modify(|s| {
                        s.handshaking = None;
                        s.connected = Some(server.to_string());
                        s.problem = None;
                        for line in s.waiting.drain(..) {
                            eprintln!("{line}");
                        }
                    });
                    continue;
                }
                Event::ConnectFailed { server, error } => {
                    let line = format!("cannot connect to {server}: {error}");
                    self.state.send_modify(|s| {
                        s.handshaking = None;
                        s.failures
                            .insert(server.to_string(), (Instant::now(), error));
                    });
                    (line, true, true)
                }
                Event::Disconnected { server, reason } => (
                    format!("connection to {server} lost ({reason})"),
                    true,
                    true,
                ),
                Event::Refused { server, code, text } => {
                    // The client has stopped; run() says why, as its error.
                    let why = format!(
                        "{server} refused this gsend: {} (not retrying: the same request \
                         would be refused again)",
                        describe_error(code, &text)
                    );
                    self.state.send_modify(|s| {
                        s.handshaking = None;
                        s.connected = None;
                        s.refused = Some(why);
                    });
                    continue;
                }
                Event::PublishDropped { id, reason } => {
                    (format!("message {id} dropped: {reason}"), false, false)
                }
                // The server's own reports to this publisher (such as a private
                // message it did not offer to original-Gale clients).
                Event::Message(d)
                    if d.message
                        .to
                        .iter()
                        .any(|l| l.reserved() == Some(Reserved::Server)) =>
                {
                    match d.fragments().and_then(|f| f.text(names::MESSAGE_BODY)) {
                        Some(body) => (format!("server: {body}"), false, false),
                        None => continue,
                    }
                }
                Event::Reconnecting { .. }
                | Event::Subscribed { .. }
                | Event::Message(_)
                | Event::Undecodable { .. }
                | Event::Lossage(_)
                | Event::Resumed { .. }
                | Event::Gap { .. }
                | Event::InboxOpened { .. }
                | Event::InboxRefused { .. }
                | Event::InboxDone { .. }
                | Event::InboxGap { .. } => continue,
            };
            self.state.send_modify(|s| {
                if lost {
                    s.connected = None;
                }
                s.problem = Some(line.clone());
            });
            if !(note && self.quiet) && printed.insert(line.clone()) {
                eprintln!("gsend: {line}");
            }
        }
    }

    /// Why the client stopped, if a server refused it for good.
    pub fn refusal(&self) -> Option<String> {
        self.state.borrow().refused.clone()
    }

    /// Resolves when a server has refused the client for good, with the reason.
    async fn refused(&self) -> String {
        let mut state = self.state.subscribe();
        loop {
            if let Some(why) = &state.borrow_and_update().refused {
                return why.clone();
            }
            if state.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// Why no server was reached so far: each server and its latest error.
    pub fn unreached(&self) -> String {
        let s = self.state.borrow();
        let each: Vec<String> = self
            .servers
            .iter()
            .map(|srv| match s.failures.get(srv) {
                Some((_, why)) => format!("{srv} ({why})"),
                None => format!("{srv} (no answer yet)"),
            })
            .collect();
        cannot_reach(&each)
    }

    /// Resolves when no server can be reached: every one has failed since
    /// `since`, and [`FAIL_FAST`] has passed since gsend started. Never resolves
    /// while a server is connected.
    async fn unreachable(&self, since: Instant) -> String {
        let mut state = self.state.subscribe();
        let fail_fast_at = self.started + FAIL_FAST;
        loop {
            let now = Instant::now();
            if let Some(why) = unreachable(
                &state.borrow_and_update(),
                &self.servers,
                self.started,
                since,
                now,
            ) {
                return why;
            }
            tokio::select! {
                changed = state.changed() => if changed.is_err() {
                    return std::future::pending().await;
                },
                _ = sleep_until(fail_fast_at), if now < fail_fast_at => {}
            }
        }
    }

    /// Runs `work`, unless a server refuses the client for good first, or
    /// `fail_fast` and no server can be reached (every one has failed since `work`
    /// began): then the error that says so.
    pub async fn unless_unreachable<T>(
        &self,
        fail_fast: bool,
        work: impl Future<Output = T>,
    ) -> anyhow::Result<T> {
        let since = Instant::now();
        tokio::select! {
            out = work => Ok(out),
            why = self.unreachable(since), if fail_fast => Err(anyhow!(why)),
            why = self.refused() => Err(anyhow!(why)),
        }
    }

    /// Waits for the server to confirm everything published, within `timeout`
    /// seconds (0: forever); with `fail_fast`, gives up sooner if no server can be
    /// reached at all.
    pub async fn flush(
        &self,
        client: &Client,
        timeout: u64,
        fail_fast: bool,
    ) -> anyhow::Result<()> {
        let flush = async {
            if timeout == 0 {
                return client.flush().await.map_err(|e| anyhow!(e));
            }
            match tokio::time::timeout(Duration::from_secs(timeout), client.flush()).await {
                Ok(done) => done.map_err(|e| anyhow!(e)),
                Err(_) => Err(self.timed_out(timeout)),
            }
        };
        self.unless_unreachable(fail_fast, flush).await?
    }

    fn timed_out(&self, timeout: u64) -> anyhow::Error {
        let s = self.state.borrow();
        let last = match (&s.connected, &s.handshaking, &s.problem) {
            (Some(server), _, _) => format!("connected to {server}, but it did not confirm"),
            (None, Some(server), _) => {
                format!("{server} accepted the connection but has not answered the handshake")
            }
            (None, None, Some(p)) => format!("last: {p}"),
            (None, None, None) => "no answer yet".to_string(),
        };
        anyhow!(
            "could not deliver to {} within {timeout} s ({last}); is galed running there? \
             Use -s or GALE_SERVER to choose a server, --timeout to wait longer",
            self.servers.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gives_up_only_when_every_server_failed_lately_and_long_enough() {
        let t0 = Instant::now();
        let servers = vec!["a:1".to_string(), "b:2".to_string()];
        let mut s = State::default();
        let later = t0 + FAIL_FAST;
        let fail = |s: &mut State, who: &str, at| {
            s.failures
                .insert(who.to_string(), (at, "connection refused".to_string()));
        };
        fail(&mut s, "a:1", t0);
        assert_eq!(unreachable(&s, &servers, t0, t0, later), None, "b untried");
        fail(&mut s, "b:2", t0 + Duration::from_secs(1));
        let why = unreachable(&s, &servers, t0, t0, later).unwrap();
        assert!(
            why.contains("a:1 (connection refused), b:2 (connection refused)"),
            "{why}"
        );
        // Not before FAIL_FAST, not with failures older than the wait, not connected.
        let soon = t0 + Duration::from_secs(1);
        assert_eq!(unreachable(&s, &servers, t0, t0, soon), None);
        assert_eq!(unreachable(&s, &servers, t0, soon, later), None);
        s.connected = Some("b:2".into());
        assert_eq!(unreachable(&s, &servers, t0, t0, later), None);
    }
}
