//! The joint application resource and the bodies of the calls, as the power side writes them.
//!
//! Field names are the interface's (camelCase); unknown fields in answers are ignored, so a
//! power side that adds a field does not break the exchange. Times are RFC 3339 with an
//! offset and millisecond precision (a `.000` part omitted, as the power side writes them).

use chrono::{DateTime, FixedOffset, Timelike, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Who started the joint application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Origin {
    Water,
    Power,
}

/// The power side's own progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PowerStatus {
    Submitted,
    Accepted,
    Surveyed,
    Constructing,
    Connected,
    Rejected,
    Withdrawn,
}

impl PowerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PowerStatus::Submitted => "SUBMITTED",
            PowerStatus::Accepted => "ACCEPTED",
            PowerStatus::Surveyed => "SURVEYED",
            PowerStatus::Constructing => "CONSTRUCTING",
            PowerStatus::Connected => "CONNECTED",
            PowerStatus::Rejected => "REJECTED",
            PowerStatus::Withdrawn => "WITHDRAWN",
        }
    }
}

/// The last status the water side reported on the shared application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WaterStatus {
    Received,
    Accepted,
    Surveyed,
    Connected,
    Rejected,
    Withdrawn,
}

impl WaterStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            WaterStatus::Received => "RECEIVED",
            WaterStatus::Accepted => "ACCEPTED",
            WaterStatus::Surveyed => "SURVEYED",
            WaterStatus::Connected => "CONNECTED",
            WaterStatus::Rejected => "REJECTED",
            WaterStatus::Withdrawn => "WITHDRAWN",
        }
    }

    pub fn parse(s: &str) -> Option<WaterStatus> {
        [
            WaterStatus::Received,
            WaterStatus::Accepted,
            WaterStatus::Surveyed,
            WaterStatus::Connected,
            WaterStatus::Rejected,
            WaterStatus::Withdrawn,
        ]
        .into_iter()
        .find(|w| w.as_str() == s)
    }

    /// No move leads out of a final status.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            WaterStatus::Connected | WaterStatus::Rejected | WaterStatus::Withdrawn
        )
    }

    /// Position on the forward path `RECEIVED → ACCEPTED → SURVEYED → CONNECTED`.
    fn step(self) -> Option<u8> {
        match self {
            WaterStatus::Received => Some(0),
            WaterStatus::Accepted => Some(1),
            WaterStatus::Surveyed => Some(2),
            WaterStatus::Connected => Some(3),
            WaterStatus::Rejected | WaterStatus::Withdrawn => None,
        }
    }

    /// Whether the interface allows reporting `self` on an application whose water status is
    /// `from` (`None`: the water side never reported). Forward along the path, skipping ahead
    /// allowed; to `REJECTED` or `WITHDRAWN` from any status that is not final; nothing out
    /// of a final status, nothing backwards. Reporting the status it already has is a no-op
    /// and is not a move: callers check that first.
    pub fn may_follow(self, from: Option<WaterStatus>) -> bool {
        let Some(from) = from else { return true };
        if from.is_final() {
            return false;
        }
        match (from.step(), self.step()) {
            (_, None) => true,
            (Some(a), Some(b)) => b > a,
            (None, Some(_)) => false,
        }
    }
}

/// `ORGANISATION`: `creditCode` is a unified social credit code; `PERSON`: it holds the
/// person's resident identity number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ApplicantKind {
    Organisation,
    Person,
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Applicant {
    pub kind: ApplicantKind,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credit_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_phone: Option<String>,
}

impl std::fmt::Debug for Applicant {
    /// A person's name, identity number and phone are personal data: a debug dump (an error
    /// message, a log line) shows only what kind of applicant it is.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Applicant")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Site {
    pub region_code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PowerNeeds {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_kva: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WaterNeeds {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diameter_dn: Option<u32>,
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
    #[serde(default, rename = "dailyM3", skip_serializing_if = "Option::is_none")]
    pub daily_m3: Option<f64>,
}

/// A joint application as the power side holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Application {
    pub application_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    pub origin: Origin,
    pub status: PowerStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub water_status: Option<WaterStatus>,
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_name: Option<String>,
    pub applicant: Applicant,
    pub site: Site,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power: Option<PowerNeeds>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub water: Option<WaterNeeds>,
    #[serde(with = "rfc3339")]
    pub submitted_at: DateTime<Utc>,
    #[serde(with = "rfc3339")]
    pub updated_at: DateTime<Utc>,
}

/// The body of a create (water → power).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateApplication {
    pub external_id: String,
    pub origin: Origin,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_name: Option<String>,
    pub applicant: Applicant,
    pub site: Site,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power: Option<PowerNeeds>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub water: Option<WaterNeeds>,
    #[serde(with = "rfc3339")]
    pub submitted_at: DateTime<Utc>,
}

/// The body of a `water-status` call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WaterStatusReport {
    pub water_status: WaterStatus,
    #[serde(with = "rfc3339")]
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One page of the change listing. An item that is not an application the interface
/// describes does not make the page unreadable: it is kept as it came, for the water side to
/// hold with its reason, and the other items of the page are read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListPage {
    pub items: Vec<ListItem>,
    pub next_cursor: Option<String>,
}

/// One item of a listing page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ListItem {
    Application(Box<Application>),
    Unreadable(serde_json::Value),
}

