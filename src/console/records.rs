//! The console's records: a search, and one record's page — its fields across its versions
//! side by side (each linking to its lineage), its decisions with the rule that made them,
//! where the connection stands at both utilities, materials and the one-time notice. Personal
//! data is masked unless an auditor reveals it, and every reveal is audited with the reason.
//! Operators record stage events from the page.

use std::collections::{BTreeMap, BTreeSet};

use askama::Template;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};

use super::pages::{
    Needs, ReasonForm, attachment, render, see_other, session, unavailable, with_store, writer,
};
use super::session::Session;
use crate::http::HttpState;
use crate::mapping::Lineage;
use crate::policy::DecisionTrace;
use crate::store::{Store, VersionRow};

/// Records a search lists at most.
const LISTED: usize = 200;
/// Versions shown side by side at most (the latest ones).
const SIDE_BY_SIDE: usize = 8;

struct ListRow {
    id: String,
    state: String,
    version: i64,
    district: String,
    category: String,
    name: String,
    updated_at: String,
}

#[derive(Template)]
#[template(path = "console/records.html")]
struct List {
    name: String,
    role: &'static str,
    csrf: String,
    q: String,
    total: i64,
    rows: Vec<ListRow>,
}

#[derive(Deserialize, Default)]
pub(super) struct SearchQuery {
    #[serde(default)]
    q: String,
}

pub(super) async fn list(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Query(query): Query<SearchQuery>,
) -> Response {
    let Some((_, s)) = session(&state, &headers) else {
        return see_other("/console/sign-in");
    };
    let q = query.q.trim().to_string();
    let wanted = q.clone();
    let found = with_store(&state, move |store| {
        let rows = if wanted.is_empty() {
            store.records(None, LISTED)?
        } else {
            store.search_records(&wanted, LISTED)?
        };
        Ok((rows, store.record_count()?))
    })
    .await;
    let (rows, total) = match found {
        Ok(x) => x,
        Err(e) => return unavailable("records", e),
    };
    render(&List {
        name: s.name,
        role: s.role.as_str(),
        csrf: s.csrf,
        q,
        total,
        rows: rows
            .into_iter()
            .map(|r| ListRow {
                id: r.id,
                state: r.state,
                version: r.current_version,
                district: r.district,
                category: r.category,
                name: r.name,
                updated_at: shuiwu_wire::human_from_stored(&r.updated_at),
            })
            .collect(),
    })
}

/// One row of the side-by-side table: a field and its value in each version shown.
struct FieldRow {
    field: String,
    values: Vec<String>,
    /// Whether the versions shown disagree.
    changed: bool,
    personal: bool,
}

struct DecisionRow {
    field: String,
    value: String,
    rule: String,
    inputs: Vec<(String, String)>,
    policy: String,
}

struct StageRow {
    stage: String,
    working_days: String,
    started_at: String,
    due_at: String,
    completed_at: String,
}

struct VersionHead {
    version: i64,
    change: String,
    source_version: i64,
    created_at: String,
}

#[derive(Template)]
#[template(path = "console/record.html")]
struct Page {
    name: String,
    role: &'static str,
    csrf: String,
    may_operate: bool,
    may_reveal: bool,
    revealed: bool,
    problem: Option<String>,
    id: String,
    state: String,
    current: i64,
    heads: Vec<VersionHead>,
    fields: Vec<FieldRow>,
    decisions: Vec<DecisionRow>,
    water_state: String,
    stages: Vec<StageRow>,
    joint: Option<crate::store::JointApplication>,
    materials: Option<String>,
    notice: Option<(String, String)>,
    actions: Vec<(String, String, String)>,
}

/// A JSON value as one cell's text.
pub(super) fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "—".into(),
        other => other.to_string(),
    }
}

/// A version's lineage and decision traces; empty when the stored lineage cannot be read
/// (the page still shows the values).
pub(super) fn lineage_of(v: &VersionRow) -> (BTreeMap<String, Lineage>, BTreeMap<String, DecisionTrace>) {
    crate::mapping::lineage::from_json(&v.lineage).unwrap_or_else(|e| {
        tracing::warn!(version = v.version, "stored lineage not readable: {e}");
        Default::default()
    })
}

