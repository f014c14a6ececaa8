//! The task that owns the connection: connects and fails over, replays state on
//! every new connection, confirms publishes with PING/PONG, and feeds [`Events`].
//!
//! Publishes carry a sequence number. A PING sent after publish `n` is answered
//! only after the server has processed everything before it, so its PONG confirms
//! every publish up to `n`; until then they stay in `pending` and are sent again on
//! the next connection.
//!
//! [`Events`]: crate::Events

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::StreamExt;
use std::collections::BTreeSet;

use gale_proto::inbox::{InboxOpen, FLAG_DRAIN};
use gale_proto::limits::{INBOX_VERSION, MAX_SUB_ENTRIES, RESUME_VERSION};
use gale_proto::{ErrorCode, Frame, SubscriptionList};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep, sleep_until, Instant};

use crate::client::{Command, Outgoing};
use crate::config::ClientConfig;
use crate::conn::{describe_error, describe_io, human, is_permanent, Conn, End, OpenError};
use crate::event::{Delivery, Event};
use crate::recent_ids::RecentIds;
use crate::resume::Resumption;
use crate::server::{parse_server_list, ServerAddr, DEFAULT_SERVER};
use crate::will::Will;

/// A connection that lasted this long was healthy: after losing it, reconnect at
/// once. One that died sooner counts as a failure and waits for the back-off, so a
/// server that accepts and drops at once is not hammered.
const STABLE_CONNECTION: Duration = Duration::from_secs(2);
/// Most commands handled before the next PING and flush to the socket.
const BATCH: usize = 64;

struct Pending {
    seq: u64,
    out: Outgoing,
}

pub(crate) struct Task {
    cfg: ClientConfig,
    cmds: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    subs: SubscriptionList,
    will: Option<Will>,
    /// Publishes not yet confirmed, in sequence order.
    pending: VecDeque<Pending>,
    next_seq: u64,
    /// Flush waiters: resolved when no publish up to the sequence number is pending.
    flushes: Vec<(u64, oneshot::Sender<()>)>,
    closing: Option<oneshot::Sender<()>>,
    recent: RecentIds,
    /// Events waiting for room in the channel; while any wait, the socket is not read.
    backlog: VecDeque<Event>,
    next_token: u64,
    /// The PING that follows the latest SUBSCRIBE: its PONG means the server has
    /// installed the subscriptions, which is when [`Event::Subscribed`] is sent.
    sub_token: Option<u64>,
    /// Where we stand on the server, for RESUME after a reconnect.
    resumption: Resumption,
    /// The inbox on this connection: what to acknowledge.
    inbox: InboxAcks,
}

/// Acknowledgements of inbox messages. The server takes one seq meaning
/// "everything up to here"; the application acknowledges each message when it
/// has shown it, in any order, and duplicates (already shown live) are
/// acknowledged here at once.
#[derive(Default)]
struct InboxAcks {
    /// Handed to the application and not yet acknowledged by it.
    shown: BTreeSet<u64>,
    /// The highest seq received on this connection.
    highest: u64,
    /// The last seq acknowledged to the server.
    sent: u64,
}

impl InboxAcks {
    /// What may be acknowledged now: everything below the first message the
    /// application still holds.
    fn ackable(&self) -> u64 {
        match self.shown.first() {
            Some(&first) => first - 1,
            None => self.highest,
        }
    }
}

impl Task {
    pub fn new(
        mut cfg: ClientConfig,
        cmds: mpsc::Receiver<Command>,
        events: mpsc::Sender<Event>,
    ) -> Task {
        if cfg.servers.is_empty() {
            cfg.servers = parse_server_list(DEFAULT_SERVER).expect("default server parses");
        }
        Task {
            subs: std::mem::take(&mut cfg.subscriptions),
            will: cfg.will.take(),
            recent: RecentIds::new(cfg.dedup_capacity),
            cfg,
            cmds,
            events,
            pending: VecDeque::new(),
            next_seq: 1,
            flushes: Vec::new(),
            closing: None,
            backlog: VecDeque::new(),
            next_token: 1,
            sub_token: None,
            resumption: Resumption::default(),
            inbox: InboxAcks::default(),
        }
    }

