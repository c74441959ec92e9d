//! Reads for the commands and the sync: records, versions, documents, failures, runs, the
//! cursor and the audit log.

use super::*;

impl Store {
    pub fn mapping_file(&self, sha256: &str) -> Result<Option<(String, String)>> {
        Ok(self
            .lock()
            .query_row(
                "SELECT file, content FROM mapping_files WHERE sha256 = ?1",
                [sha256],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// Held failures by category.
    pub fn held_by_category(&self) -> Result<std::collections::BTreeMap<String, i64>> {
        held_by_category(&self.read())
    }

    /// The newest passes, newest first.
    /// What `/metrics` reports of the store at one moment: each cursor's lag behind `now`, held
    /// failures by category, the outbox's pending calls and the oldest one's age, records waiting
    /// for a materials check, records.
    pub fn sample(&self, now: DateTime<Utc>, recheck_before: DateTime<Utc>) -> Result<Sample> {
        let mut sample = Sample::default();
        {
            let conn = self.read();
            let mut stmt = conn.prepare_cached("SELECT source, watermark FROM cursors")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
            for row in rows {
                let (source, watermark) = row?;
                let lag = (now - parse_ts(&watermark)?).num_milliseconds() as f64 / 1000.0;
                sample.cursor_lag_seconds.insert(source, lag);
            }
            sample.failures_held = held_by_category(&conn)?;
            let (pending, oldest): (i64, Option<String>) = conn.query_row(
                "SELECT count(*), min(created_at) FROM outbox WHERE state = 'pending'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            sample.outbox_pending = pending;
            sample.outbox_oldest_age_seconds = match oldest {
                Some(t) => (now - parse_ts(&t)?).num_milliseconds() as f64 / 1000.0,
                None => 0.0,
            };
            sample.records = conn.query_row("SELECT count(*) FROM records", [], |r| r.get(0))?;
            (sample.audit_log_entries, sample.audit_log_unsigned) = conn.query_row(
                "SELECT h.size, h.size - coalesce((SELECT max(size) FROM tlog_checkpoints), 0) FROM tlog_head h WHERE h.one = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
        }
        sample.materials_backlog = self.count_records_needing_materials(recheck_before)?;
        Ok(sample)
    }

    /// The newest pass: its id, when it ended (`None` while it runs or if it never ended),
    /// its outcome (`running` while it runs) and error.
    pub fn last_run(&self) -> Result<Option<LastRun>> {
        let conn = self.read();
        let row = conn
            .query_row(
                "SELECT id, finished_at, outcome, error FROM runs ORDER BY id DESC LIMIT 1",
                [],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, Option<String>>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, Option<String>>(3)?,
                    ))
                },
            )
            .optional()?;
        row.map(|(id, finished, outcome, error)| {
            Ok(LastRun {
                id,
                finished_at: finished.as_deref().map(parse_ts).transpose()?,
                outcome: outcome.unwrap_or_else(|| "running".into()),
                error,
            })
        })
        .transpose()
    }

    pub fn runs(&self, limit: usize) -> Result<Vec<RunRow>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT id, started_at, finished_at, outcome, error,
                    (SELECT count(*) FROM source_versions s WHERE s.run_id = runs.id)
             FROM runs ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit as i64], |r| {
            Ok(RunRow {
                id: r.get(0)?,
                started_at: r.get(1)?,
                finished_at: r.get(2)?,
                outcome: r.get::<_, Option<String>>(3)?.unwrap_or_else(|| "running".into()),
                error: r.get(4)?,
                processed: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// The audit log's head: the newest entry's sequence number and hash, as written with it.
    pub fn audit_head(&self) -> Result<Option<(i64, String)>> {
        audit::head(&self.lock())
    }

    /// Every audit log entry, in order.
    pub fn audit_entries(&self) -> Result<Vec<audit::Entry>> {
        audit::entries(&self.lock())
    }

    /// Appends one audit entry in a transaction of its own: what the gateway did that is not a
    /// record change (a backup taken, a database restored).
    pub fn audit_event(
        &self,
        actor: &str,
        action: &str,
        subject: &str,
        detail: &str,
        now: DateTime<Utc>,
    ) -> Result<i64> {
        let mut conn = self.lock();
        let tx = self.write_tx(&mut conn)?;
        let seq = audit::append(&tx, &ts(now), actor, action, subject, detail)?;
        tx.commit()?;
        Ok(seq)
    }

    pub fn cursor(&self, source: &str) -> Result<Option<DateTime<Utc>>> {
        let text: Option<String> = self
            .lock()
            .query_row("SELECT watermark FROM cursors WHERE source = ?1", [source], |r| {
                r.get(0)
            })
            .optional()?;
        text.map(|t| parse_ts(&t)).transpose()
    }

    /// The newest version of an item already processed, whatever the outcome.
    pub fn processed_version(&self, source: &str, key: &str) -> Result<Option<i64>> {
        Ok(self
            .read()
            .prepare_cached("SELECT max(version) FROM source_versions WHERE source = ?1 AND key = ?2")?
            .query_row(params![source, key], |r| r.get(0))?)
    }

    /// Active records by category label (a category id, `provisional` or `none`) with how
    /// many of them are in the "11000" mode.
    pub fn category_counts(&self) -> Result<Vec<(String, i64, i64)>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT coalesce(json_extract(v.content, '$.decisions.category.id'),
                             json_extract(v.content, '$.decisions.category.state'), 'undecided') AS label,
                    count(*), coalesce(sum(coalesce(json_extract(v.content, '$.decisions.mode_11000.value'),
                        json_type(v.content, '$.decisions.mode_11000') = 'true')), 0)
             FROM records r JOIN record_versions v ON v.record_id = r.id AND v.version = r.current_version
             WHERE r.state = 'active' GROUP BY label ORDER BY count(*) DESC",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// The records made from power-origin applications: households, those waiting for
    /// platform data (no category), and those superseded by their project's record.
    pub fn power_origin_counts(&self) -> Result<PowerOriginCounts> {
        let conn = self.read();
        let (households, waiting, superseded) = conn.query_row(
            "SELECT coalesce(sum(json_extract(v.content, '$.decisions.category.id') = 'small_residential'), 0),
                    coalesce(sum(json_extract(v.content, '$.decisions.category.state') = 'none'
                                 AND json_extract(v.content, '$.progress.state') <> 'superseded'), 0),
                    coalesce(sum(json_extract(v.content, '$.progress.state') = 'superseded'), 0)
             FROM records r JOIN record_versions v ON v.record_id = r.id AND v.version = r.current_version
             WHERE r.source = 'power'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        Ok(PowerOriginCounts {
            households,
            waiting,
            superseded,
        })
    }

    /// The most recently updated records, in a state or all.
    pub fn records(&self, state: Option<&str>, limit: usize) -> Result<Vec<RecordRow>> {
        self.record_rows(
            "SELECT * FROM records WHERE ?1 IS NULL OR state = ?1 ORDER BY updated_at DESC, id LIMIT ?2",
            params![state, limit as i64],
        )
    }

    /// Records whose id or source key starts with `prefix` (a project code, `PE-2024-5301`, a
    /// power application id), most recently updated first.
    pub fn search_records(&self, prefix: &str, limit: usize) -> Result<Vec<RecordRow>> {
        // `LIKE` wildcards in what was typed are taken literally.
        let escaped = prefix
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        self.record_rows(
            "SELECT * FROM records WHERE id LIKE ?1 || '%' ESCAPE '\\' OR source_key LIKE ?1 || '%' ESCAPE '\\'
             ORDER BY updated_at DESC, id LIMIT ?2",
            params![escaped, limit as i64],
        )
    }

    /// The records `selection` picks (a `SELECT * FROM records …` with its order and limit),
    /// each with the summary of its current version. The selection runs first so that only the
    /// chosen records' content is read.
    fn record_rows(&self, selection: &str, args: impl rusqlite::Params) -> Result<Vec<RecordRow>> {
        let conn = self.read();
        let mut stmt = conn.prepare(&format!(
            "SELECT r.id, r.source_key, r.state, r.current_version, r.source_version, v.content, r.created_at, r.updated_at
             FROM ({selection}) r JOIN record_versions v ON v.record_id = r.id AND v.version = r.current_version
             ORDER BY r.updated_at DESC, r.id"
        ))?;
        let rows = stmt.query_map(args, |r| {
            let content: String = r.get(5)?;
            let value: serde_json::Value = serde_json::from_str(&content).unwrap_or_default();
            Ok(RecordRow {
                id: r.get(0)?,
                source_key: r.get(1)?,
                state: r.get(2)?,
                current_version: r.get(3)?,
                source_version: r.get(4)?,
                name: value["project"]["name"].as_str().unwrap_or_default().to_string(),
                district: value["site"]["district"].as_str().unwrap_or_default().to_string(),
                category: value["decisions"]["category"]["id"]
                    .as_str()
                    .or(value["decisions"]["category"]["state"].as_str())
                    .unwrap_or_default()
                    .to_string(),
                created_at: r.get(6)?,
                updated_at: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// The ids of the records built from one source (`approval` or `power`), in id order.
    pub fn records_by_source(&self, source: &str) -> Result<Vec<String>> {
        let conn = self.read();
        let mut stmt = conn.prepare_cached("SELECT id FROM records WHERE source = ?1 ORDER BY id")?;
        let rows = stmt.query_map([source], |r| r.get(0))?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// A record's state (`active` or `withdrawn`); `None` when there is no such record.
    pub fn record_state(&self, id: &str) -> Result<Option<String>> {
        Ok(self
            .read()
            .prepare_cached("SELECT state FROM records WHERE id = ?1")?
            .query_row([id], |r| r.get(0))
            .optional()?)
    }

    pub fn record_count(&self) -> Result<i64> {
        Ok(self
            .lock()
            .query_row("SELECT count(*) FROM records", [], |r| r.get(0))?)
    }

    /// A record's versions, oldest first; empty when there is no such record.
    pub fn record_versions(&self, id: &str) -> Result<Vec<VersionRow>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT version, change, content, content_sha256, lineage, source_version, document_sha256, created_at
             FROM record_versions WHERE record_id = ?1 ORDER BY version",
        )?;
        let rows = stmt.query_map([id], |r| {
            let content: String = r.get(2)?;
            Ok(VersionRow {
                version: r.get(0)?,
                change: r.get(1)?,
                content: serde_json::from_str(&content).unwrap_or_default(),
                content_sha256: r.get(3)?,
                lineage: r.get(4)?,
                source_version: r.get(5)?,
                document_sha256: r.get(6)?,
                created_at: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// Every (record, version, content hash) in the store, for comparing two stores.
    pub fn fingerprint(&self) -> Result<Vec<(String, i64, String, String)>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT v.record_id, v.version, v.content_sha256, r.state FROM record_versions v
             JOIN records r ON r.id = v.record_id ORDER BY v.record_id, v.version",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// Every processed (source, key, version) with its outcome, for comparing two stores.
    pub fn processed(&self) -> Result<Vec<(String, String, i64, String)>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT source, key, version, outcome FROM source_versions ORDER BY source, key, version",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// A raw document's bytes and every fetch that returned them.
    pub fn document(&self, sha256: &str) -> Result<Option<(Vec<u8>, Vec<FetchMeta>)>> {
        let conn = self.lock();
        let Some(bytes) = conn
            .query_row(
                "SELECT bytes FROM raw_documents WHERE sha256 = ?1",
                [sha256],
                |r| r.get::<_, Vec<u8>>(0),
            )
            .optional()?
        else {
            return Ok(None);
        };
        let mut stmt = conn.prepare(
            "SELECT source, method, url, status, request_id, content_type, fetched_at FROM fetches
             WHERE sha256 = ?1 ORDER BY id",
        )?;
        let fetches = stmt
            .query_map([sha256], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, Option<String>>(5)?,
                    r.get::<_, String>(6)?,
                ))
            })?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let fetches = fetches
            .into_iter()
            .map(
                |(source, method, url, status, request_id, content_type, fetched_at)| {
                    Ok(FetchMeta {
                        source,
                        method,
                        url,
                        status: status as u16,
                        request_id,
                        content_type,
                        fetched_at: parse_ts(&fetched_at)?,
                    })
                },
            )
            .collect::<Result<Vec<_>>>()?;
        Ok(Some((bytes, fetches)))
    }

    pub fn failures(&self, state: Option<&str>, limit: usize) -> Result<Vec<FailureRow>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT {FAILURE_COLUMNS} FROM failures WHERE ?1 IS NULL OR state = ?1 ORDER BY id DESC LIMIT ?2"
        ))?;
        let rows = stmt.query_map(params![state, limit as i64], failure_row)?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// Open (held) failures, one per project: its newest failure and how many it has, newest
    /// first; and how many projects have open failures in all.
    pub fn open_failures_by_project(&self, limit: usize) -> Result<(Vec<(FailureRow, i64)>, i64)> {
        let conn = self.lock();
        let columns = FAILURE_COLUMNS
            .split(", ")
            .map(|c| format!("f.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut stmt = conn.prepare(&format!(
            "SELECT {columns}, c.n FROM failures f
             JOIN (SELECT max(id) AS id, count(*) AS n FROM failures WHERE state = 'held'
                   GROUP BY source, coalesce(key, '')) c ON c.id = f.id
             ORDER BY f.id DESC LIMIT ?1"
        ))?;
        let rows = stmt
            .query_map([limit as i64], |r| Ok((failure_row(r)?, r.get::<_, i64>(12)?)))?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let total: i64 = conn.query_row(
            "SELECT count(*) FROM (SELECT 1 FROM failures WHERE state = 'held' GROUP BY source, coalesce(key, ''))",
            [],
            |r| r.get(0),
        )?;
        Ok((rows, total))
    }

    /// The failures of one item of a source (a project code, an application id), newest first.
    pub fn failures_of(&self, source: &str, key: &str) -> Result<Vec<FailureRow>> {
        let conn = self.read();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {FAILURE_COLUMNS} FROM failures WHERE source = ?1 AND key = ?2 ORDER BY id DESC"
        ))?;
        let rows = stmt.query_map(params![source, key], failure_row)?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// How many failures there are in a state (all states when `None`).
    pub fn failure_count(&self, state: Option<&str>) -> Result<i64> {
        Ok(self.lock().query_row(
            "SELECT count(*) FROM failures WHERE ?1 IS NULL OR state = ?1",
            [state],
            |r| r.get(0),
        )?)
    }

    pub fn failure(&self, id: i64) -> Result<Option<FailureRow>> {
        Ok(self
            .lock()
            .query_row(
                &format!("SELECT {FAILURE_COLUMNS} FROM failures WHERE id = ?1"),
                [id],
                failure_row,
            )
            .optional()?)
    }

    /// Outcome counts with their top reasons, over the given runs (all runs when empty).
    pub fn outcomes(&self, runs: &[i64]) -> Result<Vec<OutcomeCount>> {
        let conn = self.lock();
        let filter = if runs.is_empty() {
            String::new()
        } else {
            format!(
                "WHERE run_id IN ({})",
                runs.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(",")
            )
        };
        let mut stmt = conn.prepare(&format!(
            "SELECT outcome, coalesce(detail, ''), count(*) FROM source_versions {filter}
             GROUP BY outcome, coalesce(detail, '') ORDER BY outcome, count(*) DESC"
        ))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let mut out: Vec<OutcomeCount> = Vec::new();
        for (outcome, reason, count) in rows {
            if out.last().is_none_or(|o| o.outcome != outcome) {
                out.push(OutcomeCount {
                    outcome: outcome.clone(),
                    ..Default::default()
                });
            }
            if let Some(o) = out.last_mut() {
                o.count += count;
                if !reason.is_empty() && o.top_reasons.len() < 3 {
                    o.top_reasons.push((reason, count));
                }
            }
        }
        Ok(out)
    }
}

const FAILURE_COLUMNS: &str =
    "id, source, key, version, step, field, reason, detail, document_sha256, state, created_at, category";

fn failure_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<FailureRow> {
    let detail: Option<String> = r.get(7)?;
    Ok(FailureRow {
        id: r.get(0)?,
        source: r.get(1)?,
        key: r.get(2)?,
        version: r.get(3)?,
        step: r.get(4)?,
        field: r.get(5)?,
        reason: r.get(6)?,
        detail: detail.and_then(|d| serde_json::from_str(&d).ok()),
        document_sha256: r.get(8)?,
        state: r.get(9)?,
        created_at: r.get(10)?,
        category: r.get(11)?,
    })
}

/// See [`Store::power_origin_counts`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PowerOriginCounts {
    pub households: i64,
    pub waiting: i64,
    pub superseded: i64,
}

/// See [`Store::last_run`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastRun {
    pub id: i64,
    pub finished_at: Option<DateTime<Utc>>,
    pub outcome: String,
    pub error: Option<String>,
}

/// See [`Store::sample`].
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Sample {
    pub cursor_lag_seconds: std::collections::BTreeMap<String, f64>,
    pub failures_held: std::collections::BTreeMap<String, i64>,
    pub outbox_pending: i64,
    pub outbox_oldest_age_seconds: f64,
    pub materials_backlog: u64,
    pub records: i64,
    /// Entries of the audit log, and how many of them no signed checkpoint covers (0 after
    /// every commit of a gateway that has its key).
    pub audit_log_entries: i64,
    pub audit_log_unsigned: i64,
}

fn held_by_category(conn: &rusqlite::Connection) -> Result<std::collections::BTreeMap<String, i64>> {
    let mut stmt = conn
        .prepare_cached("SELECT category, count(*) FROM failures WHERE state = 'held' GROUP BY category")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    Ok(rows.collect::<std::result::Result<_, _>>()?)
}
