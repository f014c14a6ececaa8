//! One client connection.
//!
//! A connection is two tasks: the reader (this module's [`serve`]) parses frames and
//! acts on them in order, and the writer drains the connection's [`Outbox`] with
//! vectored writes. Because the reader routes each PUBLISH before it reads the next
//! frame, the PONG it queues for a PING confirms everything sent before that PING.
//!
//! Any protocol error (malformed, oversized or unexpected frame) closes this
//! connection only: an ERROR frame is queued, the writer gets a moment to send it,
//! and the socket is closed. The connection's will is then published.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use gale_proto::frame::{self, ErrorCode, Frame, FrameError, FrameType, Hello, Welcome};
use gale_proto::limits::{FRAME_HEADER_LEN, MIN_MAX_FRAME, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};
use gale_proto::MessageView;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::outbox::{Batch, Outbox};
use crate::router::{ConnInfo, ConnSubs, Router};

/// Bytes asked of the socket per read when data is waiting.
const READ_CHUNK: usize = 64 * 1024;
/// Read buffers larger than this are released while the connection is idle.
const IDLE_BUFFER_KEEP: usize = 0;
/// How long a closing connection's writer may take to send what is queued.
const CLOSE_FLUSH: Duration = Duration::from_millis(500);
/// Most slices handed to one vectored write.
const IOV_BATCH: usize = 512;

/// Why a connection ended.
#[derive(Debug)]
pub(crate) enum End {
    /// The peer closed the connection.
    PeerClosed,
    /// The server is shutting down.
    Shutdown,
    /// No traffic for two keepalive periods.
    Dead,
    /// A socket error.
    Io(std::io::Error),
    /// The peer broke the protocol; we told it why.
    Protocol(ErrorCode, String),
}

/// Serves one accepted connection to the end.
pub async fn serve(
    router: Arc<Router>,
    stream: TcpStream,
    peer: SocketAddr,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let mut buf = BytesMut::new();
    let hello = match tokio::time::timeout(
        router.config.handshake_timeout(),
        read_hello(&mut rd, &mut buf, router.config.max_frame),
    )
    .await
    {
        Ok(Ok(h)) => h,
        Ok(Err(end)) => {
            tracing::info!(%peer, "handshake failed: {}", describe(&end));
            if let End::Protocol(code, text) = end {
                refuse(&mut wr, code, text).await;
            }
            return;
        }
        Err(_) => {
            tracing::info!(%peer, "no HELLO within {:?}; closing", router.config.handshake_timeout());
            refuse(
                &mut wr,
                ErrorCode::Timeout,
                "no HELLO received in time".into(),
            )
            .await;
            return;
        }
    };
    if hello.min_version > PROTOCOL_VERSION || hello.max_version < MIN_PROTOCOL_VERSION {
        let text = format!(
            "this server speaks protocol versions {MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION}; \
             the client offered {} to {}",
            hello.min_version, hello.max_version
        );
        tracing::info!(%peer, "{text}");
        refuse(&mut wr, ErrorCode::UnsupportedVersion, text).await;
        return;
    }
    if hello.role == 1 {
        return crate::link::serve_accepted(router, rd, wr, buf, hello, peer, shutdown).await;
    }
    if hello.role != 0 {
        let text = format!(
            "HELLO role {} is not served here: this server takes clients (role 0) and \
             server links (role 1)",
            hello.role
        );
        tracing::info!(%peer, "{text}");
        refuse(&mut wr, ErrorCode::UnexpectedFrame, text).await;
        return;
    }
    let version = hello.max_version.min(PROTOCOL_VERSION);
    let max_frame = hello
        .max_frame
        .clamp(MIN_MAX_FRAME, router.config.max_frame);

    let cfg = &router.config;
    let outbox = Arc::new(Outbox::new(
        cfg.client_queue_frames,
        cfg.client_queue_bytes,
        max_frame,
    ));
    let info = ConnInfo {
        peer,
        agent: hello.agent.clone(),
        since: Instant::now(),
        outbox: outbox.clone(),
        subscriptions: Arc::new(AtomicUsize::new(0)),
        published: Arc::new(AtomicU64::new(0)),
    };
    let Some(id) = router.register(info.clone()) else {
        tracing::warn!(%peer, "refusing connection: at the limit of {} connections", cfg.max_connections);
        let text = format!(
            "server is at its limit of {} connections; try another server",
            cfg.max_connections
        );
        refuse(&mut wr, ErrorCode::LimitExceeded, text).await;
        return;
    };
    let welcome = Frame::Welcome(Welcome {
        version,
        max_frame,
        keepalive_ms: cfg.keepalive_ms.min(u32::MAX as u64) as u32,
        server: cfg.name.clone(),
    });
    outbox.push_control(welcome.to_bytes());
    tracing::debug!(%peer, id, agent = %hello.agent, "client connected");

    let writer = tokio::spawn(write_loop(wr, outbox.clone()));

    let mut conn = Conn {
        router: &router,
        id,
        outbox: &outbox,
        info: &info,
        subs: ConnSubs::default(),
        will: None,
        max_frame,
    };
    let keepalive = router.config.keepalive();
    let end = read_frames(&mut rd, buf, keepalive, &outbox, &shutdown, |b| {
        conn.process(b)
    })
    .await;
    let will = conn.will.take();
    let mut subs = std::mem::take(&mut conn.subs);
    router.unregister(id, &mut subs);

    let last_word = match &end {
        End::Protocol(code, text) => {
            router.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%peer, id, "closing connection: {text}");
            Some((*code, text.clone()))
        }
        End::Shutdown => Some((
            ErrorCode::ShuttingDown,
            "server is shutting down".to_string(),
        )),
        other => {
            tracing::debug!(%peer, id, "connection closed: {}", describe(other));
            None
        }
    };
    finish_writer(&outbox, writer, last_word).await;

    // A will is the connection's last word, spoken when it dies for any reason but
    // the server's own shutdown (when nobody would be left to hear it).
    if let (Some(frame), false) = (will, matches!(end, End::Shutdown)) {
        if let Ok(view) = MessageView::parse(&frame[FRAME_HEADER_LEN..]) {
            router.stats.wills_published.fetch_add(1, Ordering::Relaxed);
            let n = router.route(&frame, &view, id);
            tracing::debug!(%peer, id, fanout = n, "published will");
        }
    }
}

