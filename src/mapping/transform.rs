//! Typed transforms and validators, applied in the order a mapping file lists them.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use shuiwu_wire::ids;

use super::value::Value;

/// The kind of value a transform takes or gives; checked when a mapping file is loaded, so a
/// chain like `["decimal", "trim"]` is refused before any document is mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Decimal,
    Integer,
    Bool,
    Code,
    Date,
    Time,
}

/// One step of a field's chain.
#[derive(Debug, Clone)]
pub enum Transform {
    Trim,
    Decimal,
    NonNegative,
    Integer,
    Diameter,
    Flag,
    Code {
        table: String,
        entries: Arc<BTreeMap<String, String>>,
    },
    Date,
    BeijingTime,
    /// An RFC 3339 time with an offset (the power utility's `2024-03-06T09:12:44.120+08:00`).
    Rfc3339,
    ProjectCode,
    CreditCode,
    IdCard,
    Sha256Hex,
}

/// Context a validator needs beyond the value.
#[derive(Debug, Clone, Copy)]
pub struct Context {
    /// Today, Beijing time: a project code's year may not be later.
    pub today: NaiveDate,
}

impl Transform {
    /// Parses a transform name as written in a mapping file (`code:TABLE` names a table).
    pub fn parse(
        name: &str,
        tables: &BTreeMap<String, Arc<BTreeMap<String, String>>>,
    ) -> Result<Transform, String> {
        if let Some(table) = name.strip_prefix("code:") {
            let entries = tables.get(table).ok_or_else(|| {
                format!("transform {name:?} names a code table that the file does not define")
            })?;
            return Ok(Transform::Code {
                table: table.to_string(),
                entries: entries.clone(),
            });
        }
        Ok(match name {
            "trim" => Transform::Trim,
            "decimal" => Transform::Decimal,
            "non_negative" => Transform::NonNegative,
            "integer" => Transform::Integer,
            "diameter" => Transform::Diameter,
            "flag" => Transform::Flag,
            "date" => Transform::Date,
            "beijing_time" => Transform::BeijingTime,
            "rfc3339" => Transform::Rfc3339,
            "project_code" => Transform::ProjectCode,
            "credit_code" => Transform::CreditCode,
            "id_card" => Transform::IdCard,
            "sha256_hex" => Transform::Sha256Hex,
            other => {
                return Err(format!(
                    "unknown transform {other:?} (known: trim, decimal, non_negative, integer, diameter, flag, code:TABLE, date, beijing_time, project_code, credit_code, id_card, sha256_hex, present)"
                ));
            }
        })
    }

    pub fn name(&self) -> String {
        match self {
            Transform::Trim => "trim".into(),
            Transform::Decimal => "decimal".into(),
            Transform::NonNegative => "non_negative".into(),
            Transform::Integer => "integer".into(),
            Transform::Diameter => "diameter".into(),
            Transform::Flag => "flag".into(),
            Transform::Code { table, .. } => format!("code:{table}"),
            Transform::Date => "date".into(),
            Transform::BeijingTime => "beijing_time".into(),
            Transform::Rfc3339 => "rfc3339".into(),
            Transform::ProjectCode => "project_code".into(),
            Transform::CreditCode => "credit_code".into(),
            Transform::IdCard => "id_card".into(),
            Transform::Sha256Hex => "sha256_hex".into(),
        }
    }

    /// The kind this transform accepts and the kind it gives.
    pub fn signature(&self) -> (Kind, Kind) {
        use Kind::*;
        match self {
            Transform::Trim
            | Transform::ProjectCode
            | Transform::CreditCode
            | Transform::IdCard
            | Transform::Sha256Hex => (Text, Text),
            Transform::Decimal => (Text, Decimal),
            Transform::NonNegative => (Decimal, Decimal),
            Transform::Integer | Transform::Diameter => (Text, Integer),
            Transform::Flag => (Text, Bool),
            Transform::Code { .. } => (Text, Code),
            Transform::Date => (Text, Date),
            Transform::BeijingTime | Transform::Rfc3339 => (Text, Time),
        }
    }

