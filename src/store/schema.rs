//! The database schema and its migrations, by `PRAGMA user_version`.
//!
//! Migrations only ever append: a database written by an older gateway is brought forward,
//! never rewritten. Every table is `STRICT` so a wrong type is an error, not a silent cast.

pub const MIGRATIONS: &[&str] = &[
    // 1: raw documents, fetches, records, versions, source versions, failures, cursors, runs.
    r#"
CREATE TABLE raw_documents (
    sha256      TEXT PRIMARY KEY,
    bytes       BLOB NOT NULL,
    size        INTEGER NOT NULL,
    first_seen  TEXT NOT NULL
) STRICT;

CREATE TABLE fetches (
    id            INTEGER PRIMARY KEY,
    sha256        TEXT NOT NULL REFERENCES raw_documents(sha256),
    source        TEXT NOT NULL,
    method        TEXT NOT NULL,
    url           TEXT NOT NULL,
    status        INTEGER NOT NULL,
    request_id    TEXT,
    content_type  TEXT,
    fetched_at    TEXT NOT NULL,
    run_id        INTEGER
) STRICT;
CREATE INDEX fetches_by_document ON fetches(sha256);

CREATE TABLE mapping_files (
    sha256   TEXT PRIMARY KEY,
    file     TEXT NOT NULL,
    content  TEXT NOT NULL,
    first_used TEXT NOT NULL
) STRICT;

CREATE TABLE runs (
    id           INTEGER PRIMARY KEY,
    started_at   TEXT NOT NULL,
    finished_at  TEXT,
    outcome      TEXT,
    error        TEXT
) STRICT;

CREATE TABLE records (
    id               TEXT PRIMARY KEY,
    source           TEXT NOT NULL,
    source_key       TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('active', 'withdrawn')),
    current_version  INTEGER NOT NULL,
    source_version   INTEGER NOT NULL,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    UNIQUE (source, source_key)
) STRICT;

CREATE TABLE record_versions (
    record_id        TEXT NOT NULL REFERENCES records(id),
    version          INTEGER NOT NULL,
    change           TEXT NOT NULL CHECK (change IN ('created', 'updated', 'withdrawn')),
    content          TEXT NOT NULL,
    content_sha256   TEXT NOT NULL,
    lineage          TEXT NOT NULL,
    source_version   INTEGER NOT NULL,
    document_sha256  TEXT NOT NULL REFERENCES raw_documents(sha256),
    created_at       TEXT NOT NULL,
    run_id           INTEGER,
    PRIMARY KEY (record_id, version)
) STRICT;

-- One row per (source, key, version) ever processed: the idempotence key of the pipeline.
CREATE TABLE source_versions (
    source           TEXT NOT NULL,
    key              TEXT NOT NULL,
    version          INTEGER NOT NULL,
    outcome          TEXT NOT NULL,
    detail           TEXT,
    document_sha256  TEXT,
    record_id        TEXT,
    record_version   INTEGER,
    run_id           INTEGER,
    processed_at     TEXT NOT NULL,
    PRIMARY KEY (source, key, version)
) STRICT;
CREATE INDEX source_versions_by_run ON source_versions(run_id);

CREATE TABLE failures (
    id               INTEGER PRIMARY KEY,
    fingerprint      TEXT NOT NULL UNIQUE,
    source           TEXT NOT NULL,
    key              TEXT,
    version          INTEGER,
    step             TEXT NOT NULL,
    field            TEXT,
    reason           TEXT NOT NULL,
    detail           TEXT,
    document_sha256  TEXT REFERENCES raw_documents(sha256),
    state            TEXT NOT NULL DEFAULT 'held' CHECK (state IN ('held', 'superseded', 'dismissed', 'replayed')),
    run_id           INTEGER,
    created_at       TEXT NOT NULL
) STRICT;
CREATE INDEX failures_by_key ON failures(source, key);

-- Listed projects whose detail said 4040: tried again on later passes, held after a limit.
CREATE TABLE listing_misses (
    source     TEXT NOT NULL,
    key        TEXT NOT NULL,
    version    INTEGER NOT NULL,
    attempts   INTEGER NOT NULL,
    last_seen  TEXT NOT NULL,
    PRIMARY KEY (source, key, version)
) STRICT;

