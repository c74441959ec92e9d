//! `gateway outbox` and `gateway power`: the calls to the power side and the joint
//! applications, for operators. Personal data in call bodies is masked.

use std::process::ExitCode;

use anyhow::{Context as _, bail};
use chrono::Utc;
use shuiwu_wire::format_human;

use super::table;
use crate::mask;
use crate::store::{OutboxCall, Store};

/// A call's body with the applicant's contact and a person's identity number masked.
fn masked_body(call: &OutboxCall) -> serde_json::Value {
    let mut body: serde_json::Value = serde_json::from_str(&call.body).unwrap_or(serde_json::Value::Null);
    if let Some(applicant) = body.get_mut("applicant").filter(|a| a.is_object()) {
        let person = applicant["kind"] == "PERSON";
        for (field, kind) in [
            ("contactName", mask::name as fn(&str) -> String),
            ("contactPhone", mask::phone),
        ] {
            if let Some(v) = applicant[field].as_str().map(kind) {
                applicant[field] = v.into();
            }
        }
        if person {
            if let Some(v) = applicant["name"].as_str().map(mask::name) {
                applicant["name"] = v.into();
            }
            if let Some(v) = applicant["creditCode"].as_str().map(mask::id_number) {
                applicant["creditCode"] = v.into();
            }
        }
    }
    body
}

pub(super) fn call_json(call: &OutboxCall) -> serde_json::Value {
    let mut v = serde_json::to_value(call).unwrap_or_default();
    v["body"] = masked_body(call);
    v
}

pub fn outbox_list(store: &Store, state: Option<&str>, limit: usize, json: bool) -> anyhow::Result<ExitCode> {
    let (calls, total) = store.outbox(state, limit)?;
    if json {
        let value: Vec<_> = calls.iter().map(call_json).collect();
        outln!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(ExitCode::SUCCESS);
    }
    table::print(
        &[
            "id",
            "state",
            "record",
            "call",
            "application",
            "attempts",
            "next / done",
            "outcome or error",
        ],
        &calls
            .iter()
            .map(|c| {
                vec![
                    c.id.to_string(),
                    c.state.clone(),
                    c.record_id.clone(),
                    c.kind.as_str().to_string(),
                    c.application_id.clone().unwrap_or_else(|| "-".into()),
                    c.attempts.to_string(),
                    format_human(c.done_at.unwrap_or(c.next_attempt_at)),
                    c.outcome
                        .clone()
                        .or_else(|| c.last_error.clone())
                        .unwrap_or_else(|| "-".into()),
                ]
            })
            .collect::<Vec<_>>(),
    );
    outln!("{} of {total} calls shown", calls.len());
    Ok(ExitCode::SUCCESS)
}

pub fn outbox_show(store: &Store, id: i64, json: bool) -> anyhow::Result<ExitCode> {
    let Some(call) = store.outbox_call(id)? else {
        bail!("no outbox call {id} (see `gateway outbox list`)");
    };
    if json {
        outln!("{}", serde_json::to_string_pretty(&call_json(&call))?);
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "outbox call {}: {} of {} ({})",
        call.id,
        call.kind.as_str(),
        call.record_id,
        call.state
    );
    outln!("  idempotency key {}", call.idempotency_key);
    if let Some(a) = &call.application_id {
        outln!("  application {a}");
    }
    outln!(
        "  planned {}, attempts {}",
        format_human(call.created_at),
        call.attempts
    );
    match (&call.done_at, call.state.as_str()) {
        (Some(t), _) => outln!(
            "  done {}: {}",
            format_human(*t),
            call.outcome.as_deref().unwrap_or("-")
        ),
        (None, "pending") => outln!("  next attempt {}", format_human(call.next_attempt_at)),
        _ => {}
    }
    if let Some(e) = &call.last_error {
        outln!("  last error: {e}");
    }
    if let Some(sha) = &call.answer_sha256 {
        outln!("  answer kept as raw document {sha}");
    }
    outln!("  body {}", serde_json::to_string_pretty(&masked_body(&call))?);
    Ok(ExitCode::SUCCESS)
}

pub fn outbox_retry(store: &Store, id: i64, by: &str) -> anyhow::Result<ExitCode> {
    if by.trim().is_empty() {
        bail!("--by must name who acts");
    }
    store.retry_call(id, by, Utc::now())?;
    outln!("outbox call {id} released for delivery by {by}; the running gateway sends it in its next round");
    Ok(ExitCode::SUCCESS)
}

pub fn power_list(store: &Store, limit: usize, json: bool) -> anyhow::Result<ExitCode> {
    let apps = store.joint_applications(limit)?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&apps)?);
        return Ok(ExitCode::SUCCESS);
    }
    table::print(
        &[
            "application",
            "origin",
            "power status",
            "water status",
            "version",
            "record",
            "project",
            "updated",
        ],
        &apps
            .iter()
            .map(|a| {
                vec![
                    a.application_id.clone(),
                    a.origin.clone(),
                    a.status.clone(),
                    a.water_status.clone().unwrap_or_else(|| "-".into()),
                    a.version.to_string(),
                    match (&a.record_id, &a.own_record) {
                        (Some(r), _) => r.clone(),
                        (None, Some(own)) => format!("{own} (waiting)"),
                        (None, None) => "-".into(),
                    },
                    a.project_code.clone().unwrap_or_else(|| "-".into()),
                    format_human(a.updated_at),
                ]
            })
            .collect::<Vec<_>>(),
    );
    outln!("{} joint applications shown", apps.len());
    Ok(ExitCode::SUCCESS)
}

