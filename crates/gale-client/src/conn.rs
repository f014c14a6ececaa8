//! One TCP connection to a server: connect, handshake, and buffered frame writes.
//! The policy (what to send when, reconnecting) lives in [`crate::task`].

use std::collections::VecDeque;
use std::io;
use std::time::Duration;

use futures_util::SinkExt;
use futures_util::StreamExt;
use gale_proto::codec::FrameCodec;
use gale_proto::limits::{
    DEFAULT_MAX_FRAME, MIN_MAX_FRAME, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
use gale_proto::{Frame, Hello};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::server::ServerAddr;

/// Why a live connection ended, or that the client is done.
#[derive(Debug)]
pub(crate) enum End {
    /// The client was closed or every handle dropped: stop for good.
    Stop,
    /// The connection failed; reconnect.
    Lost(String),
}

/// A connection that has completed the handshake.
pub(crate) struct Conn {
    pub server: ServerAddr,
    pub name: String,
    /// The protocol version agreed in the handshake.
    pub version: u16,
    pub reader: FramedRead<OwnedReadHalf, FrameCodec>,
    writer: FramedWrite<OwnedWriteHalf, FrameCodec>,
    /// Largest frame the server accepts (type byte and body).
    pub max_frame: u32,
    pub keepalive: Duration,
    /// Highest publish sequence number written on this connection.
    pub sent: u64,
    /// Highest sequence number covered by a PING already written.
    pub pinged: u64,
    /// PINGs in flight: (token, highest publish sequence written before it).
    pub pings: VecDeque<(u64, u64)>,
    pub last_send: Instant,
    /// Set when a PING goes out and nothing has been received since.
    pub awaiting: Option<Instant>,
    /// The PING whose PONG completes a graceful close.
    pub close_token: Option<u64>,
}

/// A duration for people: `250 ms`, `60 s`.
pub(crate) fn human(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{} s", d.as_secs())
    }
}

/// Says what went wrong with an I/O error in the words a user expects.
pub(crate) fn describe_io(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".into(),
        io::ErrorKind::ConnectionReset => "connection reset by peer".into(),
        io::ErrorKind::TimedOut => "timed out".into(),
        io::ErrorKind::UnexpectedEof => "server closed the connection".into(),
        _ => e.to_string(),
    }
}

impl Conn {
    /// Connects to `server` and completes the HELLO/WELCOME handshake, both within
    /// `limit`. The error is a sentence for the user.
    pub async fn open(
        server: ServerAddr,
        agent: String,
        keepalive: Duration,
        limit: Duration,
    ) -> Result<Conn, String> {
        let stream = match timeout(
            limit,
            TcpStream::connect((server.host.as_str(), server.port)),
        )
        .await
        {
            Err(_) => return Err(format!("connect timed out after {}", human(limit))),
            Ok(Err(e)) => return Err(describe_io(&e)),
            Ok(Ok(s)) => s,
        };
        // Small frames (PING, one-line messages) should go out at once.
        let _ = stream.set_nodelay(true);
        let (r, w) = stream.into_split();
        let mut reader = FramedRead::new(r, FrameCodec::default());
        let mut writer = FramedWrite::new(w, FrameCodec::default());
        let hello = Frame::Hello(Hello {
            min_version: MIN_PROTOCOL_VERSION,
            max_version: PROTOCOL_VERSION,
            max_frame: DEFAULT_MAX_FRAME,
            role: 0,
            agent,
        });
        match timeout(limit, writer.send(hello)).await {
            Err(_) => return Err("timed out sending the handshake".into()),
            Ok(Err(e)) => return Err(format!("handshake failed: {e}")),
            Ok(Ok(())) => {}
        }
        let welcome = match timeout(limit, reader.next()).await {
            Err(_) => {
                return Err(format!(
                    "no answer to the handshake within {}",
                    human(limit)
                ))
            }
            Ok(None) => return Err("server closed the connection during the handshake".into()),
            Ok(Some(Err(e))) => return Err(format!("handshake failed: {e}")),
            Ok(Some(Ok(Frame::Welcome(w)))) => w,
            Ok(Some(Ok(Frame::Error { code, text }))) => {
                return Err(format!("server refused the connection: {text} ({code:?})"))
            }
            Ok(Some(Ok(f))) => {
                return Err(format!(
                    "protocol error: expected WELCOME, got {:?}",
                    f.frame_type()
                ))
            }
        };
        if !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&welcome.version) {
            return Err(format!(
                "server chose protocol version {}; this client speaks {MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION}",
                welcome.version
            ));
        }
        let max_frame = welcome.max_frame.clamp(MIN_MAX_FRAME, DEFAULT_MAX_FRAME);
        writer.encoder_mut().max_frame = max_frame;
        let keepalive = match welcome.keepalive_ms {
            0 => keepalive,
            ms => keepalive.min(Duration::from_millis(u64::from(ms))),
        };
        Ok(Conn {
            server,
            name: welcome.server,
            version: welcome.version,
            reader,
            writer,
            max_frame,
            keepalive,
            sent: 0,
            pinged: 0,
            pings: VecDeque::new(),
            last_send: Instant::now(),
            awaiting: None,
            close_token: None,
        })
    }

    /// Buffers a frame; [`Conn::flush`] sends it.
    pub async fn write(&mut self, frame: Frame) -> Result<(), End> {
        self.last_send = Instant::now();
        self.writer
            .feed(frame)
            .await
            .map_err(|e| End::Lost(format!("write failed: {e}")))
    }

    /// Sends everything buffered. A server that stops reading for two keepalive
    /// periods is treated as dead.
    pub async fn flush(&mut self) -> Result<(), End> {
        let limit = self.keepalive * 2;
        match timeout(limit, SinkExt::<Frame>::flush(&mut self.writer)).await {
            Err(_) => Err(End::Lost(format!(
                "server stopped reading for {} s",
                limit.as_secs()
            ))),
            Ok(Err(e)) => Err(End::Lost(format!("write failed: {e}"))),
            Ok(Ok(())) => Ok(()),
        }
    }

    /// Flushes and half-closes, ending a graceful close.
    pub async fn shutdown(&mut self) {
        let _ = timeout(self.keepalive, SinkExt::<Frame>::close(&mut self.writer)).await;
    }

    /// Writes a PING covering every publish written so far; returns its token.
    pub async fn ping(&mut self, token: u64) -> Result<(), End> {
        self.pings.push_back((token, self.sent));
        self.pinged = self.sent;
        if self.awaiting.is_none() {
            self.awaiting = Some(Instant::now());
        }
        self.write(Frame::Ping(token)).await
    }
}
