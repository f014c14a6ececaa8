//! One JSON object per message, for scripts (`gsub --json`).
//!
//! Shape: `{"id", "to", "from", "verify", "encrypted", "time", "keywords", "body",
//! "fragments"}`, plus `"claimed_from"` for a forged message, `"unreadable"`
//! (`not-for-you`, `tampered`, `malformed`) for an encrypted one that could not be
//! opened, and `"key_changed": true` (with `"key_was"`, the old key ids) on the
//! first message signed by a new key for a name that had another. `verify` is `verified`, `unverified`, `anonymous` or `forged`; `from` is
//! the signer when verified or unverified (only a claim when unverified), else
//! null. Each fragment is `{"name", "type", "value"}`, where `type` is
//! `text`, `data` (value in lower-case hex), `time` (RFC 3339, UTC), `number`,
//! `list` (value is an array of fragments) or `unknown` (value in hex, and `code`
//! holds the type byte).
//!
//! Every message has a `"kind"`: `message`, `presence` (a presence notice),
//! `receipt` (a receipt or a ping's answer), `ping` (a ping this gsub answered)
//! or `away` (an automatic away reply). Presence, receipts and pings also have
//! `"about"` (whom it is about: the person announced, the one who received, or
//! the one who pinged), `"presence"`, `"device"` and `"idle"` (seconds, when
//! known), and receipts `"answers"` (the id of the message received).
//!
//! A line that is not a message has a `"type"` (messages have none): `"gap"`
//! ([`gap_json`]) says that messages were missed while gsub was reconnecting and
//! cannot be delivered: `{"type": "gap", "server", "from", "to", "count", "why"}`,
//! `from` and `to` in RFC 3339 (UTC), `count` null when unknown.

use gale_keys::hex;
use gale_proto::fragment::names;
use gale_proto::{Fragments, Value};
use serde::Serialize;
use serde_json::json;

use crate::format::{about, message_time, rfc3339};
use gale_client::Delivery;
use gale_proto::Timestamp;
use gale_security::people::{kind, Status};

#[derive(Serialize)]
struct JsonMessage<'a> {
    id: String,
    to: Vec<&'a str>,
    /// The signer, when verified or unverified; null when anonymous or forged.
    from: Option<&'a str>,
    verify: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    claimed_from: Option<&'a str>,
    encrypted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    unreadable: Option<&'static str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    key_changed: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    key_was: Vec<String>,
    /// Its place in the inbox, when it came from the inbox (kept while away,
    /// or sent by the inbox while connected).
    #[serde(skip_serializing_if = "Option::is_none")]
    inbox_seq: Option<u64>,
    time: Option<String>,
    keywords: Vec<&'a str>,
    body: Option<&'a str>,
    fragments: Vec<JsonFragment<'a>>,
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    about: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    device: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    idle: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    answers: Option<&'a str>,
}

#[derive(Serialize)]
struct JsonFragment<'a> {
    name: &'a str,
    #[serde(rename = "type")]
    ty: &'static str,
    value: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<u8>,
}

fn fragments_json(f: &Fragments) -> Vec<JsonFragment<'_>> {
    f.iter()
        .map(|f| {
            let (ty, value, code) = match &f.value {
                Value::Text(t) => ("text", json!(t), None),
                Value::Data(d) => ("data", json!(hex::encode(d)), None),
                Value::Time(t) => ("time", json!(rfc3339(*t)), None),
                Value::Number(n) => ("number", json!(n), None),
                Value::List(l) => ("list", json!(fragments_json(l)), None),
                Value::Unknown { ty, raw } => ("unknown", json!(hex::encode(raw)), Some(*ty)),
            };
            JsonFragment {
                name: &f.name,
                ty,
                value,
                code,
            }
        })
        .collect()
}

/// A span of missed messages (an `Event::Gap`), as the JSON line (no newline).
/// A gap in an inbox: `count` messages for this device were lost while it
/// was away or connected (limits, age, a store error).
pub fn inbox_gap_json(server: &str, inbox: &str, count: Option<u64>, why: &str) -> String {
    serde_json::json!({
        "type": "gap",
        "server": server,
        "inbox": inbox,
        "count": count,
        "why": why,
    })
    .to_string()
}

pub fn gap_json(
    server: &str,
    from: std::time::SystemTime,
    to: std::time::SystemTime,
    count: Option<u64>,
    why: &str,
) -> String {
    #[derive(Serialize)]
    struct Gap<'a> {
        #[serde(rename = "type")]
        ty: &'static str,
        server: &'a str,
        from: String,
        to: String,
        count: Option<u64>,
        why: &'a str,
    }
    let gap = Gap {
        ty: "gap",
        server,
        from: utc_ms(from),
        to: utc_ms(to),
        count,
        why,
    };
    serde_json::to_string(&gap).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// RFC 3339 in UTC, to the millisecond.
