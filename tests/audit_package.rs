//! Evidence packages: written by the gateway, checked with nothing but the file and the public
//! key in an empty directory, and any byte changed in them found and named.
#![cfg(feature = "simulators")]

mod common;

use std::path::Path;
use std::process::Command;

use common::cli::{gateway, ok};
use gateway::tlog::checkpoint::Verifier;

/// `gateway audit check-package` run in `dir`, with no configuration, database or
/// environment of the gateway's.
fn check_in(dir: &Path, file: &str, key: &str) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .current_dir(dir)
        .env_clear()
        .args(["audit", "check-package", file, "--key", key])
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn a_package_is_checked_offline_and_every_change_to_it_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::cli::demo(dir.path(), 20);
    let dbs = db.to_str().unwrap();
    let id = "PE-2022-530112-47-01-587143";
    ok(&gateway(&[
        "--db", dbs, "record", "event", id, "accepted", "--by", "张工",
    ]));
    let public = ok(&gateway(&["--db", dbs, "audit", "key"])).trim().to_string();

    // Made twice: personal data withheld, and revealed (audited, with who and why).
    let plain = dir.path().join("plain.pkg");
    let revealed = dir.path().join("revealed.pkg");
    let package = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "--db",
            dbs,
            "audit",
            "package",
            id,
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend(extra);
        gateway(&args)
    };
    ok(&package(&plain, &[]));
    let refused = package(&revealed, &["--reveal"]);
    assert!(!refused.status.success(), "--reveal without --by and --reason");
    ok(&package(
        &revealed,
        &["--reveal", "--by", "审计员", "--reason", "年度抽查"],
    ));
    let list = ok(&gateway(&["--db", dbs, "audit", "list"]));
    assert!(
        list.contains("evidence_package_revealed") && list.contains("审计员"),
        "{list}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&revealed).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "a package with personal data is private");
    }
    let plain_text = std::fs::read_to_string(&plain).unwrap();
    let revealed_text = std::fs::read_to_string(&revealed).unwrap();
    // Without --reveal, no contact's phone is in the file.
    let phone: String = common::console::query(
        &db,
        &format!(
            "SELECT json_extract(content, '$.contact.phone') FROM record_versions WHERE record_id = '{id}' ORDER BY version DESC LIMIT 1"
        ),
    );
    assert!(!phone.is_empty());
    assert!(
        !plain_text.contains(&phone),
        "the plain package holds a phone number"
    );
    assert!(revealed_text.contains(&phone));

    // Checked in an empty directory with only the file and the key (as a file, and as text).
    let fresh = tempfile::tempdir().unwrap();
    std::fs::copy(&revealed, fresh.path().join("evidence.pkg")).unwrap();
    std::fs::copy(&plain, fresh.path().join("plain.pkg")).unwrap();
    std::fs::write(fresh.path().join("gateway.pub"), format!("{public}\n")).unwrap();
    let (good, text) = check_in(fresh.path(), "evidence.pkg", "gateway.pub");
    assert!(good, "{text}");
    assert!(
        text.contains("intact") && text.contains("mapped again from their raw bytes"),
        "{text}"
    );
    assert!(
        !text.contains(" 0 fields"),
        "the record's fields were mapped again: {text}"
    );
    // A record whose licences were read: its materials check's facts are mapped again from
    // the licence library's XML (GBK) too.
    let checked: String = common::console::query(
        &db,
        "SELECT record_id FROM materials_checks WHERE lineage IS NOT NULL ORDER BY id LIMIT 1",
    );
    let licensed = fresh.path().join("licensed.pkg");
    let out = gateway(&[
        "--db",
        dbs,
        "audit",
        "package",
        &checked,
        "--out",
        licensed.to_str().unwrap(),
        "--reveal",
        "--by",
        "审计员",
        "--reason",
        "年度抽查",
    ]);
    ok(&out);
    let (good, said) = check_in(fresh.path(), "licensed.pkg", &public);
    assert!(good, "{said}");
    assert!(
        !said.contains(" 0 materials checks") && said.contains("materials checks mapped again"),
        "{said}"
    );
    std::fs::remove_file(&licensed).unwrap();
    let (good, text) = check_in(fresh.path(), "plain.pkg", &public);
    assert!(good, "{text}");
    assert!(
        text.contains("not checked") && text.contains("--reveal"),
        "{text}"
    );
    let names: Vec<String> = std::fs::read_dir(fresh.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 3, "the checker wrote nothing: {names:?}");

    // Another key: the checkpoint and the package are not its.
    let other = gateway::tlog::checkpoint::Signer::generate(
        "shuiwu-gateway",
        gateway::tlog::checkpoint::Algorithm::Ed25519,
    )
    .unwrap()
    .verifier()
    .to_text();
    let (good, text) = check_in(fresh.path(), "evidence.pkg", &other);
    assert!(!good && text.contains("the checkpoint"), "{text}");

    // Changes that keep the file readable are named by what they touch.
    let key = Verifier::parse(&public).unwrap();
    let check = |text: &str| gateway::audit::package::check(text, &key);
    let problems = |text: &str| check(text).problems.join("\n");
    assert!(check(&revealed_text).intact(), "{}", problems(&revealed_text));
    let json_line = revealed_text.split_once("\n\n").unwrap().0;
    let package: serde_json::Value = serde_json::from_str(json_line).unwrap();
    let entries = package["entries"].as_array().unwrap();
    let with = |edit: &dyn Fn(&mut serde_json::Value)| -> String {
        let mut p = package.clone();
        edit(&mut p);
        let (_, signature) = revealed_text.split_once("\n\n").unwrap();
        format!("{}\n\n{signature}", serde_json::to_string(&p).unwrap())
    };
    // An entry's text.
    let version = entries
        .iter()
        .position(|e| {
            e["text"]
                .as_str()
                .unwrap()
                .contains("\"table\":\"record_versions\"")
        })
        .unwrap();
    let index = entries[version]["index"].as_u64().unwrap();
    let forged = with(&|p| {
        // The entry names another row.
        let t = p["entries"][version]["text"]
            .as_str()
            .unwrap()
            .replacen("\"row\":\"", "\"row\":\"0", 1);
        p["entries"][version]["text"] = t.into();
    });
    let found = problems(&forged);
    assert!(
        found.contains(&format!("entry {index} (record_versions")) && found.contains("not in the signed log"),
        "{found}"
    );
    // A proof hash.
    let forged = with(&|p| {
        let h = p["entries"][0]["proof"][0].as_str().unwrap().to_string();
        let flipped = format!("{}{}", if h.starts_with('0') { "1" } else { "0" }, &h[1..]);
        p["entries"][0]["proof"][0] = flipped.into();
    });
    let found = problems(&forged);
    assert!(
        found.contains(&format!("entry {} (", entries[0]["index"])),
        "{found}"
    );
    // A raw document's bytes: its hash no longer holds, and the fields mapped from it are
    // named when the document still maps.
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let name: String = common::console::query(
        &db,
        &format!(
            "SELECT json_extract(content, '$.project.name') FROM record_versions WHERE record_id = '{id}' ORDER BY version DESC LIMIT 1"
        ),
    );
    // The project's detail: the document that holds its name (the package also holds the
    // power side's and the licence library's answers).
    let (doc_hash, bytes) = package["values"]
        .as_object()
        .unwrap()
        .iter()
        .filter_map(|(h, v)| Some((h.clone(), b64.decode(v.get("base64")?.as_str()?).ok()?)))
        .filter_map(|(h, b)| String::from_utf8(b).ok().map(|t| (h, t)))
        .find(|(_, t)| t.contains(&name))
        .expect("the project's name is in its document");
    let forged = with(&|p| {
        p["values"][&doc_hash]["base64"] = b64.encode(bytes.replacen(&name, "另一个项目", 1)).into();
    });
    let found = problems(&forged);
    assert!(
        found.contains(&format!("value {doc_hash} (raw_documents.bytes")) && found.contains("altered"),
        "{found}"
    );
    // A record's content: the field whose value was changed is named.
    let (content_hash, content) = package["values"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(_, v)| {
            v["text"]
                .as_str()
                .is_some_and(|t| t.starts_with('{') && t.contains("\"project\"") && t.contains(&name))
        })
        .map(|(h, v)| (h.clone(), v["text"].as_str().unwrap().to_string()))
        .unwrap();
    let forged = with(&|p| {
        p["values"][&content_hash]["text"] = content.replacen(&name, "另一个项目", 1).into();
    });
    let found = problems(&forged);
    assert!(
        found.contains(&format!("value {content_hash} (record_versions.content")),
        "{found}"
    );

    // Any byte: flipped one at a time across the whole file, each change is found.
    let bytes = revealed_text.as_bytes();
    let step = (bytes.len() / 400).max(1);
    let mut tried = 0;
    for at in (0..bytes.len()).step_by(step) {
        let mut changed = bytes.to_vec();
        changed[at] ^= 0x01;
        let Ok(text) = String::from_utf8(changed) else {
            continue;
        };
        tried += 1;
        let r = check(&text);
        assert!(!r.intact(), "byte {at} changed and not found");
        assert!(!r.problems.is_empty());
    }
    assert!(tried > 300, "{tried}");
}