    pub async fn run(mut self) {
        let n = self.cfg.servers.len();
        let (mut start, mut failures) = (0usize, 0u32);
        // Servers that refused the handshake for good: not tried again.
        let mut refused = vec![false; n];
        loop {
            let mut got = None;
            for k in 0..n {
                let i = (start + k) % n;
                if refused[i] {
                    continue;
                }
                let server = self.cfg.servers[i].clone();
                let error = match self.connect(i).await {
                    None => return,
                    Some(Ok(conn)) => {
                        got = Some((i, conn));
                        break;
                    }
                    Some(Err(OpenError::Failed(error))) => error,
                    Some(Err(OpenError::Refused { code, text })) if is_permanent(code) => {
                        refused[i] = true;
                        if refused.iter().all(|&r| r) {
                            return self.refused(server, code, text).await;
                        }
                        format!(
                            "refused: {}; not trying this server again",
                            describe_error(code, &text)
                        )
                    }
                    Some(Err(OpenError::Refused { code, text })) => {
                        format!("refused for now: {}", describe_error(code, &text))
                    }
                };
                self.emit(Event::ConnectFailed { server, error }).await;
            }
            if let Some((i, mut conn)) = got {
                tracing::debug!(server = %conn.server, pending = self.pending.len(), "connected");
                let began = Instant::now();
                let (server, name) = (conn.server.clone(), conn.name.clone());
                self.emit(Event::Connected {
                    server: server.clone(),
                    name,
                })
                .await;
                let end = match self.replay(&mut conn).await {
                    Ok(()) => self.serve(&mut conn).await,
                    Err(end) => end,
                };
                drop(conn);
                while let Some(ev) = self.backlog.pop_front() {
                    self.emit(ev).await;
                }
                tracing::debug!(?end, "connection ended");
                match end {
                    End::Stop => return self.finish(),
                    End::Lost(reason) => self.emit(Event::Disconnected { server, reason }).await,
                    // About what this client asks (its subscriptions, its
                    // messages), which every server would refuse alike.
                    End::Refused { code, text } => return self.refused(server, code, text).await,
                }
                if self.closing.is_some() {
                    return self.finish();
                }
                start = (i + 1) % n;
                if began.elapsed() >= STABLE_CONNECTION {
                    failures = 0;
                    continue;
                }
            }
            let delay = self
                .cfg
                .backoff
                .delay(failures, gale_net::backoff::jitter());
            failures = failures.saturating_add(1);
            self.emit(Event::Reconnecting {
                attempt: failures,
                delay,
            })
            .await;
            if !self.pause(delay).await {
                return self.finish();
            }
        }
    }

    /// Stops for good after a permanent refusal, saying so as the last event.
    async fn refused(&mut self, server: ServerAddr, code: ErrorCode, text: String) {
        tracing::debug!(%server, ?code, "refused: {text}");
        self.emit(Event::Refused { server, code, text }).await;
        self.finish();
    }

    fn finish(&mut self) {
        if let Some(done) = self.closing.take() {
            let _ = done.send(());
        }
    }

    async fn emit(&mut self, ev: Event) {
        // A dropped receiver means nobody listens; carry on regardless.
        let _ = self.events.send(ev).await;
    }

    /// Queues an event without waiting; see `backlog`.
    fn push_event(&mut self, ev: Event) {
        if self.backlog.is_empty() {
            match self.events.try_send(ev) {
                Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
                Err(mpsc::error::TrySendError::Full(ev)) => self.backlog.push_back(ev),
            }
        } else {
            self.backlog.push_back(ev);
        }
    }

    /// Tries server `i`, still taking commands meanwhile. `None`: stop.
    async fn connect(&mut self, i: usize) -> Option<Result<Conn, OpenError>> {
        let server = self.cfg.servers[i].clone();
        let limit = self.cfg.connect_timeout;
        let stream = match self.offline(Conn::connect(&server, limit)).await? {
            Ok(s) => s,
            Err(e) => return Some(Err(e)),
        };
        self.emit(Event::Handshaking {
            server: server.clone(),
        })
        .await;
        let (agent, keepalive) = (self.cfg.agent.clone(), self.cfg.keepalive);
        self.offline(Conn::handshake(server, stream, agent, keepalive, limit))
            .await
    }

    /// Runs `work` while not connected, still taking commands. `None`: stop.
    async fn offline<T>(&mut self, work: impl std::future::Future<Output = T>) -> Option<T> {
        tokio::pin!(work);
        loop {
            tokio::select! {
                r = &mut work => return Some(r),
                cmd = self.cmds.recv() => if !self.offline_command(cmd) {
                    return None;
                },
            }
        }
    }

    /// Waits `delay`, still taking commands. False: stop.
    async fn pause(&mut self, delay: Duration) -> bool {
        let wake = sleep(delay);
        tokio::pin!(wake);
        loop {
            tokio::select! {
                _ = &mut wake => return true,
                cmd = self.cmds.recv() => if !self.offline_command(cmd) {
                    return false;
                },
            }
        }
    }

