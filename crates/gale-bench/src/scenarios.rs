//! The benchmark scenarios. Each starts its own galed and prints one line.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{bail, Result};
use bytes::BytesMut;
use gale_proto::frame::Frame;
use gale_proto::limits::DEFAULT_MAX_FRAME;
use gale_proto::trie::SubscriptionTrie;

use crate::raw::{loc, median, publish_frame, Galed, Raw};

pub struct Setup {
    pub galed: PathBuf,
    pub runs: usize,
    pub messages: u64,
    /// 0: publishers write as fast as their sockets allow (the default). Otherwise
    /// the publisher stays at most this many messages ahead of its slowest reader.
    pub window: u64,
}

/// Body size used by the throughput scenarios.
const BODY: usize = 128;
/// Bytes per publisher write: like a real publisher (or `gsend --lines` fed by a
/// fast pipe), the bench publisher writes 64 KiB at a time, as fast as its socket
/// takes them.
const PUB_WRITE: usize = 64 * 1024;

pub type Progress = Arc<crate::raw::Counter>;

fn progress() -> Progress {
    Arc::new(crate::raw::Counter::default())
}

/// What a publisher thread measured.
struct Published {
    /// From the first write to the PONG that confirms the last message.
    elapsed: Duration,
}

/// Publishes `n` messages from its own thread, cycling through `templates`, each
/// with a fresh id, in writes of [`PUB_WRITE`] bytes. Unpaced unless `window` is
/// set: then it keeps at most `window` messages ahead of the slowest `pace` counter
/// (each of which sees 1/`per_sub` of the stream), which measures the rate galed
/// delivers when nobody outruns anybody (a diagnosis, never the default).
fn publisher(
    addr: std::net::SocketAddr,
    templates: Vec<Vec<u8>>,
    n: u64,
    pace: Vec<Progress>,
    per_sub: u64,
    window: u64,
) -> std::thread::JoinHandle<Result<Published>> {
    std::thread::spawn(move || {
        let mut s = gale_net::raw::blocking::RawClient::connect(addr, "bench")?;
        let per_write = (PUB_WRITE / templates[0].len()).max(1);
        let mut out = Vec::with_capacity(PUB_WRITE + templates[0].len());
        let t = Instant::now();
        let mut i = 0u64;
        while i < n {
            if window > 0 {
                loop {
                    let slowest = pace
                        .iter()
                        .map(|c| c.seen.load(Ordering::Relaxed))
                        .min()
                        .unwrap_or(u64::MAX);
                    if i.saturating_sub(slowest.saturating_mul(per_sub)) <= window {
                        break;
                    }
                    std::thread::yield_now();
                }
            }
            out.clear();
            for _ in 0..per_write.min((n - i) as usize) {
                let tpl = &templates[(i % templates.len() as u64) as usize];
                let start = out.len();
                out.extend_from_slice(tpl);
                out[start + 5..start + 13].copy_from_slice(&i.to_be_bytes());
                i += 1;
            }
            s.send_raw(&out)?;
        }
        s.sync()?;
        Ok(Published {
            elapsed: t.elapsed(),
        })
    })
}

type Counted = (u64, u64, Option<Instant>, Option<Instant>);

/// Sums the subscribers' counts: delivered, lost, first and last arrival overall.
async fn gather(counters: Vec<tokio::task::JoinHandle<Result<Counted>>>) -> Result<Counted> {
    let (mut got, mut lost) = (0u64, 0u64);
    let (mut first, mut last) = (None::<Instant>, None::<Instant>);
    for c in counters {
        let (g, l, f, la) = c.await??;
        got += g;
        lost += l;
        first = first.into_iter().chain(f).min();
        last = last.into_iter().chain(la).max();
    }
    Ok((got, lost, first, last))
}

