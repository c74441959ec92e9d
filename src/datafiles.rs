//! The declarative data files under `mappings/`: field mappings, holiday calendars and, later,
//! the service policy by version. They are embedded in the binary; a directory named in the configuration
//! overrides them file by file (same relative path) and may add files.

use std::collections::BTreeMap;
use std::path::Path;

/// Every embedded data file, by its path relative to `mappings/`.
pub const EMBEDDED: &[(&str, &str)] = &[
    (
        "approval/project.toml",
        include_str!("../mappings/approval/project.toml"),
    ),
    (
        "calendars/2022.toml",
        include_str!("../mappings/calendars/2022.toml"),
    ),
    (
        "calendars/2023.toml",
        include_str!("../mappings/calendars/2023.toml"),
    ),
    (
        "calendars/2024.toml",
        include_str!("../mappings/calendars/2024.toml"),
    ),
    (
        "calendars/2025.toml",
        include_str!("../mappings/calendars/2025.toml"),
    ),
    (
        "calendars/2026.toml",
        include_str!("../mappings/calendars/2026.toml"),
    ),
    ("policy/2022.toml", include_str!("../mappings/policy/2022.toml")),
    (
        "licences/query-licence.toml",
        include_str!("../mappings/licences/query-licence.toml"),
    ),
    (
        "power/application.toml",
        include_str!("../mappings/power/application.toml"),
    ),
];

/// Folders of `mappings/` that hold something other than field mappings.
pub const NOT_FIELD_MAPPINGS: &[&str] = &["calendars/", "policy/"];

#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct ReadError {
    pub path: String,
    pub source: std::io::Error,
}

/// The data files in force: the embedded ones, overridden and added to from `dir`.
pub fn load(dir: Option<&Path>) -> Result<BTreeMap<String, String>, ReadError> {
    let mut files: BTreeMap<String, String> = EMBEDDED
        .iter()
        .map(|(n, c)| (n.to_string(), c.to_string()))
        .collect();
    if let Some(dir) = dir {
        read_dir(dir, dir, &mut files)?;
    }
    Ok(files)
}

fn read_dir(root: &Path, dir: &Path, files: &mut BTreeMap<String, String>) -> Result<(), ReadError> {
    let io = |path: &Path, source| ReadError {
        path: path.display().to_string(),
        source,
    };
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| io(dir, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| io(dir, e))?;
    entries.sort_by_key(|e| e.path());
    for entry in entries {
        let path = entry.path();
        if path.is_dir() {
            read_dir(root, &path, files)?;
        } else if path.extension().is_some_and(|e| e == "toml") {
            let content = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
            let relative = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .replace('\\', "/");
            files.insert(relative, content);
        }
    }
    Ok(())
}

/// The 1-based line of a byte offset in a file's text, for error messages.
pub fn line_of(content: &str, offset: usize) -> usize {
    content.as_bytes()[..offset.min(content.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}