    /// Handles a command while not connected. False: stop.
    fn offline_command(&mut self, cmd: Option<Command>) -> bool {
        match cmd {
            None => return false,
            Some(Command::Publish(out)) => {
                self.enqueue(out);
            }
            Some(Command::Flush(done)) => self.add_flush(done),
            Some(Command::Subscribe(list)) => self.subs = list,
            Some(Command::SetWill(will)) => self.will = will,
            // The connection is gone: the server sends it again on the next.
            Some(Command::Ack(_)) => {}
            Some(Command::Close { clear_will, done }) => {
                if clear_will {
                    self.will = None;
                }
                self.closing = Some(done);
                return false;
            }
        }
        true
    }

    fn enqueue(&mut self, out: Outgoing) -> u64 {
        // A replay after a reconnect may hold our own message: it is no news to us.
        self.recent.insert(out.message.id);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.pending.push_back(Pending { seq, out });
        seq
    }

    fn add_flush(&mut self, done: oneshot::Sender<()>) {
        self.flushes.push((self.next_seq - 1, done));
        self.resolve_flushes();
    }

    fn resolve_flushes(&mut self) {
        let first_pending = self.pending.front().map_or(u64::MAX, |p| p.seq);
        for (target, done) in std::mem::take(&mut self.flushes) {
            if target < first_pending {
                let _ = done.send(());
            } else {
                self.flushes.push((target, done));
            }
        }
    }

    /// Everything the server must know on a new connection, in order: will,
    /// subscriptions, then every unconfirmed publish. The will goes first so that
    /// the server's confirmation of the subscriptions ([`Event::Subscribed`]) also
    /// means the will is in place.
    async fn replay(&mut self, conn: &mut Conn) -> Result<(), End> {
        self.sub_token = None;
        self.resumption.connecting();
        if self.will.is_some() {
            self.write_will(conn).await?;
        }
        if !self.subs.entries.is_empty() {
            if conn.version < RESUME_VERSION {
                if let Some(gap) = self.resumption.version1(&conn.server, &conn.name) {
                    self.push_event(gap);
                }
                self.write_subs(conn, None).await?;
            } else {
                let resume = self.resumption.request();
                self.write_subs(conn, Some(resume)).await?;
            }
        }
        self.inbox = InboxAcks::default();
        if let Some(ib) = &self.cfg.inbox {
            if conn.version >= INBOX_VERSION {
                conn.write(Frame::InboxHello).await?;
            } else {
                self.push_event(Event::InboxRefused {
                    server: conn.server.clone(),
                    name: ib.name.clone(),
                    status: gale_proto::InboxStatus::Unavailable,
                    text: format!(
                        "this server speaks protocol version {}, which has no inboxes (3 has)",
                        conn.version
                    ),
                });
            }
        }
        self.drop_oversize(conn.max_frame);
        for p in &self.pending {
            conn.write(Frame::Publish(p.out.message.clone())).await?;
            conn.sent = p.seq;
        }
        if conn.sent > conn.pinged {
            self.ping(conn).await?;
        }
        conn.flush().await
    }

    /// With `resume`, RESUME goes just before the last SUBSCRIBE, which replays
    /// what was missed against the whole list.
    async fn write_subs(
        &mut self,
        conn: &mut Conn,
        resume: Option<gale_proto::Resume>,
    ) -> Result<(), End> {
        let entries = &self.subs.entries;
        if entries.is_empty() {
            return conn
                .write(Frame::Subscribe {
                    replace: true,
                    entries: Vec::new(),
                })
                .await;
        }
        let last = entries.len().div_ceil(MAX_SUB_ENTRIES) - 1;
        for (k, chunk) in entries.chunks(MAX_SUB_ENTRIES).enumerate() {
            if let (Some(r), true) = (resume, k == last) {
                conn.write(Frame::Resume(r)).await?;
            }
            conn.write(Frame::Subscribe {
                replace: k == 0,
                entries: chunk.to_vec(),
            })
            .await?;
        }
        self.sub_token = Some(self.ping(conn).await?);
        Ok(())
    }

    /// Each connection's will is made afresh ([`Will::make`]): wills of different
    /// connections are different events, and receivers would drop a repeated id
    /// as a duplicate (and a signature covers the id, so it is made again too).
    async fn write_will(&mut self, conn: &mut Conn) -> Result<(), End> {
        let will = self.will.as_ref().map(Will::make);
        conn.write(Frame::Will(will)).await
    }

