//! A record from an application made on the power utility's platform (origin `POWER`) that no
//! approval-platform record takes: a household's connection, or a company's application
//! waiting for the platform data that decides its category. Table A applies.

use shuiwu_wire::ids::{validate_credit_code, validate_id_card};

use super::*;

/// The record id of a power-origin application: the power side's id, which never changes and
/// never collides with a project code (`PE-…`).
pub fn power_record_id(application_id: &str) -> String {
    format!("PW-{application_id}")
}

/// Builds a record from the facts of one power-side application resource.
pub fn assemble_power(facts: Facts, document_sha256: &str) -> Result<Assembled, AssembleError> {
    let need_text = |name: &str| {
        facts
            .text(name)
            .ok_or_else(|| AssembleError::Missing(name.into()))
    };
    let need_code = |name: &str| {
        facts
            .code(name)
            .ok_or_else(|| AssembleError::Missing(name.into()))
    };
    let region = need_text("site.region_code")?;
    let district = match district_of(&region) {
        Ok(d) => d,
        Err(why) => return Ok(Assembled::Skip(why)),
    };
    let id = need_text("application.id")?;
    let kind = need_code("application.applicant_kind")?;
    // The interface carries a company's credit code and a person's identity number in one
    // field: which one it must be follows from the applicant's kind.
    let credit_code = need_text("builder.credit_code")?;
    let checked = match kind.code.as_str() {
        "PERSON" => {
            validate_id_card(&credit_code).map_err(|e| format!("not a valid 居民身份证号 for a person: {e}"))
        }
        _ => validate_credit_code(&credit_code)
            .map_err(|e| format!("not a valid 统一社会信用代码 for an organisation: {e}")),
    };
    if let Err(reason) = checked {
        return Err(AssembleError::Invalid {
            field: "builder.credit_code".into(),
            reason,
        });
    }
    let water = facts
        .bool("water.requested")
        .unwrap_or(false)
        .then(|| WaterRequest {
            diameter_dn: facts.integer("water.diameter_dn"),
            use_: facts.code("water.use"),
            daily_m3: facts.decimal("water.daily_m3"),
            external_pipe_m: None,
        });
    let record = PreEngagementRecord {
        project: Project {
            code: facts.text("project.code"),
            name: facts.text("project.name"),
            kind: None,
            nature: None,
            building_use: None,
            authorisation: None,
            authority_region: None,
            approval_stage: None,
            status: RecordState::Active,
        },
        site: Site {
            region_code: region,
            district: district.to_string(),
            address: facts.text("site.address"),
        },
        builder: Builder {
            name: need_text("builder.name")?,
            credit_code,
        },
        contact: Contact {
            name: facts.text("contact.name"),
            phone: facts.text("contact.phone"),
        },
        building: Building {
            floor_area_m2: None,
            height_m: None,
            hazardous_goods: None,
            platform_low_risk: None,
        },
        water,
        // It is a power application: the joint exchange is what it is for.
        power: Some(PowerRequest {
            capacity_kva: facts.decimal("power.capacity_kva"),
        }),
        approvals: Vec::new(),
        attachments: Vec::new(),
        survey: None,
        decisions: None,
        progress: None,
        application: Some(PowerOriginApplication {
            id: id.clone(),
            status: need_code("application.status")?,
            water_status: facts.code("application.water_status"),
            submitted_at: facts
                .time("application.submitted_at")
                .ok_or_else(|| AssembleError::Missing("application.submitted_at".into()))?,
            applicant_kind: kind,
        }),
        source: SourceVersion::from_facts(&facts, "power", &id, document_sha256)?,
    };
    Ok(Assembled::Record(Box::new(Draft {
        id: power_record_id(&id),
        record,
        lineage: lineage_of(facts),
    })))
}
