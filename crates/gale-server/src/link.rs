//! Server-to-server links.
//!
//! A link is a TCP connection that speaks the client framing with HELLO role 1; the
//! HELLO's agent and the WELCOME's server field name the two servers. Either side
//! may dial. Over a link flow INTEREST frames (what the far side wants, as deltas
//! after a full sync), messages (DELIVER frames, forwarded only where wanted), and
//! PING/PONG keepalives. Each hop adds one to the message's hop count; a message at
//! the hop limit is dropped, and every message id is checked against the recent-id
//! cache, so a misconfigured cycle cannot storm or deliver twice.
//!
//! A configured link (`--link a:11512,b:11512`) is dialled by [`dial_loop`], which
//! tries each alternate in turn and backs off (jittered, capped) after a round in
//! which none answered, so a tree heals around a dead server when an alternate path
//! exists.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use gale_net::addr::{parse_server_list, ServerAddr};
use gale_net::backoff::{self, Backoff};
use gale_proto::frame::{self, ErrorCode, Frame, FrameType, Hello, Welcome};
use gale_proto::limits::{FRAME_HEADER_LEN, MAX_HOPS, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};
use gale_proto::message::HOPS_OFFSET;
use gale_proto::{KnownLocations, MessageView};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::federation::{LinkStats, NewLink};
use crate::flow::Routing;
use crate::outbox::write_loop;
use crate::outbox::{Kind, Outbox};
use crate::router::Router;
use crate::session::{self, describe, finish_writer, protocol, read_frames, End, Negotiated};

/// How long a dial may take to connect and complete its handshake.
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// A link that stayed up this long was healthy: redial at once when it breaks.
pub(crate) const STABLE_LINK: Duration = Duration::from_secs(5);
/// Outgoing queue of a link: links carry everything, so it is larger than a client's.
const LINK_QUEUE_FRAMES: usize = 262_144;
const LINK_QUEUE_BYTES: usize = 16 * 1024 * 1024;

/// Splits a `--link` value into its alternates (`host[:port],host[:port]`, Gale's
/// port where none is given).
pub fn parse_link(spec: &str) -> Result<Vec<ServerAddr>, String> {
    parse_server_list(spec)
        .map_err(|e| format!("--link {spec:?}: {e}; write host:port[,host:port]"))
}

/// Keeps one configured link up for as long as the server runs.
pub async fn dial_loop(
    router: Arc<Router>,
    alternates: Vec<ServerAddr>,
    shutdown: CancellationToken,
) {
    keep_up(&alternates, &shutdown, "link", |addr| {
        let router = router.clone();
        let shutdown = shutdown.clone();
        async move {
            let dialled = tokio::select! {
                _ = shutdown.cancelled() => return Attempt::Shutdown,
                d = tokio::time::timeout(DIAL_TIMEOUT, dial(&router, &addr)) => d,
            };
            let (stream, buf, peer, sa, agreed) = match dialled {
                Ok(Ok(d)) => d,
                Ok(Err(why)) => return Attempt::Failed(why),
                Err(_) => return Attempt::Failed(format!("no answer within {DIAL_TIMEOUT:?}")),
            };
            let began = Instant::now();
            tracing::info!(
                "link to {peer} ({addr}) is up (frames up to {} bytes)",
                agreed.max_frame
            );
            let end = run_link(&router, stream, buf, &peer, sa, true, agreed, &shutdown).await;
            if matches!(end, End::Shutdown) {
                return Attempt::Shutdown;
            }
            tracing::warn!("link to {peer} ({addr}) is down: {}", describe(&end));
            Attempt::Ran {
                stable: began.elapsed() >= STABLE_LINK,
            }
        }
    })
    .await
}

/// How one attempt at a link's alternate went.
pub(crate) enum Attempt {
    /// It came up and has ended; `stable` if it stayed up long enough to count
    /// as healthy ([`STABLE_LINK`]), which redials at once.
    Ran {
        stable: bool,
    },
    /// It did not come up, and why.
    Failed(String),
    Shutdown,
}

