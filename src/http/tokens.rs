//! Bearer tokens of the admin API: a file of salted hashes, one operator per line, so the file
//! itself grants nothing if it leaks and a token is never stored or logged.
//!
//! Each line that is not blank or a `#` comment is `NAME sha256:SALT:HASH`, with `SALT` 16 random
//! bytes and `HASH` the SHA-256 of the salt's bytes followed by the token's, both in hex.
//! `gateway admin-token NAME` makes a token and its line. A token is 32 random bytes in hex: a
//! salted hash is enough for a secret of that entropy (a password would need a slow hash).

use std::path::Path;

use sha2::{Digest, Sha256};

/// One operator's token, as the file holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    name: String,
    salt: Vec<u8>,
    hash: [u8; 32],
}

/// The operators allowed to call the admin API.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    entries: Vec<Entry>,
}

/// A tokens file that cannot be read or has a wrong line.
pub type TokensError = crate::linefile::LineFileError;

impl Tokens {
    /// Reads and checks a tokens file; an error names the file and line.
    pub fn load(path: &Path) -> Result<Tokens, TokensError> {
        let (file, text) = crate::linefile::read(path)?;
        Tokens::parse(&file, &text)
    }

    pub fn parse(file: &str, text: &str) -> Result<Tokens, TokensError> {
        let mut entries = Vec::new();
        for entry in crate::linefile::entries(file, text) {
            let line = entry.text;
            let invalid = |message: &str| entry.invalid(message);
            let (name, secret) = line
                .split_once(char::is_whitespace)
                .ok_or_else(|| invalid("expected `NAME sha256:SALT:HASH`"))?;
            let mut parts = secret.trim().split(':');
            let (Some("sha256"), Some(salt), Some(hash), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(invalid("expected `NAME sha256:SALT:HASH`"));
            };
            let salt = hex::decode(salt).map_err(|_| invalid("the salt is not hex"))?;
            if salt.len() < 8 {
                return Err(invalid("the salt is shorter than 8 bytes"));
            }
            let hash: [u8; 32] = hex::decode(hash)
                .ok()
                .and_then(|h| h.try_into().ok())
                .ok_or_else(|| invalid("the hash is not 32 bytes of hex"))?;
            if entries.iter().any(|e: &Entry| e.name == name) {
                return Err(invalid(&format!("{name} has a token already")));
            }
            entries.push(Entry {
                name: name.to_string(),
                salt,
                hash,
            });
        }
        Ok(Tokens { entries })
    }

    /// The operator a token belongs to. Every entry is compared in constant time, whatever
    /// matches, so the answer's timing tells nothing.
    pub fn operator(&self, token: &str) -> Option<&str> {
        let mut found = None;
        for e in &self.entries {
            let hash = hash_of(&e.salt, token);
            let equal = hash
                .iter()
                .zip(e.hash.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
            if equal && found.is_none() {
                found = Some(e.name.as_str());
            }
        }
        found
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn hash_of(salt: &[u8], token: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(token.as_bytes());
    h.finalize().into()
}

/// A new token for `name` and the line that grants it.
pub fn issue(name: &str) -> (String, String) {
    use rand::RngCore;
    let mut rng = rand::rng();
    let mut token = [0u8; 32];
    let mut salt = [0u8; 16];
    rng.fill_bytes(&mut token);
    rng.fill_bytes(&mut salt);
    let token = hex::encode(token);
    let line = format!(
        "{name} sha256:{}:{}",
        hex::encode(salt),
        hex::encode(hash_of(&salt, &token))
    );
    (token, line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_issued_token_names_its_operator_and_nothing_else_does() {
        let (token, line) = issue("张工");
        let (other, other_line) = issue("李工");
        let tokens = Tokens::parse("t", &format!("# operators\n{line}\n\n{other_line}\n")).unwrap();
        assert_eq!(tokens.operator(&token), Some("张工"));
        assert_eq!(tokens.operator(&other), Some("李工"));
        assert_eq!(tokens.operator("guess"), None);
        assert_eq!(tokens.operator(""), None);
        assert!(!line.contains(&token), "the file never holds the token");
    }

    #[test]
    fn a_bad_line_is_refused_with_file_and_line() {
        let err = Tokens::parse("tokens", "# x\nalice sha256:zz:00\n").unwrap_err();
        assert_eq!(err.to_string(), "tokens:2: the salt is not hex");
        let (_, line) = issue("bob");
        let err = Tokens::parse("tokens", &format!("{line}\n{line}\n")).unwrap_err();
        assert!(
            err.to_string().starts_with("tokens:2: bob has a token already"),
            "{err}"
        );
    }
}
