//! Read-only commands: records, traces, failures. Personal data is masked in all of them.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Context as _;
use serde_json::json;

use super::table::{self, clip};
use crate::mapping::{Lineage, MappingSet};
use crate::mask;
use crate::store::{Store, VersionRow};

pub fn records_list(
    store: &Store,
    state: Option<&str>,
    limit: usize,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let rows = store.records(state, limit)?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    let total = store.record_count()?;
    table::print(
        &[
            "id", "state", "ver", "BBH", "district", "category", "project", "updated",
        ],
        &rows
            .iter()
            .map(|r| {
                vec![
                    r.id.clone(),
                    r.state.clone(),
                    r.current_version.to_string(),
                    r.source_version.to_string(),
                    r.district.clone(),
                    r.category.clone(),
                    clip(&r.name, 36),
                    shuiwu_wire::human_from_stored(&r.updated_at),
                ]
            })
            .collect::<Vec<_>>(),
    );
    outln!("{} of {total} records shown", rows.len());
    Ok(ExitCode::SUCCESS)
}

fn lineage_of(v: &VersionRow) -> anyhow::Result<BTreeMap<String, Lineage>> {
    Ok(full_lineage(v)?.0)
}

fn full_lineage(v: &VersionRow) -> anyhow::Result<crate::mapping::lineage::Restored> {
    crate::mapping::lineage::from_json(&v.lineage).context("stored lineage is not readable")
}

fn masked_content(v: &VersionRow) -> anyhow::Result<serde_json::Value> {
    let mut content = v.content.clone();
    mask::record_json(&mut content, &lineage_of(v)?);
    Ok(content)
}

fn versions(store: &Store, id: &str) -> anyhow::Result<Vec<VersionRow>> {
    let versions = store.record_versions(id)?;
    if versions.is_empty() {
        anyhow::bail!(
            "no record {id} (ids look like PE-2022-530112-47-01-587143; see `gateway records list`)"
        );
    }
    Ok(versions)
}

pub fn records_show(store: &Store, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let versions = versions(store, id)?;
    let Some(current) = versions.last() else {
        unreachable!("versions() refuses an empty list")
    };
    let mut content = masked_content(current)?;
    super::times::with_offsets(&mut content, super::times::For::json(json));
    if json {
        let history: Vec<_> = versions
            .iter()
            .map(|v| {
                json!({"version": v.version, "change": v.change, "source_version": v.source_version,
                       "document_sha256": v.document_sha256, "content_sha256": v.content_sha256, "created_at": v.created_at})
            })
            .collect();
        outln!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"id": id, "version": current.version, "content": content, "versions": history,
                        "materials": store.latest_materials(id)?.map(|(v, at, c)| json!({"record_version": v, "checked_at": at, "checklist": c})),
                        "joint_application": store.joint_application_of(id)?,
                        "notice": store.notice(id)?.map(|(at, text)| json!({"issued_at": at, "text": text}))})
            )?
        );
        return Ok(ExitCode::SUCCESS);
    }
    outln!("record {id}, version {} ({})", current.version, current.change);
    outln!("{}", serde_json::to_string_pretty(&content)?);
    outln!();
    table::print(
        &["ver", "change", "BBH", "document", "content", "at"],
        &versions
            .iter()
            .map(|v| {
                vec![
                    v.version.to_string(),
                    v.change.clone(),
                    v.source_version.to_string(),
                    short(&v.document_sha256),
                    short(&v.content_sha256),
                    shuiwu_wire::human_from_stored(&v.created_at),
                ]
            })
            .collect::<Vec<_>>(),
    );
    if let Some((v, at, c)) = store.latest_materials(id)? {
        let at = shuiwu_wire::human_from_stored(&at);
        let missing: Vec<&str> = c.missing().map(|i| i.item.as_str()).collect();
        if c.zero_materials {
            outln!("\nmaterials: zero materials reached (checked {at}, version {v})");
        } else {
            outln!(
                "\nmaterials: missing {} (checked {at}, version {v}); see gateway notice {id}",
                missing.join(", ")
            );
        }
    }
    // "Where is my connection?" for both utilities.
    if let Some(a) = store.joint_application_of(id)? {
        outln!(
            "\njoint application {} with the power utility (version {}): power side {}, water side reported {}; gateway power show {}",
            a.application_id,
            a.version,
            a.status,
            a.water_status.as_deref().unwrap_or("nothing yet"),
            a.application_id
        );
    }
    outln!("\ntrace any field to its raw bytes: gateway trace {id} --field water.diameter_dn");
    Ok(ExitCode::SUCCESS)
}

