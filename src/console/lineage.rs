//! The console's lineage: one field of a record down to the bytes it came from. A mapped
//! field shows the raw text found, the JSON Pointer, the transforms, the mapping file (and its
//! stored content) and the document with every fetch that returned it; a decision shows the
//! rule, its inputs (each a link to its own lineage) and the policy file. The document page
//! recomputes the stored bytes' SHA-256 for the reader, shows them masked, and gives an
//! auditor the exact bytes (audited).

use askama::Template;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::pages::{
    Needs, ReasonForm, attachment, render, see_other, session, unavailable, with_store, writer,
};
use super::records::{cell, lineage_of};
use crate::http::HttpState;

#[derive(Deserialize)]
pub(super) struct FieldQuery {
    name: String,
    /// The record version; its latest when absent.
    #[serde(default)]
    version: Option<i64>,
}

struct FetchLine {
    method: String,
    url: String,
    status: u16,
    request_id: String,
    fetched_at: String,
}

/// A mapped field's chain.
struct Mapped {
    raw: String,
    path: String,
    transforms: String,
    document: String,
    document_size: Option<usize>,
    fetches: Vec<FetchLine>,
    mapping: String,
    mapping_sha256: String,
    mapping_stored: bool,
}

/// A decision's chain.
struct Decided {
    rule: String,
    inputs: Vec<(String, String)>,
    policy_version: String,
    policy_file: String,
    policy_sha256: String,
}

#[derive(Template)]
#[template(path = "console/field.html")]
struct FieldPage {
    name: String,
    role: &'static str,
    csrf: String,
    id: String,
    version: i64,
    field: String,
    value: String,
    mapped: Option<Mapped>,
    decided: Option<Decided>,
}

pub(super) async fn field(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<FieldQuery>,
) -> Response {
    let Some((_, s)) = session(&state, &headers) else {
        return see_other("/console/sign-in");
    };
    let (record, name) = (id.clone(), q.name.clone());
    let found = with_store(&state, move |store| {
        let versions = store.record_versions(&record)?;
        let Some(row) = (match q.version {
            Some(n) => versions.into_iter().find(|v| v.version == n),
            None => versions.into_iter().last(),
        }) else {
            return Ok(None);
        };
        let (lineage, traces) = lineage_of(&row);
        let mut content = row.content.clone();
        crate::mask::record_json(&mut content, &lineage);
        // The joint application's fields trace into the power side's last answer.
        let joint = if name.starts_with("joint.") {
            crate::cli::joint::joint_facts(store, &record)?
        } else {
            Vec::new()
        };
        let (value, l) = match joint.into_iter().find(|(n, ..)| *n == name) {
            Some((_, l, v)) => (cell(&v), Some(l)),
            None => (
                crate::mask::value_at(&content, &name).map_or("—".to_string(), cell),
                lineage.get(&name).cloned(),
            ),
        };
        let mapped = match l {
            Some(l) => {
                let doc = store.document(&l.document)?;
                let raw = match (l.personal, &l.raw) {
                    (Some(kind), Some(raw)) => crate::mask::mask(kind, raw),
                    (_, Some(raw)) => raw.clone(),
                    (_, None) => "（无 absent）".into(),
                };
                Some(Mapped {
                    raw,
                    path: l.path.clone(),
                    transforms: l.transforms.join(" → "),
                    document: l.document.to_string(),
                    document_size: doc.as_ref().map(|(b, _)| b.len()),
                    fetches: doc
                        .map(|(_, f)| f.iter().map(fetch_line).collect())
                        .unwrap_or_default(),
                    mapping: l.mapping.to_string(),
                    mapping_sha256: l.mapping_sha256.to_string(),
                    mapping_stored: store.mapping_file(&l.mapping_sha256)?.is_some(),
                })
            }
            None => None,
        };
        let decided = traces.get(&name).map(|t| Decided {
            rule: t.rule.clone(),
            inputs: t.inputs.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            policy_version: t.policy_version.clone(),
            policy_file: t.policy_file.clone(),
            policy_sha256: t.policy_sha256.clone(),
        });
        Ok(Some((row.version, value, mapped, decided)))
    })
    .await;
    let (version, value, mapped, decided) = match found {
        Ok(Some(x)) => x,
        Ok(None) => {
            return (
                StatusCode::NOT_FOUND,
                format!("no record {id} (or no such version)"),
            )
                .into_response();
        }
        Err(e) => return unavailable("lineage", e),
    };
    if mapped.is_none() && decided.is_none() {
        return (
            StatusCode::NOT_FOUND,
            format!("record {id} has no traced field {:?}", q.name),
        )
            .into_response();
    }
    render(&FieldPage {
        name: s.name,
        role: s.role.as_str(),
        csrf: s.csrf,
        id,
        version,
        field: q.name,
        value,
        mapped,
        decided,
    })
}

