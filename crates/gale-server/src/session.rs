//! What a client connection and a server link share: the handshake's
//! negotiation, reading frames (with keepalive and flow control), closing, and
//! framing INTEREST within what was negotiated.
//!
//! The pure parts ([`accept`], [`dialled`], [`interest_frames`]) are tested here
//! without sockets.

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use gale_proto::frame::{self, ErrorCode, Frame, FrameError, Hello, Welcome};
use gale_proto::limits::{
    FRAME_HEADER_LEN, MAX_SUB_ENTRIES, MIN_MAX_FRAME, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
use gale_proto::SubEntry;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::flow::Routing;
use crate::outbox::Outbox;
use crate::router::Router;

/// Bytes asked of the socket per read when data is waiting.
const READ_CHUNK: usize = 64 * 1024;
/// Read buffers larger than this are released while the connection is idle.
const IDLE_BUFFER_KEEP: usize = 0;
/// How long a closing connection's writer may take to send what is queued.
const CLOSE_FLUSH: Duration = Duration::from_millis(500);
/// A reader yields to other tasks after acting on this many bytes in a row.
const YIELD_EVERY: usize = 1024 * 1024;
/// A frame that has begun must be complete within this, plus the time it takes at
/// [`PARTIAL_RATE`]: a peer that trickles a big frame, or stops in the middle,
/// does not keep its buffer (and the server's memory) forever.
pub const PARTIAL_FLOOR: Duration = Duration::from_secs(5);
/// Slowest delivery of a frame's bytes allowed, in bytes per second.
pub const PARTIAL_RATE: u64 = 64 * 1024;

/// How long a frame of `len` bytes (length field included) may take to arrive.
pub fn partial_deadline(len: usize) -> Duration {
    PARTIAL_FLOOR + Duration::from_millis(len as u64 * 1000 / PARTIAL_RATE)
}

/// The whole length (length field included) of the frame at the front of `buf`,
/// once its length field has arrived.
fn frame_len(buf: &[u8]) -> Option<usize> {
    let len: [u8; 4] = buf.get(..4)?.try_into().ok()?;
    Some(4 + u32::from_be_bytes(len) as usize)
}

/// What the two ends of a connection agreed in the handshake; both directions
/// keep to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    pub version: u16,
    /// Largest frame (length field) either side may send.
    pub max_frame: u32,
}

/// The accepting side: what to agree to for `hello`, given this server's own
/// largest frame, or why not (a version this server does not speak).
pub fn accept(hello: &Hello, own_max_frame: u32) -> Result<Negotiated, (ErrorCode, String)> {
    if hello.min_version > PROTOCOL_VERSION || hello.max_version < MIN_PROTOCOL_VERSION {
        return Err((
            ErrorCode::UnsupportedVersion,
            format!(
                "this server speaks protocol versions {MIN_PROTOCOL_VERSION} to \
                 {PROTOCOL_VERSION}; the peer offered {} to {}",
                hello.min_version, hello.max_version
            ),
        ));
    }
    Ok(Negotiated {
        version: hello.max_version.min(PROTOCOL_VERSION),
        max_frame: hello.max_frame.clamp(MIN_MAX_FRAME, own_max_frame),
    })
}

/// The dialling side: what the peer's WELCOME agreed to, checked against what
/// this server offered.
pub fn dialled(welcome: &Welcome, own_max_frame: u32) -> Result<Negotiated, String> {
    if !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&welcome.version) {
        return Err(format!(
            "the peer chose protocol version {}; this server speaks {MIN_PROTOCOL_VERSION} to \
             {PROTOCOL_VERSION}",
            welcome.version
        ));
    }
    Ok(Negotiated {
        version: welcome.version,
        max_frame: welcome.max_frame.clamp(MIN_MAX_FRAME, own_max_frame),
    })
}

/// INTEREST frames that carry `entries`, none with more than the protocol's
/// 4,096 entries or longer than `max_frame`. With `reset`, the first frame
/// replaces what the peer held (an empty list clears it) and the rest add to it.
pub fn interest_frames(reset: bool, entries: Vec<SubEntry>, max_frame: u32) -> Vec<Bytes> {
    // Type, flags and count, then per entry a sign and a str16.
    let budget = max_frame as usize - 1 - 1 - 2;
    let mut frames = Vec::new();
    let mut chunk = Vec::new();
    let mut size = 0;
    let mut first = true;
    let mut emit = |chunk: Vec<SubEntry>, first: &mut bool| {
        let f = Frame::Interest {
            reset: reset && *first,
            all: false,
            entries: chunk,
        };
        *first = false;
        // Within both limits by construction: entries are valid locations.
        frames.push(f.to_bytes());
    };
    for e in entries {
        let len = 1 + 2 + e.location.as_str().len();
        if !chunk.is_empty() && (chunk.len() == MAX_SUB_ENTRIES || size + len > budget) {
            emit(std::mem::take(&mut chunk), &mut first);
            size = 0;
        }
        size += len;
        chunk.push(e);
    }
    if !chunk.is_empty() || (reset && first) {
        emit(chunk, &mut first);
    }
    frames
}

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
    rd: &mut TcpStream,
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
pub(crate) async fn refuse(wr: &mut TcpStream, code: ErrorCode, text: String) {
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
    outbox.detach();
}