/// One publisher, `subs` subscribers on the last of a line of `servers` galeds,
/// the publisher on the first: the firehose. Every subscriber reads as fast as it
/// can; the publisher writes as fast as its socket allows.
pub async fn fanout(cfg: &Setup, subs: usize, servers: usize) -> Result<()> {
    let mut rates = Vec::new();
    let mut pub_rates = Vec::new();
    let mut losses = Vec::new();
    let mut worst = (0u64, 0u64);
    for _ in 0..cfg.runs {
        let line = crate::raw::line(&cfg.galed, servers)?;
        let (first, g) = (line[0].addr, line.last().expect("servers"));
        let mut counters = Vec::new();
        let mut pace = Vec::new();
        for _ in 0..subs {
            let mut s = Raw::connect(g.addr).await?;
            s.subscribe(&["bench@x.org"]).await?;
            let pr = progress();
            pace.push(pr.clone());
            counters.push(tokio::spawn(s.count(cfg.messages, pr)));
        }
        if servers > 1 {
            crate::raw::wait_for(|| Ok(crate::raw::interest_received(first)? >= 1))?;
        }
        let t = vec![publish_frame("bench@x.org", BODY)];
        let p = publisher(first, t, cfg.messages, pace, 1, cfg.window);
        let (got, lost, first, last) = gather(counters).await?;
        let published = p.join().expect("publisher thread")?;
        if std::env::var_os("GALE_BENCH_DEBUG").is_some() {
            for g in &line {
                let st = crate::raw::status(g.addr)?;
                let held: Vec<_> = st["clients"]
                    .as_array()
                    .into_iter()
                    .chain(st["links"].as_array())
                    .flatten()
                    .map(|c| {
                        (
                            c["held_ms"].clone(),
                            c["holds"].clone(),
                            c["dropped"].clone(),
                        )
                    })
                    .collect();
                eprintln!("  {}: (held_ms, holds, dropped): {held:?}", st["name"]);
            }
        }
        let want = cfg.messages * subs as u64;
        let secs = match (first, last) {
            (Some(f), Some(l)) if l > f => (l - f).as_secs_f64(),
            _ => bail!("no deliveries"),
        };
        rates.push(got as f64 / secs);
        pub_rates.push(cfg.messages as f64 / published.elapsed.as_secs_f64());
        let missing = want - got.min(want);
        losses.push(missing as f64 * 100.0 / want as f64);
        if missing >= worst.0 {
            worst = (missing, lost);
        }
    }
    println!(
        "fanout 1->{subs} across {servers} server(s), unpaced{}: median {:.0} deliveries/s \
         (each: {:?}), publisher median {:.0} msgs/s, {BODY}-byte bodies; median loss {:.2}% \
         (worst run: {} of {} not delivered, {} of them reported in LOSSAGE)",
        window_note(cfg),
        median(&mut rates.clone()),
        rates.iter().map(|r| *r as u64).collect::<Vec<_>>(),
        median(&mut pub_rates),
        median(&mut losses),
        worst.0,
        cfg.messages * subs as u64,
        worst.1,
    );
    Ok(())
}

fn window_note(cfg: &Setup) -> String {
    if cfg.window > 0 {
        format!(" (PACED: window {} messages)", cfg.window)
    } else {
        String::new()
    }
}

/// A blocking client for the latency threads: subscribed to `sub` if given, then
/// handed over as a plain socket.
fn blocking_client(addr: std::net::SocketAddr, sub: Option<&str>) -> Result<std::net::TcpStream> {
    let mut c = gale_net::raw::blocking::RawClient::connect(addr, "bench")?;
    if let Some(l) = sub {
        c.subscribe(&[l])?;
    }
    Ok(c.into_std()?)
}

