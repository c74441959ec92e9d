//! A record from the approval platform's project detail: the project's facts, table B.

use super::*;

/// The record id of an approval-platform project.
pub fn record_id(project_code: &str) -> String {
    format!("PE-{project_code}")
}

/// Builds a record from the facts of one project detail.
pub fn assemble(facts: Facts, document_sha256: &str) -> Result<Assembled, AssembleError> {
    let need_text = |name: &str| {
        facts
            .text(name)
            .ok_or_else(|| AssembleError::Missing(name.into()))
    };
    let region = need_text("site.region_code")?;
    let district = match district_of(&region) {
        Ok(d) => d,
        Err(why) => return Ok(Assembled::Skip(why)),
    };
    let code = need_text("project.code")?;
    let status = match facts.text("project.status").as_deref() {
        Some("0") => RecordState::Withdrawn,
        _ => RecordState::Active,
    };
    let water = facts
        .bool("water.requested")
        .unwrap_or(false)
        .then(|| WaterRequest {
            diameter_dn: facts.integer("water.diameter_dn"),
            use_: facts.code("water.use"),
            daily_m3: facts.decimal("water.daily_m3"),
            external_pipe_m: facts.decimal("water.external_pipe_m"),
        });
    let power = facts
        .bool("power.requested")
        .unwrap_or(false)
        .then(|| PowerRequest {
            capacity_kva: facts.decimal("power.capacity_kva"),
        });
    let approvals = (0..facts.list_len("approvals"))
        .map(|i| {
            let f = |n: &str| format!("approvals[{i}].{n}");
            ApprovalResult {
                title: facts.text(&f("title")),
                document_no: facts.text(&f("document_no")),
                issued_on: facts.date(&f("issued_on")),
                licence_no: facts.text(&f("licence_no")),
                licence_type: facts.text(&f("licence_type")),
            }
        })
        .collect();
    let mut attachments = Vec::new();
    for i in 0..facts.list_len("attachments") {
        let f = |n: &str| format!("attachments[{i}].{n}");
        attachments.push(Attachment {
            id: facts
                .text(&f("id"))
                .ok_or_else(|| AssembleError::Missing(f("id")))?,
            file_name: facts.text(&f("file_name")),
            kind: facts
                .code(&f("kind"))
                .ok_or_else(|| AssembleError::Missing(f("kind")))?,
            size_bytes: facts.integer(&f("size_bytes")),
            sha256: facts.text(&f("sha256")),
        });
    }
    let record = PreEngagementRecord {
        project: Project {
            code: Some(code.clone()),
            name: Some(need_text("project.name")?),
            kind: facts.code("project.kind"),
            nature: facts.code("project.nature"),
            building_use: facts.code("project.building_use"),
            authorisation: facts.code("project.authorisation"),
            authority_region: facts.text("project.authority_region"),
            approval_stage: facts.code("project.approval_stage"),
            status,
        },
        site: Site {
            region_code: region,
            district: district.to_string(),
            address: facts.text("site.address"),
        },
        builder: Builder {
            name: need_text("builder.name")?,
            credit_code: need_text("builder.credit_code")?,
        },
        contact: Contact {
            name: facts.text("contact.name"),
            phone: facts.text("contact.phone"),
        },
        building: Building {
            floor_area_m2: facts.decimal("building.floor_area_m2"),
            height_m: facts.decimal("building.height_m"),
            hazardous_goods: facts.bool("building.hazardous_goods"),
            platform_low_risk: facts.bool("building.platform_low_risk"),
        },
        water,
        power,
        approvals,
        attachments,
        survey: None,
        decisions: None,
        progress: None,
        application: None,
        source: SourceVersion::from_facts(&facts, "approval", &code, document_sha256)?,
    };
    Ok(Assembled::Record(Box::new(Draft {
        id: record_id(&code),
        record,
        lineage: lineage_of(facts),
    })))
}
