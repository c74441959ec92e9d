//! The console's accounts: a file of people with their role and a salted, slow password hash
//! (Argon2id in the PHC string format), one per line, so that the file grants nothing if it
//! leaks. `gateway console-account NAME --role ROLE` reads a password and prints the line.
//!
//! Each line that is not blank or a `#` comment is `NAME ROLE $argon2id$…`.

use std::path::Path;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

/// What a person may do in the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Sees everything, personal data masked.
    Viewer,
    /// And replays, dismisses, records stage events.
    Operator,
    /// And reveals personal data and exports (each reveal audited).
    Auditor,
}

impl Role {
    fn parse(text: &str) -> Option<Role> {
        match text {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "auditor" => Some(Role::Auditor),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Auditor => "auditor",
        }
    }

    /// Whether the role may change things (replay, dismiss, stage events).
    pub fn may_operate(self) -> bool {
        matches!(self, Role::Operator)
    }

    /// Whether the role may reveal personal data and export.
    pub fn may_reveal(self) -> bool {
        matches!(self, Role::Auditor)
    }
}

#[derive(Debug, Clone)]
struct Account {
    name: String,
    role: Role,
    hash: String,
}

/// The people allowed to sign in.
#[derive(Debug, Clone, Default)]
pub struct Accounts {
    accounts: Vec<Account>,
}

/// An accounts file that cannot be read or has a wrong line.
pub type AccountsError = crate::linefile::LineFileError;

impl Accounts {
    /// Reads and checks an accounts file; an error names the file and line.
    pub fn load(path: &Path) -> Result<Accounts, AccountsError> {
        let (file, text) = crate::linefile::read(path)?;
        Accounts::parse(&file, &text)
    }

    pub fn parse(file: &str, text: &str) -> Result<Accounts, AccountsError> {
        let mut accounts: Vec<Account> = Vec::new();
        for entry in crate::linefile::entries(file, text) {
            let line = entry.text;
            let invalid = |message: String| entry.invalid(message);
            let mut parts = line.split_whitespace();
            let (Some(name), Some(role), Some(hash), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(invalid("expected `NAME ROLE $argon2id$…`".into()));
            };
            let role = Role::parse(role)
                .ok_or_else(|| invalid(format!("role {role:?} is not viewer, operator or auditor")))?;
            let parsed = PasswordHash::new(hash).map_err(|e| invalid(format!("the password hash: {e}")))?;
            if parsed.algorithm.as_str() != "argon2id" {
                return Err(invalid(format!(
                    "the password hash is {}, not argon2id",
                    parsed.algorithm
                )));
            }
            if accounts.iter().any(|a| a.name == name) {
                return Err(invalid(format!("{name} is named twice")));
            }
            accounts.push(Account {
                name: name.to_string(),
                role,
                hash: hash.to_string(),
            });
        }
        Ok(Accounts { accounts })
    }

    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
    }

    /// The role of `name` when `password` is theirs. An unknown name costs a hash as a wrong
    /// password does, so that names cannot be told by timing.
    pub fn verify(&self, name: &str, password: &str) -> Option<Role> {
        let account = self.accounts.iter().find(|a| a.name == name);
        let hash = account.map_or(DECOY, |a| a.hash.as_str());
        let ok = PasswordHash::new(hash)
            .is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok());
        account.filter(|_| ok).map(|a| a.role)
    }
}

/// A hash of no one's password, verified for unknown names.
const DECOY: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2h1aXd1LWRlY295LXNhbHQ$2uJ8xFVwQe5nQ6Hf9vAvGQ8gk0p4m1Sg8bbv1Yd1y8E";

/// The accounts-file line of a new account (Argon2id with the crate's default cost, a random salt).
pub fn line(name: &str, role: Role, password: &str) -> Result<String, String> {
    if name.is_empty() || name.chars().any(char::is_whitespace) {
        return Err("the name must be one word, not empty".into());
    }
    if password.chars().count() < 12 {
        return Err("the password must have at least 12 characters".into());
    }
    let bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&bytes).map_err(|e| format!("the salt: {e}"))?;
    let hash = Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| format!("hashing the password: {e}"))?;
    Ok(format!("{name} {} {hash}", role.as_str()))
}

impl Accounts {
    /// [`line()`] as an `anyhow` error, for callers that make accounts themselves.
    pub fn line_for(name: &str, role: Role, password: &str) -> anyhow::Result<String> {
        line(name, role, password).map_err(anyhow::Error::msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_verifies_its_password_only_and_bad_lines_name_their_line() {
        let l = line("王工", Role::Operator, "correct horse battery").unwrap();
        let accounts = Accounts::parse("accounts", &format!("# people\n{l}\n")).unwrap();
        assert_eq!(
            accounts.verify("王工", "correct horse battery"),
            Some(Role::Operator)
        );
        assert_eq!(accounts.verify("王工", "wrong horse battery"), None);
        assert_eq!(accounts.verify("李工", "correct horse battery"), None);
        assert!(line("x", Role::Viewer, "short").is_err());
        let err = Accounts::parse("accounts", &format!("{l}\nbad line\n")).unwrap_err();
        assert_eq!(err.to_string(), "accounts:2: expected `NAME ROLE $argon2id$…`");
        let err = Accounts::parse("accounts", &l.replace("operator", "root")).unwrap_err();
        assert!(err.to_string().starts_with("accounts:1: role \"root\""), "{err}");
        assert!(
            Accounts::parse("a", &format!("{l}\n{l}")).is_err(),
            "a name twice"
        );
        // Unknown names are verified against a real hash, as long as a known one.
        assert!(PasswordHash::new(DECOY).is_ok());
    }
}
