//! Where the API's clock stands against ours, learned from the jobs this process started, so
//! that a job's whole-second `status_time` tells when it ended to much better than a second.
//!
//! A job sent at `sent` and answered by `answered` (our clock) was created in between; its
//! `create_time` `C` is the API's clock then, rounded down to the second. So the API's clock
//! less ours lies in `[C − answered, C + 1 s − sent)`. Each job created at another fraction of a
//! second cuts that range from another side, and after a few jobs it is about as narrow as the
//! time a `del_user` takes to be answered. A job's `status_time` `S` (its end, rounded down)
//! then puts the end on our clock in `(S − hi, S + 1 s − lo)`: a one-second window, placed to the
//! millisecond. Jobs of one duration that ended at different fractions of a second narrow the
//! duration from both sides (the durations model takes the shortest end and the longest start
//! of the samples), where the stamps' difference alone (`narrow`) leaves two seconds.
//!
//! An API whose stamps do not behave so (a `create_time` set after the answer, an end shown
//! later than its `status_time`) contradicts itself or what the rounds saw; the clock is then
//! no longer used in the run, and `narrow` serves alone.
//!
//! What it must not do: read a clock or know about the store and the API.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

const SECOND: TimeDelta = TimeDelta::seconds(1);

/// The API's clock less ours, as far as the jobs seen so far tell.
#[derive(Debug, Clone, Default)]
pub struct ApiClock {
    /// The offset lies in `[lo, hi)`; `None` before the first job was described.
    bounds: Option<(TimeDelta, TimeDelta)>,
    /// Its stamps contradicted each other or what was seen: not used again.
    distrusted: bool,
}

impl ApiClock {
    /// A job sent at `sent` and answered by `answered` (our clock) has `create_time` `created`.
    pub fn learn_created(&mut self, sent: DateTime<Utc>, answered: DateTime<Utc>, created: DateTime<Utc>) {
        if self.distrusted || answered < sent {
            return;
        }
        let (lo, hi) = (created - answered, created + SECOND - sent);
        let (lo, hi) = match self.bounds {
            Some((l, h)) => (l.max(lo), h.min(hi)),
            None => (lo, hi),
        };
        if lo >= hi {
            self.distrust();
        } else {
            self.bounds = Some((lo, hi));
        }
    }

    /// The ages (time since `sent`) between which a job sent at `sent` whose status changed at
    /// `ended` (the API's clock, whole seconds) had ended as this side sees it: `None` while
    /// nothing is known or the clock is distrusted.
    pub fn end_ages(&self, sent: DateTime<Utc>, ended: DateTime<Utc>) -> Option<(Duration, Duration)> {
        if self.distrusted {
            return None;
        }
        let (lo, hi) = self.bounds?;
        let from = (ended - hi - sent).to_std().unwrap_or_default();
        let to = (ended + SECOND - lo - sent).to_std().ok()?;
        Some((from, to))
    }

    /// Narrow what a finished job sent at `sent` showed of its duration (running at age `lo`,
    /// ended by age `hi`) by its `status_time` `ended`, if the clock is placed
    /// ([`narrow_by_clock`]). A window that contradicts what was seen sets the clock aside,
    /// and the interval stays as it was.
    pub fn narrow(
        &mut self,
        (lo, hi): (Duration, Duration),
        sent: DateTime<Utc>,
        ended: Option<DateTime<Utc>>,
        transit: Duration,
    ) -> (Duration, Duration) {
        let Some(window) = ended.and_then(|e| self.end_ages(sent, e)) else { return (lo, hi) };
        narrow_by_clock(lo, hi, window, transit).unwrap_or_else(|| {
            self.distrust();
            (lo, hi)
        })
    }

    /// The width of the offset's range, once known.
    #[cfg(test)]
    pub fn uncertainty(&self) -> Option<Duration> {
        let (lo, hi) = self.bounds.filter(|_| !self.distrusted)?;
        (hi - lo).to_std().ok()
    }

