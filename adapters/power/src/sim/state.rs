//! The power side's applications and the rules of every call, without HTTP.
//!
//! Each call is a function from the current state, the request and "now" to an answer, so
//! that the rules of the interface (idempotent creates, `If-Match`, transitions, the listing's
//! order and cursor) can be read in one place and tested without a server.
// An interface error is the `Err` of every call; boxing it would add an allocation per
// refused call in a test server.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::wire::{
    Application, CreateApplication, Origin, PowerStatus, WaterStatus, WaterStatusReport, to_millis,
};

/// An answer other than success: HTTP status, the interface's error code, a message, and
/// extra top-level members of the body (`current`, `existingApplicationId`).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub error: &'static str,
    pub message: String,
    pub extra: Option<(&'static str, Value)>,
}

impl ApiError {
    fn new(status: u16, error: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            error,
            message: message.into(),
            extra: None,
        }
    }

    fn with(mut self, key: &'static str, value: Value) -> Self {
        self.extra = Some((key, value));
        self
    }

    pub fn body(&self) -> Value {
        let mut body = json!({ "error": self.error, "message": self.message });
        if let Some((k, v)) = &self.extra {
            body[*k] = v.clone();
        }
        body
    }
}

/// Where a change sits in the listing: its millisecond, then the order of changes within it.
pub type Position = (i64, u64);

/// What a successful change did, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Created,
    Replayed,
    Changed,
    NoOp,
}

#[derive(Debug, Default)]
pub struct Applications {
    apps: HashMap<String, (Application, Position)>,
    order: BTreeMap<Position, String>,
    keys: HashMap<String, (Value, String)>,
    external: HashMap<String, String>,
    seq: u64,
    ids: u64,
}

impl Applications {
    pub fn len(&self) -> usize {
        self.apps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.apps.is_empty()
    }

    pub fn get(&self, id: &str) -> Option<&Application> {
        self.apps.get(id).map(|(a, _)| a)
    }

    /// Every application, in listing order.
    pub fn all(&self) -> impl Iterator<Item = &Application> {
        self.order.values().filter_map(|id| self.get(id))
    }

    /// Stamps `app` as changed now: its `updatedAt` and its place at the end of the listing.
    fn touch(&mut self, id: &str, now: DateTime<Utc>) {
        self.seq += 1;
        let seq = self.seq;
        if let Some((app, pos)) = self.apps.get_mut(id) {
            self.order.remove(pos);
            app.updated_at = to_millis(now);
            *pos = (app.updated_at.timestamp_millis(), seq);
            self.order.insert(*pos, id.to_string());
        }
    }

    fn new_id(&mut self, now: DateTime<Utc>) -> String {
        self.ids += 1;
        format!(
            "KMGD{}{:05}",
            now.with_timezone(&shuiwu_wire::beijing()).format("%Y%m%d"),
            self.ids
        )
    }

    /// Inserts an application as the power side's own (origin `POWER`, or any fixture), at
    /// version 1 unless it says otherwise, changed `now`. Returns its id.
    pub fn insert(&mut self, mut app: Application, now: DateTime<Utc>) -> String {
        if app.application_id.is_empty() {
            app.application_id = self.new_id(now);
        }
        let id = app.application_id.clone();
        if let Some(e) = &app.external_id {
            self.external.insert(e.clone(), id.clone());
        }
        self.apps.insert(id.clone(), (app, (0, 0)));
        self.touch(&id, now);
        id
    }

    /// The power side's own progress on an application: a new `status`, version + 1.
    pub fn set_status(&mut self, id: &str, status: PowerStatus, now: DateTime<Utc>) -> Option<u64> {
        let (app, _) = self.apps.get_mut(id)?;
        app.status = status;
        app.version += 1;
        let v = app.version;
        self.touch(id, now);
        Some(v)
    }

