//! Every parser fed by a platform or an operator, as one function each that must never panic,
//! hang or allocate without bound, whatever the input. The same functions are driven by
//! property tests on stable (`tests/fuzz_properties.rs`, in CI) and by cargo-fuzz on nightly
//! (`fuzz/`, see the README).

use std::sync::{Arc, OnceLock};

use crate::mapping::{self, Mapping, MappingSet};
use crate::rebuild::Rebuilder;

fn mappings() -> &'static (Arc<Mapping>, Arc<Mapping>, Rebuilder) {
    static SET: OnceLock<(Arc<Mapping>, Arc<Mapping>, Rebuilder)> = OnceLock::new();
    SET.get_or_init(|| {
        // The embedded files are checked by the test suite; a broken one fails there first.
        let set = MappingSet::load(None).expect("embedded mapping files load");
        let project = set.get(crate::app::PROJECT_MAPPING).expect("project mapping");
        let licences = set.get(crate::app::LICENCE_MAPPING).expect("licence mapping");
        let rules = crate::policy::Rules::load(None).expect("embedded policy loads");
        let rebuilder = Rebuilder::new(project.clone(), Arc::new(rules));
        (project, licences, rebuilder)
    })
}

fn day() -> chrono::NaiveDate {
    chrono::NaiveDate::from_ymd_opt(2026, 11, 20).unwrap_or_default()
}

/// An approval-platform answer: the envelope, a listing page and its items, and a project
/// detail through the mapping, assembly and the policy.
pub fn approval_answer(bytes: &[u8]) {
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return;
    };
    let _ = serde::Deserialize::deserialize(&body).map(|_: shuiwu_approval::Envelope| ());
    if let Ok(page) = <shuiwu_approval::ListPage as serde::Deserialize>::deserialize(&body["data"]) {
        for item in &page.list {
            let _ = shuiwu_approval::Summary::from_value(item);
        }
    }
    let (_, _, rebuilder) = mappings();
    if let Ok(crate::record::Assembled::Record(draft)) = rebuilder.assemble(&body, "fuzz", day()) {
        let _ = rebuilder.candidate(*draft, None, &[], chrono::Utc::now());
    }
}

/// A licence-library answer: strict decoding by the declared charset, the namespace-aware
/// reader, the SOAP result, and the licence mapping.
pub fn licence_answer(bytes: &[u8]) {
    let content_type = match bytes.first().map(|b| b % 3) {
        Some(0) => Some("text/xml; charset=GBK"),
        Some(1) => Some("text/xml; charset=UTF-8"),
        _ => None,
    };
    let Ok(text) = shuiwu_licences::xml::decode(bytes, content_type) else {
        return;
    };
    let Ok(root) = shuiwu_licences::xml::parse(&text) else {
        return;
    };
    let _ = shuiwu_licences::soap::interpret(&root);
    let (_, licences, _) = mappings();
    let ctx = mapping::Context { today: day() };
    if let Ok(facts) = mapping::apply(licences, mapping::Document::Xml(&root), "fuzz", &ctx) {
        let _ = crate::materials::licences_from(&facts);
    }
}

/// A mapping file as an operator may write it.
pub fn mapping_file(text: &str) {
    let _ = mapping::compile("fuzz.toml", text);
}

/// A policy file.
pub fn policy_file(text: &str) {
    let _ = crate::policy::spec::compile("fuzz.toml", text);
}

/// A holiday calendar file.
pub fn calendar_file(text: &str) {
    let _ = crate::calendar::Calendar::default().add("calendars/2027.toml", text);
}

/// The configuration file.
pub fn config_file(text: &str) {
    let _ = crate::config::Config::parse("fuzz.toml", text, |name| {
        name.ends_with("APP_SECRET").then(|| "s".to_string())
    });
}