pub fn latency(cfg: &Setup, rate: u64, servers: usize) -> Result<()> {
    let secs = 3u64;
    let mut p50s = Vec::new();
    let mut p99s = Vec::new();
    let mut p999s = Vec::new();
    for _ in 0..cfg.runs {
        // servers == 0 is the baseline: the publisher writes straight into the
        // subscriber's socket, so what remains is the machine's own wake-up cost.
        let line = crate::raw::line(&cfg.galed, servers)?;
        let (mut sub, mut publ) = if servers == 0 {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            let p = std::net::TcpStream::connect(l.local_addr()?)?;
            let (s, _) = l.accept()?;
            p.set_nodelay(true)?;
            s.set_nodelay(true)?;
            (s, p)
        } else {
            let sub = blocking_client(line[servers - 1].addr, Some("lat@x.org"))?;
            if servers > 1 {
                crate::raw::wait_for(|| Ok(crate::raw::interest_received(line[0].addr)? >= 1))?;
            }
            (sub, blocking_client(line[0].addr, None)?)
        };
        let base = Instant::now();
        let total = rate * secs;
        let reader = std::thread::spawn(move || -> Result<Vec<u64>> {
            let mut lat = Vec::with_capacity(total as usize);
            let mut buf = BytesMut::new();
            let mut chunk = vec![0u8; 65536];
            while (lat.len() as u64) < total {
                let n = sub.read(&mut chunk)?;
                if n == 0 {
                    break;
                }
                let now = base.elapsed().as_nanos() as u64;
                buf.extend_from_slice(&chunk[..n]);
                while let Some(f) = Frame::decode(&mut buf, DEFAULT_MAX_FRAME)? {
                    if let Frame::Deliver(m) = f {
                        let sent = u64::from_be_bytes(m.payload[1..9].try_into()?);
                        lat.push(now - sent);
                    }
                }
            }
            Ok(lat)
        });
        let mut frame = publish_frame("lat@x.org", BODY);
        if servers == 0 {
            frame[4] = 0x11; // as galed would deliver it
        }
        let payload_at = frame.len() - BODY;
        let period = Duration::from_nanos(1_000_000_000 / rate);
        let start = Instant::now();
        for i in 0..total {
            let due = start + period * i as u32;
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            frame[5..13].copy_from_slice(&i.to_be_bytes());
            let ts = base.elapsed().as_nanos() as u64;
            frame[payload_at + 1..payload_at + 9].copy_from_slice(&ts.to_be_bytes());
            publ.write_all(&frame)?;
        }
        let mut lat = reader.join().expect("reader thread")?;
        let warm = lat.len() / 10; // the first tenth warms caches and the scheduler
        let mut lat = lat.split_off(warm);
        lat.sort_unstable();
        let pct =
            |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)] as f64 / 1000.0;
        p50s.push(pct(0.50));
        p99s.push(pct(0.99));
        p999s.push(pct(0.999));
    }
    println!(
        "latency at {rate} msgs/s, 1->1 across {servers} server(s): median over {} runs p50 {:.1} us, p99 {:.1} us, p99.9 {:.1} us (p99 each: {:?})",
        cfg.runs,
        median(&mut p50s),
        median(&mut p99s.clone()),
        median(&mut p999s),
        p99s.iter().map(|x| *x as u64).collect::<Vec<_>>(),
    );
    Ok(())
}

/// Cost of matching one location in the trie, against the number of subscriptions.
pub fn matching(_cfg: &Setup) {
    for n in [100usize, 10_000, 100_000] {
        let mut idx = SubscriptionTrie::new();
        let locs: Vec<String> = (0..n)
            .map(|i| format!("pub.topic{}.sub{i}@x.org", i % 97))
            .collect();
        for (i, l) in locs.iter().enumerate() {
            idx.insert(&loc(l), i as u64, 0, true, ());
        }
        let probes: Vec<String> = (0..1024).map(|i| locs[(i * 7919) % n].clone()).collect();
        let misses: Vec<String> = (0..1024)
            .map(|i| format!("pub.topic{}.none{i}@x.org", i % 97))
            .collect();
        for (what, set) in [("hit", &probes), ("miss", &misses)] {
            let iters = 2_000_000usize;
            let mut found = 0usize;
            let t = Instant::now();
            for i in 0..iters {
                idx.for_each_accepting(&set[i & 1023], |_| found += 1);
            }
            let ns = t.elapsed().as_nanos() as f64 / iters as f64;
            std::hint::black_box(found);
            println!("match {what}: {n:>6} subscriptions: {ns:.0} ns per message");
        }
    }
}

