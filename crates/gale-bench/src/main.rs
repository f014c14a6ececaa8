//! gale-bench: measures a real galed process (release build) from raw-frame clients.
//!
//! Run with `cargo run --release -p gale-bench -- all` (it builds nothing itself: it
//! starts `target/release/galed`, so build that first with `cargo build --release`).
//! Each scenario prints one line of figures; `--runs N` repeats and prints medians.

mod anchors;
mod raw;
mod scenarios;

use anyhow::Result;
use clap::Parser;

/// Benchmarks for galed.
#[derive(Parser, Debug)]
struct Args {
    /// Scenarios to run: fanout (1->1 and 1->16 firehose), hop (firehose and
    /// latency across 2 and 3 linked servers), latency, match, many, memory, stalled
    /// (a stalled subscriber beside a healthy one), slow (a 10,000 msgs/s reader),
    /// tree, anchors (the same firehose against nats-server and redis-server, if
    /// installed), churn (memory given back after 250,000 subscriptions come and
    /// go, 5 times), inbox (durable messages stored per second while their owners
    /// are away, and replayed when they come back), or all.
    #[arg(default_value = "all")]
    which: Vec<String>,
    /// Repeat each scenario this many times and report the median.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Path to the galed binary (default: next to this binary).
    #[arg(long)]
    galed: Option<std::path::PathBuf>,
    /// Messages per throughput run.
    #[arg(long, default_value_t = 1_000_000)]
    messages: u64,
    /// Pace the publisher: keep it at most this many messages ahead of its slowest
    /// subscriber. 0 (the default) publishes as fast as the socket allows, as real
    /// publishers do; pacing only helps tell routing cost from queueing policy.
    #[arg(long, default_value_t = 0)]
    window: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let galed = match args.galed {
        Some(p) => p,
        None => std::env::current_exe()?.with_file_name("galed"),
    };
    anyhow::ensure!(
        galed.exists(),
        "{} not found: run `cargo build --release` first",
        galed.display()
    );
    let all = args.which.iter().any(|w| w == "all");
    let want = |name: &str| all || args.which.iter().any(|w| w == name);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let cfg = scenarios::Setup {
        galed,
        runs: args.runs,
        messages: args.messages,
        window: args.window,
    };
    if want("match") {
        scenarios::matching(&cfg);
    }
    if want("fanout") {
        rt.block_on(scenarios::fanout(&cfg, 1, 1))?;
        rt.block_on(scenarios::fanout(&cfg, 16, 1))?;
    }
    if want("latency") {
        scenarios::latency(&cfg, 10_000, 0)?;
        scenarios::latency(&cfg, 10_000, 1)?;
    }
    if want("hop") {
        // Publisher on the first server, subscriber on the last: the cost of links.
        rt.block_on(scenarios::fanout(&cfg, 1, 2))?;
        rt.block_on(scenarios::fanout(&cfg, 1, 3))?;
        scenarios::latency(&cfg, 10_000, 0)?;
        scenarios::latency(&cfg, 10_000, 1)?;
        scenarios::latency(&cfg, 10_000, 2)?;
        scenarios::latency(&cfg, 10_000, 3)?;
    }
    if want("tree") {
        rt.block_on(scenarios::tree(&cfg, 50, 10_000))?;
    }
    if want("many") {
        rt.block_on(scenarios::many(&cfg, 10_000))?;
    }
    if want("memory") {
        rt.block_on(scenarios::memory(&cfg, 5_000))?;
    }
    if want("stalled") {
        rt.block_on(scenarios::stalled(&cfg))?;
    }
    if want("anchors") {
        anchors::run(&cfg)?;
    }
    if want("churn") {
        rt.block_on(scenarios::churn(&cfg, 250_000, 5))?;
    }
    if want("inbox") {
        rt.block_on(scenarios::inbox(&cfg))?;
    }
    if want("slow") {
        rt.block_on(scenarios::slow_reader(&cfg, 10_000))?;
    }
    Ok(())
}