    /// Applies the transform. An `Err` names what is wrong with the value.
    pub fn apply(&self, value: Value, ctx: &Context) -> Result<Value, String> {
        // Every transform but one takes text: the value is moved, not copied, through the
        // chain (a project has some fifty fields, each with one to three transforms).
        let text = |v: Value| -> Result<String, String> {
            match v {
                Value::Text(s) => Ok(s),
                other => Err(format!("expected text, found {}", other.display())),
            }
        };
        match self {
            Transform::Trim => {
                let t = text(value)?;
                let trimmed = t.trim();
                Ok(Value::Text(if trimmed.len() == t.len() {
                    t
                } else {
                    trimmed.to_string()
                }))
            }
            Transform::Decimal => {
                let t = text(value)?;
                Decimal::from_str(&t)
                    .map(Value::Decimal)
                    .map_err(|_| format!("{t:?} is not a decimal number"))
            }
            Transform::NonNegative => match value {
                Value::Decimal(d) if d.is_sign_negative() && !d.is_zero() => Err(format!("{d} is negative")),
                Value::Decimal(d) => Ok(Value::Decimal(d)),
                other => Err(format!("expected a decimal, found {}", other.display())),
            },
            Transform::Integer => {
                let t = text(value)?;
                t.parse::<i64>()
                    .map(Value::Integer)
                    .map_err(|_| format!("{t:?} is not an integer"))
            }
            Transform::Diameter => diameter(&text(value)?).map(Value::Integer),
            Transform::Flag => match text(value)?.as_str() {
                "1" => Ok(Value::Bool(true)),
                "0" => Ok(Value::Bool(false)),
                other => Err(format!("{other:?} is not a flag (1 or 0)")),
            },
            Transform::Code { table, entries } => {
                let t = text(value)?;
                match entries.get(&t) {
                    Some(label) => Ok(Value::Code {
                        code: t,
                        label: label.clone(),
                    }),
                    None => Err(format!("{t:?} is not a code of table {table}")),
                }
            }
            Transform::Date => {
                let t = text(value)?;
                NaiveDate::parse_from_str(&t, "%Y-%m-%d")
                    .map(Value::Date)
                    .map_err(|_| format!("{t:?} is not a date yyyy-MM-dd"))
            }
            Transform::Rfc3339 => {
                let t = text(value)?;
                chrono::DateTime::parse_from_rfc3339(&t)
                    .map(|d| Value::Time(d.with_timezone(&chrono::Utc)))
                    .map_err(|_| format!("{t:?} is not an RFC 3339 time with an offset"))
            }
            Transform::BeijingTime => {
                let t = text(value)?;
                shuiwu_wire::parse_beijing(&t)
                    .map(Value::Time)
                    .ok_or_else(|| format!("{t:?} is not a time yyyy-MM-dd HH:mm:ss"))
            }
            Transform::ProjectCode => {
                let t = text(value)?;
                match ids::validate_project_code(&t, ids::year_of(ctx.today)) {
                    Ok(()) => Ok(Value::Text(t)),
                    Err(e) => Err(format!("project code {t:?}: {e}")),
                }
            }
            Transform::CreditCode => {
                let t = text(value)?;
                match ids::validate_credit_code(&t) {
                    Ok(()) => Ok(Value::Text(t)),
                    Err(e) => Err(format!("credit code {t:?}: {e}")),
                }
            }
            Transform::IdCard => {
                let t = text(value)?;
                // The number itself stays out of the message: it is personal data.
                ids::validate_id_card(&t)
                    .map(|()| Value::Text(t))
                    .map_err(|e| format!("identity number: {e}"))
            }
            Transform::Sha256Hex => {
                let mut t = text(value)?;
                if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
                    t.make_ascii_lowercase();
                    Ok(Value::Text(t))
                } else {
                    Err(format!("{t:?} is not a SHA-256 in hex"))
                }
            }
        }
    }
}

/// A connection diameter as a nominal diameter in mm: `DN40`, bare `40` and `Φ40` (records
/// migrated from older systems) all mean DN40.
pub fn diameter(text: &str) -> Result<i64, String> {
    let t = text.trim();
    let digits = t
        .strip_prefix("DN")
        .or_else(|| t.strip_prefix("dn"))
        .or_else(|| t.strip_prefix("Dn"))
        .or_else(|| t.strip_prefix('Φ'))
        .or_else(|| t.strip_prefix('φ'))
        .or_else(|| t.strip_prefix('Ф'))
        .unwrap_or(t)
        .trim();
    match digits.parse::<i64>() {
        Ok(n) if (1..=3000).contains(&n) => Ok(n),
        _ => Err(format!("{text:?} is not a diameter (DN40, 40 or Φ40)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context {
        Context {
            today: NaiveDate::from_ymd_opt(2026, 11, 28).unwrap(),
        }
    }

    #[test]
    fn diameters_in_every_spelling() {
        for s in ["DN40", "40", "Φ40", "φ40", " DN 40 ", "dn40"] {
            assert_eq!(diameter(s), Ok(40), "{s}");
        }
        for s in ["DN四十", "", "DN", "-40", "DN0", "40mm"] {
            assert!(diameter(s).is_err(), "{s}");
        }
    }

    #[test]
    fn decimals_are_exact() {
        let d = Transform::Decimal
            .apply(Value::Text("10000.01".into()), &ctx())
            .unwrap();
        let Value::Decimal(d) = d else { panic!() };
        assert!(d > Decimal::from(10000));
        assert!(
            Transform::Decimal
                .apply(Value::Text("约20米".into()), &ctx())
                .is_err()
        );
        assert!(
            Transform::NonNegative
                .apply(Value::Decimal(Decimal::new(-1205, 1)), &ctx())
                .is_err()
        );
        assert!(
            Transform::NonNegative
                .apply(Value::Decimal(Decimal::ZERO), &ctx())
                .is_ok()
        );
    }

    #[test]
    fn rfc3339_times_need_an_offset() {
        let t = Transform::Rfc3339
            .apply(Value::Text("2024-03-06T09:12:44.120+08:00".into()), &ctx())
            .unwrap();
        assert_eq!(
            t,
            Value::Time(
                chrono::DateTime::parse_from_rfc3339("2024-03-06T01:12:44.120Z")
                    .unwrap()
                    .into()
            )
        );
        assert!(
            Transform::Rfc3339
                .apply(Value::Text("2024-03-06 09:12:44".into()), &ctx())
                .is_err()
        );
    }

    #[test]
    fn identity_errors_do_not_echo_the_number() {
        let err = Transform::IdCard
            .apply(Value::Text("110105194912310021".into()), &ctx())
            .unwrap_err();
        assert!(!err.contains("110105194912310021"), "{err}");
    }
}
