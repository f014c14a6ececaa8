//! `/metrics`: galed's state in the Prometheus text format, served over HTTP
//! (`--metrics ADDR` or `metrics = "ADDR"`).
//!
//! Every scrape takes one [`Status`] snapshot, the very report `galed --status`
//! prints, and encodes it ([`encode`]), so that the two never disagree. To add a
//! metric, add a field to `Status` and one line to [`encode`].
//!
//! Why these crates: `prometheus-client` (the Prometheus project's Rust client)
//! writes the format and its escaping; hyper, already the HTTP/1 of the Rust
//! ecosystem, serves it with a few lines of glue (`hyper-util` joins it to
//! tokio), rather than a hand-written HTTP parser facing the network.

use std::convert::Infallible;
use std::sync::Arc;

use anyhow::{Context, Result};
use gale_net::ServerAddr;
use gale_server::status::Status;
use gale_server::Router;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::view::configured_links;

/// The content type of the OpenMetrics text that prometheus-client writes
/// (Prometheus and promtool read it).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Binds `addr` and serves `/metrics` until `shutdown`.
pub async fn start(
    addr: &str,
    router: Arc<Router>,
    shutdown: CancellationToken,
) -> Result<JoinHandle<()>> {
    let a = ServerAddr::parse_listen(addr)?;
    let listener = TcpListener::bind((a.host.as_str(), a.port))
        .await
        .with_context(|| format!("cannot serve metrics on {addr}"))?;
    // A stable line on stderr, as for the Gale listeners.
    eprintln!(
        "galed: metrics on http://{}/metrics",
        listener.local_addr()?
    );
    let mut registry = Registry::default();
    registry.register_collector(Box::new(StatusCollector(router)));
    let registry = Arc::new(registry);
    Ok(tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                _ = shutdown.cancelled() => return,
                a = listener.accept() => match a {
                    Ok((s, _)) => s,
                    Err(e) => {
                        tracing::warn!("metrics: accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let registry = registry.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let registry = registry.clone();
                    async move { Ok::<_, Infallible>(answer(&req, &registry)) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    r = conn => if let Err(e) = r {
                        tracing::debug!("metrics: connection: {e}");
                    }
                }
            });
        }
    }))
}

fn answer<B>(req: &Request<B>, registry: &Registry) -> Response<Full<Bytes>> {
    let reply = |code: StatusCode, ty: &str, body: String| {
        Response::builder()
            .status(code)
            .header("content-type", ty)
            .body(Full::new(Bytes::from(body)))
            .expect("a valid response")
    };
    if req.method() != hyper::Method::GET && req.method() != hyper::Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET /metrics\n".into(),
        );
    }
    match req.uri().path() {
        "/metrics" => {
            let mut body = String::new();
            match prometheus_client::encoding::text::encode(&mut body, registry) {
                Ok(()) => reply(StatusCode::OK, CONTENT_TYPE, body),
                Err(e) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    format!("cannot encode the metrics: {e}\n"),
                ),
            }
        }
        "/" => reply(
            StatusCode::OK,
            "text/html",
            "<html><body><a href=\"/metrics\">galed metrics</a></body></html>\n".into(),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: galed serves /metrics\n".into(),
        ),
    }
}

/// Reads the router's status at each scrape.
struct StatusCollector(Arc<Router>);

impl std::fmt::Debug for StatusCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StatusCollector")
    }
}

impl Collector for StatusCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encode(&Status::collect(&self.0), encoder)
    }
}

/// One metric, with or without labels, for [`encode`].
struct Out<'a, 'b>(&'b mut DescriptorEncoder<'a>);

