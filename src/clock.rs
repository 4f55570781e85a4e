//! The time the bot decides by, injected so that tests move it forward instead of sleeping.
//!
//! Everything the lifecycle dates (audit events, approval timeouts, how long a team answer is
//! reused) reads [`Clock::now`]; the service runs on [`SystemClock`], tests on [`ManualClock`].

use std::sync::{Arc, Mutex};

use time::OffsetDateTime;

pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now, to the second (audit events and commits carry whole seconds).
    fn now(&self) -> OffsetDateTime;
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        whole_second(OffsetDateTime::now_utc())
    }
}

/// A clock that stands still until a test advances it.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<OffsetDateTime>>);

impl ManualClock {
    pub fn at(start: OffsetDateTime) -> ManualClock {
        ManualClock(Arc::new(Mutex::new(whole_second(start))))
    }

    /// Starts at the real time now (so that dates look plausible), then stands still.
    pub fn starting_now() -> ManualClock {
        ManualClock::at(OffsetDateTime::now_utc())
    }

    pub fn advance(&self, by: time::Duration) {
        let mut now = self.0.lock().unwrap();
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self.0.lock().unwrap()
    }
}

fn whole_second(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).expect("0 is a valid nanosecond")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced() {
        let c = ManualClock::at(time::macros::datetime!(2026-11-29 10:00:00.5 UTC));
        assert_eq!(c.now(), time::macros::datetime!(2026-11-29 10:00:00 UTC));
        c.advance(time::Duration::hours(73));
        assert_eq!(c.now(), time::macros::datetime!(2026-12-02 11:00:00 UTC));
    }
}