/// A version's content, masked unless revealed.
fn content_of(v: &VersionRow, lineage: &BTreeMap<String, Lineage>, reveal: bool) -> Value {
    let mut content = v.content.clone();
    if !reveal {
        crate::mask::record_json(&mut content, lineage);
    }
    content
}

struct Loaded {
    versions: Vec<VersionRow>,
    state: String,
    joint: Option<crate::store::JointApplication>,
    materials: Option<(i64, String, crate::materials::Checklist)>,
    notice: Option<(String, String)>,
    actions: Vec<crate::stages::OperatorAction>,
}

fn load(store: &Store, id: &str) -> anyhow::Result<Option<Loaded>> {
    // The record's state as stored: a later version of a withdrawn record (a remap, an
    // operator action) says `updated`, not `withdrawn`.
    let Some(state) = store.record_state(id)? else {
        return Ok(None);
    };
    let versions = store.record_versions(id)?;
    Ok(Some(Loaded {
        state,
        joint: store.joint_application_of(id)?,
        materials: store.latest_materials(id)?,
        notice: store.notice(id)?,
        actions: store.actions(id)?,
        versions,
    }))
}

async fn page(
    state: &HttpState,
    s: Session,
    id: String,
    reveal: bool,
    problem: Option<String>,
    status: StatusCode,
) -> Response {
    let wanted = id.clone();
    let loaded = match with_store(state, move |store| load(store, &wanted)).await {
        Ok(Some(l)) => l,
        Ok(None) => return (StatusCode::NOT_FOUND, format!("no record {id}")).into_response(),
        Err(e) => return unavailable("record", e),
    };
    let shown = &loaded.versions[loaded.versions.len().saturating_sub(SIDE_BY_SIDE)..];
    let lineages: Vec<_> = shown.iter().map(lineage_of).collect();
    let contents: Vec<Value> = shown
        .iter()
        .zip(&lineages)
        .map(|(v, (l, _))| content_of(v, l, reveal))
        .collect();
    // Every mapped field of any version shown, then every decision.
    let mut names: BTreeSet<&str> = BTreeSet::new();
    let mut personal: BTreeSet<&str> = BTreeSet::new();
    for (l, _) in &lineages {
        for (name, lineage) in l {
            names.insert(name);
            if lineage.personal.is_some() {
                personal.insert(name);
            }
        }
    }
    let value_in =
        |content: &Value, field: &str| crate::mask::value_at(content, field).map_or("—".to_string(), cell);
    let fields = names
        .into_iter()
        .map(|field| {
            let values: Vec<String> = contents.iter().map(|c| value_in(c, field)).collect();
            FieldRow {
                changed: values.windows(2).any(|w| w[0] != w[1]),
                personal: personal.contains(field),
                field: field.to_string(),
                values,
            }
        })
        .collect();
    let traces = lineages.last().map(|(_, t)| t.clone()).unwrap_or_default();
    let current_content = contents.last().cloned().unwrap_or_default();
    let decisions = traces
        .iter()
        .map(|(field, t)| DecisionRow {
            field: field.clone(),
            value: value_in(&current_content, field),
            rule: t.rule.clone(),
            inputs: t.inputs.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            policy: format!(
                "{} ({}, sha256 {})",
                t.policy_version, t.policy_file, t.policy_sha256
            ),
        })
        .collect();
    let progress = &current_content["progress"];
    let stages = progress["stages"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|st| StageRow {
                    stage: cell(&st["stage"]),
                    working_days: cell(&st["working_days"]),
                    started_at: cell(&st["started_at"]),
                    due_at: cell(&st["due_at"]),
                    completed_at: cell(&st["completed_at"]),
                })
                .collect()
        })
        .unwrap_or_default();
    let materials = loaded.materials.as_ref().map(|(v, at, c)| {
        let at = shuiwu_wire::human_from_stored(at);
        if c.zero_materials {
            format!("零资料已实现 zero materials reached (checked {at}, version {v})")
        } else {
            let missing: Vec<&str> = c.missing().map(|i| i.item.as_str()).collect();
            format!("缺 missing {} (checked {at}, version {v})", missing.join(", "))
        }
    });
    let current = loaded.versions.last().map_or(0, |v| v.version);
    let mut response = render(&Page {
        may_operate: s.role.may_operate(),
        may_reveal: s.role.may_reveal(),
        name: s.name,
        role: s.role.as_str(),
        csrf: s.csrf,
        revealed: reveal,
        problem,
        id,
        state: loaded.state,
        current,
        heads: shown
            .iter()
            .map(|v| VersionHead {
                version: v.version,
                change: v.change.clone(),
                source_version: v.source_version,
                created_at: shuiwu_wire::human_from_stored(&v.created_at),
            })
            .collect(),
        fields,
        decisions,
        water_state: cell(&progress["state"]),
        stages,
        joint: loaded.joint,
        materials,
        notice: loaded.notice,
        actions: loaded
            .actions
            .iter()
            .map(|a| {
                (
                    shuiwu_wire::format_human(a.at),
                    a.by.clone(),
                    serde_json::to_string(&a.action).unwrap_or_default(),
                )
            })
            .collect(),
    });
    *response.status_mut() = status;
    response
}