    /// `POST /applications`.
    pub fn create(
        &mut self,
        key: Option<&str>,
        body: &Value,
        now: DateTime<Utc>,
    ) -> Result<(Effect, Application), ApiError> {
        let key = match key {
            Some(k) if !k.is_empty() && k.len() <= 64 => k,
            Some(_) => {
                return Err(ApiError::new(
                    400,
                    "invalid_parameter",
                    "Idempotency-Key: 1 to 64 characters",
                ));
            }
            None => {
                return Err(ApiError::new(
                    400,
                    "idempotency_key_required",
                    "Idempotency-Key is required",
                ));
            }
        };
        if let Some((seen, id)) = self.keys.get(key) {
            // "The same body" is the same JSON value: key order and white space do not count.
            if seen == body {
                let current = self
                    .get(id)
                    .cloned()
                    .ok_or_else(|| ApiError::new(500, "internal", "lost"))?;
                return Ok((Effect::Replayed, current));
            }
            return Err(ApiError::new(
                422,
                "idempotency_key_reused",
                "this Idempotency-Key was used with a different body",
            ));
        }
        let create = validate(body)?;
        if let Some(existing) = self.external.get(&create.external_id) {
            return Err(ApiError::new(
                409,
                "duplicate_external_id",
                "externalId already has an application",
            )
            .with("existingApplicationId", Value::from(existing.clone())));
        }
        let id = self.new_id(now);
        let app = Application {
            application_id: id.clone(),
            external_id: Some(create.external_id.clone()),
            origin: Origin::Water,
            status: PowerStatus::Submitted,
            water_status: Some(WaterStatus::Received),
            version: 1,
            project_code: create.project_code,
            project_name: create.project_name,
            applicant: create.applicant,
            site: create.site,
            power: create.power,
            water: create.water,
            submitted_at: create.submitted_at,
            updated_at: now,
        };
        self.external.insert(create.external_id, id.clone());
        self.keys.insert(key.to_string(), (body.clone(), id.clone()));
        self.apps.insert(id.clone(), (app, (0, 0)));
        self.touch(&id, now);
        let created = self
            .get(&id)
            .cloned()
            .ok_or_else(|| ApiError::new(500, "internal", "lost"))?;
        Ok((Effect::Created, created))
    }

    /// `PUT /applications/{id}/link`.
    pub fn link(
        &mut self,
        id: &str,
        if_match: Option<&str>,
        body: &Value,
        now: DateTime<Utc>,
    ) -> Result<(Effect, Application), ApiError> {
        let expected = parse_if_match(if_match)?;
        let external_id = body["externalId"]
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ApiError::new(422, "validation_failed", "externalId is required"))?
            .to_string();
        let app = self.current(id)?;
        if app.origin != Origin::Power {
            return Err(ApiError::new(
                422,
                "invalid_origin",
                "only an application of origin POWER can be linked",
            ));
        }
        match &app.external_id {
            Some(e) if *e == external_id => return Ok((Effect::NoOp, app)),
            Some(_) => {
                return Err(ApiError::new(
                    409,
                    "already_linked",
                    "the application is linked to another externalId",
                ));
            }
            None => {}
        }
        if let Some(other) = self.external.get(&external_id) {
            return Err(ApiError::new(
                409,
                "duplicate_external_id",
                "externalId already has an application",
            )
            .with("existingApplicationId", Value::from(other.clone())));
        }
        if app.version != expected {
            return Err(mismatch(&app));
        }
        self.external.insert(external_id.clone(), id.to_string());
        if let Some((a, _)) = self.apps.get_mut(id) {
            a.external_id = Some(external_id);
            a.version += 1;
        }
        self.touch(id, now);
        Ok((Effect::Changed, self.current(id)?))
    }

    /// `PUT /applications/{id}/water-status`.
    pub fn water_status(
        &mut self,
        id: &str,
        if_match: Option<&str>,
        body: &Value,
        now: DateTime<Utc>,
    ) -> Result<(Effect, Application), ApiError> {
        let expected = parse_if_match(if_match)?;
        let report: WaterStatusReport = serde_json::from_value(body.clone())
            .map_err(|e| ApiError::new(422, "validation_failed", format!("body: {e}")))?;
        let app = self.current(id)?;
        // The order of checks: the status it already has is a no-op even with a stale
        // If-Match; then the version; then the transition.
        if app.water_status == Some(report.water_status) {
            return Ok((Effect::NoOp, app));
        }
        if app.version != expected {
            return Err(mismatch(&app));
        }
        if !report.water_status.may_follow(app.water_status) {
            return Err(ApiError::new(
                422,
                "invalid_transition",
                format!(
                    "waterStatus {} cannot follow {}",
                    report.water_status.as_str(),
                    app.water_status.map_or("(none)", WaterStatus::as_str)
                ),
            ));
        }
        if let Some((a, _)) = self.apps.get_mut(id) {
            a.water_status = Some(report.water_status);
            a.version += 1;
        }
        self.touch(id, now);
        Ok((Effect::Changed, self.current(id)?))
    }

    /// `GET /applications?updatedAfter&limit&cursor`: changed strictly after `after`, past the
    /// cursor, oldest change first. The next cursor is `None` when this page reached the end.
    pub fn list(
        &self,
        after: Option<DateTime<Utc>>,
        limit: usize,
        cursor: Option<Position>,
    ) -> (Vec<Application>, Option<Position>) {
        let after_ms = after.map_or(i64::MIN, |t| t.timestamp_millis());
        let start = cursor.map_or((after_ms.saturating_add(1), 0), |c| {
            if c.0 <= after_ms {
                (after_ms.saturating_add(1), 0)
            } else {
                (c.0, c.1 + 1)
            }
        });
        let mut items = Vec::new();
        let mut last = None;
        let mut more = false;
        for (pos, id) in self.order.range(start..) {
            if items.len() == limit {
                more = true;
                break;
            }
            if let Some(a) = self.get(id) {
                items.push(a.clone());
                last = Some(*pos);
            }
        }
        (items, if more { last } else { None })
    }

    fn current(&self, id: &str) -> Result<Application, ApiError> {
        self.get(id)
            .cloned()
            .ok_or_else(|| ApiError::new(404, "not_found", format!("no application {id}")))
    }
}

