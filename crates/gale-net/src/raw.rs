//! A plain protocol client: it sends frames exactly as given and reads them back as
//! they come, with none of `gale-client`'s reconnecting, replaying or checking. For
//! talking to galed about itself (`galed --status`), driving it hard (the
//! benchmarks) and poking it (the tests). [`blocking::RawClient`] wraps it for
//! threads without a runtime.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use gale_proto::frame::{ErrorCode, Frame, FrameError, Hello, Welcome};
use gale_proto::limits::{DEFAULT_MAX_FRAME, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};
use gale_proto::{Location, LocationError, Message, SubEntry};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, ToSocketAddrs};

/// How long a read may wait before [`RawError::Timeout`], unless changed with
/// [`RawClient::set_timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes a burst publisher writes at a time.
const BURST_WRITE: usize = 64 * 1024;

/// What went wrong talking to a server.
#[derive(Debug, thiserror::Error)]
pub enum RawError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the server sent a bad frame: {0}")]
    Frame(#[from] FrameError),
    #[error("the server closed the connection")]
    Closed,
    #[error("the server refused: {text} ({code:?})")]
    Refused { code: ErrorCode, text: String },
    #[error("nothing from the server for {0:?}")]
    Timeout(Duration),
    #[error("expected {expected}, got {got}")]
    Unexpected { expected: &'static str, got: String },
    #[error(transparent)]
    Location(#[from] LocationError),
}

/// What [`RawClient::count`] saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Count {
    /// DELIVER frames.
    pub delivered: u64,
    /// The sum of the LOSSAGE frames.
    pub lost: u64,
    /// When the first and the last bytes of them arrived.
    pub first: Option<Instant>,
    pub last: Option<Instant>,
}

/// See the module documentation.
#[derive(Debug)]
pub struct RawClient {
    stream: TcpStream,
    buf: BytesMut,
    max_frame: u32,
    token: u64,
    timeout: Duration,
    /// The server's answer to our HELLO.
    pub welcome: Welcome,
}

/// The HELLO a raw client sends: every protocol version this crate knows (it sends
/// no RESUME, so version 1 and 2 servers serve it alike), the largest frames, a
/// client.
pub fn hello(agent: &str) -> Hello {
    Hello {
        min_version: MIN_PROTOCOL_VERSION,
        max_version: PROTOCOL_VERSION,
        max_frame: DEFAULT_MAX_FRAME,
        role: 0,
        agent: agent.to_string(),
    }
}

impl RawClient {
    /// Connects and completes the handshake as a client named `agent`.
    pub async fn connect(addr: impl ToSocketAddrs, agent: &str) -> Result<RawClient, RawError> {
        Self::connect_with(addr, hello(agent)).await
    }

    /// Connects and sends `hello` as it is (a link's, say), then waits for WELCOME.
    pub async fn connect_with(
        addr: impl ToSocketAddrs,
        hello: Hello,
    ) -> Result<RawClient, RawError> {
        let stream = tokio::time::timeout(DEFAULT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| RawError::Timeout(DEFAULT_TIMEOUT))??;
        stream.set_nodelay(true)?;
        let placeholder = Welcome {
            version: 0,
            max_frame: DEFAULT_MAX_FRAME,
            keepalive_ms: 0,
            server: String::new(),
        };
        let mut c = RawClient {
            stream,
            buf: BytesMut::with_capacity(4096),
            max_frame: DEFAULT_MAX_FRAME,
            token: 0,
            timeout: DEFAULT_TIMEOUT,
            welcome: placeholder,
        };
        c.send(&Frame::Hello(hello)).await?;
        match c.next_frame().await? {
            Frame::Welcome(w) => {
                c.max_frame = w.max_frame;
                c.welcome = w;
                Ok(c)
            }
            f => Err(unexpected("WELCOME", &f)),
        }
    }

    /// How long reads wait before giving up.
    pub fn set_timeout(&mut self, d: Duration) {
        self.timeout = d;
    }

    /// The socket, for writing or reading bytes directly (then the frames already
    /// buffered here are not seen again).
    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    pub async fn send(&mut self, f: &Frame) -> Result<(), RawError> {
        self.send_raw(&f.to_bytes()).await
    }

    /// Writes bytes as they are: several frames, half a frame, garbage.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), RawError> {
        Ok(self.stream.write_all(bytes).await?)
    }

    /// The next frame. An ERROR frame is returned like any other; end of stream is
    /// [`RawError::Closed`].
    pub async fn next_frame(&mut self) -> Result<Frame, RawError> {
        loop {
            if let Some(f) = Frame::decode(&mut self.buf, self.max_frame)? {
                return Ok(f);
            }
            self.fill().await?;
        }
    }

    /// Reads more bytes into the buffer, within the timeout.
    async fn fill(&mut self) -> Result<(), RawError> {
        self.buf.reserve(64 * 1024);
        match tokio::time::timeout(self.timeout, self.stream.read_buf(&mut self.buf)).await {
            Err(_) => Err(RawError::Timeout(self.timeout)),
            Ok(Ok(0)) => Err(RawError::Closed),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.into()),
        }
    }

    /// PING with a fresh token, then read until its PONG: the server has acted on
    /// everything sent before. Returns the frames that came before the PONG.
    pub async fn sync(&mut self) -> Result<Vec<Frame>, RawError> {
        self.token += 1;
        let token = self.token;
        self.send(&Frame::Ping(token)).await?;
        let mut before = Vec::new();
        loop {
            match self.next_frame().await? {
                Frame::Pong(t) if t == token => return Ok(before),
                Frame::Error { code, text } => return Err(RawError::Refused { code, text }),
                f => before.push(f),
            }
        }
    }

    /// Replaces the subscription list with `locs` and waits until it is in force.
    pub async fn subscribe(&mut self, locs: &[&str]) -> Result<Vec<Frame>, RawError> {
        let entries = locs
            .iter()
            .map(|l| Ok(SubEntry::include(Location::parse(l)?)))
            .collect::<Result<_, RawError>>()?;
        self.subscribe_entries(true, entries).await
    }

    /// Sends SUBSCRIBE with `entries` (appended, or replacing the list) and waits
    /// until it is in force.
    pub async fn subscribe_entries(
        &mut self,
        replace: bool,
        entries: Vec<SubEntry>,
    ) -> Result<Vec<Frame>, RawError> {
        self.send(&Frame::Subscribe { replace, entries }).await?;
        self.sync().await
    }

    /// Removes the `+` entries for `locs` and waits until that is in force.
    pub async fn unsubscribe(&mut self, locs: &[&str]) -> Result<Vec<Frame>, RawError> {
        let entries = locs
            .iter()
            .map(|l| Ok(SubEntry::include(Location::parse(l)?)))
            .collect::<Result<_, RawError>>()?;
        self.send(&Frame::Unsubscribe { entries }).await?;
        self.sync().await
    }

    /// Publishes `m` exactly as it is (any id, locations and payload) and waits
    /// until the server has taken it.
    pub async fn publish(&mut self, m: Message) -> Result<Vec<Frame>, RawError> {
        self.send(&Frame::Publish(m)).await?;
        self.sync().await
    }

    /// The next message delivered, skipping other frames (an ERROR ends it).
    pub async fn deliver(&mut self) -> Result<Message, RawError> {
        loop {
            match self.next_frame().await? {
                Frame::Deliver(m) => return Ok(m),
                Frame::Error { code, text } => return Err(RawError::Refused { code, text }),
                _ => {}
            }
        }
    }

    /// The server's status report (STATUS_REQUEST), as the JSON text it sent.
    pub async fn status(&mut self) -> Result<String, RawError> {
        self.send(&Frame::StatusRequest).await?;
        loop {
            match self.next_frame().await? {
                Frame::Status(json) => return Ok(json),
                Frame::Error { code, text } => return Err(RawError::Refused { code, text }),
                _ => {}
            }
        }
    }

    /// Publishes `n` messages of `size` payload bytes to `loc`, each with its own
    /// id (its sequence number in the first 8 bytes), writing 64 KiB at a time as
    /// fast as the socket takes them (no pacing), then waits until the server has
    /// taken them all.
    pub async fn publish_burst(&mut self, loc: &str, n: u64, size: usize) -> Result<(), RawError> {
        let template = burst_frame(&Location::parse(loc)?, size);
        let mut out = Vec::with_capacity(BURST_WRITE + template.len());
        let mut i = 0u64;
        while i < n {
            fill_burst(&mut out, &template, &mut i, n);
            self.stream.write_all(&out).await?;
        }
        self.sync().await.map(drop)
    }

    /// Reads until `want` messages are accounted for, delivered or reported lost
    /// (LOSSAGE), or, once one has come, nothing more has for `idle`. Counts from
    /// the raw bytes, so it keeps up with a server at full speed. `progress` is
    /// told the running total (delivered + lost) after each read.
    pub async fn count(
        &mut self,
        want: u64,
        idle: Duration,
        mut progress: impl FnMut(u64),
    ) -> Result<Count, RawError> {
        let mut c = Count::default();
        loop {
            let (used, delivered, lost) = scan(&self.buf, want - (c.delivered + c.lost));
            let _ = self.buf.split_to(used);
            c.delivered += delivered;
            c.lost += lost;
            if c.delivered + c.lost >= want {
                return Ok(c);
            }
            let wait = if c.first.is_some() {
                idle
            } else {
                self.timeout
            };
            self.buf.reserve(1 << 20);
            let read = tokio::time::timeout(wait, self.stream.read_buf(&mut self.buf)).await;
            match read {
                Err(_) if c.first.is_some() => return Ok(c),
                Err(_) => return Err(RawError::Timeout(wait)),
                Ok(Ok(0)) => return Ok(c),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e.into()),
            }
            let now = Instant::now();
            c.first.get_or_insert(now);
            c.last = Some(now);
            progress(c.delivered + c.lost);
        }
    }
}