pub async fn many(cfg: &Setup, n: usize) -> Result<()> {
    let mut rates = Vec::new();
    let mut losses = Vec::new();
    let per = 100u64;
    for _ in 0..cfg.runs {
        let g = Galed::start(&cfg.galed, &[])?;
        let mut counters = Vec::with_capacity(n);
        let mut pace = Vec::with_capacity(n);
        let names: Vec<String> = (0..n).map(|i| format!("many.l{i}@x.org")).collect();
        for chunk in names.chunks(250) {
            let mut conns = Vec::new();
            for name in chunk {
                let name = name.clone();
                let addr = g.addr;
                conns.push(tokio::spawn(async move {
                    let mut s = Raw::connect(addr).await?;
                    s.subscribe(&[&name]).await?;
                    anyhow::Ok(s)
                }));
            }
            for c in conns {
                let pr = progress();
                pace.push(pr.clone());
                counters.push(tokio::spawn(c.await??.count(per, pr)));
            }
        }
        let templates: Vec<Vec<u8>> = names.iter().map(|l| publish_frame(l, BODY)).collect();
        let total = per * n as u64;
        // Round-robin: with a window, each subscriber may be up to 2 messages behind.
        let window = if cfg.window > 0 { 2 * n as u64 } else { 0 };
        let p = publisher(g.addr, templates, total, pace, n as u64, window);
        let (got, _lost, first, last) = gather(counters).await?;
        p.join().expect("publisher thread")?;
        let secs = (last.unwrap() - first.unwrap()).as_secs_f64();
        rates.push(got as f64 / secs);
        losses.push((total - got.min(total)) as f64 * 100.0 / total as f64);
    }
    println!(
        "{n} subscribers on {n} locations, round-robin publisher, unpaced{}: median {:.0} \
         deliveries/s (each: {:?}); median loss {:.2}%",
        window_note(cfg),
        median(&mut rates.clone()),
        rates.iter().map(|r| *r as u64).collect::<Vec<_>>(),
        median(&mut losses),
    );
    Ok(())
}

