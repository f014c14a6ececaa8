//! What a gsub says about its person: presence, device and idle time. Carried by
//! presence notices, receipts and ping answers alike.

use gale_proto::fragment::names;
use gale_proto::{Fragments, Timestamp, Value};

/// One gsub's presence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Free-form hierarchical state (`in.present`, `out.to.lunch`).
    pub presence: String,
    /// Which of the person's gsubs (`laptop`), if it says.
    pub device: Option<String>,
    /// When the person last touched their terminal, if known.
    pub active_at: Option<Timestamp>,
}

impl Status {
    /// Adds `notice.presence`, `notice.device` and `status.idle` to `f`.
    pub fn push_to(&self, f: &mut Fragments) {
        f.push_text(names::NOTICE_PRESENCE, self.presence.as_str());
        if let Some(d) = &self.device {
            f.push_text(names::NOTICE_DEVICE, d.as_str());
        }
        if let Some(t) = self.active_at {
            f.push(names::STATUS_IDLE, Value::Time(t));
        }
    }

    /// The status in `f`, if it carries a presence.
    pub fn from_fragments(f: &Fragments) -> Option<Status> {
        Some(Status {
            presence: f.text(names::NOTICE_PRESENCE)?.to_string(),
            device: f.text(names::NOTICE_DEVICE).map(str::to_string),
            active_at: f.time(names::STATUS_IDLE),
        })
    }

    /// Seconds idle at `now` (0 if the clocks disagree), if known.
    pub fn idle_secs(&self, now: Timestamp) -> Option<u64> {
        self.active_at
            .map(|t| u64::try_from(now.secs.saturating_sub(t.secs)).unwrap_or(0))
    }
}

/// `secs` as a person reads an idle time: `42s`, `5m`, `3h12m`, `2d4h`.
pub fn idle_text(secs: u64) -> String {
    let (d, h, m) = (secs / 86_400, (secs / 3600) % 24, (secs / 60) % 60);
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{m}m"),
        s if s < 86_400 => format!("{h}h{m:02}m"),
        _ => format!("{d}d{h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_idle() {
        let s = Status {
            presence: "out.to.lunch".into(),
            device: Some("laptop".into()),
            active_at: Some(Timestamp {
                secs: 100,
                nanos: 0,
            }),
        };
        let mut f = Fragments::new();
        s.push_to(&mut f);
        assert_eq!(Status::from_fragments(&f), Some(s.clone()));
        assert_eq!(
            s.idle_secs(Timestamp {
                secs: 190,
                nanos: 0
            }),
            Some(90)
        );
        assert_eq!(s.idle_secs(Timestamp { secs: 50, nanos: 0 }), Some(0));
        assert_eq!(Status::from_fragments(&Fragments::new()), None);
        assert_eq!(idle_text(42), "42s");
        assert_eq!(idle_text(300), "5m");
        assert_eq!(idle_text(3 * 3600 + 12 * 60), "3h12m");
        assert_eq!(idle_text(2 * 86_400 + 4 * 3600), "2d4h");
    }
}