/// Tries each alternate in turn with `attempt`, and backs off (jittered, capped)
/// after a round in which none stayed up, until `shutdown`. `what` names the
/// kind of link in the log.
pub(crate) async fn keep_up<F, Fut>(
    alternates: &[ServerAddr],
    shutdown: &CancellationToken,
    what: &str,
    mut attempt: F,
) where
    F: FnMut(ServerAddr) -> Fut,
    Fut: std::future::Future<Output = Attempt>,
{
    let mut failures = 0u32;
    loop {
        let mut healthy = false;
        let mut why_not = Vec::new();
        for addr in alternates {
            if shutdown.is_cancelled() {
                return;
            }
            // Not raced against `shutdown`: an attempt watches it itself, so
            // that a link it brought up is taken down properly (unregistered,
            // its writer finished) rather than dropped half-way.
            let outcome = attempt(addr.clone()).await;
            match outcome {
                Attempt::Shutdown => return,
                Attempt::Ran { stable: true } => {
                    healthy = true;
                    break;
                }
                Attempt::Ran { stable: false } => {}
                Attempt::Failed(why) => why_not.push(format!("{addr}: {why}")),
            }
        }
        if healthy {
            failures = 0;
            continue;
        }
        let delay = Backoff::REDIAL.delay(failures, backoff::jitter());
        failures = failures.saturating_add(1);
        if !why_not.is_empty() {
            // One line per round of attempts, however many alternates.
            tracing::warn!(
                "cannot {what} ({}); trying again in {:.1}s",
                why_not.join("; "),
                delay.as_secs_f64()
            );
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

type Dialed = (TcpStream, BytesMut, String, SocketAddr, Negotiated);

async fn dial(router: &Router, addr: &ServerAddr) -> Result<Dialed, String> {
    let mut stream = TcpStream::connect((addr.host.as_str(), addr.port))
        .await
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let sa = stream.peer_addr().map_err(|e| e.to_string())?;
    let hello = Frame::Hello(Hello {
        min_version: MIN_PROTOCOL_VERSION,
        max_version: PROTOCOL_VERSION,
        max_frame: router.config.max_frame,
        role: 1,
        agent: router.config.name.clone(),
    });
    stream
        .write_all(&hello.to_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = BytesMut::new();
    loop {
        if let Some((ty, total)) =
            frame::peek(&buf, router.config.max_frame).map_err(|e| e.to_string())?
        {
            let mut f = buf.split_to(total).freeze();
            f.advance(FRAME_HEADER_LEN);
            return match Frame::decode_body(ty, f).map_err(|e| e.to_string())? {
                Some(Frame::Welcome(w)) => {
                    let agreed = session::dialled(&w, router.config.max_frame)?;
                    Ok((stream, buf, w.server, sa, agreed))
                }
                Some(Frame::Error { text, .. }) => Err(format!("refused: {text}")),
                other => Err(format!("expected WELCOME, got {other:?}")),
            };
        }
        buf.reserve(1024);
        if stream.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
            return Err("closed during the handshake".into());
        }
    }
}

/// Serves a link another server dialled (its HELLO said role 1).
pub(crate) async fn serve_accepted(
    router: Arc<Router>,
    mut stream: TcpStream,
    buf: BytesMut,
    hello: Hello,
    agreed: Negotiated,
    peer: SocketAddr,
    shutdown: CancellationToken,
) {
    let welcome = Frame::Welcome(Welcome {
        version: agreed.version,
        max_frame: agreed.max_frame,
        keepalive_ms: router.limits.keepalive_ms().min(u32::MAX as u64) as u32,
        server: router.config.name.clone(),
    });
    if stream.write_all(&welcome.to_bytes()).await.is_err() {
        return;
    }
    let name = hello.agent;
    tracing::info!(
        "link from {name} ({peer}) is up (frames up to {} bytes)",
        agreed.max_frame
    );
    let end = run_link(&router, stream, buf, &name, peer, false, agreed, &shutdown).await;
    if !matches!(end, End::Shutdown) {
        tracing::warn!("link from {name} ({peer}) is down: {}", describe(&end));
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_link(
    router: &Arc<Router>,
    stream: TcpStream,
    buf: BytesMut,
    peer: &str,
    addr: SocketAddr,
    dialed: bool,
    agreed: Negotiated,
    shutdown: &CancellationToken,
) -> End {
    let id = router.next_owner_id();
    // Messages larger than the peer agreed to take are dropped here, counted,
    // and reported to it by location (LINK_LOSSAGE), not sent to break the link.
    let outbox = Arc::new(
        Outbox::new(
            Kind::Link,
            LINK_QUEUE_FRAMES,
            LINK_QUEUE_BYTES,
            agreed.max_frame,
            format!("{peer} ({addr})"),
        )
        .with_budget(router.memory.clone()),
    );
    // The bridge of a link to an original galed (`crate::orig_link`): not
    // offered private messages, as an original client's gateway is not.
    if router.orig_gateways.lock().remove(&addr) {
        outbox.set_original();
    }
    let stats = Arc::new(LinkStats::default());
    let sock = Arc::new(stream);
    let writer = tokio::spawn(write_loop(outbox.clone(), sock.clone()));
    let up = router.link_up(NewLink {
        id,
        peer,
        addr,
        dialed,
        max_frame: agreed.max_frame,
        outbox: outbox.clone(),
        stats: stats.clone(),
    });
    if let Err(refused) = up {
        let text = refused.to_string();
        tracing::warn!("refusing link with {peer} ({addr}): {text}");
        finish_writer(
            &outbox,
            writer,
            Some((ErrorCode::LimitExceeded, text.clone())),
        )
        .await;
        return End::Protocol(ErrorCode::LimitExceeded, text);
    }
    let mut link = LinkReader {
        router,
        id,
        max_frame: agreed.max_frame,
        peer,
        outbox: &outbox,
        stats: &stats,
        warned_hops: None,
        known: KnownLocations::default(),
    };
    let mut routing = Routing::new();
    let end = read_frames(
        router,
        &sock,
        buf,
        &outbox,
        shutdown,
        &mut routing,
        |b, r| link.process(b, r),
    )
    .await;
    router.link_down(id);
    let last_word = match &end {
        End::Protocol(code, text) => Some((*code, text.clone())),
        _ => None,
    };
    finish_writer(&outbox, writer, last_word).await;
    end
}

struct LinkReader<'a> {
    router: &'a Router,
    id: u64,
    /// What the handshake agreed: the largest frame the peer may send.
    max_frame: u32,
    peer: &'a str,
    outbox: &'a Arc<Outbox>,
    stats: &'a LinkStats,
    warned_hops: Option<Instant>,
    /// The last location list that came over the link, already checked.
    known: KnownLocations,
}

impl LinkReader<'_> {
    fn process(&mut self, buf: &mut BytesMut, routing: &mut Routing) -> Result<Option<Bytes>, End> {
        while let Some((ty, total)) = frame::peek(buf, self.max_frame).map_err(protocol)? {
            let mut raw = buf.split_to(total);
            self.stats
                .bytes_in
                .fetch_add(total as u64, Ordering::Relaxed);
            match FrameType::from_u8(ty) {
                Some(FrameType::Deliver | FrameType::Publish) => {
                    self.stats.messages_in.fetch_add(1, Ordering::Relaxed);
                    let at = FRAME_HEADER_LEN + HOPS_OFFSET;
                    let hops = *raw.get(at).ok_or_else(|| {
                        End::Protocol(
                            ErrorCode::Malformed,
                            "message shorter than its header".into(),
                        )
                    })?;
                    if hops >= MAX_HOPS {
                        self.hop_limit();
                        continue;
                    }
                    raw[4] = FrameType::Deliver as u8;
                    raw[at] = hops + 1;
                    let frame = raw.freeze();
                    let view =
                        MessageView::parse_known(&frame[FRAME_HEADER_LEN..], &mut self.known)
                            .map_err(protocol)?;
                    if self.router.first_sighting(&view, self.id) {
                        self.router.route(&frame, &view, self.id, routing);
                        // Its publisher is on another server, and cannot be told
                        // here (docs/protocol.md §17.6): logged.
                        let private = std::mem::take(&mut routing.private_refused);
                        if private > 0 {
                            tracing::info!(id = %view.id, from = self.peer,
                                "a private message from a link was not offered to {private} \
                                 original-Gale clients");
                        }
                        if routing.is_blocked() {
                            return Ok(Some(frame));
                        }
                    } else {
                        self.stats.duplicates_in.fetch_add(1, Ordering::Relaxed);
                    }
                }
                _ => {
                    let mut body = raw.freeze();
                    body.advance(FRAME_HEADER_LEN);
                    if let Some(f) = Frame::decode_body(ty, body).map_err(protocol)? {
                        self.control(f, routing)?;
                    }
                }
            }
        }
        Ok(None)
    }

    fn hop_limit(&mut self) {
        self.router
            .stats
            .hop_limit_dropped
            .fetch_add(1, Ordering::Relaxed);
        if self
            .warned_hops
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
        {
            self.warned_hops = Some(Instant::now());
            tracing::warn!(
                "dropped a message from {} that had crossed {MAX_HOPS} links (the hop limit): \
                 the links probably form a loop",
                self.peer
            );
        }
    }

    fn control(&mut self, f: Frame, routing: &mut Routing) -> Result<(), End> {
        match f {
            Frame::LinkLossage(entries) => {
                let n: u64 = entries.iter().map(|e| e.count).sum();
                self.stats.lost_upstream.fetch_add(n, Ordering::Relaxed);
                self.router.route_loss(&entries, self.id, routing);
            }
            Frame::Interest {
                reset,
                all,
                entries,
            } => {
                self.stats
                    .interest_updates_in
                    .fetch_add(1, Ordering::Relaxed);
                self.router
                    .link_interest(self.id, self.outbox, reset, all, &entries);
            }
            Frame::LinkLimits { max_interest } => self.router.link_limits(self.id, max_interest),
            Frame::Ping(t) => self.outbox.push_control(Frame::Pong(t).to_bytes()),
            Frame::Pong(_) => {}
            Frame::Lossage(n) => tracing::warn!(
                "{} dropped {n} messages on its way here: this server read the link too slowly",
                self.peer
            ),
            Frame::Error { code, text } => {
                tracing::warn!(
                    "{} reported an error on the link ({code:?}): {text}",
                    self.peer
                )
            }
            Frame::StatusRequest => {
                let report = crate::status::json(self.router, self.max_frame);
                self.outbox.push_control(Frame::Status(report).to_bytes());
            }
            other => {
                return Err(End::Protocol(
                    ErrorCode::UnexpectedFrame,
                    format!(
                        "a server link may not carry {:?} frames",
                        other.frame_type()
                    ),
                ))
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_specs() {
        let s = |v: Vec<ServerAddr>| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        assert_eq!(s(parse_link("a:1,b").unwrap()), ["a:1", "b:11512"]);
        assert_eq!(s(parse_link("[::1]:5").unwrap()), ["[::1]:5"]);
        assert!(parse_link(" , ").is_err());
    }
}