pub fn utc_ms(t: std::time::SystemTime) -> String {
    let ms = gale_client::unix_ms(t) as i64;
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// The JSON line for `d`, without the newline.
pub fn to_json(d: &Delivery) -> String {
    let f = d.fragments();
    let msg = JsonMessage {
        id: d.message.id.to_string(),
        to: d.message.to.iter().map(|l| l.as_str()).collect(),
        from: d.verify.from().map(|n| n.as_str()),
        verify: d.verify.as_str(),
        claimed_from: d.verify.claimed_from().map(|n| n.as_str()),
        encrypted: d.encrypted,
        unreadable: d.unreadable.as_ref().map(|u| u.as_str()),
        key_changed: d.key_changed.is_some(),
        key_was: d
            .key_changed
            .iter()
            .flat_map(|c| c.old.iter().map(|i| i.to_string()))
            .collect(),
        inbox_seq: d.inbox_seq,
        time: f.and_then(|_| rfc3339(message_time(d))),
        keywords: f
            .map(|f| f.texts(names::MESSAGE_KEYWORD).collect())
            .unwrap_or_default(),
        body: f.and_then(|f| f.text(names::MESSAGE_BODY)),
        fragments: f.map(fragments_json).unwrap_or_default(),
        kind: kind(&d.message.to, f),
        about: about(d),
        presence: f.and_then(|f| f.text(names::NOTICE_PRESENCE)),
        device: f.and_then(|f| f.text(names::NOTICE_DEVICE)),
        idle: f
            .and_then(Status::from_fragments)
            .and_then(|s| s.idle_secs(Timestamp::now())),
        answers: f.and_then(|f| f.text(names::ANSWER_RECEIPT_ID)),
    };
    serde_json::to_string(&msg).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use gale_proto::{Location, Message, MessageId, Payload, Timestamp};

    #[test]
    fn shape() {
        let mut f = Fragments::new();
        f.push_text("message.body", "hi\n");
        f.push_text("message.keyword", "k");
        f.push("id.time", Value::Time(Timestamp { secs: 0, nanos: 0 }));
        f.push("d", Value::Data(Bytes::from_static(&[0xab, 1])));
        f.push("n", Value::Number(-2));
        let mut inner = Fragments::new();
        inner.push_text("t", "x");
        f.push("l", Value::List(inner));
        f.push(
            "u",
            Value::Unknown {
                ty: 9,
                raw: Bytes::from_static(&[7]),
            },
        );
        let m = Message {
            id: MessageId([0x11; 16]),
            hops: 0,
            to: vec![Location::parse("a@x.org").unwrap()],
            payload: Payload::Plain(f).encode().unwrap(),
        };
        let got: serde_json::Value =
            serde_json::from_str(&to_json(&Delivery::open(m).unwrap())).unwrap();
        let want = json!({
            "id": "11111111111111111111111111111111",
            "to": ["a@x.org"],
            "from": null,
            "verify": "anonymous",
            "encrypted": false,
            "time": "1970-01-01T00:00:00Z",
            "keywords": ["k"],
            "body": "hi\n",
            "fragments": [
                {"name": "message.body", "type": "text", "value": "hi\n"},
                {"name": "message.keyword", "type": "text", "value": "k"},
                {"name": "id.time", "type": "time", "value": "1970-01-01T00:00:00Z"},
                {"name": "d", "type": "data", "value": "ab01"},
                {"name": "n", "type": "number", "value": -2},
                {"name": "l", "type": "list", "value": [{"name": "t", "type": "text", "value": "x"}]},
                {"name": "u", "type": "unknown", "value": "07", "code": 9},
            ],
            "kind": "message",
        });
        assert_eq!(got, want);
    }

    /// A delivery to a@x.org with this payload.
    fn delivery(payload: Bytes) -> Delivery {
        Delivery::open(Message {
            id: MessageId([0; 16]),
            hops: 0,
            to: vec![Location::parse("a@x.org").unwrap()],
            payload,
        })
        .unwrap()
    }

    #[test]
    fn a_key_change_is_flagged() {
        let mut d = delivery(Payload::Plain(Fragments::new()).encode().unwrap());
        let plain: serde_json::Value = serde_json::from_str(&to_json(&d)).unwrap();
        assert!(plain.get("key_changed").is_none(), "{plain}");
        d.key_changed = Some(Box::new(gale_keys::KeyChanged {
            name: gale_keys::KeyName::parse("a@x.org").unwrap(),
            old: vec![gale_keys::KeyId([1; 8])],
            new: gale_keys::KeyId([2; 8]),
        }));
        let got: serde_json::Value = serde_json::from_str(&to_json(&d)).unwrap();
        assert_eq!(got["key_changed"], json!(true));
        assert_eq!(got["key_was"], json!(["0101010101010101"]));
    }

    #[test]
    fn a_gap_has_its_own_type() {
        let t = |ms| std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
        let got: serde_json::Value =
            serde_json::from_str(&gap_json("a:1", t(1_500), t(61_000), Some(3), "why")).unwrap();
        assert_eq!(
            got,
            json!({"type": "gap", "server": "a:1", "from": "1970-01-01T00:00:01.500Z",
                   "to": "1970-01-01T00:01:01.000Z", "count": 3, "why": "why"})
        );
        let unknown = gap_json("a:1", t(0), t(0), None, "w");
        assert!(unknown.starts_with(r#"{"type":"gap","#), "{unknown}");
        let unknown: serde_json::Value = serde_json::from_str(&unknown).unwrap();
        assert_eq!(unknown["count"], json!(null));
    }

    #[test]
    fn sealed_is_opaque() {
        let d = delivery(Bytes::from_static(&[2, 9]));
        let got: serde_json::Value = serde_json::from_str(&to_json(&d)).unwrap();
        assert_eq!(got["encrypted"], json!(true));
        assert_eq!(got["verify"], json!("unverified"));
        assert_eq!(got["body"], json!(null));
        assert_eq!(got["fragments"], json!([]));
    }
}
