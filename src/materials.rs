//! Zero materials (零材料): which of a record's required items the utility fetched itself, by
//! which licence or attachment and on which day, and why the others are missing; and the one
//! notice (一次性告知) that lists every missing item at once.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::mapping::Facts;

/// A licence as the checklist needs it, read from mapped facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LicenceFact {
    pub number: String,
    pub type_code: String,
    /// `1` valid, `2` revoked, `3` expired.
    pub status: String,
    /// `yyyy-MM-dd` or `长期`.
    pub valid_until: Option<String>,
    pub project_code: Option<String>,
}

/// The licences in a mapped `licences.query` answer.
pub fn licences_from(facts: &Facts) -> Vec<LicenceFact> {
    (0..facts.list_len("licences"))
        .filter_map(|i| {
            let f = |n: &str| format!("licences[{i}].{n}");
            Some(LicenceFact {
                number: facts.text(&f("number"))?,
                type_code: facts.text(&f("type"))?,
                status: facts.text(&f("status"))?,
                valid_until: facts.text(&f("valid_until")),
                project_code: facts.text(&f("project_code")),
            })
        })
        .collect()
}

/// What happened to one attachment the checklist needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachmentCheck {
    /// Downloaded and its content matched the announced SHA-256.
    Fetched {
        id: String,
        kind: String,
        document_sha256: String,
    },
    /// The content never matched its hash, after retries.
    Mismatch { id: String, kind: String },
}

/// Where a satisfied item came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// `licences` or `approval`.
    pub source: String,
    /// The licence number or the attachment id.
    pub reference: String,
    pub document_sha256: String,
}

/// One required item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckItem {
    pub item: String,
    pub label: String,
    pub satisfied: bool,
    pub by: Option<Evidence>,
    /// Why it is missing: `none_found`, `revoked`, `expired`, `other_project`, `hash_mismatch`.
    pub reason: Option<String>,
}

/// A record's checklist, as of one day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checklist {
    pub checked_on: NaiveDate,
    pub items: Vec<CheckItem>,
    /// Every required item was fetched.
    pub zero_materials: bool,
    /// The category promises zero materials (low-risk and general); `None` while a
    /// provisional category leaves it open (the record's decisions say what it waits for).
    pub promised: Option<bool>,
}

impl Checklist {
    pub fn missing(&self) -> impl Iterator<Item = &CheckItem> {
        self.items.iter().filter(|i| !i.satisfied)
    }
}

/// Every item a policy may require, as policy files and commitments name them.
pub const ITEMS: [&str; 6] = [
    "identity",
    "identity_card",
    "right_to_build",
    "premises_right",
    "site_plan",
    "plumbing_design",
];

/// The Chinese name of an item, as the notice prints it.
pub fn label(item: &str) -> &'static str {
    match item {
        "identity" => "营业执照（申请人主体资格）",
        "identity_card" => "居民身份证",
        "right_to_build" => "建设用地规划许可证、建设工程规划许可证或不动产权证书",
        "premises_right" => "不动产权证书",
        "site_plan" => "总平面图",
        "plumbing_design" => "给排水设计图",
        _ => "其他材料",
    }
}

/// The Chinese wording of a missing reason.
pub fn reason_zh(reason: &str) -> &'static str {
    match reason {
        "none_found" => "未查询到",
        "revoked" => "证照已注销",
        "expired" => "证照已过期",
        "other_project" => "证照所属项目与本项目不符",
        "hash_mismatch" => "文件校验不一致",
        _ => "暂未获取",
    }
}

fn valid_on(l: &LicenceFact, day: NaiveDate) -> Result<(), &'static str> {
    if l.status == "2" {
        return Err("revoked");
    }
    if l.status == "3" {
        return Err("expired");
    }
    match l.valid_until.as_deref() {
        Some("长期") | None => Ok(()),
        Some(d) => match NaiveDate::parse_from_str(d, "%Y-%m-%d") {
            Ok(until) if until >= day => Ok(()),
            _ => Err("expired"),
        },
    }
}

