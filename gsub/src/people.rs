//! gsub's side of people (docs/protocol.md "People"): the presence it
//! announces and changes live through its control socket, the receipts, ping
//! answers and away replies it sends, and what it subscribes to for them. The
//! rules of what is answered are `gale_security::people::answer`'s.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use gale_client::{Client, ClientConfig};
use gale_keys::{KeyStore, SecretKey};
use gale_proto::{Location, SubEntry};
use gale_security::incoming::Opening;
use gale_security::people::answer::{Answerer, Away, Kind, Visibility};
use gale_security::people::control::{Command, ControlSocket, Incoming, Request};
use gale_security::people::{idle, is_ask, is_who_reply, receipt_request, who_location, Status};
use gale_security::presence as signed_presence;
use tokio::sync::mpsc;

/// What this gsub is and says about its person.
pub struct People {
    who: Location,
    key: SecretKey,
    sender: Option<String>,
    class: &'static str,
    status: Status,
    tty: Option<PathBuf>,
    /// Publishing presence notices (and a will): `-p`, or a presence set
    /// through the socket, unless stealthy or visible only to the verified.
    announce: bool,
    /// `None` when stealthy: then nothing is answered.
    answerer: Option<Answerer>,
    _socket: Option<ControlSocket>,
    requests: Option<mpsc::Receiver<Incoming>>,
    connections: u32,
}

/// The options that shape it.
pub struct Options {
    pub presence: Option<String>,
    pub device: Option<String>,
    pub stealth: bool,
    pub visibility: Visibility,
    pub away: Option<Away>,
}

impl People {
    /// Sets up presence for `who` with `key`: the will in `config`, the extra
    /// subscriptions (the domain's "who is around" asks) and the control socket.
    pub fn new(
        who: Location,
        key: SecretKey,
        sender: Option<String>,
        class: &'static str,
        opts: Options,
        config: &mut ClientConfig,
        gale_dir: &std::path::Path,
    ) -> anyhow::Result<People> {
        let status = Status {
            presence: opts
                .presence
                .clone()
                .unwrap_or_else(|| gale_client::presence::DEFAULT_PRESENCE.into()),
            device: Some(opts.device.unwrap_or_else(idle::default_device)),
            active_at: None,
        };
        let announce =
            opts.presence.is_some() && !opts.stealth && opts.visibility == Visibility::Anyone;
        let answerer = (!opts.stealth).then(|| {
            let mut a = Answerer::new(
                who.clone(),
                key.clone(),
                sender.clone(),
                class.into(),
                opts.visibility,
            );
            a.away = opts.away;
            a
        });
        if answerer.is_some() {
            config
                .subscriptions
                .entries
                .push(SubEntry::include(who_location(who.domain())?));
        }
        let (socket, requests) = match ControlSocket::bind(gale_dir) {
            Ok((s, r)) => (Some(s), Some(r)),
            Err(e) => {
                eprintln!("gsub: warning: no control socket, so --set-presence cannot reach this gsub: {e}");
                (None, None)
            }
        };
        let mut p = People {
            who,
            key,
            sender,
            class,
            status,
            tty: idle::terminal(),
            announce,
            answerer,
            _socket: socket,
            requests,
            connections: 0,
        };
        p.status.active_at = p.idle();
        if p.announce {
            config.will = Some(p.will()?);
        }
        Ok(p)
    }

    /// Entries this added to the subscription list (the domain's "who is
    /// around" asks).
    pub fn subscriptions(&self) -> usize {
        usize::from(self.answerer.is_some())
    }

    fn idle(&self) -> Option<gale_proto::Timestamp> {
        self.tty.as_deref().and_then(idle::last_active)
    }

    /// The status now, with a fresh idle time.
    fn status_now(&mut self) -> Status {
        self.status.active_at = self.idle();
        self.status.clone()
    }

    fn will(&self) -> anyhow::Result<gale_client::Will> {
        Ok(signed_presence::will_from(
            &self.who,
            self.status.device.clone(),
            self.sender.clone(),
            self.class.into(),
            self.key.clone(),
        )?)
    }

    /// Publishes the current presence notice, if announcing.
    fn announce_now(&mut self, client: &Client) {
        if !self.announce {
            return;
        }
        let status = self.status_now();
        match signed_presence::status_notice(
            &self.who,
            &status,
            self.sender.as_deref(),
            self.class,
            &self.key,
        ) {
            Ok(m) => {
                if let Err(e) = client.publish(m) {
                    eprintln!("gsub: presence notice not sent: {e}");
                }
            }
            Err(e) => eprintln!("gsub: presence notice not sent: {e}"),
        }
    }