CREATE TABLE cursors (
    source      TEXT PRIMARY KEY,
    watermark   TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    run_id      INTEGER
) STRICT;
"#,
    // 2: operator actions (stage events, reassignments) and raised deadline alerts.
    r#"
CREATE TABLE operator_actions (
    id          INTEGER PRIMARY KEY,
    record_id   TEXT NOT NULL REFERENCES records(id),
    action      TEXT NOT NULL,
    kind        TEXT NOT NULL,
    at          TEXT NOT NULL,
    by          TEXT NOT NULL,
    created_at  TEXT NOT NULL
) STRICT;
CREATE INDEX operator_actions_by_record ON operator_actions(record_id, id);

-- The record version an operator action produced, if it changed the record.
ALTER TABLE record_versions ADD COLUMN action_id INTEGER REFERENCES operator_actions(id);

CREATE TABLE deadline_alerts (
    record_id  TEXT NOT NULL REFERENCES records(id),
    stage      TEXT NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('warning', 'alarm')),
    due_at     TEXT NOT NULL,
    raised_at  TEXT NOT NULL,
    PRIMARY KEY (record_id, stage, kind, due_at)
) STRICT;
"#,
    // 3: zero-materials checks and the one-time notices.
    r#"
CREATE TABLE materials_checks (
    id              INTEGER PRIMARY KEY,
    record_id       TEXT NOT NULL REFERENCES records(id),
    record_version  INTEGER NOT NULL,
    checked_at      TEXT NOT NULL,
    checklist       TEXT NOT NULL,
    zero_materials  INTEGER NOT NULL,
    category        TEXT NOT NULL,
    -- Lineage of the licence facts the check read (document hash, XML path, raw text, mapping).
    lineage         TEXT,
    run_id          INTEGER
) STRICT;
CREATE INDEX materials_checks_by_record ON materials_checks(record_id, id);

-- Why an operator let an action through a rule (missing materials), when one did.
ALTER TABLE operator_actions ADD COLUMN override_reason TEXT;

-- One notice per record (一次性告知): issued once, never item by item.
CREATE TABLE notices (
    record_id  TEXT PRIMARY KEY REFERENCES records(id),
    issued_at  TEXT NOT NULL,
    items      TEXT NOT NULL,
    text       TEXT NOT NULL
) STRICT;
"#,
    // 4: the hash-chained audit log.
    r#"
CREATE TABLE audit_log (
    seq        INTEGER PRIMARY KEY,
    at         TEXT NOT NULL,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    subject    TEXT NOT NULL,
    detail     TEXT NOT NULL,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL
) STRICT;
"#,
    // 5: how a failure left the queue: replayed or dismissed, by whom, why.
    r#"
ALTER TABLE failures ADD COLUMN resolved_at TEXT;
ALTER TABLE failures ADD COLUMN resolved_by TEXT;
ALTER TABLE failures ADD COLUMN resolution TEXT;

-- When a listed project version first failed to be fetched, to tell a lasting fault from a blip.
ALTER TABLE listing_misses ADD COLUMN first_seen TEXT;
"#,
    // 6: the audit log's head, written with every entry: a deleted last entry no longer passes
    // for an intact log, and the next entry does not silently chain over the gap.
    r#"
CREATE TABLE audit_head (
    one   INTEGER PRIMARY KEY CHECK (one = 1),
    seq   INTEGER NOT NULL,
    hash  TEXT NOT NULL
) STRICT;
INSERT INTO audit_head (one, seq, hash) SELECT 1, seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1;
"#,
    // 7: joint applications with the power utility, and the outbox of calls to it.
    r#"
-- Each joint application as the gateway last saw it (never at an older version than stored).
CREATE TABLE power_applications (
    application_id   TEXT PRIMARY KEY,
    external_id      TEXT,
    origin           TEXT NOT NULL CHECK (origin IN ('WATER', 'POWER')),
    status           TEXT NOT NULL,
    water_status     TEXT,
    version          INTEGER NOT NULL,
    project_code     TEXT,
    -- The water record it belongs to, once created or linked by the gateway.
    record_id        TEXT REFERENCES records(id),
    -- The answer it was last read from.
    document_sha256  TEXT REFERENCES raw_documents(sha256),
    submitted_at     TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    seen_at          TEXT NOT NULL
) STRICT;
CREATE INDEX power_applications_by_project ON power_applications(project_code);
CREATE INDEX power_applications_by_record ON power_applications(record_id);