fn short(sha: &str) -> String {
    sha.chars().take(12).collect()
}

/// One field's chain, for `trace --json`.
#[derive(serde::Serialize)]
struct TraceEntry {
    field: String,
    value: serde_json::Value,
    raw: Option<String>,
    path: String,
    transforms: Vec<String>,
    document_sha256: String,
    document_size: Option<usize>,
    fetches: Vec<shuiwu_wire::FetchMeta>,
    mapping: String,
    mapping_sha256: String,
    mapping_stored: bool,
}

pub fn trace(
    store: &Store,
    id: &str,
    field: Option<&str>,
    version: Option<i64>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let versions = versions(store, id)?;
    let row = match version {
        Some(n) => versions
            .iter()
            .find(|v| v.version == n)
            .with_context(|| format!("record {id} has no version {n}"))?,
        None => versions.last().context("no versions")?,
    };
    let (lineage, decision_traces) = full_lineage(row)?;
    let mut content = row.content.clone();
    mask::record_json(&mut content, &lineage);
    super::times::with_offsets(&mut content, super::times::For::json(json));
    let wanted = |name: &str| {
        field.is_none_or(|f| {
            name == f || name.starts_with(&format!("{f}.")) || name.starts_with(&format!("{f}["))
        })
    };
    // The joint application's status and version, traced into the power side's last answer.
    let joint = super::joint::joint_facts(store, id)?;
    let selected: Vec<(&String, &Lineage)> = lineage
        .iter()
        .chain(joint.iter().map(|(name, l, _)| (name, l)))
        .filter(|(name, _)| wanted(name))
        .collect();
    let decisions: Vec<serde_json::Value> = decision_traces
        .iter()
        .filter(|(name, _)| wanted(name))
        .map(|(name, t)| {
            let value = mask::value_at(&content, name)
                .cloned()
                .unwrap_or(serde_json::Value::Null);
            json!({"field": name, "value": value, "trace": t})
        })
        .collect();
    if selected.is_empty() && decisions.is_empty() {
        let known: Vec<&str> = lineage.keys().map(String::as_str).take(12).collect();
        anyhow::bail!(
            "record {id} has no field {:?}; fields include {}",
            field.unwrap_or(""),
            known.join(", ")
        );
    }
    let mut documents: BTreeMap<String, Option<(usize, Vec<shuiwu_wire::FetchMeta>)>> = BTreeMap::new();
    let mut mappings: BTreeMap<String, bool> = BTreeMap::new();
    let mut entries = Vec::new();
    for (name, l) in selected {
        if !documents.contains_key(&*l.document) {
            let doc = store
                .document(&l.document)?
                .map(|(bytes, fetches)| (bytes.len(), fetches));
            documents.insert(l.document.to_string(), doc);
        }
        if !mappings.contains_key(&*l.mapping_sha256) {
            mappings.insert(
                l.mapping_sha256.to_string(),
                store.mapping_file(&l.mapping_sha256)?.is_some(),
            );
        }
        let doc = documents.get(&*l.document).cloned().flatten();
        let value = match joint.iter().find(|(n, ..)| n == name) {
            Some((_, _, v)) => v.clone(),
            None => mask::value_at(&content, name)
                .cloned()
                .unwrap_or(serde_json::Value::Null),
        };
        let raw = match (l.personal, &l.raw) {
            (Some(kind), Some(raw)) => Some(mask::mask(kind, raw)),
            (_, raw) => raw.clone(),
        };
        entries.push(TraceEntry {
            field: name.clone(),
            value,
            raw,
            path: l.path.clone(),
            transforms: l.transforms.to_vec(),
            document_sha256: l.document.to_string(),
            document_size: doc.as_ref().map(|d| d.0),
            fetches: doc.map(|d| d.1).unwrap_or_default(),
            mapping: l.mapping.to_string(),
            mapping_sha256: l.mapping_sha256.to_string(),
            mapping_stored: mappings.get(&*l.mapping_sha256).copied().unwrap_or(false),
        });
    }
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"id": id, "version": row.version, "fields": entries, "decisions": decisions})
            )?
        );
        return Ok(ExitCode::SUCCESS);
    }
    // The approval platform numbers a project's versions BBH; the power side, `version`.
    let built_from = match row.content["source"]["platform"].as_str() {
        Some("power") => "power-side application version",
        _ => "BBH",
    };
    outln!(
        "record {id}, version {} ({}), built from {built_from} {}",
        row.version,
        row.change,
        row.source_version
    );
    for d in &decisions {
        outln!("\n{} = {}", d["field"].as_str().unwrap_or("?"), d["value"]);
        let t = &d["trace"];
        outln!("  rule       {}", t["rule"].as_str().unwrap_or("?"));
        if let Some(inputs) = t["inputs"].as_object() {
            let list: Vec<String> = inputs
                .iter()
                .map(|(k, v)| format!("{k} = {}", v.as_str().unwrap_or("?")))
                .collect();
            outln!("  inputs     {}", list.join("; "));
        }
        outln!(
            "  policy     version {} from {} sha256:{}",
            t["policy_version"].as_str().unwrap_or("?"),
            t["policy_file"].as_str().unwrap_or("?"),
            t["policy_sha256"].as_str().unwrap_or("?")
        );
    }
    for e in &entries {
        let value = match &e.value {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => "(not known)".into(),
            other => other.to_string(),
        };
        outln!("\n{} = {value}", e.field);
        match &e.raw {
            Some(raw) => outln!("  raw        {raw:?} at {}", e.path),
            None => outln!("  raw        (absent) at {}", e.path),
        }
        if !e.transforms.is_empty() {
            outln!("  transforms {}", e.transforms.join(" → "));
        }
        match (e.document_size, e.fetches.first()) {
            (Some(size), Some(f)) => outln!(
                "  document   sha256:{} ({size} bytes) {} {} → {}, request {}, fetched {}",
                e.document_sha256,
                f.method,
                f.url,
                f.status,
                f.request_id.as_deref().unwrap_or("-"),
                shuiwu_wire::format_human(f.fetched_at)
            ),
            _ => outln!("  document   sha256:{} (NOT IN STORE)", e.document_sha256),
        }
        outln!(
            "  mapping    {} sha256:{}{}",
            e.mapping,
            e.mapping_sha256,
            if e.mapping_stored {
                ""
            } else {
                " (content not stored)"
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn failures_list(
    store: &Store,
    state: Option<&str>,
    all: bool,
    limit: usize,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let by_project = state.is_none() && !all;
    let (rows, open_counts, total) = if by_project {
        let (rows, total) = store.open_failures_by_project(limit)?;
        let (rows, counts): (Vec<_>, Vec<_>) = rows.into_iter().unzip();
        (rows, Some(counts), total)
    } else {
        (store.failures(state, limit)?, None, store.failure_count(state)?)
    };
    if json {
        let value: Vec<serde_json::Value> = rows
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let mut v = serde_json::to_value(f).unwrap_or_default();
                if let (Some(counts), Some(obj)) = (&open_counts, v.as_object_mut()) {
                    obj.insert("open_for_project".into(), counts[i].into());
                }
                v
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut header = vec!["id", "state", "project", "BBH", "step", "field", "reason"];
    if by_project {
        header.insert(3, "open");
    }
    table::print(
        &header,
        &rows
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let mut row = vec![
                    f.id.to_string(),
                    f.state.clone(),
                    f.key.clone().unwrap_or_else(|| "-".into()),
                    f.version.map_or("-".into(), |v| v.to_string()),
                    f.step.clone(),
                    f.field.clone().unwrap_or_else(|| "-".into()),
                    clip(&f.reason, 70),
                ];
                if let Some(counts) = &open_counts {
                    row.insert(3, counts[i].to_string());
                }
                row
            })
            .collect::<Vec<_>>(),
    );
    if by_project {
        outln!(
            "{} of {total} projects with open failures shown (the newest of each; `--all` lists every failure)",
            rows.len()
        );
    } else {
        outln!("{} of {total} failures shown", rows.len());
    }
    Ok(ExitCode::SUCCESS)
}

pub fn failures_show(store: &Store, id: i64, json: bool) -> anyhow::Result<ExitCode> {
    let failure = store
        .failure(id)?
        .with_context(|| format!("no failure {id} (see `gateway failures list`)"))?;
    let document = match &failure.document_sha256 {
        Some(sha) => store.document(sha)?,
        None => None,
    };
    let mappings = MappingSet::load(None)?;
    let masked_document =
        document.as_ref().map(
            |(bytes, _)| match serde_json::from_slice::<serde_json::Value>(bytes) {
                Ok(mut v) => {
                    mask::raw_document(&mut v, &mappings);
                    v
                }
                Err(_) => json!(format!("({} bytes, not JSON)", bytes.len())),
            },
        );
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "failure": failure,
                "document": masked_document,
                "fetches": document.as_ref().map(|d| &d.1),
            }))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    outln!("failure {} ({})", failure.id, failure.state);
    outln!(
        "  project   {} BBH {}",
        failure.key.as_deref().unwrap_or("-"),
        failure.version.map_or("-".into(), |v| v.to_string())
    );
    outln!("  step      {}", failure.step);
    outln!("  field     {}", failure.field.as_deref().unwrap_or("-"));
    outln!("  reason    {}", failure.reason);
    outln!("  held at   {}", failure.created_at);
    if let Some(detail) = &failure.detail {
        if let Some(errors) = detail.as_array() {
            outln!("  every failing field:");
            for e in errors {
                outln!(
                    "    {} at {}: {} (raw {})",
                    e["field"].as_str().unwrap_or("?"),
                    e["path"].as_str().unwrap_or("?"),
                    e["reason"].as_str().unwrap_or("?"),
                    e["raw"]
                );
            }
        } else {
            outln!("  detail    {detail}");
        }
    }
    if let (Some(sha), Some((bytes, fetches))) = (&failure.document_sha256, &document) {
        outln!("  document  sha256:{sha} ({} bytes)", bytes.len());
        for f in fetches {
            outln!(
                "            {} {} → {}, request {}, fetched {}",
                f.method,
                f.url,
                f.status,
                f.request_id.as_deref().unwrap_or("-"),
                shuiwu_wire::format_human(f.fetched_at)
            );
        }
        if let Some(doc) = masked_document {
            outln!("{}", serde_json::to_string_pretty(&doc)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `gateway runs`: the newest sync passes and how they ended.
pub fn runs(store: &Store, limit: usize, json: bool) -> anyhow::Result<ExitCode> {
    let rows = store.runs(limit)?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    table::print(
        &["run", "started", "finished", "outcome", "processed", "why"],
        &rows
            .iter()
            .map(|r| {
                vec![
                    r.id.to_string(),
                    shuiwu_wire::human_from_stored(&r.started_at),
                    r.finished_at
                        .as_deref()
                        .map_or(String::new(), shuiwu_wire::human_from_stored),
                    r.outcome.clone(),
                    r.processed.to_string(),
                    clip(r.error.as_deref().unwrap_or(""), 60),
                ]
            })
            .collect::<Vec<_>>(),
    );
    outln!("{} runs shown", rows.len());
    Ok(ExitCode::SUCCESS)
}