/// A PUBLISH frame of `size` payload bytes (a plain payload) to `loc`, for
/// [`fill_burst`].
pub fn burst_frame(loc: &Location, size: usize) -> Vec<u8> {
    let mut payload = vec![b'x'; size.max(1)];
    payload[0] = 0; // plain payload kind
    Frame::Publish(Message::new(vec![loc.clone()], Bytes::from(payload)))
        .to_bytes()
        .to_vec()
}

/// Fills `out` with up to 64 KiB of copies of `template` (a PUBLISH frame), the
/// first 8 bytes of each id set to the running number `i`, until `i` reaches `n`.
pub fn fill_burst(out: &mut Vec<u8>, template: &[u8], i: &mut u64, n: u64) {
    out.clear();
    let per_write = (BURST_WRITE / template.len()).max(1) as u64;
    for _ in 0..per_write.min(n - *i) {
        let at = out.len();
        out.extend_from_slice(template);
        out[at + 5..at + 13].copy_from_slice(&i.to_be_bytes());
        *i += 1;
    }
}

/// Counts DELIVER frames and LOSSAGE totals among the whole frames at the front of
/// `buf`, stopping once `want` are accounted for. Returns (bytes they take,
/// delivered, lost).
pub fn scan(buf: &[u8], want: u64) -> (usize, u64, u64) {
    let (mut at, mut delivered, mut lost) = (0usize, 0u64, 0u64);
    while buf.len() - at >= 5 && delivered + lost < want {
        let len = u32::from_be_bytes(buf[at..at + 4].try_into().expect("4 bytes")) as usize;
        if buf.len() - at < 4 + len {
            break;
        }
        match buf[at + 4] {
            0x11 => delivered += 1,
            0x40 if len == 9 => {
                lost += u64::from_be_bytes(buf[at + 5..at + 13].try_into().expect("8 bytes"))
            }
            _ => {}
        }
        at += 4 + len;
    }
    (at, delivered, lost)
}

