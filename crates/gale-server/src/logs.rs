//! Logging what happens often without flooding the log.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Counts events and logs them at most once per period, with the count since the
/// last line: a connect storm or a spinning failure makes one line every few
/// seconds, not thousands.
#[derive(Debug)]
pub struct Every {
    period: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl Every {
    pub fn new(period: Duration) -> Every {
        Every {
            period,
            state: Mutex::new((None, 0)),
        }
    }

    /// Counts one event; calls `log` with the count since the last call of it, if
    /// that was at least a period ago (or never).
    pub fn note(&self, log: impl FnOnce(u64)) {
        let mut s = self.state.lock();
        s.1 += 1;
        if s.0.is_some_and(|t| t.elapsed() < self.period) {
            return;
        }
        let n = std::mem::take(&mut s.1);
        s.0 = Some(Instant::now());
        drop(s);
        log(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_the_first_then_counts() {
        let e = Every::new(Duration::from_secs(3600));
        let mut lines = Vec::new();
        for _ in 0..5 {
            e.note(|n| lines.push(n));
        }
        assert_eq!(lines, [1], "one line, then silence within the period");
        let e = Every::new(Duration::ZERO);
        e.note(|n| lines.push(n));
        e.note(|n| lines.push(n));
        assert_eq!(lines, [1, 1, 1]);
    }
}
