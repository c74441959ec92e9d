//! The simulated platform's data: generated projects, explicit versions, visibility.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;
use shuiwu_wire::ids::is_kunming_authority;
use shuiwu_wire::{format_beijing, parse_beijing};

use super::generate::{Generator, mix};

/// One version of one project.
#[derive(Debug, Clone)]
pub struct Version {
    pub bbh: u64,
    pub gxsj: DateTime<Utc>,
    pub visible_at: DateTime<Utc>,
    pub doc: Value,
}

/// A listing entry, in the platform's order: `GXSJ`, then `XMDM`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Listed {
    pub gxsj: DateTime<Utc>,
    pub xmdm: String,
    pub bbh: u64,
    /// The generated index, when the entry is a generated base version: its name and status
    /// are only computed for entries on the requested page.
    pub index: Option<u64>,
}

/// All projects the platform holds.
#[derive(Debug)]
pub struct Projects {
    pub generator: Generator,
    /// Projects with explicit versions: fixtures, and generated ones changed since start.
    explicit: HashMap<String, Vec<Version>>,
    purged: HashSet<String>,
    /// Longest delay between a version's `GXSJ` and its visibility.
    pub lag: Duration,
}

impl Projects {
    pub fn new(generator: Generator, lag: Duration) -> Self {
        Projects {
            generator,
            explicit: HashMap::new(),
            purged: HashSet::new(),
            lag,
        }
    }

    /// The visibility delay of one version: a hash of its identity, so deterministic, and
    /// independent between projects (a later `GXSJ` can become visible first).
    fn visible_at(&self, xmdm: &str, bbh: u64, gxsj: DateTime<Utc>) -> DateTime<Utc> {
        let secs = self.lag.num_seconds();
        if secs <= 0 {
            return gxsj;
        }
        let h = xmdm.bytes().fold(mix(bbh), |acc, b| mix(acc ^ b as u64));
        gxsj + Duration::seconds((h % (secs as u64 + 1)) as i64)
    }

    /// Adds a project version from a full record (fixtures, tests). `BBH` and `GXSJ` are read
    /// from the record; it becomes visible with the usual lag.
    pub fn insert(&mut self, doc: Value) -> Result<(), String> {
        let xmdm = doc["XMDM"].as_str().ok_or("record lacks XMDM")?.to_string();
        let bbh = doc["BBH"].as_u64().ok_or("record lacks a numeric BBH")?;
        let gxsj = doc["GXSJ"]
            .as_str()
            .and_then(parse_beijing)
            .ok_or("record lacks GXSJ yyyy-MM-dd HH:mm:ss")?;
        let visible_at = self.visible_at(&xmdm, bbh, gxsj);
        let versions = self.explicit.entry(xmdm).or_default();
        versions.push(Version {
            bbh,
            gxsj,
            visible_at,
            doc,
        });
        versions.sort_by_key(|v| v.bbh);
        Ok(())
    }

    /// Records a change to a project at `now`: a new version with `BBH` + 1 and `GXSJ` = now.
    /// Returns the new version number, or `None` if no such project exists.
    pub fn change(&mut self, xmdm: &str, now: DateTime<Utc>, edit: impl FnOnce(&mut Value)) -> Option<u64> {
        let latest = self.latest_any(xmdm)?;
        let now = now - Duration::nanoseconds(now.timestamp_subsec_nanos() as i64);
        let mut doc = latest.doc.clone();
        let bbh = latest.bbh + 1;
        edit(&mut doc);
        doc["BBH"] = Value::from(bbh);
        doc["GXSJ"] = Value::from(format_beijing(now));
        let visible_at = self.visible_at(xmdm, bbh, now);
        let explicit = self
            .explicit
            .entry(xmdm.to_string())
            .or_insert_with(|| vec![latest]);
        explicit.push(Version {
            bbh,
            gxsj: now,
            visible_at,
            doc,
        });
        Some(bbh)
    }

    /// Removes a project from the platform entirely.
    pub fn purge(&mut self, xmdm: &str) {
        self.purged.insert(xmdm.to_string());
    }

    /// The newest version, visible or not.
    fn latest_any(&self, xmdm: &str) -> Option<Version> {
        if self.purged.contains(xmdm) {
            return None;
        }
        if let Some(v) = self.explicit.get(xmdm) {
            return v.last().cloned();
        }
        let i = self.generator.index_of(xmdm)?;
        Some(self.generated(i))
    }

    fn generated(&self, i: u64) -> Version {
        let xmdm = self.generator.xmdm(i);
        let bbh = self.generator.bbh(i);
        let gxsj = self.generator.gxsj(i);
        Version {
            bbh,
            gxsj,
            visible_at: self.visible_at(&xmdm, bbh, gxsj),
            doc: self.generator.project(i),
        }
    }

    /// The newest version visible at `now`.
    pub fn detail(&self, xmdm: &str, now: DateTime<Utc>) -> Option<Version> {
        if self.purged.contains(xmdm) {
            return None;
        }
        if let Some(versions) = self.explicit.get(xmdm) {
            return versions.iter().rev().find(|v| v.visible_at <= now).cloned();
        }
        let i = self.generator.index_of(xmdm)?;
        let v = self.generated(i);
        (v.visible_at <= now).then_some(v)
    }

    /// Whether the account may read this project: its site or its registering authority is in
    /// Kunming.
    pub fn in_service_area(doc: &Value) -> bool {
        let site = doc["JSDDXZQH"].as_str().unwrap_or_default();
        let authority = doc["XZQHDM"].as_str().unwrap_or_default();
        is_kunming_authority(site) || is_kunming_authority(authority)
    }

    /// Every project whose newest visible version has `GXSJ` in `[start, end)`, in listing
    /// order.
    pub fn window(&self, start: DateTime<Utc>, end: DateTime<Utc>, now: DateTime<Utc>) -> Vec<Listed> {
        let mut out = Vec::new();
        let g = &self.generator;
        let mut i = g.first_at_or_after(start);
        while i < g.count && g.gxsj(i) < end {
            let xmdm = g.xmdm(i);
            if !self.explicit.contains_key(&xmdm) && !self.purged.contains(&xmdm) {
                let bbh = g.bbh(i);
                let gxsj = g.gxsj(i);
                if self.visible_at(&xmdm, bbh, gxsj) <= now {
                    out.push(Listed {
                        gxsj,
                        xmdm,
                        bbh,
                        index: Some(i),
                    });
                }
            }
            i += 1;
        }
        for (xmdm, versions) in &self.explicit {
            if self.purged.contains(xmdm) {
                continue;
            }
            if let Some(v) = versions.iter().rev().find(|v| v.visible_at <= now)
                && v.gxsj >= start
                && v.gxsj < end
                && Self::in_service_area(&v.doc)
            {
                out.push(Listed {
                    gxsj: v.gxsj,
                    xmdm: xmdm.clone(),
                    bbh: v.bbh,
                    index: None,
                });
            }
        }
        out.sort();
        out
    }
}

impl Projects {
    /// The summary fields of a listed entry: `(XMMC, ZT)`.
    pub fn summary(&self, entry: &Listed) -> (String, String) {
        let doc = match entry.index {
            Some(i) => self.generator.project(i),
            None => self
                .explicit
                .get(&entry.xmdm)
                .and_then(|vs| vs.iter().find(|v| v.bbh == entry.bbh))
                .map(|v| v.doc.clone())
                .unwrap_or_default(),
        };
        (
            doc["XMMC"].as_str().unwrap_or_default().to_string(),
            doc["ZT"].as_str().unwrap_or("1").to_string(),
        )
    }
}
