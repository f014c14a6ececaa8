//! Retry back-off: a pure function of the attempt number and a random draw, used by
//! clients reconnecting and by servers redialling their links.

use std::time::Duration;

/// Jittered exponential back-off ("equal jitter": half fixed, half random), so a
/// crowd of clients cut off by one server restart does not come back in lock step,
/// yet no client retries sooner than half the nominal delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub factor: u32,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::RECONNECT
    }
}

/// A uniform random draw in `[0, 1)` for [`Backoff::delay`], from the operating
/// system's generator (so that processes started together do not draw alike).
pub fn jitter() -> f64 {
    use rand_core::RngCore;
    (rand_core::OsRng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

impl Backoff {
    /// Client reconnects: 100 ms doubling to 10 s.
    pub const RECONNECT: Backoff = Backoff {
        initial: Duration::from_millis(100),
        factor: 2,
        max: Duration::from_secs(10),
    };

    /// Server links: 200 ms doubling to 10 s.
    pub const REDIAL: Backoff = Backoff {
        initial: Duration::from_millis(200),
        factor: 2,
        max: Duration::from_secs(10),
    };

    /// The nominal delay before retry `attempt` (0-based): `initial × factor^attempt`,
    /// capped at `max`.
    pub fn nominal(&self, attempt: u32) -> Duration {
        let mut d = self.initial;
        for _ in 0..attempt {
            d = d.saturating_mul(self.factor.max(1));
            if d >= self.max {
                return self.max;
            }
        }
        d.min(self.max)
    }

    /// The delay to wait: half of [`Backoff::nominal`], plus `rng` (in `[0, 1]`,
    /// clamped) times the other half.
    pub fn delay(&self, attempt: u32, rng: f64) -> Duration {
        let n = self.nominal(attempt);
        let half = n / 2;
        half + (n - half).mul_f64(rng.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let b = Backoff::default();
        let ms = |d: Duration| d.as_millis() as u64;
        // (attempt, rng, expected ms)
        let table: &[(u32, f64, u64)] = &[
            (0, 0.0, 50),
            (0, 1.0, 100),
            (0, 0.5, 75),
            (1, 0.0, 100),
            (1, 1.0, 200),
            (2, 0.0, 200),
            (3, 1.0, 800),
            (6, 1.0, 6400),
            (7, 1.0, 10_000), // 12.8 s capped
            (7, 0.0, 5_000),
            (40, 1.0, 10_000),
            (u32::MAX, 0.5, 7_500),
            (0, -3.0, 50), // rng clamped
            (0, 7.0, 100),
        ];
        for &(attempt, rng, want) in table {
            assert_eq!(
                ms(b.delay(attempt, rng)),
                want,
                "attempt {attempt} rng {rng}"
            );
        }
    }

    #[test]
    fn redial_table() {
        let ms = |f, j| Backoff::REDIAL.delay(f, j).as_millis();
        assert_eq!(
            [
                ms(0, 0.0),
                ms(1, 0.0),
                ms(2, 0.0),
                ms(5, 0.0),
                ms(6, 0.0),
                ms(30, 0.0)
            ],
            [100, 200, 400, 3200, 5000, 5000]
        );
        assert_eq!([ms(0, 1.0), ms(3, 1.0), ms(9, 1.0)], [200, 1600, 10000]);
        assert_eq!(ms(2, 0.5), 600);
    }

    #[test]
    fn jitter_is_in_range_and_varies() {
        let draws: Vec<f64> = (0..100).map(|_| jitter()).collect();
        assert!(draws.iter().all(|j| (0.0..1.0).contains(j)));
        assert!(draws.iter().any(|j| *j != draws[0]));
    }
}