pub(crate) fn describe(end: &End) -> String {
    match end {
        End::PeerClosed => "closed by peer".into(),
        End::Shutdown => "server shutting down".into(),
        End::Dead => "no traffic for two keepalive periods".into(),
        End::Io(e) => format!("socket error: {e}"),
        End::Protocol(_, t) => t.clone(),
    }
}

pub(crate) fn protocol(e: FrameError) -> End {
    End::Protocol(e.code(), e.to_string())
}

/// Reads until one whole frame is buffered; it must be a HELLO.
pub(crate) async fn read_hello(
    rd: &mut OwnedReadHalf,
    buf: &mut BytesMut,
    max_frame: u32,
) -> Result<Hello, End> {
    loop {
        if let Some((ty, total)) = frame::peek(buf, max_frame).map_err(protocol)? {
            let mut f = buf.split_to(total).freeze();
            f.advance(FRAME_HEADER_LEN);
            return match Frame::decode_body(ty, f).map_err(protocol)? {
                Some(Frame::Hello(h)) => Ok(h),
                _ => Err(End::Protocol(
                    ErrorCode::UnexpectedFrame,
                    format!("expected HELLO, got frame type {ty:#04x}"),
                )),
            };
        }
        buf.reserve(1024);
        match tokio::io::AsyncReadExt::read_buf(rd, buf).await {
            Ok(0) => return Err(End::PeerClosed),
            Ok(_) => {}
            Err(e) => return Err(End::Io(e)),
        }
    }
}

/// Answers a peer we will not serve with an ERROR frame, best effort.
async fn refuse(wr: &mut OwnedWriteHalf, code: ErrorCode, text: String) {
    let _ = wr.write_all(&Frame::Error { code, text }.to_bytes()).await;
}

