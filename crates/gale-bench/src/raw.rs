//! A minimal raw-frame client and a galed process handle, for benchmarks.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context, Result};
use gale_net::raw::scan;
use gale_net::RawClient;
use gale_proto::{Location, SubEntry};
use tokio::io::AsyncReadExt;

/// A galed child process, killed on drop.
pub struct Galed {
    pub child: Child,
    pub addr: SocketAddr,
    /// The inbox store's directory made for this galed (removed on drop),
    /// unless the bench gave `--data-dir` or `--no-inboxes`.
    data: Option<std::path::PathBuf>,
}

impl Galed {
    pub fn start(bin: &Path, extra: &[&str]) -> Result<Galed> {
        // (A galed from before inboxes, measured for comparison, has no
        // --data-dir.)
        let own = !extra
            .iter()
            .any(|a| *a == "--data-dir" || *a == "--no-inboxes")
            && keeps_inboxes(bin);
        let data = own.then(|| {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            std::env::temp_dir().join(format!("gale-bench-{}-{n}", std::process::id()))
        });
        let mut cmd = Command::new(bin);
        cmd.args(["--listen", "127.0.0.1:0"]).args(extra);
        if let Some(d) = &data {
            cmd.arg("--data-dir").arg(d);
        }
        let mut child = cmd
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
                // Keep draining stderr so galed never blocks on a full pipe; with
                // GALE_BENCH_DEBUG, pass its warnings on.
                let show = std::env::var_os("GALE_BENCH_DEBUG").is_some();
                std::thread::spawn(move || {
                    for l in lines.map_while(Result::ok) {
                        if show && l.contains("WARN") {
                            eprintln!("  galed: {l}");
                        }
                    }
                });
                return Ok(Galed { child, addr, data });
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

/// Whether the galed at `bin` takes `--data-dir` (asked once per path).
fn keeps_inboxes(bin: &Path) -> bool {
    static ASKED: std::sync::Mutex<Vec<(std::path::PathBuf, bool)>> =
        std::sync::Mutex::new(Vec::new());
    let mut asked = ASKED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, yes)) = asked.iter().find(|(p, _)| p == bin) {
        return *yes;
    }
    let yes = Command::new(bin)
        .arg("--help")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--data-dir"));
    asked.push((bin.to_path_buf(), yes));
    yes
}

impl Drop for Galed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(d) = &self.data {
            let _ = std::fs::remove_dir_all(d);
        }
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

/// A galed's status report (STATUS frame), over a short blocking connection.
pub fn status(addr: SocketAddr) -> Result<serde_json::Value> {
    let json = gale_net::raw::blocking::RawClient::connect(addr, "bench")?.status()?;
    Ok(serde_json::from_str(&json)?)
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
    gale_net::raw::burst_frame(&loc(to), size)
}

/// A subscriber's progress, watched by a pacing publisher.
#[derive(Default)]
pub struct Counter {
    pub seen: std::sync::atomic::AtomicU64,
    pub moved: tokio::sync::Notify,
}

/// A benchmark client: gale-net's raw client with the counting the scenarios use.
pub struct Raw {
    pub c: RawClient,
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Result<Raw> {
        let mut c = RawClient::connect(addr, "bench").await?;
        // Setting up thousands of subscribers may take a while before the first
        // message comes.
        c.set_timeout(std::time::Duration::from_secs(120));
        Ok(Raw { c })
    }

    pub async fn subscribe(&mut self, locs: &[&str]) -> Result<()> {
        self.c.subscribe(locs).await?;
        Ok(())
    }

    /// SUBSCRIBE; `replace` false appends to the list instead of replacing it.
    pub async fn subscribe_with(&mut self, locs: &[&str], replace: bool) -> Result<()> {
        let entries = locs.iter().map(|l| SubEntry::include(loc(l))).collect();
        self.c.subscribe_entries(replace, entries).await?;
        Ok(())
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
        let c = self
            .c
            .count(want, std::time::Duration::from_secs(1), |n| {
                progress.seen.store(n, std::sync::atomic::Ordering::Relaxed);
                progress.moved.notify_one();
            })
            .await?;
        Ok((c.delivered, c.lost, c.first, c.last))
    }

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
        let s = self.c.stream();
        while got + lost < want {
            tick.tick().await;
            allowance = (allowance + per_ms).min(buf.len() - have);
            if allowance == 0 {
                continue;
            }
            let n = match tokio::time::timeout(
                std::time::Duration::from_millis(1),
                s.read(&mut buf[have..have + allowance]),
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
            let (at, g, l) = scan(&buf[..have], u64::MAX);
            got += g;
            lost += l;
            buf.copy_within(at..have, 0);
            have -= at;
        }
        Ok((got, lost))
    }
}

pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v[v.len() / 2]
}