-- Every call the gateway means to make to the power side, written in the transaction of the
-- record change that causes it; delivered in order per record, at least once, with a key
-- that makes a repeat harmless.
CREATE TABLE outbox (
    id               INTEGER PRIMARY KEY,
    record_id        TEXT NOT NULL REFERENCES records(id),
    kind             TEXT NOT NULL CHECK (kind IN ('create', 'link', 'water_status')),
    idempotency_key  TEXT NOT NULL UNIQUE,
    application_id   TEXT,
    body             TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('pending', 'done', 'held')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TEXT NOT NULL,
    last_error       TEXT,
    outcome          TEXT,
    answer_sha256    TEXT REFERENCES raw_documents(sha256),
    created_at       TEXT NOT NULL,
    done_at          TEXT
) STRICT;
CREATE INDEX outbox_by_record ON outbox(record_id, id);
CREATE INDEX outbox_by_state ON outbox(state, next_attempt_at);
"#,
    // 8: webhook events pushed by the power side, kept before they are acknowledged.
    r#"
CREATE TABLE power_events (
    event_id         TEXT PRIMARY KEY,
    type             TEXT NOT NULL,
    application_id   TEXT NOT NULL,
    version          INTEGER NOT NULL,
    document_sha256  TEXT NOT NULL REFERENCES raw_documents(sha256),
    received_at      TEXT NOT NULL
) STRICT;
"#,
    // 9: a failure's category (what kind of problem, e.g. `building.floor_area_m2: non_negative`),
    // for replaying and counting failures by kind. Failures held before it get their field, or
    // their step when they name no field.
    r#"
ALTER TABLE failures ADD COLUMN category TEXT NOT NULL DEFAULT '';
UPDATE failures SET category = coalesce(field, step);
CREATE INDEX failures_by_category ON failures(state, category);
"#,
    // 10: the mapping and policy files each record version was made with (found without
    // reading its lineage), and remaps: a run of `gateway remap`, resumable, that the versions
    // it commits name. Versions written before get the hashes their lineage holds.
    r#"
CREATE TABLE remaps (
    id               INTEGER PRIMARY KEY,
    started_at       TEXT NOT NULL,
    finished_at      TEXT,
    by               TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('running', 'finished', 'interrupted')),
    selection        TEXT NOT NULL,
    rules            TEXT NOT NULL,
    last_record_id   TEXT,
    examined         INTEGER NOT NULL DEFAULT 0,
    changed          INTEGER NOT NULL DEFAULT 0,
    failed           INTEGER NOT NULL DEFAULT 0
) STRICT;
ALTER TABLE record_versions ADD COLUMN mapping_sha256 TEXT;
ALTER TABLE record_versions ADD COLUMN policy_sha256 TEXT;
ALTER TABLE record_versions ADD COLUMN remap_id INTEGER REFERENCES remaps(id);
UPDATE record_versions SET mapping_sha256 = json_extract(lineage, '$.sources[0].mapping_sha256'),
                           policy_sha256 = json_extract(lineage, '$.decisions[0].policy_sha256');
"#,
    // 11: partial indexes of the record versions that the console's overview and deadlines
    // board and `/metrics` look for among all of them: running stages, and records without a
    // category. Without them each request parsed the content of every record (3 s at 100,000).
    r#"
CREATE INDEX record_versions_running ON record_versions(record_id, version)
    WHERE json_extract(content, '$.progress.state') IN ('in_progress', 'paused');
CREATE INDEX record_versions_no_category ON record_versions(record_id, version)
    WHERE json_extract(content, '$.decisions.category.state') = 'none';
"#,
    // 12: what the timeliness report reads of each record's current version, beside the
    // record (see `report::facts`), so that a report does not parse every record's content.
    r#"
