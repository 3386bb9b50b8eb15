//! The one clock type of the protocol cores. Drivers convert the monotonic clock
//! into an [`Instant`]; the simulator advances a virtual one. Nothing in a core
//! reads a clock itself.

use core::ops::{Add, AddAssign, Sub};
use core::time::Duration;

/// A point in time, in microseconds since an arbitrary origin chosen by the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant {
    micros: u64,
}

impl Instant {
    /// The origin.
    pub const ZERO: Instant = Instant { micros: 0 };
    /// Later than anything a run reaches; useful as "never".
    pub const FAR_FUTURE: Instant = Instant {
        micros: u64::MAX / 2,
    };

    /// From microseconds since the origin.
    pub const fn from_micros(micros: u64) -> Self {
        Instant { micros }
    }
    /// From milliseconds since the origin.
    pub const fn from_millis(ms: u64) -> Self {
        Instant { micros: ms * 1000 }
    }
    /// Microseconds since the origin.
    pub const fn as_micros(self) -> u64 {
        self.micros
    }
    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Instant) -> Duration {
        Duration::from_micros(self.micros.saturating_sub(earlier.micros))
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, d: Duration) -> Instant {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        Instant {
            micros: self.micros.saturating_add(us),
        }
    }
}

impl AddAssign<Duration> for Instant {
    fn add_assign(&mut self, d: Duration) {
        *self = *self + d;
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    fn sub(self, rhs: Instant) -> Duration {
        self.saturating_since(rhs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let a = Instant::from_millis(5);
        assert_eq!(a + Duration::from_millis(2), Instant::from_millis(7));
        assert_eq!(Instant::ZERO - a, Duration::ZERO);
        assert_eq!(a - Instant::from_millis(1), Duration::from_millis(4));
        assert!(Instant::FAR_FUTURE > a + Duration::from_secs(1_000_000));
    }
}