pub(super) async fn record(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let Some((_, s)) = session(&state, &headers) else {
        return see_other("/console/sign-in");
    };
    page(&state, s, id, false, None, StatusCode::OK).await
}

#[derive(Deserialize)]
pub(super) struct ExportForm {
    csrf: String,
    #[serde(default)]
    reason: String,
    /// Include personal data unmasked.
    #[serde(default)]
    reveal: Option<String>,
}

/// Writes an audit entry for something an auditor saw or took, with the reason given.
async fn audit(
    state: &HttpState,
    s: &Session,
    action: &'static str,
    id: &str,
    detail: Value,
) -> anyhow::Result<()> {
    let (by, id, detail) = (s.name.clone(), id.to_string(), detail.to_string());
    with_store(state, move |store| {
        store.audit_event(&by, action, &id, &detail, Utc::now())?;
        Ok(())
    })
    .await
}

/// `POST /console/records/{id}/reveal`: the page with personal data unmasked, for an auditor,
/// with a reason; audited before anything is shown.
pub(super) async fn reveal(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<ReasonForm>,
) -> Response {
    let s = match writer(&state, &headers, &form.csrf, Needs::Auditor) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let reason = form.reason.trim();
    if reason.is_empty() {
        return page(
            &state,
            s,
            id,
            false,
            Some("查看个人信息需要原因".into()),
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    if let Err(e) = audit(
        &state,
        &s,
        "personal_data_revealed",
        &id,
        json!({"reason": reason, "via": "console"}),
    )
    .await
    {
        // No audit entry, no reveal.
        return unavailable("reveal", e);
    }
    tracing::info!(name = %s.name, record = %id, "personal data revealed in the console");
    page(&state, s, id, true, None, StatusCode::OK).await
}

/// `POST /console/records/{id}/export`: the record as JSON — every version with its lineage
/// and decisions, materials, operator actions, the joint application and the notice — for an
/// auditor, audited; personal data masked unless the form asks to reveal it.
pub(super) async fn export(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<ExportForm>,
) -> Response {
    let s = match writer(&state, &headers, &form.csrf, Needs::Auditor) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let reason = form.reason.trim().to_string();
    if reason.is_empty() {
        return page(
            &state,
            s,
            id,
            false,
            Some("导出需要原因".into()),
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    let reveal = form.reveal.is_some();
    let wanted = id.clone();
    let loaded = match with_store(&state, move |store| load(store, &wanted)).await {
        Ok(Some(l)) => l,
        Ok(None) => return (StatusCode::NOT_FOUND, format!("no record {id}")).into_response(),
        Err(e) => return unavailable("export", e),
    };
    let detail = json!({"reason": reason, "personal_data": if reveal { "revealed" } else { "masked" }, "via": "console"});
    if let Err(e) = audit(&state, &s, "record_exported", &id, detail).await {
        return unavailable("export", e);
    }
    tracing::info!(name = %s.name, record = %id, reveal, "record exported from the console");
    let versions: Vec<Value> = loaded
        .versions
        .iter()
        .map(|v| {
            let (lineage, decisions) = lineage_of(v);
            json!({
                "version": v.version, "change": v.change, "source_version": v.source_version,
                "document_sha256": v.document_sha256, "content_sha256": v.content_sha256,
                "created_at": v.created_at, "content": content_of(v, &lineage, reveal),
                "lineage": masked_lineage(&lineage, reveal), "decisions": decisions,
            })
        })
        .collect();
    let body = json!({
        "record": id, "state": loaded.state, "exported_by": s.name, "exported_at": shuiwu_wire::format_beijing(Utc::now()),
        "personal_data": if reveal { "revealed" } else { "masked" },
        "versions": versions,
        "materials": loaded.materials.map(|(v, at, c)| json!({"record_version": v, "checked_at": at, "checklist": c})),
        "operator_actions": loaded.actions.iter().map(|a| json!({"id": a.id, "at": shuiwu_wire::format_beijing(a.at), "by": a.by, "action": a.action, "override_reason": a.override_reason})).collect::<Vec<_>>(),
        "joint_application": loaded.joint,
        "notice": loaded.notice.map(|(at, text)| json!({"issued_at": at, "text": text})),
    });
    let text = serde_json::to_string_pretty(&body).unwrap_or_default();
    attachment("application/json; charset=utf-8", &format!("{id}.json"), text)
}

/// Lineage for an export: the raw text of a personal field is masked like its value.
fn masked_lineage(lineage: &BTreeMap<String, Lineage>, reveal: bool) -> BTreeMap<String, Lineage> {
    lineage
        .iter()
        .map(|(name, l)| {
            let mut l = l.clone();
            if let (false, Some(kind), Some(raw)) = (reveal, l.personal, &l.raw) {
                l.raw = Some(crate::mask::mask(kind, raw));
            }
            (name.clone(), l)
        })
        .collect()
}

#[derive(Deserialize)]
pub(super) struct EventForm {
    csrf: String,
    kind: String,
    #[serde(default)]
    pipe_length: String,
    #[serde(default)]
    pause_reason: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    items: String,
    #[serde(default)]
    override_reason: String,
}

impl EventForm {
    /// The stage event the form describes, as the admin API and the CLI take it.
    fn action(&self) -> Result<crate::stages::Action, String> {
        let text = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_string());
        let mut body = json!({"kind": self.kind});
        match self.kind.as_str() {
            "accepted" | "connected" | "resumed" => {}
            "survey_done" => {
                body["external_pipe_m"] = json!(text(&self.pipe_length).ok_or("需要外线长度 pipe_length")?)
            }
            "paused" => body["reason"] = json!(text(&self.pause_reason).ok_or("需要暂停原因 pause_reason")?),
            "rejected" | "withdrawn" => body["reason"] = json!(text(&self.reason).ok_or("需要原因 reason")?),
            "commitment" => {
                let items: Vec<String> = self
                    .items
                    .split([',', '，', ' '])
                    .filter(|i| !i.is_empty())
                    .map(str::to_string)
                    .collect();
                if items.is_empty() {
                    return Err("需要承诺补齐的材料 items".into());
                }
                body["items"] = json!(items);
            }
            other => return Err(format!("unknown stage event {other:?}")),
        }
        serde_json::from_value(body).map_err(|e| e.to_string())
    }
}

/// `POST /console/records/{id}/events`: a stage event by an operator, audited with their name
/// through the same store call as the CLI and the admin API.
pub(super) async fn event(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<EventForm>,
) -> Response {
    let s = match writer(&state, &headers, &form.csrf, Needs::Operator) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let action = match form.action() {
        Ok(a) => a,
        Err(e) => return page(&state, s, id, false, Some(e), StatusCode::BAD_REQUEST).await,
    };
    let override_reason =
        (!form.override_reason.trim().is_empty()).then(|| form.override_reason.trim().to_string());
    let rebuilder = state.rebuilder.clone();
    let (by, record) = (s.name.clone(), id.clone());
    let done = with_store(&state, move |store| {
        let now = Utc::now();
        Ok(store.record_stage_event(
            &record,
            crate::store::NewAction {
                action: &action,
                at: now,
                by: &by,
                override_reason: override_reason.as_deref(),
            },
            now,
            &rebuilder,
        )?)
    })
    .await;
    match done {
        Ok(_) => see_other(&format!("/console/records/{id}")),
        Err(e) => {
            page(
                &state,
                s,
                id,
                false,
                Some(format!("没有记录：{e}")),
                StatusCode::CONFLICT,
            )
            .await
        }
    }
}
