//! A link from this galed to a galed of the original Gale (docs/protocol.md §17.7).
//!
//! The original galed knows no links of ours: to it, this side is one of its
//! clients, as its own galeds are to each other (wire.md §4.6). The bridge holds
//! two connections and translates between them:
//!
//! - to the original galed: its version word, a `gimme` expressing what this side
//!   wants (the INTEREST our galed sends the bridge, as categories), and `puff`s;
//! - to this galed: an ordinary server link of ours (HELLO role 1, over loopback
//!   to our own listener), which asks for everything (INTEREST `all`): the
//!   original galed does not say what its clients want, and it routes only to them.
//!
//! So split horizon, the recent-id cache and hop counts apply to the original
//! network as to any peer: a puff that comes back by another path has the same id
//! ([`gale_orig::convert::puff_id`], or the `id/gale-message` we added) and is
//! dropped. Private (encrypted) messages are never offered to the bridge (its
//! outbox is marked original, as a gateway's) and their publishers are told. When
//! either connection fails both are closed, and the original galed is dialled
//! again, alternates in turn, with the back-off of our own links.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use gale_net::addr::ServerAddr;
use gale_orig::category::sub_category;
use gale_orig::convert;
use gale_orig::wire::{Decoder, OrigFrame, VERSION_WORD};
use gale_proto::frame::{Frame, Hello};
use gale_proto::limits::{MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};
use gale_proto::Location;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::link::{keep_up, Attempt, STABLE_LINK};
use crate::Router;

const DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// Most INTEREST locations the bridge holds (it announces this in LINK_LIMITS).
const MAX_INTEREST: u32 = 65_536;

/// Keeps the link to one original galed (`alternates`, tried in turn) up while
/// the server runs; `own` is an address this galed listens on.
pub async fn dial_loop(
    router: Arc<Router>,
    alternates: Vec<ServerAddr>,
    own: SocketAddr,
    shutdown: CancellationToken,
) {
    keep_up(
        &alternates,
        &shutdown,
        "link to an original galed",
        |addr| {
            let router = router.clone();
            let shutdown = shutdown.clone();
            async move {
                // The bridge holds only sockets: dropping it on shutdown
                // closes both, and our galed takes its side down as usual.
                let connected = tokio::select! {
                    _ = shutdown.cancelled() => return Attempt::Shutdown,
                    c = tokio::time::timeout(DIAL_TIMEOUT, connect(&router, &addr, own)) => c,
                };
                let (orig, inner) = match connected {
                    Ok(Ok(c)) => c,
                    Ok(Err(e)) => return Attempt::Failed(e.to_string()),
                    Err(_) => return Attempt::Failed(format!("no answer within {DIAL_TIMEOUT:?}")),
                };
                let began = Instant::now();
                tracing::info!("link to original galed {addr} is up");
                let why = tokio::select! {
                    _ = shutdown.cancelled() => return Attempt::Shutdown,
                    why = bridge(orig, inner) => why,
                };
                tracing::warn!("link to original galed {addr} is down: {why}");
                Attempt::Ran {
                    stable: began.elapsed() >= STABLE_LINK,
                }
            }
        },
    )
    .await
}

/// Both connections, handshakes done.
async fn connect(
    router: &Router,
    addr: &ServerAddr,
    own: SocketAddr,
) -> std::io::Result<(TcpStream, (TcpStream, BytesMut))> {
    let mut orig = TcpStream::connect((addr.host.as_str(), addr.port)).await?;
    let _ = orig.set_nodelay(true);
    orig.write_all(&VERSION_WORD).await?;
    let mut word = [0u8; 4];
    orig.read_exact(&mut word).await?;
    if !gale_orig::wire::is_version_word(word) {
        return Err(std::io::Error::other(
            "the peer does not speak the original protocol",
        ));
    }
    let inner = TcpStream::connect(own).await?;
    let _ = inner.set_nodelay(true);
    let me = inner.local_addr()?;
    router.orig_gateways.lock().insert(me);
    let r = link_handshake(inner, addr).await;
    router.orig_gateways.lock().remove(&me);
    Ok((orig, r?))
}

async fn link_handshake(
    mut s: TcpStream,
    addr: &ServerAddr,
) -> std::io::Result<(TcpStream, BytesMut)> {
    let hello = Frame::Hello(Hello {
        min_version: MIN_PROTOCOL_VERSION,
        max_version: PROTOCOL_VERSION,
        max_frame: gale_proto::limits::DEFAULT_MAX_FRAME,
        role: 1,
        agent: format!("original-gale {addr}"),
    });
    s.write_all(&hello.to_bytes()).await?;
    let mut buf = BytesMut::new();
    match crate::orig::read_frame(&mut s, &mut buf).await? {
        Some(Frame::Welcome(_)) => {}
        Some(Frame::Error { text, .. }) => {
            return Err(std::io::Error::other(format!("this galed refused: {text}")))
        }
        _ => return Err(std::io::Error::other("this galed did not answer")),
    }
    // Everything this side has (the original galed routes only to its own
    // clients), within a limit this galed respects.
    let first = [
        Frame::LinkLimits {
            max_interest: MAX_INTEREST,
        }
        .to_bytes(),
        Frame::Interest {
            reset: true,
            all: true,
            entries: vec![],
        }
        .to_bytes(),
    ];
    for f in first {
        s.write_all(&f).await?;
    }
    // Frames read past WELCOME are the link's first: they are kept.
    Ok((s, buf))
}

