//! Signed-in sessions, kept in the daemon's memory (a restart signs everyone out), each with its
//! own CSRF token that every form of the session carries back. The session token travels in
//! a cookie that scripts cannot read (`HttpOnly`), that other sites' requests do not carry
//! (`SameSite=Strict`) and that is only sent over HTTPS or to localhost (`Secure`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::accounts::Role;

/// The session cookie's name.
pub const COOKIE: &str = "gw_session";

/// The cookie that carries the sign-in form's CSRF token before there is a session.
pub const SIGN_IN_COOKIE: &str = "gw_sign_in";

/// A signed-in person.
#[derive(Debug, Clone)]
pub struct Session {
    pub name: String,
    pub role: Role,
    pub csrf: String,
    expires: Instant,
}

/// The sessions of the running daemon.
pub struct Sessions {
    by_token: Mutex<HashMap<String, Session>>,
    idle: Duration,
}

/// 32 random bytes in hex: a session token or a CSRF token.
pub fn random_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

impl Sessions {
    /// Sessions that end after `idle` without a request.
    pub fn new(idle: Duration) -> Sessions {
        Sessions {
            by_token: Mutex::new(HashMap::new()),
            idle,
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        // A panic while the map was held cannot leave it half-written (single inserts and
        // removals): its content stays usable.
        self.by_token
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new session; its token.
    pub fn create(&self, name: &str, role: Role) -> String {
        let token = random_token();
        let now = Instant::now();
        let mut map = self.map();
        map.retain(|_, s| s.expires > now);
        map.insert(
            token.clone(),
            Session {
                name: name.to_string(),
                role,
                csrf: random_token(),
                expires: now + self.idle,
            },
        );
        token
    }

    /// The session of `token` when it has not ended; a request extends it.
    pub fn get(&self, token: &str) -> Option<Session> {
        let now = Instant::now();
        let mut map = self.map();
        let s = map.get_mut(token).filter(|s| s.expires > now)?;
        s.expires = now + self.idle;
        Some(s.clone())
    }

    pub fn end(&self, token: &str) {
        self.map().remove(token);
    }
}

/// The value of cookie `name` in a request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

/// A `Set-Cookie` value for the console's paths.
pub fn set_cookie(name: &str, value: &str, max_age_secs: u64) -> String {
    format!("{name}={value}; Path=/console; HttpOnly; Secure; SameSite=Strict; Max-Age={max_age_secs}")
}

/// Compares two tokens in time that does not depend on where they differ.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