pub async fn memory(cfg: &Setup, n: usize) -> Result<()> {
    let mut per = Vec::new();
    for _ in 0..cfg.runs {
        let g = Galed::start(&cfg.galed, &[])?;
        let mut warm = Raw::connect(g.addr).await?;
        warm.subscribe(&["warm.a@x.org", "warm.b@x.org", "warm.c@x.org"])
            .await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = g.rss()?;
        let mut conns = Vec::with_capacity(n);
        for i in 0..n {
            let mut s = Raw::connect(g.addr).await?;
            let (a, b, c) = (
                format!("m{i}.a@x.org"),
                format!("m{i}.b@x.org"),
                format!("m{i}.c@x.org"),
            );
            s.subscribe(&[&a, &b, &c]).await?;
            conns.push(s);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = g.rss()?;
        per.push((after.saturating_sub(before)) as f64 / n as f64);
        drop(conns);
    }
    println!(
        "memory: {:.0} bytes of galed RSS per idle connection holding 3 subscriptions ({n} connections; each run: {:?})",
        median(&mut per.clone()),
        per.iter().map(|x| *x as u64).collect::<Vec<_>>()
    );
    Ok(())
}

/// Publisher rate with nobody subscribed: the yardstick for the overload scenarios.
/// Returns (messages/s, galed CPU ns per message).
fn alone_rate(cfg: &Setup, n: u64) -> Result<(f64, f64)> {
    let g = Galed::start(&cfg.galed, &[])?;
    let cpu = g.cpu_ns()?;
    let t = vec![publish_frame("st@x.org", BODY)];
    let p = publisher(g.addr, t, n, Vec::new(), 1, 0)
        .join()
        .expect("publisher")?;
    let per = (g.cpu_ns()? - cpu) as f64 / n as f64;
    Ok((n as f64 / p.elapsed.as_secs_f64(), per))
}

/// Reads a subscriber that sat stalled, to the end: returns (delivered, lost).
async fn drain_stalled(z: Raw, n: u64) -> Result<(u64, u64)> {
    let (got, lost, _, _) = z.count(n, progress()).await?;
    Ok((got, lost))
}

/// A healthy subscriber and one that never reads, on the same location. The
/// publisher's rate is compared with its rate when only the healthy one is there
/// and with nobody subscribed; the healthy one must lose nothing and the stalled
/// one's losses must all be reported (delivered + LOSSAGE = published).
pub async fn stalled(cfg: &Setup) -> Result<()> {
    let n = cfg.messages;
    let mut vs_healthy = Vec::new();
    let mut vs_alone = Vec::new();
    let mut detail = Vec::new();
    for _ in 0..cfg.runs {
        let (alone, _) = alone_rate(cfg, n)?;
        let mut rate = [0f64; 2];
        let mut outcome = (0u64, 0u64, 0u64);
        for (k, with_stalled) in [false, true].into_iter().enumerate() {
            let g = Galed::start(&cfg.galed, &[])?;
            let mut s = Raw::connect(g.addr).await?;
            s.subscribe(&["st@x.org"]).await?;
            let counter = tokio::spawn(s.count(n, progress()));
            let stalled = if with_stalled {
                let mut z = Raw::connect(g.addr).await?;
                z.subscribe(&["st@x.org"]).await?;
                Some(z) // subscribed, not read until the publisher is done
            } else {
                None
            };
            let t = vec![publish_frame("st@x.org", BODY)];
            let p = publisher(g.addr, t, n, Vec::new(), 1, 0);
            let published = p.join().expect("publisher thread")?;
            rate[k] = n as f64 / published.elapsed.as_secs_f64();
            if std::env::var_os("GALE_BENCH_DEBUG").is_some() {
                let st = crate::raw::status(g.addr)?;
                let held: Vec<_> = st["clients"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| (c["held_ms"].clone(), c["dropped"].clone()))
                    .collect();
                eprintln!(
                    "  publisher took {:?}; clients' (held_ms, dropped): {held:?}",
                    published.elapsed
                );
            }
            let (got, _, _, _) = counter.await??;
            if let Some(z) = stalled {
                let (zgot, zlost) = drain_stalled(z, n).await?;
                outcome = (n - got.min(n), zgot, zlost);
            }
        }
        vs_healthy.push(rate[1] / rate[0]);
        vs_alone.push(rate[1] / alone);
        detail.push((alone as u64, rate[0] as u64, rate[1] as u64, outcome));
    }
    println!(
        "stalled subscriber beside a healthy one, unpaced: publisher rate with the stalled one = \
         median {:.3} x its rate with only the healthy one, {:.3} x its rate with no subscriber \
         (each run: msgs/s alone, healthy only, healthy + stalled, (healthy's loss, stalled's \
         delivered, stalled's reported LOSSAGE)): {:?}",
        median(&mut vs_healthy),
        median(&mut vs_alone),
        detail
    );
    Ok(())
}

/// A subscriber that reads only `rate` messages a second (in 1 ms steps), alone
/// on the location: the publisher's rate against its rate with nobody subscribed,
/// and the reader's loss, all of which must be reported.
pub async fn slow_reader(cfg: &Setup, rate: u64) -> Result<()> {
    let n = cfg.messages;
    let mut ratios = Vec::new();
    let mut cpu_ratios = Vec::new();
    let mut detail = Vec::new();
    for _ in 0..cfg.runs {
        let (alone, alone_cpu) = alone_rate(cfg, n)?;
        let g = Galed::start(&cfg.galed, &[])?;
        let mut s = Raw::connect(g.addr).await?;
        s.subscribe(&["st@x.org"]).await?;
        let frame = publish_frame("st@x.org", BODY);
        let reader = tokio::spawn(s.count_slowly(n, rate, frame.len()));
        let t = vec![frame];
        let cpu = g.cpu_ns()?;
        let published = publisher(g.addr, t, n, Vec::new(), 1, 0)
            .join()
            .expect("publisher thread")?;
        let with_cpu = (g.cpu_ns()? - cpu) as f64 / n as f64;
        cpu_ratios.push(with_cpu / alone_cpu);
        let with = n as f64 / published.elapsed.as_secs_f64();
        if std::env::var_os("GALE_BENCH_DEBUG").is_some() {
            eprintln!(
                "  publisher took {:?}; galed RSS {} MB; clients: {}",
                published.elapsed,
                g.rss()? / 1_000_000,
                crate::raw::status(g.addr)?["clients"]
            );
        }
        let (got, lost) = reader.await??;
        ratios.push(with / alone);
        detail.push((
            alone as u64,
            with as u64,
            got,
            lost,
            n - (got + lost).min(n),
        ));
    }
    println!(
        "reader at {rate} msgs/s, unpaced publisher: publisher rate = median {:.3} x its rate \
         with no subscriber; galed CPU per message = median {:.3} x (each run: msgs/s alone, \
         with the reader, reader's delivered, reported LOSSAGE, unaccounted): {:?}",
        median(&mut ratios),
        median(&mut cpu_ratios),
        detail
    );
    Ok(())
}

/// Starts a binary tree of `n` galeds (node i links to node (i-1)/2) and waits
/// until every link is up.
fn start_tree(cfg: &Setup, n: usize) -> Result<Vec<Galed>> {
    let mut nodes: Vec<Galed> = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("T{i}");
        let mut args = vec!["--name".to_string(), name];
        if i > 0 {
            args.push("--link".into());
            args.push(nodes[(i - 1) / 2].addr.to_string());
        }
        let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        nodes.push(Galed::start(&cfg.galed, &args)?);
    }
    for (i, g) in nodes.iter().enumerate() {
        let children = [2 * i + 1, 2 * i + 2].iter().filter(|c| **c < n).count();
        let want = usize::from(i > 0) + children;
        if let Err(e) = crate::raw::wait_for(|| {
            Ok(crate::raw::status(g.addr)?["links"]
                .as_array()
                .map_or(0, |a| a.len())
                == want)
        }) {
            let st = crate::raw::status(g.addr)?;
            eprintln!("node {i} wants {want} links, has {}", st["links"]);
            return Err(e);
        }
    }
    Ok(nodes)
}