    /// What the stamps said was contradicted: do not use them again in this run.
    pub fn distrust(&mut self) {
        self.distrusted = true;
        self.bounds = None;
    }

    /// Whether it was set aside.
    pub fn distrusted(&self) -> bool {
        self.distrusted
    }
}

/// Narrow what a finished job showed of its duration (running at age `lo`, ended by age `hi`)
/// by the end window the API's clock puts on it. The ages are those at which the rounds' calls
/// were sent; a call reaches the API up to `transit` later (a request's round trip is a bound),
/// so a job may have ended after the age of the call that saw it done. `None` when the window
/// contradicts what was seen: ended before it was seen running, or more than `transit` after it
/// was seen done. A window that only overlaps that transit leaves the interval as it was.
fn narrow_by_clock(
    lo: Duration,
    hi: Duration,
    window: (Duration, Duration),
    transit: Duration,
) -> Option<(Duration, Duration)> {
    let (from, to) = window;
    if to <= lo || from >= hi + transit {
        return None;
    }
    let (lo2, hi2) = (lo.max(from), hi.min(to));
    Some(if lo2 < hi2 { (lo2, hi2) } else { (lo, hi) })
}

#[cfg(test)]
mod tests {
    use super::super::narrow;
    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_765_000_000_000 + ms).unwrap()
    }

    /// The API's stamp of our instant `ms` when its clock is `offset_ms` ahead: whole seconds,
    /// rounded down.
    fn stamp(ms: i64, offset_ms: i64) -> DateTime<Utc> {
        let t = at(ms + offset_ms).timestamp();
        DateTime::from_timestamp(t, 0).unwrap()
    }

    #[test]
    fn jobs_created_at_other_fractions_of_a_second_pin_the_offset() {
        let mut c = ApiClock::default();
        assert_eq!(c.uncertainty(), None);
        let offset = 45_317; // the API 45.317 s ahead
                             // One job per 720 ms, answered 4 ms after it was sent.
        for k in 0..20 {
            let sent = k * 720;
            c.learn_created(at(sent), at(sent + 4), stamp(sent + 2, offset));
        }
        let width = c.uncertainty().unwrap();
        assert!(width <= Duration::from_millis(50), "{width:?}");
        let (lo, hi) = c.bounds.unwrap();
        assert!(lo <= TimeDelta::milliseconds(offset) && TimeDelta::milliseconds(offset) < hi, "{lo} {hi}");
    }

    #[test]
    fn an_end_stamp_puts_the_end_within_a_placed_second() {
        let mut c = ApiClock::default();
        let offset = -2_250; // the API 2.25 s behind
        for k in 0..20 {
            let sent = k * 720;
            c.learn_created(at(sent), at(sent + 4), stamp(sent + 2, offset));
        }
        // A job sent at 20 s, created 2 ms later, ending 500 ms after its creation.
        let sent = 20_000;
        let (from, to) = c.end_ages(at(sent), stamp(sent + 502, offset)).unwrap();
        assert!(from < Duration::from_millis(502) && Duration::from_millis(502) < to, "{from:?} {to:?}");
        // One second, widened by what is left of the offset's range (the creations' phases
        // are 40 ms apart here).
        assert!(to - from <= Duration::from_secs(1) + c.uncertainty().unwrap(), "{from:?} {to:?}");
        assert!(c.uncertainty().unwrap() <= Duration::from_millis(100));
        // Probes saw it running at 300 ms and done at 600 ms: the window can only narrow that.
        let (lo, hi) =
            narrow_by_clock(Duration::from_millis(300), Duration::from_millis(600), (from, to), Duration::ZERO)
                .unwrap();
        assert!(lo >= Duration::from_millis(300) && hi <= Duration::from_millis(600));
        assert!(lo < Duration::from_millis(502) && Duration::from_millis(502) <= hi);
    }

    #[test]
    fn jobs_of_one_duration_ending_at_other_fractions_narrow_it_from_both_sides() {
        let mut c = ApiClock::default();
        let offset = 713;
        let d = 500;
        let (mut lo, mut hi) = (Duration::ZERO, Duration::from_secs(10));
        for k in 0..30 {
            let sent = k * 737;
            c.learn_created(at(sent), at(sent + 3), stamp(sent + 1, offset));
            let window = c.end_ages(at(sent), stamp(sent + 1 + d, offset)).unwrap();
            (lo, hi) = narrow_by_clock(lo, hi, window, Duration::from_millis(3)).unwrap();
        }
        let d = Duration::from_millis(d as u64);
        assert!(lo < d + Duration::from_millis(1) && d <= hi, "{lo:?} {hi:?}");
        // The stamps' difference alone leaves (0, 1.1 s] for a job that takes 0 or 1 whole
        // seconds; thirty ends at other fractions of a second leave a fifth of a second.
        assert_eq!(
            narrow(Duration::ZERO, Duration::from_secs(10), Some(Duration::ZERO)).1,
            Duration::from_millis(1100)
        );
        assert!(hi - lo <= Duration::from_millis(200), "{lo:?} {hi:?}");
    }

    #[test]
    fn stamps_that_contradict_each_other_are_not_used_again() {
        let mut c = ApiClock::default();
        c.learn_created(at(0), at(4), stamp(2, 0));
        // A create_time a second later than the answer could have been.
        c.learn_created(at(1000), at(1004), stamp(3000, 0));
        assert!(c.distrusted());
        assert_eq!(c.end_ages(at(0), stamp(600, 0)), None);
        c.learn_created(at(2000), at(2004), stamp(2002, 0));
        assert_eq!(c.uncertainty(), None);
    }

    #[test]
    fn a_contradicting_end_sets_the_clock_aside_and_leaves_the_interval() {
        let mut c = ApiClock::default();
        for k in 0..20 {
            let sent = k * 720;
            c.learn_created(at(sent), at(sent + 4), stamp(sent + 2, 0));
        }
        let ms = Duration::from_millis;
        let sent = 20_600;
        // Ended 502 ms after it was sent, just past a second on the API's clock: it ended after
        // about 400 ms, which narrows (300 ms, 600 ms].
        let (lo, hi) = c.narrow((ms(300), ms(600)), at(sent), Some(stamp(sent + 502, 0)), ms(4));
        assert!(lo > ms(350) && lo < ms(502) && hi == ms(600), "{lo:?} {hi:?}");
        assert!(!c.distrusted());
        // Stamped as ended two seconds after the round that saw it done.
        let seen = (ms(300), ms(600));
        assert_eq!(c.narrow(seen, at(sent), Some(stamp(sent + 2600, 0)), ms(4)), seen);
        assert!(c.distrusted());
        assert_eq!(c.narrow(seen, at(sent), Some(stamp(sent + 502, 0)), ms(4)), seen);
    }

    #[test]
    fn a_window_that_contradicts_the_rounds_is_refused() {
        let ms = Duration::from_millis;
        let transit = ms(20);
        // Seen running at 700 ms, but the stamps say it had ended by 650 ms.
        assert_eq!(narrow_by_clock(ms(700), ms(900), (ms(100), ms(650)), transit), None);
        // Seen done by a call sent at 300 ms, but the stamps say it ended after 400 ms.
        assert_eq!(narrow_by_clock(ms(0), ms(300), (ms(400), ms(1400)), transit), None);
        assert_eq!(narrow_by_clock(ms(300), ms(600), (ms(450), ms(1450)), transit), Some((ms(450), ms(600))));
        // Ended after the call that saw it done was sent, while it was on its way: no
        // contradiction, and nothing to narrow by.
        assert_eq!(narrow_by_clock(ms(300), ms(600), (ms(610), ms(1610)), transit), Some((ms(300), ms(600))));
    }
}