    /// Drops publishes larger than this server's frame limit, which it could never
    /// take, and says so.
    fn drop_oversize(&mut self, max_frame: u32) {
        let fits = |p: &Pending| p.out.message.encoded_len() < max_frame as usize;
        if self.pending.iter().all(fits) {
            return;
        }
        let (keep, drop): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(fits);
        self.pending = keep;
        for p in drop {
            self.push_event(Event::PublishDropped {
                id: p.out.message.id,
                reason: format!(
                    "{} bytes exceeds the server's frame limit of {max_frame}",
                    p.out.message.encoded_len() + 1
                ),
            });
        }
        self.resolve_flushes();
    }

    async fn ping(&mut self, conn: &mut Conn) -> Result<u64, End> {
        let token = self.next_token;
        self.next_token += 1;
        conn.ping(token).await?;
        Ok(token)
    }

    async fn serve(&mut self, conn: &mut Conn) -> End {
        match self.serve_loop(conn).await {
            Ok(never) => match never {},
            Err(End::Stop) if conn.close_token.is_some() => {
                conn.shutdown().await;
                End::Stop
            }
            Err(end) => end,
        }
    }

    async fn serve_loop(&mut self, conn: &mut Conn) -> Result<std::convert::Infallible, End> {
        // A permit borrows its sender; borrowing a clone leaves `self` free.
        let events = self.events.clone();
        loop {
            let reading = self.backlog.is_empty();
            let ping_at = conn.last_send + conn.keepalive;
            // Silence only counts while we read: with a backlog we are the slow side.
            let dead_at = conn
                .awaiting
                .filter(|_| reading)
                .map(|t| t + conn.keepalive * 2);
            tokio::select! {
                biased;
                cmd = self.cmds.recv() => {
                    let Some(cmd) = cmd else { return Err(End::Stop) };
                    self.online_command(cmd, conn).await?;
                    for _ in 1..BATCH {
                        match self.cmds.try_recv() {
                            Ok(cmd) => self.online_command(cmd, conn).await?,
                            Err(_) => break,
                        }
                    }
                }
                permit = events.reserve(), if !reading => match permit {
                    Ok(permit) => {
                        if let Some(ev) = self.backlog.pop_front() {
                            permit.send(ev);
                        }
                    }
                    Err(_) => self.backlog.clear(),
                },
                frame = conn.reader.next(), if reading => match frame {
                    None => return Err(End::Lost("server closed the connection".into())),
                    Some(Err(gale_proto::codec::CodecError::Io(e))) => {
                        return Err(End::Lost(describe_io(&e)))
                    }
                    Some(Err(e)) => return Err(End::Lost(format!("protocol error: {e}"))),
                    Some(Ok(frame)) => {
                        conn.awaiting = None;
                        self.on_frame(frame, conn).await?;
                    }
                },
                _ = sleep_until(ping_at) => {
                    self.ping(conn).await?;
                }
                _ = sleep_until(dead_at.unwrap_or(ping_at)), if dead_at.is_some() => {
                    return Err(End::Lost(format!(
                        "no answer from the server for {}",
                        human(conn.keepalive * 2)
                    )));
                }
            }
            if conn.sent > conn.pinged {
                self.ping(conn).await?;
            }
            let ack = self.inbox.ackable();
            if ack > self.inbox.sent {
                self.inbox.sent = ack;
                conn.write(Frame::InboxAck(ack)).await?;
            }
            conn.flush().await?;
        }
    }

    async fn online_command(&mut self, cmd: Command, conn: &mut Conn) -> Result<(), End> {
        match cmd {
            Command::Publish(out) => {
                let seq = self.enqueue(out);
                let before = self.pending.len();
                self.drop_oversize(conn.max_frame);
                if self.pending.len() == before {
                    let msg = self
                        .pending
                        .back()
                        .expect("just queued")
                        .out
                        .message
                        .clone();
                    conn.write(Frame::Publish(msg)).await?;
                    conn.sent = seq;
                }
            }
            Command::Flush(done) => self.add_flush(done),
            Command::Subscribe(list) => {
                self.subs = list;
                // A first list on this connection: where it goes live is what a
                // later reconnect resumes from.
                let resume = (!self.resumption.is_live() && conn.version >= RESUME_VERSION)
                    .then(|| self.resumption.request());
                self.write_subs(conn, resume).await?;
            }
            Command::SetWill(will) => {
                self.will = will;
                self.write_will(conn).await?;
            }
            Command::Ack(seq) => {
                self.inbox.shown.remove(&seq);
            }
            Command::Close { clear_will, done } => {
                if clear_will {
                    self.will = None;
                    conn.write(Frame::Will(None)).await?;
                }
                self.closing = Some(done);
                conn.close_token = Some(self.ping(conn).await?);
            }
        }
        Ok(())
    }

