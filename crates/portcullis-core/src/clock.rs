//! Time as a dependency, so expiry logic can be tested without sleeping.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

/// A source of the current wall-clock time.
///
/// Code that checks expiry takes a `Clock` instead of calling [`SystemTime::now`], so that
/// tests can move time with a [`ManualClock`].
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time.
    fn now(&self) -> SystemTime;
}

/// The real clock: [`SystemTime::now`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that only moves when told to, for tests.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use portcullis_core::{Clock, ManualClock};
/// let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_000));
/// clock.advance(Duration::from_secs(60));
/// assert_eq!(clock.now(), UNIX_EPOCH + Duration::from_secs(1_060));
/// ```
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<SystemTime>,
}

impl ManualClock {
    /// A clock stopped at `now`.
    #[must_use]
    pub fn new(now: SystemTime) -> Self {
        ManualClock {
            now: Mutex::new(now),
        }
    }

    /// Sets the time to `now` (it may go backwards, as real clocks sometimes do).
    pub fn set(&self, now: SystemTime) {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner) = now;
    }

    /// Moves the time forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(PoisonError::into_inner);
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<C: Clock + ?Sized> Clock for &C {
    fn now(&self) -> SystemTime {
        (**self).now()
    }
}

impl<C: Clock + ?Sized> Clock for Box<C> {
    fn now(&self) -> SystemTime {
        (**self).now()
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> SystemTime {
        (**self).now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(UNIX_EPOCH));
        assert_eq!(clock.now(), UNIX_EPOCH);
        let manual = ManualClock::new(UNIX_EPOCH);
        manual.advance(Duration::from_secs(5));
        manual.set(UNIX_EPOCH + Duration::from_secs(2));
        assert_eq!(manual.now(), UNIX_EPOCH + Duration::from_secs(2));
    }

    #[test]
    fn system_clock_is_after_2020() {
        assert!(SystemClock.now() > UNIX_EPOCH + Duration::from_secs(1_577_836_800));
    }
}