pub fn power_show(store: &Store, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    // An application id, or a record id whose application is meant.
    let app = match store.joint_application(id)? {
        Some(a) => Some(a),
        None => store.joint_application_of(id)?,
    };
    let Some(app) = app else {
        bail!("no joint application {id} (an application id or a record id; see `gateway power list`)");
    };
    let calls: Vec<OutboxCall> = store
        .outbox(None, 100_000)?
        .0
        .into_iter()
        .filter(|c| app.record_id.as_deref() == Some(c.record_id.as_str()))
        .collect();
    // Held for an operator (a probable duplicate, a listing item that did not read).
    let held: Vec<_> = store
        .failures_of("power", &app.application_id)?
        .into_iter()
        .filter(|f| f.state == "held")
        .collect();
    if json {
        let value = serde_json::json!({
            "application": app,
            "calls": calls.iter().map(call_json).collect::<Vec<_>>(),
            "held": held,
        });
        outln!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(ExitCode::SUCCESS);
    }
    outln!("joint application {} (origin {})", app.application_id, app.origin);
    outln!("  power side: {}", app.status);
    outln!(
        "  water side: {}",
        app.water_status.as_deref().unwrap_or("(not reported)")
    );
    outln!(
        "  version {}, updated {}",
        app.version,
        format_human(app.updated_at)
    );
    match (&app.record_id, &app.own_record) {
        (Some(r), _) => outln!("  record {r}"),
        (None, Some(own)) => outln!("  record {own}, waiting for platform data (not linked)"),
        (None, None) => outln!("  record (none)"),
    }
    outln!(
        "  project {}",
        app.project_code.as_deref().unwrap_or("(none given)")
    );
    if let Some(sha) = &app.document_sha256 {
        outln!("  last read from raw document {sha}");
    }
    for f in &held {
        outln!(
            "  held: {} (gateway failures show {})",
            table::clip(&f.reason, 240),
            f.id
        );
    }
    for c in calls.iter().rev() {
        outln!(
            "  call {} {} {}: {}",
            c.id,
            c.kind.as_str(),
            c.state,
            c.outcome.as_deref().or(c.last_error.as_deref()).unwrap_or("-")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A record's joint application as the power side last showed it, read from the stored answer
/// by the power mapping (`mappings/power/application.toml`): the `joint.*` fields of
/// `gateway trace`, each with its lineage into the power side's bytes. Empty when the record
/// has no joint application or its last answer is not stored.
pub(crate) fn joint_facts(
    store: &Store,
    record_id: &str,
) -> anyhow::Result<Vec<(String, crate::mapping::Lineage, serde_json::Value)>> {
    let Some(app) = store.joint_application_of(record_id)? else {
        return Ok(Vec::new());
    };
    let Some(sha) = &app.document_sha256 else {
        return Ok(Vec::new());
    };
    let Some((bytes, _)) = store.document(sha)? else {
        return Ok(Vec::new());
    };
    let Ok(document) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Ok(Vec::new());
    };
    let Some(at) = crate::rebuild::application_pointer(&document, &app.application_id, app.version) else {
        return Ok(Vec::new());
    };
    let mappings = crate::mapping::MappingSet::load(None)?;
    let mapping = mappings
        .get(crate::app::POWER_MAPPING)
        .context("no mapping file defines the power side's application")?;
    let ctx = crate::mapping::Context {
        today: shuiwu_wire::beijing_today(),
    };
    let facts = crate::mapping::apply(
        &mapping,
        crate::mapping::Document::JsonAt(&document, &at),
        sha,
        &ctx,
    )?;
    let wanted = [
        ("application.id", "joint.application_id"),
        ("application.external_id", "joint.external_id"),
        ("application.status", "joint.status"),
        ("application.water_status", "joint.water_status"),
        ("source.version", "joint.version"),
        ("source.updated_at", "joint.updated_at"),
    ];
    Ok(wanted
        .into_iter()
        .filter_map(|(from, to)| {
            let fact = facts.fields.get(from)?;
            let value = serde_json::to_value(&fact.value).unwrap_or_default();
            Some((to.to_string(), fact.lineage.clone(), value))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::CallKind;

    fn call(body: serde_json::Value) -> OutboxCall {
        OutboxCall {
            id: 1,
            record_id: "PE-1".into(),
            kind: CallKind::Create,
            idempotency_key: "create:PE-1".into(),
            application_id: None,
            body: body.to_string(),
            state: "pending".into(),
            attempts: 0,
            next_attempt_at: Utc::now(),
            last_error: None,
            outcome: None,
            answer_sha256: None,
            created_at: Utc::now(),
            done_at: None,
        }
    }

    #[test]
    fn personal_data_in_call_bodies_is_masked() {
        let person = call(serde_json::json!({"applicant": {"kind": "PERSON", "name": "李四",
            "creditCode": "110105194912310021", "contactName": "张三", "contactPhone": "13800000000"}}));
        let shown = serde_json::to_string(&call_json(&person)).unwrap();
        for secret in ["李四", "110105194912310021", "张三", "13800000000"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        let company = call(
            serde_json::json!({"applicant": {"kind": "ORGANISATION", "name": "昆明某公司",
            "creditCode": "91530112MA6NXXXX0X"}}),
        );
        let shown = serde_json::to_string(&call_json(&company)).unwrap();
        assert!(
            shown.contains("昆明某公司") && shown.contains("91530112MA6NXXXX0X"),
            "not personal: {shown}"
        );
        let status = call(serde_json::json!({"waterStatus": "ACCEPTED"}));
        assert_eq!(
            masked_body(&status),
            serde_json::json!({"waterStatus": "ACCEPTED"})
        );
    }
}