fn mismatch(app: &Application) -> ApiError {
    ApiError::new(
        412,
        "version_mismatch",
        format!("the application is at version {}", app.version),
    )
    .with("current", serde_json::to_value(app).unwrap_or_default())
}

/// `4`, `"4"` or `W/"4"`.
fn parse_if_match(value: Option<&str>) -> Result<u64, ApiError> {
    let v = value.ok_or_else(|| ApiError::new(400, "if_match_required", "If-Match is required"))?;
    let v = v.trim();
    let v = v.strip_prefix("W/").unwrap_or(v);
    let v = v.strip_prefix('"').and_then(|s| s.strip_suffix('"')).unwrap_or(v);
    v.parse().map_err(|_| {
        ApiError::new(
            400,
            "invalid_parameter",
            format!("If-Match {v:?} is not a version"),
        )
    })
}

/// The create body's required members (`externalId`, `origin` = `WATER`, `applicant.name`,
/// `site.regionCode`, `submittedAt`) and shape.
fn validate(body: &Value) -> Result<CreateApplication, ApiError> {
    let fail = |m: String| ApiError::new(422, "validation_failed", m);
    let create: CreateApplication =
        serde_json::from_value(body.clone()).map_err(|e| fail(format!("body: {e}")))?;
    if create.external_id.is_empty() {
        return Err(fail("externalId is required".into()));
    }
    if create.origin != Origin::Water {
        return Err(fail("origin must be WATER".into()));
    }
    if create.applicant.name.trim().is_empty() {
        return Err(fail("applicant.name is required".into()));
    }
    if create.site.region_code.trim().is_empty() {
        return Err(fail("site.regionCode is required".into()));
    }
    Ok(create)
}

/// An opaque cursor: the position of the last item served.
pub fn encode_cursor((ms, seq): Position) -> String {
    format!("c{}", hex::encode(format!("{ms}:{seq}")))
}

