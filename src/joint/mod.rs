//! The joint water+power application (用水用电联合报装) as the water side keeps it: which calls
//! a record change means for the power side, and the delivery of those calls.
//!
//! A call is never made where the change happens. The change's transaction writes the call
//! into the outbox (`store/outbox.rs`) with an idempotency key derived from what the call
//! means, so a replay after a crash writes nothing new and a repeat is harmless on the other
//! side; the delivery worker (`deliver.rs`) sends what the outbox holds, in order per record.

pub mod deliver;
pub mod poll;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use shuiwu_power::{
    Applicant, ApplicantKind, CreateApplication, Origin, PowerNeeds, Site, WaterNeeds, WaterStatus,
};

use crate::stages::Action;

/// The water status an operator's stage event reports to the power side, if it reports one.
pub fn water_status_of(action: &Action) -> Option<WaterStatus> {
    match action {
        Action::Accepted => Some(WaterStatus::Accepted),
        Action::SurveyDone { .. } => Some(WaterStatus::Surveyed),
        Action::Connected => Some(WaterStatus::Connected),
        Action::Rejected { .. } => Some(WaterStatus::Rejected),
        Action::Withdrawn { .. } => Some(WaterStatus::Withdrawn),
        Action::Paused { .. }
        | Action::Resumed
        | Action::ManagerReassigned { .. }
        | Action::Commitment { .. }
        | Action::Superseded { .. } => None,
    }
}

/// The key of the one create a record ever makes: one joint application per project.
pub fn create_key(record_id: &str) -> String {
    bounded(format!("create:{record_id}"))
}

/// The key of linking a power-origin application to a record.
pub fn link_key(application_id: &str, record_id: &str) -> String {
    bounded(format!("link:{application_id}:{record_id}"))
}

/// The key of reporting one water status of a record: a status is reported once.
pub fn status_key(record_id: &str, status: WaterStatus) -> String {
    bounded(format!("ws:{record_id}:{}", status.as_str()))
}

/// Keys are readable where they fit the interface's 64 characters, a hash of the same meaning
/// where they do not.
fn bounded(key: String) -> String {
    if key.len() <= shuiwu_power::client::MAX_KEY_LEN {
        key
    } else {
        format!("h:{}", &hex::encode(Sha256::digest(key.as_bytes()))[..62])
    }
}

