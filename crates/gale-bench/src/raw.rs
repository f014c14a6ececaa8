//! A minimal raw-frame client and a galed process handle, for benchmarks.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context, Result};
use bytes::{Bytes, BytesMut};
use gale_proto::frame::{Frame, Hello};
use gale_proto::limits::DEFAULT_MAX_FRAME;
use gale_proto::{Location, Message, SubEntry};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A galed child process, killed on drop.
pub struct Galed {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Galed {
    pub fn start(bin: &Path, extra: &[&str]) -> Result<Galed> {
        let mut child = Command::new(bin)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let err = child.stderr.take().expect("piped");
        let mut lines = BufReader::new(err).lines();
        for line in lines.by_ref() {
            let line = line?;
            if let Some(a) = line.strip_prefix("galed: listening on ") {
                let addr = a.trim().parse()?;
                // Keep draining stderr so galed never blocks on a full pipe.
                std::thread::spawn(move || for _ in lines {});
                return Ok(Galed { child, addr });
            }
        }
        bail!("galed exited before listening")
    }

    /// CPU time galed has used so far, all threads, in nanoseconds (from
    /// /proc/PID/task/*/schedstat): a cost that the machine's noise does not move
    /// the way it moves wall-clock rates.
    pub fn cpu_ns(&self) -> Result<u64> {
        let mut total = 0;
        for t in std::fs::read_dir(format!("/proc/{}/task", self.child.id()))? {
            let st = std::fs::read_to_string(t?.path().join("schedstat"))?;
            total += st
                .split_whitespace()
                .next()
                .context("schedstat")?
                .parse::<u64>()?;
        }
        Ok(total)
    }

    /// Resident set size of the galed process, in bytes.
    pub fn rss(&self) -> Result<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let line = s
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .context("no VmRSS")?;
        let kb: u64 = line.split_whitespace().nth(1).context("VmRSS")?.parse()?;
        Ok(kb * 1024)
    }
}

impl Drop for Galed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A line of `n` linked galeds (each dials the previous one). Returns them once
/// every link is up.
pub fn line(bin: &Path, n: usize) -> Result<Vec<Galed>> {
    let mut out: Vec<Galed> = Vec::new();
    for i in 0..n {
        // (n == 0 starts nothing: the latency baseline.)
        let name = format!("S{i}");
        let mut args = vec!["--name".to_string(), name];
        if let Some(prev) = out.last() {
            args.push("--link".into());
            args.push(prev.addr.to_string());
        }
        let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        out.push(Galed::start(bin, &args)?);
    }
    for (i, g) in out.iter().enumerate() {
        let want = usize::from(i > 0) + usize::from(i + 1 < n);
        wait_for(|| Ok(status(g.addr)?["links"].as_array().map_or(0, |a| a.len()) == want))?;
    }
    Ok(out)
}