/// Evaluates the required items on `day`. `licences` is the holder's answer with the hash of
/// its document; `attachments` what the approval platform's files gave.
pub fn evaluate(
    required: &[String],
    project_code: &str,
    licences: &[LicenceFact],
    licence_document: Option<&str>,
    attachments: &[AttachmentCheck],
    day: NaiveDate,
    promised: Option<bool>,
) -> Checklist {
    let licence_item = |types: &[&str], for_project: bool| -> (Option<Evidence>, Option<String>) {
        let candidates: Vec<&LicenceFact> = licences
            .iter()
            .filter(|l| types.contains(&l.type_code.as_str()))
            .collect();
        // Why this project's own licence does not count (revoked, expired) says more than that
        // some licence of the holder names another project: "another project" only when no
        // licence concerns this one.
        let mut own_reason = None;
        let mut other_project = false;
        for l in &candidates {
            // A licence that names no project counts for every project of its holder.
            if for_project && l.project_code.as_deref().is_some_and(|p| p != project_code) {
                other_project = true;
                continue;
            }
            match valid_on(l, day) {
                Ok(()) => {
                    let evidence = Evidence {
                        source: "licences".into(),
                        reference: l.number.clone(),
                        document_sha256: licence_document.unwrap_or_default().to_string(),
                    };
                    return (Some(evidence), None);
                }
                Err(r) => own_reason = Some(r),
            }
        }
        let reason = own_reason.unwrap_or(if other_project {
            "other_project"
        } else {
            "none_found"
        });
        (None, Some(reason.to_string()))
    };
    let attachment_item = |kind: &str| -> (Option<Evidence>, Option<String>) {
        let mut reason = "none_found";
        for a in attachments {
            match a {
                AttachmentCheck::Fetched {
                    id,
                    kind: k,
                    document_sha256,
                } if k == kind => {
                    let evidence = Evidence {
                        source: "approval".into(),
                        reference: id.clone(),
                        document_sha256: document_sha256.clone(),
                    };
                    return (Some(evidence), None);
                }
                AttachmentCheck::Mismatch { kind: k, .. } if k == kind => reason = "hash_mismatch",
                _ => {}
            }
        }
        (None, Some(reason.to_string()))
    };
    let items: Vec<CheckItem> = required
        .iter()
        .map(|item| {
            let (by, reason) = match item.as_str() {
                "identity" => licence_item(&["YYZZ"], false),
                "identity_card" => licence_item(&["SFZ"], false),
                "right_to_build" => licence_item(&["JSGCGHXKZ", "JSYDGHXKZ", "BDCQZS"], true),
                "premises_right" => licence_item(&["BDCQZS"], true),
                "site_plan" => attachment_item("ZPMT"),
                "plumbing_design" => attachment_item("GPSJ"),
                _ => (None, Some("none_found".to_string())),
            };
            CheckItem {
                item: item.clone(),
                label: label(item).into(),
                satisfied: by.is_some(),
                by,
                reason,
            }
        })
        .collect();
    // Nothing required (no category yet) is not "zero materials reached".
    let zero_materials = !items.is_empty() && items.iter().all(|i| i.satisfied);
    Checklist {
        checked_on: day,
        items,
        zero_materials,
        promised,
    }
}