/// Reads frames until the connection ends, handing what arrived to `process`, which
/// acts on whole frames and stops early (returning the frame) when a message it
/// routed waits for full outboxes; the message is then held for
/// ([`Routing::hold`]) before anything more is read. What was routed is flushed
/// after each read. Keeps the connection alive: after a keepalive period of
/// silence it sends PING, and after two it gives up. Idle connections hold no read
/// buffer.
pub(crate) async fn read_frames(
    router: &Router,
    sock: &TcpStream,
    mut buf: BytesMut,
    outbox: &Outbox,
    shutdown: &CancellationToken,
    routing: &mut Routing,
    mut process: impl FnMut(&mut BytesMut, &mut Routing) -> Result<Option<Bytes>, End>,
) -> End {
    // Half-period ticks: ping after a full idle period, give up after two.
    let half = router.limits.keepalive() / 2;
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + half, half);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut heard = false;
    let mut idle_ticks = 0u32;
    let mut since_yield = 0usize;
    // The frame being read, if one has begun: when it must be complete.
    let mut partial: Option<tokio::time::Instant> = None;
    // Bytes of read buffer taken from the server's memory budget for big frames.
    let mut taken = Taken::new(router);
    loop {
        let before = buf.len();
        routing.tick();
        // Frames that arrived with the handshake (or a previous read) first.
        loop {
            match process(&mut buf, routing) {
                Ok(None) => break,
                Ok(Some(held)) => {
                    // Boxed: only a connection that is holding pays for the wait's state.
                    // Then, if the inbox store is behind its disk, for it.
                    let held_back = Box::pin(async {
                        routing.hold(&held, shutdown).await?;
                        if !routing.store_waiting.is_empty() {
                            router.inboxes.hold(routing, &held, shutdown).await;
                        }
                        Ok::<(), crate::flow::ShuttingDown>(())
                    });
                    if held_back.await.is_err() {
                        router.tally(routing);
                        return End::Shutdown;
                    }
                    routing.tick();
                }
                Err(end) => {
                    routing.flush();
                    router.tally(routing);
                    return end;
                }
            }
        }
        routing.flush();
        router.tally(routing);
        if buf.is_empty() && buf.capacity() > IDLE_BUFFER_KEEP {
            buf = BytesMut::new();
        }
        if buf.is_empty() || buf.len() < before {
            partial = None; // nothing begun, or a frame was completed
        } else if partial.is_none() {
            let len = frame_len(&buf).unwrap_or(0);
            partial = Some(tokio::time::Instant::now() + partial_deadline(len));
        }
        match frame_len(&buf) {
            // A big frame is coming: its buffer comes out of the memory budget.
            Some(len) if len > READ_CHUNK && !taken.cover(len) => {
                return End::Protocol(
                    ErrorCode::Busy,
                    format!(
                        "the server is at its memory budget and cannot take a frame of {len} \
                         bytes now; try again later"
                    ),
                );
            }
            _ if buf.is_empty() => taken.release(),
            _ => {}
        }
        if since_yield >= YIELD_EVERY {
            // A publisher that always has more to read must not keep its worker
            // thread from other connections.
            since_yield = 0;
            tokio::task::yield_now().await;
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return End::Shutdown,
            r = sock.readable() => {
                if let Err(e) = r { return End::Io(e); }
                buf.reserve(READ_CHUNK);
                match sock.try_read_buf(&mut buf) {
                    Ok(0) => return End::PeerClosed,
                    Ok(n) => {
                        heard = true;
                        since_yield += n;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return End::Io(e),
                }
            }
            _ = ticker.tick() => {
                if let Some(due) = partial.filter(|d| tokio::time::Instant::now() >= *d) {
                    let len = frame_len(&buf).unwrap_or(0);
                    let waited = tokio::time::Instant::now() - (due - partial_deadline(len));
                    return End::Protocol(
                        ErrorCode::Timeout,
                        format!(
                            "a frame of {len} bytes was not complete after {}s ({} bytes came)",
                            waited.as_secs(),
                            buf.len()
                        ),
                    );
                }
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

/// A reader's share of the server's memory budget, given back when dropped.
struct Taken<'a> {
    router: &'a Router,
    bytes: usize,
}

impl<'a> Taken<'a> {
    fn new(router: &'a Router) -> Taken<'a> {
        Taken { router, bytes: 0 }
    }

    /// Makes sure `len` bytes are taken; false if the budget cannot give them.
    fn cover(&mut self, len: usize) -> bool {
        if len <= self.bytes {
            return true;
        }
        if !self.router.memory.try_take(len - self.bytes) {
            return false;
        }
        self.bytes = len;
        true
    }

    fn release(&mut self) {
        self.router.memory.give(std::mem::take(&mut self.bytes));
    }
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gale_proto::limits::DEFAULT_MAX_FRAME;
    use gale_proto::Location;

    fn hello(min: u16, max: u16, max_frame: u32) -> Hello {
        Hello {
            min_version: min,
            max_version: max,
            max_frame,
            role: 1,
            agent: "peer".into(),
        }
    }

    #[test]
    fn unequal_frame_limits_meet_at_the_smaller() {
        // The peer offers less than we take: its limit holds both ways.
        let a = accept(&hello(1, 1, 4096), DEFAULT_MAX_FRAME).unwrap();
        assert_eq!(
            a,
            Negotiated {
                version: 1,
                max_frame: 4096
            }
        );
        // The peer offers more than we take: ours.
        let a = accept(&hello(1, 1, DEFAULT_MAX_FRAME), 8192).unwrap();
        assert_eq!(a.max_frame, 8192);
        // Below the protocol's floor: raised to it.
        assert_eq!(
            accept(&hello(1, 1, 10), 8192).unwrap().max_frame,
            MIN_MAX_FRAME
        );
        // A version range we do not speak: refused with both ranges named.
        let (code, text) = accept(&hello(4, 5, 4096), 8192).unwrap_err();
        assert_eq!(code, ErrorCode::UnsupportedVersion);
        assert!(text.contains("1 to 3") && text.contains("4 to 5"), "{text}");
        // A version 1 peer is served in version 1; a version 2 one in 2.
        assert_eq!(accept(&hello(1, 1, 4096), 8192).unwrap().version, 1);
        assert_eq!(accept(&hello(1, 2, 4096), 8192).unwrap().version, 2);
        // The dialling side keeps to what WELCOME said, never above its own offer.
        let w = |v, m| Welcome {
            version: v,
            max_frame: m,
            keepalive_ms: 1000,
            server: "b".into(),
        };
        assert_eq!(
            dialled(&w(1, 4096), DEFAULT_MAX_FRAME).unwrap().max_frame,
            4096
        );
        assert_eq!(
            dialled(&w(1, DEFAULT_MAX_FRAME), 8192).unwrap().max_frame,
            8192
        );
        assert!(dialled(&w(4, 4096), DEFAULT_MAX_FRAME).is_err());
    }

    fn decode_all(frames: &[Bytes], max_frame: u32) -> Vec<(bool, Vec<SubEntry>)> {
        frames
            .iter()
            .map(|f| {
                assert!(f.len() - 4 <= max_frame as usize, "{} bytes", f.len());
                match Frame::decode(&mut BytesMut::from(&f[..]), max_frame) {
                    Ok(Some(Frame::Interest { reset, entries, .. })) => (reset, entries),
                    other => panic!("{other:?}"),
                }
            })
            .collect()
    }

    #[test]
    fn a_full_sync_of_4097_entries_takes_two_frames() {
        let entries: Vec<SubEntry> = (0..4097)
            .map(|i| SubEntry::include(Location::parse(&format!("l{i}@x.org")).unwrap()))
            .collect();
        let frames = interest_frames(true, entries.clone(), DEFAULT_MAX_FRAME);
        let got = decode_all(&frames, DEFAULT_MAX_FRAME);
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].0, got[0].1.len()), (true, MAX_SUB_ENTRIES));
        assert_eq!((got[1].0, got[1].1.len()), (false, 1), "later frames add");
        let all: Vec<SubEntry> = got.into_iter().flat_map(|(_, e)| e).collect();
        assert_eq!(all, entries);
    }

    #[test]
    fn interest_fits_a_small_frame_limit() {
        let long = "x".repeat(200);
        let entries: Vec<SubEntry> = (0..100)
            .map(|i| SubEntry::include(Location::parse(&format!("{long}.{i}@x.org")).unwrap()))
            .collect();
        let frames = interest_frames(false, entries.clone(), MIN_MAX_FRAME);
        assert!(frames.len() > 1);
        let got = decode_all(&frames, MIN_MAX_FRAME);
        assert!(got.iter().all(|(reset, _)| !reset));
        let all: Vec<SubEntry> = got.into_iter().flat_map(|(_, e)| e).collect();
        assert_eq!(all, entries);
        // An empty full sync still clears what the peer held.
        let clear = decode_all(&interest_frames(true, Vec::new(), 4096), 4096);
        assert_eq!(clear, vec![(true, Vec::new())]);
        assert!(interest_frames(false, Vec::new(), 4096).is_empty());
    }
}
