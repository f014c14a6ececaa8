//! Signed presence notices and wills (gsub `-p`). They are signed like every
//! other message, so that nobody can announce that someone else is in or out.
//! A will is made afresh for every connection ([`Will`]): the signature covers
//! the message id, and each connection's will needs a fresh id.

use gale_client::presence::{notice_fragments, notice_location, DISCONNECTED};
use gale_client::Will;
use gale_keys::SecretKey;
use gale_proto::{Location, LocationError, Message};

use crate::outgoing;
use crate::people::Status;

/// A presence notice from `who` saying `presence`, signed with `key`.
pub fn notice(
    who: &Location,
    presence: &str,
    sender: Option<&str>,
    class: &str,
    key: &SecretKey,
) -> Result<Message, LocationError> {
    let to = vec![notice_location(who)?];
    Ok(outgoing::signed(
        to,
        &notice_fragments(presence, sender, class),
        key,
    ))
}

/// A presence notice from `who` with its whole [`Status`] (presence, device,
/// idle time), signed with `key`.
pub fn status_notice(
    who: &Location,
    status: &Status,
    sender: Option<&str>,
    class: &str,
    key: &SecretKey,
) -> Result<Message, LocationError> {
    let to = vec![notice_location(who)?];
    let mut f = notice_fragments(&status.presence, sender, class);
    if let Some(d) = &status.device {
        f.push_text(gale_proto::fragment::names::NOTICE_DEVICE, d.as_str());
    }
    if let Some(t) = status.active_at {
        f.push(
            gale_proto::fragment::names::STATUS_IDLE,
            gale_proto::Value::Time(t),
        );
    }
    Ok(outgoing::signed(to, &f, key))
}

/// The will saying `who` disconnected ([`DISCONNECTED`]), signed with `key`
/// afresh (new id, new time, new signature) for every connection.
pub fn will(
    who: &Location,
    sender: Option<String>,
    class: String,
    key: SecretKey,
) -> Result<Will, LocationError> {
    will_from(who, None, sender, class, key)
}

/// The will of the gsub on `device` (told apart from the person's other gsubs).
pub fn will_from(
    who: &Location,
    device: Option<String>,
    sender: Option<String>,
    class: String,
    key: SecretKey,
) -> Result<Will, LocationError> {
    let to = vec![notice_location(who)?];
    Ok(Will::new(move || {
        let mut f = notice_fragments(DISCONNECTED, sender.as_deref(), &class);
        if let Some(d) = &device {
            f.push_text(gale_proto::fragment::names::NOTICE_DEVICE, d.as_str());
        }
        outgoing::signed(to.clone(), &f, &key)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use gale_keys::{open, SigState};
    use gale_proto::fragment::names;

    #[test]
    fn notices_and_each_will_are_signed_with_their_own_id() {
        let key = crate::test_key("mortal@x.org");
        let who = Location::parse("mortal@x.org").unwrap();
        let look = |_: &gale_keys::KeyName, _| Some(key.public().clone());
        let m = notice(&who, "in.present", Some("M"), "gsub/1", &key).unwrap();
        assert_eq!(m.to[0].as_str(), "_gale.notice.mortal@x.org");
        let o = open(&m, &[], &look).unwrap();
        assert_eq!(o.signature, SigState::Valid);
        assert_eq!(o.fragments.text(names::NOTICE_PRESENCE), Some("in.present"));

        let w = will(&who, None, "gsub/1".into(), key.clone()).unwrap();
        let (a, b) = (w.make(), w.make());
        assert_ne!(a.id, b.id);
        for m in [a, b] {
            let o = open(&m, &[], &look).unwrap();
            assert_eq!(o.signature, SigState::Valid, "each will verifies");
            assert_eq!(o.fragments.text(names::NOTICE_PRESENCE), Some(DISCONNECTED));
        }
    }
}
