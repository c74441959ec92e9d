//! Working-time arithmetic, exactly per the policy's counting rules.
//!
//! - A stage's clock starts when the stage starts, but the start day does not count: the clock
//!   runs from 00:00 (Beijing time) of the next day, and only on working days.
//! - A limit of N working days ends at 24:00 of the N-th working day so counted.
//! - A pause (计时暂停) extends the due time by exactly the working time it covered.
//!
//! Working time is measured in seconds of working days, so a pause from Tuesday noon to
//! Wednesday noon covers one working day and one over a weekend covers none. Every function
//! fails with [`CalendarError::MissingYear`] rather than guess a year it has no calendar for.

use chrono::{DateTime, Datelike, Days, NaiveDate, TimeZone, Utc};
use shuiwu_wire::beijing;

use crate::calendar::{Calendar, CalendarError};

pub const DAY_SECS: i64 = 86_400;

/// Days the arithmetic walks at most before giving up: far beyond any limit of the policy,
/// and a guard against a calendar without working days.
const MAX_DAYS: u64 = 3 * 366;

/// A paused interval `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pause {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// The Beijing date of an instant.
pub fn date_of(t: DateTime<Utc>) -> NaiveDate {
    t.with_timezone(&beijing()).date_naive()
}

/// 00:00 Beijing time at the start of `date`.
pub fn midnight(date: NaiveDate) -> DateTime<Utc> {
    // Beijing has no daylight saving time: every local midnight exists exactly once.
    beijing()
        .from_local_datetime(&date.and_time(chrono::NaiveTime::MIN))
        .single()
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| Utc.from_utc_datetime(&date.and_time(chrono::NaiveTime::MIN)))
}

fn next_day(date: NaiveDate) -> Result<NaiveDate, CalendarError> {
    date.checked_add_days(Days::new(1))
        .ok_or(CalendarError::MissingYear(date.year() + 1))
}

/// Where a stage's clock starts counting: 00:00 of the day after the stage started.
pub fn clock_start(started: DateTime<Utc>) -> Result<DateTime<Utc>, CalendarError> {
    Ok(midnight(next_day(date_of(started))?))
}