/// The create call's body for a record's content (the stored JSON), or why there is none.
/// `submitted_at` is when the water side received the application: the record's creation.
pub fn create_body(
    record_id: &str,
    content: &serde_json::Value,
    submitted_at: DateTime<Utc>,
) -> Result<CreateApplication, String> {
    let text = |v: &serde_json::Value| v.as_str().map(str::to_string).filter(|s| !s.trim().is_empty());
    let number = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.parse::<f64>().ok(),
        other => other.as_f64(),
    };
    let name = text(&content["builder"]["name"]).ok_or("the record names no builder")?;
    let region_code = text(&content["site"]["region_code"]).ok_or("the record has no site region code")?;
    let water = &content["water"];
    Ok(CreateApplication {
        external_id: record_id.to_string(),
        origin: Origin::Water,
        project_code: text(&content["project"]["code"]),
        project_name: text(&content["project"]["name"]),
        applicant: Applicant {
            kind: ApplicantKind::Organisation,
            name,
            credit_code: text(&content["builder"]["credit_code"]),
            contact_name: text(&content["contact"]["name"]),
            contact_phone: text(&content["contact"]["phone"]),
        },
        site: Site {
            region_code,
            address: text(&content["site"]["address"]),
        },
        power: Some(PowerNeeds {
            capacity_kva: number(&content["power"]["capacity_kva"]),
        }),
        water: (!water.is_null()).then(|| WaterNeeds {
            diameter_dn: water["diameter_dn"].as_u64().and_then(|d| u32::try_from(d).ok()),
            use_: text(&water["use"]["label"]).or_else(|| text(&water["use"])),
            daily_m3: number(&water["daily_m3"]),
        }),
        submitted_at: shuiwu_power::wire::to_millis(submitted_at),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_say_what_they_mean_and_fit_the_interface() {
        assert_eq!(
            create_key("PE-2021-530127-80-01-000000"),
            "create:PE-2021-530127-80-01-000000"
        );
        assert_eq!(status_key("PE-1", WaterStatus::Surveyed), "ws:PE-1:SURVEYED");
        let long = link_key(&"A".repeat(40), &"PE-".repeat(20));
        assert_eq!(long.len(), 64);
        assert_eq!(long, link_key(&"A".repeat(40), &"PE-".repeat(20)), "stable");
    }

    #[test]
    fn a_create_body_comes_from_the_record_content() {
        let content = serde_json::json!({
            "project": {"code": "2021-530127-80-01-000000", "name": "厂房"},
            "site": {"region_code": "530127", "address": "昆明市嵩明县某某路98号"},
            "builder": {"name": "昆明盘龙建设有限公司", "credit_code": "91530127NQGWB2TJQM"},
            "contact": {"name": "刘海燕", "phone": "13343155211"},
            "water": {"diameter_dn": 32, "use": {"code": "生产", "label": "生产"}, "daily_m3": "111.0"},
            "power": {"capacity_kva": "1000"}
        });
        let at = shuiwu_power::parse_time("2026-11-02T06:52:47.5+08:00").unwrap();
        let b = create_body("PE-1", &content, at).unwrap();
        assert_eq!(b.external_id, "PE-1");
        assert_eq!(b.power.unwrap().capacity_kva, Some(1000.0));
        assert_eq!(b.water.unwrap().diameter_dn, Some(32));
        assert_eq!(b.applicant.credit_code.as_deref(), Some("91530127NQGWB2TJQM"));
        let mut no_site = content.clone();
        no_site["site"]["region_code"] = serde_json::Value::Null;
        assert!(create_body("PE-1", &no_site, at).is_err());
    }

    #[test]
    fn stage_events_report_water_statuses() {
        assert_eq!(water_status_of(&Action::Accepted), Some(WaterStatus::Accepted));
        assert_eq!(water_status_of(&Action::Resumed), None);
    }
}

#[cfg(test)]
mod mapping_tests {
    use crate::mapping::{Context, Document, MappingSet, Value, apply};

    const EXAMPLE: &str = r#"{"applicationId":"KMGD2024030500123","externalId":"wj-01","origin":"POWER",
        "status":"ACCEPTED","waterStatus":"SURVEYED","version":4,
        "projectCode":"2022-530112-47-01-587143","projectName":"昆明某科技有限公司标准厂房建设项目",
        "applicant":{"kind":"PERSON","name":"李四","creditCode":"110105194912310021",
                     "contactName":"张三","contactPhone":"13800000000"},
        "site":{"regionCode":"530112","address":"昆明市西山区海口街道工业园区3号地块"},
        "power":{"capacityKva":400},"water":{"diameterDn":20,"use":"生活","dailyM3":0.5},
        "submittedAt":"2024-03-05T14:30:00+08:00","updatedAt":"2024-03-06T09:12:44.120+08:00"}"#;

    #[test]
    fn the_power_mapping_reads_the_interface_resource_with_lineage() {
        let set = MappingSet::load(None).unwrap();
        let mapping = set.get("power.application").unwrap();
        let doc: serde_json::Value = serde_json::from_str(EXAMPLE).unwrap();
        let ctx = Context {
            today: chrono::NaiveDate::from_ymd_opt(2026, 12, 1).unwrap(),
        };
        let facts = apply(&mapping, Document::Json(&doc), "sha-of-the-bytes", &ctx).unwrap();
        assert_eq!(facts.text("application.id").as_deref(), Some("KMGD2024030500123"));
        assert_eq!(
            facts.text("application.applicant_kind").as_deref(),
            Some("PERSON")
        );
        assert_eq!(facts.integer("water.diameter_dn"), Some(20));
        assert_eq!(facts.integer("source.version"), Some(4));
        assert_eq!(
            facts.decimal("power.capacity_kva"),
            Some(rust_decimal::Decimal::from(400))
        );
        assert!(matches!(facts.get("source.updated_at"), Some(Value::Time(_))));
        let lineage = &facts.fields["builder.credit_code"].lineage;
        assert_eq!(
            (lineage.path.as_str(), lineage.raw.as_deref()),
            ("/applicant/creditCode", Some("110105194912310021"))
        );
        assert_eq!(&*lineage.document, "sha-of-the-bytes");
        assert!(lineage.personal.is_some(), "an identity number is personal data");
        // A household's application without a project code maps too.
        let mut household = doc.clone();
        household.as_object_mut().unwrap().remove("projectCode");
        let facts = apply(&mapping, Document::Json(&household), "sha", &ctx).unwrap();
        assert_eq!(facts.text("project.code"), None);
    }
}
