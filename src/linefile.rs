//! Files of one entry per line that operators edit by hand (the admin API's tokens, the
//! console's accounts): blank lines and `#` comments are skipped, and every error names the
//! file and the line.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum LineFileError {
    #[error("{file}: {source}")]
    Read { file: String, source: std::io::Error },
    #[error("{file}:{line}: {message}")]
    Invalid {
        file: String,
        line: usize,
        message: String,
    },
}

/// A file's name as errors give it, and its text.
pub fn read(path: &Path) -> Result<(String, String), LineFileError> {
    let file = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => Ok((file, text)),
        Err(source) => Err(LineFileError::Read { file, source }),
    }
}

/// One entry: its text, trimmed, and where it is.
pub struct Entry<'a> {
    pub text: &'a str,
    file: &'a str,
    line: usize,
}

impl Entry<'_> {
    /// An error about this entry.
    pub fn invalid(&self, message: impl Into<String>) -> LineFileError {
        LineFileError::Invalid {
            file: self.file.to_string(),
            line: self.line,
            message: message.into(),
        }
    }
}

/// The entries of a file's text, in order.
pub fn entries<'a>(file: &'a str, text: &'a str) -> impl Iterator<Item = Entry<'a>> {
    text.lines().enumerate().filter_map(move |(i, line)| {
        let line = line.trim();
        (!line.is_empty() && !line.starts_with('#')).then_some(Entry {
            text: line,
            file,
            line: i + 1,
        })
    })
}