fn unexpected(expected: &'static str, got: &Frame) -> RawError {
    match got {
        Frame::Error { code, text } => RawError::Refused {
            code: *code,
            text: text.clone(),
        },
        f => RawError::Unexpected {
            expected,
            got: format!("{:?}", f.frame_type()),
        },
    }
}

/// The [`RawClient`] for threads without a runtime: each call runs to completion
/// on a small runtime of the client's own.
pub mod blocking {
    use super::*;

    /// Runs `f` to completion on `rt`; from inside another runtime (a blocking
    /// call in async code), on a helper thread, since a runtime cannot be entered
    /// from within one.
    fn run<F>(rt: &tokio::runtime::Runtime, f: F) -> F::Output
    where
        F: std::future::Future + Send,
        F::Output: Send,
    {
        if tokio::runtime::Handle::try_current().is_ok() {
            std::thread::scope(|s| {
                s.spawn(|| rt.block_on(f))
                    .join()
                    .expect("raw client thread")
            })
        } else {
            rt.block_on(f)
        }
    }

    /// See the module documentation.
    #[derive(Debug)]
    pub struct RawClient {
        /// Always `Some` but while dropping.
        rt: Option<tokio::runtime::Runtime>,
        inner: Option<super::RawClient>,
    }

    impl Drop for RawClient {
        fn drop(&mut self) {
            // The socket first, inside its runtime; then the runtime without
            // waiting (dropping one blocks, which async code may not do).
            drop(self.inner.take());
            if let Some(rt) = self.rt.take() {
                rt.shutdown_background();
            }
        }
    }

    impl RawClient {
        pub fn connect(addr: std::net::SocketAddr, agent: &str) -> Result<RawClient, RawError> {
            Self::connect_with(addr, hello(agent))
        }