/// Ends a connection's writer: queues a last ERROR if there is one, lets the
/// writer send what is queued for up to [`CLOSE_FLUSH`], then stops it (a peer
/// that stopped reading gets no more time).
pub(crate) async fn finish_writer(
    outbox: &Outbox,
    mut writer: tokio::task::JoinHandle<()>,
    last_word: Option<(ErrorCode, String)>,
) {
    if let Some((code, text)) = last_word {
        outbox.push_control(Frame::Error { code, text }.to_bytes());
    }
    outbox.close();
    if tokio::time::timeout(CLOSE_FLUSH, &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
}

/// Reads frames until the connection ends, handing each batch of bytes to
/// `process`, and keeps the connection alive: after a keepalive period of silence
/// it sends PING, and after two it gives up. Idle connections hold no read buffer.
pub(crate) async fn read_frames(
    rd: &mut OwnedReadHalf,
    mut buf: BytesMut,
    keepalive: Duration,
    outbox: &Outbox,
    shutdown: &CancellationToken,
    mut process: impl FnMut(&mut BytesMut) -> Result<(), End>,
) -> End {
    // Half-period ticks: ping after a full idle period, give up after two.
    let half = keepalive / 2;
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + half, half);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut heard = false;
    let mut idle_ticks = 0u32;
    loop {
        // Frames that arrived with the handshake (or a previous read) first.
        if let Err(end) = process(&mut buf) {
            return end;
        }
        if buf.is_empty() && buf.capacity() > IDLE_BUFFER_KEEP {
            buf = BytesMut::new();
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return End::Shutdown,
            r = rd.readable() => {
                if let Err(e) = r { return End::Io(e); }
                buf.reserve(READ_CHUNK);
                match rd.try_read_buf(&mut buf) {
                    Ok(0) => return End::PeerClosed,
                    Ok(_) => heard = true,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return End::Io(e),
                }
            }
            _ = ticker.tick() => {
                if std::mem::take(&mut heard) {
                    idle_ticks = 0;
                } else {
                    idle_ticks += 1;
                    if idle_ticks == 2 {
                        outbox.push_control(Frame::Ping(0).to_bytes());
                    } else if idle_ticks >= 4 {
                        return End::Dead;
                    }
                }
            }
        }
    }
}

struct Conn<'a> {
    router: &'a Router,
    id: u64,
    outbox: &'a Arc<Outbox>,
    info: &'a ConnInfo,
    subs: ConnSubs,
    /// The will as a ready-to-send DELIVER frame.
    will: Option<Bytes>,
    max_frame: u32,
}