/// Runs one bridged link until either side ends it; says why.
async fn bridge(orig: TcpStream, (inner, buf): (TcpStream, BytesMut)) -> String {
    let (orig_rd, orig_wr) = orig.into_split();
    let (inner_rd, inner_wr) = inner.into_split();
    let orig_wr = Arc::new(Mutex::new(orig_wr));
    let inner_wr = Arc::new(Mutex::new(inner_wr));
    tokio::select! {
        why = from_original(orig_rd, inner_wr.clone()) => why,
        why = from_ours(inner_rd, buf, orig_wr, inner_wr) => why,
    }
}

async fn write(wr: &Mutex<OwnedWriteHalf>, f: &[u8]) -> Result<(), String> {
    wr.lock()
        .await
        .write_all(f)
        .await
        .map_err(|e| e.to_string())
}

/// Original galed → this galed: puffs become DELIVERs on our link.
async fn from_original(mut rd: OwnedReadHalf, inner: Arc<Mutex<OwnedWriteHalf>>) -> String {
    let mut dec = Decoder::new();
    let mut buf = BytesMut::new();
    loop {
        loop {
            match dec.decode(&mut buf) {
                Ok(None) => break,
                Ok(Some(OrigFrame::Puff { routing, content })) => {
                    match convert::from_puff(&routing, &content) {
                        Ok(mut m) => {
                            m.hops = 1;
                            if let Err(e) = write(&inner, &Frame::Deliver(m).to_bytes()).await {
                                return format!("this galed: {e}");
                            }
                        }
                        Err(e) => tracing::debug!("puff from the original galed not routed: {e}"),
                    }
                }
                Ok(Some(f)) => tracing::debug!("original galed sent {f:?}; ignored"),
                Err(e) => tracing::info!("original galed sent a bad frame, skipped: {e}"),
            }
        }
        buf.reserve(16 * 1024);
        match rd.read_buf(&mut buf).await {
            Ok(0) => return "the original galed closed the connection".into(),
            Ok(_) => {}
            Err(e) => return format!("original galed: {e}"),
        }
    }
}

/// This galed → original galed: INTEREST becomes `gimme`, DELIVERs become puffs.
async fn from_ours(
    mut rd: OwnedReadHalf,
    mut buf: BytesMut,
    orig: Arc<Mutex<OwnedWriteHalf>>,
    inner: Arc<Mutex<OwnedWriteHalf>>,
) -> String {
    let mut wanted: BTreeSet<Location> = BTreeSet::new();
    loop {
        let f = match crate::orig::read_frame(&mut rd, &mut buf).await {
            Ok(Some(f)) => f,
            Ok(None) => return "this galed closed the link".into(),
            Err(e) => return format!("this galed: {e}"),
        };
        let out: Option<Bytes> = match f {
            Frame::Deliver(m) => match convert::to_puff(&m) {
                Ok((routing, content)) => Some(OrigFrame::Puff { routing, content }.to_bytes()),
                Err(e) => {
                    tracing::debug!(id = %m.id, "not sent to the original galed: {e}");
                    None
                }
            },
            Frame::Interest {
                reset,
                all,
                entries,
            } => {
                if reset {
                    wanted.clear();
                }
                if all {
                    tracing::warn!(
                        "this galed wants everything from the original galed, which cannot be \
                         asked for: keeping to the domains listed before"
                    );
                }
                for e in entries {
                    if e.positive {
                        wanted.insert(e.location);
                    } else {
                        wanted.remove(&e.location);
                    }
                }
                Some(OrigFrame::Gimme(gimme(&wanted)).to_bytes())
            }
            Frame::Ping(t) => {
                if let Err(e) = write(&inner, &Frame::Pong(t).to_bytes()).await {
                    return format!("this galed: {e}");
                }
                None
            }
            Frame::Error { text, .. } => return format!("this galed ended the link: {text}"),
            _ => None,
        };
        if let Some(f) = out {
            if let Err(e) = write(&orig, &f).await {
                return format!("original galed: {e}");
            }
        }
    }
}

/// The `gimme` for a set of locations: each as a category, `-` for none.
pub fn gimme(wanted: &BTreeSet<Location>) -> String {
    if wanted.is_empty() {
        return "-".into();
    }
    wanted
        .iter()
        .map(sub_category)
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interest_becomes_a_gimme() {
        let mut w = BTreeSet::new();
        assert_eq!(gimme(&w), "-");
        w.insert(Location::from_canonical("pub.test@example.org").unwrap());
        w.insert(Location::from_canonical("@other.org").unwrap());
        assert_eq!(gimme(&w), "@other.org/:@example.org/user/pub/test/");
    }
}