/// Waits until every server's received interest reaches `want(i)`, polling each
/// from its own thread; returns when the last one got there.
fn wait_all_interest(nodes: &[Galed], want: impl Fn(usize) -> u64 + Sync) -> Result<Duration> {
    let t = Instant::now();
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = nodes
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let target = want(i);
                let addr = g.addr;
                s.spawn(move || {
                    crate::raw::wait_for(|| Ok(crate::raw::interest_received(addr)? >= target))
                })
            })
            .collect();
        for h in handles {
            h.join().expect("poller")?;
        }
        Ok(())
    })?;
    Ok(t.elapsed())
}

pub async fn tree(cfg: &Setup, n: usize, total: usize) -> Result<()> {
    let per = total / n;
    let mut rss_by_size = Vec::new();
    for size in [10usize, n] {
        let nodes = start_tree(cfg, size)?;
        let mut clients = Vec::new();
        let t = Instant::now();
        for (i, g) in nodes.iter().enumerate() {
            let mut c = Raw::connect(g.addr).await?;
            let locs: Vec<String> = (0..per).map(|j| format!("t{i}.s{j}@x.org")).collect();
            let refs: Vec<&str> = locs.iter().map(|s| s.as_str()).collect();
            c.subscribe(&refs).await?;
            clients.push(c);
        }
        let all = (per * size) as u64;
        let load = match wait_all_interest(&nodes, |_| all - per as u64) {
            Ok(t) => t,
            Err(e) => {
                for (i, g) in nodes.iter().enumerate() {
                    eprintln!(
                        "node {i}: interest {} of {}",
                        crate::raw::interest_received(g.addr)?,
                        all - per as u64
                    );
                }
                return Err(e);
            }
        };
        let load_total = t.elapsed();
        let mut rss: Vec<f64> = nodes
            .iter()
            .map(|g| g.rss().map(|r| r as f64))
            .collect::<Result<_>>()?;
        let (min, max) = (
            rss.iter().cloned().fold(f64::MAX, f64::min),
            rss.iter().cloned().fold(0.0, f64::max),
        );
        let med = median(&mut rss);
        rss_by_size.push((size, med));
        if size != n {
            println!(
                "tree of {size}: {} subscriptions; galed RSS min/median/max {:.1}/{:.1}/{:.1} MB",
                per * size,
                min / 1e6,
                med / 1e6,
                max / 1e6
            );
            continue;
        }
        // One new subscription at the deepest leaf, until every server has it.
        let mut times = Vec::new();
        for k in 0..cfg.runs.max(3) {
            let base: Vec<u64> = nodes
                .iter()
                .map(|g| crate::raw::interest_received(g.addr))
                .collect::<Result<_>>()?;
            let leaf = clients.last_mut().expect("clients");
            let probe = format!("fresh{k}.probe@x.org");
            let t0 = Instant::now();
            leaf.subscribe_with(&[&probe], false).await?;
            let leaf_index = size - 1;
            let want = |i: usize| {
                if i == leaf_index {
                    base[i]
                } else {
                    base[i] + 1
                }
            };
            if let Err(e) = wait_all_interest(&nodes, want) {
                for (i, g) in nodes.iter().enumerate() {
                    eprintln!(
                        "node {i}: interest {} want {}",
                        crate::raw::interest_received(g.addr)?,
                        want(i)
                    );
                }
                return Err(e);
            }
            times.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
        println!(
            "tree of {size} galeds, {} subscriptions ({per} per server): initial interest everywhere in {:.0} ms \
             (last server {:.0} ms after the last subscribe); one new subscription at the deepest leaf reaches \
             all {size} servers in median {:.1} ms (each: {:?}); galed RSS min/median/max {:.1}/{:.1}/{:.1} MB",
            per * size,
            load_total.as_secs_f64() * 1000.0,
            load.as_secs_f64() * 1000.0,
            median(&mut times.clone()),
            times.iter().map(|t| (t * 10.0).round() / 10.0).collect::<Vec<_>>(),
            min / 1e6,
            med / 1e6,
            max / 1e6,
        );
    }
    println!("tree memory: median galed RSS by tree size (same {per} subscriptions per server): {rss_by_size:?}");
    Ok(())
}

/// Subscription churn: `cycles` times, 16 clients subscribe `total` distinct
/// locations between them and leave. Prints galed's RSS before, at each peak and
/// after each cycle: memory must come back when the clients leave.
pub async fn churn(cfg: &Setup, total: usize, cycles: usize) -> Result<()> {
    let g = Galed::start(&cfg.galed, &[])?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let start = g.rss()?;
    let mut peaks = Vec::new();
    let mut afters = Vec::new();
    for c in 0..cycles {
        let mut clients = Vec::new();
        for k in 0..16 {
            let mut r = Raw::connect(g.addr).await?;
            let locs: Vec<String> = (0..total / 16)
                .map(|i| format!("churn{c}.c{k}.l{i}@x.org"))
                .collect();
            for chunk in locs.chunks(4096) {
                let refs: Vec<&str> = chunk.iter().map(|s| s.as_str()).collect();
                r.subscribe_with(&refs, false).await?;
            }
            clients.push(r);
        }
        peaks.push(g.rss()?);
        drop(clients);
        crate::raw::wait_for(|| Ok(crate::raw::status(g.addr)?["subscriptions"] == 0))?;
        // Allocators give memory back after a delay (jemalloc: ~10 s of decay).
        tokio::time::sleep(Duration::from_secs(12)).await;
        afters.push(g.rss()?);
    }
    let mb = |v: &[u64]| v.iter().map(|b| b / 1_000_000).collect::<Vec<_>>();
    println!(
        "churn: {total} subscriptions over 16 connections, {cycles} cycles: galed RSS {} MB \
         at start; at each peak {:?} MB; after each cycle {:?} MB",
        start / 1_000_000,
        mb(&peaks),
        mb(&afters)
    );
    Ok(())
}

/// Drains inbox `name` (device `device`), signed by `key`: counts the STORED
/// frames until INBOX_DONE, then acknowledges them. Returns how many came, and
/// the time from INBOX_STATE to INBOX_DONE.
async fn open_inbox(
    addr: std::net::SocketAddr,
    key: &ed25519_dalek::SigningKey,
    name: &str,
    device: &str,
    locations: &[&str],
) -> Result<(u64, Duration)> {
    use ed25519_dalek::Signer;
    use gale_proto::inbox::{InboxOpen, FLAG_DRAIN};
    let mut c = gale_net::RawClient::connect(addr, "bench").await?;
    c.set_timeout(Duration::from_secs(120));
    c.send(&Frame::InboxHello).await?;
    let challenge = loop {
        match c.next_frame().await? {
            Frame::InboxChallenge(ch) => break ch,
            Frame::Ping(t) => c.send(&Frame::Pong(t)).await?,
            _ => {}
        }
    };
    let mut open = InboxOpen {
        flags: FLAG_DRAIN,
        name: name.into(),
        device: device.into(),
        key: key.verifying_key().to_bytes(),
        locations: locations.iter().map(|l| loc(l)).collect(),
        signature: [0; 64],
    };
    open.signature = key.sign(&open.signed_bytes(&challenge)?).to_bytes();
    c.send(&Frame::InboxOpen(open)).await?;
    let (mut got, mut last, mut start) = (0u64, 0u64, Instant::now());
    loop {
        match c.next_frame().await? {
            Frame::InboxState(st) if !st.status.is_open() => {
                bail!("inbox {name} refused: {:?} {}", st.status, st.text)
            }
            Frame::InboxState(_) => start = Instant::now(),
            Frame::Stored { seq, .. } => {
                got += 1;
                last = seq;
            }
            Frame::InboxDone(_) => break,
            Frame::Ping(t) => c.send(&Frame::Pong(t)).await?,
            _ => {}
        }
    }
    let elapsed = start.elapsed();
    if last > 0 {
        c.send(&Frame::InboxAck(last)).await?;
        c.sync().await?;
    }
    Ok((got, elapsed))
}

/// Inboxes: `INBOXES` owners away, an unpaced publisher sends `messages` private
/// messages spread over them; how fast galed stores them durably (group commit,
/// default policy), what it could not store, then how fast each owner's device
/// gets them back.
pub async fn inbox(cfg: &Setup) -> Result<()> {
    const INBOXES: usize = 100;
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let names: Vec<String> = (0..INBOXES).map(|i| format!("u{i}@x.org")).collect();
    let (mut stored_rates, mut replay_rates, mut losses) = (Vec::new(), Vec::new(), Vec::new());
    let mut worst = (0u64, serde_json::Value::Null);
    for _ in 0..cfg.runs {
        let g = Galed::start(&cfg.galed, &[])?;
        for n in &names {
            open_inbox(g.addr, &key, n, "d", &[n.as_str()]).await?;
        }
        let templates: Vec<Vec<u8>> = names.iter().map(|n| publish_frame(n, BODY)).collect();
        let t = Instant::now();
        let p = publisher(g.addr, templates, cfg.messages, Vec::new(), 1, 0);
        let published = p.join().expect("publisher thread")?;
        // Stored means on disk: every message is either held after a commit or
        // counted as dropped.
        let mut last = serde_json::Value::Null;
        crate::raw::wait_for(|| {
            last = crate::raw::status(g.addr)?["inboxes"].clone();
            let held = last["messages"].as_u64().unwrap_or(0);
            let dropped: u64 = ["dropped_limit", "dropped_overload", "dropped_failed"]
                .iter()
                .filter_map(|k| last[k].as_u64())
                .sum();
            Ok(held + dropped >= cfg.messages && last["pending"] == 0)
        })?;
        let secs = t.elapsed().as_secs_f64();
        let held = last["messages"].as_u64().unwrap_or(0);
        stored_rates.push(held as f64 / secs);
        let lost = cfg.messages - held.min(cfg.messages);
        losses.push(lost as f64 * 100.0 / cfg.messages as f64);
        if lost >= worst.0 {
            worst = (lost, last.clone());
        }
        let _ = published;
        let (mut got, mut took) = (0u64, Duration::ZERO);
        for n in &names {
            let (k, d) = open_inbox(g.addr, &key, n, "d", &[]).await?;
            got += k;
            took += d;
        }
        replay_rates.push(got as f64 / took.as_secs_f64());
    }
    println!(
        "inbox: {} messages to {INBOXES} inboxes whose owners are away, unpaced, {BODY}-byte \
         bodies: median {:.0} stored durably/s (each: {:?}); median loss {:.2}% (worst run: {} \
         not stored: held {}, dropped at a limit {}, behind {}, failed {}; publishers held {} \
         times, {} ms); replay median {:.0} msgs/s (each: {:?})",
        cfg.messages,
        median(&mut stored_rates.clone()),
        stored_rates.iter().map(|r| *r as u64).collect::<Vec<_>>(),
        median(&mut losses),
        worst.0,
        worst.1["messages"],
        worst.1["dropped_limit"],
        worst.1["dropped_overload"],
        worst.1["dropped_failed"],
        worst.1["store_holds"],
        worst.1["store_held_ms"],
        median(&mut replay_rates.clone()),
        replay_rates.iter().map(|r| *r as u64).collect::<Vec<_>>(),
    );
    Ok(())
}