        pub fn connect_with(
            addr: std::net::SocketAddr,
            hello: Hello,
        ) -> Result<RawClient, RawError> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let inner = run(&rt, super::RawClient::connect_with(addr, hello));
            let mut c = RawClient {
                rt: Some(rt),
                inner: None,
            };
            c.inner = Some(inner?);
            Ok(c)
        }

        fn parts(&mut self) -> (&tokio::runtime::Runtime, &mut super::RawClient) {
            (
                self.rt.as_ref().expect("live"),
                self.inner.as_mut().expect("live"),
            )
        }

        pub fn welcome(&self) -> &Welcome {
            &self.inner.as_ref().expect("live").welcome
        }

        pub fn set_timeout(&mut self, d: Duration) {
            self.parts().1.set_timeout(d)
        }

        pub fn send(&mut self, f: &Frame) -> Result<(), RawError> {
            let (rt, c) = self.parts();
            run(rt, c.send(f))
        }

        pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), RawError> {
            let (rt, c) = self.parts();
            run(rt, c.send_raw(bytes))
        }

        pub fn next_frame(&mut self) -> Result<Frame, RawError> {
            let (rt, c) = self.parts();
            run(rt, c.next_frame())
        }

        pub fn sync(&mut self) -> Result<Vec<Frame>, RawError> {
            let (rt, c) = self.parts();
            run(rt, c.sync())
        }

        pub fn subscribe(&mut self, locs: &[&str]) -> Result<Vec<Frame>, RawError> {
            let (rt, c) = self.parts();
            run(rt, c.subscribe(locs))
        }

        pub fn subscribe_entries(
            &mut self,
            replace: bool,
            entries: Vec<SubEntry>,
        ) -> Result<Vec<Frame>, RawError> {
            let (rt, c) = self.parts();
            run(rt, c.subscribe_entries(replace, entries))
        }

        pub fn unsubscribe(&mut self, locs: &[&str]) -> Result<Vec<Frame>, RawError> {
            let (rt, c) = self.parts();
            run(rt, c.unsubscribe(locs))
        }

        pub fn publish(&mut self, m: Message) -> Result<Vec<Frame>, RawError> {
            let (rt, c) = self.parts();
            run(rt, c.publish(m))
        }

        pub fn deliver(&mut self) -> Result<Message, RawError> {
            let (rt, c) = self.parts();
            run(rt, c.deliver())
        }

        pub fn status(&mut self) -> Result<String, RawError> {
            let (rt, c) = self.parts();
            run(rt, c.status())
        }

        pub fn publish_burst(&mut self, loc: &str, n: u64, size: usize) -> Result<(), RawError> {
            let (rt, c) = self.parts();
            run(rt, c.publish_burst(loc, n, size))
        }

        pub fn count(&mut self, want: u64, idle: Duration) -> Result<Count, RawError> {
            let (rt, c) = self.parts();
            run(rt, c.count(want, idle, |_| {}))
        }

        /// The socket as a plain blocking one, for reading and writing bytes
        /// directly (frames already read into this client's buffer are dropped).
        pub fn into_std(mut self) -> Result<std::net::TcpStream, RawError> {
            let inner = self.inner.take().expect("live");
            let rt = self.rt.as_ref().expect("live");
            let s = run(rt, async move { inner.stream.into_std() })?;
            s.set_nonblocking(false)?;
            Ok(s)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_counts_deliveries_and_losses_and_stops_at_want() {
        let d = Frame::Deliver(Message::new(
            vec![Location::parse("a@x.org").unwrap()],
            Bytes::from_static(b"\0"),
        ))
        .to_bytes();
        let l = Frame::Lossage(5).to_bytes();
        let p = Frame::Pong(1).to_bytes();
        let all = [&d[..], &l, &p, &d, &d[..7]].concat();
        assert_eq!(scan(&all, 100), (2 * d.len() + l.len() + p.len(), 2, 5));
        assert_eq!(scan(&all, 1), (d.len(), 1, 0));
    }

    #[test]
    fn burst_frames_carry_their_number() {
        let t = burst_frame(&Location::parse("a@x.org").unwrap(), 10);
        let (mut out, mut i) = (Vec::new(), 5u64);
        fill_burst(&mut out, &t, &mut i, 7);
        assert_eq!(i, 7);
        assert_eq!(out.len(), 2 * t.len());
        let mut b = BytesMut::from(&out[..]);
        let Some(Frame::Publish(m)) = Frame::decode(&mut b, 1 << 20).unwrap() else {
            panic!()
        };
        assert_eq!(m.id.0[..8], 5u64.to_be_bytes());
    }
}
