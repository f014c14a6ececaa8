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
use gale_proto::{ErrorCode, Frame, Hello};
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
    /// The server refused this client for good ([`is_permanent`]): stop.
    Refused { code: ErrorCode, text: String },
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

/// Why a connection attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OpenError {
    /// Could not connect, or the handshake failed or timed out: a sentence for
    /// the user. Worth trying again.
    Failed(String),
    /// The server answered the handshake with ERROR.
    Refused { code: ErrorCode, text: String },
}

/// Whether an ERROR from the server ends this client for good: it is about the
/// request itself (a version, a malformed or oversized frame, too many
/// subscriptions, an unknown code), so asking again would be refused again. The
/// others (the server is busy or shutting down, or the network was too slow for
/// its deadlines) may go away by themselves: reconnect, with back-off.
pub(crate) fn is_permanent(code: ErrorCode) -> bool {
    !code.is_transient()
}

/// An ERROR for people: `too many subscriptions (ERROR 6, LimitExceeded)`.
pub fn describe_error(code: ErrorCode, text: &str) -> String {
    let name = match code {
        ErrorCode::Other(_) => "unknown code".to_string(),
        c => format!("{c:?}"),
    };
    format!("{text} (ERROR {}, {name})", code.to_u16())
}

impl Conn {
    /// Opens the TCP connection to `server`, within `limit`.
    pub async fn connect(server: &ServerAddr, limit: Duration) -> Result<TcpStream, OpenError> {
        match timeout(
            limit,
            TcpStream::connect((server.host.as_str(), server.port)),
        )
        .await
        {
            Err(_) => Err(OpenError::Failed(format!(
                "connect timed out after {}",
                human(limit)
            ))),
            Ok(Err(e)) => Err(OpenError::Failed(describe_io(&e))),
            Ok(Ok(s)) => Ok(s),
        }
    }

    /// Completes the HELLO/WELCOME handshake on `stream`: all of it within
    /// `limit`, so that a server which accepts connections and never answers
    /// cannot hold the client.
    pub async fn handshake(
        server: ServerAddr,
        stream: TcpStream,
        agent: String,
        keepalive: Duration,
        limit: Duration,
    ) -> Result<Conn, OpenError> {
        let failed = |s: String| Err(OpenError::Failed(s));
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
        let exchange = async {
            writer.send(hello).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(reader.next().await)
        };
        let welcome = match timeout(limit, exchange).await {
            Err(_) => {
                return failed(format!(
                    "handshake timed out: the server accepted the connection but did not \
                     answer within {}",
                    human(limit)
                ))
            }
            Ok(Err(e)) => return failed(format!("handshake failed: {e}")),
            Ok(Ok(None)) => {
                return failed("server closed the connection during the handshake".into())
            }
            Ok(Ok(Some(Err(e)))) => return failed(format!("handshake failed: {e}")),
            Ok(Ok(Some(Ok(Frame::Welcome(w))))) => w,
            Ok(Ok(Some(Ok(Frame::Error { code, text })))) => {
                return Err(OpenError::Refused { code, text })
            }
            Ok(Ok(Some(Ok(f)))) => {
                return failed(format!(
                    "protocol error: expected WELCOME, got {:?}",
                    f.frame_type()
                ))
            }
        };
        if !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&welcome.version) {
            return failed(format!(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_busy_shutting_down_and_timeouts_are_worth_retrying() {
        for n in 0..=12 {
            let code = ErrorCode::from_u16(n);
            let retry = matches!(
                code,
                ErrorCode::Busy | ErrorCode::ShuttingDown | ErrorCode::Timeout
            );
            assert_eq!(is_permanent(code), !retry, "{code:?}");
        }
        // Too many subscriptions, a version, a bad frame: asking again is futile.
        assert!(is_permanent(ErrorCode::LimitExceeded));
        assert!(is_permanent(ErrorCode::UnsupportedVersion));
        assert!(is_permanent(ErrorCode::TooLarge));
        // An unknown code is a server this client does not understand.
        assert!(is_permanent(ErrorCode::Other(42)));
    }

    #[test]
    fn errors_are_described_with_their_code() {
        assert_eq!(
            describe_error(ErrorCode::LimitExceeded, "too many"),
            "too many (ERROR 6, LimitExceeded)"
        );
        assert_eq!(
            describe_error(ErrorCode::Other(42), "what"),
            "what (ERROR 42, unknown code)"
        );
    }
}