/// Polls `cond` every 2 ms for up to 30 s.
pub fn wait_for(mut cond: impl FnMut() -> Result<bool>) -> Result<()> {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !cond()? {
        anyhow::ensure!(std::time::Instant::now() < end, "timed out waiting");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    Ok(())
}

/// The HELLO every benchmark client sends.
pub fn bench_hello() -> Hello {
    Hello {
        min_version: 1,
        max_version: 1,
        max_frame: DEFAULT_MAX_FRAME,
        role: 0,
        agent: "bench".into(),
    }
}

/// A galed's status report (STATUS frame), over a short blocking connection.
pub fn status(addr: SocketAddr) -> Result<serde_json::Value> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    let hello = bench_hello();
    let mut out = Frame::Hello(hello).to_bytes().to_vec();
    out.extend_from_slice(&Frame::StatusRequest.to_bytes());
    s.write_all(&out)?;
    let mut buf = BytesMut::new();
    let mut chunk = vec![0u8; 65536];
    loop {
        while let Some(f) = Frame::decode(&mut buf, DEFAULT_MAX_FRAME)? {
            if let Frame::Status(j) = f {
                return Ok(serde_json::from_str(&j)?);
            }
        }
        let n = s.read(&mut chunk)?;
        anyhow::ensure!(n > 0, "closed before STATUS");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Total interest `g` has received over all its links.
pub fn interest_received(addr: SocketAddr) -> Result<u64> {
    let s = status(addr)?;
    Ok(s["links"].as_array().map_or(0, |a| {
        a.iter()
            .filter_map(|l| l["interest_received"].as_u64())
            .sum()
    }))
}

pub fn loc(s: &str) -> Location {
    Location::parse(s).expect("valid location")
}

/// One PUBLISH frame with a `size`-byte payload; the id sits at bytes 5..21.
pub fn publish_frame(to: &str, size: usize) -> Vec<u8> {
    let mut payload = vec![0u8; size];
    payload[0] = 0; // plain payload kind
    Frame::Publish(Message::new(vec![loc(to)], Bytes::from(payload)))
        .to_bytes()
        .to_vec()
}

/// A subscriber's progress, watched by a pacing publisher.
#[derive(Default)]
pub struct Counter {
    pub seen: std::sync::atomic::AtomicU64,
    pub moved: tokio::sync::Notify,
}

pub struct Raw {
    pub s: TcpStream,
    pub buf: BytesMut,
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Result<Raw> {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        let mut r = Raw {
            s,
            buf: BytesMut::with_capacity(4096),
        };
        let hello = bench_hello();
        r.s.write_all(&Frame::Hello(hello).to_bytes()).await?;
        match r.next().await? {
            Frame::Welcome(_) => Ok(r),
            f => bail!("expected WELCOME, got {f:?}"),
        }
    }

    pub async fn next(&mut self) -> Result<Frame> {
        loop {
            if let Some(f) = Frame::decode(&mut self.buf, DEFAULT_MAX_FRAME)? {
                return Ok(f);
            }
            if self.s.read_buf(&mut self.buf).await? == 0 {
                bail!("connection closed");
            }
        }
    }

    pub async fn subscribe(&mut self, locs: &[&str]) -> Result<()> {
        self.subscribe_with(locs, true).await
    }

    /// SUBSCRIBE; `replace` false appends to the list instead of replacing it.
    pub async fn subscribe_with(&mut self, locs: &[&str], replace: bool) -> Result<()> {
        let entries = locs.iter().map(|l| SubEntry::include(loc(l))).collect();
        let frame = Frame::Subscribe { replace, entries };
        self.s.write_all(&frame.to_bytes()).await?;
        self.sync().await
    }

    /// PING/PONG barrier: the server has acted on everything sent before.
    pub async fn sync(&mut self) -> Result<()> {
        self.s.write_all(&Frame::Ping(77).to_bytes()).await?;
        loop {
            if let Frame::Pong(77) = self.next().await? {
                return Ok(());
            }
        }
    }

    /// Counts deliveries and reported losses until `want` are accounted for or the
    /// stream has been quiet for a second. Returns (delivered, lost, first, last).
    pub async fn count(
        mut self,
        want: u64,
        progress: std::sync::Arc<Counter>,
    ) -> Result<(
        u64,
        u64,
        Option<std::time::Instant>,
        Option<std::time::Instant>,
    )> {
        let (mut got, mut lost) = (0u64, 0u64);
        let (mut first, mut last) = (None, None);
        // Small subscribers (many of them) need small buffers.
        let mut buf = vec![0u8; if want > 10_000 { 1 << 20 } else { 64 << 10 }];
        let mut have = 0usize;
        while got + lost < want {
            // Quiet for a second once messages flowed means the stream is over; before
            // the first one, setting up the other subscribers may take a while.
            let idle = if first.is_some() { 1 } else { 120 };
            let n = match tokio::time::timeout(
                std::time::Duration::from_secs(idle),
                self.s.read(&mut buf[have..]),
            )
            .await
            {
                Ok(r) => r?,
                Err(_) => break,
            };
            if n == 0 {
                break;
            }
            let now = std::time::Instant::now();
            first.get_or_insert(now);
            last = Some(now);
            have += n;
            let (at, g, l) = scan(&buf[..have]);
            got += g;
            lost += l;
            progress
                .seen
                .store(got + lost, std::sync::atomic::Ordering::Relaxed);
            progress.moved.notify_one();
            buf.copy_within(at..have, 0);
            have -= at;
        }
        Ok((got, lost, first, last))
    }
}

impl Raw {
    /// Reads only `rate` messages' worth of bytes a second (in 1 ms steps) until
    /// `want` messages are accounted for (delivered or reported lost) or nothing
    /// has come for two seconds. Returns (delivered, lost).
    pub async fn count_slowly(
        mut self,
        want: u64,
        rate: u64,
        frame_len: usize,
    ) -> Result<(u64, u64)> {
        let (mut got, mut lost) = (0u64, 0u64);
        let mut buf = vec![0u8; 1 << 16];
        let mut have = 0usize;
        let per_ms = (rate as usize * frame_len / 1000).max(1);
        let mut allowance = 0usize;
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(1));
        let mut quiet = std::time::Instant::now();
        while got + lost < want {
            tick.tick().await;
            allowance = (allowance + per_ms).min(buf.len() - have);
            if allowance == 0 {
                continue;
            }
            let n = match tokio::time::timeout(
                std::time::Duration::from_millis(1),
                self.s.read(&mut buf[have..have + allowance]),
            )
            .await
            {
                Ok(r) => r?,
                Err(_) => {
                    if quiet.elapsed() > std::time::Duration::from_secs(2) && got > 0 {
                        break;
                    }
                    continue;
                }
            };
            if n == 0 {
                break;
            }
            quiet = std::time::Instant::now();
            allowance -= n;
            have += n;
            let (at, g, l) = scan(&buf[..have]);
            got += g;
            lost += l;
            buf.copy_within(at..have, 0);
            have -= at;
        }
        Ok((got, lost))
    }
}

/// Counts the deliveries and the LOSSAGE totals among the whole frames at the front
/// of `buf`. Returns (bytes they take, delivered, lost).
fn scan(buf: &[u8]) -> (usize, u64, u64) {
    let (mut at, mut got, mut lost) = (0usize, 0u64, 0u64);
    while buf.len() - at >= 5 {
        let len = u32::from_be_bytes(buf[at..at + 4].try_into().expect("4 bytes")) as usize;
        if buf.len() - at < 4 + len {
            break;
        }
        match buf[at + 4] {
            0x11 => got += 1,
            0x40 if len == 9 => {
                lost += u64::from_be_bytes(buf[at + 5..at + 13].try_into().expect("8 bytes"))
            }
            _ => {}
        }
        at += 4 + len;
    }
    (at, got, lost)
}

pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v[v.len() / 2]
}