/// Working seconds in `[from, to)`; zero when `to` is not after `from`.
pub fn working_seconds(cal: &Calendar, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<i64, CalendarError> {
    if to <= from {
        return Ok(0);
    }
    let mut total = 0;
    let mut day = date_of(from);
    loop {
        let (start, end) = (midnight(day), midnight(next_day(day)?));
        if start >= to {
            return Ok(total);
        }
        if cal.is_workday(day)? {
            total += (end.min(to) - start.max(from)).num_seconds();
        }
        day = next_day(day)?;
    }
}

/// The earliest instant at which `secs` working seconds have passed since `from`.
pub fn add_working(cal: &Calendar, from: DateTime<Utc>, secs: i64) -> Result<DateTime<Utc>, CalendarError> {
    let mut left = secs.max(0);
    if left == 0 {
        return Ok(from);
    }
    let mut day = date_of(from);
    for _ in 0..MAX_DAYS {
        let end = midnight(next_day(day)?);
        if cal.is_workday(day)? {
            let begin = midnight(day).max(from);
            let available = (end - begin).num_seconds();
            if left <= available {
                return Ok(begin + chrono::Duration::seconds(left));
            }
            left -= available;
        }
        day = next_day(day)?;
    }
    Err(CalendarError::Read(format!(
        "no working day within {MAX_DAYS} days of {from}"
    )))
}

/// The due instant of an `n`-working-day limit for a stage started at `started`: 24:00 of the
/// n-th working day after the start day (written as 00:00 of the day after).
pub fn due(cal: &Calendar, started: DateTime<Utc>, n: u32) -> Result<DateTime<Utc>, CalendarError> {
    add_working(cal, clock_start(started)?, i64::from(n) * DAY_SECS)
}

/// The working time a pause covered on a stage started at `started` (none before the clock
/// starts counting).
pub fn pause_effect(cal: &Calendar, started: DateTime<Utc>, pause: Pause) -> Result<i64, CalendarError> {
    let counting = clock_start(started)?;
    working_seconds(cal, pause.from.max(counting), pause.to.max(counting))
}

/// The due instant with pauses applied. Overlapping pauses count their common time once.
pub fn due_with_pauses(
    cal: &Calendar,
    started: DateTime<Utc>,
    n: u32,
    pauses: &[Pause],
) -> Result<DateTime<Utc>, CalendarError> {
    let mut sorted: Vec<Pause> = pauses.iter().copied().filter(|p| p.to > p.from).collect();
    sorted.sort_by_key(|p| p.from);
    let mut merged: Vec<Pause> = Vec::new();
    for p in sorted {
        match merged.last_mut() {
            Some(last) if p.from <= last.to => last.to = last.to.max(p.to),
            _ => merged.push(p),
        }
    }
    let mut extra = 0;
    for p in merged {
        extra += pause_effect(cal, started, p)?;
    }
    add_working(cal, due(cal, started, n)?, extra)
}

/// Working days after `from` up to and including `to` (the start day does not count, as for
/// a stage); negative when `to` is before `from`.
pub fn count(cal: &Calendar, from: NaiveDate, to: NaiveDate) -> Result<i64, CalendarError> {
    if to < from {
        return count(cal, to, from).map(|n| -n);
    }
    let mut n = 0;
    let mut day = from;
    while day < to {
        day = next_day(day)?;
        if cal.is_workday(day)? {
            n += 1;
        }
    }
    Ok(n)
}

/// Working time between instants in constant time, for counting many stages at once (a
/// report counts every stage of a quarter): for each day of the calendar's years, whether it
/// is a working day, and how many working days come before it. Gives what
/// [`working_seconds`] gives, and nothing where that fails (a day of a year without calendar).
pub struct WorkingDays {
    /// The Beijing day number (days since 1970-01-01) of the first day held.
    first: i64,
    /// For each day held and one past the last: working days before it.
    working_before: Vec<u32>,
    /// For each day held and one past the last: days before it of a year without calendar.
    unknown_before: Vec<u32>,
}

/// Seconds from UTC to Beijing time (no daylight saving time).
const BEIJING_OFFSET: i64 = 8 * 3600;

impl WorkingDays {
    pub fn new(cal: &Calendar) -> WorkingDays {
        let years: Vec<i32> = cal.years().collect();
        let (Some(&first), Some(&last)) = (years.first(), years.last()) else {
            return WorkingDays {
                first: 0,
                working_before: vec![0],
                unknown_before: vec![0],
            };
        };
        let day_number = |d: NaiveDate| (d - NaiveDate::default()).num_days();
        let start = NaiveDate::from_ymd_opt(first, 1, 1).unwrap_or_default();
        let end = NaiveDate::from_ymd_opt(last, 12, 31).unwrap_or(start);
        let mut out = WorkingDays {
            first: day_number(start),
            working_before: vec![0],
            unknown_before: vec![0],
        };
        let (mut working, mut unknown) = (0, 0);
        for day in start.iter_days().take_while(|d| *d <= end) {
            match cal.is_workday(day) {
                Ok(w) => working += u32::from(w),
                Err(_) => unknown += 1,
            }
            out.working_before.push(working);
            out.unknown_before.push(unknown);
        }
        out
    }

    /// The working seconds in `[from, to)`, instants in seconds since 1970; zero when `to` is
    /// not after `from`; `None` when a day between is of a year without calendar.
    pub fn seconds(&self, from: i64, to: i64) -> Option<i64> {
        if to <= from {
            return Some(0);
        }
        let day = |t: i64| (t + BEIJING_OFFSET).div_euclid(DAY_SECS);
        let midnight = |d: i64| d * DAY_SECS - BEIJING_OFFSET;
        // Days held, as indexes: the first and the last day with time in [from, to).
        let (a, b) = (day(from) - self.first, day(to - 1) - self.first);
        let held = self.working_before.len() as i64 - 1;
        if a < 0 || b >= held {
            return None;
        }
        let (a, b) = (a as usize, b as usize);
        if self.unknown_before[b + 1] != self.unknown_before[a] {
            return None;
        }
        let works = |i: usize| i64::from(self.working_before[i + 1] - self.working_before[i]);
        if a == b {
            return Some(works(a) * (to - from));
        }
        let (first_day, last_day) = (a as i64 + self.first, b as i64 + self.first);
        let between = i64::from(self.working_before[b] - self.working_before[a + 1]);
        Some(
            works(a) * (midnight(first_day + 1) - from)
                + between * DAY_SECS
                + works(b) * (to - midnight(last_day)),
        )
    }

    /// Where a stage's clock starts counting ([`clock_start`]), in seconds since 1970.
    pub fn clock_start(started: i64) -> i64 {
        ((started + BEIJING_OFFSET).div_euclid(DAY_SECS) + 1) * DAY_SECS - BEIJING_OFFSET
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    fn cal() -> &'static Calendar {
        static CAL: OnceLock<Calendar> = OnceLock::new();
        CAL.get_or_init(|| Calendar::load(None).unwrap())
    }

    /// A Beijing time `yyyy-MM-dd HH:mm:ss`.
    fn bj(s: &str) -> DateTime<Utc> {
        shuiwu_wire::parse_beijing(s).unwrap()
    }

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn examples_across_holidays_and_adjusted_days() {
        let cases = [
            // An ordinary Friday afternoon: the weekend does not count.
            ("2026-11-27 15:00:00", 1, "2026-12-01 00:00:00"),
            // Spring Festival 2024: 除夕 Friday counts, 10–17 Feb do not, Sunday 18 Feb is a working day.
            ("2024-02-08 10:00:00", 2, "2024-02-19 00:00:00"),
            ("2024-02-08 10:00:00", 1, "2024-02-10 00:00:00"),
            // National Day 2023: 29 Sep – 6 Oct off, Saturday 7 and Sunday 8 Oct are working days.
            ("2023-09-28 16:30:00", 1, "2023-10-08 00:00:00"),
            ("2023-09-28 16:30:00", 2, "2023-10-09 00:00:00"),
            // Year end: 31 Dec 2025, then 1–3 Jan 2026 off and Sunday 4 Jan a working day.
            ("2025-12-30 09:00:00", 2, "2026-01-05 00:00:00"),
            // Started on a holiday: the clock waits for the first working day.
            ("2022-10-03 11:00:00", 1, "2022-10-09 00:00:00"),
            // The 8-day limit over Labour Day 2025 (1–5 May off, Sunday 27 Apr worked).
            ("2025-04-25 08:00:00", 8, "2025-05-10 00:00:00"),
        ];
        for (start, n, want) in cases {
            assert_eq!(due(cal(), bj(start), n).unwrap(), bj(want), "{start} + {n}");
        }
    }

    #[test]
    fn pauses_extend_by_the_working_time_they_cover() {
        let start = bj("2026-11-23 09:00:00"); // Monday
        assert_eq!(due(cal(), start, 2).unwrap(), bj("2026-11-26 00:00:00"));
        // Tuesday noon to Wednesday noon: one working day.
        let p = Pause {
            from: bj("2026-11-24 12:00:00"),
            to: bj("2026-11-25 12:00:00"),
        };
        assert_eq!(
            due_with_pauses(cal(), start, 2, &[p]).unwrap(),
            bj("2026-11-27 00:00:00")
        );
        // A pause on the start day covers nothing: the clock had not started.
        let p = Pause {
            from: bj("2026-11-23 10:00:00"),
            to: bj("2026-11-24 00:00:00"),
        };
        assert_eq!(
            due_with_pauses(cal(), start, 2, &[p]).unwrap(),
            bj("2026-11-26 00:00:00")
        );
        // Four working hours move the due time four hours into the next working day.
        let p = Pause {
            from: bj("2026-11-24 08:00:00"),
            to: bj("2026-11-24 12:00:00"),
        };
        assert_eq!(
            due_with_pauses(cal(), start, 2, &[p]).unwrap(),
            bj("2026-11-26 04:00:00")
        );
        // Over a weekend: nothing.
        let start = bj("2026-11-26 09:00:00"); // Thursday
        let p = Pause {
            from: bj("2026-11-28 00:00:00"),
            to: bj("2026-11-30 00:00:00"),
        };
        assert_eq!(
            due_with_pauses(cal(), start, 2, &[p]).unwrap(),
            due(cal(), start, 2).unwrap()
        );
    }

    #[test]
    fn counting() {
        assert_eq!(count(cal(), d("2024-02-08"), d("2024-02-19")).unwrap(), 3);
        assert_eq!(count(cal(), d("2024-02-19"), d("2024-02-08")).unwrap(), -3);
        assert_eq!(count(cal(), d("2026-11-28"), d("2026-11-28")).unwrap(), 0);
    }

    #[test]
    fn a_year_without_a_calendar_is_an_error() {
        let start = bj("2026-12-30 10:00:00");
        assert_eq!(due(cal(), start, 1).unwrap(), bj("2027-01-01 00:00:00"));
        assert_eq!(due(cal(), start, 2), Err(CalendarError::MissingYear(2027)));
        assert_eq!(
            count(cal(), d("2026-12-30"), d("2027-01-05")),
            Err(CalendarError::MissingYear(2027))
        );
    }

    /// A start instant between 2022 and late 2026, so that limits stay inside known years.
    fn start_strategy() -> impl Strategy<Value = DateTime<Utc>> {
        (0i64..(365 * 4 + 300), 0i64..DAY_SECS).prop_map(|(day, sec)| {
            midnight(d("2022-01-01")) + chrono::Duration::days(day) + chrono::Duration::seconds(sec)
        })
    }

    proptest! {
        #[test]
        fn adding_n_and_counting_back_gives_n(start in start_strategy(), n in 1u32..=10) {
            let due_at = due(cal(), start, n).unwrap();
            let last_day = date_of(due_at - chrono::Duration::seconds(1));
            prop_assert_eq!(count(cal(), date_of(start), last_day).unwrap(), i64::from(n));
            prop_assert!(cal().is_workday(last_day).unwrap());
            prop_assert_eq!(due_at, midnight(date_of(due_at)), "limits end at 24:00");
        }

        #[test]
        fn a_pause_inside_a_day_off_changes_nothing(start in start_strategy(), n in 1u32..=8, offset in 0u64..20, a in 0i64..DAY_SECS, len in 1i64..DAY_SECS) {
            let mut day = date_of(start).checked_add_days(Days::new(offset)).unwrap();
            while cal().is_workday(day).unwrap() {
                day = day.checked_add_days(Days::new(1)).unwrap();
            }
            let from = midnight(day) + chrono::Duration::seconds(a);
            let to = (from + chrono::Duration::seconds(len)).min(midnight(day.checked_add_days(Days::new(1)).unwrap()));
            let paused = due_with_pauses(cal(), start, n, &[Pause { from, to }]).unwrap();
            prop_assert_eq!(paused, due(cal(), start, n).unwrap());
        }

        #[test]
        fn pauses_are_additive(start in start_strategy(), n in 1u32..=8, a in 0i64..(10 * DAY_SECS), l1 in 0i64..(2 * DAY_SECS), gap in 0i64..DAY_SECS, l2 in 0i64..(2 * DAY_SECS)) {
            let p1 = Pause { from: start + chrono::Duration::seconds(a), to: start + chrono::Duration::seconds(a + l1) };
            let p2 = Pause { from: p1.to + chrono::Duration::seconds(gap), to: p1.to + chrono::Duration::seconds(gap + l2) };
            let both = due_with_pauses(cal(), start, n, &[p2, p1]).unwrap();
            let first = due_with_pauses(cal(), start, n, &[p1]).unwrap();
            let e2 = pause_effect(cal(), start, p2).unwrap();
            prop_assert_eq!(both, add_working(cal(), first, e2).unwrap());
            let e1 = pause_effect(cal(), start, p1).unwrap();
            let joined = Pause { from: p1.from, to: p2.to };
            let gap_effect = pause_effect(cal(), start, Pause { from: p1.to, to: p2.from }).unwrap();
            prop_assert_eq!(pause_effect(cal(), start, joined).unwrap(), e1 + gap_effect + e2);
        }

        #[test]
        fn working_seconds_and_add_working_are_inverse(from in start_strategy(), secs in 0i64..(8 * DAY_SECS)) {
            let to = add_working(cal(), from, secs).unwrap();
            prop_assert_eq!(working_seconds(cal(), from, to).unwrap(), secs);
        }

        #[test]
        fn longer_limits_end_later(start in start_strategy(), n in 1u32..=9) {
            prop_assert!(due(cal(), start, n + 1).unwrap() > due(cal(), start, n).unwrap());
        }

        /// The constant-time count is the day-by-day count, inside the calendar's years and
        /// across their edges (where both fail).
        #[test]
        fn working_days_count_as_working_seconds(from in -400i64..(365 * 6), a in 0i64..DAY_SECS, len in -DAY_SECS..(40 * DAY_SECS)) {
            static DAYS: OnceLock<WorkingDays> = OnceLock::new();
            let days = DAYS.get_or_init(|| WorkingDays::new(cal()));
            let from = midnight(d("2022-01-01")) + chrono::Duration::days(from) + chrono::Duration::seconds(a);
            let to = from + chrono::Duration::seconds(len);
            prop_assert_eq!(
                days.seconds(from.timestamp(), to.timestamp()),
                working_seconds(cal(), from, to).ok()
            );
            prop_assert_eq!(WorkingDays::clock_start(from.timestamp()), clock_start(from).unwrap().timestamp());
        }
    }

    #[test]
    fn no_calendar_no_working_days() {
        let none = WorkingDays::new(&Calendar::default());
        let t = midnight(d("2026-03-02")).timestamp();
        assert_eq!(none.seconds(t, t + DAY_SECS), None);
        assert_eq!(none.seconds(t, t), Some(0));
        let days = WorkingDays::new(cal());
        // Monday 2 March 2026 and the weekend after it.
        assert_eq!(days.seconds(t, t + 7 * DAY_SECS), Some(5 * DAY_SECS));
        assert_eq!(
            days.seconds(t + 3600, t + 2 * DAY_SECS),
            Some(2 * DAY_SECS - 3600)
        );
    }
}