    async fn on_frame(&mut self, frame: Frame, conn: &mut Conn) -> Result<(), End> {
        self.resumption.heard();
        match frame {
            Frame::Deliver(message) => {
                self.resumption.delivered(message.id);
                if self.recent.insert(message.id) {
                    let id = message.id;
                    match Delivery::open(message) {
                        Ok(d) => self.push_event(Event::Message(d)),
                        Err(e) => self.push_event(Event::Undecodable {
                            id,
                            error: e.to_string(),
                        }),
                    }
                }
            }
            Frame::Ping(token) => conn.write(Frame::Pong(token)).await?,
            Frame::Pong(token) => {
                // PONGs come back in order; one for a token we never sent is ignored.
                if let Some(pos) = conn.pings.iter().position(|&(t, _)| t == token) {
                    let (_, mark) = conn.pings[pos];
                    conn.pings.drain(..=pos);
                    self.confirm(mark);
                }
                if self.sub_token == Some(token) {
                    self.sub_token = None;
                    self.push_event(Event::Subscribed {
                        server: conn.server.clone(),
                        entries: self.subs.entries.len(),
                    });
                }
                if conn.close_token == Some(token) {
                    return Err(End::Stop);
                }
            }
            Frame::Lossage(n) => self.push_event(Event::Lossage(n)),
            Frame::InboxChallenge(challenge) => {
                let Some(ib) = &self.cfg.inbox else {
                    return Ok(());
                };
                let mut open = InboxOpen {
                    flags: if ib.drain { FLAG_DRAIN } else { 0 },
                    name: ib.name.clone(),
                    device: ib.device.clone(),
                    key: ib.signer.public(),
                    locations: ib.locations.clone(),
                    signature: [0; 64],
                };
                match open.signed_bytes(&challenge) {
                    Ok(signed) => {
                        open.signature = ib.signer.sign(&signed);
                        conn.write(Frame::InboxOpen(open)).await?;
                    }
                    Err(e) => self.push_event(Event::InboxRefused {
                        server: conn.server.clone(),
                        name: ib.name.clone(),
                        status: gale_proto::InboxStatus::Refused,
                        text: format!("the request cannot be encoded: {e}"),
                    }),
                }
            }
            Frame::InboxState(st) => {
                let name = self
                    .cfg
                    .inbox
                    .as_ref()
                    .map_or_else(String::new, |i| i.name.clone());
                let device = self
                    .cfg
                    .inbox
                    .as_ref()
                    .map_or_else(String::new, |i| i.device.clone());
                if st.status.is_open() {
                    self.push_event(Event::InboxOpened {
                        server: conn.server.clone(),
                        name,
                        device,
                        created: st.status == gale_proto::InboxStatus::Created,
                        held: st.held,
                        dropped: st.dropped,
                        oldest_ms: st.oldest_ms,
                    });
                } else {
                    self.push_event(Event::InboxRefused {
                        server: conn.server.clone(),
                        name,
                        status: st.status,
                        text: st.text,
                    });
                }
            }
            Frame::Stored { seq, message } => {
                self.inbox.highest = self.inbox.highest.max(seq);
                if self.recent.insert(message.id) {
                    let id = message.id;
                    match Delivery::open(message) {
                        Ok(mut d) => {
                            d.inbox_seq = Some(seq);
                            self.inbox.shown.insert(seq);
                            self.push_event(Event::Message(d));
                        }
                        Err(e) => self.push_event(Event::Undecodable {
                            id,
                            error: e.to_string(),
                        }),
                    }
                }
            }
            Frame::InboxDone(d) => self.push_event(Event::InboxDone {
                replayed: d.replayed,
                live: d.live,
            }),
            Frame::InboxGap { count, text } => self.push_event(Event::InboxGap { count, text }),
            Frame::Resumed(r) => {
                if let Some(ev) = self.resumption.resumed(&conn.server, &conn.name, &r) {
                    self.push_event(ev);
                }
            }
            // An ERROR is the server's last frame: the connection is over.
            Frame::Error { code, text } if is_permanent(code) => {
                return Err(End::Refused { code, text })
            }
            Frame::Error { code, text } => {
                return Err(End::Lost(format!(
                    "the server closed it: {}",
                    describe_error(code, &text)
                )))
            }
            other => {
                return Err(End::Lost(format!(
                    "protocol error: the server sent a {:?} frame",
                    other.frame_type()
                )))
            }
        }
        Ok(())
    }

    /// The server has processed every publish up to `mark`.
    fn confirm(&mut self, mark: u64) {
        while self.pending.front().is_some_and(|p| p.seq <= mark) {
            self.pending.pop_front();
        }
        self.resolve_flushes();
    }
}
