//! Wire types of the data-sharing interface: the envelope and the listing.
//!
//! Project details are not given a Rust type here on purpose: the adapter knows the wire, not
//! the domain, and a detail travels on as a raw document to the mapping engine.

use serde::Deserialize;
use serde_json::Value;

/// `{"code", "msg", "data", "requestId"}`, around every JSON response (`data` is read from the
/// parsed body, not copied here).
#[derive(Debug, Clone, Deserialize)]
pub struct Envelope {
    pub code: String,
    #[serde(default)]
    pub msg: String,
    #[serde(rename = "requestId", default)]
    pub request_id: Option<String>,
}

/// One listing page. Items are kept as they came and parsed one by one, so that one malformed
/// summary is held as a failure instead of failing the page.
#[derive(Debug, Clone, Deserialize)]
pub struct ListPage {
    pub total: u64,
    #[serde(rename = "pageNo", default)]
    pub page_no: u64,
    #[serde(rename = "pageSize", default)]
    pub page_size: u64,
    #[serde(default)]
    pub list: Vec<Value>,
}

/// A project summary in a listing: enough to decide whether its detail is needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub xmdm: String,
    pub bbh: u64,
    pub gxsj: String,
    pub zt: String,
}

impl Summary {
    /// Reads a listing item; `BBH` may arrive as a number or as decimal text.
    pub fn from_value(item: &Value) -> Result<Summary, String> {
        let text = |name: &str| -> Result<String, String> {
            match item.get(name) {
                Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_string()),
                Some(other) if !other.is_null() && !other.is_string() => Ok(other.to_string()),
                _ => Err(format!("listing item lacks {name}")),
            }
        };
        let xmdm = text("XMDM")?;
        let bbh = text("BBH")?
            .parse::<u64>()
            .map_err(|_| format!("listing item {xmdm}: BBH is not a non-negative integer"))?;
        let gxsj = text("GXSJ")?;
        let zt = text("ZT").unwrap_or_default();
        Ok(Summary { xmdm, bbh, gxsj, zt })
    }
}