type Labels = Vec<(&'static str, String)>;

impl Out<'_, '_> {
    fn counter(&mut self, name: &str, help: &str, v: u64) -> Result<(), std::fmt::Error> {
        ConstCounter::new(v).encode(self.0.encode_descriptor(
            name,
            help,
            None,
            MetricType::Counter,
        )?)
    }

    fn gauge(&mut self, name: &str, help: &str, v: u64) -> Result<(), std::fmt::Error> {
        let v = i64::try_from(v).unwrap_or(i64::MAX);
        ConstGauge::new(v).encode(
            self.0
                .encode_descriptor(name, help, None, MetricType::Gauge)?,
        )
    }

    fn family(
        &mut self,
        name: &str,
        help: &str,
        ty: MetricType,
        rows: &[(Labels, u64)],
    ) -> Result<(), std::fmt::Error> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut m = self.0.encode_descriptor(name, help, None, ty)?;
        for (labels, v) in rows {
            let e = m.encode_family(labels)?;
            match ty {
                MetricType::Counter => ConstCounter::new(*v).encode(e)?,
                _ => ConstGauge::new(i64::try_from(*v).unwrap_or(i64::MAX)).encode(e)?,
            }
        }
        Ok(())
    }
}

/// The metrics of one status snapshot. Names start with `gale_`; counters get
/// `_total` from the encoder.
pub fn encode(s: &Status, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
    use MetricType::{Counter, Gauge};
    let mut o = Out(&mut encoder);
    o.gauge("gale_up_seconds", "Seconds since galed started", s.up_secs)?;
    o.gauge(
        "gale_connections",
        "Client connections open now",
        s.connections as u64,
    )?;
    o.gauge(
        "gale_connections_max",
        "The connection limit in force",
        s.max_connections as u64,
    )?;
    o.counter(
        "gale_connections_accepted",
        "Connections accepted since start",
        s.connections_total,
    )?;
    o.counter(
        "gale_connections_refused",
        "Connections refused at the connection limit or memory budget",
        s.refused_connections,
    )?;
    o.counter(
        "gale_protocol_errors",
        "Connections closed for breaking the protocol",
        s.protocol_errors,
    )?;
    o.gauge(
        "gale_subscriptions",
        "Subscription entries held, clients' and links' together",
        s.subscriptions as u64,
    )?;
    o.gauge(
        "gale_subscriptions_max",
        "Most subscription entries galed holds (max_subscriptions)",
        s.max_subscriptions as u64,
    )?;
    o.gauge(
        "gale_memory_used_bytes",
        "Bytes of the memory budget in use",
        s.memory_used as u64,
    )?;
    o.gauge(
        "gale_memory_limit_bytes",
        "The memory budget",
        s.memory_limit as u64,
    )?;
    o.counter(
        "gale_messages_published",
        "Messages routed (wills included)",
        s.published,
    )?;
    o.counter(
        "gale_messages_delivered",
        "Deliveries queued for clients and links",
        s.delivered,
    )?;
    o.counter(
        "gale_wills_published",
        "Wills published for clients that vanished",
        s.wills_published,
    )?;
    let link_dropped: u64 = s.links.iter().map(|l| l.dropped).sum();
    let reasons = [
        ("duplicate", s.duplicates_dropped),
        ("hop_limit", s.hop_limit_dropped),
        ("client_queue", s.client_dropped),
        ("link_queue", link_dropped),
    ];
    let rows: Vec<(Labels, u64)> = reasons
        .iter()
        .map(|(r, v)| (vec![("reason", r.to_string())], *v))
        .collect();
    o.family(
        "gale_messages_dropped",
        "Messages dropped, by reason (link_queue: links up now only)",
        Counter,
        &rows,
    )?;
    // Clients' queues.
    let queued: u64 = s.clients.iter().map(|c| c.queued_bytes as u64).sum();
    let queued_frames: u64 = s.clients.iter().map(|c| c.queued_frames as u64).sum();
    let deepest = s
        .clients
        .iter()
        .map(|c| c.queued_bytes as u64)
        .max()
        .unwrap_or(0);
    o.gauge(
        "gale_client_queued_bytes",
        "Bytes queued for all clients, not yet written",
        queued,
    )?;
    o.gauge(
        "gale_client_queued_frames",
        "Frames queued for all clients, not yet written",
        queued_frames,
    )?;
    o.gauge(
        "gale_client_queue_deepest_bytes",
        "Bytes queued for the client with the deepest queue",
        deepest,
    )?;
    o.gauge(
        "gale_clients_omitted",
        "Clients left out of the report (queue figures cover the rest)",
        s.clients_omitted as u64,
    )?;
    // Links.
    let configured = configured_links(s);
    o.gauge(
        "gale_links_configured",
        "Links in the configuration",
        configured.len() as u64,
    )?;
    o.gauge(
        "gale_links_up",
        "Links up now (dialled or accepted)",
        s.links.len() as u64,
    )?;
    let rows: Vec<(Labels, u64)> = configured
        .iter()
        .map(|(spec, up)| (vec![("link", spec.clone())], u64::from(up.is_some())))
        .collect();
    o.family(
        "gale_link_configured_up",
        "1 if the configured link is up, 0 if it is down",
        Gauge,
        &rows,
    )?;
    let per_link = |f: &dyn Fn(&gale_server::status::LinkStatus) -> u64| -> Vec<(Labels, u64)> {
        s.links
            .iter()
            .map(|l| {
                (
                    vec![("peer", l.peer.clone()), ("addr", l.addr.clone())],
                    f(l),
                )
            })
            .collect()
    };
    o.family(
        "gale_link_up_seconds",
        "Seconds the link has been up",
        Gauge,
        &per_link(&|l| l.up_secs),
    )?;
    o.family(
        "gale_link_messages_in",
        "Messages received over the link",
        Counter,
        &per_link(&|l| l.messages_in),
    )?;
    o.family(
        "gale_link_bytes_in",
        "Bytes received over the link",
        Counter,
        &per_link(&|l| l.bytes_in),
    )?;
    o.family(
        "gale_link_frames_out",
        "Frames sent over the link",
        Counter,
        &per_link(&|l| l.frames_out),
    )?;
    o.family(
        "gale_link_bytes_out",
        "Bytes sent over the link",
        Counter,
        &per_link(&|l| l.bytes_out),
    )?;
    o.family(
        "gale_link_duplicates_in",
        "Duplicate messages received over the link",
        Counter,
        &per_link(&|l| l.duplicates_in),
    )?;
    o.family(
        "gale_link_dropped",
        "Messages dropped for the peer here",
        Counter,
        &per_link(&|l| l.dropped),
    )?;
    o.family(
        "gale_link_lost_upstream",
        "Messages the peer reported it dropped on their way here",
        Counter,
        &per_link(&|l| l.lost_upstream),
    )?;
    o.family(
        "gale_link_queued_bytes",
        "Bytes queued for the peer, not yet written",
        Gauge,
        &per_link(&|l| l.queued_bytes as u64),
    )?;
    o.family(
        "gale_link_queued_frames",
        "Frames queued for the peer, not yet written",
        Gauge,
        &per_link(&|l| l.queued_frames as u64),
    )?;
    o.family(
        "gale_link_interest_received",
        "Locations the peer wants from this server",
        Gauge,
        &per_link(&|l| l.interest_received as u64),
    )?;
    o.family(
        "gale_link_interest_advertised",
        "Locations this server told the peer it wants",
        Gauge,
        &per_link(&|l| l.interest_advertised as u64),
    )?;
    o.family(
        "gale_link_holds",
        "Times publishers waited for room in the link's queue",
        Counter,
        &per_link(&|l| l.holds),
    )?;
    // The resume window.
    let w = &s.resume_window;
    o.gauge(
        "gale_resume_window_messages",
        "Messages held for clients that resume",
        w.entries as u64,
    )?;
    o.gauge(
        "gale_resume_window_bytes",
        "Bytes the resume window holds",
        w.bytes as u64,
    )?;
    o.counter("gale_resumes", "Resumes answered", w.resumed)?;
    o.counter("gale_resume_gaps", "Resumes answered with a gap", w.gaps)?;
    Ok(())
}
