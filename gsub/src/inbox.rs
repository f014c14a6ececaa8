//! gsub's inbox: which one to open (its own location by default, or
//! `--durable NAME`), signing the request with the user's key, and what to say
//! about it.

use std::sync::Arc;

use gale_client::{InboxConfig, InboxSigner};
use gale_keys::{KeyName, SecretKey};
use gale_proto::{Location, SubscriptionList};

/// The user's key, signing INBOX_OPEN.
struct KeySigner(SecretKey);

impl InboxSigner for KeySigner {
    fn public(&self) -> [u8; 32] {
        self.0.signing_public()
    }

    fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.0.sign_request(msg)
    }
}

/// The inbox to open: `durable` names one holding the positive entries of
/// `subs`; otherwise the user's own location `me` (their private messages).
pub fn config(
    durable: Option<&str>,
    me: &KeyName,
    subs: &SubscriptionList,
    device: String,
    drain: bool,
    key: SecretKey,
) -> anyhow::Result<InboxConfig> {
    let (name, locations) = match durable {
        Some(name) => {
            let locs: Vec<Location> = subs
                .entries
                .iter()
                .filter(|e| e.positive)
                .map(|e| e.location.clone())
                .collect();
            (name.to_string(), locs)
        }
        None => (
            me.as_str().to_string(),
            vec![Location::parse(me.as_str())
                .map_err(|e| anyhow::anyhow!("your id {me} is not a location: {e}"))?],
        ),
    };
    if device.is_empty()
        || device.len() > gale_proto::inbox::MAX_DEVICE_NAME
        || device.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        anyhow::bail!(
            "device name {device:?}: 1 to {} bytes, no spaces (--device or $GALE_DEVICE)",
            gale_proto::inbox::MAX_DEVICE_NAME
        );
    }
    if locations.len() > gale_proto::inbox::MAX_INBOX_LOCATIONS {
        anyhow::bail!(
            "an inbox keeps at most {} locations; {} given",
            gale_proto::inbox::MAX_INBOX_LOCATIONS,
            locations.len()
        );
    }
    Ok(InboxConfig {
        name,
        device,
        locations,
        drain,
        signer: Arc::new(KeySigner(key)),
    })
}
