//! The gateway for clients of the original Gale protocol (docs/protocol.md §17).
//!
//! galed tells an original client from one of ours by its first four bytes
//! ([`gale_orig::wire::is_version_word`]) and hands the connection here. The
//! gateway answers with the original's version word and opens an ordinary client
//! connection of ours to this same galed (the address the original client
//! reached), over which it acts for the original client:
//!
//! - `gimme` → SUBSCRIBE (replace) to locations that cover the expression; what
//!   is delivered is then filtered with the original's own rule (latest entry
//!   wins over all categories);
//! - `puff` → PUBLISH, `will` → WILL, their content carried byte for byte
//!   (payload kind 0x4f), so an original client's signature and encryption pass
//!   through untouched;
//! - DELIVER → `puff` (ours turned into an unsigned original group; private
//!   messages of ours are not offered, [`gale_orig::convert::Refusal::Private`]);
//! - PING → PONG on behalf of the original client, which has no keepalive.
//!
//! Everything else our server does (flow control, loss counting, wills, limits,
//! status) then applies to original clients unchanged. Two tasks, one per
//! direction, so that neither side's full socket stops the other direction.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use gale_orig::convert::{self, Refusal};
use gale_orig::wire::{Decoder, OrigFrame, VERSION_WORD};
use gale_orig::Expression;
use gale_proto::fragment::{names, Timestamp};
use gale_proto::frame::{Frame, Hello};
use gale_proto::limits::{DEFAULT_MAX_FRAME, MAX_SUB_ENTRIES, PROTOCOL_VERSION};
use gale_proto::{Fragments, Location, Message, MessageId, MessageView, Payload, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::Router;

/// How long the gateway waits for this galed's own WELCOME.
const INNER_HANDSHAKE: Duration = Duration::from_secs(5);
/// After the original client has closed, how long the gateway waits for galed to
/// finish with what it sent (and publish its will) before giving up.
const DRAIN: Duration = Duration::from_secs(5);

/// Serves an original client on `stream`, whose version word has been read;
/// `buf` holds whatever followed it.
pub async fn serve(
    router: Arc<Router>,
    stream: TcpStream,
    buf: BytesMut,
    peer: SocketAddr,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let inner = match tokio::time::timeout(INNER_HANDSHAKE, dial_inner(&router, &stream, peer))
        .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::warn!(%peer, "original client: cannot open its connection to this galed: {e}");
            return;
        }
        Err(_) => {
            tracing::warn!(%peer, "original client: this galed did not answer its gateway in time");
            return;
        }
    };
    tracing::info!(%peer, "original-protocol client connected");
    let (orig_rd, mut orig_wr) = stream.into_split();
    if orig_wr.write_all(&VERSION_WORD).await.is_err() {
        return;
    }
    let (inner_rd, inner_wr) = inner.into_split();
    let inner_wr = Arc::new(Mutex::new(inner_wr));
    let expr = Arc::new(parking_lot::Mutex::new(Expression::parse("-")));
    let up = tokio::spawn(upstream(orig_rd, buf, inner_wr.clone(), expr.clone(), peer));
    tokio::select! {
        _ = downstream(inner_rd, orig_wr, inner_wr, expr, peer) => {}
        _ = shutdown.cancelled() => {}
    }
    up.abort();
    tracing::info!(%peer, "original-protocol client disconnected");
}

/// Opens the gateway's connection of ours to the address the client reached.
async fn dial_inner(
    router: &Router,
    stream: &TcpStream,
    peer: SocketAddr,
) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect(stream.local_addr()?).await?;
    let _ = s.set_nodelay(true);
    // So that galed knows this connection for an original client's (and does
    // not offer it private messages): registered before HELLO is sent.
    let me = s.local_addr()?;
    router.orig_gateways.lock().insert(me);
    let r = handshake_inner(s, peer).await;
    router.orig_gateways.lock().remove(&me);
    r
}

async fn handshake_inner(mut s: TcpStream, peer: SocketAddr) -> std::io::Result<TcpStream> {
    let hello = Frame::Hello(Hello {
        min_version: 1,
        max_version: PROTOCOL_VERSION.min(1),
        max_frame: DEFAULT_MAX_FRAME,
        role: 0,
        agent: format!("original-gale gateway for {peer}"),
    });
    s.write_all(&hello.to_bytes()).await?;
    let mut buf = BytesMut::new();
    match read_frame(&mut s, &mut buf).await? {
        Some(Frame::Welcome(_)) => Ok(s),
        Some(Frame::Error { code, text }) => {
            Err(std::io::Error::other(format!("refused ({code:?}): {text}")))
        }
        _ => Err(std::io::Error::other("no WELCOME")),
    }
}

pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
) -> std::io::Result<Option<Frame>> {
    loop {
        match Frame::decode(buf, DEFAULT_MAX_FRAME) {
            Ok(Some(f)) => return Ok(Some(f)),
            Ok(None) => {}
            Err(e) => return Err(std::io::Error::other(e.to_string())),
        }
        buf.reserve(16 * 1024);
        if rd.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
}

async fn send(wr: &Mutex<OwnedWriteHalf>, frames: &[Bytes]) -> std::io::Result<()> {
    let mut w = wr.lock().await;
    for f in frames {
        w.write_all(f).await?;
    }
    Ok(())
}

/// Original client → galed.
async fn upstream(
    mut rd: tokio::net::tcp::OwnedReadHalf,
    mut buf: BytesMut,
    wr: Arc<Mutex<OwnedWriteHalf>>,
    expr: Arc<parking_lot::Mutex<Expression>>,
    peer: SocketAddr,
) {
    let mut dec = Decoder::new();
    loop {
        loop {
            let frames = match dec.decode(&mut buf) {
                Ok(None) => break,
                Ok(Some(f)) => translate_up(f, &expr, peer),
                Err(e) => {
                    tracing::info!(%peer, "original client sent a bad frame, skipped: {e}");
                    continue;
                }
            };
            if send(&wr, &frames).await.is_err() {
                return;
            }
        }
        buf.reserve(16 * 1024);
        match rd.read_buf(&mut buf).await {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
    // galed processes everything sent before the end, then publishes the will
    // and closes, which ends the other direction.
    let _ = wr.lock().await.shutdown().await;
}

/// Our frames for one original frame.
fn translate_up(
    f: OrigFrame,
    expr: &parking_lot::Mutex<Expression>,
    peer: SocketAddr,
) -> Vec<Bytes> {
    match f {
        OrigFrame::Gimme(text) if text.is_empty() => vec![], // as the original: ignored
        OrigFrame::Gimme(text) => {
            let e = Expression::parse(&text);
            let entries = e.covering();
            *expr.lock() = e;
            let mut chunks = entries.chunks(MAX_SUB_ENTRIES);
            let mut frames = vec![Frame::Subscribe {
                replace: true,
                entries: chunks.next().unwrap_or_default().to_vec(),
            }
            .to_bytes()];
            frames.extend(chunks.map(|c| {
                Frame::Subscribe {
                    replace: false,
                    entries: c.to_vec(),
                }
                .to_bytes()
            }));
            frames
        }
        OrigFrame::Puff { routing, content } => match convert::from_puff(&routing, &content) {
            Ok(m) => vec![Frame::Publish(m).to_bytes()],
            Err(e) => {
                tracing::info!(%peer, "original client's puff not routed: {e}");
                vec![]
            }
        },
        OrigFrame::Will { routing, content } => match convert::from_puff(&routing, &content) {
            // A fresh id: the same will set again later is another message.
            Ok(mut m) => {
                m.id = MessageId::generate();
                vec![Frame::Will(Some(m)).to_bytes()]
            }
            Err(e) => {
                tracing::info!(%peer, "original client's will not kept: {e}");
                vec![]
            }
        },
        OrigFrame::Skipped {
            opcode,
            len,
            oversize,
        } => {
            tracing::debug!(%peer, opcode, len, oversize, "original client frame skipped");
            vec![]
        }
    }
}

/// galed → original client.
async fn downstream(
    mut rd: tokio::net::tcp::OwnedReadHalf,
    mut orig: OwnedWriteHalf,
    inner_wr: Arc<Mutex<OwnedWriteHalf>>,
    expr: Arc<parking_lot::Mutex<Expression>>,
    peer: SocketAddr,
) {
    let mut buf = BytesMut::new();
    let mut private = 0u64;
    loop {
        let f = match read_frame(&mut rd, &mut buf).await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                tracing::info!(%peer, "gateway connection ended: {e}");
                break;
            }
        };
        match f {
            Frame::Deliver(m) => {
                if !expr.lock().accepts(&convert::categories(&m.to)) {
                    continue;
                }
                match convert::to_puff(&m) {
                    Ok((routing, content)) => {
                        let puff = OrigFrame::Puff { routing, content }.to_bytes();
                        if orig.write_all(&puff).await.is_err() {
                            break;
                        }
                    }
                    Err(Refusal::Private) => {
                        private += 1;
                        tracing::info!(%peer, id = %m.id, "private message not offered to an original client ({private} so far)");
                    }
                    Err(e) => {
                        tracing::info!(%peer, id = %m.id, "not offered to an original client: {e}")
                    }
                }
            }
            Frame::Ping(t) => {
                let answered = send(&inner_wr, &[Frame::Pong(t).to_bytes()]).await;
                if answered.is_err() {
                    break;
                }
            }
            Frame::Lossage(n) => {
                tracing::warn!(%peer, "{n} messages lost for an original client (it reads too slowly; the original protocol cannot tell it)");
            }
            Frame::Error { code, text } => {
                tracing::info!(%peer, "galed ended an original client's connection ({code:?}): {text}");
                break;
            }
            _ => {}
        }
    }
    let _ = tokio::time::timeout(DRAIN, orig.shutdown()).await;
}

/// The notice a publisher is sent when its private message was not offered to
/// `n` original-protocol clients that subscribed to it: a DELIVER from the server
/// to `_gale.server@DOMAIN` (the domain of the message's first location), with a
/// `message.body` saying so and `id.refused` naming the message (docs/protocol.md
/// §17.6).
pub fn refusal_notice(view: &MessageView<'_>, n: u64) -> Bytes {
    let dom = view
        .locations()
        .next()
        .and_then(|l| l.rsplit_once('@'))
        .map(|(_, d)| d.to_string())
        .unwrap_or_default();
    let mut f = Fragments::new();
    f.push_text(
        names::MESSAGE_BODY,
        format!(
            "your private message {} was not offered to {n} original-Gale client{} \
             subscribed to it: they cannot decrypt it",
            view.id,
            if n == 1 { "" } else { "s" }
        ),
    );
    f.push_text(NOTICE_REFUSED, view.id.to_string());
    f.push(names::ID_TIME, Value::Time(Timestamp::now()));
    let to = Location::from_canonical(&format!("_gale.server@{dom}"))
        .expect("a reserved location in a domain that was valid");
    let payload = Payload::Plain(f).encode().expect("short fragments");
    Frame::Deliver(Message::new(vec![to], payload)).to_bytes()
}

/// The fragment of a [`refusal_notice`] naming the refused message (its id in hex).
pub const NOTICE_REFUSED: &str = "id.refused";