ALTER TABLE records ADD COLUMN report_facts TEXT;
UPDATE records SET report_facts = (
    SELECT json_object(
        'decisions', CASE WHEN v.content -> '$.decisions' IS NULL OR json_type(v.content, '$.decisions') = 'null' THEN NULL
                     ELSE json_object('customer_manager', v.content -> '$.decisions.customer_manager',
                                      'category', v.content -> '$.decisions.category',
                                      'fee', v.content -> '$.decisions.fee') END,
        'progress', CASE WHEN v.content -> '$.progress' IS NULL OR json_type(v.content, '$.progress') = 'null' THEN NULL
                    ELSE json_object('stages', v.content -> '$.progress.stages') END)
    FROM record_versions v WHERE v.record_id = records.id AND v.version = records.current_version);
"#,
    // 13: the report's facts become one narrow line per record (`report::Line`), ordered by
    // the day the record was created, with the outcome of its latest materials check: a report
    // reads its period's lines in order and parses nothing. The lines are written from the
    // records' current content after this step (`reports::fill_lines`, Rust: the fee rules and
    // instants are computed as the gateway computes them), and replace migration 12's facts.
    r#"
CREATE TABLE report_lines (
    created_at      TEXT NOT NULL,
    record_id       TEXT NOT NULL REFERENCES records(id),
    -- The record's current version the line was made from.
    version         INTEGER NOT NULL,
    company         TEXT NOT NULL,
    manager         TEXT NOT NULL,
    category        TEXT NOT NULL,
    free            INTEGER NOT NULL,
    fee_rule        TEXT NOT NULL,
    -- The timed stages (`report::Line::stages_text`).
    stages          TEXT NOT NULL,
    -- The latest materials check: zero materials achieved, and the items missing (JSON array).
    zero_materials  INTEGER,
    missing         TEXT,
    PRIMARY KEY (created_at, record_id)
) STRICT, WITHOUT ROWID;
ALTER TABLE records DROP COLUMN report_facts;
"#,
    // 14: the transparency log (`store::tlog`): one entry per row change, each with its RFC 9162
    // leaf hash, appended when the transaction that made the change commits (`tlog::seal`);
    // the head (size, tree hash, the tree's right edge); signed checkpoints. Every row already
    // stored is logged when this step runs (`tlog::adopt`).
    r#"
CREATE TABLE tlog_entries (
    -- The leaf's index in the tree, from 0.
    idx   INTEGER PRIMARY KEY,
    body  TEXT NOT NULL,
    leaf  BLOB NOT NULL
) STRICT;
CREATE TABLE tlog_head (
    one        INTEGER PRIMARY KEY CHECK (one = 1),
    size       INTEGER NOT NULL,
    tree_hash  TEXT NOT NULL CHECK (tree_hash IN ('sha256', 'sm3')),
    -- The roots of the complete subtrees the size decomposes into, largest first.
    frontier   BLOB NOT NULL
) STRICT;
INSERT INTO tlog_head (one, size, tree_hash, frontier) VALUES (1, 0, 'sha256', x'');
CREATE TABLE tlog_checkpoints (
    size       INTEGER PRIMARY KEY,
    -- The signed note (C2SP tlog-checkpoint text and signature lines).
    note       TEXT NOT NULL,
    signed_at  TEXT NOT NULL
) STRICT;
"#,
    // 15: the coverage ledger: each listing window read completely, in the transaction that
    // moved the cursor past it: its bounds and each page's hash with the listing total given
    // with it. What was read before the ledger is one row per source up to its cursor then,
    // with an empty start ("from the configured start") and no pages.
    r#"
CREATE TABLE coverage_windows (
    source        TEXT NOT NULL,
    start         TEXT NOT NULL,
    end           TEXT NOT NULL,
    -- JSON: [{"sha256": "…", "total": n}, …]; null for the row adopted at this migration.
    pages         TEXT,
    run_id        INTEGER,
    committed_at  TEXT NOT NULL,
    PRIMARY KEY (source, start)
) STRICT;
INSERT INTO coverage_windows (source, start, end, pages, run_id, committed_at)
    SELECT source, '', watermark, NULL, run_id, updated_at FROM cursors;
"#,
];

/// The migration that adds the transparency log: the rows stored before are logged after it
/// (`tlog::adopt`).
pub const TLOG: usize = 14;

/// The migration after which the report lines are filled (`reports::fill_lines`).
pub const REPORT_LINES: usize = 13;
