//! Typed values and their lineage.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// A mapped value. Decimals stay exact (`10000.01` must compare above `10000`), codes keep
/// both the platform's code and its label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Value {
    Bool(bool),
    Integer(i64),
    Decimal(#[serde(with = "rust_decimal::serde::str")] Decimal),
    Code { code: String, label: String },
    Date(NaiveDate),
    Time(#[serde(with = "beijing_text")] DateTime<Utc>),
    Text(String),
}

impl Value {
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            Value::Code { code, .. } => Some(code),
            _ => None,
        }
    }

    /// A short human rendering for tables and traces.
    pub fn display(&self) -> String {
        match self {
            Value::Bool(b) => b.to_string(),
            Value::Integer(i) => i.to_string(),
            Value::Decimal(d) => d.to_string(),
            Value::Code { code, label } => format!("{code} ({label})"),
            Value::Date(d) => d.to_string(),
            Value::Time(t) => shuiwu_wire::format_beijing(*t),
            Value::Text(s) => s.clone(),
        }
    }
}

mod beijing_text {
    use chrono::{DateTime, Utc};
    use serde::Serializer;

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&shuiwu_wire::format_beijing(*t))
    }
}

/// Which kind of personal data a field holds, so every output can mask it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PersonalKind {
    Name,
    Phone,
    IdNumber,
}

/// Where a value came from: the exact bytes and the exact rule.
///
/// The document, the mapping file and the transform chain are the same for many facts (every
/// field of a document, every value of a field), so they are shared rather than copied: a
/// project has some fifty facts, and copying four strings into each was a tenth of a
/// backfill's CPU in the allocator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lineage {
    /// SHA-256 of the raw document the value was read from.
    pub document: Arc<str>,
    /// JSON Pointer into that document.
    pub path: String,
    /// The JSON text found at the path, exactly; `None` when nothing was there.
    pub raw: Option<String>,
    /// Transforms applied, in order.
    pub transforms: Arc<[String]>,
    /// Mapping file (relative name) and the SHA-256 of its content.
    pub mapping: Arc<str>,
    pub mapping_sha256: Arc<str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub personal: Option<PersonalKind>,
}

/// One mapped field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fact {
    /// `None`: the platform did not say (absent, null or empty).
    pub value: Option<Value>,
    pub lineage: Lineage,
}

/// Everything one mapping read from one document, by field name; list items are named
/// `list[index].field`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Facts {
    pub fields: BTreeMap<String, Fact>,
    pub list_lengths: BTreeMap<String, usize>,
}

impl Facts {
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.fields.get(name).and_then(|f| f.value.as_ref())
    }

    pub fn text(&self, name: &str) -> Option<String> {
        self.get(name).and_then(Value::as_text).map(str::to_string)
    }

    pub fn decimal(&self, name: &str) -> Option<Decimal> {
        match self.get(name) {
            Some(Value::Decimal(d)) => Some(*d),
            Some(Value::Integer(i)) => Some(Decimal::from(*i)),
            _ => None,
        }
    }

    pub fn integer(&self, name: &str) -> Option<i64> {
        match self.get(name) {
            Some(Value::Integer(i)) => Some(*i),
            _ => None,
        }
    }

    pub fn bool(&self, name: &str) -> Option<bool> {
        match self.get(name) {
            Some(Value::Bool(b)) => Some(*b),
            _ => None,
        }
    }

    pub fn code(&self, name: &str) -> Option<Code> {
        match self.get(name) {
            Some(Value::Code { code, label }) => Some(Code {
                code: code.clone(),
                label: label.clone(),
            }),
            _ => None,
        }
    }

    pub fn date(&self, name: &str) -> Option<NaiveDate> {
        match self.get(name) {
            Some(Value::Date(d)) => Some(*d),
            _ => None,
        }
    }

    pub fn time(&self, name: &str) -> Option<DateTime<Utc>> {
        match self.get(name) {
            Some(Value::Time(t)) => Some(*t),
            _ => None,
        }
    }

    pub fn list_len(&self, name: &str) -> usize {
        self.list_lengths.get(name).copied().unwrap_or(0)
    }
}

/// A platform code with its label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Code {
    pub code: String,
    pub label: String,
}