    /// Each time the subscriptions are confirmed: the notice (again after a
    /// reconnect, so that watchers who saw the will see the person back).
    pub fn subscribed(&mut self, client: &Client) {
        self.connections += 1;
        self.announce_now(client);
    }

    /// The goodbye notice in place of the will, on a clean exit.
    pub fn goodbye(&mut self, client: &Client) {
        if self.announce {
            self.status.presence = gale_client::presence::QUIT.into();
            self.announce_now(client);
        }
    }

    /// The next request on the control socket (pending forever without one).
    pub async fn request(&mut self) -> Option<Incoming> {
        match &mut self.requests {
            Some(r) => r.recv().await,
            None => std::future::pending().await,
        }
    }

    /// Carries out a control request and answers it.
    pub async fn handle(&mut self, client: &Client, inc: Incoming) {
        let Incoming { request, reply } = inc;
        let answer = self.apply(client, request).await;
        let _ = reply.send(answer);
    }

    async fn apply(&mut self, client: &Client, request: Request) -> String {
        let device = self.status.device.clone().unwrap_or_default();
        if request.device.as_ref().is_some_and(|d| *d != device) {
            return "skip".into();
        }
        match request.command {
            Command::Presence(state) => {
                self.status.presence = state;
                let stealthy = self.answerer.is_none();
                let public = self
                    .answerer
                    .as_ref()
                    .is_some_and(|a| a.visibility == Visibility::Anyone);
                if !stealthy && public && !self.announce {
                    self.announce = true;
                }
                if self.announce {
                    match self.will() {
                        Ok(w) => {
                            let _ = client.set_will(Some(w)).await;
                        }
                        Err(e) => eprintln!("gsub: will not set: {e}"),
                    }
                }
                self.announce_now(client);
            }
            Command::Away(text) => match &mut self.answerer {
                Some(a) => {
                    a.away = text.map(|text| Away {
                        text,
                        period: a
                            .away
                            .as_ref()
                            .map(|w| w.period)
                            .unwrap_or(gale_security::people::answer::DEFAULT_AWAY_PERIOD),
                    })
                }
                None => return "error stealthy (-a): this gsub answers nothing".into(),
            },
            Command::Status => {}
        }
        format!("ok {device} {}", self.status.presence)
    }

    /// After a message was shown: its receipt, and an away reply.
    pub fn shown(&mut self, client: &Client, store: &KeyStore, o: &Opening) {
        self.answer(client, store, o);
    }

    /// A ping or "who is around" ask on a query location: answers it; returns
    /// true if it is to be shown (a ping, not a lookup).
    pub fn ask(&mut self, client: &Client, store: &KeyStore, o: &Opening) -> bool {
        let d = &o.delivery;
        let Some(f) = d.fragments() else {
            return false;
        };
        if !is_ask(&d.message.to, f) {
            return false;
        }
        self.answer(client, store, o);
        let who = receipt_request(f).is_some_and(|r| is_who_reply(&r));
        !who
    }

    fn answer(&mut self, client: &Client, store: &KeyStore, o: &Opening) {
        if self.answerer.is_none() {
            return;
        }
        let status = self.status_now();
        let Some(a) = &mut self.answerer else {
            return;
        };
        let checked = o.missing_key.is_none();
        for answer in a.answer(store, &o.delivery, checked, &status, Instant::now()) {
            if let Err(e) = client.publish(answer.message) {
                eprintln!(
                    "gsub: {} to {} not sent: {e}",
                    match answer.kind {
                        Kind::Away => "away reply",
                        Kind::Receipt => "receipt",
                        Kind::Ping | Kind::Who => "ping answer",
                    },
                    answer.to
                );
            }
        }
    }
}

/// The request `gsub --set-presence` / `--set-away` sends to every running gsub
/// of this user (or only to the one on `device`); prints each answer. Returns
/// an error when none could be changed.
pub async fn set_remote(
    gale_dir: PathBuf,
    device: Option<String>,
    command: Command,
) -> anyhow::Result<()> {
    let request = Request { device, command };
    let answers = gale_security::people::control::send_all(&gale_dir, &request)
        .await
        .context("cannot change presence")?;
    let mut changed = 0;
    for (path, line) in &answers {
        if let Some(rest) = line.strip_prefix("ok ") {
            changed += 1;
            let (dev, state) = rest.split_once(' ').unwrap_or((rest, ""));
            println!("{dev}: {state}");
        } else if let Some(why) = line.strip_prefix("error ") {
            eprintln!("gsub: {}: {why}", path.display());
        }
    }
    if changed == 0 {
        anyhow::bail!(
            "no running gsub {}changed ({} asked)",
            request
                .device
                .as_deref()
                .map(|d| format!("on device {d:?} "))
                .unwrap_or_default(),
            answers.len()
        );
    }
    Ok(())
}
