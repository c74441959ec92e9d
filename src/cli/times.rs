//! Times inside a record's content, as commands show them.
//!
//! A record's content writes its times as Beijing wall-clock text (`2026-12-02 03:30:01`), the
//! form the platforms use; that text is inside the content hash, so it stays as stored. What
//! a command prints says the offset: people read `2026-12-02 03:30:01 +08:00`, scripts get RFC
//! 3339 (`2026-12-02T03:30:01+08:00`).

use serde_json::Value;

/// For people or for scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum For {
    People,
    Scripts,
}

impl For {
    /// Scripts when the command writes JSON, else people.
    pub fn json(json: bool) -> For {
        if json { For::Scripts } else { For::People }
    }
}

/// Rewrites every time of a record's content (a field named `at`, `from`, `to` or `…_at`
/// holding Beijing wall-clock text) with its offset. Other values are left as they are.
pub fn with_offsets(content: &mut Value, audience: For) {
    match content {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                let is_time = key == "at" || key == "from" || key == "to" || key.ends_with("_at");
                match value {
                    Value::String(text) if is_time => {
                        if let Some(t) = shuiwu_wire::parse_beijing(text)
                            .filter(|_| text.len() == "2026-12-02 03:30:01".len())
                        {
                            *text = match audience {
                                For::People => shuiwu_wire::format_human(t),
                                For::Scripts => shuiwu_wire::format_rfc3339(t),
                            };
                        }
                    }
                    other => with_offsets(other, audience),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| with_offsets(v, audience)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_times_get_their_offset_and_nothing_else_changes() {
        let stored = serde_json::json!({
            "project": {"name": "2026-12-02 03:30:01", "code": "x"},
            "progress": {"stages": [{"started_at": "2026-12-02 03:30:01", "due_at": null}],
                         "pauses": [{"from": "2026-12-01 09:00:00", "to": "2026-12-01 10:00:00"}]},
            "survey": {"at": "2026-11-30 08:00:00", "by": "op"},
            "source": {"updated_at": "2026-12-02 03:30:01", "checked_at": "2026-12-01T19:30:02Z"}
        });
        let mut people = stored.clone();
        with_offsets(&mut people, For::People);
        assert_eq!(
            people["progress"]["stages"][0]["started_at"],
            "2026-12-02 03:30:01 +08:00"
        );
        assert_eq!(
            people["progress"]["pauses"][0]["to"],
            "2026-12-01 10:00:00 +08:00"
        );
        assert_eq!(people["survey"]["at"], "2026-11-30 08:00:00 +08:00");
        let mut scripts = stored.clone();
        with_offsets(&mut scripts, For::Scripts);
        assert_eq!(scripts["source"]["updated_at"], "2026-12-02T03:30:01+08:00");
        assert_eq!(
            scripts["progress"]["pauses"][0]["from"],
            "2026-12-01T09:00:00+08:00"
        );
        // Not a time field, not Beijing text, or null: as stored.
        for v in [&people, &scripts] {
            assert_eq!(v["project"]["name"], "2026-12-02 03:30:01");
            assert_eq!(v["source"]["checked_at"], "2026-12-01T19:30:02Z");
            assert_eq!(v["progress"]["stages"][0]["due_at"], Value::Null);
            assert_eq!(v["survey"]["by"], "op");
        }
    }
}
