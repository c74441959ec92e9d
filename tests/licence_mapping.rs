//! Licence documents of real shape (GBK, each prefix style, DTD, cut off, fault) through the
//! same mapping engine as the JSON ones, with lineage to the raw GBK bytes.
#![cfg(feature = "simulators")]

use gateway::mapping::{Context, Document, MappingSet, Value, apply};
use gateway::store::sha256_hex;
use shuiwu_licences::error::LicenceError;
use shuiwu_licences::soap;
use shuiwu_licences::xml::{self, XmlError};

fn ctx() -> Context {
    Context {
        today: chrono::NaiveDate::from_ymd_opt(2026, 11, 28).unwrap(),
    }
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/fixtures/licences/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn every_prefix_style_maps_alike_with_lineage_to_the_raw_bytes() {
    let set = MappingSet::load(None).unwrap();
    let mapping = set.get("licences.query").unwrap();
    let mut seen = Vec::new();
    for (name, charset) in [
        ("query-gbk-lic-prefix.xml", "GBK"),
        ("query-gbk-ns2-prefix.xml", "GBK"),
        ("query-utf8-default-ns.xml", "UTF-8"),
    ] {
        let bytes = fixture(name);
        let text = xml::decode(&bytes, Some(&format!("text/xml; charset={charset}"))).unwrap();
        let root = xml::parse(&text).unwrap();
        let sha = sha256_hex(&bytes);
        let facts = apply(&mapping, Document::Xml(&root), &sha, &ctx()).unwrap();
        assert_eq!(facts.list_len("licences"), 3, "{name}");
        assert_eq!(
            facts.text("licences[0].name").as_deref(),
            Some("建设工程规划许可证"),
            "{name}"
        );
        assert_eq!(
            facts.text("licences[0].project_code").as_deref(),
            Some("2022-530112-47-01-587143")
        );
        assert_eq!(
            facts.get("licences[2].status"),
            Some(&Value::Code {
                code: "2".into(),
                label: "revoked".into()
            })
        );
        assert_eq!(facts.text("licences[1].valid_until").as_deref(), Some("长期"));
        let l = &facts.fields["licences[0].name"].lineage;
        assert_eq!(
            &*l.document, sha,
            "the hash is of the bytes as received ({charset})"
        );
        assert_eq!(
            l.path,
            "/soap:Envelope/soap:Body/lic:QueryLicenceResponse/lic:Licences/lic:Licence[1]/lic:ZZMC"
        );
        assert_eq!(l.raw.as_deref(), Some("建设工程规划许可证"));
        assert_eq!(&*l.mapping, "licences/query-licence.toml");
        seen.push(facts.text("licences[0].number"));
        // The soap layer reads the same documents the same way.
        let soap::Reply::Licences(licences) = soap::interpret(&root).unwrap() else {
            panic!()
        };
        assert_eq!(licences.len(), 3);
    }
    assert!(seen.windows(2).all(|w| w[0] == w[1]));
    // GBK bytes differ from their UTF-8 reading: decoding by the declared charset matters.
    assert!(std::str::from_utf8(&fixture("query-gbk-lic-prefix.xml")).is_err());
}

#[test]
fn hostile_and_broken_documents_are_refused() {
    let bomb = fixture("dtd-entity-bomb.xml");
    let text = xml::decode(&bomb, Some("text/xml; charset=UTF-8")).unwrap();
    assert_eq!(xml::parse(&text), Err(XmlError::Dtd));

    let cut = fixture("truncated-gbk.xml");
    let result = xml::decode(&cut, Some("text/xml; charset=GBK"))
        .map_err(LicenceError::from)
        .and_then(|t| xml::parse(&t).map_err(LicenceError::from));
    assert!(result.is_err(), "a cut-off document is not an answer");

    let fault = fixture("fault-token-expired.xml");
    let root = xml::parse(&xml::decode(&fault, None).unwrap()).unwrap();
    assert_eq!(soap::interpret(&root), Err(LicenceError::TokenExpired));
}

#[test]
fn xml_mapping_files_are_checked_at_load() {
    let text = include_str!("../mappings/licences/query-licence.toml").replace("/lic:ZZMC", "/zz:ZZMC");
    let err = gateway::mapping::compile("licences/query-licence.toml", &text).unwrap_err();
    assert!(err.message.contains("prefix \"zz\" is not declared"), "{err}");
    let line = text.lines().position(|l| l.contains("/zz:ZZMC")).unwrap() + 1;
    assert_eq!(err.line, line);
}