impl Conn<'_> {
    /// Acts on every whole frame in `buf`.
    fn process(&mut self, buf: &mut BytesMut) -> Result<(), End> {
        while let Some((ty, total)) = frame::peek(buf, self.max_frame).map_err(protocol)? {
            let mut raw = buf.split_to(total);
            match FrameType::from_u8(ty) {
                Some(FrameType::Publish) => {
                    // Turn the PUBLISH into the DELIVER in place: same bytes, new type.
                    raw[4] = FrameType::Deliver as u8;
                    let frame = raw.freeze();
                    let view = MessageView::parse(&frame[FRAME_HEADER_LEN..]).map_err(protocol)?;
                    self.info.published.fetch_add(1, Ordering::Relaxed);
                    if self.router.first_sighting(&view, self.id) {
                        self.router.route(&frame, &view, self.id);
                    }
                }
                Some(FrameType::Will) => {
                    if raw.len() == FRAME_HEADER_LEN {
                        self.will = None;
                    } else {
                        raw[4] = FrameType::Deliver as u8;
                        let frame = raw.freeze();
                        MessageView::parse(&frame[FRAME_HEADER_LEN..]).map_err(protocol)?;
                        self.will = Some(frame);
                    }
                }
                _ => {
                    let mut body = raw.freeze();
                    body.advance(FRAME_HEADER_LEN);
                    if let Some(f) = Frame::decode_body(ty, body).map_err(protocol)? {
                        self.control(f)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn control(&mut self, f: Frame) -> Result<(), End> {
        match f {
            Frame::Ping(token) => self.outbox.push_control(Frame::Pong(token).to_bytes()),
            Frame::Pong(_) => {}
            Frame::StatusRequest => {
                let report = crate::status::json(self.router);
                self.outbox.push_control(Frame::Status(report).to_bytes());
            }
            Frame::Subscribe { replace, entries } => {
                self.router
                    .subscribe(self.id, self.outbox, &mut self.subs, replace, &entries)
                    .map_err(|e| End::Protocol(ErrorCode::LimitExceeded, e.to_string()))?;
                self.info
                    .subscriptions
                    .store(self.subs.len(), Ordering::Relaxed);
            }
            Frame::Unsubscribe { entries } => {
                self.router.unsubscribe(self.id, &mut self.subs, &entries);
                self.info
                    .subscriptions
                    .store(self.subs.len(), Ordering::Relaxed);
            }
            Frame::Error { code, text } => {
                tracing::info!(peer = %self.info.peer, ?code, "client reported an error: {text}");
            }
            other => {
                return Err(End::Protocol(
                    ErrorCode::UnexpectedFrame,
                    format!("a client may not send {:?} frames", other.frame_type()),
                ))
            }
        }
        Ok(())
    }
}

/// Drains the outbox to the socket until it is closed and empty. (A writer stuck
/// on a peer that stopped reading is aborted by its owner.)
pub(crate) async fn write_loop(mut wr: OwnedWriteHalf, outbox: Arc<Outbox>) {
    let mut batch: VecDeque<Bytes> = VecDeque::new();
    loop {
        match outbox.take(&mut batch) {
            Batch::Frames(lost) => {
                if lost > 0 {
                    // Reported ahead of the batch: the drops happened while it queued,
                    // so a PONG in this batch also vouches that the loss was reported.
                    batch.push_front(Frame::Lossage(lost).to_bytes());
                }
                let bytes: usize = batch.iter().map(|b| b.len()).sum();
                let frames = batch.len();
                if write_batch(&mut wr, &mut batch).await.is_err() {
                    // The reader will notice the dead socket; stop writing.
                    outbox.close();
                    return;
                }
                outbox
                    .stats
                    .frames_out
                    .fetch_add(frames as u64, Ordering::Relaxed);
                outbox
                    .stats
                    .bytes_out
                    .fetch_add(bytes as u64, Ordering::Relaxed);
                if batch.capacity() > 1024 {
                    batch = VecDeque::new();
                }
            }
            Batch::Empty => outbox.wait().await,
            Batch::Closed => {
                let _ = wr.shutdown().await;
                return;
            }
        }
    }
}

/// Writes every frame in `batch`, many per system call.
async fn write_batch(wr: &mut OwnedWriteHalf, batch: &mut VecDeque<Bytes>) -> std::io::Result<()> {
    // The slice array lives in `write_some`'s stack frame, not in this future: a
    // future holds what lives across an await, and idle connections keep theirs.
    while !batch.is_empty() {
        match write_some(wr, batch) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => wr.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One vectored write of the front of `batch`, without waiting.
fn write_some(wr: &OwnedWriteHalf, batch: &mut VecDeque<Bytes>) -> std::io::Result<()> {
    let mut iov = [IoSlice::new(&[]); IOV_BATCH];
    let n = batch.len().min(IOV_BATCH);
    for (slot, b) in iov.iter_mut().zip(batch.iter()) {
        *slot = IoSlice::new(b);
    }
    let mut written = wr.try_write_vectored(&iov[..n])?;
    if written == 0 {
        return Err(std::io::ErrorKind::WriteZero.into());
    }
    while written > 0 {
        let front = batch
            .front_mut()
            .expect("written bytes came from the batch");
        if written >= front.len() {
            written -= front.len();
            batch.pop_front();
        } else {
            front.advance(written);
            written = 0;
        }
    }
    Ok(())
}

#[cfg(test)]
mod size_guard {
    /// Idle connections cost what their tasks' futures hold (see write_batch):
    /// these bounds catch a large buffer slipping into a future again.
    #[tokio::test]
    async fn connection_futures_stay_small() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = l.local_addr().unwrap();
        let s = tokio::net::TcpStream::connect(a).await.unwrap();
        let router = std::sync::Arc::new(crate::Router::new(crate::Config::default()));
        let f = super::serve(router, s, a, tokio_util::sync::CancellationToken::new());
        assert!(
            std::mem::size_of_val(&f) <= 2560,
            "serve: {} bytes",
            std::mem::size_of_val(&f)
        );
        let (_r, w) = tokio::net::TcpStream::connect(a)
            .await
            .unwrap()
            .into_split();
        let ob = std::sync::Arc::new(crate::outbox::Outbox::new(1, 1, 4096));
        let wf = super::write_loop(w, ob);
        assert!(
            std::mem::size_of_val(&wf) <= 512,
            "write_loop: {} bytes",
            std::mem::size_of_val(&wf)
        );
    }
}