/// A listing item that is not an application: what it was and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Unreadable {
    pub value: serde_json::Value,
    pub reason: String,
}

impl Unreadable {
    /// The application id, version and change time the item gives, as far as it gives them.
    pub fn application_id(&self) -> Option<&str> {
        self.value["applicationId"].as_str()
    }

    pub fn version(&self) -> Option<i64> {
        self.value["version"].as_i64()
    }

    pub fn updated_at(&self) -> Option<DateTime<Utc>> {
        self.value["updatedAt"].as_str().and_then(parse_time)
    }
}

impl ListPage {
    /// The page's applications, and the items that are not ones with the reason.
    pub fn split(self) -> (Vec<Application>, Vec<Unreadable>) {
        let mut apps = Vec::with_capacity(self.items.len());
        let mut unreadable = Vec::new();
        for item in self.items {
            match item {
                ListItem::Application(a) => apps.push(*a),
                ListItem::Unreadable(value) => {
                    let reason = match serde_json::from_value::<Application>(value.clone()) {
                        Err(e) => e.to_string(),
                        Ok(_) => "not an application".to_string(),
                    };
                    unreadable.push(Unreadable { value, reason });
                }
            }
        }
        (apps, unreadable)
    }
}

/// An instant as the interface writes it: Beijing time's offset, milliseconds, and no
/// fraction at all when the milliseconds are zero (`2024-03-06T09:12:44+08:00`,
/// `2024-03-06T09:12:44.120+08:00`). Anything below a millisecond is dropped.
pub fn format_time(t: DateTime<Utc>) -> String {
    let local = t.with_timezone(&beijing_offset());
    if local.nanosecond() / 1_000_000 == 0 {
        local.format("%Y-%m-%dT%H:%M:%S%:z").to_string()
    } else {
        local.format("%Y-%m-%dT%H:%M:%S%.3f%:z").to_string()
    }
}

/// Reads an RFC 3339 time with any offset.
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Truncates to the millisecond, the interface's precision.
pub fn to_millis(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

fn beijing_offset() -> FixedOffset {
    // UTC+8 is a valid offset (well under a day).
    FixedOffset::east_opt(8 * 3600).expect("UTC+8 is in range")
}

mod rfc3339 {
    use super::*;

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_time(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(d)?;
        parse_time(&text).ok_or_else(|| {
            serde::de::Error::custom(format!("{text:?} is not an RFC 3339 time with an offset"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_have_milliseconds_and_drop_a_zero_fraction() {
        let t = parse_time("2024-03-06T09:12:44+08:00").unwrap();
        assert_eq!(format_time(t), "2024-03-06T09:12:44+08:00");
        let t = parse_time("2024-03-06T01:12:44.12Z").unwrap();
        assert_eq!(format_time(t), "2024-03-06T09:12:44.120+08:00");
        let t = parse_time("2024-03-06T09:12:44.1239+08:00").unwrap();
        assert_eq!(format_time(t), "2024-03-06T09:12:44.123+08:00");
        assert_eq!(parse_time("2024-03-06 09:12:44"), None);
    }

    #[test]
    fn water_status_moves_follow_the_interface() {
        use WaterStatus::*;
        assert!(Accepted.may_follow(Some(Received)));
        assert!(Connected.may_follow(Some(Accepted)), "skipping ahead");
        assert!(!Accepted.may_follow(Some(Surveyed)), "backwards");
        assert!(Rejected.may_follow(Some(Surveyed)));
        assert!(Withdrawn.may_follow(Some(Received)));
        for last in [Connected, Rejected, Withdrawn] {
            for next in [Received, Accepted, Surveyed, Connected, Rejected, Withdrawn] {
                assert!(!next.may_follow(Some(last)), "{last:?} → {next:?}");
            }
        }
        assert!(
            Connected.may_follow(None),
            "first report on a power-origin application"
        );
        assert!(
            !Received.may_follow(Some(Received)),
            "the same status is a no-op, not a move"
        );
    }

    #[test]
    fn the_example_resource_reads() {
        let text = r#"{"applicationId":"KMGD2024030500123","externalId":"wj-01","origin":"WATER",
            "status":"ACCEPTED","waterStatus":"SURVEYED","version":4,
            "projectCode":"2022-530112-47-01-587143","projectName":"厂房",
            "applicant":{"kind":"ORGANISATION","name":"昆明某科技有限公司","creditCode":"91530112MA6NXXXX0X",
                         "contactName":"张三","contactPhone":"13800000000"},
            "site":{"regionCode":"530112","address":"昆明市西山区"},
            "power":{"capacityKva":400},"water":{"diameterDn":40,"use":"生产","dailyM3":25.0},
            "submittedAt":"2024-03-05T14:30:00+08:00","updatedAt":"2024-03-06T09:12:44+08:00",
            "somethingNew":true}"#;
        let a: Application = serde_json::from_str(text).unwrap();
        assert_eq!(a.version, 4);
        assert_eq!(a.water_status, Some(WaterStatus::Surveyed));
        assert_eq!(a.water.as_ref().and_then(|w| w.diameter_dn), Some(40));
        assert!(
            !format!("{a:?}").contains("13800000000"),
            "personal data in a debug dump"
        );
        let again: Application = serde_json::from_value(serde_json::to_value(&a).unwrap()).unwrap();
        assert_eq!(again, a);
    }
}
