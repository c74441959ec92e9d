//! The injected clock and Beijing-time helpers.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeZone, Utc};

/// A source of "now". Production uses [`SystemClock`]; tests use [`ManualClock`] so that a
/// five-minute visibility lag or a midnight quota reset costs no real time.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to. Clones share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<DateTime<Utc>>>);

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        Self(Arc::new(Mutex::new(start)))
    }

    pub fn set(&self, to: DateTime<Utc>) {
        *self.lock() = to;
    }

    pub fn advance(&self, by: chrono::Duration) {
        let mut now = self.lock();
        *now += by;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DateTime<Utc>> {
        // A poisoned lock only means another thread panicked while holding a plain value; the
        // value itself is still a valid instant.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.lock()
    }
}

/// Beijing time: UTC+8 all year (China has no daylight saving time).
pub fn beijing() -> FixedOffset {
    // 8 hours is well inside the ±24 h range FixedOffset accepts.
    FixedOffset::east_opt(8 * 3600).expect("UTC+8 is a valid offset")
}

/// Today's date in Beijing, on the system clock.
pub fn beijing_today() -> chrono::NaiveDate {
    Utc::now().with_timezone(&beijing()).date_naive()
}

/// Formats an instant as the platforms write times: `yyyy-MM-dd HH:mm:ss`, Beijing time.
pub fn format_beijing(t: DateTime<Utc>) -> String {
    t.with_timezone(&beijing())
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// A time for people: Beijing time with its offset written, `2026-12-01 21:20:29 +08:00`.
pub fn format_human(t: DateTime<Utc>) -> String {
    t.with_timezone(&beijing())
        .format("%Y-%m-%d %H:%M:%S %:z")
        .to_string()
}

/// A time for machines: RFC 3339 in Beijing time with its offset, `2026-12-01T21:20:29+08:00`.
pub fn format_rfc3339(t: DateTime<Utc>) -> String {
    t.with_timezone(&beijing())
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false)
}

/// A stored timestamp (RFC 3339, any offset) for people, as [`format_human`]; text that is
/// not one is shown as it is.
pub fn human_from_stored(text: &str) -> String {
    parse_time(text).map_or_else(|| text.to_string(), format_human)
}

/// An instant as an operator may type it: RFC 3339 with any offset
/// (`2024-07-15T10:30:00+08:00`), or Beijing time written `yyyy-MM-dd HH:mm:ss` (with or
/// without ` +08:00`), as the platforms write it.
pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    let t = text.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(t) {
        return Some(at.with_timezone(&Utc));
    }
    if let Ok(at) = DateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S %:z") {
        return Some(at.with_timezone(&Utc));
    }
    parse_beijing(t)
}

/// Parses a platform time `yyyy-MM-dd HH:mm:ss` (Beijing time, no zone written).
pub fn parse_beijing(text: &str) -> Option<DateTime<Utc>> {
    let naive = NaiveDateTime::parse_from_str(text.trim(), "%Y-%m-%d %H:%M:%S").ok()?;
    beijing()
        .from_local_datetime(&naive)
        .single()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_for_people_and_machines_carry_their_offset() {
        let t = parse_time("2026-12-01T13:20:29Z").unwrap();
        assert_eq!(format_human(t), "2026-12-01 21:20:29 +08:00");
        assert_eq!(format_rfc3339(t), "2026-12-01T21:20:29+08:00");
        for text in [
            "2026-12-01T21:20:29+08:00",
            "2026-12-01 21:20:29 +08:00",
            "2026-12-01 21:20:29",
            "2026-12-01T13:20:29.000Z",
        ] {
            assert_eq!(parse_time(text), Some(t), "{text}");
        }
        assert_eq!(
            human_from_stored("2026-12-01T13:20:29.000Z"),
            "2026-12-01 21:20:29 +08:00"
        );
        assert_eq!(parse_time("tomorrow"), None);
    }

    #[test]
    fn beijing_round_trip() {
        let t = parse_beijing("2024-03-05 14:22:10").unwrap();
        assert_eq!(t.to_rfc3339(), "2024-03-05T06:22:10+00:00");
        assert_eq!(format_beijing(t), "2024-03-05 14:22:10");
        assert!(parse_beijing("2024-03-05T14:22:10").is_none());
        assert!(parse_beijing("2024-02-30 00:00:00").is_none());
    }
}