/// The one-time notice (一次性告知) for the missing items, as printable Chinese text.
/// `about` heads the notice: for a project its name, code and builder; for a household its
/// application and the applicant's name, masked (the notice is stored and shown by the
/// gateway's commands; the letter itself is addressed by the customer manager).
pub fn notice_text(
    about: &[(&str, String)],
    manager: &str,
    missing: &[CheckItem],
    issued_on: NaiveDate,
) -> String {
    let mut text = String::new();
    text.push_str("一次性告知书\n\n");
    for (label, value) in about {
        text.push_str(&format!("{label}：{value}\n"));
    }
    text.push('\n');
    text.push_str("经通过政务数据共享核查，下列材料未能由我集团自行获取，请一次性补齐：\n");
    for (i, m) in missing.iter().enumerate() {
        text.push_str(&format!(
            "  {}. {}（{}）\n",
            i + 1,
            m.label,
            reason_zh(m.reason.as_deref().unwrap_or_default())
        ));
    }
    text.push_str("\n如需先行办理，可申请容缺受理：承诺在接水通水前补齐上述材料。\n");
    text.push_str(&format!(
        "\n昆明自来水集团  客户经理：{manager}\n告知日期：{issued_on}\n"
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lic(kind: &str, status: &str, until: &str, project: Option<&str>) -> LicenceFact {
        LicenceFact {
            number: format!("{kind}-1"),
            type_code: kind.into(),
            status: status.into(),
            valid_until: Some(until.into()),
            project_code: project.map(str::to_string),
        }
    }

    fn day() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 28).unwrap()
    }

    fn required() -> Vec<String> {
        ["identity", "right_to_build", "site_plan"]
            .map(String::from)
            .to_vec()
    }

    #[test]
    fn every_reason_a_licence_does_not_count() {
        let site = [AttachmentCheck::Fetched {
            id: "f1".into(),
            kind: "ZPMT".into(),
            document_sha256: "d".into(),
        }];
        let check = |licences: Vec<LicenceFact>| {
            evaluate(&required(), "P", &licences, Some("doc"), &site, day(), Some(true))
        };
        let ok = check(vec![
            lic("YYZZ", "1", "长期", None),
            lic("JSGCGHXKZ", "1", "2027-01-01", Some("P")),
        ]);
        assert!(ok.zero_materials);
        assert_eq!(ok.items[1].by.as_ref().unwrap().reference, "JSGCGHXKZ-1");
        let reason = |c: Checklist, i: usize| c.items[i].reason.clone().unwrap_or_default();
        assert_eq!(reason(check(vec![lic("YYZZ", "2", "长期", None)]), 0), "revoked");
        assert_eq!(
            reason(check(vec![lic("YYZZ", "1", "2026-11-27", None)]), 0),
            "expired"
        );
        assert_eq!(reason(check(vec![lic("YYZZ", "3", "长期", None)]), 0), "expired");
        assert_eq!(
            reason(check(vec![lic("JSGCGHXKZ", "1", "长期", Some("Q"))]), 1),
            "other_project"
        );
        assert_eq!(reason(check(vec![]), 1), "none_found");
        // This project's own licence, revoked or expired, beside another project's: the
        // applicant is told it is revoked or expired, whatever the order of the answer.
        let own_revoked = lic("JSGCGHXKZ", "2", "长期", Some("P"));
        let other = lic("JSGCGHXKZ", "1", "长期", Some("Q"));
        assert_eq!(
            reason(check(vec![own_revoked.clone(), other.clone()]), 1),
            "revoked"
        );
        assert_eq!(reason(check(vec![other.clone(), own_revoked]), 1), "revoked");
        let own_expired = lic("JSGCGHXKZ", "1", "2026-01-01", Some("P"));
        assert_eq!(reason(check(vec![own_expired, other]), 1), "expired");
        // The day itself still counts as valid.
        assert!(check(vec![lic("YYZZ", "1", "2026-11-28", None)]).items[0].satisfied);
        // A licence naming no project counts for every project of its holder.
        assert!(check(vec![lic("BDCQZS", "1", "长期", None)]).items[1].satisfied);
        let bad = evaluate(
            &required(),
            "P",
            &[],
            None,
            &[AttachmentCheck::Mismatch {
                id: "f".into(),
                kind: "ZPMT".into(),
            }],
            day(),
            Some(true),
        );
        assert_eq!(bad.items[2].reason.as_deref(), Some("hash_mismatch"));
    }

    #[test]
    fn the_notice_lists_every_missing_item_at_once() {
        let c = evaluate(&required(), "P", &[], None, &[], day(), Some(true));
        let missing: Vec<CheckItem> = c.missing().cloned().collect();
        let about = [
            ("项目名称", "某项目".to_string()),
            ("项目代码", "P".to_string()),
            ("建设单位", "某公司".to_string()),
        ];
        let text = notice_text(&about, "TY-01", &missing, day());
        assert!(
            text.contains("项目名称：某项目\n项目代码：P\n建设单位：某公司\n\n"),
            "{text}"
        );
        assert!(
            text.contains("1. 营业执照") && text.contains("2. 建设用地") && text.contains("3. 总平面图"),
            "{text}"
        );
        assert!(text.contains("容缺"));
    }
}
