//! Receipts and pings (gsend -r, --require-receipt, --ping): listen at a fresh
//! reply location under the sender's name before sending, then print each
//! receipt as it comes, until every person asked has answered (and their other
//! devices had a moment to), or the receipt timeout.

use std::time::Duration;

use anyhow::anyhow;
use gale_client::ServerAddr;
use gale_keys::{KeyStore, SecretKey};
use gale_proto::{Location, MessageId};
use gale_security::incoming::Opener;
use gale_security::people::collect::{Collector, Wait, SETTLE};
use gale_security::people::{reply_location, RECEIPT_SEGMENT};
use tokio::time::Instant;

/// Starts listening for receipts to messages signed by `signer`.
pub async fn listen(
    servers: Vec<ServerAddr>,
    agent: &str,
    store: &KeyStore,
    signer: &SecretKey,
    connect_timeout: Duration,
) -> anyhow::Result<Collector> {
    let me = Location::parse(signer.name().as_str()).map_err(|e| {
        anyhow!(
            "receipts come back to your own location, and {} is not one: {e}",
            signer.name()
        )
    })?;
    let reply = reply_location(&me, RECEIPT_SEGMENT)?;
    let opener = Opener::new(store.clone())?;
    Ok(Collector::start(servers, agent, reply, &[], opener, connect_timeout).await?)
}

/// The people among `to` whose receipts can be expected: single-segment
/// locations (`bob@example.org`), not public ones (`pub`) or areas and groups
/// (`team.dev@example.org`), whose readers cannot be known.
pub fn expected(to: &[Location]) -> Vec<String> {
    to.iter()
        .filter(|l| !l.local().is_empty() && !l.local().contains('.') && l.local() != "pub")
        .map(|l| l.as_str().to_string())
        .collect()
}

/// Prints the receipts for `asked` as they come (on standard output), until
/// `timeout`; returns how many genuine ones came.
pub async fn report(
    collector: &mut Collector,
    asked: MessageId,
    expect: Vec<String>,
    timeout: Duration,
) -> usize {
    let wait = Wait {
        deadline: Instant::now() + timeout,
        settle: SETTLE,
        expect,
        quiet: None,
    };
    let heard = collector
        .gather(&[asked], &wait, |h| {
            println!("received: {}", h.describe());
        })
        .await;
    collector.close().await;
    heard.iter().filter(|h| h.genuine()).count()
}