fn fetch_line(f: &shuiwu_wire::FetchMeta) -> FetchLine {
    FetchLine {
        method: f.method.clone(),
        url: f.url.clone(),
        status: f.status,
        request_id: f.request_id.clone().unwrap_or_else(|| "-".into()),
        fetched_at: shuiwu_wire::format_human(f.fetched_at),
    }
}

#[derive(Deserialize, Default)]
pub(super) struct DocumentQuery {
    /// A JSON Pointer whose value the page shows first.
    #[serde(default)]
    path: String,
}

#[derive(Template)]
#[template(path = "console/document.html")]
struct DocumentPage {
    name: String,
    role: &'static str,
    csrf: String,
    may_export: bool,
    sha256: String,
    size: usize,
    /// Whether the stored bytes still hash to the name they are kept under.
    intact: bool,
    fetches: Vec<FetchLine>,
    path: String,
    at_path: Option<String>,
    text: String,
}

pub(super) async fn document(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Path(sha): Path<String>,
    Query(q): Query<DocumentQuery>,
) -> Response {
    let Some((_, s)) = session(&state, &headers) else {
        return see_other("/console/sign-in");
    };
    let mappings = state.console.as_ref().map(|c| c.mappings.clone());
    let wanted = sha.clone();
    let found = with_store(&state, move |store| Ok(store.document(&wanted)?)).await;
    let (bytes, fetches) = match found {
        Ok(Some(d)) => d,
        Ok(None) => return (StatusCode::NOT_FOUND, format!("no document {sha}")).into_response(),
        Err(e) => return unavailable("document", e),
    };
    let intact = hex::encode(Sha256::digest(&bytes)) == sha;
    let (text, at_path) = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(mut v) => {
            if let Some(m) = &mappings {
                crate::mask::raw_document(&mut v, m);
            }
            let at = (!q.path.is_empty())
                .then(|| v.pointer(&q.path).map(|x| x.to_string()))
                .flatten();
            (serde_json::to_string_pretty(&v).unwrap_or_default(), at)
        }
        Err(_) => (
            format!(
                "（{} 字节，不是 JSON；not JSON, shown to auditors as bytes only）",
                bytes.len()
            ),
            None,
        ),
    };
    render(&DocumentPage {
        may_export: s.role.may_reveal(),
        name: s.name,
        role: s.role.as_str(),
        csrf: s.csrf,
        sha256: sha,
        size: bytes.len(),
        intact,
        fetches: fetches.iter().map(fetch_line).collect(),
        path: q.path,
        at_path,
        text,
    })
}

/// `POST /console/documents/{sha}/raw`: the exact bytes the platform sent, for an auditor with
/// a reason, audited before they are sent (they hold personal data unmasked).
pub(super) async fn raw(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Path(sha): Path<String>,
    Form(form): Form<ReasonForm>,
) -> Response {
    let s = match writer(&state, &headers, &form.csrf, Needs::Auditor) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let reason = form.reason.trim().to_string();
    if reason.is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            "导出原始字节需要原因 (a reason is required)",
        )
            .into_response();
    }
    let (by, wanted) = (s.name.clone(), sha.clone());
    let found = with_store(&state, move |store| {
        let Some((bytes, fetches)) = store.document(&wanted)? else {
            return Ok(None);
        };
        let detail = json!({"reason": reason, "bytes": bytes.len(), "via": "console"});
        store.audit_event(
            &by,
            "raw_document_exported",
            &wanted,
            &detail.to_string(),
            Utc::now(),
        )?;
        Ok(Some((bytes, fetches)))
    })
    .await;
    let (bytes, fetches) = match found {
        Ok(Some(d)) => d,
        Ok(None) => return (StatusCode::NOT_FOUND, format!("no document {sha}")).into_response(),
        Err(e) => return unavailable("raw document", e),
    };
    tracing::info!(name = %s.name, document = %sha, "raw document exported from the console");
    let content_type = fetches
        .iter()
        .find_map(|f| f.content_type.clone())
        .unwrap_or_else(|| "application/octet-stream".into());
    attachment(&content_type, &format!("{sha}.bin"), bytes)
}

#[derive(Template)]
#[template(path = "console/mapping.html")]
struct MappingPage {
    name: String,
    role: &'static str,
    csrf: String,
    file: String,
    sha256: String,
    text: String,
}

/// `GET /console/mappings/{sha}`: a mapping file's content as it was when a field was mapped.
pub(super) async fn mapping(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Path(sha): Path<String>,
) -> Response {
    let Some((_, s)) = session(&state, &headers) else {
        return see_other("/console/sign-in");
    };
    let wanted = sha.clone();
    match with_store(&state, move |store| Ok(store.mapping_file(&wanted)?)).await {
        Ok(Some((file, text))) => render(&MappingPage {
            name: s.name,
            role: s.role.as_str(),
            csrf: s.csrf,
            file,
            sha256: sha,
            text,
        }),
        Ok(None) => (
            StatusCode::NOT_FOUND,
            format!("no mapping file with sha256 {sha}"),
        )
            .into_response(),
        Err(e) => unavailable("mapping file", e),
    }
}
