//! Working days in China: Monday to Friday, less the State Council's public holidays, plus the
//! weekend days it declares working days (调休).
//!
//! The schedule is published once a year, so each year is a data file
//! (`mappings/calendars/YYYY.toml`). A date in a year without a file is an error — never a
//! silent Monday-to-Friday guess — and [`Calendar::coverage_warning`] says so loudly at
//! start-up and in `gateway health` before a deadline can run into it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use chrono::{Datelike, Days, NaiveDate, Weekday};
use serde::Deserialize;
use toml::Spanned;

use crate::datafiles::{self, line_of};

/// The calendar cannot answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalendarError {
    #[error("no holiday calendar for {0}: add mappings/calendars/{0}.toml with the State Council's schedule")]
    MissingYear(i32),
    #[error("{file}:{line}: {message}")]
    Invalid {
        file: String,
        line: usize,
        message: String,
    },
    #[error("{0}")]
    Read(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct YearFile {
    year: Spanned<i32>,
    #[serde(default, rename = "holiday")]
    holidays: Vec<HolidaySpec>,
    #[serde(default, rename = "working_day")]
    working_days: Vec<WorkingDaySpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HolidaySpec {
    name: String,
    from: Spanned<String>,
    to: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkingDaySpec {
    date: Spanned<String>,
    #[serde(rename = "for")]
    for_: String,
}

/// One year's exceptions to Monday-to-Friday.
#[derive(Debug, Clone, Default)]
struct Year {
    /// Days off, with the holiday's name.
    holidays: BTreeMap<NaiveDate, String>,
    /// Weekend days that are working days, with the holiday they make up for.
    working: BTreeMap<NaiveDate, String>,
    file: String,
}

/// The holiday calendars in force.
#[derive(Debug, Clone, Default)]
pub struct Calendar {
    years: BTreeMap<i32, Year>,
}

/// Why a day is or is not a working day.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DayKind {
    pub date: NaiveDate,
    pub working: bool,
    pub reason: String,
}

impl Calendar {
    /// The embedded calendars, overridden and extended from `dir`.
    pub fn load(dir: Option<&Path>) -> Result<Calendar, CalendarError> {
        let files = datafiles::load(dir).map_err(|e| CalendarError::Read(e.to_string()))?;
        let mut calendar = Calendar::default();
        for (file, content) in files.iter().filter(|(f, _)| f.starts_with("calendars/")) {
            calendar.add(file, content)?;
        }
        Ok(calendar)
    }

    /// Parses and validates one year file.
    pub fn add(&mut self, file: &str, content: &str) -> Result<(), CalendarError> {
        let invalid = |span: Option<std::ops::Range<usize>>, message: String| CalendarError::Invalid {
            file: file.to_string(),
            line: span.map_or(1, |s| line_of(content, s.start)),
            message,
        };
        let spec: YearFile =
            toml::from_str(content).map_err(|e| invalid(e.span(), e.message().to_string()))?;
        let year = *spec.year.get_ref();
        let stem = Path::new(file)
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        if stem != year.to_string() {
            return Err(invalid(
                Some(spec.year.span()),
                format!("year {year} in a file named {stem}"),
            ));
        }
        if self.years.contains_key(&year) {
            return Err(invalid(
                Some(spec.year.span()),
                format!("year {year} is defined twice"),
            ));
        }
        let date = |s: &Spanned<String>| -> Result<NaiveDate, CalendarError> {
            let d = NaiveDate::parse_from_str(s.get_ref(), "%Y-%m-%d").map_err(|_| {
                invalid(
                    Some(s.span()),
                    format!("{:?} is not a date yyyy-MM-dd", s.get_ref()),
                )
            })?;
            if d.year() != year {
                return Err(invalid(Some(s.span()), format!("{d} is not in {year}")));
            }
            Ok(d)
        };
        let mut y = Year {
            file: file.to_string(),
            ..Year::default()
        };
        for h in &spec.holidays {
            let (from, to) = (date(&h.from)?, date(&h.to)?);
            if from > to {
                return Err(invalid(
                    Some(h.to.span()),
                    format!("holiday {} ends before it starts", h.name),
                ));
            }
            let mut d = from;
            while d <= to {
                if y.holidays.insert(d, h.name.clone()).is_some() {
                    return Err(invalid(Some(h.from.span()), format!("{d} is in two holidays")));
                }
                d = d
                    .checked_add_days(Days::new(1))
                    .ok_or_else(|| invalid(None, "date overflow".into()))?;
            }
        }
        for w in &spec.working_days {
            let d = date(&w.date)?;
            if !is_weekend(d) {
                return Err(invalid(
                    Some(w.date.span()),
                    format!(
                        "{d} is a {:?}: only a weekend day can be declared a working day",
                        d.weekday()
                    ),
                ));
            }
            if y.holidays.contains_key(&d) {
                return Err(invalid(
                    Some(w.date.span()),
                    format!("{d} is both a holiday and a working day"),
                ));
            }
            y.working.insert(d, w.for_.clone());
        }
        self.years.insert(year, y);
        Ok(())
    }

    /// The years that have a calendar.
    pub fn years(&self) -> impl Iterator<Item = i32> + '_ {
        self.years.keys().copied()
    }

    /// Whether `date` is a working day, and why.
    pub fn day(&self, date: NaiveDate) -> Result<DayKind, CalendarError> {
        let y = self
            .years
            .get(&date.year())
            .ok_or(CalendarError::MissingYear(date.year()))?;
        let (working, reason) = if let Some(name) = y.holidays.get(&date) {
            (false, format!("public holiday: {name} ({})", y.file))
        } else if let Some(name) = y.working.get(&date) {
            (
                true,
                format!("weekend day declared a working day for {name} (调休, {})", y.file),
            )
        } else if is_weekend(date) {
            (false, "weekend".to_string())
        } else {
            (true, "weekday".to_string())
        };
        Ok(DayKind {
            date,
            working,
            reason,
        })
    }

    pub fn is_workday(&self, date: NaiveDate) -> Result<bool, CalendarError> {
        self.day(date).map(|d| d.working)
    }

    /// A warning when `today`'s year has no calendar, or when the next year has none and
    /// deadlines started now could run into it (from 1 October on: the longest limit of the
    /// policy is 8 working days, and pauses extend it).
    pub fn coverage_warning(&self, today: NaiveDate) -> Option<String> {
        let missing: BTreeSet<i32> = [today.year()]
            .into_iter()
            .chain((today.month() >= 10).then_some(today.year() + 1))
            .filter(|y| !self.years.contains_key(y))
            .collect();
        if missing.is_empty() {
            return None;
        }
        let list: Vec<String> = missing.iter().map(|y| y.to_string()).collect();
        Some(format!(
            "NO HOLIDAY CALENDAR for {}: deadlines that reach into it cannot be computed and will fail. Add mappings/calendars/YEAR.toml from the State Council's notice (usually published in November or December).",
            list.join(", ")
        ))
    }
}

fn is_weekend(d: NaiveDate) -> bool {
    matches!(d.weekday(), Weekday::Sat | Weekday::Sun)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn embedded_years_load() {
        let c = Calendar::load(None).unwrap();
        assert_eq!(c.years().collect::<Vec<_>>(), [2022, 2023, 2024, 2025, 2026]);
        // Spring Festival 2024 and its two working Sundays.
        assert!(!c.is_workday(d("2024-02-12")).unwrap());
        assert!(c.is_workday(d("2024-02-04")).unwrap());
        assert!(c.is_workday(d("2024-02-18")).unwrap());
        assert!(
            c.is_workday(d("2024-02-09")).unwrap(),
            "除夕 2024 is a working Friday"
        );
        // National Day 2023 runs into 8 October, a working Sunday.
        assert!(!c.is_workday(d("2023-10-06")).unwrap());
        assert!(c.is_workday(d("2023-10-08")).unwrap());
        assert!(!c.is_workday(d("2026-01-02")).unwrap());
        assert!(c.is_workday(d("2026-01-04")).unwrap());
        assert!(!c.is_workday(d("2026-11-28")).unwrap(), "a plain Saturday");
        assert_eq!(
            c.is_workday(d("2027-01-04")),
            Err(CalendarError::MissingYear(2027))
        );
    }

    #[test]
    fn warns_about_missing_years() {
        let c = Calendar::load(None).unwrap();
        assert!(c.coverage_warning(d("2026-06-01")).is_none());
        assert!(c.coverage_warning(d("2026-11-28")).unwrap().contains("2027"));
        assert!(c.coverage_warning(d("2028-01-01")).unwrap().contains("2028"));
    }

    #[test]
    fn bad_files_name_the_line() {
        let mut c = Calendar::default();
        let text = "year = 2026\n\n[[working_day]]\ndate = \"2026-01-05\"\nfor = \"元旦\"\n";
        let e = c.add("calendars/2026.toml", text).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("calendars/2026.toml:4: 2026-01-05 is a Mon"),
            "{e}"
        );
        let text = "year = 2026\n[[holiday]]\nname = \"x\"\nfrom = \"2026-01-03\"\nto = \"2026-01-01\"\n";
        let e = c.add("calendars/2026.toml", text).unwrap_err();
        assert!(e.to_string().starts_with("calendars/2026.toml:5: "), "{e}");
        let e = c.add("calendars/2025.toml", "year = 2026\n").unwrap_err();
        assert!(e.to_string().contains("file named 2025"), "{e}");
        let text = "year = 2026\n[[holiday]]\nname = \"x\"\nfrom = \"2025-12-31\"\nto = \"2026-01-01\"\n";
        let e = c.add("calendars/2026.toml", text).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("calendars/2026.toml:4: 2025-12-31 is not in 2026"),
            "{e}"
        );
    }
}