pub fn decode_cursor(text: &str) -> Option<Position> {
    let bytes = hex::decode(text.strip_prefix('c')?).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (ms, seq) = text.split_once(':')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::parse_time;

    fn body(external: &str) -> Value {
        json!({
            "externalId": external, "origin": "WATER", "projectCode": "2022-530112-47-01-587143",
            "applicant": {"kind": "ORGANISATION", "name": "昆明某科技有限公司"},
            "site": {"regionCode": "530112"}, "submittedAt": "2024-03-05T14:30:00+08:00"
        })
    }

    fn now() -> DateTime<Utc> {
        parse_time("2024-03-06T09:12:44.120+08:00").unwrap()
    }

    #[test]
    fn creates_are_idempotent_by_key_and_body() {
        let mut s = Applications::default();
        let (e, a) = s.create(Some("k1"), &body("wj-1"), now()).unwrap();
        assert_eq!(
            (e, a.version, a.water_status),
            (Effect::Created, 1, Some(WaterStatus::Received))
        );
        s.set_status(&a.application_id, PowerStatus::Accepted, now());
        // Same key, same value in another key order: the current resource.
        let reordered: Value = serde_json::from_str(
            r#"{"submittedAt":"2024-03-05T14:30:00+08:00","site":{"regionCode":"530112"},
                "applicant":{"name":"昆明某科技有限公司","kind":"ORGANISATION"},
                "projectCode":"2022-530112-47-01-587143","origin":"WATER","externalId":"wj-1"}"#,
        )
        .unwrap();
        let (e, again) = s.create(Some("k1"), &reordered, now()).unwrap();
        assert_eq!((e, again.version), (Effect::Replayed, 2));
        assert_eq!(
            s.create(Some("k1"), &body("wj-2"), now()).unwrap_err().error,
            "idempotency_key_reused"
        );
        let dup = s.create(Some("k2"), &body("wj-1"), now()).unwrap_err();
        assert_eq!((dup.status, dup.error), (409, "duplicate_external_id"));
        assert_eq!(
            dup.body()["existingApplicationId"],
            Value::from(a.application_id.clone())
        );
        // A create that fails validation does not keep its key.
        let mut bad = body("wj-3");
        bad["site"]["regionCode"] = Value::from("");
        assert_eq!(
            s.create(Some("k3"), &bad, now()).unwrap_err().error,
            "validation_failed"
        );
        assert_eq!(
            s.create(Some("k3"), &body("wj-3"), now()).unwrap().0,
            Effect::Created
        );
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn water_status_checks_no_op_then_version_then_transition() {
        let mut s = Applications::default();
        let (_, a) = s.create(Some("k"), &body("wj-1"), now()).unwrap();
        let id = a.application_id.as_str();
        let report = |w: &str| json!({"waterStatus": w, "at": "2024-03-06T10:00:00+08:00"});
        assert_eq!(
            s.water_status(id, None, &report("ACCEPTED"), now())
                .unwrap_err()
                .error,
            "if_match_required"
        );
        let (e, a) = s
            .water_status(id, Some("W/\"1\""), &report("SURVEYED"), now())
            .unwrap();
        assert_eq!((e, a.version), (Effect::Changed, 2), "skipping ahead");
        assert_eq!(
            s.water_status(id, Some("1"), &report("SURVEYED"), now())
                .unwrap()
                .0,
            Effect::NoOp
        );
        let stale = s
            .water_status(id, Some("1"), &report("CONNECTED"), now())
            .unwrap_err();
        assert_eq!(
            (stale.status, stale.body()["current"]["version"].as_u64()),
            (412, Some(2))
        );
        let back = s
            .water_status(id, Some("\"2\""), &report("ACCEPTED"), now())
            .unwrap_err();
        assert_eq!(back.error, "invalid_transition");
    }

    #[test]
    fn links_only_power_origin_applications_once() {
        let mut s = Applications::default();
        let (_, water) = s.create(Some("k"), &body("wj-1"), now()).unwrap();
        let mut power = water.clone();
        power.application_id = String::new();
        power.origin = Origin::Power;
        power.external_id = None;
        power.water_status = None;
        let pid = s.insert(power, now());
        let link = |e: &str| json!({ "externalId": e });
        assert_eq!(
            s.link(&water.application_id, Some("1"), &link("wj-9"), now())
                .unwrap_err()
                .error,
            "invalid_origin"
        );
        assert_eq!(
            s.link(&pid, Some("1"), &link("wj-1"), now()).unwrap_err().error,
            "duplicate_external_id"
        );
        assert_eq!(
            s.link(&pid, Some("7"), &link("wj-2"), now()).unwrap_err().status,
            412
        );
        assert_eq!(
            s.link(&pid, Some("1"), &link("wj-2"), now()).unwrap().0,
            Effect::Changed
        );
        assert_eq!(
            s.link(&pid, Some("1"), &link("wj-2"), now()).unwrap().0,
            Effect::NoOp
        );
        assert_eq!(
            s.link(&pid, Some("2"), &link("wj-3"), now()).unwrap_err().error,
            "already_linked"
        );
    }

    #[test]
    fn the_listing_neither_skips_nor_repeats_within_a_shared_millisecond() {
        let mut s = Applications::default();
        for i in 0..7 {
            s.create(Some(&format!("k{i}")), &body(&format!("wj-{i}")), now())
                .unwrap();
        }
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let (items, next) = s.list(None, 3, cursor);
            seen.extend(items.iter().map(|a| a.application_id.clone()));
            match next {
                Some(c) => cursor = decode_cursor(&encode_cursor(c)),
                None => break,
            }
        }
        assert_eq!(seen.len(), 7);
        seen.dedup();
        assert_eq!(seen.len(), 7);
        // Strictly after, to the millisecond: a poll from the shared millisecond sees none.
        assert!(s.list(Some(now()), 100, None).0.is_empty());
    }
}
